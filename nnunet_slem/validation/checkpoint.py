"""Integrity and shape of a SLeM pretraining checkpoint: its digest, and the types of every field it holds.

``torch.load`` does not verify the zip archive it reads: bytes flipped inside a stored tensor load as other
numbers, without a word. So the writer stores :func:`content_digest` (a sha256 over everything in the
checkpoint, tensors byte for byte, dict keys in a stable order) as ``metadata["sha256"]`` and every reader
recomputes it. A checkpoint written before the digest existed loads with a one-time warning.

The type checks turn what used to be an ``AttributeError``/``KeyError``/``size mismatch`` deep in a trainer into
one :class:`CheckpointError` naming the file, the field and the fix.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.files import is_finite_number, is_int, type_name

DIGEST_KEY = "sha256"
REWRITE_FIX = ("Rerun `nnunet-slem pretrain` (with --c to continue a run) to write it again, or copy it again "
               "from where it was made.")
_warned_without_digest: set[str] = set()


class CheckpointError(UserFacingError):
    """A checkpoint that cannot be used; ``problem`` says why without the fix, so that a caller (``--resume``)
    can give its own fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = REWRITE_FIX) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"SLeM checkpoint {path} {problem}. {fix}")


# ------------------------------------------------------------------------------------------------ the digest
def _feed(h: Any, value: Any) -> None:
    """Hash ``value`` with its structure: tensors by dtype, shape and bytes; dicts in sorted key order; lists and
    tuples alike (``torch.save`` keeps the difference, but it carries no meaning here); scalars by ``repr``."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}:".encode() + data)
    else:
        text = repr(value).encode()
        h.update(f"V{len(text)}:".encode() + text)


def content_digest(ckpt: dict) -> str:
    """sha256 over the whole checkpoint except the digest itself (weights, optimizer state, log, metadata)."""
    h = hashlib.sha256()
    meta = ckpt.get("metadata")
    body = dict(ckpt)
    if isinstance(meta, dict):
        body["metadata"] = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    _feed(h, body)
    return h.hexdigest()


def stamp_digest(ckpt: dict) -> dict:
    """``ckpt`` with ``metadata["sha256"]`` set to its :func:`content_digest` (the metadata dict is copied)."""
    ckpt = dict(ckpt)
    ckpt["metadata"] = {k: v for k, v in ckpt["metadata"].items() if k != DIGEST_KEY}
    ckpt["metadata"][DIGEST_KEY] = content_digest(ckpt)
    return ckpt


def verify_digest(ckpt: dict, path: Path) -> None:
    """Refuse a checkpoint whose contents changed after it was written; warn once per file without a digest."""
    stored = ckpt["metadata"].get(DIGEST_KEY)
    if stored is None:
        if str(path) not in _warned_without_digest:
            _warned_without_digest.add(str(path))
            warnings.warn(f"SLeM checkpoint {path} has no {DIGEST_KEY} digest (written before nnunet-slem stored "
                          "one), so damage to its bytes cannot be detected. Pretrain again to get one.",
                          stacklevel=3)
        return
    actual = content_digest(ckpt)
    if stored != actual:
        raise CheckpointError(path, f"fails its integrity check: its contents hash to sha256 {actual[:16]}..., "
                                    f"not the {str(stored)[:16]}... stored when it was written, so its bytes changed "
                                    "afterwards (a disk or copy error, or an edit)")


# ------------------------------------------------------------------------------------------ the fields
def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and all(check(x) for x in v)


def _positive_int(v: Any) -> bool:
    return is_int(v) and v > 0


#: metadata field -> (what it must be, test); checked when present (``require`` lists what a reader needs)
METADATA_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "format_version": ("an integer", is_int),
    "pretext": ("an object (the pretext's state)", lambda v: isinstance(v, dict)),
    "pretext_name": ("a string", lambda v: isinstance(v, str)),
    "num_input_channels": ("a positive integer", _positive_int),
    "channel_names": ("a list of strings", _list_of(lambda x: isinstance(x, str))),
    "patch_size": ("a list of positive integers", _list_of(_positive_int)),
    "spacing": ("a list of finite positive numbers", _list_of(lambda x: is_finite_number(x) and x > 0)),
    "normalization_schemes": ("a list of strings", _list_of(lambda x: isinstance(x, str))),
    "cfb_config": ("an object", lambda v: isinstance(v, dict)),
    "settings": ("an object", lambda v: isinstance(v, dict)),
    "trained_prefixes": ("a list of strings", _list_of(lambda x: isinstance(x, str))),
    "dataset_name": ("a string", lambda v: isinstance(v, str)),
    "plans_name": ("a string", lambda v: isinstance(v, str)),
    "configuration": ("a string", lambda v: isinstance(v, str)),
    "num_images": ("a non-negative integer or null", lambda v: v is None or (is_int(v) and v >= 0)),
    "audit": ("an object or null", lambda v: v is None or isinstance(v, dict)),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type_name(value)} ({text[:40]}{'...' if len(text) > 40 else ''})"


def _check_state_dict(ckpt: dict, key: str, path: Path) -> None:
    weights = ckpt[key]
    if not isinstance(weights, dict):
        raise CheckpointError(path, f"has '{key}' of type {type_name(weights)}, not a dict of tensors")
    for name, tensor in weights.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(path, f"has an entry {name!r} in '{key}' that is {type_name(tensor)}, not a tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(path, f"has NaN or Inf values in tensor '{name}' of '{key}' (a diverged run, or "
                                        "damage); fine-tuning from it would train on NaN")


def validate_checkpoint(ckpt: Any, path: Path, format_version: int) -> dict:
    """The structure every reader relies on: a dict with ``network_weights`` (tensors, finite) and ``metadata``
    (a dict of ``format_version``, the one this package reads), the digest, and the type of every known field
    present."""
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt or "metadata" not in ckpt:
        raise CheckpointError(path, "is not a SLeM pretraining checkpoint (no 'network_weights'/'metadata')",
                              "Point to a checkpoint written by `nnunet-slem pretrain`.")
    meta = ckpt["metadata"]
    if not isinstance(meta, dict):
        raise CheckpointError(path, f"has 'metadata' of type {type_name(meta)}, not a dict")
    version = meta.get("format_version")
    if version != format_version:
        raise CheckpointError(path, f"has checkpoint format {version!r}; this nnunet-slem reads format "
                                    f"{format_version}", "Pretrain again with this version.")
    verify_digest(ckpt, path)
    for key, (what, ok) in METADATA_FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(path, f"has metadata field '{key}' = {_shown(meta[key])}; it must be {what}")
    for key in ("network_weights", "head_weights"):
        if key in ckpt:
            _check_state_dict(ckpt, key, path)
    if "epoch" in ckpt:
        epoch = ckpt["epoch"]
        scheduled = meta.get("settings", {}).get("epochs")
        if not is_int(epoch) or epoch < 0:
            raise CheckpointError(path, f"has 'epoch' = {_shown(epoch)}; it must be a non-negative integer")
        if is_int(scheduled) and epoch > scheduled:
            raise CheckpointError(path, f"has 'epoch' = {epoch}, beyond the {scheduled} epochs its run was "
                                        "scheduled for")
    for key, what, ok in (("optimizer_state", "a dict", lambda v: isinstance(v, dict)),
                          ("grad_scaler_state", "a dict or null", lambda v: v is None or isinstance(v, dict)),
                          ("logging", "a dict of lists",
                           lambda v: isinstance(v, dict) and all(isinstance(x, list) for x in v.values()))):
        if key in ckpt and not ok(ckpt[key]):
            raise CheckpointError(path, f"has '{key}' = {_shown(ckpt[key])}; it must be {what}")
    return ckpt


def require_fields(ckpt: dict, path: Path, metadata: Iterable[str] = (), top: Iterable[str] = (),
                   purpose: str = "this") -> None:
    """Refuse a checkpoint that lacks a field ``purpose`` needs (``metadata`` keys, ``top``-level keys)."""
    missing = [f"'{k}'" for k in top if k not in ckpt] + [
        f"metadata '{k}'" for k in metadata if k not in ckpt["metadata"]]
    if missing:
        raise CheckpointError(path, f"lacks {', '.join(missing)}, which {purpose} needs")
