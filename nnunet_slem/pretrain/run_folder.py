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
from nnunet_slem.checkpoint_format import check_architecture, load_checkpoint, save_checkpoint_file
from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.base import Pretext
from nnunet_slem.validation.checkpoint import CheckpointError, require_fields
from nnunet_slem.validation.files import brief, not_a_file_reason
from nnunet_slem.validation.places import check_output_dir

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
        ``resume``, and refuses a directory, a symlink loop or anything else that is not a file in a checkpoint's
        place (a fresh start would delete or trip over it). Cheap: the ``-num_gpus`` launcher calls it before
        starting any process."""
        self.check()
        existing = self.latest if self.latest.is_file() else self.final if self.final.is_file() else None
        if existing is not None and not resume:
            raise UserFacingError(
                f"{existing} exists already. Add --c to continue that run, or move the folder "
                f"{self.path} away to start over."
            )
        return existing

    def check(self) -> None:
        """Before anything is written: the run folder can be created and written, and every file of a run that
        exists in it (checkpoints, log, config) is a readable file. Nothing is changed here."""
        check_output_dir(self.path, "pretraining run folder", "point nnUNet_results at a writable folder")
        if not self.path.is_dir():
            return
        for path in (self.latest, self.final, self.path / LOG_NAME, self.path / CONFIG_NAME):
            reason = not_a_file_reason(path)
            if reason is not None and reason != "does not exist":
                raise UserFacingError(f"{path} {reason}, where this run keeps its {path.name}. Move it away (it is "
                                      "not something nnunet-slem wrote) and run the same command again.")
        log = self.path / LOG_NAME
        if log.is_file():
            try:
                log.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UserFacingError(f"Cannot read the run's log {log} ({brief(e)}). Move it away (a new log is "
                                      "started) and run the same command again.") from e

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
    save_checkpoint_file({
        "network_weights": model.network.state_dict(),
        "head_weights": model.head.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "logging": log,
        "metadata": meta,
    }, path)


def read_resumable(path: Path, model: nn.Module, pretext: Pretext, device: torch.device,
                   epochs: int, channels: list[str], dataset_json: Path) -> dict:
    """The whole checkpoint, validated for resuming before anything is changed: readable, intact (digest),
    every field a resume needs of the right type, the channels ``dataset_json`` lists now (``channels``), the
    same pretext, tensors shaped as this run's network and head, and an epoch within ``epochs``."""
    try:
        ckpt = load_checkpoint(path, map_location=device)
        require_fields(ckpt, path, metadata=("pretext",),
                       top=("head_weights", "optimizer_state", "epoch", "logging"), purpose="--resume")
    except CheckpointError as e:
        raise UserFacingError(
            f"Cannot resume from {path} ({e.problem}). Checkpoints are written atomically, so the file was damaged "
            "or replaced afterwards. Move it away and run the same command again (--resume continues from the "
            "other checkpoint if one is left, else the run starts over)."
        ) from e
    saved_channels = ckpt["metadata"].get("channel_names", channels)
    if saved_channels != channels:
        raise UserFacingError(
            f"{dataset_json} lists the channels {channels} (channel_names), but the run in {path.parent} was "
            f"pretrained on {saved_channels}. Restore channel_names in dataset.json (edited since the run started?), "
            "or start a new run in another results folder."
        )
    saved = ckpt["metadata"]["pretext"]
    if saved != pretext.state_dict() or ckpt["metadata"].get("pretext_name", "slem") != pretext.name:
        raise UserFacingError(
            f"{path} was written with a different pretext or pretext configuration (e.g. grid, set or seed) than "
            "this command asks for. Resume with the original pretext options, or start a new run in "
            "another results folder."
        )
    # after the pretext: another pretext configuration changes the head's shape, and that is the message to give
    check_architecture(ckpt["network_weights"], model.network.state_dict(), str(path), skip=())
    check_architecture(ckpt["head_weights"], model.head.state_dict(), f"{path} (pretext head)", skip=())
    if ckpt["epoch"] > epochs:
        raise UserFacingError(f"{path} has {ckpt['epoch']} epochs done, more than the {epochs} this command asks "
                              f"for. Pass --epochs {ckpt['epoch']} or more to continue that run.")
    return ckpt


def restore_checkpoint(ckpt: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scaler) -> ResumedState:
    """Load the weights, optimizer moments and grad scaler of a checkpoint :func:`read_resumable` accepted, in
    place. No RNG state is needed: every sample is seeded by its own (seed, epoch, step, index) key."""
    model.network.load_state_dict(ckpt["network_weights"])
    model.head.load_state_dict(ckpt["head_weights"])
    optimizer.load_state_dict(ckpt["optimizer_state"])
    if scaler is not None and ckpt.get("grad_scaler_state"):
        scaler.load_state_dict(ckpt["grad_scaler_state"])
    return ResumedState(epoch=int(ckpt["epoch"]), log={k: list(v) for k, v in ckpt["logging"].items()},
                        audit=ckpt["metadata"].get("audit"))
