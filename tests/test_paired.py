"""Tests for ``nnunet_slem.evaluation.paired``: paired differences, the paired t-interval, Holm, outputs.

Expected values are exact where the data make them so (identical arms, constant shifts), the interval is pinned
against ``scipy.stats.t`` on a constructed case, and its false-positive rate is simulated on null data shaped
like the benchmark's (6 seeds x 20 cases, seed effects and case effects).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nnunet_slem.evaluation.paired import (
    CaseRecord,
    PairedDifference,
    collapsed_runs,
    holm,
    holm_adjust,
    paired_csv,
    paired_differences,
    paired_markdown,
    plot_paired,
    seed_differences,
    t_interval,
)

REGIONS = ["WT", "TC", "ET"]


def rec(method: str, seed: int, case: str, dice: dict[str, float], ref: dict[str, int] | None = None,
        pred: dict[str, int] | None = None) -> CaseRecord:
    return CaseRecord(method, seed, case, dice, ref or dict.fromkeys(dice, 10), pred or dict.fromkeys(dice, 10))


def make_records(base: np.ndarray, shifts: dict[str, np.ndarray], regions=REGIONS) -> list[CaseRecord]:
    """``base`` (seeds, cases, regions) for "scratch"; every other method gets base + its shift (same shape)."""
    out = []
    for method, shift in {"scratch": np.zeros_like(base), **shifts}.items():
        values = base + shift
        for s in range(base.shape[0]):
            for c in range(base.shape[1]):
                out.append(rec(method, s, f"case{c:02d}", {r: float(values[s, c, k]) for k, r in enumerate(regions)}))
    return out


def by_key(diffs: list[PairedDifference]) -> dict[tuple[str, str], PairedDifference]:
    return {(d.method, d.region): d for d in diffs}


@pytest.fixture
def base() -> np.ndarray:
    return np.random.default_rng(1).uniform(0.3, 0.9, size=(6, 10, 3))


def test_identical_arms_give_zero(base):
    diffs = paired_differences(make_records(base, {"slem": np.zeros_like(base)}), regions=REGIONS)
    assert [d.region for d in diffs] == [*REGIONS, "mean"]
    for d in diffs:
        assert (d.method, d.reference) == ("slem", "scratch")
        assert d.mean_diff == 0.0 and d.ci_low == 0.0 and d.ci_high == 0.0
        assert d.p_value == 1.0 and d.p_wilcoxon == 1.0 and d.p_holm == 1.0
        assert (d.n_seeds, d.n_cases) == (6, 10)
        assert not d.established and not d.primary


def test_constant_shift(base):
    shift = np.full_like(base, 0.05)
    d = by_key(paired_differences(make_records(base, {"slem": shift}), regions=REGIONS))
    for region in [*REGIONS, "mean"]:
        assert d["slem", region].mean_diff == pytest.approx(0.05, abs=1e-12)
        assert d["slem", region].ci_low == pytest.approx(0.05, abs=1e-12)
        assert d["slem", region].ci_high == pytest.approx(0.05, abs=1e-12)
        assert d["slem", region].established and d["slem", region].p_value < 1e-12
        # 6 seeds, all positive: the smallest exact two-sided Wilcoxon p, 2 / 2^6
        assert d["slem", region].p_wilcoxon == pytest.approx(0.03125)


def test_six_positive_seeds_p_and_negative_direction(base):
    rng = np.random.default_rng(2)
    seed_effect = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])[:, None, None]
    noise = rng.normal(0, 0.01, size=base.shape)
    noise -= noise.mean(axis=1, keepdims=True)  # seed means are exactly the seed effects
    d = by_key(paired_differences(make_records(base, {"up": seed_effect + noise, "down": -seed_effect + noise}),
                                  regions=REGIONS))
    assert d["up", "WT"].p_wilcoxon == pytest.approx(0.03125)
    assert d["down", "WT"].p_wilcoxon == pytest.approx(0.03125)
    # the t-interval over the seed effects 1..6 points
    _, low, high, _ = t_interval([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert (d["up", "WT"].ci_low, d["up", "WT"].ci_high) == pytest.approx((low, high))
    assert d["up", "mean"].mean_diff == pytest.approx(0.035)
    assert d["down", "mean"].mean_diff == pytest.approx(-0.035)
    assert d["down", "mean"].ci_high < 0 and d["down", "mean"].established


def test_p_edge_cases(base):
    # a single seed: no test possible
    one = paired_differences(make_records(base[:1], {"slem": np.full_like(base[:1], 0.1)}), regions=REGIONS)
    assert all(math.isnan(d.p_value) and math.isnan(d.ci_low) and d.n_seeds == 1 for d in one)
    assert not any(d.established for d in one)
    # one seed with zero difference is dropped by the Wilcoxon test (zero_method="wilcox"): 5 seeds -> 2/2^5
    shift = np.full_like(base, 0.1)
    shift[0] = 0.0
    d = by_key(paired_differences(make_records(base, {"slem": shift}), regions=REGIONS))
    assert d["slem", "ET"].p_wilcoxon == pytest.approx(0.0625)


def test_interval_widens_with_noise_and_is_per_method(base):
    rng = np.random.default_rng(3)
    small = 0.02 + rng.normal(0, 0.01, size=base.shape)
    large = 0.02 + rng.normal(0, 0.10, size=base.shape)
    d = by_key(paired_differences(make_records(base, {"small": small, "large": large}), regions=REGIONS))
    for region in [*REGIONS, "mean"]:
        width_small = d["small", region].ci_high - d["small", region].ci_low
        width_large = d["large", region].ci_high - d["large", region].ci_low
        assert 0 < width_small < width_large
        assert d["small", region].ci_low <= d["small", region].mean_diff <= d["small", region].ci_high
    # a method's interval does not depend on which other methods are compared (Holm's family does)
    alone = by_key(paired_differences(make_records(base, {"small": small}), regions=REGIONS))
    assert (alone["small", "TC"].ci_low, alone["small", "TC"].p_value) == (d["small", "TC"].ci_low,
                                                                          d["small", "TC"].p_value)


def test_t_interval_pinned_against_scipy():
    """A constructed case: seed differences 1..6 points. The interval is scipy's t interval with 5 degrees of
    freedom, and the numbers are the textbook ones (mean 3.5, sd 1.8708, t 2.5706)."""
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    mean, low, high, p = t_interval(diffs)
    ref_low, ref_high = stats.t.interval(0.95, 5, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (low, high) == pytest.approx((ref_low, ref_high), rel=1e-12)
    assert mean == pytest.approx(0.035) and low == pytest.approx(0.015367, abs=1e-6)
    assert high == pytest.approx(0.054633, abs=1e-6)
    assert p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue, rel=1e-12)
    # the interval excludes 0 exactly when the t-test rejects at 5 %
    for shifted in ([-0.02, 0.01, 0.03, 0.0, 0.02, 0.05], [0.001, 0.02, 0.03, 0.011, 0.002, 0.04]):
        _, lo, hi, pv = t_interval(shifted)
        assert (lo > 0 or hi < 0) == (pv < 0.05)
    assert t_interval([0.0, 0.0, 0.0])[1:] == (0.0, 0.0, 1.0)
    assert t_interval([0.02, 0.02])[1:] == (0.02, 0.02, 0.0)


def _null_data(rng: np.random.Generator, n_seeds: int = 6, n_cases: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Two arms with no true difference, shaped like the benchmark: a case effect (difficulty, shared by every
    seed and both arms), a seed effect (labelled subset, shared by both arms at one seed), an arm-by-seed effect
    (each arm's own initialisation and batches: the seed-to-seed scatter of a difference) and per-(arm, seed,
    case) noise; Dice-like scale. Heavy-tailed arm-by-seed effects (t with 4 degrees of freedom), as one seed
    that "carries" a result."""
    case = rng.normal(0.0, 0.12, size=(1, n_cases))
    seed = rng.normal(0.0, 0.05, size=(n_seeds, 1))
    arms = [0.7 + case + seed + 0.03 * rng.standard_t(4, size=(n_seeds, 1))
            + rng.normal(0.0, 0.06, size=(n_seeds, n_cases)) for _ in range(2)]
    return arms[0], arms[1]


