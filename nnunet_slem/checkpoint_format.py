"""The SLeM pretraining checkpoint format: where it lives, how it is written and read, and the compatibility
check. A leaf module: the pretraining loop (``nnunet_slem.pretrain``) writes this format, the fine-tuning trainers
(``nnunet_slem.trainers``) and the experiments read it, and all of them import it from here, downward.

Format (``torch.load(path, weights_only=True)`` loads it; nothing in it needs pickled classes). The keys are
exactly those the pretraining loop writes (``nnunet_slem.pretrain.run_folder.save_checkpoint``):

- ``network_weights``: the full state dict of the network ``SLeMTrainer`` builds from the same plans
  (so nnU-Net's stock ``-pretrained_weights`` accepts it too);
- ``head_weights``: the pretext classification head (empty for dense pretexts, whose head is the decoder);
- ``optimizer_state``, ``grad_scaler_state`` (``None`` off CUDA), ``logging``, ``epoch``: what ``--resume``
  needs (no RNG state: every sample is seeded by its own key);
- ``metadata``: ``format_version`` (:data:`FORMAT_VERSION`), the nnunet_slem / nnunetv2 / torch versions,
  ``plans_name``, ``configuration``, the fields of :func:`data_metadata` (dataset, channel count and names, patch
  size, spacing, normalisation), ``architecture``, ``cfb_config`` and ``cfb_stage``, ``pretext_name`` and
  ``pretext`` (its state, e.g. its assignment set), ``settings``, ``global_batch_size`` (the batch actually used),
  ``num_images`` (with ``unlabeled_pool``: the pool's identity, or ``None``), ``audit``, and
  ``trained_prefixes``: the state-dict prefixes of the parts the pretext trained (:func:`pretrained_prefixes`),
  and ``sha256``: the digest of everything else (:func:`save_checkpoint_file`; verified on every load).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from nnunet_slem.atomic import write_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.checkpoint import CheckpointError, stamp_digest, validate_checkpoint
from nnunet_slem.validation.files import brief, not_a_file_reason

FORMAT_VERSION = 1
WEIGHTS_ENV = "SLEM_PRETRAINED_WEIGHTS"
#: ``--pretext`` name -> prefix of its pretraining folder
PRETRAIN_FOLDER_PREFIXES = {"slem": "SLeMPretrain", "taleb": "TalebPretrain", "supervoxel": "SupervoxelPretrain",
                            "mae": "MAEPretrain", "slem_recon": "SLeMReconPretrain"}


#: What checkpoints written before ``trained_prefixes`` was recorded trained, by pretext: the classification
#: pretexts train encoder and CFB (their head is separate), the dense supervoxel pretext the whole U-Net
#: except the segmentation layers.
_LEGACY_TRAINED_PREFIXES = {
    "classification": ("encoder.", "cfb."),
    "dense": ("encoder.", "cfb.", "decoder.stages.", "decoder.transpconvs."),
}
_DENSE_PRETEXTS = ("supervoxel", "mae", "slem_recon")


def pretrained_prefixes(meta: dict) -> tuple[str, ...]:
    """State-dict prefixes of the network parts a checkpoint's pretext actually trained."""
    recorded = meta.get("trained_prefixes")
    if recorded:
        return tuple(recorded)
    kind = "dense" if meta.get("pretext_name", "slem") in _DENSE_PRETEXTS else "classification"
    return _LEGACY_TRAINED_PREFIXES[kind]


def pretrain_folder_name(plans_name: str, configuration: str, pretext: str = "slem", cfb: bool = True) -> str:
    """``SLeMPretrain__<plans>__<configuration>``; another pretext's prefix, ``_noCFB`` for a network without CFB."""
    if pretext not in PRETRAIN_FOLDER_PREFIXES:
        raise UserFacingError(f"Unknown pretext {pretext!r}; known: {', '.join(PRETRAIN_FOLDER_PREFIXES)}.")
    return f"{PRETRAIN_FOLDER_PREFIXES[pretext]}{'' if cfb else '_noCFB'}__{plans_name}__{configuration}"


