"""``nnunet-slem compare --smoke`` through nnU-Net's real CLI on the bundled data, and its table helpers."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from nnunet_slem.errors import UserFacingError
from nnunet_slem.experiments.comparison import SMOKE_PRETRAIN, CompareSettings
from nnunet_slem.experiments.comparison_report import aggregate, results_markdown
from nnunet_slem.experiments.methods import ALL_METHODS, METHODS, parse_methods
from nnunet_slem.experiments.workflow import nnunet_env


def _compare_args(out, target, *extra):
    from nnunet_slem.experiments.workflow import console_script

    return [console_script("nnunet-slem"), "compare", "-d", "991", "-c", "3d_fullres", "-f", "0", "-p",
            "nnUNetPlans_slemDemo", "-device", "cpu", "--smoke", "--labeled", "1", "--out", str(target), *extra]


def _compare(out, target, *extra):
    return subprocess.run(_compare_args(out, target, *extra), capture_output=True, encoding="utf-8",
                          errors="replace", env=nnunet_env(out))


def _kill_when(proc: subprocess.Popen, done: Path, timeout: float = 600) -> None:
    """SIGKILL ``proc`` (and its nnU-Net children) as soon as ``done`` exists."""
    deadline = time.monotonic() + timeout
    while not done.exists():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline, f"{done} never appeared"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_compare_smoke_writes_one_row_per_method_and_resumes_after_a_kill(reduced_demo, tmp_path):
    out, _, demo = reduced_demo
    assert demo.returncode == 0, demo.stderr[-3000:]
    target = tmp_path / "compare"
    # killed (SIGKILL, with its nnU-Net child) right after the second method finished
    first = subprocess.Popen(_compare_args(out, target), env=nnunet_env(out), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    _kill_when(first, target / "runs" / "seed_0" / "cfb.json")
    assert not (target / "results.csv").exists()
    proc = _compare(out, target)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[scratch seed 0] done already" in proc.stdout and "[cfb seed 0] done already" in proc.stdout
    with open(target / "results.csv", newline="", encoding="utf-8") as f:
        all_rows = list(csv.DictReader(f))
    # every run is evaluated on the fold's validation case (monitoring) and on the 2 held-out test cases
    assert {r["split"] for r in all_rows} == {"val", "test"}
    for split, n_cases in (("val", "1"), ("test", "2")):
        rows = [r for r in all_rows if r["split"] == split]
        assert [r["method"] for r in rows] == list(METHODS)
        for row in rows:
            assert row["train_cases"] == "1" and row["cases"] == n_cases
            for region in ("WT", "TC", "ET"):
                assert 0.0 <= float(row[f"dice_{region}"]) <= 1.0
    assert {r["method"]: r["cfb"] for r in all_rows}["scratch"] == "False"
    table = (target / "results.md").read_text(encoding="utf-8")
    assert all(f"| {m} |" in table for m in METHODS) and "WT Dice | TC Dice | ET Dice" in table
    assert "## test split" in table and "## Paired differences to scratch (test split)" in table
    assert (target / "results.png").stat().st_size > 2000
    # paired statistics on the test split: every other method minus scratch, per region and their mean
    with open(target / "paired.csv", newline="", encoding="utf-8") as f:
        paired = list(csv.DictReader(f))
    assert list(paired[0]) == ["method", "reference", "region", "mean_diff", "ci_low", "ci_high", "p_value",
                               "p_wilcoxon", "p_holm", "primary", "n_seeds", "n_cases"]
    assert {(r["method"], r["region"]) for r in paired} == {
        (m, reg) for m in METHODS if m != "scratch" for reg in ("WT", "TC", "ET", "mean")}
    assert all(r["reference"] == "scratch" and r["n_seeds"] == "1" and r["n_cases"] == "2" for r in paired)
    # one seed is one replicate: no interval, nothing established, no pre-named endpoint in an ad-hoc comparison
    assert all(r["ci_low"] == r["ci_high"] == r["p_holm"] == "nan" and r["primary"] == "false" for r in paired)
    assert (target / "paired.png").stat().st_size > 2000
    # the fine-tuning RNG was seeded like the labelled subset
    logs = list((target / "runs" / "seed_0").rglob("training_log_*.txt"))
    assert logs and any("SLEM_SEED=0" in p.read_text(encoding="utf-8") for p in logs)
    assert not list(target.rglob(".*.tmp")), "no half-written files left"
    # the same labelled case for every method (same seed), validation fixed
    subsets = {json.dumps(json.loads(p.read_text(encoding="utf-8"))["train"])
               for p in (target / "runs" / "seed_0").rglob("labeled_subset.json")}
    assert len(subsets) == 1
    # every fine-tuning got the comparison's checkpoint interval
    fold_dirs = [p.parent for p in (target / "runs" / "seed_0").rglob("fold_0/checkpoint_final.pth")]
    assert len(fold_dirs) == len(METHODS)
    for fold_dir in fold_dirs:  # (a run killed before its start logged less: hence "any" log of the folder)
        assert any("'SLEM_SAVE_EVERY': 5" in p.read_text(encoding="utf-8")
                   for p in fold_dir.glob("training_log_*.txt")), fold_dir
    # pretrained methods really started from their own pretraining
    for trainer, folder in (("SLeMTrainer_fromTaleb", "TalebPretrain__"), ("SLeMTrainer_noCFB", "SLeMPretrain_noCFB__"),
                            ("SLeMTrainer_fromSupervoxel", "SupervoxelPretrain__")):
        record = next((target / "runs" / "seed_0").rglob(f"{trainer}__*/fold_0/slem_pretrained_from.json"))
        assert folder in json.loads(record.read_text(encoding="utf-8"))["checkpoint"]
    # every record names its labelled cases (the same at one seed) and the pretraining it started from
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (target / "runs" / "seed_0").glob("*.json")}
    assert {json.dumps(r["labeled_cases"]) for r in records.values()} == {json.dumps(sorted(json.loads(x)))
                                                                           for x in subsets}
    assert records["scratch"]["pretrained_from"] is None
    from nnunet_slem.experiments.run_records import file_sha256

    slem_from = records["slem"]["pretrained_from"]
    assert slem_from["pretrain_seed"] == 0 and slem_from["sha256"] == file_sha256(Path(slem_from["path"]))
    facts = slem_from["pretraining"]  # what the scaling report reads: the pretraining's size and cost
    assert facts["samples"] == facts["epochs"] * SMOKE_PRETRAIN["iters"] * SMOKE_PRETRAIN["batch"]
    assert facts["images"] == len(list(next((out / "nnUNet_raw").glob("Dataset991_*")).glob("labelsTr/*.nii.gz")))
    assert facts["wall_s"] > 0 and facts["samples_per_s"] > 0
    assert not any(r["resumed"] for r in records.values())
    assert all(r["validation_curve"] and len(r["validation_curve"]) == 1 for r in records.values())
    # nothing is redone on a third call
    again = _compare(out, target)
    assert again.returncode == 0 and again.stdout.count("done already") == len(METHODS)
    assert again.stdout.count("reused") == 4 and "nnUNetv2_train" not in again.stdout


def test_compare_rejects_unknown_methods_and_bad_label_counts():
    with pytest.raises(UserFacingError, match="Unknown method"):
        parse_methods("slem,simclr")
    with pytest.raises(UserFacingError, match="SLEM_LABELED"):
        CompareSettings(dataset="1", configuration="3d_fullres", fold=0, labeled="1.5")
    with pytest.raises(UserFacingError, match="--save-every"):
        CompareSettings(dataset="1", configuration="3d_fullres", fold=0, save_every=0)
    with pytest.raises(UserFacingError, match="--pretrain-seeds"):
        CompareSettings(dataset="1", configuration="3d_fullres", fold=0, pretrain_seeds=0)
    with pytest.raises(UserFacingError, match="--reference 'simclr'"):
        CompareSettings(dataset="1", configuration="3d_fullres", fold=0, reference="simclr")
    with pytest.raises(UserFacingError, match="--test-images and --test-labels go together"):
        CompareSettings(dataset="1", configuration="3d_fullres", fold=0, test_images="imagesTs")
    assert parse_methods("slem,slem_sawtooth,slem_warmup") == ["slem", "slem_sawtooth", "slem_warmup"]


def _row(method, seed, wt, tc):
    return {"method": method, "seed": seed, "dice": {"WT": wt, "TC": tc}}


def test_aggregate_is_mean_and_std_over_seeds():
    rows = [_row("slem", 0, 0.8, 0.6), _row("slem", 1, 0.6, 0.4), _row("scratch", 0, 0.5, float("nan"))]
    stats = aggregate(rows, ["WT", "TC"])
    assert stats["slem"]["WT"] == pytest.approx((0.7, 0.1))
    assert stats["slem"]["mean"] == pytest.approx((0.6, 0.1))
    assert stats["scratch"]["WT"] == pytest.approx((0.5, 0.0)) and math.isnan(stats["scratch"]["TC"][0])
    table = results_markdown(rows, ["WT", "TC"], ALL_METHODS, "# X", "Held-out test cases.")
    assert "| slem | yes | slem | 2 | 0.700 ± 0.100 | 0.500 ± 0.100 | 0.600 ± 0.100 |" in table
    assert "| scratch | no | - | 1 | 0.500 ± 0.000 |" in table and "Held-out test cases." in table


def _record(method, seed, lesion):
    split = {"dice": {"WT": 0.8, "TC": 0.6, "ET": 0.5}, "cases": [{"case": "c1"}]}
    if lesion:
        split["lesion_dice"] = {"WT": 0.7, "TC": 0.5, "ET": 0.4}
    return {"method": method, "trainer": "T", "pretext": None, "cfb": False, "labeled": "2", "seed": seed,
            "train_cases": 2, "splits": {"test": split}}


@pytest.mark.parametrize(("lesion_per_method", "lesion_columns"), [
    ({"scratch": False, "slem": False}, 0),  # the case: the header used to list 11 cells, the rows 8
    ({"scratch": True, "slem": True}, 3),
    ({"scratch": True, "slem": False}, 0),  # lesion-wise Dice of some runs only: left out everywhere
])
def test_results_markdown_rows_have_as_many_cells_as_the_header(lesion_per_method, lesion_columns):
    from nnunet_slem.experiments.comparison_report import split_rows

    records = [_record(m, s, lesion) for m, lesion in lesion_per_method.items() for s in (0, 1)]
    table = results_markdown(split_rows(records, "test"), ["WT", "TC", "ET"], ALL_METHODS, "# X", "Test.")
    rows = [line for line in table.splitlines() if line.startswith("|")]
    cells = [line.count("|") - 1 for line in rows]  # no cell holds a "|"
    assert len(rows) == 2 + len(lesion_per_method)  # header, separator, one row per method
    assert cells == [3 + 5 + lesion_columns] * len(rows), "\n".join(rows)
    assert ("ET lesion Dice" in rows[0]) == bool(lesion_columns)


def test_fine_tuning_seeds_are_paired_with_pretraining_seeds(tmp_path):
    """--pretrain-seeds P pretrains every pretext P times; fine-tuning seed s starts from pretraining s mod P,
    and every method of a seed gets that seed."""
    from nnunet_slem.experiments.comparison import Comparison

    comparison = Comparison.__new__(Comparison)
    comparison.s = CompareSettings("1", "3d_fullres", 0, methods=["scratch", "slem", "slem_nocfb"], seeds=5,
                                   pretrain_seeds=2)
    pretrained, finetuned = [], []
    comparison.pretrain = lambda pretext, cfb, seed, _: pretrained.append((pretext, cfb, seed)) or f"{cfb}-{seed}.pth"
    comparison.finetune_and_evaluate = lambda method, seed, checkpoint, pretrain_seed: finetuned.append(
        (method.name, seed, checkpoint, pretrain_seed))
    comparison.report = lambda *args: None
    comparison.check_distinct_subsets = lambda n: None
    comparison.run()
    assert pretrained == [("slem", True, 0), ("slem", False, 0), ("slem", True, 1), ("slem", False, 1)]
    assert ("slem", 3, "True-1.pth", 1) in finetuned and ("slem_nocfb", 4, "False-0.pth", 0) in finetuned
    assert ("scratch", 3, None, None) in finetuned and len(finetuned) == 15
    # --first-seed 6 --seeds 3 with 3 pretraining seeds: seeds 6, 7, 8 from pretrainings 0, 1, 2
    comparison.s = CompareSettings("1", "3d_fullres", 0, methods=["scratch", "slem"], seeds=3, first_seed=6,
                                   pretrain_seeds=3)
    pretrained.clear()
    finetuned.clear()
    comparison.run()
    assert [seed for _, _, seed in pretrained] == [0, 1, 2]
    assert [(name, seed, p) for name, seed, _, p in finetuned] == [
        ("scratch", 6, None), ("slem", 6, 0), ("scratch", 7, None), ("slem", 7, 1), ("scratch", 8, None),
        ("slem", 8, 2)]
    with pytest.raises(UserFacingError, match="--first-seed -1"):
        CompareSettings("1", "3d_fullres", 0, first_seed=-1)


def test_more_seeds_than_distinct_labelled_subsets_is_refused(tmp_path):
    """4 labelled of 5 training cases allow C(5, 4) = 5 distinct subsets: 6 seeds would repeat one."""
    from nnunet_slem.experiments.comparison import Comparison
    from nnunet_slem.trainers.labeled_subset import check_seed_count

    with pytest.raises(UserFacingError, match=r"--seeds 6 .* distinct labelled subsets \(5: 4 of 5"):
        check_seed_count(6, 5, "4", 0)
    check_seed_count(5, 5, "4", 0)
    check_seed_count(10, 5, "0.5", 0)  # round(2.5) = 2: C(5, 2) = 10
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": list("abcde"), "val": ["f"]}]),
                                                encoding="utf-8")
    comparison = Comparison.__new__(Comparison)
    comparison.data = type("Data", (), {"preprocessed_base": str(tmp_path)})()
    comparison.s = CompareSettings("1", "3d_fullres", 0, labeled="4", seeds=6)
    with pytest.raises(UserFacingError, match=r"--seeds 6 .*\(5: 4 of 5 training cases\)"):
        comparison.check_distinct_subsets(6)


def test_pretext_variants_pretrain_with_their_options_into_their_own_folders(tmp_path, monkeypatch):
    """A variant arm (slem_grid222) must never reuse the plain SLeM checkpoint: its pretraining gets the variant's
    options and a results folder of its own, while slem keeps nnU-Net_results; both fine-tune with SLeMTrainer."""
    from nnunet_slem.experiments import comparison as module
    from nnunet_slem.experiments.methods import PRETEXT_VARIANTS

    assert PRETEXT_VARIANTS["slem_grid222"].trainer == ALL_METHODS["slem"].trainer
    commands = []
    monkeypatch.setattr(module, "run_command", lambda args, env, log, echo=False: commands.append((args, env)))
    comparison = module.Comparison.__new__(module.Comparison)
    comparison.s = CompareSettings("1", "3d_fullres", 0, methods=["slem", "slem_grid222"], seeds=2, pretrain_seeds=2,
                                   out=str(tmp_path))
    comparison.data = type("Data", (), {"dataset_name": "Dataset001_X"})()
    comparison.dataset_id = 1
    comparison.root, comparison.log = tmp_path, tmp_path / "log.txt"
    comparison.pretrain_root, comparison.extra_pretrain_root = tmp_path / "results", tmp_path / "pretrain_seeds"
    finetuned = []
    comparison.finetune_and_evaluate = lambda method, seed, checkpoint, pretrain_seed: finetuned.append(
        (method.name, seed, str(checkpoint)))
    comparison.report = lambda *args: None
    comparison.check_distinct_subsets = lambda n: None
    comparison.run()
    grids = [args[args.index("--grid") + 1] if "--grid" in args else None for args, _ in commands]
    assert grids == [None, "2x2x2", None, "2x2x2"]
    roots = [env["nnUNet_results"] for _, env in commands]
    assert len(set(roots)) == 4 and all("pretrain_variants" in r for r, g in zip(roots, grids) if g)
    slem = {seed: ckpt for name, seed, ckpt in finetuned if name == "slem"}
    variant = {seed: ckpt for name, seed, ckpt in finetuned if name == "slem_grid222"}
    assert all(slem[s] != variant[s] and "pretrain_variants" in variant[s] for s in (0, 1))
    # ... and fine-tunes into its own nnUNet_results: the same trainer must not find slem's model there
    methods = [ALL_METHODS[m] for m in ("scratch", "slem", "slem_warmup", "slem_grid222", "slem_mdrop")]
    roots = [comparison.finetune_results_root(m, 0) for m in methods]
    assert len({(r, m.trainer) for r, m in zip(roots, methods)}) == len(methods)
    assert roots[0] == roots[1] == tmp_path / "runs" / "seed_0" / "nnUNet_results"  # stored runs stay where they are


def test_compare_smoke_with_the_mae_baseline_writes_an_mae_row(reduced_demo, tmp_path):
    out, _, demo = reduced_demo
    assert demo.returncode == 0, demo.stderr[-3000:]
    target = tmp_path / "compare_mae"
    proc = _compare(out, target, "--methods", "scratch,mae")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(target / "results.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert [r["method"] for r in rows] == ["scratch", "mae"] and rows[1]["pretext"] == "mae"
    with open(target / "paired.csv", newline="", encoding="utf-8") as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"mae"}
    record = next(target.rglob("SLeMTrainer_fromMAE__*/fold_0/slem_pretrained_from.json"))
    loaded = json.loads(record.read_text(encoding="utf-8"))
    assert "MAEPretrain__" in loaded["checkpoint"] and loaded["tensors_per_part"]["decoder"]["loaded"] > 0


def test_pool_and_scale_arms_pretrain_on_the_pool_into_folders_named_by_it(tmp_path, monkeypatch):
    """slem_pool / slem_x8 / slem_x8_pool: the pool reaches `pretrain --unlabeled`, the scale multiplies the
    comparison's pretraining epochs (and wins over them), and the pool's identity names the folders."""
    from nnunet_slem.experiments import comparison as module

    pool = tmp_path / "imagesUnlabeled"
    pool.mkdir()
    for case in ("u0", "u1"):
        for channel in range(2):
            (pool / f"{case}_{channel:04d}.nii.gz").write_bytes(b"")
    with pytest.raises(UserFacingError, match=r"--methods slem_pool pretrain\(s\) on an unlabelled pool: pass it "
                                              r"with --unlabeled DIR"):
        CompareSettings("1", "3d_fullres", 0, methods=["scratch", "slem_pool"])
    commands = []
    monkeypatch.setattr(module, "run_command", lambda args, env, log, echo=False: commands.append((args, env)))
    comparison = module.Comparison.__new__(module.Comparison)
    comparison.s = CompareSettings("1", "3d_fullres", 0, methods=["slem", "slem_pool", "slem_x8", "slem_x8_pool"],
                                   pretrain_epochs=20, unlabeled=str(pool), out=str(tmp_path))
    comparison.data = type("Data", (), {"dataset_name": "Dataset001_X", "dataset_json": {
        "file_ending": ".nii.gz", "channel_names": {"0": "a", "1": "b"}}})()
    comparison.dataset_id = 1
    comparison.root, comparison.log = tmp_path, tmp_path / "log.txt"
    comparison.pretrain_root, comparison.extra_pretrain_root = tmp_path / "results", tmp_path / "pretrain_seeds"
    finetuned = {}
    comparison.finetune_and_evaluate = lambda method, seed, checkpoint, pretrain_seed: finetuned.setdefault(
        method.name, str(checkpoint))
    comparison.report = lambda *args: None
    comparison.check_distinct_subsets = lambda n: None
    comparison.run()
    assert len(commands) == 4 and len(set(finetuned.values())) == 4
    by_root = {env["nnUNet_results"]: args for args, env in commands}

    def last_epochs(args: list) -> int:  # the last --epochs wins in argparse
        return [args[i + 1] for i, a in enumerate(args) if a == "--epochs"][-1]

    assert sorted(last_epochs(args) for args in by_root.values()) == [20, 20, 160, 160]
    pooled = [args for args in by_root.values() if "--unlabeled" in args]
    assert len(pooled) == 2 and all(args[args.index("--unlabeled") + 1] == str(pool) for args in pooled)
    assert sorted(last_epochs(args) for args in pooled) == [20, 160]
    roots = [r for r in by_root if "--unlabeled" in by_root[r]]
    assert all("pool-imagesUnlabeled-2cases-" in r for r in roots)
    assert "pool-" in finetuned["slem_x8_pool"] and "_x_8" in finetuned["slem_x8_pool"]
    assert "pool-" not in finetuned["slem_x8"] and "pretrain_variants" not in finetuned["slem"]
    # what a finished checkpoint in those folders is checked against before it is reused
    assert comparison._requested_pretraining(ALL_METHODS["slem_x8_pool"].pretraining[2])["epochs"] == 160
    assert comparison._requested_pretraining(ALL_METHODS["slem_pool"].pretraining[2])["epochs"] == 20
    from nnunet_slem.experiments.methods import describe_options  # results.md names them so, not by placeholder

    assert describe_options(ALL_METHODS["slem_x8_pool"].pretraining[2]) == "with the --unlabeled pool 8x the epochs"


def test_a_reused_pretraining_or_fine_tuning_must_be_the_one_asked_for(tmp_path, monkeypatch):
    """A finished pretraining of another schedule, or a fine-tuning (record or fold folder) started from another
    pretraining, is refused in one line naming the fix, not silently reused."""
    from nnunet_slem.experiments import run_records
    from nnunet_slem.experiments.run_records import (
        check_pretraining_matches,
        check_same_pretraining,
        file_sha256,
    )

    old, new = tmp_path / "old.pth", tmp_path / "new.pth"
    old.write_bytes(b"old pretraining")
    new.write_bytes(b"new pretraining")
    record = {"pretrained_from": {"path": str(old), "sha256": file_sha256(old)}}
    check_same_pretraining(record, old, tmp_path / "slem.json")
    check_same_pretraining({"pretrained_from": None}, new, tmp_path / "scratch.json")  # nothing to compare
    with pytest.raises(UserFacingError, match=r"slem_pool\.json was fine-tuned from the pretraining .*old\.pth, "
                                              r"but this comparison starts that arm from .*new\.pth.*--out"):
        check_same_pretraining(record, new, tmp_path / "slem_pool.json")
    with pytest.raises(UserFacingError, match="fold_0 was fine-tuned from"):  # the fold folder: paths only
        check_same_pretraining({"pretrained_from": {"path": str(old)}}, new, tmp_path / "fold_0")

    monkeypatch.setattr(run_records, "load_checkpoint", lambda path: {"metadata": {
        "settings": {"epochs": 20, "iters_per_epoch": 25, "batch_size": None}, "global_batch_size": 8}})
    check_pretraining_matches(old, {"epochs": 20, "iters_per_epoch": 25, "batch_size": 8})
    check_pretraining_matches(old, {"epochs": None, "iters_per_epoch": None, "batch_size": None})
    with pytest.raises(UserFacingError, match=r"old\.pth was pretrained with epochs 20 \(asked: 160\)"):
        check_pretraining_matches(old, {"epochs": 160, "iters_per_epoch": 25, "batch_size": 8})


@pytest.mark.integration
def test_compare_smoke_with_the_reconstructive_slem_and_a_pool(reduced_demo, tmp_path):
    """`compare --methods scratch,slem_recon --unlabeled DIR --smoke` on the bundled data, with a pool arm
    (slem_pool) so the pool really reaches a pretraining."""
    out, _, demo = reduced_demo
    assert demo.returncode == 0, demo.stderr[-3000:]
    raw = next((out / "nnUNet_raw").glob("Dataset991_*"))
    pool = tmp_path / "pool"
    pool.mkdir()
    for f in sorted((raw / "imagesTs").glob("*.nii.gz")):  # held-out images stand in for an unlabelled pool here
        shutil.copy(f, pool / f.name.replace("SLEM_", "POOL_"))
    target = tmp_path / "compare_recon"
    proc = _compare(out, target, "--methods", "scratch,slem_recon,slem_pool", "--unlabeled", str(pool))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(target / "results.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert [r["method"] for r in rows] == ["scratch", "slem_recon", "slem_pool"]
    record = next(target.rglob("SLeMTrainer_fromSLeMRecon__*/fold_0/slem_pretrained_from.json"))
    loaded = json.loads(record.read_text(encoding="utf-8"))
    assert "SLeMReconPretrain__" in loaded["checkpoint"] and loaded["tensors_per_part"]["decoder"]["loaded"] > 0
    config = next(target.rglob("pool-pool-2cases-*/seed_0/**/SLeMPretrain__*/pretrain_config.json"))
    assert json.loads(config.read_text(encoding="utf-8"))["unlabeled_pool"]["num_cases"] == 2
    pooled = json.loads((target / "runs" / "seed_0" / "slem_pool.json").read_text(encoding="utf-8"))
    recon = json.loads((target / "runs" / "seed_0" / "slem_recon.json").read_text(encoding="utf-8"))
    assert (pooled["pretrained_from"]["pretraining"]["images"]
            == recon["pretrained_from"]["pretraining"]["images"] + 2)  # the training images and the pool


def test_a_fine_tuning_continued_from_its_latest_checkpoint_is_recorded_as_resumed(tmp_path, monkeypatch):
    """A run continued with --c reseeds at the resume point: its record says ``resumed`` (the report names it);
    one started afresh (no checkpoint) does not."""
    from nnunet_slem.experiments import comparison as module

    commands = []
    monkeypatch.setattr(module, "run_command", lambda args, env, log, echo=False: commands.append(args) or 1.0)
    comparison = module.Comparison.__new__(module.Comparison)
    comparison.s = CompareSettings("1", "3d_fullres", 0, methods=["scratch", "cfb"], labeled="2", out=str(tmp_path))
    comparison.data = type("Data", (), {"dataset_name": "Dataset001_X", "preprocessed_base": str(tmp_path),
                                        "dataset_json": {"file_ending": ".nii.gz"}})()
    comparison.dataset_id, comparison.test_set = 1, None
    comparison.root, comparison.log = tmp_path, tmp_path / "log.txt"
    comparison.validation_cases = lambda: []
    comparison.evaluate = lambda predictions, references, fold_dir: {"dice": {}}
    for name, interrupted in (("scratch", True), ("cfb", False)):
        method = ALL_METHODS[name]
        fold = (comparison.finetune_results_root(method, 0) / "Dataset001_X"
                / f"{method.trainer}__nnUNetPlans__3d_fullres" / "fold_0")
        fold.mkdir(parents=True)
        (fold / "labeled_subset.json").write_text(json.dumps({"train": ["a", "b"]}), encoding="utf-8")
        if interrupted:
            (fold / "checkpoint_latest.pth").write_bytes(b"")
        record = comparison.finetune_and_evaluate(method, 0, None)
        assert ("--c" in commands[-1]) == interrupted and record["resumed"] == interrupted
