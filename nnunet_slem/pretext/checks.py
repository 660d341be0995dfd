"""Input and checkpoint checks that several pretexts share, so their error messages say the same thing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nnunet_slem.pretext.assignments import PretextConfigError

__all__ = ["as_labels", "check_image_batch", "check_state_version"]


def check_image_batch(images: Tensor, num_channels: int, spatial_dims: int) -> None:
    """``ValueError`` unless ``images`` is a floating point ``(N, num_channels, *spatial)`` batch with
    ``spatial_dims`` spatial axes."""
    if images.ndim != 2 + spatial_dims or images.shape[1] != num_channels:
        raise ValueError(
            f"expected images of shape (N, {num_channels}, {spatial_dims} spatial axes), got {tuple(images.shape)}."
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating point tensor, got {images.dtype}.")


def as_labels(labels: Tensor | Sequence[int], n: int, num_classes: int, device: torch.device) -> Tensor:
    """Class labels as a long tensor on ``device``; range-checked unless they already live on an accelerator
    (checking there would force a synchronising round trip to the CPU)."""
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"got {labels.numel()} labels for {n} images.")
    if labels.device.type == "cpu" and n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.tolist()}.")
    return labels.to(device, non_blocking=True)  # a host-to-device copy that does not wait for the GPU


def check_state_version(state: dict, expected: int, what: str) -> None:
    """:class:`PretextConfigError` unless a stored pretext state has ``format_version == expected``: a state
    of another version would rebuild another task under the same name."""
    version = state.get("format_version")
    if version != expected:
        raise PretextConfigError(
            f"the stored {what} state has format_version {version!r}; this version of nnunet-slem reads format "
            f"version {expected}. Pretrain again with this version, or use the nnunet-slem version that wrote the "
            "checkpoint."
        )
