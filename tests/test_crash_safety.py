"""Crash safety: SIGKILL mid-run, kills during checkpoint writes, failing writes. Nothing half-written survives,
and ``--resume`` ends where an uninterrupted run ends (same weights, same AdamW moments, one log line per
epoch)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nnunet_slem import checkpoint_format as checkpoint_module
from nnunet_slem.checkpoint_format import load_checkpoint
from nnunet_slem.experiments.workflow import console_script
from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
from nnunet_slem.pretrain.settings import PretrainSettings
from tests.conftest import pretrain_folder

EPOCHS, ITERS, BATCH = 4, 2, 2


def _cli(project, results: Path, *extra: str) -> list[str]:
    return [console_script("nnunet-slem"), "pretrain", "-d", str(project.dataset_id), "-c", project.configuration,
            "-p", project.plans, "-device", "cpu", "--epochs", str(EPOCHS), "--iters-per-epoch", str(ITERS),
            "--batch-size", str(BATCH), "--audit-samples", "0", "--probe-samples", "0", *extra]


def _env(project, results: Path) -> dict[str, str]:
    return {**project.env, "nnUNet_results": str(results), "OMP_NUM_THREADS": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"pretraining ended before writing {path}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


def _epoch_lines(folder: Path) -> list[str]:
    return [line.split()[3] for line in (folder / "pretrain_log.txt").read_text(encoding="utf-8").splitlines()
            if line.split()[2:3] == ["epoch"]]


def test_sigkill_then_resume_equals_an_uninterrupted_run(project, tmp_path, one_thread):
    straight = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                              PretrainSettings(epochs=EPOCHS, iters_per_epoch=ITERS, batch_size=BATCH,
                                               audit_samples=0, probe_samples=0), results_root=tmp_path / "straight",
                              preprocessed_root=project.env["nnUNet_preprocessed"]).run()
    results = tmp_path / "killed"
    folder = pretrain_folder(project, results)
    proc = subprocess.Popen(_cli(project, results), env=_env(project, results), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
    try:
        _wait_for(folder / "checkpoint_latest.pth", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = load_checkpoint(folder / "checkpoint_latest.pth")["epoch"]
    assert 1 <= killed_at < EPOCHS and not (folder / "checkpoint_final.pth").exists()
    (folder / ".checkpoint_latest.pth.stale.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves

    resumed = subprocess.run(_cli(project, results, "--resume"), env=_env(project, results), capture_output=True,
                             encoding="utf-8", errors="replace")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {folder / 'checkpoint_latest.pth'} after epoch {killed_at}" in resumed.stdout

    a, b = load_checkpoint(straight), load_checkpoint(folder / "checkpoint_final.pth")
    assert b["epoch"] == EPOCHS and len(b["logging"]["loss"]) == EPOCHS
    assert b["logging"]["loss"] == pytest.approx(a["logging"]["loss"], rel=1e-6)
    for key, value in a["network_weights"].items():
        assert torch.allclose(value, b["network_weights"][key], atol=1e-6), key
    # the AdamW moments came back from the checkpoint (a fresh optimizer would have diverged above too)
    state_a, state_b = a["optimizer_state"]["state"], b["optimizer_state"]["state"]
    assert state_a.keys() == state_b.keys() and all(int(state_b[k]["step"]) == EPOCHS * ITERS for k in state_b)
    for k in state_a:
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(state_a[k][moment], state_b[k][moment], atol=1e-7), (k, moment)
    assert _epoch_lines(folder) == [f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_final.pth", "pretrain_config.json",
                                                        "pretrain_log.txt", "progress.png"]


_WRITER = """
import sys, torch
from nnunet_slem.checkpoint_format import save_atomic
ckpt = {"network_weights": {"w": torch.zeros(2_000_000)}, "metadata": {"format_version": 1}, "epoch": 0}
print("writing", flush=True)
while True:
    ckpt["epoch"] += 1
    ckpt["network_weights"]["w"].fill_(ckpt["epoch"])
    save_atomic(ckpt, sys.argv[1])
"""


def test_kills_during_checkpoint_writes_never_leave_a_partial_checkpoint(tmp_path):
    """SIGKILL a process that does nothing but write an 8 MB checkpoint, at random moments, five times."""
    path = tmp_path / "checkpoint_latest.pth"
    rng = random.Random(0)
    epochs: list[int] = []
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, encoding="utf-8")
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for done in tmp_path.glob("checkpoint_*.pth"):  # every visible checkpoint is complete and consistent
            ckpt = load_checkpoint(done)
            assert torch.all(ckpt["network_weights"]["w"] == ckpt["epoch"])
            epochs.append(ckpt["epoch"])
        assert all(p.name.startswith(".") and p.name.endswith(".tmp")
                   for p in tmp_path.iterdir() if p.name != path.name)
    assert epochs  # at least one write completed, and every kill left the last complete one readable


@pytest.mark.parametrize("failure", ["os.replace", "torch.save"])
def test_a_failing_checkpoint_write_leaves_no_file_and_a_rerun_is_clean(project, tmp_path, monkeypatch,
                                                                         failure, one_thread):
    """A full disk or a failed rename while saving: the run stops with the error, no ``checkpoint_*.pth`` and
    no temporary file remain; the next run starts cleanly and its log has each epoch once."""
    settings = PretrainSettings(epochs=2, iters_per_epoch=1, batch_size=BATCH, audit_samples=0, probe_samples=0,
                                eval_batches=1)
    kwargs = dict(results_root=tmp_path, preprocessed_root=project.env["nnUNet_preprocessed"])
    folder = pretrain_folder(project, tmp_path)
    if failure == "os.replace":
        real_replace = checkpoint_module.os.replace

        def replace(src, dst):
            if Path(dst).name.startswith("checkpoint_"):
                raise OSError(28, "No space left on device (simulated)")
            real_replace(src, dst)

        monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    else:
        def save(obj, f):
            f.write(b"PK\x03\x04 a few bytes of a zip")
            raise OSError(28, "No space left on device (simulated)")

        monkeypatch.setattr(checkpoint_module.torch, "save", save)
    with pytest.raises(OSError, match="simulated"):
        SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", settings, **kwargs).run()
    assert not list(folder.glob("checkpoint_*")) and not list(folder.glob(".*"))
    monkeypatch.undo()
    SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", settings, **kwargs).run()
    assert (folder / "checkpoint_final.pth").is_file()
    assert _epoch_lines(folder) == ["1/2", "2/2"]
