"""Supervoxel pretext: segment a random supervoxel in an augmented copy of the patch, few-shot style.

Self-supervision from pseudo-labels that need no annotation: Ouyang et al., "Self-supervision with superpixels:
training few-shot medical image segmentation without annotation" (ECCV 2020), extended to 3D supervoxels by
Hansen et al., "Anomaly detection-inspired few-shot medical image segmentation through self-supervision with
supervoxels" (MedIA 2022). A pretraining sample is a *(support, query)* pair:

* **support**: the patch, with the mask of one supervoxel picked uniformly among those that cover at least
  ``min_fraction`` of the patch (tiny slivers at the patch border would make a degenerate prototype);
* **query**: an augmented copy of the same patch (random flips of each spatial axis, a random per-channel gamma
  on min-max scaled values plus contrast and brightness: SLeM's :mod:`~nnunet_slem.pretext.intensity_aug`),
  with the mask flipped identically.

The whole U-Net maps each image to a ``embedding_dim``-channel per-voxel embedding (pretext kind ``"dense"``).
:meth:`SupervoxelPretext.loss` is Ouyang's prototype segmentation: masked average pooling of the support's
embedding over the supervoxel (foreground prototype) and over the rest of the patch (background prototype),
query logits ``temperature * cos(embedding, prototype)`` and cross-entropy against the query mask. To segment a
supervoxel it has only seen once, the network has to embed voxels so that those with the same local appearance
and context cluster together, across flips and intensity changes: a representation the decoder and encoder
both learn, which is why the dense pretext pretrains the whole U-Net.

Deviations from Ouyang et al., on purpose or for simplicity:

* no adaptive local prototype pooling (one global background prototype instead of local ones): supervoxels
  are compact here, a single background prototype is what the original few-shot baseline (PANet) used;
* no prototype-alignment regularisation (the reverse query -> support segmentation): it doubles the loss
  computation for a small gain in their ablation;
* support and query come from the same patch (as in Ouyang), only geometry and intensity differ;
* 3D patches (2D works too) and the full U-Net's output as the embedding, not an encoder feature map.

**Supervoxels** (multi-modal 3D SLIC, :mod:`~nnunet_slem.pretext.supervoxel_cache`) are computed once per
case, before pretraining, and cached; the pretraining loader appends the id map as an extra channel
(``extra_channels = 1``), so patches, mirroring and padding treat it like an image channel (padding gives id 0
= no supervoxel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import StoredConfig
from nnunet_slem.pretext.checks import check_state_version
from nnunet_slem.pretext.intensity_aug import intensity_params, intensity_transform
from nnunet_slem.pretext.supervoxel_cache import (
    SUPERVOXEL_ALGORITHM_VERSION,
    SupervoxelCache,
    cache_folder_name,
    plans_spacing,
)

__all__ = [
    "SupervoxelConfig",
    "SupervoxelDraw",
    "SupervoxelPretext",
]

STATE_FORMAT_VERSION = 1
MIN_PATCH_EDGE = 8
_EPS = 1e-6


@dataclass
class SupervoxelConfig(StoredConfig):
    """Everything that defines the supervoxel task; stored in pretraining checkpoints via :meth:`to_dict`.

    Attributes:
        n_segments: approximate number of supervoxels per case (SLIC's ``n_segments``; inside the body mask).
        compactness: SLIC's balance of intensity against spatial distance. Each channel is first mapped from
            its 1st..99th percentile (inside the body) to [0, 1], so this is in units of a channel's robust
            range: moving one supervoxel spacing costs as much as an intensity difference of ``compactness``.
            0.1 fits z-scored MRI, where neighbouring tissues differ by roughly 10-30 % of the robust range
            and noise by a few percent: boundaries between tissues dominate, while noise within a tissue does
            not tear supervoxels apart (1 and above gives near-cubic blocks, 0.01 noise-driven fragments).
        embedding_dim: output channels of the U-Net used as the per-voxel embedding.
        min_fraction: a chosen supervoxel must cover at least this fraction of the patch.
        temperature: scale of the cosine similarities that form the logits (Ouyang et al. use 20).
        seed: recorded with the task; the random draws come from the generator the loop passes.
        flip: random flip of each spatial axis for the query.
        intensity_aug: random per-channel gamma, contrast and brightness for the query.
    """

    stored_as = "supervoxel pretext"

    n_segments: int = 200
    compactness: float = 0.1
    embedding_dim: int = 32
    min_fraction: float = 0.01
    temperature: float = 20.0
    seed: int = 0
    flip: bool = True
    intensity_aug: bool = True

    def __post_init__(self) -> None:
        if int(self.n_segments) != self.n_segments or self.n_segments < 1:
            raise PretextConfigError(f"n_segments must be a positive integer, got {self.n_segments!r}.")
        self.n_segments = int(self.n_segments)
        if not self.compactness > 0:
            raise PretextConfigError(
                f"compactness must be > 0, got {self.compactness!r}; try values on a log scale around 0.1."
            )
        if int(self.embedding_dim) != self.embedding_dim or self.embedding_dim < 2:
            raise PretextConfigError(f"embedding_dim must be an integer >= 2, got {self.embedding_dim!r}.")
        self.embedding_dim = int(self.embedding_dim)
        if not 0.0 <= self.min_fraction < 1.0:
            raise PretextConfigError(
                f"min_fraction must be in [0, 1) of the patch, got {self.min_fraction!r} (default 0.01)."
            )
        if not self.temperature > 0:
            raise PretextConfigError(f"temperature must be > 0, got {self.temperature!r} (Ouyang et al.: 20).")

    def supervoxel_params(self) -> dict:
        """The settings the cached supervoxels depend on (recorded in the cache folder's ``config.json``)."""
        return {
            "n_segments": self.n_segments,
            "compactness": float(self.compactness),
            "algorithm_version": SUPERVOXEL_ALGORITHM_VERSION,
        }



# ------------------------------------------------------------------------------------------------- pretext


@dataclass
class SupervoxelDraw:
    """What one sample drew: the chosen supervoxel (``None``: none qualified) and the query's flipped axes
    (spatial axis numbers, 0-based)."""

    supervoxel: int | None
    flips: tuple[int, ...]


class SupervoxelPretext:
    """Builds (support, query) pairs from patches with a supervoxel channel and scores prototype segmentation."""

    name: ClassVar[str] = "supervoxel"
    kind: ClassVar[str] = "dense"
    metric_name: ClassVar[str] = "query Dice"
    extra_channels: ClassVar[int] = 1

    def __init__(self, config: SupervoxelConfig) -> None:
        self.config = config

    @property
    def num_classes(self) -> int:
        return self.config.embedding_dim

    @property
    def chance(self) -> float | None:
        return None

    def extra_input(self, preprocessed_base: Path, data_identifier: str) -> SupervoxelCache:
        """The extra channel: each case's supervoxel ids, cached in
        ``<preprocessed_base>/slem_supervoxels__<data_identifier>`` (:class:`SupervoxelCache`), computed in
        the spacing of the plans that made that data (:func:`plans_spacing`)."""
        return SupervoxelCache(Path(preprocessed_base) / cache_folder_name(data_identifier), self.config,
                               plans_spacing(preprocessed_base, data_identifier))

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """Raise :class:`PretextConfigError` if the patch is too small for supervoxels to mean anything."""
        patch_size = tuple(int(p) for p in patch_size)
        if len(patch_size) not in (2, 3) or min(patch_size) < MIN_PATCH_EDGE:
            raise PretextConfigError(
                f"the supervoxel pretext needs a 2D or 3D patch of at least {MIN_PATCH_EDGE} voxels per axis, got "
                f"{patch_size}. Use a configuration with a larger patch size (e.g. 3d_fullres or 2d)."
            )

    # --------------------------------------------------------------------------------------------- sampling
    def _check_images(self, images: Tensor) -> None:
        if images.ndim not in (4, 5) or images.shape[1] < 2:
            raise ValueError(
                "expected patches of shape (N, M + 1, *spatial) with M >= 1 modalities, the supervoxel ids last, "
                f"and 2 or 3 spatial axes; got {tuple(images.shape)}."
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating point tensor, got {images.dtype}.")

    def sample(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[SupervoxelDraw]]:
        """Like ``__call__`` but also returns each sample's draws (chosen supervoxel, flipped axes).

        Every sample consumes the same number of random numbers, whether or not a supervoxel qualifies and
        whatever the flags, so the draws of one setting do not shift those of another.
        """
        self._check_images(images)
        n, m, spatial = images.shape[0], images.shape[1] - 1, tuple(images.shape[2:])
        dims = len(spatial)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, 1 + dims + 3 * m), generator=generator, device=gen_device, dtype=torch.float64).cpu()
        ids = images[:, -1].round().to(torch.int64)
        min_count = max(1, math.ceil(self.config.min_fraction * math.prod(spatial)))
        inputs = torch.empty((2 * n, m, *spatial), dtype=images.dtype, device=images.device)
        masks = torch.empty((2 * n, *spatial), dtype=torch.float32, device=images.device)
        draws = []
        for i in range(n):
            values, counts = torch.unique(ids[i], sorted=True, return_counts=True)
            candidates = values[(values > 0) & (counts >= min_count)].cpu()
            chosen = None
            if len(candidates):
                chosen = int(candidates[min(int(u[i, 0] * len(candidates)), len(candidates) - 1)])
            flips = tuple(a for a in range(dims) if self.config.flip and u[i, 1 + a] < 0.5)
            support = images[i, :m]
            mask = (ids[i] == chosen).float() if chosen is not None else torch.full_like(masks[0], -1.0)
            query, query_mask = support, mask
            if flips:
                query = torch.flip(query, dims=[a + 1 for a in flips])
                query_mask = torch.flip(mask, dims=list(flips))
            if self.config.intensity_aug:
                params = intensity_params(u[i, 1 + dims :].reshape(m, 3))  # float64, SLeM's ranges
                compute = torch.promote_types(query.dtype, torch.float32)
                flat = intensity_transform(query.reshape(m, -1).to(compute), params.to(query.device, compute))
                query = flat.reshape(query.shape).to(images.dtype)
            inputs[2 * i], inputs[2 * i + 1] = support, query
            masks[2 * i], masks[2 * i + 1] = mask, query_mask
            draws.append(SupervoxelDraw(supervoxel=chosen, flips=flips))
        return inputs, masks, draws

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(inputs (2N, M, *S), masks (2N, *S))``, interleaved ``[support_0, query_0, support_1, ...]``.

        Masks are 1 on the chosen supervoxel, 0 elsewhere, and -1 for the whole pair when no supervoxel covers
        ``min_fraction`` of the patch (the loss and the score skip such pairs).
        """
        inputs, masks, _ = self.sample(images, generator)
        return inputs, masks

    # ------------------------------------------------------------------------------------- loss and score
    def _query_logits(self, output: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits (N, 2, *S), query masks (N, *S), valid (N,) bool)`` with logits for [background,
        foreground] = ``temperature`` * cosine similarity of each query voxel to the support's prototypes."""
        if output.ndim < 3 or output.shape[0] % 2 or output.shape[0] != masks.shape[0]:
            raise ValueError(
                f"expected (2N, E, *S) output and (2N, *S) masks of (support, query) pairs, got "
                f"{tuple(output.shape)} and {tuple(masks.shape)}."
            )
        output = output.float()
        support, query = output[0::2].flatten(2), output[1::2]  # (N, E, V), (N, E, *S)
        support_mask, query_mask = masks[0::2].flatten(1).float(), masks[1::2]
        valid = support_mask.amin(dim=1) >= 0
        fg = support_mask.clamp(0, 1)  # invalid pairs (-1) become all background: finite, then ignored
        bg = 1.0 - fg
        fg_proto = torch.einsum("nev,nv->ne", support, fg) / fg.sum(1, keepdim=True).clamp_min(_EPS)
        bg_proto = torch.einsum("nev,nv->ne", support, bg) / bg.sum(1, keepdim=True).clamp_min(_EPS)
        prototypes = nn.functional.normalize(torch.stack([bg_proto, fg_proto], dim=1), dim=2, eps=_EPS)
        query = nn.functional.normalize(query, dim=1, eps=_EPS)
        logits = self.config.temperature * torch.einsum("nce,ne...->nc...", prototypes, query)
        return logits, query_mask, valid

    def loss(self, output: Tensor, masks: Tensor) -> Tensor:
        """Mean cross-entropy of the query segmentation over valid pairs (0 with a gradient path if none)."""
        logits, query_mask, valid = self._query_logits(output, masks)
        target = query_mask.clamp_min(0).round().long()
        per_pair = nn.functional.cross_entropy(logits, target, reduction="none").flatten(1).mean(1)
        per_pair = torch.where(valid, per_pair, torch.zeros_like(per_pair))
        return per_pair.sum() / valid.sum().clamp_min(1) + 0.0 * output.sum()

    def score(self, output: Tensor, masks: Tensor) -> tuple[Tensor, int]:
        """``(sum of the queries' foreground Dice over valid pairs, number of valid pairs)``."""
        with torch.no_grad():
            logits, query_mask, valid = self._query_logits(output.detach(), masks)
            pred = (logits[:, 1] > logits[:, 0]).flatten(1).float()
            truth = query_mask.flatten(1).clamp_min(0)
            dice = 2 * (pred * truth).sum(1) / (pred.sum(1) + truth.sum(1)).clamp_min(_EPS)
            return torch.where(valid, dice, torch.zeros_like(dice)).sum(), int(valid.sum())

    # ---------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """JSON- and ``weights_only``-safe: the format version and the config dict."""
        return {"format_version": STATE_FORMAT_VERSION, "config": self.config.to_dict()}

    @classmethod
    def from_state_dict(cls, d: dict) -> SupervoxelPretext:
        """Inverse of :meth:`state_dict`."""
        check_state_version(d, STATE_FORMAT_VERSION, "supervoxel pretext")
        return cls(SupervoxelConfig.from_dict(d["config"]))
