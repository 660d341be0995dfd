"""What a comparison's run records hold beyond the Dice: where a run started from and how it trained.

Kept apart from :mod:`nnunet_slem.experiments.comparison` (which runs the comparison) so the record's provenance
fields have one home: ``pretrained_from`` (:func:`checkpoint_identity`), ``validation_curve``
(:func:`validation_curve`), and the pretraining summary of ``results.md`` (:func:`pretraining_notes`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from nnunet_slem.checkpoint_format import load_checkpoint
from nnunet_slem.errors import UserFacingError
from nnunet_slem.experiments.methods import describe_options


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_identity(checkpoint: Path, pretrain_seed: int | None) -> dict:
    """Which pretraining a run started from: its seed, file and sha256 (two runs sharing a sha256 share the
    pretraining, so the seeds behind an interval can be counted), and its size and speed
    (:func:`pretraining_facts`), so the scaling report needs no pretraining folder."""
    return {"pretrain_seed": pretrain_seed, "path": str(checkpoint), "sha256": file_sha256(checkpoint),
            "pretraining": pretraining_facts(checkpoint)}


def pretraining_facts(checkpoint: Path) -> dict | None:
    """What a pretraining cost and saw: ``samples`` (crops: epochs x iterations x batch, over all processes),
    ``images`` (training images plus the unlabelled pool), ``wall_s`` (the epochs' summed times: no preprocessing,
    audit or probes) and ``samples_per_s`` (median over epochs, so one epoch slowed by another process on the
    machine does not set the figure). ``None`` for a checkpoint that cannot be read."""
    import numpy as np

    try:
        ckpt = load_checkpoint(checkpoint)
    except (UserFacingError, OSError):
        return None
    meta, log = ckpt["metadata"], ckpt["logging"]
    settings = meta["settings"]
    batch = meta.get("global_batch_size") or settings.get("batch_size")  # older checkpoints: the setting only
    return {"samples": int(settings["epochs"] * settings["iters_per_epoch"] * batch) if batch else None,
            "images": meta.get("num_images"), "epochs": int(ckpt["epoch"]),
            "wall_s": float(np.sum(log["epoch_time_s"])) if log.get("epoch_time_s") else None,
            "samples_per_s": float(np.median(log["samples_per_s"])) if log.get("samples_per_s") else None}


def check_same_pretraining(record: dict, checkpoint: Path | None, where: Path) -> None:
    """Refuse to reuse a fine-tuning (its ``record``, or its fold folder) that started from another pretraining than
    ``checkpoint``, the one this comparison would start it from now (e.g. after the pool or the pretraining
    schedule changed): compared by sha256 where the record has one, else by path."""
    source = record.get("pretrained_from") or {}
    if checkpoint is None or not source:
        return
    same = (source["sha256"] == file_sha256(checkpoint) if source.get("sha256")
            else Path(source["path"]).resolve() == Path(checkpoint).resolve())
    if not same:
        raise UserFacingError(f"{where} was fine-tuned from the pretraining {source['path']}, but this comparison "
                              f"starts that arm from {checkpoint}. Give this comparison another --out folder, or "
                              f"delete {where} (and that run's nnUNet_results folder) to fine-tune it again.")


def check_pretraining_matches(checkpoint: Path, requested: dict[str, int | None]) -> None:
    """Refuse to reuse a finished pretraining whose schedule differs from the one asked for (``requested``: epochs,
    iters_per_epoch, batch_size; ``None`` accepts any): its folder is named by the pretext and its options, not by
    the schedule, so a 20-epoch checkpoint would otherwise stand in for a 160-epoch one."""
    meta = load_checkpoint(checkpoint)["metadata"]
    used = {**meta["settings"], "batch_size": meta.get("global_batch_size") or meta["settings"].get("batch_size")}
    differ = {k: (used.get(k), v) for k, v in requested.items() if v is not None and used.get(k) != v}
    if differ:
        found = ", ".join(f"{k} {have} (asked: {want})" for k, (have, want) in differ.items())
        raise UserFacingError(f"{checkpoint} was pretrained with {found}. Give this comparison another --out "
                              "folder, or move that pretraining folder away to pretrain again.")


def validation_curve(fold_dir: Path) -> list[float] | None:
    """nnU-Net's per-epoch validation pseudo-Dice of a finished fine-tuning (``None`` where it is not stored)."""
    final = fold_dir / "checkpoint_final.pth"
    if not final.is_file():
        return None
    import torch

    logging = torch.load(final, map_location="cpu", weights_only=False).get("logging", {})
    return [float(v) for v in logging.get("mean_fg_dice", [])] or None


def pretraining_notes(checkpoints: dict) -> str:
    lines = ["Pretraining checkpoints:"]
    for (pretext, cfb, options, pretrain_seed), path in checkpoints.items():
        try:
            ckpt = load_checkpoint(path)
            log = ckpt["logging"]
            score = f", final held-out pretext score {log['eval_acc'][-1]:.3f}" if log["eval_acc"] else ""
            variant = f" {describe_options(options)}" if options else ""
            lines.append(f"- {pretext}{variant}{'' if cfb else ' (no CFB)'} seed {pretrain_seed}: {ckpt['epoch']} "
                         f"epochs{score} ({path})")
        except UserFacingError as e:
            lines.append(f"- {pretext} seed {pretrain_seed}: unreadable ({e})")
    return "\n".join(lines) + "\n"
