"""Paired statistics for method comparisons: per-method Dice differences to a reference, with uncertainty.

Why paired, and why this way
----------------------------
Fine-tuning results vary a lot between seeds (which labelled subset, which initialisation of the head, which
batches) and between test cases (a small enhancing tumour is hard for every method). Comparing two methods'
*means* mixes both sources of variation into the comparison and hides real effects, or invents them when the
seeds differ. ``nnunet-slem compare`` therefore runs every method at the same seeds *s* with the same labelled
subset and fine-tuning RNG, and evaluates all of them on the same held-out test cases, so the difference
method − reference can be taken per (seed, case) pair, where everything but the method is held fixed.

A benefit is claimed only from held-out test cases, paired seeds, and a 95 % confidence interval that
excludes 0 after the correction for multiplicity (the ``established`` property / column). Conventions:

* **Pairs.** A (seed, case) pair is used when both the method and the reference have a record for it; pairs
  missing in either arm are dropped, and a seed left without common cases is dropped. ``n_seeds`` and
  ``n_cases`` (distinct test cases) count what was actually used, so a crashed run shows up there.
* **Regions.** One row per region and one for ``"mean"``, the per-case mean of the listed regions' Dice
  (Dice is 1 where a region is empty in both reference and prediction, see :mod:`.metrics`).
* **Difference** (``mean_diff``) = mean over seeds of the mean over cases of the per-case difference, so every
  seed weighs the same even if it lost cases.
* **The replicate is the seed.** Every seed evaluates the *same* test cases, so cases are not independent
  replicates across seeds: each seed is reduced to one number, its mean difference over the test cases, and
  the inference is over those ``n`` seed-level differences. The estimand is the expected difference on this
  test set over the fine-tuning randomness (labelled subset, initialisation, batches, pretraining seed).
* **95 % CI**: the paired t-interval over the seed-level differences, mean ± t(0.975, n − 1) · sd / √n.
  Its false-positive rate is nominal at small n (tests/test_paired.py simulates null data shaped like the
  benchmark's: 6 seeds, 20 cases, seed and case effects). A percentile bootstrap over 6 seeds is not: the
  bootstrap spread of a mean of n values is sqrt((n - 1) / n) of its standard error, and its quantiles are normal
  ones where a mean of 6 needs t with 5 degrees of freedom (2.57 instead of 1.96), which is why it was replaced.
* **p value** (``p_value``): the two-sided paired t-test over the same seed-level differences, so
  ``p_value < 0.05`` exactly when the CI excludes 0. ``p_wilcoxon`` (Wilcoxon signed-rank, exact for small n;
  its smallest possible value with n seeds is 2 / 2^n) is reported beside it for readers who expect it.
* **Multiplicity** (``p_holm``): Holm's step-down adjustment within a family (:func:`holm`). The pre-named
  endpoints (``primary``) form one family; every other row of a ``paired.csv`` is exploratory and forms the
  other. ``established`` means ``p_holm < 0.05``: for a pre-named endpoint that is its interval excluding 0
  after Holm's correction over the endpoints.
* Edge cases: all seed differences equal (sd 0) gives a zero-width interval at that value and p 1 (all zero)
  or 0; a single seed (or none) gives nan.

Only numpy and scipy are imported at module level (matplotlib inside :func:`plot_paired`), no torch.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from nnunet_slem.atomic import save_figure_atomic

#: Name of the pseudo-region holding the per-case mean of the regions' Dice.
MEAN_REGION = "mean"
#: Two-sided confidence level of the intervals; ``ALPHA`` is the family-wise error rate Holm's correction holds.
CI_LEVEL = 0.95
ALPHA = 1.0 - CI_LEVEL

PAIRED_COLUMNS = ("method", "reference", "region", "mean_diff", "ci_low", "ci_high", "p_value", "p_wilcoxon",
                  "p_holm", "primary", "n_seeds", "n_cases")


@dataclass(frozen=True)
class CaseRecord:
    """The evaluation of one test case by one run (method, seed)."""

    method: str
    seed: int
    case: str
    dice: dict[str, float]  # region name -> Dice (1.0 when the region is empty in both ref and pred)
    ref_voxels: dict[str, int]  # region -> voxels in the reference
    pred_voxels: dict[str, int]  # region -> voxels in the prediction


@dataclass(frozen=True)
class PairedDifference:
    """Dice difference ``method − reference`` for one region (or ``"mean"``), as fractions (not points)."""

    method: str
    reference: str
    region: str
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # paired t-test over the seed-level differences (consistent with the interval)
    n_seeds: int
    n_cases: int
    p_wilcoxon: float = math.nan
    p_holm: float = math.nan  # Holm-adjusted within the row's family (see holm_adjust); nan until adjusted
    primary: bool = False  # a pre-named endpoint

    @property
    def established(self) -> bool:
        """True when the Holm-adjusted p is below ``ALPHA`` (the direction is the sign of ``mean_diff``); False
        when it is undefined (nan), e.g. with one seed."""
        return bool(self.p_holm < ALPHA)


# --------------------------------------------------------------------------------------------------------------
# interval, tests and multiplicity


def t_interval(seed_diffs: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float, float]:
    """``(mean, low, high, p)``: the paired t-interval over seed-level differences and the two-sided one-sample
    t-test of mean 0 (scipy's ``t`` distribution with n − 1 degrees of freedom). sd 0: a zero-width interval and
    p 1 (every difference 0) or 0; fewer than two seeds: nan for all but the mean."""
    d = np.asarray(seed_diffs, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan, math.nan
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    if se == 0.0:
        return mean, mean, mean, 1.0 if mean == 0.0 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2.0, d.size - 1)) * se
    p = float(2.0 * stats.t.sf(abs(mean) / se, d.size - 1))
    return mean, mean - half, mean + half, p


def signed_rank_p(seed_diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p over seed-level differences: 1.0 when all are exactly 0 (no evidence of
    any difference; scipy would refuse), nan for fewer than two seeds (no test possible)."""
    d = np.asarray(seed_diffs, dtype=float)
    if d.size < 2:
        return math.nan
    if not d.any():
        return 1.0
    return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def paired_t_power(n_seeds: int, sd: float, delta: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test over ``n_seeds`` seed differences of standard deviation ``sd`` to
    detect a true difference ``delta`` (noncentral t)."""
    if n_seeds < 2 or not sd > 0:
        return math.nan
    df, nc = n_seeds - 1, delta / (sd / math.sqrt(n_seeds))
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_for_power(sd: float, delta: float, power: float = 0.8, alpha: float = ALPHA,
                    max_seeds: int = 1000) -> int | None:
    """The fewest paired seeds whose t-test reaches ``power`` at a true difference ``delta`` (``None`` beyond
    ``max_seeds``): how many seeds a contrast needs, from the seed-level SD observed so far."""
    for n in range(2, max_seeds + 1):
        if paired_t_power(n, sd, delta, alpha) >= power:
            return n
    return None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (family-wise error rate, any dependence): the i-th smallest of m
    finite p values becomes ``max_{j<=i} min(1, (m - j + 1) p_(j))``. nan stays nan and does not count in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def holm_adjust(diffs: Sequence[PairedDifference], primary: Iterable[tuple[str, str, str]] = (),
                primary_in: Iterable[int] | None = None) -> list[PairedDifference]:
    """The rows with ``primary`` and ``p_holm`` set: rows whose (method, reference, region) is in ``primary``
    (or whose positions are in ``primary_in``) are the pre-named endpoints, adjusted as one family; every other
    row is exploratory, adjusted over all other rows given. Pass every row of one output file at once."""
    from dataclasses import replace

    keys = set(primary)
    flags = [(d.method, d.reference, d.region) in keys for d in diffs]
    if primary_in is not None:
        positions = set(primary_in)
        flags = [f or i in positions for i, f in enumerate(flags)]
    adjusted = [math.nan] * len(diffs)
    for family in (True, False):
        idx = [i for i, f in enumerate(flags) if f == family]
        for i, p in zip(idx, holm([diffs[i].p_value for i in idx])):
            adjusted[i] = p
    return [replace(d, primary=f, p_holm=p) for d, f, p in zip(diffs, flags, adjusted)]


# --------------------------------------------------------------------------------------------------------------
# pairing


def _index_records(records: Iterable[CaseRecord]) -> dict[str, dict[int, dict[str, CaseRecord]]]:
    """method -> seed -> case -> record, methods in order of first appearance; duplicates are an error (they would
    silently weigh a case twice)."""
    index: dict[str, dict[int, dict[str, CaseRecord]]] = {}
    for r in records:
        cases = index.setdefault(r.method, {}).setdefault(r.seed, {})
        if r.case in cases:
            raise ValueError(f"duplicate record for method {r.method!r}, seed {r.seed}, case {r.case!r}")
        cases[r.case] = r
    return index


def _dice_row(record: CaseRecord, regions: Sequence[str]) -> list[float]:
    """The record's Dice per region, then their mean; a missing or non-finite Dice is an error, not a silent drop."""
    try:
        values = [float(record.dice[name]) for name in regions]
    except KeyError as e:
        raise ValueError(f"record {record.method!r} seed {record.seed} case {record.case!r} has no Dice for "
                         f"region {e.args[0]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"record {record.method!r} seed {record.seed} case {record.case!r} has a non-finite Dice")
    return [*values, float(np.mean(values))]


def paired_differences(records: Iterable[CaseRecord], reference: str = "scratch",
                       regions: Sequence[str] = ()) -> list[PairedDifference]:
    """Dice difference of every method but ``reference`` to ``reference``, per region and for ``"mean"``.

    Rows are ordered by method (first appearance in ``records``), then ``regions`` in the given order, then
    ``"mean"``. A method with no (seed, case) pair in common with the reference still gets rows, with nan
    statistics and ``n_seeds = n_cases = 0``, so a failed method is visible rather than missing. See the module
    docstring for the pairing, the interval and the tests. ``p_holm`` is adjusted over the rows returned (all
    exploratory); a caller writing several comparisons into one file adjusts them together with
    :func:`holm_adjust`.
    """
    regions = list(regions)
    if not regions:
        raise ValueError("need at least one region")
    if MEAN_REGION in regions:
        raise ValueError(f"{MEAN_REGION!r} is reserved for the per-case mean of the regions")
    if len(set(regions)) != len(regions):
        raise ValueError(f"duplicate region names in {regions}")
    index = _index_records(records)
    if reference not in index:
        raise ValueError(f"reference method {reference!r} has no records (methods: {sorted(index)})")
    names = [*regions, MEAN_REGION]
    ref_runs = index[reference]
    out: list[PairedDifference] = []
    for method, runs in index.items():
        if method == reference:
            continue
        # per seed: (cases, rows of [regions..., mean]) differences, seeds and cases in sorted order
        seeds: list[int] = []
        seed_diffs: list[np.ndarray] = []  # each (n_cases_s, R)
        used_cases: set[str] = set()
        for seed in sorted(set(runs) & set(ref_runs)):
            common = sorted(set(runs[seed]) & set(ref_runs[seed]))
            if not common:
                continue
            a = np.array([_dice_row(runs[seed][c], regions) for c in common])
            b = np.array([_dice_row(ref_runs[seed][c], regions) for c in common])
            seeds.append(seed)
            seed_diffs.append(a - b)
            used_cases.update(common)
        if not seeds:
            out.extend(PairedDifference(method, reference, name, math.nan, math.nan, math.nan, math.nan, 0, 0)
                       for name in names)
            continue
        seed_means = np.stack([d.mean(axis=0) for d in seed_diffs], axis=1)  # (R, S)
        for r, name in enumerate(names):
            mean, low, high, p = t_interval(seed_means[r])
            out.append(PairedDifference(
                method=method, reference=reference, region=name, mean_diff=mean, ci_low=low, ci_high=high,
                p_value=p, n_seeds=len(seeds), n_cases=len(used_cases), p_wilcoxon=signed_rank_p(seed_means[r])))
    return holm_adjust(out)


def seed_differences(records: Iterable[CaseRecord], method: str, reference: str,
                     regions: Sequence[str]) -> dict[int, float]:
    """seed -> the seed's mean over common test cases of ``method − reference`` on the mean of ``regions``: the
    replicates the interval is computed from (e.g. to show which seed carries a result)."""
    index = _index_records(records)
    runs, ref_runs = index.get(method, {}), index.get(reference, {})
    out = {}
    for seed in sorted(set(runs) & set(ref_runs)):
        common = sorted(set(runs[seed]) & set(ref_runs[seed]))
        if common:
            out[seed] = float(np.mean([_dice_row(runs[seed][c], regions)[-1] - _dice_row(ref_runs[seed][c],
                                                                                         regions)[-1]
                                       for c in common]))
    return out


def collapsed_runs(records: Iterable[CaseRecord], regions: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per method and region, the number of runs (method, seed) that predict the region empty (0 voxels) on every
    test case whose reference contains it.

    A collapsed run (e.g. never predicting enhancing tumour) can still have a decent mean Dice, because cases
    without the region score 1 for an empty prediction; this count makes such failures visible next to the
    differences. A run with no test case containing the region tells nothing and is not counted. Every method
    and region appears, with 0 where no run collapsed.
    """
    index = _index_records(records)
    out: dict[str, dict[str, int]] = {}
    for method, runs in index.items():
        counts = dict.fromkeys(regions, 0)
        for cases in runs.values():
            for name in regions:
                present = [r for r in cases.values() if r.ref_voxels.get(name, 0) > 0]
                if present and all(r.pred_voxels.get(name, 0) == 0 for r in present):
                    counts[name] += 1
        out[method] = counts
    return out


# --------------------------------------------------------------------------------------------------------------
# output


def _fraction(v: float) -> str:
    """Dice difference as a fraction, 4 decimals; no "-0.0000"."""
    if math.isnan(v):
        return "nan"
    text = f"{v:.4f}"
    return "0.0000" if text == "-0.0000" else text


def _p(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4g}"


def paired_csv(diffs: Sequence[PairedDifference]) -> str:
    """CSV text with :data:`PAIRED_COLUMNS`: differences as Dice fractions (4 decimals), p with 4 significant
    digits, undefined values as ``nan``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PAIRED_COLUMNS)
    for d in diffs:
        writer.writerow([d.method, d.reference, d.region, _fraction(d.mean_diff), _fraction(d.ci_low),
                         _fraction(d.ci_high), _p(d.p_value), _p(d.p_wilcoxon), _p(d.p_holm),
                         "true" if d.primary else "false", d.n_seeds, d.n_cases])
    return buf.getvalue()


def dice_points(v: float) -> str:
    """Dice fraction as signed Dice points (x100), 2 decimals; no "-0.00"."""
    if math.isnan(v):
        return "nan"
    text = f"{100.0 * v:+.2f}"
    return "+0.00" if text == "-0.00" else text


def difference_table(diffs: Sequence[PairedDifference], label: str = "method") -> list[str]:
    """Markdown table rows: each difference in Dice points with its paired t CI, p (t-test), Wilcoxon p, Holm p,
    seeds, cases and whether it is established; pre-named endpoints are marked "primary". The first column is
    each difference's ``label`` field (``method``, or ``reference`` for a table of one method against several
    references)."""
    lines = [f"| {label.capitalize()} | Region | Δ Dice [95% CI] | p (t) | p (Wilcoxon) | p (Holm) | Seeds | Cases "
             "| Difference |", "|---|---|---|---|---|---|---|---|---|"]
    for d in diffs:
        ci = f"{dice_points(d.mean_diff)} [{dice_points(d.ci_low)}, {dice_points(d.ci_high)}]"
        verdict = ("established" if d.established else "not established") + (" (primary)" if d.primary else "")
        lines.append(f"| {getattr(d, label)} | {d.region} | {ci} | {_p(d.p_value)} | {_p(d.p_wilcoxon)} "
                     f"| {_p(d.p_holm)} | {d.n_seeds} | {d.n_cases} | {verdict} |")
    return lines


def paired_markdown(diffs: Sequence[PairedDifference], collapsed: dict[str, dict[str, int]]) -> str:
    """Markdown: the differences in Dice points with their CI, p, seeds, cases and whether the difference is
    established; then the collapsed-run counts; then how to read them."""
    reference = diffs[0].reference if diffs else "the reference"
    lines = [f"### Dice difference to {reference} (Dice points, method − {reference})", "", *difference_table(diffs)]
    if not diffs:
        lines.append("| (no method to compare) | | | | | | | | |")
    regions = list(dict.fromkeys(name for counts in collapsed.values() for name in counts))
    lines += ["", "### Collapsed runs", "",
              "Runs (method, seed) that predict the region empty on every test case where the reference has it.", ""]
    if collapsed and regions:
        lines.append("| Method | " + " | ".join(regions) + " |")
        lines.append("|---" * (len(regions) + 1) + "|")
        for method, counts in collapsed.items():
            lines.append(f"| {method} | " + " | ".join(str(counts.get(r, 0)) for r in regions) + " |")
    else:
        lines.append("(none evaluated)")
    lines += ["",
              "The 95% CI is the paired t-interval over the seed-level differences (each seed's mean over the "
              "held-out test cases; seeds are the replicates) and p (t) the matching two-sided t-test. p (Holm) "
              "is Holm-adjusted within its family: the pre-named endpoints (primary) form one, every other row "
              "is exploratory. A difference is established only when p (Holm) < 0.05 (the sign of Δ gives the "
              "direction). p (Wilcoxon), over the same seed differences, is shown for reference; its smallest "
              "possible value with n seeds is 2/2^n (0.03125 for 6 seeds).",
              ""]
    return "\n".join(lines)


def plot_paired(diffs: Sequence[PairedDifference], path: str | Path, title: str = "") -> None:
    """Forest plot: one row per method, one marker colour per region (``"mean"`` in black), horizontal 95% CI
    bars, a vertical line at 0, x in Dice points. Written atomically (format from the suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(d.method for d in diffs))
    regions = list(dict.fromkeys(d.region for d in diffs))
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
    others = [r for r in regions if r != MEAN_REGION]
    colors = {r: palette[i % len(palette)] for i, r in enumerate(others)}
    colors[MEAN_REGION] = "black"
    height = 0.8 / max(len(regions), 1)
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.35 * max(len(methods), 1) * max(len(regions), 1) ** 0.5),
                           constrained_layout=True)
    try:
        ax.axvline(0.0, color="grey", linewidth=1, linestyle="--", zorder=0)
        for k, region in enumerate(regions):
            ys, xs, lo, hi = [], [], [], []
            for i, method in enumerate(methods):
                for d in diffs:
                    if d.method == method and d.region == region and math.isfinite(d.mean_diff):
                        ys.append(i - (len(regions) - 1) / 2 * height + k * height)  # regions top-down, as in legend
                        xs.append(100.0 * d.mean_diff)
                        lo.append(100.0 * (d.mean_diff - d.ci_low) if math.isfinite(d.ci_low) else 0.0)
                        hi.append(100.0 * (d.ci_high - d.mean_diff) if math.isfinite(d.ci_high) else 0.0)
            if xs:
                ax.errorbar(xs, ys, xerr=[lo, hi], fmt="s" if region == MEAN_REGION else "o", color=colors[region],
                            markersize=5, capsize=3, linewidth=1.5, label=region)
        ax.set_yticks(range(len(methods)), methods)
        ax.set_ylim(len(methods) - 0.5, -0.5)  # first method on top
        reference = diffs[0].reference if diffs else "reference"
        ax.set_xlabel(f"Dice difference to {reference} (points, 95% CI)")
        if title:
            ax.set_title(title, fontsize=10)
        if not diffs:
            ax.text(0.5, 0.5, "no comparison", ha="center", va="center", transform=ax.transAxes)
        elif ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="region", title_fontsize=8)
        save_figure_atomic(fig, path, dpi=130)
    finally:
        plt.close(fig)
