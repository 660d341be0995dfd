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

The pool and the greedy selection are :mod:`~nnunet_slem.pretext.max_min_hamming`, shared with the jigsaw
permutation sets; a candidate is compared as its ``B * M`` (block, channel) entries and a running minimum over
all candidates is kept: the BraTS set (M=4, B=4, K=24) is built in a fraction of a second.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.max_min_hamming import MAX_EXHAUSTIVE, distinct_pool, greedy_max_min_hamming

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

#: the random candidate pool when ``(M!)^B > MAX_EXHAUSTIVE`` (the tile permutations use a smaller one)
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


def _exhaustive_candidates(num_perms: int, num_blocks: int) -> np.ndarray:
    """All ``P^B`` assignments as ``(P^B, B)`` permutation indices; row 0 is the identity."""
    total = num_perms**num_blocks
    dtype = np.int16 if num_perms < 2**15 else np.int64
    return np.stack(np.unravel_index(np.arange(total), (num_perms,) * num_blocks), axis=1).astype(dtype)


def _random_candidates(num_perms: int, num_blocks: int, pool_size: int, seed: int) -> np.ndarray:
    """``pool_size`` distinct assignments as permutation indices, identity first, in draw order."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        return rng.integers(0, num_perms, size=(n, num_blocks), dtype=np.int64)

    return distinct_pool(np.zeros((1, num_blocks), dtype=np.int64), draw, pool_size)


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
    # candidate i as a column of its B * M (block, channel) entries: Hamming distance = differing entries
    columns = np.ascontiguousarray(perms.astype(np.int8)[candidates].reshape(len(candidates), -1).T)
    chosen = greedy_max_min_hamming(columns, k, np.random.default_rng(seed))
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
