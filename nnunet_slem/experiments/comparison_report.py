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
    lines = [heading, "", f"{split_note} Dice: mean ± std over seeds of the mean over cases"
             + (" (global Dice, then BraTS 2023 lesion-wise Dice)." if lesion else "."), "",
             "| method | CFB | pretraining | seeds | " + " | ".join(f"{r} Dice" for r in regions) + " | mean |"
             + "".join(f" {r} lesion Dice |" for r in regions),
             "|---" * (len(regions) * (2 if lesion else 1) + 5) + "|"]
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
