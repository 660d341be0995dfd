"""The geometry of SLeM's blocks: where one sample's cuts lie, which block each voxel is in, and the seams.

Kept apart from the pretext (:mod:`~nnunet_slem.pretext.slem`, which draws the layouts and fills the blocks)
because the audit and the probes (:mod:`~nnunet_slem.pretext.audit`, :mod:`~nnunet_slem.pretrain.probes`) need
the layouts too, to compute block statistics and to blank the seams, without the shuffling.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

__all__ = ["BlockLayout", "jittered_cuts", "seam_slices", "zero_seams"]


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


def jittered_cuts(size: int, parts: int, u: Sequence[float], jitter: float, min_block: int) -> tuple[int, ...]:
    """Cuts ``size*k/parts + u_k*jitter*size`` (``u_k`` in [-1, 1]), clipped so every block keeps ``min_block``
    voxels; returned with ``0`` and ``size`` at the ends."""
    cuts = [0]
    for k in range(1, parts):
        c = round(size * k / parts + u[k - 1] * jitter * size)
        lo, hi = cuts[-1] + min_block, size - (parts - k) * min_block
        cuts.append(min(max(c, lo), hi))
    cuts.append(size)
    return tuple(cuts)


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


def cross_case_composite(images: Tensor, layouts: Sequence[BlockLayout]) -> Tensor:
    """Block ``b`` of sample ``i`` from patch ``(i + b) % n`` of the batch, in sample ``i``'s layout: with at least
    as many patches as blocks, the blocks of a sample come from as many different patches (other cases, usually),
    so no anatomy continues across a seam. The pretext option ``cross_case`` and the ``cross_case`` probe use it."""
    out = images.clone()
    n = images.shape[0]
    for i, layout in enumerate(layouts):
        for b, sl in enumerate(layout.block_slices()):
            out[(i, slice(None), *sl)] = images[((i + b) % n, slice(None), *sl)]
    return out
