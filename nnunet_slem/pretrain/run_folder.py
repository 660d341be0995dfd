"""The files of one pretraining run's folder, and how they stay consistent when the run is killed.

``checkpoint_latest.pth`` after every epoch, ``checkpoint_final.pth`` at the end (both written atomically, in
the format of :mod:`nnunet_slem.checkpoint_format`), the text log ``pretrain_log.txt`` and
``pretrain_config.json``. A kill at any moment leaves either the previous or the new checkpoint; on resume the
log lines of epochs the checkpoint does not contain are dropped and stale temporary files are removed, so the
folder reads as if the run had never been interrupted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnunet_slem.atomic import write_json_atomic, write_text_atomic
from nnunet_slem.checkpoint_format import load_checkpoint, save_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.base import Pretext

LOG_NAME = "pretrain_log.txt"
CONFIG_NAME = "pretrain_config.json"
_EPOCH_LINE = re.compile(r"^\S+ \S+ epoch (\d+)/\d+ ")


@dataclass
class ResumedState:
    """What a checkpoint hands back to the loop besides the weights and optimizer state it loads in place."""

    epoch: int  # epochs done
    log: dict[str, list]
    audit: dict | None


class RunFolder:
    """``$nnUNet_results/<Dataset>/<Prefix>Pretrain__<plans>__<configuration>`` of one run (only rank 0 writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.final = path / "checkpoint_final.pth"
        self.latest = path / "checkpoint_latest.pth"

    def existing_checkpoint(self, resume: bool) -> Path | None:
        """The checkpoint to resume from (latest, else final), or ``None``; refuses to overwrite without
        ``resume``. Cheap: the ``-num_gpus`` launcher calls it before starting any process."""
        existing = self.latest if self.latest.is_file() else self.final if self.final.is_file() else None
        if existing is not None and not resume:
            raise UserFacingError(
                f"{existing} exists already. Add --resume to continue that run, or move the folder "
                f"{self.path} away to start over."
            )
        return existing

    def prepare(self, start_epoch: int, config: dict) -> None:
        """Before training: the folder, no stale temporaries, a log matching the checkpoint, the config file."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp"):  # left by a kill during an atomic write
            stale.unlink(missing_ok=True)
        self.trim_log(start_epoch)
        write_json_atomic(self.path / CONFIG_NAME, config, default=str)

    def append_log_line(self, line: str) -> None:
        with open(self.path / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

    def trim_log(self, start_epoch: int) -> None:
        """Make the text log agree with the checkpoint being resumed (``start_epoch`` epochs done).

        An epoch's line is written just before its checkpoint, so a kill in between leaves a line for an epoch
        the checkpoint lacks: drop lines of epochs after ``start_epoch``. Without a checkpoint everything in
        the log belongs to an attempt that saved nothing (the audit reruns too): start it afresh. The file is
        rewritten only when something is dropped."""
        path = self.path / LOG_NAME
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [] if start_epoch == 0 else [
            line for line in lines if not ((m := _EPOCH_LINE.match(line)) and int(m[1]) > start_epoch)]
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(kept))


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler, epoch: int,
                    log: dict[str, list], meta: dict) -> None:
    """Weights (network and pretext head), optimizer moments, grad scaler, log and metadata, atomically."""
    save_atomic({
        "network_weights": model.network.state_dict(),
        "head_weights": model.head.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "logging": log,
        "metadata": meta,
    }, path)


def restore_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler, pretext: Pretext,
                       device: torch.device) -> ResumedState:
    """Load weights, optimizer moments and grad scaler in place; refuse a checkpoint of another pretext. No RNG
    state is needed: every sample is seeded by its own (seed, epoch, step, index) key."""
    try:
        ckpt = load_checkpoint(path, map_location=device)
    except UserFacingError as e:
        cause = e.__cause__ or e
        raise UserFacingError(
            f"Cannot resume from {path} ({type(cause).__name__}: {cause}). Checkpoints are written atomically, "
            "so the file was damaged or replaced afterwards. Move it away and run the same command again "
            "(--resume continues from the other checkpoint if one is left, else the run starts over)."
        ) from e
    saved = ckpt["metadata"]["pretext"]
    if saved != pretext.state_dict() or ckpt["metadata"].get("pretext_name", "slem") != pretext.name:
        raise UserFacingError(
            f"{path} was written with a different pretext or pretext configuration (e.g. grid, set or seed) than "
            "this command asks for. Resume with the original pretext options, or start a new run in "
            "another results folder."
        )
    model.network.load_state_dict(ckpt["network_weights"])
    model.head.load_state_dict(ckpt["head_weights"])
    optimizer.load_state_dict(ckpt["optimizer_state"])
    if scaler is not None and ckpt.get("grad_scaler_state"):
        scaler.load_state_dict(ckpt["grad_scaler_state"])
    return ResumedState(epoch=int(ckpt["epoch"]), log={k: list(v) for k, v in ckpt["logging"].items()},
                        audit=ckpt["metadata"].get("audit"))
