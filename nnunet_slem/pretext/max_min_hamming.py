"""The greedy max-min-Hamming selection behind every fixed class set of the shuffling pretexts.

SLeM's block-to-modality assignments (:mod:`~nnunet_slem.pretext.assignments`), the jigsaw permutations of
Taleb's puzzle and of JiGen (:mod:`~nnunet_slem.pretext.tiles`) all pick ``K`` classes out of far too many
candidates the way Noroozi & Favaro (2016) picked their jigsaw permutations: start with the identity, then
repeatedly add the candidate whose Hamming distance to the nearest chosen one is largest, so every class
differs from every other in many places. The callers differ only in what a candidate is (a permutation of
the tiles; a permutation of the modalities per block, flattened) and in the size of the random candidate pool
when there are too many candidates to try them all; both are parameters here, so each caller's sets stay
exactly what they were.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["MAX_EXHAUSTIVE", "distinct_pool", "greedy_max_min_hamming"]

#: above this many candidates a caller draws a random pool instead of enumerating them all
MAX_EXHAUSTIVE = 500_000


def distinct_pool(first: np.ndarray, draw: Callable[[int], np.ndarray], pool_size: int) -> np.ndarray:
    """``pool_size`` distinct rows: ``first`` (``(1, L)``, the identity), then rows of ``draw(n)`` (``(n, L)``,
    same dtype) in first-draw order, drawing until enough distinct ones are found.

    Kept in first-draw order (not sorted) so that truncating to ``pool_size`` is not biased to small rows.
    """
    pool = first
    while len(pool) < pool_size:
        pool = np.concatenate([pool, draw(pool_size - len(pool) + 1024)])
        keys = np.ascontiguousarray(pool).view(np.dtype((np.void, pool.dtype.itemsize * pool.shape[1]))).ravel()
        _, first_index = np.unique(keys, return_index=True)  # the first occurrence of every distinct row
        pool = pool[np.sort(first_index)]
    return pool[:pool_size]


def greedy_max_min_hamming(columns: np.ndarray, size: int, rng: np.random.Generator) -> list[int]:
    """Indices of ``size`` candidates chosen greedily by max-min Hamming distance; candidate 0 comes first.

    ``columns`` is ``(L, count)``: candidate ``i`` is the column ``columns[:, i]`` of ``L`` entries (stored
    column by column so each step is ``L`` contiguous comparisons over the pool). Ties are broken with ``rng``,
    which is drawn from only when there is more than one best candidate. ``min_dist[i]`` is candidate ``i``'s
    distance to its nearest chosen one; chosen ones sit at 0 and are never picked again, since distinct
    candidates differ somewhere.
    """
    length, count = columns.shape
    dtype = np.int16 if length < 2**15 - 1 else np.int32
    min_dist = np.full(count, length + 1, dtype=dtype)
    chosen: list[int] = []
    nxt = 0
    for _ in range(size):
        chosen.append(nxt)
        same = np.zeros(count, dtype=dtype)
        for entry in range(length):
            same += columns[entry] == columns[entry, nxt]
        np.minimum(min_dist, length - same, out=min_dist)
        best = np.flatnonzero(min_dist == min_dist.max())
        nxt = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
    return chosen
