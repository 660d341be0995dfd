"""The SLeM pretext: recombine blocks of different modalities and classify which recombination it is.

Design (what one call does to a batch ``images`` of shape ``(N, M, *spatial)``, ``M >= 2`` modalities as
channels, ``spatial`` = ``(X, Y, Z)`` or ``(X, Y)``):

1. **Block grid.** ``config.grid`` gives the number of parts per spatial axis, e.g. ``(2, 2, 1)`` -> ``B = 4``
   blocks, ``(2, 2, 2)`` -> 8, ``(2, 2)`` for 2D. With ``random_unsplit_axis`` each sample applies the grid
   with its axes permuted at random (a random permutation of the grid tuple over the axes), so for
   ``(2, 2, 1)`` the unsplit axis is random and the encoder does not learn that seams are never along Z.
   Only placements that fit the patch are drawn (an anisotropic patch with a short axis keeps that axis
   unsplit); when none fits, a ``ValueError`` names the patch, the grid and the fix. Blocks are numbered in
   C order over the (permuted) grid.
2. **Cut positions.** The uniform cut ``length * k / parts`` is moved per sample and per cut by a uniform
   offset of at most ``jitter * length`` and clipped so every block keeps ``min_block`` voxels along the axis,
   so seams are not at fixed places the network could key on.
3. **Assignment.** The class label ``y`` picks an assignment ``A[y]`` of shape ``(B, M)`` from the fixed set
   built by :func:`~nnunet_slem.pretext.assignments.build_assignment_set`; each row is a permutation of the
   modalities and ``out[n, c, block b] = in[n, A[y][b, c], block b]``. Class 0 is the identity.
4. **Shortcut guards**, applied identically to every class including the identity, so none of them carries
   label information by itself:

   * ``normalization`` per block and channel:

     - ``"rank"`` (default): every value is replaced by its rank within the block and channel (ties share
       their mean rank), mapped through the standard normal quantile function and standardised. Every
       block then has the *same* histogram whatever modality fills it, so the only way to tell modalities
       apart is spatial structure: anatomy and lesions as each sequence shows them, which is the cross-modal
       feature SLeM is after. Z-scoring alone is not enough: on our synthetic BraTS data a logistic regression
       on per-block histograms still solved the z-scored task with 86 % accuracy (chance 4 %), because MRI
       sequences differ in histogram *shape* (``nnunet-slem audit`` measures this on your data).
     - ``"zscore"``: zero mean and unit standard deviation; removes level and spread, keeps shape.
     - ``"none"``: no renormalisation (ablations only; opens the intensity shortcut).
   * ``foreground_only`` (default on): the renormalisation (and the intensity augmentation) acts on the
     block's *foreground* only, the voxels where any channel of the unshuffled sample is non-zero; the
     background stays exactly 0, and (with ``"rank"``/``"zscore"``) a block with less than ``MIN_FOREGROUND``
     of its voxels in the foreground stays all 0. Why: nnU-Net z-scores skull-stripped data inside the non-zero mask
     (``use_mask_for_norm``) and leaves the background at exactly 0. Ranked together with the brain, that
     tie group lands at the quantile of "fraction of brain below 0", which depends on each modality's skew:
     a modality fingerprint (audit accuracy 0.24 on realistic skull-stripped data, 0.95 on the test suite's
     skull-stripped patches, chance 0.04; 0.04 with the fix); the
     brain's spread would also vary with each block's background share, and fine-tuning would see other
     inputs (brain ~ N(0, 1), background 0) than pretraining. The mask is the same for every channel and
     invariant under the channel permutation, so it carries no label information. On data without exact
     zeros the mask is everything and the result is bit for bit the whole-block one. Pretext states saved
     before this option existed rebuild with ``foreground_only=False``, the task those networks learnt.
   * ``seam_band`` (default 0, off): after the shuffle, zero a band of that many voxels centred on every seam
     (:func:`zero_seams`), for experiments on whether the network reads continuity across seams
     (:mod:`nnunet_slem.pretrain.probes` measures it); off by default because cutting the images' continuity
     also cuts the anatomy the encoder is meant to learn from.
   * ``intensity_aug``: per block and channel, a random gamma (log-uniform in [0.7, 1.5]) on the min-max
     scaled values (mapped back to the block's range afterwards), then a random contrast (x0.75..1.25) and
     brightness shift (+-0.1 of the block's range). The gamma perturbs histogram shape, which z-scoring
     leaves as a modality fingerprint. It is skipped with ``"rank"`` normalisation, where a monotonic
     intensity change cannot alter anything.

Everything heavy runs on the device of ``images``; the few random numbers (labels, layouts, augmentation
parameters) come from the ``torch.Generator`` passed in, on the generator's device, and are moved over.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nnunet_slem.pretext.assignments import PretextConfigError, build_assignment_set
from nnunet_slem.pretext.base import ClassificationPretext, config_kwargs

__all__ = [
    "BlockLayout",
    "SLeMPretext",
    "SLeMPretextConfig",
    "default_grid",
    "zero_seams",
]

NORMALIZATIONS = ("rank", "zscore", "none")
GAMMA_RANGE = (0.7, 1.5)
CONTRAST_RANGE = (0.75, 1.25)
BRIGHTNESS_RANGE = (-0.1, 0.1)
_EPS = 1e-6
#: with ``foreground_only``, a block whose foreground is below this fraction of its voxels stays all 0: the ranks
#: of a handful of voxels are noise, and the network should see such a block as the background it is
MIN_FOREGROUND = 0.01
STATE_FORMAT_VERSION = 1


def default_grid(spatial_dims: int) -> tuple[int, ...]:
    """``(2, 2, 1)`` for 3D patches, ``(2, 2)`` for 2D: four blocks either way, as in the SLeM paper."""
    if spatial_dims == 3:
        return (2, 2, 1)
    if spatial_dims == 2:
        return (2, 2)
    raise PretextConfigError(f"SLeM supports 2D and 3D patches, got {spatial_dims} spatial dimensions.")


@dataclass
class SLeMPretextConfig:
    """Everything that defines the pretext task; stored in pretraining checkpoints via :meth:`to_dict`."""

    grid: tuple[int, ...] = (2, 2, 1)
    random_unsplit_axis: bool = True
    num_assignments: int | None = None
    seed: int = 0
    jitter: float = 0.1
    min_block: int = 4
    normalization: str = "rank"
    intensity_aug: bool = True
    foreground_only: bool = True
    seam_band: int = 0

    def __post_init__(self) -> None:
        self.grid = tuple(int(p) for p in self.grid)
        if not self.grid or any(p < 1 for p in self.grid):
            raise PretextConfigError(f"grid must be positive parts per spatial axis, got {self.grid}.")
        if not 0.0 <= self.jitter < 0.5:
            raise PretextConfigError(f"jitter must be in [0, 0.5) of the axis length, got {self.jitter}.")
        if self.min_block < 1:
            raise PretextConfigError(f"min_block must be >= 1 voxel, got {self.min_block}.")
        if self.seam_band < 0:
            raise PretextConfigError(f"seam_band must be >= 0 voxels (0: off), got {self.seam_band}.")
        if self.normalization not in NORMALIZATIONS:
            raise PretextConfigError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}."
            )

    @property
    def num_blocks(self) -> int:
        return math.prod(self.grid)

    def to_dict(self) -> dict:
        """Plain lists/ints/floats/bools (and ``None``): JSON- and ``torch.load(weights_only=True)``-safe."""
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SLeMPretextConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error: they would change the task silently."""
        kwargs = config_kwargs(cls, d, "SLeM pretext")
        if "grid" in kwargs:
            kwargs["grid"] = tuple(kwargs["grid"])
        return cls(**kwargs)


