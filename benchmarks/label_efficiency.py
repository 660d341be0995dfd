"""Label-efficiency benchmark: does SLeM pretraining beat training from scratch on held-out test cases?

The protocol the efficacy claims rest on (docs/baselines.md), on the realistic ICBM152-based brain data
(``make-dataset --anatomy icbm152``: skull-stripped, background exactly 0, nested tumours):

- K labelled cases (``--labeled``) picked per seed from fold 0's training cases; every method fine-tunes on
  the same K cases with the same fine-tuning RNG at seed s (``compare``'s pairing);
- every pretext pretrained ``--pretrain-seeds`` times; fine-tuning seed s starts from pretraining s mod P;
- the final checkpoint of every run predicts the held-out ``imagesTs`` (20 cases by default), which
  pretraining never reads; paired differences with a hierarchical bootstrap CI in ``paired.csv``.

One ``run`` is one ``nnunet-slem compare`` invocation into the comparison folder of its K (resumable: run it
again after an interruption). Runs already in that folder are reused, so methods can be added invocation by
invocation, each within about 90 minutes on 2 CPU cores, and the last one reports them all::

    python benchmarks/label_efficiency.py prepare --root /tmp/bench
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods scratch --labeled 4
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods scratch,slem --labeled 4
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods scratch,slem,cfb,slem_nocfb --labeled 4
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods scratch,slem,mae --labeled 4  # + MAE
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods slem_grid222 --labeled 4  # a pretext variant
    python benchmarks/label_efficiency.py report --root /tmp/bench --out benchmarks/results/label_efficiency

``report`` copies every evaluated run record (per-case Dice, a few kB) and the scratch arm's validation curves
into ``<out>/records/<comparison>/`` first, which the repository keeps, and reports from there: the figures do not
depend on the benchmark folder surviving, and arms run later pair with the stored ones (in a fresh folder, after
``prepare``, run only the new arm: ``run --methods slem_mdrop``; its seeds pair with the stored scratch runs of the
same K). It merges every
comparison into one ``paired.csv``/``summary.md``, a forest plot, and
``convergence.png``: the scratch arm's validation pseudo-Dice per epoch, which shows whether the fine-tuning
schedule was long enough for scratch to converge.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DATASET_ID = 940
PLANS = "nnUNetPlans_bench"
CONFIG = "3d_fullres"
FEATURES = (8, 16, 32, 64, 64, 64)
DEFAULTS = {"cases": 24, "test_cases": 20, "voxel_mm": 5.0, "seeds": 6, "pretrain_seeds": 2,
            "pretrain_epochs": 20, "pretrain_iters": 25, "pretrain_batch": 8,
            "epochs": 60, "iters": 25, "val_iters": 5}


def _env(root: Path, device: str = "cpu") -> dict[str, str]:
    """nnU-Net's folders under ``root``; on a CPU two threads and augmentation in the training process (so the
    fine-tuning RNG is paired exactly), on a GPU nnU-Net's augmentation workers (``nnUNet_n_proc_DA``)."""
    import os

    from nnunet_slem.experiments.workflow import nnunet_env

    if device == "cpu":
        return nnunet_env(root, extra={"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    return nnunet_env(root, n_proc_da=int(os.environ.get("nnUNet_n_proc_DA", 12)))


def _dataset_name(root: Path) -> str:
    names = sorted(p.name for p in (root / "nnUNet_raw").glob(f"Dataset{DATASET_ID:03d}_*"))
    if not names:
        sys.exit(f"No Dataset{DATASET_ID:03d} under {root}/nnUNet_raw; run `prepare --root {root}` first.")
    return names[0]


def prepare(args: argparse.Namespace) -> None:
    """Data, nnU-Net's planning and preprocessing, and the small CPU plans (skipped where already done)."""
    from nnunet_slem.experiments.workflow import run_command, write_small_plans

    root, env = args.root, _env(args.root)
    if not list((root / "nnUNet_raw").glob(f"Dataset{DATASET_ID:03d}_*")):
        run_command(["nnunet-slem", "make-dataset", "-d", DATASET_ID, "--anatomy", "icbm152", "--cases", args.cases,
                     "--test-cases", args.test_cases, "--voxel-mm", args.voxel_mm, "--seed", args.data_seed],
                    env, echo=True)
    name = _dataset_name(root)
    preprocessed = root / "nnUNet_preprocessed" / name
    if not (preprocessed / "nnUNetPlans.json").is_file() or not list(preprocessed.glob("nnUNetPlans_3d_fullres/*")):
        run_command(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", CONFIG, "-np", 2,
                     "--verify_dataset_integrity"], {**env, "nnUNet_n_proc_DA": "2"}, echo=True)
    if args.features:  # the CPU size; on a GPU nnU-Net's own plans are used as they are
        write_small_plans(preprocessed, "nnUNetPlans", PLANS, args.features, batch_size=2)
    plans_name = PLANS if args.features else "nnUNetPlans"
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text(encoding="utf-8"))["configurations"][CONFIG]
    print(f"{name}: patch {plans['patch_size']}, spacing {plans['spacing']}, normalisation "
          f"{plans['normalization_schemes']}, use_mask_for_norm {plans['use_mask_for_norm']}")


