"""Masked-image-modelling pretext (MAE): hide most of the patch in cubes and reconstruct it with the whole U-Net.

The baseline is the convolutional MAE of Wald et al., "Revisiting MAE pre-training for 3D medical image
segmentation" (CVPR 2025; code: MIC-DKFZ/nnssl), itself He et al.'s MAE (CVPR 2022) carried over to 3D CNNs.
What one call does to a batch ``images`` of shape ``(N, M, *spatial)``:

1. cut the patch into a grid of near-equal cubes (:func:`cube_grid`) and mask ``round(mask_ratio * cubes)`` of
   them, chosen uniformly without replacement (a random permutation, as in MAE): exactly the same count in
   every sample, so the loss weight of a sample does not depend on its draw;
2. set the masked voxels to 0 in the inputs (nnU-Net's z-scored intensities have mean 0 there, so the fill
   value is the "nothing known" level, as in nnssl's dense MAE);
3. return ``(masked inputs (N, M, *S), targets (N, 2M, *S))`` with targets = the unmasked images, then the
   mask (1 = masked) per channel, concatenated along channels: the pretraining loop moves, splits and chunks
   inputs and targets along the batch axis only, so whatever :meth:`MAEPretext.loss` needs has to travel in
   the targets.

The model is :class:`~nnunet_slem.pretrain.model.PretextSegmenter` (pretext kind ``"dense"``): the whole U-Net
with one output channel per modality (``num_classes = M``), decoder included, so fine-tuning receives a trained
decoder too (its final 1x1 layer is replaced). :meth:`MAEPretext.loss` is the L2 reconstruction error on the
masked voxels only (the mean over masked voxels and channels): copying the visible voxels through is free and
teaches nothing. The score (:attr:`MAEPretext.metric_name` ``"masked R2"``) is 1 - normalised MSE on the
masked voxels: 1 is a perfect reconstruction, 0 is as good as predicting each channel's mean over its masked
voxels (the chance line), negative is worse; it is comparable across datasets and intensity scales, unlike
the raw MSE.

**Cube geometry.** ``cube`` (16, Wald et al.'s block edge) is a target edge, scaled to the patch: an axis of
``P`` voxels is cut into ``min(P, max(min_cubes_per_axis, ceil(P / cube)))`` cells whose edges differ by at
most one voxel (voxel ``v`` belongs to cell ``floor(v * cells / P)``). So a 160-voxel axis gets 10 cubes of 16
voxels as in the paper, a 128-voxel one 8 of 16, a 40-voxel one 4 of 10 (3 cubes of about 13 would leave a
CPU patch with 27 cubes), a 16-voxel one 4 of 4, never cells below one voxel. Cubes tile the patch exactly:
no remainder stays unmasked by construction.

**Masks per modality.** ``per_modality_masks=False`` (default) draws one mask for all channels, as Wald et al.
and nnssl do (their mask has one channel): the network reconstructs every modality from the visible context
alone. ``True`` draws an independent mask per modality (Vox-MMSD, BrainMVP style): a voxel hidden in one
modality is often visible in another, so the task becomes partly cross-modal synthesis. The default stays
with the published baseline: the comparison is meant to measure MAE as published against SLeM's cross-modal
pretext, and which variant transfers better is a fine-tuning question no cheap measurement answers (the
pretext loss of the two variants is not comparable: the cross-modal one is easier by design).

**Randomness.** A call draws ``N * G`` rows of uniforms (``G`` = 1 shared or ``M`` per-modality masks) from the
``torch.Generator`` passed in, on the CPU, and moves the mask to the images' device. The pretraining loop gives
each sample its own generator seeded by ``(seed, epoch, step, index)``, so a sample's mask depends only on that
key: a resumed run replays exactly the masks an uninterrupted one would have drawn.

Deviations from Wald et al. (details in docs/baselines.md): the network is the one fine-tuning uses (the plans'
U-Net, with the CFB for ``SLeMTrainer_fromMAE``), not ResEnc-L; dense convolutions on zero-filled inputs (their
plain MAE; their best model, S3D, adds SparK-style sparse convolutions and a learned mask token); the shared
pretraining loop's patch size, optimiser and schedule, not their 160^3 patches and 1000 x 250 steps; cubes
scaled to small patches (above).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import StoredConfig
from nnunet_slem.pretext.checks import check_image_batch, check_state_version

__all__ = ["MAEConfig", "MAEPretext", "cube_grid", "cube_index", "masked_r2"]

STATE_FORMAT_VERSION = 1
_EPS = 1e-6


@dataclass
class MAEConfig(StoredConfig):
    """Everything that defines the masking task; stored in pretraining checkpoints via :meth:`to_dict`.

    Attributes:
        mask_ratio: fraction of the cubes masked per sample (Wald et al. and He et al.: 0.75).
        cube: target cube edge in voxels (Wald et al.: 16), scaled to the patch (module docstring).
        min_cubes_per_axis: lower bound on the cubes per axis, so small (CPU) patches still get several.
        per_modality_masks: an independent mask per modality (cross-modal reconstruction) instead of one mask
            shared by all channels (the published MAE).
        seed: recorded with the task; the random draws come from the generator the loop passes.
    """

    stored_as = "MAE pretext"

    mask_ratio: float = 0.75
    cube: int = 16
    min_cubes_per_axis: int = 4
    per_modality_masks: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, (int, float)) \
                or not 0.0 < self.mask_ratio < 1.0:
            raise PretextConfigError(
                f"mask_ratio must be a fraction strictly between 0 and 1, got {self.mask_ratio!r} (default 0.75)."
            )
        self.mask_ratio = float(self.mask_ratio)
        for name in ("cube", "min_cubes_per_axis"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1:
                raise PretextConfigError(f"{name} must be a positive integer number of voxels/cubes, got {value!r}.")
            setattr(self, name, int(value))
        if not isinstance(self.per_modality_masks, bool):
            raise PretextConfigError(
                f"per_modality_masks must be true or false, got {self.per_modality_masks!r}; e.g. "
                "--pretext-option per_modality_masks=true."
            )



def masked_r2(output: Tensor, images: Tensor, masks: Tensor) -> tuple[Tensor, int]:
    """``(sum of the samples' R2 over their masked voxels, samples counted)`` for ``(N, C, *S)`` float tensors
    (``masks`` 0/1): per sample ``1 - SSE / SST`` with channels pooled and SST about each channel's mean over its
    masked voxels; samples whose masked voxels are constant in every channel have no meaningful R2 and are left
    out of the count. Shared by the dense reconstruction pretexts (MAE, reconstructive SLeM)."""
    dims = tuple(range(2, images.ndim))
    means = (images * masks).sum(dim=dims, keepdim=True) / masks.sum(dim=dims, keepdim=True).clamp_min(1.0)
    sse = ((output - images) ** 2 * masks).flatten(1).sum(1)
    sst = ((images - means) ** 2 * masks).flatten(1).sum(1)
    valid = sst > _EPS * masks.flatten(1).sum(1).clamp_min(1.0)
    r2 = 1.0 - sse / sst.clamp_min(_EPS)
    return torch.where(valid, r2, torch.zeros_like(r2)).sum(), int(valid.sum())


def cube_grid(patch_size: Sequence[int], cube: int, min_cubes_per_axis: int) -> tuple[int, ...]:
    """Cubes per axis: ``min(P, max(min_cubes_per_axis, ceil(P / cube)))`` for an axis of ``P`` voxels."""
    return tuple(min(int(p), max(min_cubes_per_axis, math.ceil(int(p) / cube))) for p in patch_size)


def cube_index(size: int, cells: int) -> Tensor:
    """For each of ``size`` voxels along an axis, the index of its cell among ``cells`` near-equal cells."""
    return torch.arange(size) * cells // size


class MAEPretext:
    """Masks cubes of the patch and scores the U-Net's reconstruction of the masked voxels."""

    name: ClassVar[str] = "mae"
    kind: ClassVar[str] = "dense"
    metric_name: ClassVar[str] = "masked R2"
    extra_channels: ClassVar[int] = 0

    def __init__(self, config: MAEConfig, num_modalities: int, spatial_dims: int) -> None:
        if num_modalities < 1:
            raise PretextConfigError(f"the MAE pretext needs at least one modality, got {num_modalities}.")
        if spatial_dims not in (2, 3):
            raise PretextConfigError(
                f"the MAE pretext supports 2D and 3D patches, got {spatial_dims} spatial dimensions; use a 2d or "
                "3d configuration."
            )
        self.config = config
        self.num_modalities = int(num_modalities)
        self.spatial_dims = int(spatial_dims)

    @property
    def num_classes(self) -> int:
        """One reconstruction channel per modality."""
        return self.num_modalities

    @property
    def chance(self) -> float:
        """The score of predicting each channel's mean over its masked voxels."""
        return 0.0

    def grid(self, patch_size: Sequence[int]) -> tuple[int, ...]:
        """Cubes per axis for this patch size (:func:`cube_grid`)."""
        return cube_grid(patch_size, self.config.cube, self.config.min_cubes_per_axis)

    def extra_input(self, preprocessed_base: Path, data_identifier: str) -> None:
        """The MAE pretext needs the images only."""
        return None

    def num_masked(self, num_cubes: int) -> int:
        """Masked cubes per mask: ``round(mask_ratio * cubes)``, at least one and leaving at least one visible."""
        return min(num_cubes - 1, max(1, round(self.config.mask_ratio * num_cubes)))

    def check_patch(self, patch_size: tuple[int, ...]) -> None:
        """Raise :class:`PretextConfigError` unless the patch holds at least two cubes (one masked, one visible)."""
        patch_size = tuple(int(p) for p in patch_size)
        if len(patch_size) != self.spatial_dims:
            raise PretextConfigError(
                f"the MAE pretext was built for {self.spatial_dims}D patches, got the patch size {patch_size}."
            )
        if math.prod(self.grid(patch_size)) < 2:
            raise PretextConfigError(
                f"the patch {patch_size} holds a single masking cube; the MAE pretext needs at least two. Use a "
                "configuration with a larger patch size, or --pretext-option cube=... smaller."
            )

    # ------------------------------------------------------------------------------------------- masking
    def _check_images(self, images: Tensor) -> None:
        check_image_batch(images, self.num_modalities, self.spatial_dims)

    def masks(self, n: int, spatial: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """Boolean masks ``(n, M, *spatial)`` (True = masked) on the CPU, drawn from ``generator``.

        Every sample draws ``G`` rows of uniforms over the cubes (``G`` = 1, or ``M`` with per-modality masks)
        whose ``num_masked`` smallest are masked; a shared mask is expanded to all channels afterwards."""
        spatial = tuple(int(s) for s in spatial)
        grid = self.grid(spatial)
        num_cubes = math.prod(grid)
        groups = self.num_modalities if self.config.per_modality_masks else 1
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, groups, num_cubes), generator=generator, device=gen_device, dtype=torch.float64).cpu()
        ranks = u.argsort(dim=-1).argsort(dim=-1)
        cube_masks = (ranks < self.num_masked(num_cubes)).reshape(n, groups, *grid)
        for axis, (size, cells) in enumerate(zip(spatial, grid)):
            cube_masks = cube_masks.index_select(2 + axis, cube_index(size, cells))
        return cube_masks.expand(n, self.num_modalities, *spatial)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(masked inputs (N, M, *S), targets (N, 2M, *S))``: targets = ``[images, masks]`` along channels,
        masks as 0/1 in the images' dtype; masked input voxels are 0."""
        self._check_images(images)
        mask = self.masks(images.shape[0], images.shape[2:], generator).to(images.device)
        inputs = torch.where(mask, torch.zeros((), dtype=images.dtype, device=images.device), images)
        return inputs, torch.cat([images, mask.to(images.dtype)], dim=1)

    # ------------------------------------------------------------------------------------- loss and score
    def _split(self, output: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(output, images, masks)`` as float, after checking that the shapes belong together."""
        m = self.num_modalities
        if (output.ndim != targets.ndim or output.shape[1] != m or targets.shape[1] != 2 * m
                or output.shape[0] != targets.shape[0] or output.shape[2:] != targets.shape[2:]):
            raise ValueError(
                f"expected an (N, {m}, *S) reconstruction and (N, {2 * m}, *S) targets (images, then masks), got "
                f"{tuple(output.shape)} and {tuple(targets.shape)}."
            )
        return output.float(), targets[:, :m].float(), targets[:, m:].float()

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        """Mean squared reconstruction error over the masked voxels and channels (the visible ones count 0)."""
        output, images, masks = self._split(output, targets)
        return ((output - images) ** 2 * masks).sum() / masks.sum().clamp_min(1.0)

    def score(self, output: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``(sum of the samples' masked R2, number of samples with non-constant masked voxels)``.

        A sample's masked R2 is ``1 - SSE / SST`` over its masked voxels, channels pooled, with SST about each
        channel's mean over its masked voxels. Samples whose masked voxels are constant in every channel (all
        background) have no meaningful R2 and are left out of the count."""
        with torch.no_grad():
            return masked_r2(*self._split(output.detach(), targets))

    # ---------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """JSON- and ``weights_only``-safe: the format version, the config dict, M and the dimensionality."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "num_modalities": self.num_modalities,
            "spatial_dims": self.spatial_dims,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> MAEPretext:
        """Inverse of :meth:`state_dict`."""
        check_state_version(d, STATE_FORMAT_VERSION, "MAE pretext")
        return cls(MAEConfig.from_dict(d["config"]), num_modalities=int(d["num_modalities"]),
                   spatial_dims=int(d["spatial_dims"]))