def pretrain_output_folder(results_root: str | os.PathLike, dataset_name: str, plans_name: str,
                           configuration: str, pretext: str = "slem", cfb: bool = True) -> Path:
    """``$nnUNet_results/<Dataset>/<folder>`` (:func:`pretrain_folder_name`), beside nnU-Net's trainer folders."""
    return Path(results_root) / dataset_name / pretrain_folder_name(plans_name, configuration, pretext, cfb)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    write_atomic(path, lambda f: torch.save(obj, f))


def save_checkpoint_file(ckpt: dict, path: str | os.PathLike) -> None:
    """Write a checkpoint atomically with its digest (``metadata["sha256"]``, see
    :mod:`nnunet_slem.validation.checkpoint`), which every :func:`load_checkpoint` verifies."""
    save_atomic(stamp_digest(ckpt), path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a SLeM checkpoint safely: a missing, truncated, corrupt, altered (digest) or foreign file, or one with
    fields of the wrong type or non-finite weights, gets a :class:`CheckpointError` naming the file and the fix."""
    path = Path(path)
    reason = not_a_file_reason(path)
    if reason is not None:
        raise CheckpointError(path, reason, "Point to a checkpoint file written by `nnunet-slem pretrain`.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated zip files / bad pickles
        raise CheckpointError(path, f"cannot be read ({brief(e)}); the file is truncated or corrupt") from e
    return validate_checkpoint(ckpt, path, FORMAT_VERSION)


def check_architecture(pretrained: dict[str, torch.Tensor], network_state: dict[str, torch.Tensor],
                       source: str, skip: tuple[str, ...] = (".seg_layers.",)) -> None:
    """Hard error unless every non-segmentation tensor of the network is in the checkpoint with its shape."""
    missing, wrong = [], []
    for key, value in network_state.items():
        if any(s in key for s in skip):
            continue
        if key not in pretrained:
            missing.append(key)
        elif tuple(pretrained[key].shape) != tuple(value.shape):
            wrong.append(f"{key}: checkpoint {tuple(pretrained[key].shape)} vs network {tuple(value.shape)}")
    if missing or wrong:
        detail = "; ".join((wrong + [f"missing {k}" for k in missing])[:5])
        raise UserFacingError(
            f"The architecture in {source} does not match the network built from your plans "
            f"({len(missing)} missing, {len(wrong)} mis-shaped tensors; e.g. {detail}). Pretrain with the same "
            "plans and configuration (-p/-c) you fine-tune with."
        )


def check_metadata(meta: dict, expected: dict, source: str) -> list[str]:
    """Compare checkpoint metadata with the fine-tuning side.

    Channel count and channel names (in order) must match: the first convolution's weights are per channel,
    so a different order silently feeds T1 weights with FLAIR. Patch size, spacing and dataset name may
    legitimately differ (pretraining on another cohort), so they only warn.
    """
    for key, what in (("num_input_channels", "channel count"), ("channel_names", "channel names/order")):
        if meta.get(key) != expected.get(key):
            raise UserFacingError(
                f"The {what} of the pretrained checkpoint {source} ({meta.get(key)}) differs from this dataset's "
                f"({expected.get(key)}). Pretrain on images with the same channels in the same order as "
                "dataset.json's channel_names."
            )
    warned = []
    for key in ("dataset_name", "patch_size", "spacing", "normalization_schemes"):
        if meta.get(key) != expected.get(key):
            msg = (f"SLeM checkpoint {source}: {key} {meta.get(key)} differs from the fine-tuning run's "
                   f"{expected.get(key)}")
            warnings.warn(msg, stacklevel=2)
            warned.append(msg)
    return warned


def data_metadata(plans_manager, configuration_manager, dataset_json: dict) -> dict:
    """What pretraining and fine-tuning must agree on, computed the same way on both sides."""
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    return {
        "dataset_name": plans_manager.dataset_name,
        "num_input_channels": len(channels),
        "channel_names": [channels[k] for k in sorted(channels, key=int)],
        "patch_size": [int(p) for p in configuration_manager.patch_size],
        "spacing": [float(s) for s in configuration_manager.spacing],
        "normalization_schemes": list(configuration_manager.normalization_schemes),
    }
