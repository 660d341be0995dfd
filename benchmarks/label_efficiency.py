"""Label-efficiency benchmark: does SLeM pretraining beat training from scratch on held-out test cases?

The protocol the efficacy claims rest on (docs/baselines.md), on the realistic ICBM152-based brain data
(``make-dataset --anatomy icbm152``: skull-stripped, background exactly 0, nested tumours):

- K labelled cases (``--labeled``) picked per seed from fold 0's training cases; every method fine-tunes on
  the same K cases with the same fine-tuning RNG at seed s (``compare``'s pairing);
- every pretext pretrained ``--pretrain-seeds`` times; fine-tuning seed s starts from pretraining s mod P;
- the final checkpoint of every run predicts the held-out ``imagesTs`` (20 cases by default), which
  pretraining never reads; paired differences with a paired t-interval over seeds in ``paired.csv``, the
  pre-named endpoints (docs/baselines.md) marked ``primary`` and every row Holm-adjusted (``p_holm``).

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
comparison into one ``paired.csv``/``summary.md``, a forest plot, ``dice_vs_steps.png`` (test Dice against the
fine-tuning budgets ``K4_e10``/``K4_e20``/``K4_e60``), and ``convergence.png``: every arm's validation
pseudo-Dice per epoch, which shows whether the fine-tuning schedule was long enough to converge.

The pretraining-at-scale sweep adds its arms to ``K4_e60`` (each pairs with the stored scratch runs of the same
seeds); ``report`` then writes ``scaling.png`` and its table (Δ against pretraining samples and images, with each
pretraining's wall time and samples/s). Run each line twice, with ``--first-seed 0`` and ``--first-seed 3``, for
6 seeds. Three fine-tunings take about 30 minutes on 2 CPU cores; an ``_x8`` arm's first invocation also
pretrains 2 x 32k samples (SLeM at about 23 samples/s: some 25 minutes each; the reconstructive SLeM trains
the whole U-Net at about 10 samples/s: about an hour each; MAE, also whole-network, is slower than SLeM too),
so it may outlast a 90-minute slot: every invocation resumes where the last one stopped::

    python benchmarks/label_efficiency.py prepare --root /tmp/bench --unlabeled-cases 384
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods slem_pool --unlabeled --seeds 3
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods slem_x8 --seeds 3
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods slem_x8_pool --unlabeled --seeds 3
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods mae_x8_pool --unlabeled --seeds 3
    python benchmarks/label_efficiency.py run --root /tmp/bench --methods slem_recon_x8_pool --unlabeled --seeds 3

The comparisons of one benchmark folder share their pretrainings (``compare/pretrain_seeds`` and
``compare/pretrain_variants``, linked from each comparison): the best arm's short-budget runs
(``--epochs 10``, ``--epochs 20``) fine-tune from the very checkpoints its ``K4_e60`` runs used.
"""

from __future__ import annotations

import argparse
import json
import math
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
    pool = root / "nnUNet_raw" / name / "imagesUnlabeled"
    if args.unlabeled_cases and not pool.is_dir():
        # the same generator and seed: cases after the training and test ones, written beside the dataset so the
        # training and test cases (and everything planned from them) stay as they are
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(dir=root) as scratch:
            run_command(["nnunet-slem", "make-dataset", "-d", DATASET_ID, "--anatomy", "icbm152", "--cases",
                         args.cases, "--test-cases", args.test_cases, "--voxel-mm", args.voxel_mm, "--seed",
                         args.data_seed, "--unlabeled-cases", args.unlabeled_cases, "--raw", scratch], env, echo=True)
            shutil.move(str(Path(scratch) / name / "imagesUnlabeled"), str(pool))
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
           "--methods", args.methods, "--labeled", args.labeled, "--seeds", args.seeds, "--first-seed", args.first_seed,
           "--pretrain-seeds", args.pretrain_seeds, "--out", out,
           "--pretrain-epochs", args.pretrain_epochs, "--pretrain-iters", args.pretrain_iters,
           "--pretrain-batch", args.pretrain_batch, "--epochs", args.epochs, "--iters-per-epoch", args.iters,
           "--val-iters", args.val_iters, *([] if args.tta else ["--disable_tta"]),
           *(["--unlabeled", root / "nnUNet_raw" / _dataset_name(root) / "imagesUnlabeled"] if args.unlabeled else [])]
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    # pretraining seeds >= 1 and the pretext variants live in the comparison folder (seed 0 in nnUNet_results):
    # shared folders, so the comparisons of one benchmark (K = 4 and 8, 60 and 10 epochs) start from the very
    # same checkpoints (an _x8 arm at a short fine-tuning budget does not pretrain again)
    for name in ("pretrain_seeds", "pretrain_variants"):
        share_folder(out, root / "compare" / name)
    run_command(cmd, _env(root, args.device), out.parent / f"{out.name}.log", echo=True)
    print(f"{out}: {time.perf_counter() - start:.0f} s")


