"""The fixed set of block-to-modality assignments that defines the SLeM pretext classes.

An *assignment* says, for each of the ``B`` blocks of a volume, which input modality ends up in each output
channel: it is an int array of shape ``(B, M)`` whose rows are permutations of ``range(M)``, and the pretext
writes ``out[c, block b] = in[assignment[b, c], block b]``. The pretext's class label is the index of the
assignment in a fixed set of ``K`` assignments.

Why a *chosen* set rather than all ``(M!)^B`` assignments: with BraTS (M=4 modalities, B=4 blocks) there are
331,776 assignments, far too many classes, and most of them differ from each other in a single block, which
makes the task about tiny details. Following the jigsaw permutation sets of Noroozi & Favaro (2016), we pick
the ``K`` assignments greedily so that they are as far apart as possible in Hamming distance (the number of
differing ``(block, channel)`` entries): every class then differs from every other class in many places and
the encoder has to look at the whole image.

The procedure (deterministic given ``(M, B, K, seed)``):

1. candidates = all ``(M!)^B`` assignments when that is at most ``MAX_EXHAUSTIVE`` (500,000), else a seeded
   random pool of ``RANDOM_POOL_SIZE`` (200,000) distinct assignments (the identity always included);
2. start the set with the identity assignment, so class 0 is the unshuffled image;
3. repeatedly add the candidate that maximises the minimum Hamming distance to the assignments already
   chosen, ties broken by a ``numpy`` RNG seeded with ``seed``.

Distances are computed per block from a ``(M!, M!)`` table of permutation-to-permutation distances and a
running minimum over all candidates is kept, so each greedy step costs ``B`` gathers over the candidates: the
BraTS set (M=4, B=4, K=24) is built in a few tens of milliseconds.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from nnunet_slem.errors import UserFacingError

__all__ = [
    "MAX_EXHAUSTIVE",
    "RANDOM_POOL_SIZE",
    "DEFAULT_MAX_ASSIGNMENTS",
    "PretextConfigError",
    "build_assignment_set",
    "default_num_assignments",
    "hamming_distances",
    "min_pairwise_hamming",
]

MAX_EXHAUSTIVE = 500_000
RANDOM_POOL_SIZE = 200_000
DEFAULT_MAX_ASSIGNMENTS = 24


class PretextConfigError(UserFacingError, ValueError):
    """A pretext setting that cannot work with the data; the message names the problem and the fix.

    It is a ``ValueError`` (what the caller passed is wrong) and a ``UserFacingError`` (the CLI prints it
    without a traceback).
    """


def _check_counts(num_modalities: int, num_blocks: int) -> None:
    if num_modalities < 2:
        raise PretextConfigError(
            f"SLeM needs at least two modalities/channels to recombine, but the data has {num_modalities}. "
            "The pretext classifies which modality sits in which block, so single-channel data has nothing "
            "to shuffle; use a multi-modal dataset (e.g. T1, T1ce, T2, FLAIR as separate channels)."
        )
    if num_blocks < 1:
        raise PretextConfigError(f"the block grid must have at least one block, got {num_blocks}.")


def default_num_assignments(num_modalities: int, num_blocks: int) -> int:
    """``min((M!)^B, 24)``: 24 classes for BraTS (M=4, B=4), 16 for CHAOS-like M=2, B=4."""
    _check_counts(num_modalities, num_blocks)
    return min(math.factorial(num_modalities) ** num_blocks, DEFAULT_MAX_ASSIGNMENTS)


def _all_permutations(num_modalities: int) -> np.ndarray:
    """``(M!, M)`` permutations in lexicographic order; row 0 is the identity."""
    return np.array(list(itertools.permutations(range(num_modalities))), dtype=np.int64)


def _perm_distance_table(perms: np.ndarray) -> np.ndarray:
    """``(P, P)`` Hamming distances between permutations, small ints for cheap gathers."""
    return (perms[:, None, :] != perms[None, :, :]).sum(-1).astype(np.int16)


def _exhaustive_candidates(num_perms: int, num_blocks: int) -> np.ndarray:
    """All ``P^B`` assignments as ``(P^B, B)`` permutation indices; row 0 is the identity."""
    total = num_perms**num_blocks
    dtype = np.int16 if num_perms < 2**15 else np.int64
    return np.stack(np.unravel_index(np.arange(total), (num_perms,) * num_blocks), axis=1).astype(dtype)


def _row_keys(rows: np.ndarray, num_perms: int) -> np.ndarray:
    """One sortable key per row: an integer code when ``P^B`` fits in int64, else a byte string."""
    num_blocks = rows.shape[1]
    if num_blocks * math.log2(num_perms) < 62:
        return rows @ (num_perms ** np.arange(num_blocks - 1, -1, -1, dtype=np.int64))
    return np.ascontiguousarray(rows).view(np.dtype((np.void, rows.dtype.itemsize * num_blocks))).ravel()


def _random_candidates(num_perms: int, num_blocks: int, pool_size: int, seed: int) -> np.ndarray:
    """``pool_size`` distinct assignments as permutation indices, identity first, in draw order.

    Kept in first-draw order (not sorted) so truncating to ``pool_size`` is not biased to low indices.
    """
    rng = np.random.default_rng(seed)
    pool = np.zeros((1, num_blocks), dtype=np.int64)  # the identity
    while len(pool) < pool_size:
        draw = rng.integers(0, num_perms, size=(pool_size - len(pool) + 1024, num_blocks), dtype=np.int64)
        pool = np.concatenate([pool, draw])
        _, first = np.unique(_row_keys(pool, num_perms), return_index=True)
        pool = pool[np.sort(first)]
    return pool[:pool_size]


def _greedy_max_min(
    candidates: np.ndarray, dist_table: np.ndarray, num_assignments: int, rng: np.random.Generator
) -> list[int]:
    """Indices into ``candidates`` of the greedy max-min-Hamming set; candidate 0 (identity) comes first.

    ``min_dist[i]`` is candidate ``i``'s distance to its nearest already-chosen assignment; chosen ones sit at
    0 and are never picked again because unchosen distinct candidates are always at distance >= 2.
    """
    num_blocks = candidates.shape[1]
    min_dist = np.full(len(candidates), np.iinfo(np.int32).max, dtype=np.int32)
    chosen: list[int] = []
    nxt = 0
    for _ in range(num_assignments):
        chosen.append(nxt)
        dist = np.zeros(len(candidates), dtype=np.int32)
        for b in range(num_blocks):
            dist += dist_table[candidates[:, b], candidates[nxt, b]]
        np.minimum(min_dist, dist, out=min_dist)
        best = np.flatnonzero(min_dist == min_dist.max())
        nxt = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
    return chosen


def build_assignment_set(
    num_modalities: int, num_blocks: int, num_assignments: int | None = None, seed: int = 0
) -> np.ndarray:
    """The pretext's class definitions: ``(K, B, M)`` int64, row 0 the identity, rows far apart.

    Args:
        num_modalities: ``M``, the number of input channels (>= 2).
        num_blocks: ``B``, the number of blocks of the grid (e.g. 4 for ``(2, 2, 1)``).
        num_assignments: ``K``; ``None`` means ``default_num_assignments(M, B)``.
        seed: seeds the tie-breaking (and the candidate pool when ``(M!)^B`` is large).
    """
    _check_counts(num_modalities, num_blocks)
    total = math.factorial(num_modalities) ** num_blocks
    k = default_num_assignments(num_modalities, num_blocks) if num_assignments is None else num_assignments
    if k < 2:
        raise PretextConfigError(
            f"the SLeM pretext needs at least 2 classes (assignments), got num_assignments={k}."
        )
    if k > total:
        raise PretextConfigError(
            f"num_assignments={k} is more than the {total} distinct assignments that exist for "
            f"{num_modalities} modalities and {num_blocks} blocks ((M!)^B = {math.factorial(num_modalities)}"
            f"^{num_blocks}); use num_assignments <= {total} or a finer block grid."
        )
    perms = _all_permutations(num_modalities)
    if total <= MAX_EXHAUSTIVE:
        candidates = _exhaustive_candidates(len(perms), num_blocks)
    else:
        candidates = _random_candidates(len(perms), num_blocks, max(RANDOM_POOL_SIZE, k), seed)
    rng = np.random.default_rng(seed)
    chosen = _greedy_max_min(candidates, _perm_distance_table(perms), k, rng)
    return perms[candidates[chosen].astype(np.int64)]


def hamming_distances(assignments: np.ndarray) -> np.ndarray:
    """``(K, K)`` numbers of differing ``(block, channel)`` entries between assignments."""
    flat = np.asarray(assignments).reshape(len(assignments), -1)
    return (flat[:, None, :] != flat[None, :, :]).sum(-1)


def min_pairwise_hamming(assignments: np.ndarray) -> int:
    """The smallest distance between two different assignments of the set (how hard the closest pair is)."""
    dist = hamming_distances(assignments)
    np.fill_diagonal(dist, np.iinfo(dist.dtype).max)
    return int(dist.min())