def run(args: argparse.Namespace) -> None:
    """One ``nnunet-slem compare`` invocation of the protocol (resumable)."""
    from nnunet_slem.experiments.workflow import run_command

    root = args.root
    out = root / "compare" / f"K{args.labeled}_e{args.epochs}"
    cmd = ["nnunet-slem", "compare", "-d", DATASET_ID, "-c", CONFIG, "-p", args.plans, "-f", 0, "-device", args.device,
           "--methods", args.methods, "--labeled", args.labeled, "--seeds", args.seeds,
           "--pretrain-seeds", args.pretrain_seeds, "--out", out,
           "--pretrain-epochs", args.pretrain_epochs, "--pretrain-iters", args.pretrain_iters,
           "--pretrain-batch", args.pretrain_batch, "--epochs", args.epochs, "--iters-per-epoch", args.iters,
           "--val-iters", args.val_iters, *([] if args.tta else ["--no-tta"])]
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_command(cmd, _env(root, args.device), out.parent / f"{out.name}.log", echo=True)
    print(f"{out}: {time.perf_counter() - start:.0f} s")


def _scratch_curves(compare_dir: Path) -> list[tuple[str, list[float]]]:
    """(label, nnU-Net's per-epoch validation pseudo-Dice) of every scratch run under ``compare_dir``."""
    import torch

    curves = []
    for ckpt in sorted(compare_dir.glob("runs/seed_*/nnUNet_results/*/SLeMTrainer_noCFB_noPretrain__*/fold_0/"
                                        "checkpoint_final.pth")):
        logging = torch.load(ckpt, map_location="cpu", weights_only=False)["logging"]
        curves.append((ckpt.parts[-6], [float(v) for v in logging["mean_fg_dice"]]))
    return curves


def _records(compare_dir: Path) -> list[dict]:
    """Every evaluated run of a comparison folder (``runs/seed_S/<method>.json``), finished invocation or not."""
    from nnunet_slem.experiments.comparison import RECORD_VERSION

    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(compare_dir.glob("runs/seed_*/*.json"))]
    return [r for r in records if r.get("record_version") == RECORD_VERSION and "test" in r["splits"]]


def archive(root: Path | None, archive_dir: Path) -> None:
    """Copy every evaluated run record and the scratch arm's validation curves of ``root/compare/K*`` into
    ``archive_dir/<comparison>/`` (a few kB per run, kept in the repository): the report is computed from the
    archive, so the figures survive the loss of the benchmark folder and new arms pair with stored runs."""
    from nnunet_slem.atomic import write_json_atomic

    for compare_dir in sorted(root.glob("compare/K*")) if root else []:
        target = archive_dir / compare_dir.name
        for record in _records(compare_dir):
            write_json_atomic(target / f"seed_{record['seed']}" / f"{record['method']}.json", record)
        curves = _scratch_curves(compare_dir)
        if curves:
            stored = target / "scratch_curves.json"
            known = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else {}
            write_json_atomic(stored, {**known, **dict(curves)})


def _archived(archive_dir: Path) -> dict[str, tuple[list[dict], list[tuple[str, list[float]]]]]:
    """comparison -> (run records, scratch curves) from the archive."""
    out = {}
    for target in sorted(p for p in archive_dir.glob("K*") if p.is_dir()):
        records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(target.glob("seed_*/*.json"))]
        curves_file = target / "scratch_curves.json"
        curves = json.loads(curves_file.read_text(encoding="utf-8")) if curves_file.is_file() else {}
        out[target.name] = (records, sorted(curves.items(), key=lambda kv: int(kv[0].split("_")[-1])))
    return out


