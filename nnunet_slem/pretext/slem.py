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
   * ``foreground_only`` (default on): the renormalisation (and the intensity augmentation) acts on the block's
     *foreground* only, the voxels where any channel of the unshuffled sample is non-zero; the background stays
     exactly 0, and (with ``"rank"``/``"zscore"``) a block with less than ``MIN_FOREGROUND``
     (:mod:`~nnunet_slem.pretext.block_norm`) of its voxels in the foreground stays all 0. Why: nnU-Net z-scores
     skull-stripped data inside the non-zero mask (``use_mask_for_norm``) and leaves the background at exactly 0.
     Ranked together with the brain, that tie group lands at the quantile of "fraction of brain below 0", which
     depends on each modality's skew: a modality fingerprint (audit accuracy 0.24 on realistic skull-stripped
     data, 0.95 on the test suite's skull-stripped patches, chance 0.04; 0.04 with the fix); the brain's spread
     would also vary with each block's background share, and fine-tuning would see other inputs (brain ~ N(0, 1),
     background 0) than pretraining. The mask is the same for every channel and invariant under the channel
     permutation, so it carries no label information. On data without exact zeros the mask is everything and the
     result is bit for bit the whole-block one. Pretext states saved before this option existed rebuild with
     ``foreground_only=False``, the task those networks learnt.
   * ``seam_band`` (default 0, off): after the shuffle, zero a band of that many voxels centred on every seam
     (:func:`~nnunet_slem.pretext.blocks.zero_seams`), for experiments on whether the network reads
     continuity across seams (:mod:`nnunet_slem.pretrain.probes` measures it); off by default because cutting
     the images' continuity also cuts the anatomy the encoder is meant to learn from.
   * ``intensity_aug``: per block and channel, a random gamma (log-uniform in [0.7, 1.5]) on the min-max
     scaled values (mapped back to the block's range afterwards), then a random contrast (x0.75..1.25) and
     brightness shift (+-0.1 of the block's range), :mod:`~nnunet_slem.pretext.intensity_aug`. The gamma
     perturbs histogram shape, which z-scoring leaves as a modality fingerprint. It is skipped with
     ``"rank"`` normalisation, where a monotonic intensity change cannot alter anything.

5. **Harder variants** (off by default; ``compare``'s pretext-variant arms measure them on held-out Dice):

   * ``cross_case``: before the shuffle, block ``b`` of sample ``i`` is taken from patch ``(i + b) % n`` of the
     batch (:func:`~nnunet_slem.pretext.blocks.cross_case_composite`), so the blocks of a sample come from
     different patches, no anatomy continues across a seam, and every block must be recognised from its own
     content.
   * ``modality_dropout`` ``p``: after the guards, each channel of each block is zeroed with probability ``p``
     (never all channels of a block), the same way for every class, so the network must tell the sequences
     apart from whichever are left.

Everything heavy runs on the device of ``images``; the few random numbers (labels, layouts, augmentation
parameters) come from the ``torch.Generator`` passed in, on the generator's device, and are moved over.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nnunet_slem.pretext.assignments import PretextConfigError, build_assignment_set
from nnunet_slem.pretext.base import StoredConfig, grid_for
from nnunet_slem.pretext.block_norm import NORMALIZATIONS, normalize_rows
from nnunet_slem.pretext.blocks import BlockLayout, cross_case_composite, jittered_cuts, zero_seams
from nnunet_slem.pretext.checks import as_labels, check_image_batch
from nnunet_slem.pretext.class_table import ClassTablePretext
from nnunet_slem.pretext.intensity_aug import intensity_params, intensity_transform

__all__ = [
    "SLeMPretext",
    "SLeMPretextConfig",
    "default_grid",
]

STATE_FORMAT_VERSION = 1


def default_grid(spatial_dims: int) -> tuple[int, ...]:
    """``(2, 2, 1)`` for 3D patches, ``(2, 2)`` for 2D: four blocks either way, as in the SLeM paper."""
    return grid_for(spatial_dims, {3: (2, 2, 1), 2: (2, 2)}, "SLeM")


@dataclass
class SLeMPretextConfig(StoredConfig):
    """Everything that defines the pretext task; stored in pretraining checkpoints via :meth:`to_dict`."""

    stored_as = "SLeM pretext"

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
    cross_case: bool = False
    modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        self.grid = tuple(int(p) for p in self.grid)
        if not self.grid or any(p < 1 for p in self.grid):
            raise PretextConfigError(f"grid must be positive parts per spatial axis, got {self.grid}.")
        if not 0.0 <= self.jitter < 0.5:
            raise PretextConfigError(f"jitter must be in [0, 0.5) of the axis length, got {self.jitter}.")
        if self.min_block < 1:
            raise PretextConfigError(f"min_block must be >= 1 voxel, got {self.min_block}.")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise PretextConfigError(f"modality_dropout must be a probability in [0, 1), got {self.modality_dropout}.")
        if self.seam_band < 0:
            raise PretextConfigError(f"seam_band must be >= 0 voxels (0: off), got {self.seam_band}.")
        if self.normalization not in NORMALIZATIONS:
            raise PretextConfigError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}."
            )

    @property
    def num_blocks(self) -> int:
        return math.prod(self.grid)



class SLeMPretext(ClassTablePretext):
    """Builds SLeM pretext samples (shuffled multi-modal images and their class labels) on any device."""

    name = "slem"
    table_key = "assignments"
    state_format_version = STATE_FORMAT_VERSION

    def __init__(
        self,
        config: SLeMPretextConfig,
        num_modalities: int,
        spatial_dims: int,
        assignments: np.ndarray | None = None,
    ) -> None:
        super().__init__(config, num_modalities, spatial_dims)
        self._check_grid()
        if assignments is None:
            assignments = build_assignment_set(
                self.num_modalities, config.num_blocks, config.num_assignments, config.seed
            )
        self._set_table(self._checked_assignments(assignments))

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
    def assignments(self) -> Tensor:
        """``(K, B, M)`` long: class ``k`` puts modality ``assignments[k, b, c]`` into channel ``c`` of block ``b``."""
        return self.table

    @property
    def num_blocks(self) -> int:
        return int(self.assignments.shape[1])

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
            boundaries.append(jittered_cuts(size, p, u[used : used + p - 1], self.config.jitter, self.config.min_block))
            used += p - 1
        return BlockLayout(axis_order=tuple(order), parts=parts, boundaries=tuple(boundaries))

    # --------------------------------------------------------------------------------------- apply
    def _check_batch(self, images: Tensor, layouts: Sequence[BlockLayout]) -> None:
        check_image_batch(images, self.num_modalities, self.spatial_dims)
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
        return intensity_params(u).to(device, non_blocking=True)  # float32, on the generator's device

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
        labels = as_labels(labels, n, self.num_classes, images.device)
        perms = self.table_on(images.device).index_select(0, labels)  # (N, B, M)
        use_aug = self.config.intensity_aug and self.config.normalization != "rank"
        aug = self._aug_params(n, generator, images.device) if use_aug else None
        guarded = use_aug or self.config.normalization != "none"
        foreground_only = guarded and self.config.foreground_only
        drop = self._dropped_channels(n, generator, images.device) if self.config.modality_dropout else None
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
                if drop is not None:  # a broadcast mask, not boolean indexing: no host sync per block on a GPU
                    block = block.masked_fill(drop[i, b].view(-1, *(1,) * len(slices)), 0)
                out[index] = block
        if self.config.seam_band:
            zero_seams(out, layouts, self.config.seam_band)
        return out

    def _dropped_channels(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``(N, B, M)`` bools: the (block, channel) pairs to zero, each with probability ``modality_dropout`` and
        never all channels of a block (the largest draw survives); drawn independently of the labels, so the
        dropout carries no label information."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, self.num_blocks, self.num_modalities), generator=generator, device=gen_device)
        drop = u < self.config.modality_dropout
        drop &= u != u.max(dim=-1, keepdim=True).values
        return drop.to(device)

    def _guard(self, block: Tensor, aug: Tensor | None, foreground: Tensor | None = None) -> Tensor:
        """Intensity augmentation then renormalisation of one ``(M, *block_shape)`` block, per channel.

        ``foreground`` (``block_shape`` bools, or ``None`` for the whole block): the voxels the guards act on;
        the others come out exactly 0 (module docstring; :func:`~nnunet_slem.pretext.block_norm.normalize_rows`
        says how the masked statistics stay bit for bit the whole-block ones for an all-True mask)."""
        compute = torch.promote_types(block.dtype, torch.float32)
        x = block.reshape(block.shape[0], -1).to(compute)
        mask = None if foreground is None else foreground.reshape(1, -1)
        if aug is not None:
            x = intensity_transform(x, aug.to(compute), mask)
        x = normalize_rows(x, self.config.normalization, mask)
        return x.reshape(block.shape).to(block.dtype)

    def sample(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[BlockLayout]]:
        """Like ``__call__`` but also returns the layouts (the audit needs to know where the blocks are)."""
        self.check_cross_case_batch(images.shape[0])
        labels, layouts = self._draw(images, images.shape[0], generator)
        if self.config.cross_case:
            images = cross_case_composite(images, layouts)
        return self.apply(images, labels, layouts, generator), labels, layouts

    def sample_each(
        self, images: Tensor, generators: Sequence[torch.Generator]
    ) -> tuple[Tensor, Tensor, list[BlockLayout]]:
        """Sample ``j`` drawn with its own ``generators[j]``, exactly as ``sample(images[j:j + 1], generators[j])``
        draws it, except that ``cross_case`` takes the blocks from the other patches of ``images``.

        The pretrainer draws every sample with its own generator (a sample must not depend on how the batch is
        split over processes), so it calls this, not ``sample`` per image: one patch alone has no other patch
        to take blocks from, and ``cross_case`` would silently do nothing. With ``cross_case`` a sample does
        depend on the other patches of its process's batch; that is the option's point."""
        if len(generators) != images.shape[0]:
            raise ValueError(f"{len(generators)} generators for {images.shape[0]} images")
        self.check_cross_case_batch(images.shape[0])
        draws = [self._draw(images, 1, g) for g in generators]
        labels = torch.cat([d[0] for d in draws])
        layouts = [d[1][0] for d in draws]
        if self.config.cross_case:
            images = cross_case_composite(images, layouts)
        out = torch.cat([self.apply(images[j:j + 1], labels[j:j + 1], layouts[j:j + 1], g)
                         for j, g in enumerate(generators)])
        return out, labels, layouts

    def _draw(self, images: Tensor, n: int, generator: torch.Generator | None) -> tuple[Tensor, list[BlockLayout]]:
        """``n`` labels (on the images' device) and block layouts, in that order from ``generator``."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        labels = torch.randint(self.num_classes, (n,), generator=generator, device=gen_device)
        return labels.to(images.device, non_blocking=True), self.sample_layouts(images.shape[2:], n, generator)

    def check_cross_case_batch(self, n: int) -> None:
        """Raise :class:`PretextConfigError` naming the fix if ``cross_case`` has too few patches to mix."""
        if self.config.cross_case and n < 2:
            raise PretextConfigError(
                f"cross_case takes each block from another patch of the batch, but the batch has {n} patch; "
                f"draw at least 2 (at least {self.num_blocks}, the number of blocks, for every block to come "
                "from another patch), e.g. a larger --batch-size."
            )

    # ---------------------------------------------------------------------------------- persistence
    @classmethod
    def from_state_dict(cls, d: dict) -> SLeMPretext:
        """Rebuilds the exact task (the stored assignment set, not a rebuilt one) from :meth:`state_dict`.

        A state saved before ``foreground_only`` existed was trained with whole-block ranks, so it rebuilds
        with ``foreground_only=False``: probes and audits of an old checkpoint then test the task it learnt
        (options given on the command line, :meth:`SLeMPretextConfig.from_dict`, default to ``True``)."""
        config = {"foreground_only": False, **d["config"]}
        return cls(SLeMPretextConfig.from_dict(config), **cls._stored_kwargs(d))