def test_null_false_positive_rate_is_nominal():
    """The interval's false-positive rate on 4000 null data sets shaped like ours lies in [3 %, 7 %] (its
    standard error at 5 % is 0.34 points, so the band is about 6 standard errors wide each way)."""
    rng = np.random.default_rng(20261206)
    n_sims, hits = 4000, 0
    for _ in range(n_sims):
        a, b = _null_data(rng)
        _, low, high, _ = t_interval((a - b).mean(axis=1))
        hits += low > 0 or high < 0
    rate = hits / n_sims
    assert 0.03 <= rate <= 0.07, rate


def test_null_rate_through_paired_differences():
    """The same property through the records API (fewer simulations: it builds CaseRecords)."""
    rng = np.random.default_rng(7)
    n_sims, hits = 400, 0
    for _ in range(n_sims):
        a, b = _null_data(rng)
        records = [rec(m, s, f"c{c}", {"A": float(v[s, c])}) for m, v in (("scratch", b), ("slem", a))
                   for s in range(v.shape[0]) for c in range(v.shape[1])]
        hits += by_key(paired_differences(records, regions=["A"]))["slem", "mean"].established
    assert hits / n_sims <= 0.09  # 5 % expected; a binomial 400-draw upper tail at 0.09 is below 1e-3


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.02, math.nan, 0.02]) == pytest.approx([0.04, math.nan, 0.04], nan_ok=True)
    assert holm([]) == []
    assert holm([0.9, 0.4]) == pytest.approx([0.9, 0.8])  # monotone
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


