"""What ``nnunet-slem compare`` writes: ``results.csv``/``.md``/``.png`` per split and ``paired.csv``/``.png``.

A run's record (one JSON per method and seed) holds, per split (``val``: the fold's validation cases, for
monitoring; ``test``: the held-out test cases), the mean Dice per region and every case's Dice and region
volumes. The tables summarise runs over seeds; the paired statistics (:mod:`nnunet_slem.evaluation.paired`)
compare every method with the reference case by case, seed by seed, on the test split only.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from nnunet_slem.atomic import save_figure_atomic

SPLITS = ("val", "test")


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite))


def _fmt(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def split_rows(records: list[dict], split: str) -> list[dict]:
    """One flat row per run that has ``split``: the run's fields with that split's Dice."""
    return [{**{k: v for k, v in r.items() if k != "splits"}, "split": split, "dice": r["splits"][split]["dice"],
             "lesion_dice": r["splits"][split].get("lesion_dice"), "cases": len(r["splits"][split]["cases"])}
            for r in records if split in r["splits"]]


def results_csv(records: list[dict], regions: list[str]) -> str:
    """One row per run and split; ``split`` says which cases the Dice is the mean over. Lesion-wise Dice (BraTS
    2023) columns follow where the runs have it."""
    lesion = any(r["splits"][s].get("lesion_dice") for r in records for s in r["splits"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "trainer", "pretext", "cfb", "labeled", "seed", "pretrain_seed", "split",
                     "train_cases", "cases", *[f"dice_{r}" for r in regions], "dice_mean",
                     *([f"lesion_dice_{r}" for r in regions] if lesion else [])])
    for split in SPLITS:
        for row in split_rows(records, split):
            values = [row["dice"][r] for r in regions]
            lesion_values = [(row["lesion_dice"] or {}).get(r) for r in regions] if lesion else []
            writer.writerow([row["method"], row["trainer"], row["pretext"], row["cfb"], row["labeled"], row["seed"],
                             "" if row.get("pretrain_seed") is None else row["pretrain_seed"], split,
                             row["train_cases"] if row["train_cases"] is not None else "", row["cases"],
                             *[_fmt(v) for v in values], _fmt(_mean_std(values)[0]), *[_fmt(v) for v in lesion_values]])
    return buffer.getvalue()


def aggregate(rows: list[dict], regions: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Method -> region (and ``mean``) -> (mean, std) over seeds of the per-seed mean Dice."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {reg: _mean_std([r["dice"][reg] for r in mine]) for reg in regions}
        out[method]["mean"] = _mean_std([_mean_std([r["dice"][reg] for reg in regions])[0] for r in mine])
    return out


def results_markdown(rows: list[dict], regions: list[str], methods: dict, heading: str, split_note: str) -> str:
    """Mean ± std over seeds per method and region, for one split's ``rows``."""
    stats = aggregate(rows, regions)
    lesion = all(r.get("lesion_dice") for r in rows)
    lesion_stats = aggregate([{**r, "dice": r["lesion_dice"]} for r in rows], regions) if lesion else {}
    header = ["method", "CFB", "pretraining", "seeds", *(f"{r} Dice" for r in regions), "mean",
              *((f"{r} lesion Dice" for r in regions) if lesion else ())]
    # the separator is derived from the header, so every row of the table has the header's number of cells
    lines = [heading, "", f"{split_note} Dice: mean ± std over seeds of the mean over cases"
             + (" (global Dice, then BraTS 2023 lesion-wise Dice)." if lesion else "."), "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for method, values in stats.items():
        m = methods[method]
        n_seeds = len({r["seed"] for r in rows if r["method"] == method})
        cells = [f"{values[r][0]:.3f} ± {values[r][1]:.3f}" for r in [*regions, "mean"]]
        cells += [f"{lesion_stats[method][r][0]:.3f} ± {lesion_stats[method][r][1]:.3f}" for r in regions] if lesion \
            else []
        lines.append(f"| {method} | {'yes' if m.cfb else 'no'} | {m.pretext or '-'} | {n_seeds} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def case_records(records: list[dict], split: str):
    """The paired-statistics input: one :class:`~nnunet_slem.evaluation.paired.CaseRecord` per run and case."""
    from nnunet_slem.evaluation.paired import CaseRecord

    return [CaseRecord(method=r["method"], seed=r["seed"], case=c["case"], dice=c["dice"], ref_voxels=c["ref_ml"],
                       pred_voxels=c["pred_ml"])
            for r in records if split in r["splits"] for c in r["splits"][split]["cases"]]


def plot_results(rows: list[dict], regions: list[str], methods: dict, path: Path, title: str, ylabel: str) -> None:
    """Grouped bars: Dice per region and method, error bars = std over seeds, every seed's value as a dot (the
    spread between seeds is often as large as the gap between methods: the dots show it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(rows, regions)
    x = np.arange(len(regions) + 1)
    width = 0.8 / max(1, len(stats))
    fig, ax = plt.subplots(figsize=(2.5 + 1.4 * len(x) + 0.3 * len(stats), 4.2))
    for i, (method, values) in enumerate(stats.items()):
        offset = x + (i - (len(stats) - 1) / 2) * width
        means = [values[r][0] for r in [*regions, "mean"]]
        stds = [values[r][1] for r in [*regions, "mean"]]
        ax.bar(offset, np.nan_to_num(means), width, yerr=np.nan_to_num(stds), capsize=2, alpha=0.8,
                      label=method + ("" if methods[method].cfb else " (no CFB)"))
        for row in (r for r in rows if r["method"] == method):
            per_region = [row["dice"][r] for r in regions]
            ax.scatter(offset, [*per_region, _mean_std(per_region)[0]], s=6, color="black", zorder=3,
                       edgecolors="none")
    ax.set_xticks(x, [*regions, "mean"])
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def write_comparison_report(comparison, records: list[dict], checkpoints: dict, seconds: float) -> None:
    """``results.csv``/``.md``/``.json``/``.png`` and, with a reference arm, ``paired.csv``/``.png`` of a
    :class:`~nnunet_slem.experiments.comparison.Comparison` (its settings, data, regions and test set)."""
    from dataclasses import asdict

    from nnunet_slem.atomic import write_json_atomic, write_text_atomic
    from nnunet_slem.evaluation.paired import collapsed_runs, paired_csv, paired_differences, paired_markdown
    from nnunet_slem.experiments.methods import ALL_METHODS
    from nnunet_slem.experiments.run_records import pretraining_notes

    regions = [r.name for r in comparison.regions]
    write_text_atomic(comparison.root / "results.csv", results_csv(records, regions))
    smoke = " SMOKE RUN (tiny schedules, numbers meaningless)." if comparison.s.smoke else ""
    settings = comparison.s
    heading = (f"# nnunet-slem compare: {comparison.data.dataset_name}, {settings.configuration}, "
               f"fold {settings.fold}, labelled training cases: {settings.labeled or 'all of the fold'}")
    parts = [heading, ""]
    split = "test" if comparison.test_set is not None else "val"
    notes = {"test": f"Held-out test cases ({comparison.test_set[1] if comparison.test_set else ''}), never seen by "
                     "pretraining or checkpoint selection.",
             "val": "The fold's validation cases (monitoring only: nnU-Net's validation, not held out from "
                    "checkpoint decisions in general)."}
    for name in ("test", "val"):
        rows = split_rows(records, name)
        if rows:
            parts.append(results_markdown(rows, regions, ALL_METHODS, f"## {name} split", notes[name] + smoke))
    diffs = []
    if comparison.s.reference in {r["method"] for r in records} and len({r["method"] for r in records}) > 1:
        cases = case_records(records, split)
        diffs = paired_differences(cases, reference=comparison.s.reference, regions=regions)
        write_text_atomic(comparison.root / "paired.csv", paired_csv(diffs))
        parts.append(f"## Paired differences to {comparison.s.reference} ({split} split)\n\n"
                     + paired_markdown(diffs, collapsed_runs(cases, regions)))
    parts += [pretraining_notes(checkpoints), f"Wall time of this invocation: {seconds:.0f} s\n"]
    table = "\n".join(parts)
    write_text_atomic(comparison.root / "results.md", table)
    write_json_atomic(comparison.root / "results.json", {"settings": asdict(comparison.s), "runs": records})
    title = f"{comparison.data.dataset_name}, fold {comparison.s.fold}, labelled: {comparison.s.labeled or 'all'}"
    plot_results(split_rows(records, split), regions, ALL_METHODS, comparison.root / "results.png",
                 f"{title}, {split} split", f"{split} Dice")
    if diffs:
        from nnunet_slem.evaluation.paired import plot_paired

        plot_paired(diffs, comparison.root / "paired.png", f"{title}: method − {comparison.s.reference}, {split} split")
    print("\n" + table)
    print(f"Results: {comparison.root}/results.csv, results.md, results.png" + (", paired.csv, paired.png" if diffs
                                                                           else ""))
