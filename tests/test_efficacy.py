"""The efficacy protocol's inference helpers and the benchmark's ``report`` on constructed run records."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_slem.experiments.efficacy import (
    PRIMARY_ENDPOINTS,
    BudgetPoint,
    missing_provenance,
    paired_crossing,
    plot_dice_vs_steps,
    pretraining_count,
    primary_positions,
    resumed_runs,
    steps_of,
    steps_to_reach,
)

REPO = Path(__file__).resolve().parents[1]


def test_steps_to_reach_interpolates_between_budgets():
    assert steps_to_reach([250, 500, 1500], [0.60, 0.70, 0.80], 0.75) == pytest.approx(1000.0)
    assert steps_to_reach([1500, 250, 500], [0.80, 0.60, 0.70], 0.65) == pytest.approx(375.0)  # any order
    assert steps_to_reach([250, 500], [0.72, 0.74], 0.70) == 250.0  # already there at the shortest budget
    assert steps_to_reach([250, 500, 1500], [0.60, 0.70, 0.74], 0.75) is None  # never within the range
    assert steps_to_reach([], [], 0.5) is None


def test_primary_positions_one_row_per_endpoint():
    rows = [("K4_e60", "slem", "scratch", "WT"), ("K4_e60", "slem", "scratch", "mean"),
            ("K4_e60", "slem", "scratch", "mean"), ("K4_e20", "slem", "scratch", "mean"),
            ("K4_e20", "cfb", "scratch", "mean"), ("K8_e60", "slem", "scratch", "mean")]
    assert primary_positions(rows) == [1, 3]
    assert primary_positions(rows[:1]) == []
    assert [e.comparison for e in PRIMARY_ENDPOINTS] == ["K4_e60", "K4_e20"]


def _record(method: str, seed: int, epochs: int, dice: dict[str, float], cases: int = 5, *, provenance=True,
            sha: str | None = None) -> dict:
    rng = np.random.default_rng(seed * 31 + epochs)
    case_rows = [{"case": f"c{c}", "dice": {r: float(np.clip(v + rng.normal(0, 0.02), 0, 1)) for r, v in dice.items()},
                  "ref_ml": dict.fromkeys(dice, 10.0), "pred_ml": dict.fromkeys(dice, 10.0)} for c in range(cases)]
    record = {"record_version": 2, "method": method, "trainer": "T", "pretext": "slem" if method == "slem" else "",
              "cfb": method == "slem", "labeled": "4", "seed": seed, "pretrain_seed": seed % 3 if method == "slem"
              else None, "train_cases": 4, "train_seconds": 1.0,
              "schedule": {"epochs": epochs, "iters_per_epoch": 25, "val_iters": 5},
              "splits": {"test": {"dice": {r: float(np.mean([c["dice"][r] for c in case_rows])) for r in dice},
                                  "cases": case_rows}},
              "validation_curve": [0.1 * (i + 1) for i in range(3)]}
    if provenance:
        record["labeled_cases"] = ["a", "b", "c", "d"]
        record["pretrained_from"] = {"pretrain_seed": seed % 3, "sha256": sha or f"sha{seed % 3}"} \
            if method == "slem" else None
    return record


def _write(archive: Path, comparison: str, record: dict) -> None:
    path = archive / comparison / f"seed_{record['seed']}" / f"{record['method']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")


def _point(steps: int, method: str, per_seed: dict[int, float]) -> BudgetPoint:
    values = list(per_seed.values())
    return BudgetPoint(steps, method, float(np.mean(values)), min(values), max(values), len(values),
                       per_seed=tuple(per_seed.items()))


def test_crossing_compares_an_arm_with_scratch_on_the_seeds_they_share():
    """The arm has seeds 0-1, scratch 0-3 at the longest budget, and scratch's seeds 2-3 are much weaker: on the
    shared seeds the target is 0.80 and the arm reaches it at 1000 steps; against scratch's 4-seed mean (0.65) it
    would seem to get there before 500."""
    points = [_point(500, "arm", {0: 0.70, 1: 0.70}), _point(1500, "arm", {0: 0.90, 1: 0.90}),
              _point(1500, "scratch", {0: 0.80, 1: 0.80, 2: 0.50, 3: 0.50})]
    reached, target, n_seeds = paired_crossing(points, "arm", "scratch")
    assert (target, n_seeds) == (pytest.approx(0.80), 2) and reached == pytest.approx(1000.0)
    assert steps_to_reach([500, 1500], [0.70, 0.90], 0.65) == 500.0  # the unpaired reading
    assert paired_crossing(points[1:], "arm", "scratch")[0] is None  # one budget: no curve
    lone = [_point(500, "arm", {0: 0.7}), _point(1500, "arm", {1: 0.9}), points[2]]
    assert paired_crossing(lone, "arm", "scratch")[2] == 0  # no seed at every budget


def test_helpers_on_records():
    records = [_record("slem", s, 60, {"WT": 0.8}) for s in range(6)] + [_record("scratch", 0, 60, {"WT": 0.8},
                                                                                 provenance=False)]
    assert steps_of(records) == 1500
    assert steps_of([*records, _record("scratch", 1, 20, {"WT": 0.8})]) is None
    assert pretraining_count(records, "slem") == (3, 6)
    assert missing_provenance(records) == {"scratch": [0]}
    assert resumed_runs(records) == {}
    records[4]["resumed"] = True
    assert resumed_runs(records) == {"slem": [4]}


def test_report_marks_the_endpoints_and_plots_dice_against_steps(tmp_path):
    """``label_efficiency.py report`` on constructed records of three budgets: two primary rows, Holm columns,
    the endpoints table, dice_vs_steps.png, and the stored runs without labelled cases named."""
    archive = tmp_path / "out" / "records"
    truth = {10: (0.55, 0.65), 20: (0.65, 0.72), 60: (0.72, 0.74)}  # epochs -> (scratch, slem) mean Dice
    for epochs, (scratch, slem) in truth.items():
        for seed in range(6):
            jitter = 0.02 * np.sin(seed + epochs)
            _write(archive, f"K4_e{epochs}", _record("scratch", seed, epochs, {"WT": scratch + jitter,
                                                                                "TC": scratch + jitter},
                                                     provenance=not (epochs == 60 and seed < 2)))
            slem_record = _record("slem", seed, epochs, {"WT": slem + jitter, "TC": slem + jitter})
            _write(archive, f"K4_e{epochs}", {**slem_record, "resumed": epochs == 20 and seed == 3})
            if epochs != 10:  # a new arm at two budgets joins the plot; one at a single budget does not
                _write(archive, f"K4_e{epochs}", _record("slem_recon" if epochs == 20 or seed < 3 else "mae",
                                                         seed, epochs, {"WT": slem + jitter, "TC": slem + jitter}))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "label_efficiency.py"), "report", "--out",
                           str(tmp_path / "out")], capture_output=True, encoding="utf-8", cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out" / "paired.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    primary = [(r["comparison"], r["method"], r["region"]) for r in rows if r["primary"] == "true"]
    assert sorted(primary) == [("K4_e20", "slem", "mean"), ("K4_e60", "slem", "mean")]
    assert all(r["p_holm"] not in ("", "nan") and float(r["p_holm"]) >= float(r["p_value"]) for r in rows)
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## Pre-named endpoints")
    assert "| final Dice (1500 steps) | slem − scratch, K4_e60 |" in summary
    assert "scratch seeds 0, 1" in summary  # the runs that lack labeled_cases are named
    assert "resumed after an interruption (paired up to the resume point only): slem seeds 3" in summary
    assert "SLeM reaches scratch's 1500-step test Dice" in summary and "interpolation" in summary
    assert "`slem_recon` reaches scratch's 1500-step test Dice" in summary
    assert "both over the 6 seeds SLeM has at every budget" in summary
    assert "| 500 | slem_recon | 6 |" in summary and "| 1500 | mae |" not in summary
    assert (tmp_path / "out" / "dice_vs_steps.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "convergence.png").is_file()


def test_dice_vs_steps_plot(tmp_path):
    points = [BudgetPoint(250, "scratch", 0.6, 0.55, 0.65, 6), BudgetPoint(250, "slem", 0.68, 0.6, 0.7, 6,
                                                                           0.08, 0.01, 0.15),
              BudgetPoint(1500, "scratch", 0.72, 0.7, 0.74, 12), BudgetPoint(1500, "slem", 0.74, 0.7, 0.78, 12,
                                                                             0.02, -0.01, 0.05)]
    plot_dice_vs_steps(points, "scratch", tmp_path / "d.png", "title")
    assert (tmp_path / "d.png").stat().st_size > 2000


def _with_pretraining(record: dict, samples: int, images: int, sha: str, wall_s: float | None = 600.0) -> dict:
    facts = {"samples": samples, "images": images, "epochs": 20, "wall_s": wall_s, "samples_per_s": 25.0}
    return {**record, "pretrained_from": {"pretrain_seed": 0, "sha256": sha, "pretraining": facts}}


def test_scale_points_pair_each_arm_with_its_pretrainings_over_common_seeds(tmp_path):
    """One point per scale arm, each over the seeds every arm shares (slem has 6, slem_x8_pool 4: the table uses
    4), distinct pretrainings counted by sha256, the facts from the record or (older records) from the checkpoint;
    arms outside the sweep are left out."""
    from nnunet_slem.experiments.scaling import common_seeds, plot_scaling, scale_points, scaling_markdown

    records = []
    for seed in range(6):
        records.append(_record("scratch", seed, 60, {"WT": 0.70}))
        old = _record("slem", seed, 60, {"WT": 0.72 if seed < 4 else 0.90})  # seeds 4-5 would inflate slem
        old["pretrained_from"] = {"pretrain_seed": 0, "sha256": "old", "path": str(tmp_path / "ckpt.pth")}
        records.append(old)
        records.append(_record("cfb", seed, 60, {"WT": 0.71}))
        if seed < 4:
            records.append(_with_pretraining(_record("slem_x8_pool", seed, 60, {"WT": 0.75}), 32000, 408,
                                             f"x8-{seed % 2}", wall_s=1200.0 + seed))
    (tmp_path / "ckpt.pth").write_bytes(b"")
    looked_up = []

    def facts_of(path: Path) -> dict:
        looked_up.append(path)
        return {"samples": 4000, "images": 24, "wall_s": 300.0, "samples_per_s": 20.0}

    assert common_seeds(records, ["slem", "slem_x8_pool"]) == [0, 1, 2, 3]
    points = {p.method: p for p in scale_points(records, facts_of)}
    assert set(points) == {"slem", "slem_x8_pool"}
    x8, slem = points["slem_x8_pool"], points["slem"]
    assert (x8.samples, x8.images, x8.pretrainings, x8.n_seeds, x8.pool) == (32000, 408, 2, 4, True)
    assert x8.wall_s == pytest.approx(1200.5)  # seeds 0 and 1 first name the two pretrainings
    assert x8.diff == pytest.approx(0.05, abs=0.02)
    assert slem.n_seeds == 4 and slem.diff == pytest.approx(0.02, abs=0.02)  # not the inflated seeds 4-5
    assert (slem.samples, slem.pretrainings) == (4000, 1) and len(looked_up) == 1
    table = scaling_markdown(list(points.values()), "K4_e60")
    assert "| slem_x8_pool | slem | 32,000 | 408 | 2 | 4 |" in table and "20.0 min" in table
    assert "the 4 seeds every arm of this table has" in table
    plot_scaling(list(points.values()), tmp_path / "scaling.png", "t")
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert scale_points([r for r in records if r["method"] != "scratch"], facts_of) == []  # nothing to pair with


def test_report_writes_the_scaling_table_when_a_scale_arm_ran(tmp_path):
    archive = tmp_path / "out" / "records"
    for seed in range(3):
        _write(archive, "K4_e60", _record("scratch", seed, 60, {"WT": 0.70}))
        _write(archive, "K4_e60", _with_pretraining(_record("slem", seed, 60, {"WT": 0.72}), 4000, 24, "a"))
        _write(archive, "K4_e60", _with_pretraining(_record("slem_x8", seed, 60, {"WT": 0.74}), 32000, 24, "b"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "label_efficiency.py"), "report", "--out",
                           str(tmp_path / "out")], capture_output=True, encoding="utf-8", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "## Pretraining at scale (K4_e60)" in summary and "| slem_x8 | slem | 32,000 | 24 |" in summary
    assert (tmp_path / "out" / "scaling.png").is_file()
    assert "| slem_x8 | 3 of 6 seeds run |" in summary and "**Choice pending:**" in summary
    # an arm with a single seed leaves nothing to pair the table over, but the rule's state is still reported
    _write(archive, "K4_e60", _with_pretraining(_record("mae_x8_pool", 0, 60, {"WT": 0.70}), 32000, 408, "c"))
    proc = subprocess.run(proc.args, capture_output=True, encoding="utf-8", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "## Pretraining at scale" not in summary and "| mae_x8_pool | 1 of 6 seeds run |" in summary


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("label_efficiency", REPO / "benchmarks" / "label_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_share_folder_adopts_a_comparisons_own_pretrainings_and_links_the_next(tmp_path):
    """The first comparison's real ``pretrain_variants`` becomes the shared folder (its checkpoints kept, reachable
    under the old path); a second comparison links to it; two non-empty real folders are refused, naming both."""
    share_folder = _benchmark_module().share_folder
    shared = tmp_path / "compare" / "pretrain_variants"
    first, second = tmp_path / "compare" / "K4_e60", tmp_path / "compare" / "K4_e20"
    checkpoint = first / "pretrain_variants" / "x_8" / "seed_0" / "checkpoint_final.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    second.mkdir(parents=True)
    share_folder(first, shared)
    share_folder(second, shared)
    share_folder(first, shared)  # idempotent
    assert (first / "pretrain_variants").is_symlink() and (second / "pretrain_variants").is_symlink()
    assert (shared / "x_8" / "seed_0" / "checkpoint_final.pth").read_bytes() == b"weights"
    assert (second / "pretrain_variants" / "x_8" / "seed_0" / "checkpoint_final.pth").read_bytes() == b"weights"
    assert checkpoint.read_bytes() == b"weights"
    empty, third = tmp_path / "compare" / "K8_e20", tmp_path / "compare" / "K8_e60"
    (empty / "pretrain_variants").mkdir(parents=True)
    share_folder(empty, shared)  # an empty folder of its own is replaced by the link
    assert (empty / "pretrain_variants").is_symlink()
    (third / "pretrain_variants" / "x_8").mkdir(parents=True)
    with pytest.raises(SystemExit, match="both hold pretrainings"):
        share_folder(third, shared)
    # refused before touching anything: both folders as they were
    assert (third / "pretrain_variants" / "x_8").is_dir() and not (third / "pretrain_variants").is_symlink()
    assert sorted(p.name for p in shared.iterdir()) == ["x_8"]
    assert (shared / "x_8" / "seed_0" / "checkpoint_final.pth").read_bytes() == b"weights"