def test_holm_adjust_families_and_established():
    rows = [PairedDifference("slem", "scratch", "mean", 0.03, 0.01, 0.05, 0.02, 12, 20),
            PairedDifference("slem", "scratch", "mean", 0.05, 0.02, 0.08, 0.01, 12, 20),  # second endpoint
            PairedDifference("slem", "scratch", "WT", 0.03, 0.01, 0.05, 0.02, 12, 20),
            PairedDifference("cfb", "scratch", "WT", 0.03, 0.01, 0.05, 0.01, 6, 20),
            PairedDifference("cfb", "scratch", "TC", 0.03, 0.01, 0.05, 0.3, 6, 20)]
    out = holm_adjust(rows, primary_in=[0, 1])
    assert [d.primary for d in out] == [True, True, False, False, False]
    # endpoints: 0.01 * 2 = 0.02, then max(0.02, 0.02 * 1) = 0.02; exploratory: 0.01 * 3, 0.02 * 2, 0.3
    assert [d.p_holm for d in out] == pytest.approx([0.02, 0.02, 0.04, 0.03, 0.3])
    assert [d.established for d in out] == [True, True, True, True, False]
    keyed = holm_adjust(rows[2:], primary=[("cfb", "scratch", "WT")])
    assert [d.primary for d in keyed] == [False, True, False]
    assert sum(d.primary for d in keyed) == 1


def test_seed_differences():
    records = [rec("scratch", 0, "a", {"X": 0.5}), rec("new", 0, "a", {"X": 0.7}),
               rec("scratch", 1, "a", {"X": 0.5}), rec("new", 1, "a", {"X": 0.4}), rec("new", 2, "a", {"X": 1.0})]
    assert seed_differences(records, "new", "scratch", ["X"]) == pytest.approx({0: 0.2, 1: -0.1})


def test_unpaired_cases_and_seeds_dropped():
    records = []
    for seed in range(3):
        for c in range(4):
            records.append(rec("scratch", seed, f"c{c}", {"A": 0.5}))
    # slem: seed 0 complete, seed 1 lacks c3, seed 2 missing, seed 9 has no counterpart
    for c in range(4):
        records.append(rec("slem", 0, f"c{c}", {"A": 0.6}))
    for c in range(3):
        records.append(rec("slem", 1, f"c{c}", {"A": 0.7}))
    records.append(rec("slem", 9, "c0", {"A": 0.9}))
    # cfb: only case c4, which the reference never has
    records.append(rec("cfb", 0, "c4", {"A": 0.9}))
    # other: seed 1 only, cases c1 and c2
    records += [rec("other", 1, "c1", {"A": 0.5}), rec("other", 1, "c2", {"A": 0.8})]
    d = by_key(paired_differences(records, regions=["A"]))
    assert (d["slem", "A"].n_seeds, d["slem", "A"].n_cases) == (2, 4)
    assert d["slem", "A"].mean_diff == pytest.approx((0.1 + 0.2) / 2)  # mean over seeds of case means
    assert (d["other", "A"].n_seeds, d["other", "A"].n_cases) == (1, 2)
    assert d["other", "A"].mean_diff == pytest.approx(0.15)
    assert math.isnan(d["other", "A"].p_value)
    assert d["slem", "A"].ci_low == pytest.approx(t_interval([0.1, 0.2])[1])
    cfb = d["cfb", "A"]
    assert (cfb.n_seeds, cfb.n_cases) == (0, 0)
    assert all(math.isnan(v) for v in (cfb.mean_diff, cfb.ci_low, cfb.ci_high, cfb.p_value))
    assert not cfb.established
    order = [(x.method, x.region) for x in paired_differences(records, regions=["A"])]
    assert order == [(m, r) for m in ("slem", "cfb", "other") for r in ("A", "mean")]


