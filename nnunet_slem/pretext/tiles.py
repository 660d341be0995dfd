"""Tile grids and tile permutations shared by the jigsaw-style pretexts (Taleb's multimodal puzzle, JiGen).

A *tile grid* ``grid`` gives the number of tiles per spatial axis, e.g. ``(3, 3)`` -> ``T = 9`` tiles in 2D,
``(2, 2, 2)`` -> 8 in 3D. All tiles have the same shape ``spatial_shape // grid`` (per axis), so any tile can
take any other tile's place; the remainder at the far end of an axis (when the patch is not a multiple of
the grid) belongs to no tile. Tiles are numbered in C order over the grid (first axis slowest), which is the
order of :func:`tile_slices` and of the ``T`` axis of :func:`split_tiles`.

A *permutation* ``p`` of ``range(T)`` shuffles the tiles: output tile position ``t`` receives input tile
``p[t]`` (:func:`shuffle_tiles`). The jigsaw classes are the indices of a fixed set of permutations built by
:func:`build_permutation_set` with the greedy max-min Hamming procedure of Noroozi & Favaro (2016): all
``T!`` permutations are far too many classes and most differ in two tiles only, so we keep ``size`` of them
that are pairwise as different as possible, and the network has to place every tile to tell them apart.

The set is deterministic given ``(num_tiles, size, seed)``:

1. candidates = all ``T!`` permutations when that is at most ``MAX_EXHAUSTIVE`` (500,000, i.e. ``T <= 9``),
   else a seeded random pool of ``RANDOM_POOL_SIZE`` (100,000) distinct permutations, identity included;
2. the set starts with the identity, so class 0 is the unshuffled image;
3. repeatedly add the candidate that maximises the minimum Hamming distance (number of tiles in a different
   place) to the permutations already chosen, ties broken by a ``numpy`` RNG seeded with ``seed``.

The pool and the greedy selection are :mod:`~nnunet_slem.pretext.max_min_hamming`, shared with SLeM's
assignment sets; candidates are stored column by column so each greedy step is ``T`` contiguous comparisons
over the pool: the 3x3 set of 100 permutations out of 9! = 362,880 takes well under a second.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.max_min_hamming import MAX_EXHAUSTIVE, distinct_pool, greedy_max_min_hamming

__all__ = [
    "MAX_EXHAUSTIVE",
    "RANDOM_POOL_SIZE",
    "build_permutation_set",
    "capped_permutation_count",
    "invert_permutations",
    "merge_tiles",
    "permutation_hamming",
    "shuffle_tiles",
    "split_tiles",
    "tile_shape",
    "tile_slices",
]

#: the random candidate pool when ``T! > MAX_EXHAUSTIVE`` (SLeM's assignments use a larger one)
RANDOM_POOL_SIZE = 100_000


# ------------------------------------------------------------------------------------ permutation set
def _all_permutations(num_tiles: int) -> np.ndarray:
    """``(T, T!)``: all permutations, one per *column*, lexicographic order, column 0 the identity."""
    count = math.factorial(num_tiles)
    flat = itertools.chain.from_iterable(itertools.permutations(range(num_tiles)))
    rows = np.fromiter(flat, dtype=np.int8, count=count * num_tiles).reshape(count, num_tiles)
    return np.ascontiguousarray(rows.T)


def _random_permutations(num_tiles: int, pool_size: int, rng: np.random.Generator) -> np.ndarray:
    """``(T, pool_size)``: distinct random permutations, one per column, identity first, in draw order."""
    dtype = np.int8 if num_tiles <= 127 else np.int64
    identity = np.arange(num_tiles, dtype=dtype)

    def draw(n: int) -> np.ndarray:
        return rng.permuted(np.broadcast_to(identity, (n, num_tiles)), axis=1)

    return np.ascontiguousarray(distinct_pool(identity[None, :], draw, pool_size).T)


def capped_permutation_count(num_tiles: int, wanted: int) -> int:
    """``min(wanted, T!)``: a small grid (e.g. 2x2, 4! = 24) cannot give more distinct permutations."""
    return min(int(wanted), math.factorial(int(num_tiles)))


def build_permutation_set(num_tiles: int, size: int, seed: int = 0) -> np.ndarray:
    """The jigsaw classes: ``(size, num_tiles)`` int64 distinct permutations, row 0 the identity, rows far apart.

    Args:
        num_tiles: ``T``, the number of tiles of the grid (>= 2).
        size: ``K``, the number of permutations (classes), ``2 <= K <= T!``.
        seed: seeds the tie-breaking (and the candidate pool when ``T! > MAX_EXHAUSTIVE``).
    """
    num_tiles, size = int(num_tiles), int(size)
    if num_tiles < 2:
        raise PretextConfigError(
            f"a jigsaw needs at least 2 tiles to shuffle, got num_tiles={num_tiles}; use a tile grid with at "
            "least two tiles, e.g. (2, 2) or (2, 2, 2)."
        )
    total = math.factorial(num_tiles)
    if size < 2:
        raise PretextConfigError(
            f"a jigsaw needs at least 2 permutations (classes), got {size}; use num_permutations >= 2."
        )
    if size > total:
        raise PretextConfigError(
            f"{size} permutations were asked for, but {num_tiles} tiles have only {num_tiles}! = {total} "
            f"distinct permutations; use num_permutations <= {total} or a tile grid with more tiles."
        )
    tie_seq, pool_seq = np.random.SeedSequence(seed).spawn(2)
    if total <= MAX_EXHAUSTIVE:
        columns = _all_permutations(num_tiles)
    else:
        pool_rng = np.random.default_rng(pool_seq)
        columns = _random_permutations(num_tiles, max(RANDOM_POOL_SIZE, size), pool_rng)
    chosen = greedy_max_min_hamming(columns, size, np.random.default_rng(tie_seq))
    return columns[:, chosen].T.astype(np.int64)


def permutation_hamming(permutations: np.ndarray) -> np.ndarray:
    """``(K, K)`` numbers of tiles in different places between the permutations of a set."""
    p = np.asarray(permutations)
    return (p[:, None, :] != p[None, :, :]).sum(-1)


def invert_permutations(permutations: Tensor) -> Tensor:
    """Per row the inverse permutation: ``shuffle_tiles`` with it undoes ``shuffle_tiles`` with the input."""
    return torch.argsort(permutations, dim=-1)


# ------------------------------------------------------------------------------------------ tile grid
def tile_shape(spatial_shape: Sequence[int], grid: Sequence[int], min_tile: int = 1) -> tuple[int, ...]:
    """``spatial_shape // grid`` per axis; a :class:`PretextConfigError` naming the fix if a tile would have
    fewer than ``min_tile`` voxels along an axis (tiles that small carry no structure to place)."""
    shape = tuple(int(s) for s in spatial_shape)
    grid = tuple(int(g) for g in grid)
    if len(shape) != len(grid):
        raise PretextConfigError(
            f"the tile grid {grid} has {len(grid)} entries but the patch {shape} has {len(shape)} spatial axes; "
            "use a grid with one entry per spatial axis."
        )
    if any(g < 1 for g in grid):
        raise PretextConfigError(f"the tile grid must have positive entries (tiles per axis), got {grid}.")
    if any(s < g * min_tile for s, g in zip(shape, grid)):
        needed = tuple(g * min_tile for g in grid)
        raise PretextConfigError(
            f"the patch size {shape} is too small for the tile grid {grid} with min_tile={min_tile}: every axis "
            f"needs at least grid * min_tile = {needed} voxels. Use a larger patch size, a coarser tile grid "
            f"(fewer tiles per axis, e.g. (2, 2, 2) or (2, 2)), or a smaller min_tile."
        )
    return tuple(s // g for s, g in zip(shape, grid))


def tile_slices(spatial_shape: Sequence[int], grid: Sequence[int], min_tile: int = 4) -> list[tuple[slice, ...]]:
    """``T`` tuples of per-axis slices, C order over the grid; all tiles of shape ``spatial_shape // grid``.

    The remainder at the far end of each axis is in no tile, so every tile can swap places with every other.
    """
    size = tile_shape(spatial_shape, grid, min_tile)
    per_axis = [[slice(k * t, (k + 1) * t) for k in range(int(g))] for t, g in zip(size, grid)]
    return list(itertools.product(*per_axis))


def split_tiles(x: Tensor, grid: Sequence[int]) -> Tensor:
    """``(N, C, *S)`` -> ``(N, T, C, *tile)``: a copy of the tiles in C order (the remainder is dropped)."""
    grid = tuple(int(g) for g in grid)
    size = tile_shape(x.shape[2:], grid)
    n, c, d = x.shape[0], x.shape[1], len(grid)
    region = x[(slice(None), slice(None), *(slice(0, g * t) for g, t in zip(grid, size)))]
    split = region.reshape(n, c, *itertools.chain.from_iterable(zip(grid, size)))  # (N, C, g0, t0, g1, t1..)
    order = (0, *(2 + 2 * a for a in range(d)), 1, *(3 + 2 * a for a in range(d)))  # (N, g.., C, t..)
    return split.permute(order).reshape(n, math.prod(grid), c, *size)


def merge_tiles(tiles: Tensor, grid: Sequence[int], out: Tensor) -> Tensor:
    """Writes ``(N, T, C, *tile)`` tiles into the tile region of ``out`` ``(N, C, *S)`` (in place) and
    returns ``out``; the inverse of :func:`split_tiles`. The remainder of ``out`` is left as it is."""
    grid = tuple(int(g) for g in grid)
    size = tile_shape(out.shape[2:], grid)
    n, c, d = out.shape[0], out.shape[1], len(grid)
    if tuple(tiles.shape) != (n, math.prod(grid), c, *size):
        raise ValueError(
            f"tiles of shape {tuple(tiles.shape)} do not fit grid {grid} and output {tuple(out.shape)}; "
            f"expected {(n, math.prod(grid), c, *size)}."
        )
    grouped = tiles.reshape(n, *grid, c, *size)  # (N, g0, g1.., C, t0, t1..)
    order = [0, d + 1]
    for a in range(d):
        order += [1 + a, d + 2 + a]  # (N, C, g0, t0, g1, t1..)
    region = grouped.permute(order).reshape(n, c, *(g * t for g, t in zip(grid, size)))
    out[(slice(None), slice(None), *(slice(0, g * t) for g, t in zip(grid, size)))] = region
    return out


def shuffle_tiles(images: Tensor, grid: Sequence[int], permutations: Tensor) -> Tensor:
    """Output tile position ``t`` of sample ``n`` gets input tile ``permutations[n, t]`` (all channels).

    Args:
        images: ``(N, C, *S)``, 2D or 3D, any device.
        grid: tiles per spatial axis.
        permutations: ``(N, T)`` integer permutations of ``range(T)``; moved to the images' device.

    Returns:
        a new tensor like ``images``; voxels outside the tile region are copied unchanged.
    """
    grid = tuple(int(g) for g in grid)
    n, num_tiles = images.shape[0], math.prod(grid)
    perms = torch.as_tensor(permutations).to(device=images.device, dtype=torch.long)
    if tuple(perms.shape) != (n, num_tiles):
        raise ValueError(
            f"permutations must have shape (N, T) = ({n}, {num_tiles}) for grid {grid}, got {tuple(perms.shape)}."
        )
    if perms.device.type == "cpu" and n:  # checking on an accelerator would force a synchronising round trip
        if not torch.equal(perms.sort(dim=1).values, torch.arange(num_tiles).expand(n, num_tiles)):
            raise ValueError(f"every row of permutations must be a permutation of range({num_tiles}).")
    tiles = split_tiles(images, grid)
    shuffled = tiles[torch.arange(n, device=images.device)[:, None], perms]
    return merge_tiles(shuffled, grid, images.clone())