@dataclass
class BlockLayout:
    """One sample's block geometry.

    Attributes:
        axis_order: ``parts[a] == grid[axis_order[a]]``: which grid entry each spatial axis received.
        parts: number of parts along each spatial axis, as used for this sample.
        boundaries: per axis the cut positions including ``0`` and the axis length (``parts[a] + 1`` ints).
    """

    axis_order: tuple[int, ...]
    parts: tuple[int, ...]
    boundaries: tuple[tuple[int, ...], ...]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(b[-1] for b in self.boundaries)

    @property
    def num_blocks(self) -> int:
        return math.prod(self.parts)

    def block_slices(self) -> list[tuple[slice, ...]]:
        """``B`` tuples of per-axis slices, in C order over the grid (first axis slowest)."""
        per_axis = [[slice(b[i], b[i + 1]) for i in range(len(b) - 1)] for b in self.boundaries]
        return list(itertools.product(*per_axis))

    def block_index_map(self) -> np.ndarray:
        """Block number of every voxel (shape ``spatial_shape``), consistent with :meth:`block_slices`."""
        ids = None
        for bounds, stride in zip(self.boundaries, _c_strides(self.parts), strict=True):
            axis_ids = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)) * stride
            ids = axis_ids if ids is None else ids[..., None] + axis_ids
        return ids


