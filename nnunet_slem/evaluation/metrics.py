"""Per-case segmentation metrics: Dice, symmetric HD95 in mm, reference and predicted volume in mL.

nnU-Net's own evaluator reports Dice only and returns NaN where a region is empty in both images, so papers
built on it silently drop exactly the cases that matter (a missed enhancing tumour). This module reports a
number for every case and region, with the conventions below spelled out so results can be compared.

Conventions (README-ready)
--------------------------
* **Regions.** Read from the dataset's ``dataset.json``. For a region dataset (some label given as a list,
  BraTS style) every non-background entry is one region, the union of its label values, e.g.
  ``"tumor core": [2, 3]``; the BraTS names "whole tumor", "tumor core" and "enhancing tumor" are reported as
  ``WT``, ``TC`` and ``ET``. Otherwise every foreground label is its own region, named as in ``dataset.json``.
  Voxels carrying the ``ignore`` label in the reference are left out of both masks (as nnU-Net does).
* **Dice** = 2|R∩P| / (|R| + |P|). Both masks empty → **1** (a correct "nothing here"); exactly one empty → 0.
* **HD95** (mm): the 95th percentile (numpy's default linear interpolation) of the union of both directed
  surface-distance sets, reference surface → prediction surface and back. A surface is the set of mask voxels
  removed by one binary erosion with the face-connected (6-neighbour in 3D) structuring element; the outside
  of the image counts as background, so an object touching the image border has a surface there. Distances
  are Euclidean between voxel centres, in mm, from ``scipy.ndimage.distance_transform_edt`` with the spacing
  that the dataset's nnU-Net reader/writer reports (``segmentation_io``: the one ``dataset.json`` selects, so a
  Tiff3DIO dataset's spacing comes from its ``.json`` sidecars, as in training).
  Both masks empty → **0**. Exactly one empty → by default the **diagonal of the image's field of view**
  (``sqrt(sum((size_i * spacing_i)^2))`` in mm): finite, so means stay defined, and larger than any distance
  that can be measured inside the image, so it is always the worst possible value. Choose
  ``--one-empty-hd95 nan`` for nnU-Net-like NaN (then summaries average over the finite values only), a
  number in mm, or a BraTS preset (``ONE_EMPTY_PRESETS``: ``brats2021`` 373.12866, ``brats2023`` 374).
* **NSD** (normalized surface Dice): (|{r ∈ ∂R: d(r,∂P) ≤ τ}| + |{p ∈ ∂P: d(p,∂R) ≤ τ}|) / (|∂R| + |∂P|), surfaces
  and distances as for HD95, τ = ``DEFAULT_NSD_TOLERANCE_MM`` by default. Both empty → 1, one empty → 0.
* **Optional**: BraTS 2023 lesion-wise Dice/HD95 (``lesionwise``), CHAOS RAVD/ASSD/MSSD (``chaos_metrics``).
* **Volumes**: voxel count × voxel volume (product of spacings), in mL (= cm³ = 1000 mm³).
* **Cases** are matched by file name; every reference file needs a prediction with the same name (extra
  predictions are ignored). Reference and prediction must have the same shape and the same spacing, origin and
  direction (or affine), as far as the reader reports them (within ``SPACING_TOLERANCE_MM``) and, when the caller
  passes them, only label values dataset.json defines.
* **Summary**: per region mean, population standard deviation (ddof=0) and median over cases.

Dice, HD95, NSD and the regions live in ``overlap`` (the primitives ``lesionwise`` and ``chaos_metrics`` use too);
this module composes them. Only numpy, scipy and nnU-Net's reader/writer classes are imported, so worker processes
start quickly (no torch).
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnunet_slem.atomic import write_text_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.chaos_metrics import chaos_fields
from nnunet_slem.evaluation.lesionwise import LesionSettings, lesion_fields
from nnunet_slem.evaluation.overlap import (
    BRATS_SHORT_NAMES,
    DEFAULT_NSD_TOLERANCE_MM,
    DEFAULT_ONE_EMPTY_HD95,
    ONE_EMPTY_PRESETS,
    OneEmptyHD95,
    Region,
    dice,
    dice_per_region,
    hd95_and_nsd,
    hd95_mm,
    image_diagonal_mm,
    one_empty_hd95_value,
    region_mask,
    region_masks,
    regions_from_labels,
    surface_distance_sets,
)
from nnunet_slem.evaluation.segmentation_io import (
    SPACING_TOLERANCE_MM,
    check_segmentation_file,
    read_pair,
    reader_writer_for,
)

if TYPE_CHECKING:
    from nnunetv2.imageio.base_reader_writer import BaseReaderWriter

#: This module's own names, and the primitives of ``overlap`` and ``segmentation_io`` that callers have always
#: imported from here (re-exported: the primitives moved down so that ``lesionwise`` and ``chaos_metrics`` need
#: not import this module, which imports them).
__all__ = [
    "BRATS_SHORT_NAMES", "CHAOS_COLUMNS", "CSV_COLUMNS", "DEFAULT_NSD_TOLERANCE_MM", "DEFAULT_ONE_EMPTY_HD95",
    "LESION_COLUMNS", "ONE_EMPTY_PRESETS", "SPACING_TOLERANCE_MM", "CaseMetrics", "MetricOptions", "OneEmptyHD95",
    "Region", "dice", "dice_per_region", "evaluate_case", "evaluate_folders", "hd95_and_nsd", "hd95_mm",
    "image_diagonal_mm", "match_cases", "metrics_for_arrays", "one_empty_hd95_value", "read_pair",
    "reader_writer_for", "region_mask", "region_masks", "regions_from_labels", "summarize",
    "surface_distance_sets", "write_outputs",
]

CSV_COLUMNS = ("case", "region", "dice", "hd95_mm", "ref_ml", "pred_ml", "nsd")
LESION_COLUMNS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
CHAOS_COLUMNS = ("ravd_pct", "assd_mm", "mssd_mm")


@dataclass(frozen=True)
class CaseMetrics:
    """One row of ``metrics_per_case.csv``."""

    case: str
    region: str
    dice: float
    hd95_mm: float
    ref_ml: float
    pred_ml: float
    nsd: float = float("nan")
    # filled only when asked for (MetricOptions): BraTS 2023 lesion-wise, then CHAOS
    lesion_dice: float | None = None
    lesion_hd95: float | None = None
    lesion_tp: int | None = None
    lesion_fp: int | None = None
    lesion_fn: int | None = None
    ravd_pct: float | None = None
    assd_mm: float | None = None
    mssd_mm: float | None = None


@dataclass(frozen=True)
class MetricOptions:
    """What to compute beyond Dice/HD95/NSD/volumes, and the label values the files may hold."""

    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    lesion: LesionSettings | None = None  # BraTS 2023 lesion-wise metrics when set
    chaos: bool = False  # CHAOS RAVD/ASSD/MSSD
    allowed_labels: tuple[int, ...] | None = None  # None: not checked


# ----------------------------------------------------------------------------------------------- metrics


def metrics_for_arrays(
    case: str,
    ref: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    regions: Sequence[Region],
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
    options: MetricOptions | None = None,
) -> list[CaseMetrics]:
    """All metrics of one case; ``spacing`` is per numpy axis (z, y, x for SimpleITK arrays)."""
    opts = options or MetricOptions()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for region in regions:
        r, p = region_masks(ref, pred, region, ignore_label)
        hd95, nsd_value = hd95_and_nsd(r, p, spacing, one_empty, opts.nsd_tolerance_mm)
        extra: dict = {}
        if opts.lesion is not None:
            extra.update(lesion_fields(r, p, spacing, opts.lesion))
        if opts.chaos:
            extra.update(chaos_fields(r, p, spacing, one_empty))
        rows.append(CaseMetrics(case, region.name, dice(r, p), hd95, int(r.sum()) * voxel_ml,
                                int(p.sum()) * voxel_ml, nsd_value, **extra))
    return rows


def _check_labels(case: str, what: str, path: str | Path, arr: np.ndarray, allowed: Sequence[int]) -> None:
    if not np.isin(arr, allowed).all():
        unknown = sorted(int(v) for v in np.setdiff1d(np.unique(arr), allowed))
        raise UserFacingError(
            f"case {case}: {what} {path} has label values {unknown} that dataset.json does not define "
            f"(it defines {list(allowed)}); pass the dataset the model was trained on (-d/-dj), or convert the "
            "segmentations to its labels (e.g. nnunet-slem convert brats for native BraTS labels)."
        )


def evaluate_case(
    case: str,
    ref_file: str | Path,
    pred_file: str | Path,
    regions: Sequence[Region],
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
    options: MetricOptions | None = None,
    reader: type[BaseReaderWriter] | None = None,
) -> list[CaseMetrics]:
    """Read one reference/prediction pair with nnU-Net's ``reader`` (``segmentation_io.reader_writer_for``;
    default SimpleITKIO) and compute its metrics; geometry must agree."""
    ref, pred, spacing = read_pair(case, ref_file, pred_file, reader)
    if options is not None and options.allowed_labels is not None:
        _check_labels(case, "reference", ref_file, ref, options.allowed_labels)
        _check_labels(case, "prediction", pred_file, pred, options.allowed_labels)
    return metrics_for_arrays(case, ref, pred, spacing, regions, ignore_label, one_empty, options)


# ------------------------------------------------------------------------------------------------ folders


def match_cases(ref_dir: Path, pred_dir: Path, file_ending: str) -> list[tuple[str, Path, Path]]:
    """(case, ref file, pred file) for every reference file; missing predictions are an error."""
    for what, folder in (("reference", ref_dir), ("prediction", pred_dir)):
        if not folder.is_dir():
            raise UserFacingError(f"{what} folder {folder} does not exist")
        if not any(p.is_file() and p.name.endswith(file_ending) for p in folder.iterdir()):
            raise UserFacingError(
                f"no {what} files ending in {file_ending!r} in {folder}; point "
                f"{'-ref at a labelsTr-like' if what == 'reference' else '-pred at nnUNetv2_predict output'} "
                "folder (the file ending comes from dataset.json)"
            )
    # a directory or a broken link named like a case is refused by name (read_pair), not skipped
    ref_names = sorted(p.name for p in ref_dir.iterdir() if p.name.endswith(file_ending))
    missing = [n for n in ref_names if not os.path.lexists(pred_dir / n)]
    if missing:
        shown = ", ".join(missing[:50]) + (f" ... and {len(missing) - 50} more" if len(missing) > 50 else "")
        raise UserFacingError(
            f"{len(missing)} of {len(ref_names)} reference cases have no prediction in {pred_dir}: {shown}. "
            "Predict them (same file names as the references) or evaluate against a reference folder that "
            "holds only the predicted cases."
        )
    return [(n[: -len(file_ending)], ref_dir / n, pred_dir / n) for n in ref_names]


def _evaluate_star(args: tuple) -> list[CaseMetrics]:
    *positional, reader = args
    return evaluate_case(*positional, reader=reader)


def evaluate_folders(
    ref_dir: str | Path,
    pred_dir: str | Path,
    regions: Sequence[Region],
    file_ending: str = ".nii.gz",
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
    num_processes: int = 1,
    options: MetricOptions | None = None,
    dataset_json: dict | None = None,
    progress: bool = False,
) -> list[CaseMetrics]:
    """Metrics for every reference case, in case order then region order.

    Files are read with the nnU-Net reader/writer ``dataset_json`` selects (as ``nnUNetv2_evaluate_folder``
    chooses it, the first reference as example file); without it, with SimpleITKIO. ``progress`` shows a bar
    over the cases.
    """
    from tqdm import tqdm

    matched = match_cases(Path(ref_dir), Path(pred_dir), file_ending)
    reader = None
    if dataset_json is not None:
        # the example file must read to its end: a damaged one would read as "no reader for these files"
        check_segmentation_file(matched[0][0], "reference", matched[0][1])
        reader = reader_writer_for({**dataset_json, "file_ending": file_ending}, matched[0][1])
    jobs = [(case, r, p, list(regions), ignore_label, one_empty, options, reader) for case, r, p in matched]
    bar = partial(tqdm, total=len(jobs), desc="evaluating", unit="case", disable=not progress)
    if num_processes <= 1 or len(jobs) == 1:
        per_case = [_evaluate_star(j) for j in bar(jobs)]
    else:
        # spawn, like nnU-Net: SimpleITK's threads do not survive fork reliably
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(num_processes, len(jobs))) as pool:
            per_case = list(bar(pool.imap(_evaluate_star, jobs, chunksize=1)))  # imap keeps the case order
    return [row for rows in per_case for row in rows]


# ------------------------------------------------------------------------------------------------ summary


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite))}


def _optional_columns(rows: Sequence[CaseMetrics]) -> tuple[str, ...]:
    """The lesion-wise / CHAOS columns, when those metrics were computed."""
    groups = (LESION_COLUMNS, CHAOS_COLUMNS)
    return tuple(c for g in groups if any(getattr(r, g[0]) is not None for r in rows) for c in g)


def summarize(rows: Sequence[CaseMetrics], regions: Sequence[Region]) -> dict:
    """Per region: n cases, mean/std/median of every metric over its finite values; lesion counts' totals."""
    out: dict = {}
    for region in regions:
        sel = [r for r in rows if r.region == region.name]
        hd = [r.hd95_mm for r in sel]
        out[region.name] = {
            "labels": list(region.labels),
            "n": len(sel),
            "dice": _stats([r.dice for r in sel]),
            "hd95_mm": {**_stats(hd), "n_finite": sum(not math.isnan(v) for v in hd)},
            "nsd": _stats([r.nsd for r in sel]),
        }
        for col in _optional_columns(rows):
            values = [float(getattr(r, col)) for r in sel]
            out[region.name][col] = _stats(values)
            if col in ("lesion_tp", "lesion_fp", "lesion_fn"):
                out[region.name][col]["total"] = int(sum(values))
    return out


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else repr(v)


def write_outputs(rows: Sequence[CaseMetrics], summary: dict, out_dir: str | Path, meta: dict) -> None:
    """``metrics_per_case.csv`` and ``summary.json`` (per region, then per case), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = CSV_COLUMNS + _optional_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    cases: dict[str, dict] = {}
    for r in rows:
        d = asdict(r)
        writer.writerow([d["case"], d["region"], *(_fmt(d[k]) for k in columns[2:])])
        cases.setdefault(r.case, {})[r.region] = {
            k: None if isinstance(d[k], float) and math.isnan(d[k]) else d[k] for k in columns[2:]
        }
    write_text_atomic(out / "metrics_per_case.csv", buf.getvalue())
    doc = {**meta, "regions": summary, "cases": cases}
    write_text_atomic(out / "summary.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
