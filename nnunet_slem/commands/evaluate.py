"""``nnunet-slem evaluate``: Dice, HD95, NSD and volumes per case and region, with documented edge cases.

nnU-Net's ``nnUNetv2_evaluate_folder`` reports Dice only and NaN for empty regions; this command adds HD95, NSD
and volumes and gives every case a number (conventions in ``nnunet_slem.evaluation.metrics``). Optional:
BraTS 2023 lesion-wise Dice/HD95 (``--lesion-wise``, ``nnunet_slem.evaluation.lesionwise``) and the CHAOS
metrics (``--chaos`` or automatic for ``convert chaos`` datasets, ``nnunet_slem.evaluation.chaos_metrics``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.lesionwise import DEFAULT_DILATION_ITERS, DEFAULT_MIN_LESION_VOXELS, LesionSettings
from nnunet_slem.evaluation.metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    DEFAULT_ONE_EMPTY_HD95,
    ONE_EMPTY_PRESETS,
    MetricOptions,
    evaluate_folders,
    one_empty_hd95_value,
    regions_from_labels,
    summarize,
    write_outputs,
)
from nnunet_slem.validation.numbers import check_number
from nnunet_slem.validation.places import check_output_dir


def _default_num_processes() -> int:
    from nnunetv2.configuration import default_num_processes

    return max(1, min(default_num_processes, os.cpu_count() or 1))


def find_dataset_json(dataset: str | None, dataset_json: str | None) -> Path:
    """``-djfile`` if given, else ``$nnUNet_raw/<name>/dataset.json`` or the one in ``$nnUNet_preprocessed``.

    The environment is read now (not at import) so the command honours variables set by the caller.
    """
    if dataset_json:
        path = Path(dataset_json)
        if not path.is_file():
            raise UserFacingError(
                f"-djfile {dataset_json}: no such file; give the path to the dataset's dataset.json"
            )
        return path
    if not dataset:
        raise UserFacingError(
            "say which dataset defines the labels: -d DATASET_ID or -djfile path/to/dataset.json"
        )
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as e:
        raise UserFacingError(
            f"-d {dataset}: {e}\nSet nnUNet_raw / nnUNet_preprocessed, or pass -djfile path/to/dataset.json."
        ) from None
    looked = []
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        root = os.environ.get(var)
        if root:
            candidate = Path(root) / name / "dataset.json"
            if candidate.is_file():
                return candidate
            looked.append(str(candidate))
    where = ", ".join(looked) if looked else "nothing: nnUNet_raw and nnUNet_preprocessed are unset"
    raise UserFacingError(f"no dataset.json for {name} (looked at {where}); pass -djfile path/to/dataset.json.")


def label_values(labels: dict[str, int | list[int]]) -> tuple[int, ...]:
    """Every label value a dataset.json ``labels`` dict defines (background and ignore included)."""
    values: set[int] = set()
    for value in labels.values():
        values.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return tuple(sorted(values))


def non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 0 or more")
    return number


def _positive_mm(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a distance in mm greater than 0")
    return number


def _one_empty_arg(value: str) -> str:
    try:
        one_empty_hd95_value(value, (1,), (1.0,))
    except UserFacingError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-ref", dest="ref", required=True, metavar="GT_DIR", help="reference segmentations")
    parser.add_argument("-pred", dest="pred", required=True, metavar="PRED_DIR", help="predicted segmentations")
    parser.add_argument(
        "-d", dest="dataset", metavar="ID", help="dataset ID or name; its dataset.json defines the regions"
    )
    parser.add_argument("-djfile", dest="dataset_json", metavar="JSON",
                        help="path to dataset.json (instead of -d); its reader/writer reads the files, as in nnU-Net")
    # the earlier spelling keeps working, out of --help (one spelling per concept: nnU-Net's)
    parser.add_argument("-dj", dest="dataset_json", help=argparse.SUPPRESS)
    parser.add_argument("-o", dest="out", metavar="OUT", help="output folder (default: PRED_DIR/slem_metrics)")
    parser.add_argument(
        "--num-processes", "-np", dest="num_processes", type=int, default=None, metavar="N",
        help="worker processes (default: nnU-Net's default_num_processes, at most the CPU count)",
    )
    parser.add_argument(
        "--one-empty-hd95", type=_one_empty_arg, default=DEFAULT_ONE_EMPTY_HD95,
        metavar="{diagonal,nan,brats2021,brats2023,MM}",
        help="HD95 when exactly one of reference/prediction is empty: 'diagonal' (image field-of-view "
        "diagonal in mm, default), 'nan' (like nnU-Net), a number in mm, or the official BraTS scripts' value: "
        + ", ".join(f"{k} = {v}" for k, v in ONE_EMPTY_PRESETS.items()),
    )
    parser.add_argument(
        "--nsd-tolerance", type=_positive_mm, default=DEFAULT_NSD_TOLERANCE_MM, metavar="MM",
        help=f"tolerance of the normalized surface Dice in mm [{DEFAULT_NSD_TOLERANCE_MM:g}, as the BraTS 2025 "
        "metrics scripts]",
    )
    parser.add_argument(
        "--lesion-wise", action="store_true",
        help="also BraTS 2023 lesion-wise Dice and HD95 with TP/FP/FN lesion counts, per region",
    )
    parser.add_argument(
        "--lesion-dilation", type=non_negative_int, default=DEFAULT_DILATION_ITERS, metavar="N",
        help=f"dilation iterations that merge and match lesions [{DEFAULT_DILATION_ITERS}: BraTS glioma; "
        "1: meningioma, metastases]",
    )
    parser.add_argument(
        "--min-lesion-voxels", type=non_negative_int, default=DEFAULT_MIN_LESION_VOXELS, metavar="N",
        help=f"reference lesions of N voxels or fewer are left out [{DEFAULT_MIN_LESION_VOXELS}; BraTS-MET: 2]",
    )
    parser.add_argument(
        "--chaos", action="store_true",
        help="also the CHAOS metrics RAVD (%%), ASSD and MSSD (mm) per organ; automatic when dataset.json's "
        "labels are liver, right kidney, left kidney, spleen (as nnunet-slem convert chaos writes them)",
    )
    parser.epilog = (
        "Writes metrics_per_case.csv (case, region, dice, hd95_mm, ref_ml, pred_ml, nsd [, lesion_dice, "
        "lesion_hd95, lesion_tp, lesion_fp, lesion_fn] [, ravd_pct, assd_mm, mssd_mm]) and summary.json "
        "(per region summaries and per case values). Both empty: Dice 1, HD95 0, NSD 1. One empty: Dice 0, "
        "NSD 0, HD95 per --one-empty-hd95."
    )


def _check_numbers(args: argparse.Namespace) -> None:
    """-np at least 1 (0 used to mean the default silently); a numeric --one-empty-hd95 finite and >= 0."""
    if args.num_processes is not None:
        check_number(args.num_processes, "-np", integer=True, minimum=1, hint="Worker processes.")
    try:
        distance = float(args.one_empty_hd95)
    except (TypeError, ValueError):
        return
    if str(args.one_empty_hd95).strip().lower() != "nan":
        check_number(distance, "--one-empty-hd95", minimum=0,
                     hint="Give a distance in mm, or 'diagonal', 'nan' or a preset.")


def run(args: argparse.Namespace) -> None:
    dj_path = find_dataset_json(args.dataset, args.dataset_json)
    try:
        dataset_json = json.loads(dj_path.read_text(encoding="utf-8"))
        labels = dataset_json["labels"]
    except (OSError, ValueError, KeyError) as e:
        raise UserFacingError(
            f"{dj_path}: cannot read 'labels' ({e}); is this an nnU-Net v2 dataset.json?"
        ) from None
    regions, ignore_label = regions_from_labels(labels)
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    lesion = None
    if args.lesion_wise:
        lesion = LesionSettings(args.lesion_dilation, args.min_lesion_voxels)
    from nnunet_slem.evaluation.chaos_metrics import is_chaos_dataset

    chaos = bool(args.chaos or is_chaos_dataset(labels))
    options = MetricOptions(args.nsd_tolerance, lesion, chaos, label_values(labels))
    _check_numbers(args)
    num_processes = args.num_processes if args.num_processes else _default_num_processes()
    one_empty: str = args.one_empty_hd95

    pred_dir = Path(args.pred)
    out_dir = Path(args.out) if args.out else pred_dir / "slem_metrics"
    check_output_dir(out_dir, "metrics folder", "pass another folder with -o")
    rows = evaluate_folders(args.ref, pred_dir, regions, file_ending, ignore_label, one_empty, num_processes,
                            options, dataset_json=dataset_json, progress=show_progress())
    summary = summarize(rows, regions)
    meta = {
        "reference_folder": str(Path(args.ref).resolve()),
        "prediction_folder": str(pred_dir.resolve()),
        "dataset_json": str(dj_path.resolve()),
        "file_ending": file_ending,
        "n_cases": len({r.case for r in rows}),
        "one_empty_hd95": one_empty,
        "nsd_tolerance_mm": args.nsd_tolerance,
        "lesion_wise": None if lesion is None else {
            "dilation_iters": lesion.dilation_iters, "min_lesion_voxels": lesion.min_lesion_voxels,
            "hd95_penalty_mm": lesion.hd95_penalty, "definition": "BraTS 2023 (see docs/evaluation.md)",
        },
        "chaos_metrics": chaos,
        "conventions": "both empty: dice 1, hd95 0, nsd 1; one empty: dice 0, nsd 0, hd95 per one_empty_hd95 "
        "('diagonal' = image field-of-view diagonal in mm); std is population std; stats over finite values",
    }
    write_outputs(rows, summary, out_dir, meta)
    print(format_table(summary))
    csv_path, json_path = out_dir / "metrics_per_case.csv", out_dir / "summary.json"
    print(f"\n{meta['n_cases']} cases; wrote {csv_path} and {json_path}")


def show_progress() -> bool:
    """A progress bar only on a terminal: redirected to a log, its redraws would fill the file."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def format_table(summary: dict) -> str:
    """A small fixed-width table of the summary (means ± std) for the terminal."""

    def pm(stats: dict | None) -> str:
        return "n/a" if not stats or stats["mean"] is None else f"{stats['mean']:.4f} ± {stats['std']:.4f}"

    extra = [c for c in ("lesion_dice", "lesion_hd95", "ravd_pct", "assd_mm", "mssd_mm")
             if any(c in s for s in summary.values())]
    name_w = max(6, *(len(k) for k in summary))
    cols = ["Dice", "HD95 mm", "NSD", *extra]
    lines = [f"{'region':<{name_w}}  {'n':>4}  " + "  ".join(f"{c:<19}" for c in cols).rstrip()]
    for name, s in summary.items():
        cells = [pm(s["dice"]), pm(s["hd95_mm"]), pm(s["nsd"]), *(pm(s.get(c)) for c in extra)]
        lines.append(f"{name:<{name_w}}  {s['n']:>4}  " + "  ".join(f"{c:<19}" for c in cells).rstrip())
    return "\n".join(lines)