def test_mean_region_is_per_case_mean_of_regions():
    records = [
        rec("scratch", 0, "a", {"X": 0.2, "Y": 0.4}), rec("scratch", 0, "b", {"X": 1.0, "Y": 0.0}),
        rec("new", 0, "a", {"X": 0.5, "Y": 0.5}), rec("new", 0, "b", {"X": 1.0, "Y": 0.6}),
        rec("scratch", 1, "a", {"X": 0.1, "Y": 0.1}), rec("new", 1, "a", {"X": 0.1, "Y": 0.3}),
    ]
    d = by_key(paired_differences(records, regions=["X", "Y"]))
    # seed 0: case a (0.5 - 0.3) = 0.2, case b (0.8 - 0.5) = 0.3 -> 0.25; seed 1: 0.2 - 0.1 = 0.1
    assert d["new", "mean"].mean_diff == pytest.approx((0.25 + 0.1) / 2)
    assert d["new", "X"].mean_diff == pytest.approx((0.15 + 0.0) / 2)
    assert d["new", "Y"].mean_diff == pytest.approx((0.35 + 0.2) / 2)
    assert (d["new", "mean"].n_seeds, d["new", "mean"].n_cases) == (2, 2)


def test_invalid_inputs():
    good = [rec("scratch", 0, "a", {"X": 0.5}), rec("new", 0, "a", {"X": 0.5})]
    with pytest.raises(ValueError, match="reference"):
        paired_differences(good, reference="nope", regions=["X"])
    with pytest.raises(ValueError, match="duplicate"):
        paired_differences([*good, good[0]], regions=["X"])
    with pytest.raises(ValueError, match="region 'Y'"):
        paired_differences(good, regions=["X", "Y"])
    with pytest.raises(ValueError, match="reserved"):
        paired_differences(good, regions=["X", "mean"])


def test_collapsed_runs():
    def r(method, seed, case, ref, pred):
        return CaseRecord(method, seed, case, {"ET": 0.0, "WT": 0.9}, {"ET": ref, "WT": 100},
                          {"ET": pred, "WT": 100})

    records = [
        # scratch seed 0: ET present in a and b, predicted empty in both -> collapsed
        r("scratch", 0, "a", 50, 0), r("scratch", 0, "b", 20, 0), r("scratch", 0, "c", 0, 5),
        # scratch seed 1: predicts ET in b -> not collapsed
        r("scratch", 1, "a", 50, 0), r("scratch", 1, "b", 20, 3),
        # scratch seed 2: no case has ET -> not counted even though nothing is predicted
        r("scratch", 2, "c", 0, 0), r("scratch", 2, "d", 0, 0),
        # slem seed 0 and 1 collapsed
        r("slem", 0, "a", 50, 0), r("slem", 1, "a", 50, 0), r("slem", 1, "c", 0, 7),
    ]
    assert collapsed_runs(records, ["WT", "ET"]) == {"scratch": {"WT": 0, "ET": 1}, "slem": {"WT": 0, "ET": 2}}


