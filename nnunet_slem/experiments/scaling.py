"""Pretraining at scale (docs/method.md §5): each pretraining arm's paired gain over scratch against what its
pretraining saw (samples, images) and what it cost (wall time, samples/s).

The sweep's arms (:data:`nnunet_slem.experiments.methods.SCALE_METHODS`, with ``slem`` as the stored 4k-sample,
training-images-only point) fine-tune like ``slem`` in one comparison, so every point is a paired difference to
the same scratch runs. A run record carries its pretraining's size and speed
(``pretrained_from["pretraining"]``, :func:`nnunet_slem.experiments.run_records.pretraining_facts`); a record
written before records carried them is looked up in its checkpoint when that file still exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_slem.atomic import save_figure_atomic
from nnunet_slem.experiments.efficacy import pretraining_count, pretraining_key
from nnunet_slem.experiments.methods import SCALE_METHODS

#: the arms of the scaling report, in the order of the table: the stored point first, then the sweep and the
#: other pretexts at the comparison's own scale
SCALE_ARMS: tuple[str, ...] = ("slem", *SCALE_METHODS, "mae", "slem_recon")


@dataclass(frozen=True)
class ScalePoint:
    """One pretraining arm: its paired difference to scratch (mean of regions, over the seeds every arm of the
    table shares) and its pretrainings' size and speed (medians over the distinct pretrainings behind those
    runs)."""

    method: str
    pretext: str
    pool: bool
    samples: int | None
    images: int | None
    pretrainings: int
    n_seeds: int
    diff: float
    low: float
    high: float
    p_value: float  # paired t-test over the common seeds, unadjusted (the Holm p per arm is in paired.csv)
    wall_s: float | None
    samples_per_s: float | None


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def arm_pretrainings(records: Iterable[dict], method: str,
                     facts_of: Callable[[Path], dict | None]) -> dict[str, dict | None]:
    """sha256 (or the recorded pretraining seed) -> the facts of each distinct pretraining behind ``method``'s
    runs: from the record, else from ``facts_of(checkpoint)`` where the checkpoint still exists, else ``None``."""
    out: dict[str, dict | None] = {}
    for r in records:
        if r["method"] != method:
            continue
        source = r.get("pretrained_from") or {}
        key = pretraining_key(r)
        if out.get(key) is not None:
            continue
        facts = source.get("pretraining")
        if facts is None and source.get("path") and Path(source["path"]).is_file():
            facts = facts_of(Path(source["path"]))
        out[key] = facts
    return out


def common_seeds(records: Iterable[dict], methods: Iterable[str], reference: str = "scratch") -> list[int]:
    """The seeds at which ``reference`` and every one of ``methods`` have a record: the points of one scaling table
    must be differences over the same seeds, or a gap between two arms would mix seed sets."""
    by_method: dict[str, set[int]] = {}
    for r in records:
        by_method.setdefault(r["method"], set()).add(r["seed"])
    sets = [by_method.get(m, set()) for m in (reference, *methods)]
    return sorted(set.intersection(*sets)) if sets else []


def scale_points(records: Sequence[dict], facts_of: Callable[[Path], dict | None]) -> list[ScalePoint]:
    """The :data:`SCALE_ARMS` present in ``records``, each as its paired difference to scratch (mean of regions,
    paired t over seeds) over the seeds that scratch and every such arm share."""
    from nnunet_slem.evaluation.paired import paired_differences
    from nnunet_slem.experiments.comparison_report import case_records
    from nnunet_slem.experiments.methods import ALL_METHODS

    present = [m for m in SCALE_ARMS if any(r["method"] == m for r in records)]
    seeds = set(common_seeds(records, present))
    if not present or len(seeds) < 2:
        return []
    kept = [r for r in records if r["seed"] in seeds and r["method"] in {"scratch", *present}]
    regions = list(kept[0]["splits"]["test"]["dice"])
    by_method = {d.method: d for d in paired_differences(case_records(kept, "test"), "scratch", regions)
                 if d.region == "mean"}
    points = []
    for method in present:
        d = by_method[method]
        # size and cost are the arm's, known from any of its runs (older records carry none); the count is of
        # the pretrainings behind the seeds in the table
        facts = [f for f in arm_pretrainings(records, method, facts_of).values() if f]
        samples = {f.get("samples") for f in facts} - {None}
        images = {f.get("images") for f in facts} - {None}
        arm = ALL_METHODS[method]
        points.append(ScalePoint(method, arm.pretext or "", arm.pool, samples.pop() if len(samples) == 1 else None,
                                 images.pop() if len(images) == 1 else None,
                                 pretraining_count(kept, method)[0], d.n_seeds, d.mean_diff,
                                 d.ci_low, d.ci_high, d.p_value, _median(f.get("wall_s") for f in facts),
                                 _median(f.get("samples_per_s") for f in facts)))
    return points


def scaling_markdown(points: Sequence[ScalePoint], comparison: str) -> str:
    """The scaling table: Δ against scratch with its paired CI, and each arm's pretraining size and cost."""
    def number(v, fmt):
        return "?" if v is None else format(v, fmt)

    seeds = points[0].n_seeds if points else 0
    lines = [f"## Pretraining at scale ({comparison})", "",
             f"Δ = arm − scratch in Dice points, mean of WT/TC/ET on the held-out test cases, paired t-interval over "
             f"the {seeds} seeds every arm of this table has (so the rows compare like with like; an arm's own row "
             "in paired.csv uses all its seeds and carries the Holm-adjusted p); p: the paired t-test, "
             "unadjusted and exploratory. Samples: pretraining crops (epochs x "
             "iterations x batch); images: training images plus the unlabelled pool; wall time: the median "
             "pretraining's summed epoch times (no preprocessing, audit or probes); samples/s: the median epoch's.",
             "", "| arm | pretext | samples | images | pretrainings | seeds | Δ [95% CI] | p (t) | wall time | "
             "samples/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        wall = "?" if p.wall_s is None else f"{p.wall_s / 60:.1f} min"
        lines.append(f"| {p.method} | {p.pretext} | {number(p.samples, ',d')} | {number(p.images, 'd')} | "
                     f"{p.pretrainings} | {p.n_seeds} | {100 * p.diff:+.2f} [{100 * p.low:+.2f}, {100 * p.high:+.2f}]"
                     f" | {p.p_value:.3g} | {wall} | {number(p.samples_per_s, '.1f')} |")
    return "\n".join(lines) + "\n"


def plot_scaling(points: Sequence[ScalePoint], path: Path, title: str = "") -> None:
    """Δ against scratch (paired 95 % CI) over pretraining samples (log scale); colour: pretext, filled marker:
    with the unlabelled pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    try:
        pretexts = list(dict.fromkeys(p.pretext for p in points))
        shown = [p for p in points if p.samples]
        span = max([100 * (p.high - p.low) for p in shown if p.high == p.high] or [1.0])
        for scale in sorted({p.samples for p in shown}):
            group = [q for q in shown if q.samples == scale]
            xs = {q.method: scale * (1 + 0.1 * (k - (len(group) - 1) / 2)) for k, q in enumerate(group)}  # dodge
            label_y = -float("inf")
            for p in sorted(group, key=lambda q: q.diff):  # labels right of the group, stacked apart, with leaders
                colour = f"C{pretexts.index(p.pretext) % 10}"
                ax.errorbar([xs[p.method]], [100 * p.diff], yerr=[[100 * (p.diff - p.low)], [100 * (p.high - p.diff)]],
                            marker="s" if p.pool else "o", mfc=colour if p.pool else "white", color=colour,
                            capsize=3, label=p.pretext if p is next(q for q in shown if q.pretext == p.pretext)
                            else None)
                label_y = max(100 * p.diff, label_y + 0.07 * span)
                ax.annotate(f"{p.method} ({p.images or '?'} img, {p.n_seeds} seeds)", (xs[p.method], 100 * p.diff),
                            xytext=(max(xs.values()) * 1.08, label_y), textcoords="data", fontsize=6,
                            va="center", color=colour, arrowprops={"arrowstyle": "-", "lw": 0.4, "color": colour})
        ax.axhline(0.0, color="grey", lw=1, ls="--")
        ax.set_xscale("log")
        ticks = sorted({p.samples for p in shown})
        ax.set_xticks(ticks, [f"{t / 1000:g}k" for t in ticks])
        if ticks:  # room for the dodged arms and their labels on the right
            ax.set_xlim(ticks[0] / 1.6, ticks[-1] * 3.2)
        if shown:
            ax.legend(title="pretext", fontsize=7, title_fontsize=7, loc="lower left")
        ax.minorticks_off()
        ax.set_xlabel("pretraining samples (crops); filled square: with the unlabelled pool")
        ax.set_ylabel("Δ Dice vs scratch (points, paired 95% CI)")
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        save_figure_atomic(fig, path, dpi=110)
    finally:
        plt.close(fig)
