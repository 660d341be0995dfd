"""Paired statistics for method comparisons: per-method Dice differences to a reference, with uncertainty.

Why paired, and why this way
----------------------------
Fine-tuning results vary a lot between seeds (which labelled subset, which initialisation of the head, which
batches) and between test cases (a small enhancing tumour is hard for every method). Comparing two methods'
*means* mixes both sources of variation into the comparison and hides real effects, or invents them when the
seeds differ. ``nnunet-slem compare`` therefore runs every method at the same seeds *s* with the same labelled
subset and fine-tuning RNG, and evaluates all of them on the same held-out test cases, so the difference
method − reference can be taken per (seed, case) pair, where everything but the method is held fixed.

A benefit is claimed only from held-out test cases, paired seeds, and a 95% confidence interval that
excludes 0 (the ``established`` property / column). Conventions (README-ready):

* **Pairs.** A (seed, case) pair is used when both the method and the reference have a record for it; pairs
  missing in either arm are dropped, and a seed left without common cases is dropped. ``n_seeds`` and
  ``n_cases`` (distinct test cases) count what was actually used, so a crashed run shows up there.
* **Regions.** One row per region and one for ``"mean"``, the per-case mean of the listed regions' Dice
  (Dice is 1 where a region is empty in both reference and prediction, see :mod:`.metrics`).
* **Difference** (``mean_diff``) = mean over seeds of the mean over cases of the per-case difference, so every
  seed weighs the same even if it lost cases.
* **95% CI**: hierarchical percentile bootstrap with the same two levels: resample seeds with replacement,
  then within each drawn seed resample its cases with replacement (case differences are already paired, so
  resampling differences is right); statistic = mean over drawn seeds of the mean over drawn cases;
  2.5th and 97.5th percentiles (numpy's linear interpolation) of ``n_boot`` resamples. Resampling seeds
  captures seed-to-seed variation, which a case-only bootstrap would ignore (too narrow an interval). Each
  (method, region) comparison uses a generator seeded with ``rng_seed`` alone, so a method's interval does not
  depend on which other methods are compared, and all regions of a method share the same resamples.
* **p value**: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, default ``zero_method="wilcox"``,
  which drops zero differences; exact distribution for small n, also with ties) over the *seed-level* mean
  differences: seeds are the independent replicates, cases within a seed are not. With n seeds the smallest
  possible exact p is 2 / 2^n: 0.03125 at n = 6, 0.0625 at n = 5, so p < 0.05 needs at least 6 seeds that all
  agree in sign. Edge cases: all seed differences exactly 0 → p = 1.0; a single seed (or none) → nan.
  The CI, not the p value, decides ``established``; the p value is reported for readers who expect one.

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
from scipy.stats import wilcoxon

from nnunet_slem.atomic import save_figure_atomic

#: Name of the pseudo-region holding the per-case mean of the regions' Dice.
MEAN_REGION = "mean"
#: Default number of bootstrap resamples.
DEFAULT_N_BOOT = 10000
#: Two-sided confidence level of the bootstrap interval.
CI_LEVEL = 0.95

PAIRED_COLUMNS = ("method", "reference", "region", "mean_diff", "ci_low", "ci_high", "p_value", "n_seeds", "n_cases")


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
    p_value: float
    n_seeds: int
    n_cases: int

    @property
    def established(self) -> bool:
        """True when the 95% CI excludes 0 (either direction; the sign of ``mean_diff`` says which).
        False when the interval is undefined (nan)."""
        return bool(self.ci_low > 0.0 or self.ci_high < 0.0)


# --------------------------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_draws(counts: Sequence[int], n_boot: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index draws of the hierarchical bootstrap for seeds with ``counts[s]`` cases each.

    Returns ``(seed_idx, case_idx, valid)``: ``seed_idx`` (n_boot, S) are the drawn seeds; ``case_idx``
    (n_boot, S, max(counts)) the drawn case positions within each drawn seed, of which only the first
    ``counts[seed_idx]`` (``valid``) are used, so every drawn seed gets as many case draws as it has cases.
    Kept separate from :func:`bootstrap_statistics` so the draws can be checked against a loop implementation.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 1).any():
        raise ValueError(f"need at least one seed with at least one case, got counts {counts.tolist()}")
    n_seeds, n_max = counts.size, int(counts.max())
    seed_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    n = counts[seed_idx][..., None]  # (B, S, 1): cases of each drawn seed
    # floor(u * n) is uniform on 0..n-1; the minimum only guards against u * n rounding up to n.
    case_idx = np.minimum(np.floor(rng.random((n_boot, n_seeds, n_max)) * n).astype(np.int64), n - 1)
    valid = np.arange(n_max) < n
    return seed_idx, case_idx, valid


def bootstrap_statistics(values: np.ndarray, counts: Sequence[int], seed_idx: np.ndarray, case_idx: np.ndarray,
                         valid: np.ndarray) -> np.ndarray:
    """Mean over drawn seeds of the mean over drawn cases, for every resample and every leading row.

    ``values`` is (R, S, max(counts)): per row (region) and seed the case differences, left-aligned; the padding
    is never used. Returns (R, n_boot). Vectorised: how often each case is drawn within each (resample, drawn
    seed) is counted with one ``bincount``, and the sums of drawn cases are then one matrix product per seed,
    which is several times faster than gathering every drawn value (no Python loop over resamples).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_rows, n_seeds, n_max = values.shape
    n_boot = seed_idx.shape[0]
    values = np.where(np.arange(n_max) < counts[:, None], values, 0.0)  # padding may hold nan: 0 * nan = nan
    cell = np.arange(n_boot * n_seeds).reshape(n_boot, n_seeds, 1) * n_max + case_idx
    times_drawn = np.bincount(cell[valid], minlength=n_boot * n_seeds * n_max).reshape(n_boot * n_seeds, n_max)
    drawn_seed = seed_idx.ravel()
    sums = np.empty((n_boot * n_seeds, n_rows))
    for s in range(n_seeds):
        rows = drawn_seed == s
        sums[rows] = times_drawn[rows] @ values[:, s, :].T
    seed_means = sums / counts[drawn_seed][:, None]  # (B * S, R)
    return seed_means.reshape(n_boot, n_seeds, n_rows).mean(axis=1).T