def test_csv_header_and_row():
    d = PairedDifference("slem", "scratch", "ET", 0.019412, -0.0221, 0.09504, 0.03125, 6, 20, 0.0625, 0.0625, True)
    nan = PairedDifference("cfb", "scratch", "mean", math.nan, math.nan, math.nan, math.nan, 0, 0)
    tiny = PairedDifference("x", "scratch", "WT", -1e-9, -0.00001, 0.123456, 0.123456789, 2, 3, 0.5, 0.246913578)
    text = paired_csv([d, nan, tiny])
    lines = text.splitlines()
    assert lines[0] == ("method,reference,region,mean_diff,ci_low,ci_high,p_value,p_wilcoxon,p_holm,primary,"
                        "n_seeds,n_cases")
    assert lines[1] == "slem,scratch,ET,0.0194,-0.0221,0.0950,0.03125,0.0625,0.0625,true,6,20"
    assert lines[2] == "cfb,scratch,mean,nan,nan,nan,nan,nan,nan,false,0,0"
    assert lines[3] == "x,scratch,WT,0.0000,0.0000,0.1235,0.1235,0.5,0.2469,false,2,3"
    assert list(csv.DictReader(io.StringIO(text)))[0]["p_value"] == "0.03125"


def test_markdown_established():
    diffs = holm_adjust([
        PairedDifference("slem", "scratch", "ET", 0.0194, -0.0221, 0.0950, 0.2, 6, 20),
        PairedDifference("slem", "scratch", "mean", 0.03, 0.01, 0.05, 0.01, 6, 20, 0.03125),
        PairedDifference("cfb", "scratch", "mean", -0.03, -0.05, -0.01, 0.01, 6, 20),
        PairedDifference("solo", "scratch", "mean", 0.03, 0.01, 0.05, math.nan, 1, 20),
    ], primary=[("slem", "scratch", "mean")])
    md = paired_markdown(diffs, {"scratch": {"ET": 1}, "slem": {"ET": 0}})
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in md.splitlines()
            if line.startswith("| slem") or line.startswith("| cfb") or line.startswith("| solo")}
    assert "+1.94 [-2.21, +9.50]" in rows["slem", "ET"] and rows["slem", "ET"].endswith("| not established |")
    assert "+3.00 [+1.00, +5.00]" in rows["slem", "mean"]
    assert rows["slem", "mean"].endswith("| established (primary) |")
    # exploratory family: 0.2 and 0.01 -> Holm 0.2 and 0.02
    assert "-3.00 [-5.00, -1.00]" in rows["cfb", "mean"] and rows["cfb", "mean"].endswith("| 0.02 | 6 | 20 "
                                                                                          "| established |")
    assert "| 0.01 | 0.03125 | 0.01 | 6 | 20 |" in rows["slem", "mean"]
    assert "| nan | nan | nan | 1 | 20 | not established |" in rows["solo", "mean"]
    assert all(line.count("|") == 10 for line in md.splitlines() if line.startswith("| slem") and "[" in line)
    assert "| Method | ET |" in md and "| scratch | 1 |" in md and "| slem | 0 |" in md
    assert "t-interval" in md and "Holm" in md and "Wilcoxon" in md


def test_plot_written(tmp_path: Path, base):
    rng = np.random.default_rng(4)
    records = make_records(base, {"slem": 0.02 + rng.normal(0, 0.02, size=base.shape),
                                  "cfb": -0.01 + rng.normal(0, 0.02, size=base.shape)})
    diffs = paired_differences(records, regions=REGIONS)
    path = tmp_path / "sub" / "paired.png"
    plot_paired(diffs, path, "BraTS, 6 seeds")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    plot_paired(diffs, tmp_path / "paired.pdf", "pdf too")
    assert (tmp_path / "paired.pdf").read_bytes()[:4] == b"%PDF"


def test_power_matches_the_noncentral_t():
    """Seed-level SD 4.16 points (the first round's slem − scratch): +4 needs 11 seeds for 80 % power, +2 needs
    36, and 6 seeds give about 48 % at +4; more seeds, more power."""
    from nnunet_slem.evaluation.paired import paired_t_power, seeds_for_power

    assert seeds_for_power(4.16, 4.0) == 11 and seeds_for_power(4.16, 2.0) == 36
    assert paired_t_power(6, 4.16, 4.0) == pytest.approx(0.477, abs=0.002)
    assert paired_t_power(12, 4.16, 4.0) > paired_t_power(6, 4.16, 4.0)
    assert paired_t_power(10, 4.16, 4.0) < 0.8 <= paired_t_power(11, 4.16, 4.0)
    # at delta 0 the "power" is the false-positive rate
    assert paired_t_power(6, 1.0, 0.0) == pytest.approx(0.05)