def share_folder(comparison: Path, shared: Path) -> None:
    """Make ``comparison/<shared.name>`` a link to ``shared``. A real folder already there (a benchmark run before
    the folder was shared) becomes the shared one when there is none yet, so its finished pretrainings are kept;
    the run records find them by checksum, and their recorded paths still resolve through the link."""
    import shutil

    own = comparison / shared.name
    if own.is_dir() and not own.is_symlink():
        if not any(own.iterdir()):
            own.rmdir()
        elif shared.exists():
            sys.exit(f"{own} and {shared} both hold pretrainings; merge them into {shared} and delete {own}, "
                     "then run again.")
        else:
            shared.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(own), str(shared))
    shared.mkdir(parents=True, exist_ok=True)
    if not own.exists() and not own.is_symlink():
        own.symlink_to(shared.resolve(), target_is_directory=True)


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


def _budget_points(comparisons: dict, labeled: str, reference: str = "scratch") -> list:
    """Every arm's mean test Dice and paired difference to ``reference`` at each fine-tuning budget of the
    comparisons with ``labeled`` labelled cases (``K4_e10``, ``K4_e20``, ``K4_e60``)."""
    from collections import Counter

    import numpy as np

    from nnunet_slem.evaluation.paired import paired_differences, t_interval
    from nnunet_slem.experiments.comparison_report import case_records
    from nnunet_slem.experiments.efficacy import BudgetPoint, steps_of

    budgets = {name: records for name, (records, _) in comparisons.items()
               if name.startswith(f"K{labeled}_e") and records}
    # the reference, slem, and every arm measured at two budgets or more (a new arm's short-budget runs)
    budgets_of = Counter(m for records in budgets.values() for m in dict.fromkeys(r["method"] for r in records))
    methods = list(dict.fromkeys([reference, "slem", *(m for m, n in budgets_of.items() if n > 1)]))
    points = []
    for records in budgets.values():
        regions = list(records[0]["splits"]["test"]["dice"])
        diffs = {d.method: d for d in paired_differences(case_records(records, "test"), reference, regions)
                 if d.region == "mean"} if reference in {r["method"] for r in records} else {}
        for method in methods:
            runs = [r for r in records if r["method"] == method]
            steps = steps_of(runs)
            if not runs or steps is None:
                continue
            per_seed = tuple((r["seed"], float(np.mean(list(r["splits"]["test"]["dice"].values())))) for r in runs)
            mean, low, high, _ = t_interval([dice for _, dice in per_seed])
            d = diffs.get(method)
            points.append(BudgetPoint(steps, method, mean, low, high, len(runs),
                                      *((d.mean_diff, d.ci_low, d.ci_high) if d else (math.nan,) * 3), per_seed))
    return points