def _c_strides(parts: Sequence[int]) -> list[int]:
    return [math.prod(parts[a + 1 :]) for a in range(len(parts))]


def _as_labels(labels: Tensor | Sequence[int], n: int, num_classes: int, device: torch.device) -> Tensor:
    """Labels as a long tensor on ``device``; range-checked unless they already live on an accelerator
    (checking there would force a synchronising round trip to the CPU)."""
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"got {labels.numel()} labels for {n} images.")
    if labels.device.type == "cpu" and n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.tolist()}.")
    return labels.to(device, non_blocking=True)  # a host-to-device copy that does not wait for the GPU


class SLeMPretext(ClassificationPretext):
    """Builds SLeM pretext samples (shuffled multi-modal images and their class labels) on any device."""

    name = "slem"

    def __init__(
        self,
        config: SLeMPretextConfig,
        num_modalities: int,
        spatial_dims: int,
        assignments: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.num_modalities = int(num_modalities)
        self.spatial_dims = int(spatial_dims)
        self._check_grid()
        if assignments is None:
            assignments = build_assignment_set(
                self.num_modalities, config.num_blocks, config.num_assignments, config.seed
            )
        self.assignments: Tensor = self._checked_assignments(assignments)
        self._on_device: dict[torch.device, Tensor] = {}

    # ----------------------------------------------------------------------------------- validation
    def _check_grid(self) -> None:
        if self.spatial_dims not in (2, 3):
            default_grid(self.spatial_dims)  # raises the clear error
        if len(self.config.grid) != self.spatial_dims:
            raise PretextConfigError(
                f"the SLeM block grid {self.config.grid} has {len(self.config.grid)} entries but the data is "
                f"{self.spatial_dims}D; use a grid with one entry per spatial axis, e.g. "
                f"{default_grid(self.spatial_dims)} (default_grid({self.spatial_dims}))."
            )
        if self.num_modalities < 2:
            build_assignment_set(self.num_modalities, self.config.num_blocks)  # raises the clear error

    def _checked_assignments(self, assignments: np.ndarray) -> Tensor:
        a = np.asarray(assignments)
        expected = (self.config.num_blocks, self.num_modalities)
        if a.ndim != 3 or a.shape[1:] != expected or len(a) < 2:
            raise PretextConfigError(
                f"assignments must have shape (K>=2, B, M) = (K, {expected[0]}, {expected[1]}) for grid "
                f"{self.config.grid} and {self.num_modalities} modalities, got {a.shape}."
            )
        if not (np.sort(a, axis=-1) == np.arange(self.num_modalities)).all():
            raise PretextConfigError(
                "every block row of an assignment must be a permutation of the modalities."
            )
        if len(np.unique(a.reshape(len(a), -1), axis=0)) != len(a):
            raise PretextConfigError("assignments must be distinct, else two classes are the same image.")
        return torch.as_tensor(a.astype(np.int64))

    @property
    def num_classes(self) -> int:
        return int(self.assignments.shape[0])

    @property
    def num_blocks(self) -> int:
        return int(self.assignments.shape[1])

    def _assignments_on(self, device: torch.device) -> Tensor:
        if device not in self._on_device:
            self._on_device[device] = self.assignments.to(device)
        return self._on_device[device]

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """Raise :class:`PretextConfigError` naming the fix if no block layout fits the patch."""
        self._feasible_axis_orders(tuple(int(p) for p in patch_size))

    # ------------------------------------------------------------------------------------- layouts
    def _feasible_axis_orders(self, spatial_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        grid, min_block = self.config.grid, self.config.min_block
        orders = (
            list(itertools.permutations(range(len(grid))))
            if self.config.random_unsplit_axis
            else [tuple(range(len(grid)))]
        )
        feasible = [
            o for o in orders if all(size >= grid[o[a]] * min_block for a, size in enumerate(spatial_shape))
        ]
        if not feasible:
            raise PretextConfigError(self._too_small_message(spatial_shape))
        return feasible

    def _too_small_message(self, spatial_shape: tuple[int, ...]) -> str:
        grid, min_block = self.config.grid, self.config.min_block
        placement = " in any axis order" if self.config.random_unsplit_axis else ""
        needed = ", ".join(f"{p} parts need >= {p * min_block} voxels" for p in sorted(set(grid)) if p > 1)
        return (
            f"the patch size {tuple(spatial_shape)} is too small for the SLeM block grid {grid}{placement} "
            f"with min_block={min_block} ({needed} along an axis). Use a larger patch size, a smaller grid "
            f"(e.g. grid=(2, 2, 1) or (2, 2) instead of (2, 2, 2)), or a smaller min_block."
        )

    def sample_layouts(
        self, spatial_shape: Sequence[int], n: int, generator: torch.Generator | None = None
    ) -> list[BlockLayout]:
        """``n`` random block geometries for ``spatial_shape`` patches (axis placement, jittered cuts)."""
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != self.spatial_dims:
            raise ValueError(
                f"spatial shape {spatial_shape} has {len(spatial_shape)} axes; this pretext is "
                f"{self.spatial_dims}D."
            )
        orders = self._feasible_axis_orders(spatial_shape)
        device = generator.device if generator is not None else torch.device("cpu")
        order_idx = torch.randint(len(orders), (n,), generator=generator, device=device).tolist()
        num_cuts = sum(p - 1 for p in self.config.grid)
        offsets = (torch.rand((n, max(num_cuts, 1)), generator=generator, device=device) * 2 - 1).tolist()
        return [self._layout(spatial_shape, orders[o], u) for o, u in zip(order_idx, offsets, strict=True)]

    def _layout(self, spatial_shape: tuple[int, ...], order: tuple[int, ...], u: list[float]) -> BlockLayout:
        parts = tuple(self.config.grid[o] for o in order)
        boundaries, used = [], 0
        for size, p in zip(spatial_shape, parts, strict=True):
            boundaries.append(self._cuts(size, p, u[used : used + p - 1]))
            used += p - 1
        return BlockLayout(axis_order=tuple(order), parts=parts, boundaries=tuple(boundaries))

    def _cuts(self, size: int, parts: int, u: list[float]) -> tuple[int, ...]:
        """Jittered cuts ``size*k/parts + u_k*jitter*size``, clipped so every block keeps ``min_block``."""
        min_block = self.config.min_block
        cuts = [0]
        for k in range(1, parts):
            c = round(size * k / parts + u[k - 1] * self.config.jitter * size)
            lo, hi = cuts[-1] + min_block, size - (parts - k) * min_block
            cuts.append(min(max(c, lo), hi))
        cuts.append(size)
        return tuple(cuts)

    # --------------------------------------------------------------------------------------- apply
    def _check_batch(self, images: Tensor, layouts: Sequence[BlockLayout]) -> None:
        if images.ndim != 2 + self.spatial_dims or images.shape[1] != self.num_modalities:
            raise ValueError(
                f"expected images of shape (N, {self.num_modalities}, {self.spatial_dims} spatial axes), "
                f"got {tuple(images.shape)}."
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating point tensor, got {images.dtype}.")
        if len(layouts) != images.shape[0]:
            raise ValueError(f"got {len(layouts)} layouts for {images.shape[0]} images.")
        for layout in layouts:
            if layout.spatial_shape != tuple(images.shape[2:]) or layout.num_blocks != self.num_blocks:
                raise ValueError(
                    f"layout for shape {layout.spatial_shape} with {layout.num_blocks} blocks does not fit "
                    f"images of spatial shape {tuple(images.shape[2:])} and a {self.num_blocks}-block grid."
                )

    def _aug_params(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``(N, B, M, 3)`` float32: gamma, contrast, brightness per block and output channel."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, self.num_blocks, self.num_modalities, 3), generator=generator, device=gen_device)
        lg0, lg1 = math.log(GAMMA_RANGE[0]), math.log(GAMMA_RANGE[1])
        gamma = torch.exp(lg0 + u[..., 0] * (lg1 - lg0))
        contrast = CONTRAST_RANGE[0] + u[..., 1] * (CONTRAST_RANGE[1] - CONTRAST_RANGE[0])
        brightness = BRIGHTNESS_RANGE[0] + u[..., 2] * (BRIGHTNESS_RANGE[1] - BRIGHTNESS_RANGE[0])
        return torch.stack([gamma, contrast, brightness], dim=-1).to(device, non_blocking=True)

    def apply(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int],
        layouts: Sequence[BlockLayout],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The pretext images for given labels and layouts; the shuffle is deterministic, the guards use
        ``generator`` for the intensity augmentation (if enabled). Returns a new tensor like ``images``."""
        self._check_batch(images, layouts)
        n = images.shape[0]
        labels = _as_labels(labels, n, self.num_classes, images.device)
        perms = self._assignments_on(images.device).index_select(0, labels)  # (N, B, M)
        use_aug = self.config.intensity_aug and self.config.normalization != "rank"
        aug = self._aug_params(n, generator, images.device) if use_aug else None
        guarded = use_aug or self.config.normalization != "none"
        foreground_only = guarded and self.config.foreground_only
        out = torch.empty_like(images)
        for i, layout in enumerate(layouts):
            for b, slices in enumerate(layout.block_slices()):
                index = (i, slice(None), *slices)
                source = images[index]
                block = source.index_select(0, perms[i, b])
                if guarded:
                    # the mask of the unshuffled block: the same for every class, so it carries no label
                    foreground = (source != 0).any(dim=0) if foreground_only else None
                    block = self._guard(block, None if aug is None else aug[i, b], foreground)
                out[index] = block
        if self.config.seam_band:
            zero_seams(out, layouts, self.config.seam_band)
        return out

    def _guard(self, block: Tensor, aug: Tensor | None, foreground: Tensor | None = None) -> Tensor:
        """Intensity augmentation then renormalisation of one ``(M, *block_shape)`` block, per channel.

        ``foreground`` (``block_shape`` bools, or ``None`` for the whole block): the voxels the guards act on;
        the others come out exactly 0 (module docstring). Masked statistics are written so that an all-True
        mask gives the whole-block result bit for bit (``torch.where`` with a full mask is the identity and the
        count corrections ``n / count`` are exactly 1), and without any host synchronisation."""
        compute = torch.promote_types(block.dtype, torch.float32)
        x = block.reshape(block.shape[0], -1).to(compute)
        mask = None if foreground is None else foreground.reshape(1, -1)
        if aug is not None:
            x = _intensity_transform(x, aug.to(compute), mask)
        if self.config.normalization == "rank":
            x = _gaussian_rank(x, mask)
        if self.config.normalization != "none":
            if mask is None:
                mean = x.mean(dim=1, keepdim=True)
                std = x.std(dim=1, unbiased=False, keepdim=True)
            else:
                n = x.shape[1]
                count = mask.sum(dtype=compute).clamp_min(1)
                mean = torch.where(mask, x, 0).mean(dim=1, keepdim=True) * (n / count)
                # background filled with the foreground mean adds nothing to the squared deviations
                std = torch.where(mask, x, mean).std(dim=1, unbiased=False, keepdim=True) * (n / count).sqrt()
                mask = mask & (count >= MIN_FOREGROUND * n)  # (almost) no foreground: the block stays 0
            x = (x - mean) / std.clamp_min(_EPS)
        if mask is not None:
            x = torch.where(mask, x, 0)
        return x.reshape(block.shape).to(block.dtype)

    def sample(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[BlockLayout]]:
        """Like ``__call__`` but also returns the layouts (the audit needs to know where the blocks are)."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        n = images.shape[0]
        labels = torch.randint(self.num_classes, (n,), generator=generator, device=gen_device)
        labels = labels.to(images.device, non_blocking=True)
        layouts = self.sample_layouts(images.shape[2:], n, generator)
        return self.apply(images, labels, layouts, generator), labels, layouts

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Uniformly random labels in ``[0, K)`` and layouts; returns ``(pretext images, labels)``."""
        out, labels, _ = self.sample(images, generator)
        return out, labels

    # ---------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """JSON- and ``weights_only``-safe: config dict, assignments as nested int lists, M and dims."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "assignments": self.assignments.tolist(),
            "num_modalities": self.num_modalities,
            "spatial_dims": self.spatial_dims,
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> SLeMPretext:
        """Rebuilds the exact task (the stored assignment set, not a rebuilt one) from :meth:`state_dict`.

        A state saved before ``foreground_only`` existed was trained with whole-block ranks, so it rebuilds
        with ``foreground_only=False``: probes and audits of an old checkpoint then test the task it learnt
        (options given on the command line, :meth:`SLeMPretextConfig.from_dict`, default to ``True``)."""
        config = {"foreground_only": False, **d["config"]}
        return cls(
            SLeMPretextConfig.from_dict(config),
            num_modalities=int(d["num_modalities"]),
            spatial_dims=int(d["spatial_dims"]),
            assignments=np.asarray(d["assignments"], dtype=np.int64),
        )


def _gaussian_rank(x: Tensor, foreground: Tensor | None = None) -> Tensor:
    """Per row: mean rank of each value (ties share it), mapped to standard normal quantiles.

    The result depends only on the order of the values, so every row with the same tie pattern gets the
    same histogram, whatever the original intensity distribution.

    ``foreground`` (bools broadcastable to ``x``): rank only those values, among themselves; the others
    come out 0. They are sorted last as ``+inf`` and the quantiles are taken over the foreground count,
    as ``(rank + 0.5) / n * (n / count)``, which is exactly the whole-row formula when everything is
    foreground.

    Computed for all rows at once from one sort, with fixed-size operations only: a tie group's mean rank is
    the mean of its first and last position in sorted order, found with running max/min over the group
    boundaries. Unlike ``torch.unique`` this never waits for the GPU (no data-dependent output size), so the
    CPU can queue the next samples' work while the GPU computes.
    """
    n = x.shape[1]
    if foreground is not None:
        foreground = foreground.expand_as(x)
        x = torch.where(foreground, x, torch.inf)
    sorted_x, order = torch.sort(x, dim=1)
    pos = torch.arange(n, device=x.device).expand_as(sorted_x)
    starts = torch.ones_like(sorted_x, dtype=torch.bool)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.cummax(torch.where(starts, pos, 0), dim=1).values
    last = torch.cummin(torch.where(ends, pos, n - 1).flip(1), dim=1).values.flip(1)
    mean_rank = (first + last).to(x.dtype) / 2
    quantile = (mean_rank + 0.5) / n
    if foreground is not None:
        count = foreground.sum(dim=1, keepdim=True, dtype=x.dtype).clamp_min(1)
        quantile = quantile * (n / count)
    z = torch.empty_like(x).scatter_(1, order, torch.special.ndtri(quantile.clamp(1e-6, 1 - 1e-6)))
    return z if foreground is None else torch.where(foreground, z, 0)


def _intensity_transform(x: Tensor, params: Tensor, foreground: Tensor | None = None) -> Tensor:
    """Per-row gamma on min-max scaled values (back in the row's range), then contrast and brightness.

    ``x`` is ``(M, V)``; ``params`` is ``(M, 3)`` = gamma, contrast, brightness (brightness in units of the
    row's range, so the shift means the same for a modality stored in [0, 1] and one in [0, 4000]).
    ``foreground`` (bools broadcastable to ``x``): take the range over those values only (the caller zeroes
    the rest); all True gives the whole-row result.
    """
    if foreground is None:
        lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    else:
        lo = torch.where(foreground, x, torch.inf).amin(dim=1, keepdim=True)
        hi = torch.where(foreground, x, -torch.inf).amax(dim=1, keepdim=True)
        lo, hi = torch.where(hi >= lo, lo, 0), torch.where(hi >= lo, hi, 0)  # no foreground: no inf - inf
    span = hi - lo
    gamma, contrast, brightness = (params[:, i : i + 1] for i in range(3))
    scaled = ((x - lo) / span.clamp_min(_EPS)).clamp(0, 1)
    x = scaled.pow(gamma) * span + lo
    return x * contrast + brightness * span


def seam_slices(layout: BlockLayout, band: int) -> list[tuple[slice, ...]]:
    """Per-axis slices of the bands of ``band`` voxels centred on every cut of ``layout`` (voxels
    ``cut - band // 2 .. cut - band // 2 + band - 1`` along the cut axis, clipped to the patch; the seam lies
    between voxels ``cut - 1`` and ``cut``)."""
    bands = []
    for axis, bounds in enumerate(layout.boundaries):
        for cut in bounds[1:-1]:
            lo = max(0, cut - band // 2)
            sl = [slice(None)] * len(layout.boundaries)
            sl[axis] = slice(lo, min(bounds[-1], lo + band))
            bands.append(tuple(sl))
    return bands


def zero_seams(images: Tensor, layouts: Sequence[BlockLayout], band: int) -> Tensor:
    """Set a band of ``band`` voxels centred on every seam to 0, in place, in every channel; returns ``images``.

    Used by ``seam_band`` and by the seam probe: without the band, continuity of a channel across a seam tells
    which channel of one block holds the modality of a channel of its neighbour, whatever the content."""
    if band > 0:
        for i, layout in enumerate(layouts):
            for sl in seam_slices(layout, band):
                images[(i, slice(None), *sl)] = 0
    return images
