"""Tests for ``nnunet_slem.evaluation.paired``: paired differences, hierarchical bootstrap, Wilcoxon p, outputs.

Expected values are exact where the data make them so (identical arms, constant shifts, all-positive seeds), and
the vectorised bootstrap is checked against a loop implementation on the same draws and, statistically, on
independent draws.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest

from nnunet_slem.evaluation.paired import (
    CaseRecord,
    PairedDifference,
    bootstrap_draws,
    bootstrap_statistics,
    collapsed_runs,
    paired_csv,
    paired_differences,
    paired_markdown,
    percentile_ci,
    plot_paired,
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
    diffs = paired_differences(make_records(base, {"slem": np.zeros_like(base)}), regions=REGIONS, n_boot=500)
    assert [d.region for d in diffs] == [*REGIONS, "mean"]
    for d in diffs:
        assert (d.method, d.reference) == ("slem", "scratch")
        assert d.mean_diff == 0.0 and d.ci_low == 0.0 and d.ci_high == 0.0
        assert d.p_value == 1.0
        assert (d.n_seeds, d.n_cases) == (6, 10)
        assert not d.established


def test_constant_shift(base):
    shift = np.full_like(base, 0.05)
    d = by_key(paired_differences(make_records(base, {"slem": shift}), regions=REGIONS, n_boot=500))
    for region in [*REGIONS, "mean"]:
        assert d["slem", region].mean_diff == pytest.approx(0.05, abs=1e-12)
        assert d["slem", region].ci_low == pytest.approx(0.05, abs=1e-12)
        assert d["slem", region].ci_high == pytest.approx(0.05, abs=1e-12)
        assert d["slem", region].established
        # 6 seeds, all positive: the smallest exact two-sided p, 2 / 2^6
        assert d["slem", region].p_value == pytest.approx(0.03125)


def test_six_positive_seeds_p_and_negative_direction(base):
    rng = np.random.default_rng(2)
    seed_effect = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])[:, None, None]
    noise = rng.normal(0, 0.01, size=base.shape)
    noise -= noise.mean(axis=1, keepdims=True)  # seed means are exactly the seed effects
    d = by_key(paired_differences(make_records(base, {"up": seed_effect + noise, "down": -seed_effect + noise}),
                                  regions=REGIONS, n_boot=2000))
    assert d["up", "WT"].p_value == pytest.approx(0.03125)
    assert d["down", "WT"].p_value == pytest.approx(0.03125)
    assert d["up", "mean"].mean_diff == pytest.approx(0.035)
    assert d["down", "mean"].mean_diff == pytest.approx(-0.035)
    assert d["down", "mean"].ci_high < 0 and d["down", "mean"].established


def test_p_edge_cases(base):
    # a single seed: no test possible
    one = paired_differences(make_records(base[:1], {"slem": np.full_like(base[:1], 0.1)}), regions=REGIONS,
                             n_boot=200)
    assert all(math.isnan(d.p_value) and d.n_seeds == 1 for d in one)
    # one seed with zero difference is dropped by the test (zero_method="wilcox"): 5 seeds -> 2/2^5
    shift = np.full_like(base, 0.1)
    shift[0] = 0.0
    d = by_key(paired_differences(make_records(base, {"slem": shift}), regions=REGIONS, n_boot=200))
    assert d["slem", "ET"].p_value == pytest.approx(0.0625)


def test_bootstrap_reproducible_and_widens_with_noise(base):
    rng = np.random.default_rng(3)
    small = 0.02 + rng.normal(0, 0.01, size=base.shape)
    large = 0.02 + rng.normal(0, 0.10, size=base.shape)
    records = make_records(base, {"small": small, "large": large})
    a = paired_differences(records, regions=REGIONS, n_boot=1000, rng_seed=7)
    b = paired_differences(records, regions=REGIONS, n_boot=1000, rng_seed=7)
    c = paired_differences(records, regions=REGIONS, n_boot=1000, rng_seed=8)
    assert a == b
    assert a != c
    d = by_key(a)
    for region in [*REGIONS, "mean"]:
        width_small = d["small", region].ci_high - d["small", region].ci_low
        width_large = d["large", region].ci_high - d["large", region].ci_low
        assert 0 < width_small < width_large
        assert d["small", region].ci_low <= d["small", region].mean_diff <= d["small", region].ci_high
    # a method's interval does not depend on which other methods are compared
    alone = by_key(paired_differences(make_records(base, {"small": small}), regions=REGIONS, n_boot=1000,
                                      rng_seed=7))
    assert alone["small", "TC"] == d["small", "TC"]


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
    d = by_key(paired_differences(records, regions=["A"], n_boot=300))
    assert (d["slem", "A"].n_seeds, d["slem", "A"].n_cases) == (2, 4)
    assert d["slem", "A"].mean_diff == pytest.approx((0.1 + 0.2) / 2)  # mean over seeds of case means
    assert (d["other", "A"].n_seeds, d["other", "A"].n_cases) == (1, 2)
    assert d["other", "A"].mean_diff == pytest.approx(0.15)
    assert math.isnan(d["other", "A"].p_value)
    cfb = d["cfb", "A"]
    assert (cfb.n_seeds, cfb.n_cases) == (0, 0)
    assert all(math.isnan(v) for v in (cfb.mean_diff, cfb.ci_low, cfb.ci_high, cfb.p_value))
    assert not cfb.established
    order = [(x.method, x.region) for x in paired_differences(records, regions=["A"], n_boot=10)]
    assert order == [(m, r) for m in ("slem", "cfb", "other") for r in ("A", "mean")]


def test_mean_region_is_per_case_mean_of_regions():
    records = [
        rec("scratch", 0, "a", {"X": 0.2, "Y": 0.4}), rec("scratch", 0, "b", {"X": 1.0, "Y": 0.0}),
        rec("new", 0, "a", {"X": 0.5, "Y": 0.5}), rec("new", 0, "b", {"X": 1.0, "Y": 0.6}),
        rec("scratch", 1, "a", {"X": 0.1, "Y": 0.1}), rec("new", 1, "a", {"X": 0.1, "Y": 0.3}),
    ]
    d = by_key(paired_differences(records, regions=["X", "Y"], n_boot=500))
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


def loop_bootstrap(seed_diffs: list[np.ndarray], seed_idx, case_idx) -> np.ndarray:
    """The hierarchical bootstrap written out with loops, on given draws."""
    stats = []
    for b in range(seed_idx.shape[0]):
        seed_means = []
        for j in range(seed_idx.shape[1]):
            d = seed_diffs[seed_idx[b, j]]
            seed_means.append(sum(d[case_idx[b, j, i]] for i in range(len(d))) / len(d))
        stats.append(sum(seed_means) / len(seed_means))
    return np.array(stats)


def test_vectorised_bootstrap_matches_loop_on_same_draws():
    seed_diffs = [np.array([0.1, -0.2, 0.3]), np.array([0.05]), np.array([0.4, 0.0, -0.1, 0.2, 0.25])]
    counts = [len(d) for d in seed_diffs]
    seed_idx, case_idx, valid = bootstrap_draws(counts, 400, np.random.default_rng(11))
    assert seed_idx.shape == (400, 3) and case_idx.shape == (400, 3, 5)
    assert (case_idx < np.array(counts)[seed_idx][..., None]).all() and (case_idx >= 0).all()
    padded = np.full((1, 3, 5), np.nan)  # padding must never be read
    for s, d in enumerate(seed_diffs):
        padded[0, s, : len(d)] = d
    fast = bootstrap_statistics(padded, counts, seed_idx, case_idx, valid)[0]
    np.testing.assert_allclose(fast, loop_bootstrap(seed_diffs, seed_idx, case_idx), rtol=0, atol=1e-12)


def test_vectorised_bootstrap_matches_independent_loop_statistically():
    rng = np.random.default_rng(5)
    seed_diffs = [rng.normal(0.02 * s, 0.05, size=n) for s, n in enumerate([8, 6, 8, 7])]
    counts = [len(d) for d in seed_diffs]
    padded = np.zeros((1, 4, 8))
    for s, d in enumerate(seed_diffs):
        padded[0, s, : len(d)] = d
    n = 20000
    fast = bootstrap_statistics(padded, counts, *bootstrap_draws(counts, n, np.random.default_rng(0)))[0]
    # independent loop bootstrap with its own generator calls
    loop_rng = np.random.default_rng(99)
    slow = []
    for _ in range(n):
        picked = loop_rng.integers(0, 4, size=4)
        slow.append(np.mean([loop_rng.choice(seed_diffs[s], size=len(seed_diffs[s])).mean() for s in picked]))
    lo_f, hi_f = percentile_ci(fast)
    lo_s, hi_s = percentile_ci(np.array(slow))
    width = hi_s - lo_s
    assert abs(lo_f - lo_s) < 0.05 * width and abs(hi_f - hi_s) < 0.05 * width
    assert fast.mean() == pytest.approx(np.mean(slow), abs=0.02 * width)


def test_bootstrap_fast_enough():
    """6 seeds x 20 cases x 4 regions x 8 methods with 10000 resamples: well under a second."""
    regions = ["A", "B", "C", "D"]
    base = np.random.default_rng(0).uniform(0.3, 0.9, size=(6, 20, 4))
    noise = np.random.default_rng(1).normal(0, 0.03, size=(8, *base.shape))
    records = make_records(base, {f"m{i}": noise[i] for i in range(8)}, regions=regions)  # 8 methods + reference
    start = time.perf_counter()
    diffs = paired_differences(records, regions=regions, n_boot=10000)
    elapsed = time.perf_counter() - start
    assert len(diffs) == 8 * 5
    assert elapsed < 3.0  # generous for a loaded CI machine; about 0.2 s measured on two shared cores


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
    d = PairedDifference("slem", "scratch", "ET", 0.019412, -0.0221, 0.09504, 0.03125, 6, 20)
    nan = PairedDifference("cfb", "scratch", "mean", math.nan, math.nan, math.nan, math.nan, 0, 0)
    tiny = PairedDifference("x", "scratch", "WT", -1e-9, -0.00001, 0.123456, 0.123456789, 2, 3)
    text = paired_csv([d, nan, tiny])
    lines = text.splitlines()
    assert lines[0] == "method,reference,region,mean_diff,ci_low,ci_high,p_value,n_seeds,n_cases"
    assert lines[1] == "slem,scratch,ET,0.0194,-0.0221,0.0950,0.03125,6,20"
    assert lines[2] == "cfb,scratch,mean,nan,nan,nan,nan,0,0"
    assert lines[3] == "x,scratch,WT,0.0000,0.0000,0.1235,0.1235,2,3"
    assert list(csv.DictReader(io.StringIO(text)))[0]["p_value"] == "0.03125"


def test_markdown_established():
    diffs = [
        PairedDifference("slem", "scratch", "ET", 0.0194, -0.0221, 0.0950, 0.2, 6, 20),
        PairedDifference("slem", "scratch", "mean", 0.03, 0.01, 0.05, 0.03125, 6, 20),
        PairedDifference("cfb", "scratch", "mean", -0.03, -0.05, -0.01, 0.03125, 6, 20),
        PairedDifference("solo", "scratch", "mean", 0.03, 0.01, 0.05, math.nan, 1, 20),
    ]
    md = paired_markdown(diffs, {"scratch": {"ET": 1}, "slem": {"ET": 0}})
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in md.splitlines()
            if line.startswith("| slem") or line.startswith("| cfb") or line.startswith("| solo")}
    assert "+1.94 [-2.21, +9.50]" in rows["slem", "ET"] and rows["slem", "ET"].endswith("| not established |")
    assert "+3.00 [+1.00, +5.00]" in rows["slem", "mean"] and rows["slem", "mean"].endswith("| established |")
    assert "-3.00 [-5.00, -1.00]" in rows["cfb", "mean"] and rows["cfb", "mean"].endswith("| established |")
    assert "| 0.03125 | 6 | 20 |" in rows["slem", "mean"]
    assert "| nan | 1 | 20 |" in rows["solo", "mean"]
    assert "| Method | ET |" in md and "| scratch | 1 |" in md and "| slem | 0 |" in md
    assert "bootstrap" in md and "Wilcoxon" in md


def test_plot_written(tmp_path: Path, base):
    rng = np.random.default_rng(4)
    records = make_records(base, {"slem": 0.02 + rng.normal(0, 0.02, size=base.shape),
                                  "cfb": -0.01 + rng.normal(0, 0.02, size=base.shape)})
    diffs = paired_differences(records, regions=REGIONS, n_boot=500)
    path = tmp_path / "sub" / "paired.png"
    plot_paired(diffs, path, "BraTS, 6 seeds")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    plot_paired(diffs, tmp_path / "paired.pdf", "pdf too")
    assert (tmp_path / "paired.pdf").read_bytes()[:4] == b"%PDF"