def _contrast_markdown(contrasts: list) -> str:
    """``slem - X`` for every other arm X, in the layout of the paired tables (reference = X)."""
    if not contrasts:
        return ""
    from nnunet_slem.evaluation.paired import difference_table

    lines = ["### SLeM against the other arms (Dice points, slem − arm)", "", *difference_table(contrasts, "reference")]
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> None:
    """Every comparison under ``--root`` (archived first, :func:`archive`) and in the archive into ``--out``: paired
    differences to scratch on the test split (over the seeds both arms have finished, so an arm still running is
    reported with its ``n_seeds`` so far), ``slem`` minus
    every other arm (``paired.csv`` rows whose reference is that arm), mean ± std tables, the forest plot of the mean
    over regions, and the scratch arm's validation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnunet_slem.evaluation.paired import (
        PairedDifference,
        collapsed_runs,
        paired_csv,
        paired_differences,
        paired_markdown,
        plot_paired,
    )
    from nnunet_slem.experiments.comparison_report import case_records, results_markdown, split_rows
    from nnunet_slem.experiments.methods import ALL_METHODS

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    archive(args.root, out / "records")
    comparisons = _archived(out / "records")
    csv_parts, sections, forest = [], [], []
    for name, (records, _) in comparisons.items():
        if not records or len({r["method"] for r in records}) < 2:
            continue
        regions = list(records[0]["splits"]["test"]["dice"])
        cases = case_records(records, "test")
        diffs = paired_differences(cases, reference="scratch", regions=regions)
        body = paired_csv(diffs).splitlines()
        csv_parts += [body[0] + ",comparison"] if not csv_parts else []
        csv_parts += [f"{line},{name}" for line in body[1:]]
        forest += [PairedDifference(**{**d.__dict__, "method": f"{d.method} ({name})"})
                   for d in diffs if d.region == "mean"]
        # the method against each other arm (its ablations, recipe variants and other pretexts): slem - X
        contrasts = [d for other in sorted({r["method"] for r in records} - {"scratch", "slem"})
                     for d in paired_differences(cases, reference=other, regions=regions) if d.method == "slem"]
        body = paired_csv(contrasts).splitlines()
        csv_parts += [f"{line},{name}" for line in body[1:]]
        table = results_markdown(split_rows(records, "test"), regions, ALL_METHODS, f"## {name}",
                                 "Held-out test cases.")
        sections.append(table + "\n" + paired_markdown(diffs, collapsed_runs(cases, regions)) + "\n"
                        + _contrast_markdown(contrasts))
        plot_paired(diffs, out / f"{name}__paired.png", f"{name}: method − scratch, test split")
    if not csv_parts:
        sys.exit(f"No comparison with two evaluated arms under {args.root}/compare or in {out}/records.")
    (out / "paired.csv").write_text("\n".join(csv_parts) + "\n", encoding="utf-8")
    plot_paired(forest, out / "paired_mean.png", "label-efficiency benchmark: mean Dice of WT/TC/ET, method − scratch")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (_, curves) in comparisons.items():
        for seed, curve in curves:
            ax.plot(curve, lw=1, label=f"{name} {seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("scratch: validation pseudo-Dice")
    ax.set_title("Has training from scratch converged?", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=110)
    plt.close(fig)
    (out / "summary.md").write_text("\n".join(sections), encoding="utf-8")
    print("\n".join(sections))
    print(f"Wrote {out}/paired.csv, summary.md, paired_mean.png, convergence.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--cases", type=int, default=DEFAULTS["cases"])
    p.add_argument("--test-cases", type=int, default=DEFAULTS["test_cases"])
    p.add_argument("--voxel-mm", type=float, default=DEFAULTS["voxel_mm"])
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--features", type=int, nargs="*", default=list(FEATURES),
                   help=f"features per stage of the CPU plans {PLANS} [{' '.join(map(str, FEATURES))}]; none: keep "
                   "nnU-Net's plans only (GPU)")
    r = sub.add_parser("run")
    r.add_argument("--root", type=Path, required=True)
    r.add_argument("--methods", default="scratch,slem")
    r.add_argument("--labeled", type=int, default=4)
    r.add_argument("--plans", default=PLANS, help=f"plans identifier [{PLANS}: the small CPU plans]")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    r.add_argument("--tta", action="store_true", help="test-time mirroring when predicting the test cases")
    for key in ("seeds", "pretrain_seeds", "pretrain_epochs", "pretrain_iters", "pretrain_batch", "epochs", "iters",
                "val_iters"):
        r.add_argument("--" + key.replace("_", "-"), type=int, default=DEFAULTS[key])
    q = sub.add_parser("report")
    q.add_argument("--root", type=Path, default=None,
                   help="benchmark folder whose runs are added to the archive first; none: report the archive only")
    q.add_argument("--out", type=Path, default=Path("benchmarks/results/label_efficiency"))
    args = parser.parse_args()
    {"prepare": prepare, "run": run, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
