"""The one max-min-Hamming builder behind SLeM's assignment sets and the jigsaw permutation sets (Taleb,
JiGen), and the one intensity augmentation of the SLeM and supervoxel pretexts."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from nnunet_slem.pretext.assignments import build_assignment_set, min_pairwise_hamming
from nnunet_slem.pretext.intensity_aug import (
    BRIGHTNESS_RANGE,
    CONTRAST_RANGE,
    GAMMA_RANGE,
    intensity_params,
    intensity_transform,
)
from nnunet_slem.pretext.max_min_hamming import distinct_pool, greedy_max_min_hamming
from nnunet_slem.pretext.tiles import build_permutation_set, capped_permutation_count


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()[:16]


# (M, B, K, seed) -> (sha256 prefix of the whole set, its row 1). Exhaustive candidates for (4, 4) and (2, 4),
# the 200,000-candidate random pool for (4, 8).
ASSIGNMENT_FINGERPRINTS = {
    (4, 4, None, 0): ("d33d75523d370100", [[3, 2, 0, 1], [2, 3, 1, 0], [3, 2, 1, 0], [1, 0, 3, 2]]),
    (2, 4, None, 0): ("148ed48b64d7eaad", [[1, 0], [1, 0], [1, 0], [1, 0]]),
    (4, 8, None, 0): ("accdce14e9c0411e", [[3, 0, 1, 2], [3, 2, 1, 0], [3, 2, 0, 1], [1, 2, 3, 0], [2, 0, 3, 1],
                                           [2, 3, 1, 0], [1, 0, 3, 2], [2, 3, 1, 0]]),
}
# (T, K, seed) -> (sha256 prefix, row 1). Taleb's defaults (100 of 2x2x2 or 3x3 tiles), JiGen's (30), and the
# 100,000-candidate random pool for T = 10.
PERMUTATION_FINGERPRINTS = {
    (8, 100, 0): ("27c85ed4d0827a6d", [6, 4, 5, 7, 1, 3, 2, 0]),
    (9, 100, 0): ("5f15ecfbfd5cfd35", [7, 3, 8, 6, 5, 4, 2, 0, 1]),
    (8, 30, 0): ("7bcd5fe4546ec05f", [6, 4, 5, 7, 1, 3, 2, 0]),
    (9, 30, 0): ("39945a136694450c", [7, 3, 8, 6, 5, 4, 2, 0, 1]),
    (10, 30, 0): ("6b1be15178a8f249", [7, 3, 1, 6, 5, 2, 9, 8, 4, 0]),
}


@pytest.mark.parametrize("args", list(ASSIGNMENT_FINGERPRINTS))
def test_assignment_sets_are_the_pre_refactor_sets(args: tuple) -> None:
    """Pins the sets that ``build_assignment_set`` gave before the greedy selection and the candidate pool moved
    to ``max_min_hamming`` (fingerprints computed with the old code): stored pretext states and class labels of
    earlier runs keep meaning the same assignments."""
    sha, row1 = ASSIGNMENT_FINGERPRINTS[args]
    a = build_assignment_set(*args)
    assert a[0].tolist() == [list(range(args[0]))] * args[1]  # class 0 is the identity
    assert a[1].tolist() == row1
    assert _sha(a) == sha


@pytest.mark.parametrize("args", list(PERMUTATION_FINGERPRINTS))
def test_permutation_sets_are_the_pre_refactor_sets(args: tuple) -> None:
    """Pins the sets that ``build_permutation_set`` gave before the refactor (Taleb's puzzle and JiGen)."""
    sha, row1 = PERMUTATION_FINGERPRINTS[args]
    p = build_permutation_set(*args)
    assert p[0].tolist() == list(range(args[0]))
    assert p[1].tolist() == row1
    assert _sha(p) == sha


def test_greedy_picks_the_farthest_candidate_first() -> None:
    rows = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [1, 0, 3, 2], [0, 1, 3, 2]], dtype=np.int8)
    chosen = greedy_max_min_hamming(np.ascontiguousarray(rows.T), 3, np.random.default_rng(0))
    assert chosen[:2] == [0, 2]  # row 2 differs from the identity in all 4 places, the others in 2
    assert len(set(chosen)) == 3


def test_distinct_pool_keeps_first_draw_order() -> None:
    draws = iter([np.array([[1, 1], [0, 0], [2, 2], [1, 1]]), np.array([[3, 3]] * 1030)])
    pool = distinct_pool(np.zeros((1, 2), dtype=np.int64), lambda n: next(draws), 4)
    assert pool.tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]


def test_caller_pool_sizes_give_different_but_valid_sets() -> None:
    a = build_assignment_set(4, 8, 24, seed=1)  # 24^8 candidates: a random pool
    assert len(np.unique(a.reshape(len(a), -1), axis=0)) == 24 and min_pairwise_hamming(a) >= 16
    assert capped_permutation_count(4, 100) == math.factorial(4) and capped_permutation_count(9, 30) == 30


# ------------------------------------------------------------------------------------- intensity augmentation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_intensity_params_map_uniforms_onto_the_ranges_in_their_dtype(dtype: torch.dtype) -> None:
    u = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]], dtype=dtype)
    p = intensity_params(u)
    assert p.dtype == dtype
    expected = [
        [GAMMA_RANGE[0], CONTRAST_RANGE[0], BRIGHTNESS_RANGE[0]],
        [math.sqrt(GAMMA_RANGE[0] * GAMMA_RANGE[1]), sum(CONTRAST_RANGE) / 2, sum(BRIGHTNESS_RANGE) / 2],
        [GAMMA_RANGE[1], CONTRAST_RANGE[1], BRIGHTNESS_RANGE[1]],
    ]
    torch.testing.assert_close(p, torch.tensor(expected, dtype=dtype))


def test_slem_batch_params_equal_the_supervoxel_per_sample_params() -> None:
    """SLeM draws ``(N, B, M, 3)`` uniforms at once, the supervoxel pretext ``(M, 3)`` per sample: for the same
    numbers both get the same parameters, bit for bit, from the one implementation."""
    u = torch.rand(3, 4, 2, 3, generator=torch.Generator().manual_seed(0))
    batch = intensity_params(u)
    for i in range(3):
        for b in range(4):
            assert torch.equal(batch[i, b], intensity_params(u[i, b]))


def test_intensity_transform_without_mask_equals_an_all_true_mask() -> None:
    x = torch.rand(2, 50, generator=torch.Generator().manual_seed(1)) * 100
    params = intensity_params(torch.rand(2, 3, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(intensity_transform(x, params), intensity_transform(x, params, torch.ones(1, 50, dtype=bool)))