def _convergence_markdown(points: list, reference: str = "scratch") -> str:
    """Dice against steps as a table, and the steps each arm measured at two budgets or more needs to reach
    scratch's Dice at the longest budget, over the seeds both have (:func:`paired_crossing`)."""
    from nnunet_slem.experiments.efficacy import paired_crossing

    if len({p.steps for p in points}) < 2:
        return ""
    lines = ["## Dice against fine-tuning steps (K = 4)", "",
             "| steps | arm | seeds | test Dice, mean of regions [95% CI over seeds] | Δ vs scratch [paired 95% CI] |",
             "|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p.steps, p.method)):
        diff = ("" if p.method == reference
                else f"{100 * p.diff:+.2f} [{100 * p.diff_low:+.2f}, {100 * p.diff_high:+.2f}]")
        lines.append(f"| {p.steps} | {p.method} | {p.n_seeds} | {p.dice:.3f} [{p.dice_low:.3f}, {p.dice_high:.3f}] "
                     f"| {diff} |")
    lines += ["", "Test Dice is over each arm's own seeds (the seeds column), so two rows of one budget may average "
              "different seeds; the paired Δ and the crossings below compare arms on the seeds they share."]
    longest = max(p.steps for p in points)
    for method in dict.fromkeys(p.method for p in points if p.method != reference):
        if len({p.steps for p in points if p.method == method}) < 2:
            continue
        reached, target, n_seeds = paired_crossing(points, method, reference)
        name = "SLeM" if method == "slem" else f"`{method}`"
        if math.isnan(target):
            lines += ["", f"{name}: fewer than 2 seeds at every budget and scratch's {longest} steps; no crossing."]
            continue
        where = (f"about {reached:.0f} steps (linear interpolation between the measured budgets, not a measured "
                 "budget)" if reached is not None else "not within the measured budgets")
        lines += ["", f"{name} reaches scratch's {longest}-step test Dice ({target:.3f}) at {where}; both over the "
                      f"{n_seeds} seeds {name} has at every budget."]
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> None:
    """Every comparison under ``--root`` (archived first, :func:`archive`) and in the archive into ``--out``: paired
    differences to scratch on the test split (over the seeds both arms have finished, so an arm still running is
    reported with its ``n_seeds`` so far), ``slem`` minus every other arm, all in one ``paired.csv`` with the
    pre-named endpoints marked (``primary``) and Holm's correction (``p_holm``: the endpoints as one family, every
    other row as the other); mean ± std tables, the forest plot of the mean over regions, Dice against fine-tuning
    steps (``dice_vs_steps.png``), the pretraining-at-scale arms against pretraining samples (``scaling.png`` and
    its table), where the pre-registered choice of the sweep's best arm stands
    (:mod:`nnunet_slem.experiments.best_arm`) and every arm's validation curves (``convergence.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nnunet_slem.evaluation.paired import (
        PairedDifference,
        collapsed_runs,
        holm_adjust,
        paired_csv,
        paired_differences,
        paired_markdown,
        plot_paired,
        seed_differences,
        seeds_for_power,
    )
    from nnunet_slem.experiments.best_arm import best_arm_markdown, decide_best_arm
    from nnunet_slem.experiments.comparison_report import case_records, results_markdown, split_rows
    from nnunet_slem.experiments.efficacy import (
        PRIMARY_ENDPOINTS,
        missing_provenance,
        plot_dice_vs_steps,
        pretraining_count,
        primary_positions,
        resumed_runs,
    )
    from nnunet_slem.experiments.methods import ALL_METHODS
    from nnunet_slem.experiments.run_records import pretraining_facts
    from nnunet_slem.experiments.scaling import plot_scaling, scale_points, scaling_markdown

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    archive(args.root, out / "records")
    comparisons = _archived(out / "records")
    # every row of paired.csv first, so Holm's correction covers the whole file
    rows, parts = [], {}
    for name, (records, _) in comparisons.items():
        if not records or len({r["method"] for r in records}) < 2:
            continue
        regions = list(records[0]["splits"]["test"]["dice"])
        cases = case_records(records, "test")
        diffs = paired_differences(cases, reference="scratch", regions=regions)
        # the method against each other arm (its ablations, recipe variants and other pretexts): slem - X
        contrasts = [d for other in sorted({r["method"] for r in records} - {"scratch", "slem"})
                     for d in paired_differences(cases, reference=other, regions=regions) if d.method == "slem"]
        parts[name] = (records, regions, cases, len(diffs), len(contrasts))
        rows += [(name, d) for d in diffs + contrasts]
    if not rows:
        sys.exit(f"No comparison with two evaluated arms under {args.root}/compare or in {out}/records.")
    keys = [(name, d.method, d.reference, d.region) for name, d in rows]
    adjusted = holm_adjust([d for _, d in rows], primary_in=primary_positions(keys))
    body = paired_csv(adjusted).splitlines()
    (out / "paired.csv").write_text("\n".join([body[0] + ",comparison"]
                                              + [f"{line},{name}" for line, (name, _) in zip(body[1:], rows)]) + "\n",
                                   encoding="utf-8")
    by_comparison: dict[str, list] = {}
    for (name, _), d in zip(rows, adjusted):
        by_comparison.setdefault(name, []).append(d)

    sections, forest = [_endpoints_markdown(by_comparison, comparisons, PRIMARY_ENDPOINTS, seed_differences,
                                            seeds_for_power, pretraining_count)], []
    for name, (records, regions, cases, n_diffs, _) in parts.items():
        diffs, contrasts = by_comparison[name][:n_diffs], by_comparison[name][n_diffs:]
        forest += [PairedDifference(**{**d.__dict__, "method": f"{d.method} ({name})"})
                   for d in diffs if d.region == "mean"]
        table = results_markdown(split_rows(records, "test"), regions, ALL_METHODS, f"## {name}",
                                 "Held-out test cases.")
        missing = missing_provenance(records)
        note = (f"Runs recorded before records named their labelled cases (no `labeled_cases`): "
                f"{sum(map(len, missing.values()))} ("
                + "; ".join(f"{m} seeds {', '.join(map(str, s))}" for m, s in missing.items()) + ").\n\n"
                if missing else "")
        resumed = resumed_runs(records)
        note += ("Runs resumed after an interruption (paired up to the resume point only): "
                 + "; ".join(f"{m} seeds {', '.join(map(str, s))}" for m, s in resumed.items()) + ".\n\n"
                 if resumed else "")
        sections.append(table + "\n" + note + paired_markdown(diffs, collapsed_runs(cases, regions)) + "\n"
                        + _contrast_markdown(contrasts))
        plot_paired(diffs, out / f"{name}__paired.png", f"{name}: method − scratch, test split")
    plot_paired(forest, out / "paired_mean.png", "label-efficiency benchmark: mean Dice of WT/TC/ET, method − scratch")
    scale = PRIMARY_ENDPOINTS[0].comparison  # the sweep is judged where the primary endpoint is
    if scale in parts:
        points = scale_points(parts[scale][0], pretraining_facts)
        if any(p.method != "slem" for p in points):
            plot_scaling(points, out / "scaling.png", f"{scale}: pretraining at scale, arm − scratch")
            sections.append(scaling_markdown(points, scale))
        # the rule's state even while an arm is short of seeds (the scaling table then waits for it)
        sections.append(best_arm_markdown(decide_best_arm(parts[scale][2], parts[scale][1]), scale))
    points = _budget_points(comparisons, "4")
    if len({p.steps for p in points}) >= 2:
        plot_dice_vs_steps(points, "scratch", out / "dice_vs_steps.png",
                           "K = 4 labelled cases: held-out test Dice against fine-tuning steps")
        sections.append(_convergence_markdown(points))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    colours = {}
    for name, (records, scratch_curves) in comparisons.items():
        curves = [(f"scratch {seed}", c) for seed, c in scratch_curves]
        curves += [(f"{r['method']} seed_{r['seed']}", r["validation_curve"]) for r in records
                   if r.get("validation_curve") and not (r["method"] == "scratch"
                                                         and f"seed_{r['seed']}" in dict(scratch_curves))]
        for label, curve in curves:
            arm = f"{name} {label.split()[0]}"
            first = arm not in colours
            colour = colours.setdefault(arm, f"C{len(colours) % 10}")
            ax.plot(np.arange(1, len(curve) + 1), curve, lw=0.8, color=colour, label=arm if first else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo-Dice")
    ax.set_title("nnU-Net's validation pseudo-Dice per epoch, every run", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=110)
    plt.close(fig)
    (out / "summary.md").write_text("\n".join(sections), encoding="utf-8")
    print("\n".join(sections))
    print(f"Wrote {out}/paired.csv, summary.md, paired_mean.png, dice_vs_steps.png, scaling.png, convergence.png "
          "(each figure where its runs exist)")


def _endpoints_markdown(by_comparison: dict, comparisons: dict, endpoints, seed_differences, seeds_for_power,
                        pretraining_count) -> str:
    """The pre-named endpoints first: difference, paired t CI, Holm p, seeds, cases, pretrainings, per-seed
    differences and the seeds a +2 / +4 point effect would need at the observed SD."""
    import numpy as np

    from nnunet_slem.experiments.comparison_report import case_records

    lines = ["## Pre-named endpoints", "",
             "Named in docs/baselines.md before their runs; one Holm family of two. Δ in Dice points, mean of "
             "WT/TC/ET on the held-out test cases, paired t-interval over seeds.", "",
             "| endpoint | contrast | Δ [95% CI] | p (t) | p (Holm) | seeds | cases | pretrainings | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    details = []
    for e in endpoints:
        d = next((d for d in by_comparison.get(e.comparison, []) if d.primary and d.method == e.method
                  and d.reference == e.reference and d.region == e.region), None)
        if d is None:
            lines.append(f"| {e.name} | {e.method} − {e.reference}, {e.comparison} | not run yet | | | 0 | 0 | | |")
            continue
        records = comparisons[e.comparison][0]
        n_pre, _ = pretraining_count(records, e.method)
        verdict = "established" if d.established else "not established"
        lines.append(f"| {e.name} | {e.method} − {e.reference}, {e.comparison} | {100 * d.mean_diff:+.2f} "
                     f"[{100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}] | {d.p_value:.3g} | {d.p_holm:.3g} "
                     f"| {d.n_seeds} | {d.n_cases} | {n_pre} | {verdict} |")
        regions = list(records[0]["splits"]["test"]["dice"])
        per_seed = seed_differences(case_records(records, "test"), e.method, e.reference, regions)
        sd = float(np.std(list(per_seed.values()), ddof=1)) * 100 if len(per_seed) > 1 else float("nan")
        need = {delta: seeds_for_power(sd, delta) for delta in (2.0, 4.0)} if sd == sd else {}
        details.append(f"- {e.name}: per seed " + ", ".join(f"{s}: {100 * v:+.1f}" for s, v in per_seed.items())
                       + f"; seed-level SD {sd:.2f} points; 80 % power needs "
                       + ", ".join(f"{n} seeds at +{delta:.0f}" for delta, n in need.items()) + ".")
    return "\n".join(lines + [""] + details) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--cases", type=int, default=DEFAULTS["cases"])
    p.add_argument("--test-cases", type=int, default=DEFAULTS["test_cases"])
    p.add_argument("--voxel-mm", type=float, default=DEFAULTS["voxel_mm"])
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--unlabeled-cases", type=int, default=0,
                   help="also write this many image-only cases (imagesUnlabeled/) for the pool arms [0]")
    p.add_argument("--features", type=int, nargs="*", default=list(FEATURES),
                   help=f"features per stage of the CPU plans {PLANS} [{' '.join(map(str, FEATURES))}]; none: keep "
                   "nnU-Net's plans only (GPU)")
    r = sub.add_parser("run")
    r.add_argument("--root", type=Path, required=True)
    r.add_argument("--methods", default="scratch,slem")
    r.add_argument("--labeled", type=int, default=4)
    r.add_argument("--plans", default=PLANS, help=f"plans identifier [{PLANS}: the small CPU plans]")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    r.add_argument("--unlabeled", action="store_true",
                   help="pass the dataset's imagesUnlabeled/ (prepare --unlabeled-cases) as compare's --unlabeled "
                   "pool, for the pool arms (slem_pool, slem_x8_pool, mae_x8_pool, slem_recon_x8_pool)")
    r.add_argument("--tta", action="store_true", help="test-time mirroring when predicting the test cases")
    r.add_argument("--first-seed", type=int, default=0,
                   help="first paired seed: --first-seed 6 --seeds 6 adds seeds 6-11 to the stored seeds 0-5 [0]")
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
