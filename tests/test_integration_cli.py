"""End to end through the commands a user types: nnU-Net's CLI with our trainers, and ours.

plan/preprocess (fixture) -> ``nnunet-slem pretrain`` (fixture) -> ``nnUNetv2_train -tr ...`` ->
``nnUNetv2_predict -tr ...`` -> ``nnUNetv2_evaluate_folder`` and ``nnunet-slem evaluate``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


def _train(project, trainer: str, fold: int = 0, env: dict | None = None, check: bool = True):
    return project.run("nnUNetv2_train", project.dataset_id, project.configuration, fold, "-tr", trainer, "-p",
                       project.plans, "-device", "cpu", env=env, check=check)


def _predict(project, trainer: str, out, fold: int = 0):
    project.run("nnUNetv2_predict", "-i", project.raw / "imagesTr", "-o", out, "-d", project.dataset_id, "-c",
                project.configuration, "-f", fold, "-tr", trainer, "-p", project.plans, "-device", "cpu",
                "--disable_tta", "-npp", "1", "-nps", "1")


def test_noPretrain_smoke_trains_predicts_and_evaluates_on_a_foreign_dataset(project, tmp_path):
    trainer = "SLeMTrainer_noPretrain_smoke"
    proc = _train(project, trainer)
    assert "Using trainer 'SLeMTrainer_noPretrain_smoke' from" in proc.stdout
    fold = project.results / f"{trainer}__{project.plans}__{project.configuration}" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    pred = tmp_path / "pred"
    _predict(project, trainer, pred)  # nnU-Net rebuilds the network via our class and reloads strictly
    n_cases = len(list((project.raw / "labelsTr").glob("*.nii.gz")))
    assert len(list(pred.glob("*.nii.gz"))) == n_cases
    project.run("nnUNetv2_evaluate_folder", project.raw / "labelsTr", pred, "-djfile",
                project.raw / "dataset.json", "-pfile", fold.parent / "plans.json")
    summary = json.loads((pred / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["mean"]) == {"(1, 2)", "(2,)"}
    assert all(0.0 <= v["Dice"] <= 1.0 for v in summary["mean"].values())
    project.run("nnunet-slem", "evaluate", "-ref", project.raw / "labelsTr", "-pred", pred, "-d",
                project.dataset_id, "-o", tmp_path / "metrics")
    ours = json.loads((tmp_path / "metrics" / "summary.json").read_text(encoding="utf-8"))
    assert set(ours["regions"]) == {"lesion", "core"}


def test_slem_trainer_smoke_starts_from_the_pretrained_checkpoint(project, pretrained_checkpoint):
    proc = _train(project, "SLeMTrainer_smoke", fold=1)
    assert "Loaded SLeM-pretrained weights" in proc.stdout and str(pretrained_checkpoint) in proc.stdout
    fold = project.results / f"SLeMTrainer_smoke__{project.plans}__{project.configuration}" / "fold_1"
    record = json.loads((fold / "slem_pretrained_from.json").read_text(encoding="utf-8"))
    assert record["checkpoint"] == str(pretrained_checkpoint.resolve())
    # --val reruns validation only and must not touch the pretraining checkpoint again
    proc = project.run("nnUNetv2_train", project.dataset_id, project.configuration, 1, "-tr", "SLeMTrainer_smoke",
                       "-p", project.plans, "-device", "cpu", "--val",
                       env={"SLEM_PRETRAINED_WEIGHTS": "/nonexistent/never_read.pth"})
    assert "Loaded SLeM-pretrained weights" not in proc.stdout


def test_slem_trainer_without_weights_fails_fast_with_the_fix(project, tmp_path):
    missing = tmp_path / "absent" / "checkpoint_final.pth"
    start = time.perf_counter()
    proc = _train(project, "SLeMTrainer", fold=2, env={"SLEM_PRETRAINED_WEIGHTS": str(missing)}, check=False)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "nnunet-slem pretrain -d Dataset777" in proc.stderr
    assert "SLeMTrainer_noPretrain" in proc.stderr
    assert time.perf_counter() - start < 120


def test_wrong_ext_trainer_folder_gives_nnunets_error(project, tmp_path):
    proc = _train(project, "SLeMTrainer_noPretrain_smoke", env={"nnUNet_extTrainer": str(tmp_path)}, check=False)
    assert proc.returncode != 0
    assert "Could not find requested nnunet trainer SLeMTrainer_noPretrain_smoke" in proc.stderr


def test_pretrain_cli_errors_are_one_clear_line(project):
    proc = project.run("nnunet-slem", "pretrain", "-d", project.dataset_id, "-c", "3d_lowres", "-p", project.plans,
                       "-device", "cpu", check=False)
    assert proc.returncode == 2
    assert "Configuration '3d_lowres' is not in plans" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_reduced_runs_and_resumes(reduced_demo):
    out, args, proc = reduced_demo
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| SLeM (pretrained + CFB) |" in table and "| scratch (CFB, random init) |" in table
    assert "WT Dice | TC Dice | ET Dice" in table
    result = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for summary in result["dice"].values():
        assert all(0.0 <= summary[r]["dice"]["mean"] <= 1.0 for r in ("WT", "TC", "ET"))
    assert (out / "dice.png").stat().st_size > 1000
    # both arms fine-tuned on the demo's --finetune-epochs x --finetune-iters, not their class default (10 x 20)
    schedules = [json.loads(p.read_text(encoding="utf-8")) for p in out.rglob("fold_0/schedule.json")]
    assert len(schedules) == 2 and all((s["num_epochs"], s["num_iterations_per_epoch"]) == (1, 2) for s in schedules)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    again = subprocess.run(args, capture_output=True, encoding="utf-8", errors="replace", env=env)
    assert again.returncode == 0 and again.stdout.count("skipped") >= 6
