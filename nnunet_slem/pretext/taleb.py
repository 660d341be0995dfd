"""Taleb's multimodal puzzle: assemble a jigsaw from tiles of different modalities and classify its shuffle.

The task (Taleb, Lippert, Klein & Nabi, "Multimodal self-supervised learning for medical image analysis",
IPMI 2021): the patch is cut into a grid of equal tiles; every tile is taken from a modality chosen at random
(each tile independently, uniformly over the ``M`` modalities), and the tiles are shuffled. Reassembling the
puzzle needs the network to recognise anatomy across modalities, which is the cross-modal representation the
paper is after. What one call does to a batch ``images`` of shape ``(N, M, *spatial)``:

1. draw a label ``y`` (uniform over the ``K`` classes) and a modality per tile ``(N, T)``;
2. take every tile from its modality and z-score it (its own mean and standard deviation);
3. shuffle the tiles with permutation ``P[y]`` of the fixed set (output tile ``t`` = input tile ``P[y][t]``,
   see :func:`~nnunet_slem.pretext.tiles.shuffle_tiles`);
4. write the one-channel puzzle into all ``M`` input channels.

Deviations from the paper, and why:

* **Classification over a fixed permutation set instead of Sinkhorn networks.** Taleb et al. solve the puzzle
  by regressing the permutation matrix with a Sinkhorn network. We classify over a fixed max-Hamming set of
  permutations (the jigsaw formulation of Noroozi & Favaro, 2016), which fits the shared pretraining model
  (encoder + grid-pooled linear head, accuracy as the score, see :mod:`~nnunet_slem.pretext.base`) with no
  pretext-specific head and makes the pretext's accuracy comparable with SLeM's. The set is built by
  :func:`~nnunet_slem.pretext.tiles.build_permutation_set` (``num_permutations`` classes, 100 by default,
  capped at ``T!``); class 0 is the unshuffled puzzle.
* **The puzzle is replicated into all M channels.** Taleb's network sees a one-channel puzzle; ours is the
  encoder that fine-tuning reuses, whose first convolution takes ``M`` channels. Replicating keeps that
  layer's shape (so its weights transfer) and gives every input channel the same pretext signal.
* **Per-tile z-score.** Modalities have different intensity levels, so without it a tile boundary would be
  visible as a step in level, and which tile is whose neighbour partly readable from the levels alone.
  Z-scoring each tile after picking its modality removes level and spread (not histogram shape, which is
  harmless here: it tells the modality, not the tile's place). It is applied to every class alike.
* **Tile grid.** 3D uses 2x2x2 tiles by default (8 tiles, 8! = 40,320 permutations) instead of the paper's
  3x3x3: nnU-Net's 3D patches (often ~128 voxels per axis, sometimes fewer) leave 27 tiles too small to
  hold recognisable anatomy. 2D uses the paper's 3x3. Both are settable (``grid``).
* **Remainder.** When the patch is not a multiple of the grid, the voxels beyond the last full tile belong to
  no tile; they are set to 0 (the z-scored tiles' mean) for every class, so they carry no label information.
* Taleb's optional cross-modal generation of missing modalities (CycleGAN) is not part of this pretext.

With ``modality_per_tile=False`` every tile of a sample comes from one randomly chosen modality (a plain
jigsaw on a random modality, an ablation); with ``M = 1`` the two settings coincide.

Everything heavy runs on the device of ``images``; the random draws (labels, modalities) come from the
``torch.Generator`` passed in, on the generator's device, and are moved over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import StoredConfig, grid_for
from nnunet_slem.pretext.checks import as_labels, check_image_batch, check_state_version
from nnunet_slem.pretext.class_table import ClassTablePretext
from nnunet_slem.pretext.tiles import (
    build_permutation_set,
    capped_permutation_count,
    merge_tiles,
    split_tiles,
    tile_shape,
)

__all__ = [
    "TalebPuzzleConfig",
    "TalebPuzzlePretext",
    "default_tile_grid",
]

STATE_FORMAT_VERSION = 1
_EPS = 1e-6


def default_tile_grid(spatial_dims: int) -> tuple[int, ...]:
    """``(2, 2, 2)`` for 3D patches (8 tiles large enough for anatomy), ``(3, 3)`` for 2D as in the paper."""
    return grid_for(spatial_dims, {3: (2, 2, 2), 2: (3, 3)}, "Taleb's puzzle")


@dataclass
class TalebPuzzleConfig(StoredConfig):
    """Everything that defines the puzzle task; stored in pretraining checkpoints via :meth:`to_dict`.

    ``grid=None`` means :func:`default_tile_grid` for the data's dimensionality, so one config serves 2D and
    3D. ``num_permutations`` is capped at ``T!`` (e.g. 24 for a 2x2 grid).
    """

    stored_as = "Taleb puzzle"

    grid: tuple[int, ...] | None = None
    num_permutations: int = 100
    seed: int = 0
    min_tile: int = 4
    modality_per_tile: bool = True

    def __post_init__(self) -> None:
        if self.grid is not None:
            self.grid = tuple(int(g) for g in self.grid)
            if len(self.grid) not in (2, 3) or any(g < 1 for g in self.grid):
                raise PretextConfigError(
                    f"the puzzle tile grid must give positive tiles per spatial axis for 2D or 3D patches, got "
                    f"{self.grid}; e.g. (3, 3) or (2, 2, 2), or None for the default."
                )
            if math.prod(self.grid) < 2:
                raise PretextConfigError(
                    f"the puzzle tile grid {self.grid} has a single tile, nothing to shuffle; use at least two "
                    "tiles, e.g. (2, 2, 2) or (3, 3)."
                )
        if self.num_permutations < 2:
            raise PretextConfigError(
                f"the puzzle needs at least 2 classes (permutations), got num_permutations={self.num_permutations}."
            )
        if self.min_tile < 1:
            raise PretextConfigError(f"min_tile must be >= 1 voxel, got {self.min_tile}.")

    def tile_grid(self, spatial_dims: int) -> tuple[int, ...]:
        """The grid in use for ``spatial_dims``-D data (the stored one, or the default)."""
        return default_tile_grid(spatial_dims) if self.grid is None else self.grid



def _zscore_tiles(tiles: Tensor) -> Tensor:
    """Per tile of ``(N, T, *tile)``: zero mean, unit standard deviation (constant tiles become 0)."""
    compute = torch.promote_types(tiles.dtype, torch.float32)
    x = tiles.reshape(*tiles.shape[:2], -1).to(compute)
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, unbiased=False, keepdim=True)
    return ((x - mean) / std.clamp_min(_EPS)).reshape(tiles.shape)


class TalebPuzzlePretext(ClassTablePretext):
    """Builds multimodal puzzles (module docstring) and their permutation labels on any device."""

    name = "taleb"
    table_key = "permutations"
    state_format_version = STATE_FORMAT_VERSION

    def __init__(
        self,
        config: TalebPuzzleConfig,
        num_modalities: int,
        spatial_dims: int,
        permutations: np.ndarray | None = None,
    ) -> None:
        super().__init__(config, num_modalities, spatial_dims)
        if self.spatial_dims not in (2, 3):
            default_tile_grid(self.spatial_dims)  # raises the clear error
        self.grid = config.tile_grid(self.spatial_dims)
        if len(self.grid) != self.spatial_dims:
            raise PretextConfigError(
                f"the puzzle tile grid {self.grid} has {len(self.grid)} entries but the data is "
                f"{self.spatial_dims}D; use a grid with one entry per spatial axis, e.g. "
                f"{default_tile_grid(self.spatial_dims)}, or grid=None for that default."
            )
        if self.num_modalities < 1:
            raise PretextConfigError(f"the puzzle needs at least one modality/channel, got {self.num_modalities}.")
        if permutations is None:
            size = capped_permutation_count(self.num_tiles, config.num_permutations)
            permutations = build_permutation_set(self.num_tiles, size, config.seed)
        self._set_table(self._checked_permutations(permutations))

    # ----------------------------------------------------------------------------------- validation
    def _checked_permutations(self, permutations: np.ndarray) -> Tensor:
        p = np.asarray(permutations)
        if p.ndim != 2 or p.shape[1] != self.num_tiles or len(p) < 2:
            raise PretextConfigError(
                f"permutations must have shape (K>=2, T) = (K, {self.num_tiles}) for tile grid {self.grid}, "
                f"got {p.shape}."
            )
        if not (np.sort(p, axis=1) == np.arange(self.num_tiles)).all():
            raise PretextConfigError(f"every row of permutations must be a permutation of range({self.num_tiles}).")
        if len(np.unique(p, axis=0)) != len(p):
            raise PretextConfigError("permutations must be distinct, else two classes are the same puzzle.")
        return torch.as_tensor(p.astype(np.int64))

    @property
    def num_tiles(self) -> int:
        return math.prod(self.grid)

    @property
    def permutations(self) -> Tensor:
        """``(K, T)`` long: class ``k`` moves input tile ``permutations[k, t]`` to output position ``t``."""
        return self.table

    def check_patch(self, patch_size: Sequence[int]) -> None:
        """Raise :class:`PretextConfigError` naming the patch, the grid and the fix if the tiles do not fit."""
        patch_size = tuple(int(p) for p in patch_size)
        if len(patch_size) != self.spatial_dims:
            raise PretextConfigError(
                f"the patch size {patch_size} has {len(patch_size)} axes, but this puzzle (tile grid {self.grid}) "
                f"is {self.spatial_dims}D; use a {self.spatial_dims}D configuration or a matching tile grid."
            )
        tile_shape(patch_size, self.grid, self.config.min_tile)

    def _check_images(self, images: Tensor) -> None:
        check_image_batch(images, self.num_modalities, self.spatial_dims)
        tile_shape(images.shape[2:], self.grid, 1)

    # ---------------------------------------------------------------------------------------- draws
    def sample_modalities(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, T)`` long on the generator's device: the modality each input tile is taken from.

        Independent and uniform per tile with ``modality_per_tile``, else one modality per sample.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        per_sample = self.num_tiles if self.config.modality_per_tile else 1
        draw = torch.randint(self.num_modalities, (n, per_sample), generator=generator, device=device)
        return draw.expand(n, self.num_tiles).contiguous()

    # ---------------------------------------------------------------------------------------- apply
    def apply(self, images: Tensor, labels: Tensor | Sequence[int], modalities: Tensor) -> Tensor:
        """The puzzles for given labels ``(N,)`` and per-tile modalities ``(N, T)`` (deterministic).

        ``modalities[n, t]`` is the modality of *input* tile ``t``, which the shuffle then moves to the output
        position(s) ``s`` with ``P[labels[n]][s] == t``. Returns ``(N, M, *spatial)`` like ``images``.
        """
        self._check_images(images)
        n, device = images.shape[0], images.device
        labels = as_labels(labels, n, self.num_classes, device)
        modalities = torch.as_tensor(modalities, dtype=torch.long)
        if tuple(modalities.shape) != (n, self.num_tiles):
            raise ValueError(
                f"expected modalities of shape ({n}, {self.num_tiles}), got {tuple(modalities.shape)}."
            )
        if (
            modalities.device.type == "cpu"
            and n
            and not (0 <= int(modalities.min()) and int(modalities.max()) < self.num_modalities)
        ):
            raise ValueError(f"modalities must be in [0, {self.num_modalities}).")
        modalities = modalities.to(device)
        rows = torch.arange(n, device=device)[:, None]
        tiles = split_tiles(images, self.grid)  # (N, T, M, *tile)
        picked = tiles[rows, torch.arange(self.num_tiles, device=device)[None, :], modalities]  # (N, T, *tile)
        picked = _zscore_tiles(picked).to(images.dtype)
        shuffled = picked[rows, self.table_on(device).index_select(0, labels)]  # (N, T, *tile)
        out = torch.zeros_like(images)
        tile_dims = shuffled.shape[2:]
        return merge_tiles(
            shuffled.unsqueeze(2).expand(n, self.num_tiles, self.num_modalities, *tile_dims), self.grid, out
        )

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Like ``__call__`` but also returns the per-tile modalities ``(N, T)`` (on the images' device)."""
        device = generator.device if generator is not None else torch.device("cpu")
        n = images.shape[0]
        labels = torch.randint(self.num_classes, (n,), generator=generator, device=device)
        modalities = self.sample_modalities(n, generator)
        labels = labels.to(images.device, non_blocking=True)  # host-to-device copies that do not wait
        modalities = modalities.to(images.device, non_blocking=True)
        return self.apply(images, labels, modalities), labels, modalities

    # ---------------------------------------------------------------------------------- persistence
    @classmethod
    def from_state_dict(cls, d: dict) -> TalebPuzzlePretext:
        """Rebuilds the exact task (the stored permutation set, not a rebuilt one) from :meth:`state_dict`."""
        check_state_version(d, STATE_FORMAT_VERSION, "Taleb puzzle")
        return cls(TalebPuzzleConfig.from_dict(d["config"]), **cls._stored_kwargs(d))