def percentile_ci(stats: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along the last axis (numpy's default linear interpolation)."""
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail], axis=-1)
    return low, high


def signed_rank_p(seed_diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p over seed-level differences: 1.0 when all are exactly 0 (no evidence of
    any difference; scipy would refuse), nan for fewer than two seeds (no test possible)."""
    d = np.asarray(seed_diffs, dtype=float)
    if d.size < 2:
        return math.nan
    if not d.any():
        return 1.0
    return float(wilcoxon(d, alternative="two-sided").pvalue)


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


def paired_differences(records: Iterable[CaseRecord], reference: str = "scratch", regions: Sequence[str] = (),
                       n_boot: int = DEFAULT_N_BOOT, rng_seed: int = 0) -> list[PairedDifference]:
    """Dice difference of every method but ``reference`` to ``reference``, per region and for ``"mean"``.

    Rows are ordered by method (first appearance in ``records``), then ``regions`` in the given order, then
    ``"mean"``. A method with no (seed, case) pair in common with the reference still gets rows, with nan
    statistics and ``n_seeds = n_cases = 0``, so a failed method is visible rather than missing. See the module
    docstring for the pairing, the bootstrap and the test.
    """
    regions = list(regions)
    if not regions:
        raise ValueError("need at least one region")
    if MEAN_REGION in regions:
        raise ValueError(f"{MEAN_REGION!r} is reserved for the per-case mean of the regions")
    if len(set(regions)) != len(regions):
        raise ValueError(f"duplicate region names in {regions}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
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
        counts = [d.shape[0] for d in seed_diffs]
        padded = np.zeros((len(names), len(seeds), max(counts)))
        for s, d in enumerate(seed_diffs):
            padded[:, s, : d.shape[0]] = d.T
        seed_means = np.stack([d.mean(axis=0) for d in seed_diffs], axis=1)  # (R, S)
        draws = bootstrap_draws(counts, n_boot, np.random.default_rng(rng_seed))
        low, high = percentile_ci(bootstrap_statistics(padded, counts, *draws))
        for r, name in enumerate(names):
            out.append(PairedDifference(
                method=method, reference=reference, region=name, mean_diff=float(seed_means[r].mean()),
                ci_low=float(low[r]), ci_high=float(high[r]), p_value=signed_rank_p(seed_means[r]),
                n_seeds=len(seeds), n_cases=len(used_cases)))
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
                         _fraction(d.ci_high), _p(d.p_value), d.n_seeds, d.n_cases])
    return buf.getvalue()


def _points(v: float) -> str:
    """Dice fraction as signed Dice points (x100), 2 decimals; no "-0.00"."""
    if math.isnan(v):
        return "nan"
    text = f"{100.0 * v:+.2f}"
    return "+0.00" if text == "-0.00" else text


def difference_table(diffs: Sequence[PairedDifference], label: str = "method") -> list[str]:
    """Markdown table rows: each difference in Dice points with its CI, p, seeds, cases and whether it is
    established; the first column is each difference's ``label`` field (``method``, or ``reference`` for a
    table of one method against several references)."""
    lines = [f"| {label.capitalize()} | Region | Δ Dice [95% CI] | p (Wilcoxon) | Seeds | Cases | Difference |",
             "|---|---|---|---|---|---|---|"]
    for d in diffs:
        ci = f"{_points(d.mean_diff)} [{_points(d.ci_low)}, {_points(d.ci_high)}]"
        verdict = "established" if d.established else "not established"
        lines.append(f"| {getattr(d, label)} | {d.region} | {ci} | {_p(d.p_value)} | {d.n_seeds} | {d.n_cases} "
                     f"| {verdict} |")
    return lines


def paired_markdown(diffs: Sequence[PairedDifference], collapsed: dict[str, dict[str, int]]) -> str:
    """Markdown: the differences in Dice points with their CI, p, seeds, cases and whether the difference is
    established; then the collapsed-run counts; then how to read them."""
    reference = diffs[0].reference if diffs else "the reference"
    lines = [f"### Dice difference to {reference} (Dice points, method − {reference})", "", *difference_table(diffs)]
    if not diffs:
        lines.append("| (no method to compare) | | | | | | |")
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
              "The 95% CI is a hierarchical bootstrap over paired seeds and, within each seed, held-out test cases, "
              "and a difference is called established only when it excludes 0 (the sign of Δ gives the direction); "
              "p is a two-sided Wilcoxon signed-rank test over the seed-level mean differences, whose smallest "
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
