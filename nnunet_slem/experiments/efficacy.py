"""The efficacy protocol's inference: pre-named endpoints, one Holm family for them, Dice against fine-tuning steps.

The label-efficiency benchmark (``benchmarks/label_efficiency.py``) writes every comparison's paired differences
into one ``paired.csv``. Two rows of it are named *before* the runs (docs/baselines.md) and are the only ones a
benefit can be claimed from; they share one Holm correction. Every other row is exploratory and Holm-adjusted
over the rest of the file (:func:`nnunet_slem.evaluation.paired.holm_adjust`).

Comparisons are named ``K<labelled>_e<epochs>`` (``K4_e60``: 4 labelled cases, 60 epochs of 25 iterations =
1500 fine-tuning steps); the steps of a comparison come from its records' schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_slem.atomic import save_figure_atomic


@dataclass(frozen=True)
class Endpoint:
    """A pre-named contrast: ``method − reference`` on ``region`` in comparison ``comparison``."""

    name: str
    comparison: str
    method: str
    reference: str
    region: str = "mean"


#: The pre-named endpoints (docs/baselines.md, "Pre-named endpoints"), written down before their runs.
PRIMARY_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("final Dice (1500 steps)", "K4_e60", "slem", "scratch"),
    Endpoint("convergence speed (500 steps)", "K4_e20", "slem", "scratch"),
)


def primary_positions(rows: Sequence[tuple[str, str, str, str]],
                      endpoints: Iterable[Endpoint] = PRIMARY_ENDPOINTS) -> list[int]:
    """Positions of the endpoint rows among ``rows`` of (comparison, method, reference, region); at most one per
    endpoint (the first match), so a comparison never has two primary rows for one contrast."""
    positions = []
    for e in endpoints:
        key = (e.comparison, e.method, e.reference, e.region)
        match = next((i for i, row in enumerate(rows) if tuple(row) == key), None)
        if match is not None:
            positions.append(match)
    return positions


def steps_of(records: Iterable[dict]) -> int | None:
    """Fine-tuning steps (epochs x iterations per epoch) shared by ``records``; ``None`` if unknown or mixed."""
    steps = {(r["schedule"].get("epochs") or 0) * (r["schedule"].get("iters_per_epoch") or 0) for r in records}
    return steps.pop() if len(steps) == 1 and 0 not in steps else None


def seeds_by_method(records: Iterable[dict], where: Callable[[dict], object]) -> dict[str, list[int]]:
    """method -> sorted seeds of the records for which ``where(record)`` holds."""
    out: dict[str, list[int]] = {}
    for r in records:
        if where(r):
            out.setdefault(r["method"], []).append(r["seed"])
    return {method: sorted(seeds) for method, seeds in out.items()}


def missing_provenance(records: Iterable[dict]) -> dict[str, list[int]]:
    """method -> seeds of every record without ``labeled_cases`` (written before records named them)."""
    return seeds_by_method(records, lambda r: "labeled_cases" not in r)


def resumed_runs(records: Iterable[dict]) -> dict[str, list[int]]:
    """method -> seeds of every run resumed after an interruption (``resumed`` in its record): the labelled subset
    and the initialisation are paired, the batches after the resume point are not."""
    return seeds_by_method(records, lambda r: r.get("resumed"))


def pretraining_key(record: dict) -> str:
    """What tells one pretraining from another: the checkpoint's sha256 where the record has it, else its
    pretraining seed."""
    return (record.get("pretrained_from") or {}).get("sha256") or f"seed {record.get('pretrain_seed')}"


def pretraining_count(records: Iterable[dict], method: str) -> tuple[int, int]:
    """(distinct pretrainings, runs) behind ``method``: an interval over 12 seeds backed by 3 pretrainings covers
    pretraining variation only as far as 3 draws can. A pretraining is its checkpoint's sha256 where the record
    has it; a record without one counts its pretraining seed. A seed rerun with another torch build is another
    pretraining (it need not reproduce bit for bit), so records of both kinds count apart."""
    runs = [r for r in records if r["method"] == method]
    identities = {pretraining_key(r) for r in runs}
    return len(identities), len(runs)


def steps_to_reach(steps: Sequence[float], dice: Sequence[float], target: float) -> float | None:
    """The fewest steps at which the piecewise-linear curve through (steps, dice) reaches ``target``: linear
    interpolation between measured budgets (not a measurement at that budget). ``None`` when the curve never
    reaches it within the measured range."""
    order = np.argsort(steps)
    x, y = np.asarray(steps, dtype=float)[order], np.asarray(dice, dtype=float)[order]
    if not len(x):
        return None
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return None


@dataclass(frozen=True)
class BudgetPoint:
    """One fine-tuning budget of one arm: mean test Dice over seeds (t-interval over seeds), the paired
    difference to the reference at that budget, and each seed's test Dice (so that arms run at different seeds
    can be compared on the seeds they share)."""

    steps: int
    method: str
    dice: float
    dice_low: float
    dice_high: float
    n_seeds: int
    diff: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    per_seed: tuple[tuple[int, float], ...] = ()  # (seed, test Dice, mean of regions)


def paired_crossing(points: Sequence[BudgetPoint], method: str, reference: str) -> tuple[float | None, float, int]:
    """(steps, target, seeds): where ``method``'s Dice-against-steps curve reaches ``reference``'s Dice at the
    longest budget (:func:`steps_to_reach`), both taken over the same seeds: those ``method`` has at every budget
    and ``reference`` has at the longest. Means over different seed sets differ by the seeds as much as by the
    arms (an arm run at seeds 0-5 against a reference averaged over 0-11). ``(None, nan, n)`` when fewer than two
    budgets or seeds are shared."""
    mine = sorted((p for p in points if p.method == method), key=lambda p: p.steps)
    longest = max((p.steps for p in points), default=0)
    target_point = next((p for p in points if p.method == reference and p.steps == longest), None)
    if len(mine) < 2 or target_point is None:
        return None, math.nan, 0
    reference_dice, arm_dice = dict(target_point.per_seed), [dict(p.per_seed) for p in mine]
    seeds = set(reference_dice).intersection(*arm_dice)
    if len(seeds) < 2:
        return None, math.nan, len(seeds)
    target = float(np.mean([reference_dice[s] for s in seeds]))
    curve = [float(np.mean([dice[s] for s in seeds])) for dice in arm_dice]
    return steps_to_reach([p.steps for p in mine], curve, target), target, len(seeds)


def plot_dice_vs_steps(points: Sequence[BudgetPoint], reference: str, path: Path, title: str = "") -> None:
    """Two panels: held-out mean Dice per arm against fine-tuning steps (95 % t-interval over seeds), and the
    paired difference to ``reference`` against steps (95 % paired t-interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    try:
        methods = list(dict.fromkeys(p.method for p in points))
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, method in enumerate(methods):
            colour = cycle[k % len(cycle)]  # one colour per arm in both panels
            mine = sorted((p for p in points if p.method == method), key=lambda p: p.steps)
            dodge = 1 + 0.02 * (k - (len(methods) - 1) / 2)  # arms side by side at a shared budget
            x = [p.steps * dodge for p in mine]
            y = [100 * p.dice for p in mine]
            err = [[100 * (p.dice - p.dice_low) for p in mine], [100 * (p.dice_high - p.dice) for p in mine]]
            left.errorbar(x, y, yerr=np.nan_to_num(err), marker="o", capsize=3, color=colour,
                          label=f"{method} ({', '.join(str(p.n_seeds) for p in mine)} seeds)")
            if method != reference:
                d = [p for p in mine if math.isfinite(p.diff)]
                right.errorbar([p.steps * dodge for p in d], [100 * p.diff for p in d],
                               yerr=np.nan_to_num([[100 * (p.diff - p.diff_low) for p in d],
                                                   [100 * (p.diff_high - p.diff) for p in d]]),
                               marker="s", capsize=3, color=colour, label=f"{method} − {reference}")
        for ax in (left, right):
            ax.set_xscale("log")
            ticks = sorted({p.steps for p in points})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("fine-tuning steps")
            ax.legend(fontsize=7)
        left.set_ylabel("held-out test Dice, mean of regions (points)")
        right.axhline(0.0, color="grey", lw=1, ls="--")
        right.set_ylabel(f"Δ Dice vs {reference} (points, paired 95% CI)")
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        save_figure_atomic(fig, path, dpi=110)
    finally:
        plt.close(fig)
