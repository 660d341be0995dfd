"""Tile helpers (permutation set, tile grid, shuffle) and Taleb's multimodal puzzle pretext."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import Pretext
from nnunet_slem.pretext.taleb import TalebPuzzleConfig, TalebPuzzlePretext, default_tile_grid
from nnunet_slem.pretext.tiles import (
    build_permutation_set,
    invert_permutations,
    merge_tiles,
    permutation_hamming,
    shuffle_tiles,
    split_tiles,
    tile_slices,
)

# ------------------------------------------------------------------------------------ permutation set


def _min_distance(perms: np.ndarray) -> int:
    dist = permutation_hamming(perms)
    np.fill_diagonal(dist, perms.shape[1] + 1)
    return int(dist.min())


@pytest.mark.parametrize(("t", "k"), [(4, 24), (4, 10), (8, 30), (9, 12), (12, 6)])
def test_permutation_set_rows(t: int, k: int) -> None:
    p = build_permutation_set(t, k, seed=0)
    assert p.shape == (k, t) and p.dtype == np.int64
    assert np.array_equal(p[0], np.arange(t))  # class 0 = unshuffled
    assert (np.sort(p, axis=1) == np.arange(t)).all()  # rows are permutations
    assert len(np.unique(p, axis=0)) == k  # all distinct


@pytest.mark.parametrize("t", [8, 12])  # exhaustive candidates and the random pool
def test_permutation_set_is_deterministic_and_seeded(t: int) -> None:
    p = build_permutation_set(t, 20, seed=0)
    assert np.array_equal(p, build_permutation_set(t, 20, seed=0))
    assert any(not np.array_equal(p, build_permutation_set(t, 20, seed=s)) for s in (1, 2, 3))


def test_permutation_set_is_spread_out() -> None:
    t, k = 8, 30
    greedy = _min_distance(build_permutation_set(t, k, seed=0))
    rng = np.random.default_rng(0)
    random_sets = [np.stack([np.arange(t)] + [rng.permutation(t) for _ in range(k - 1)]) for _ in range(5)]
    assert greedy >= max(_min_distance(r) for r in random_sets)
    assert greedy >= 6  # far above the 2 of a neighbouring transposition


def test_full_permutation_set_is_all_permutations() -> None:
    p = build_permutation_set(4, 24, seed=3)
    assert {tuple(r) for r in p} == set(itertools.permutations(range(4)))


@pytest.mark.parametrize(("t", "k", "needle"), [(1, 2, "at least 2 tiles"), (3, 1, "at least 2"), (3, 7, "3! = 6")])
def test_permutation_set_errors(t: int, k: int, needle: str) -> None:
    with pytest.raises(PretextConfigError, match=needle):
        build_permutation_set(t, k)


# ------------------------------------------------------------------------------------------ tile grid


def test_tile_slices_c_order_and_remainder() -> None:
    slices = tile_slices((9, 13), (2, 3), min_tile=4)
    assert slices == [
        (slice(0, 4), slice(0, 4)),
        (slice(0, 4), slice(4, 8)),
        (slice(0, 4), slice(8, 12)),
        (slice(4, 8), slice(0, 4)),
        (slice(4, 8), slice(4, 8)),
        (slice(4, 8), slice(8, 12)),
    ]
    assert len(tile_slices((8, 8, 8), (2, 2, 2))) == 8


def test_tile_slices_error_names_patch_grid_and_fix() -> None:
    with pytest.raises(PretextConfigError) as err:
        tile_slices((16, 7), (2, 2), min_tile=4)
    msg = str(err.value)
    assert "(16, 7)" in msg and "(2, 2)" in msg and "larger patch" in msg and "min_tile" in msg
    with pytest.raises(PretextConfigError, match="one entry per spatial axis"):
        tile_slices((16, 16), (2, 2, 2))


@pytest.mark.parametrize(("shape", "grid"), [((9, 13), (2, 3)), ((5, 6, 7), (2, 2, 3))])
def test_split_and_merge_tiles(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    x = torch.arange(2 * 3 * math.prod(shape), dtype=torch.float32).reshape(2, 3, *shape)
    tiles = split_tiles(x, grid)
    for t, sl in enumerate(tile_slices(shape, grid, min_tile=1)):
        assert torch.equal(tiles[:, t], x[(slice(None), slice(None), *sl)])
    assert torch.equal(
        merge_tiles(tiles, grid, torch.zeros_like(x) - 1)[(..., *tile_slices(shape, grid, 1)[0])], tiles[:, 0]
    )
    assert torch.equal(merge_tiles(tiles, grid, x.clone()), x)


@pytest.mark.parametrize(("shape", "grid"), [((8, 9), (2, 2)), ((5, 6, 5), (2, 3, 1))])
def test_shuffle_tiles_identity_known_and_inverse(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    n, t = 3, math.prod(grid)
    x = torch.arange(n * 2 * math.prod(shape), dtype=torch.float32).reshape(n, 2, *shape)
    ident = torch.arange(t).expand(n, t)
    assert torch.equal(shuffle_tiles(x, grid, ident), x)

    g = torch.Generator().manual_seed(0)
    perms = torch.stack([torch.randperm(t, generator=g) for _ in range(n)])
    y = shuffle_tiles(x, grid, perms)
    sl = tile_slices(shape, grid, min_tile=1)
    for i in range(n):
        for pos in range(t):
            assert torch.equal(y[(i, slice(None), *sl[pos])], x[(i, slice(None), *sl[int(perms[i, pos])])])
    mask = torch.ones(shape, dtype=torch.bool)
    for s in sl:
        mask[s] = False
    assert mask.any() and torch.equal(y[..., mask], x[..., mask])  # the remainder stays in place
    assert torch.equal(shuffle_tiles(y, grid, invert_permutations(perms)), x)
    assert not torch.equal(y, x)


def test_shuffle_tiles_rejects_bad_permutations() -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        shuffle_tiles(x, (2, 2), torch.arange(3)[None])
    with pytest.raises(ValueError, match="permutation"):
        shuffle_tiles(x, (2, 2), torch.tensor([[0, 0, 1, 2]]))


# -------------------------------------------------------------------------------------- Taleb puzzle


def _images(n: int, m: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Modalities that differ in pattern and level, so a tile tells which modality it came from."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, m + 1, dtype=torch.float32).reshape(1, m, *([1] * len(shape)))
    return torch.rand((n, m, *shape), generator=g) * scale * 100 + scale * 1000


def _zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std(unbiased=False)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_config_defaults_and_dict_round_trip() -> None:
    assert default_tile_grid(3) == (2, 2, 2) and default_tile_grid(2) == (3, 3)
    with pytest.raises(PretextConfigError, match="2D and 3D"):
        default_tile_grid(4)
    cfg = TalebPuzzleConfig()
    assert cfg.grid is None and cfg.num_permutations == 100 and cfg.modality_per_tile
    assert TalebPuzzleConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg = TalebPuzzleConfig(grid=[2, 3], num_permutations=7, seed=4)
    assert cfg.grid == (2, 3) and TalebPuzzleConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(PretextConfigError, match="unknown Taleb puzzle setting"):
        TalebPuzzleConfig.from_dict({"grid": None, "jitter": 0.1})
    for bad in ({"grid": (1, 1)}, {"grid": (2, 0)}, {"num_permutations": 1}, {"min_tile": 0}):
        with pytest.raises(PretextConfigError):
            TalebPuzzleConfig(**bad)


def test_pretext_defaults_and_protocol() -> None:
    p3 = TalebPuzzlePretext(TalebPuzzleConfig(), num_modalities=4, spatial_dims=3)
    assert isinstance(p3, Pretext) and p3.name == "taleb" and p3.kind == "classification"
    assert p3.grid == (2, 2, 2) and p3.num_classes == 100 and p3.chance == pytest.approx(0.01)
    p2 = TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2)), num_modalities=2, spatial_dims=2)
    assert p2.num_classes == 24  # capped at 4!
    with pytest.raises(PretextConfigError, match="one entry per spatial axis"):
        TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2)), num_modalities=2, spatial_dims=3)


def test_check_patch_mentions_grid() -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(num_permutations=5), num_modalities=2, spatial_dims=3)
    p.check_patch((8, 8, 8))
    with pytest.raises(PretextConfigError) as err:
        p.check_patch((8, 8, 7))
    assert "tile grid (2, 2, 2)" in str(err.value) and "(8, 8, 7)" in str(err.value)
    with pytest.raises(PretextConfigError, match="3D"):
        p.check_patch((8, 8))


@pytest.mark.parametrize(("shape", "grid"), [((12, 12), (3, 3)), ((8, 8, 8), (2, 2, 2)), ((9, 8, 10), (2, 2, 2))])
def test_puzzle_shape_dtype_labels_and_replication(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=grid, num_permutations=10), 3, len(shape))
    x = _images(4, 3, shape)
    out, labels = p(x, _gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert labels.shape == (4,) and labels.dtype == torch.long
    assert ((labels >= 0) & (labels < 10)).all()
    assert torch.equal(out, out[:, :1].expand_as(out))  # the one-channel puzzle in every channel
    sl = tile_slices(shape, grid, min_tile=1)
    for i, s in itertools.product(range(4), sl):
        tile = out[(i, 0, *s)]
        assert abs(float(tile.mean())) < 1e-4 and float(tile.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    mask = torch.ones(shape, dtype=torch.bool)
    for s in sl:
        mask[s] = False
    assert (out[..., mask] == 0).all()  # the remainder (if any) is 0 for every class


def test_labels_cover_all_classes() -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2), num_permutations=6), 2, 2)
    _, labels = p(torch.rand(300, 2, 8, 8), _gen(1))
    assert set(labels.tolist()) == set(range(6))


def test_puzzle_is_deterministic_per_generator_seed() -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2, 2), num_permutations=20), 2, 3)
    x = _images(3, 2, (8, 8, 8))
    a, la = p(x, _gen(5))
    b, lb = p(x, _gen(5))
    c, lc = p(x, _gen(6))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(("shape", "grid"), [((12, 12), (3, 3)), ((8, 8, 8), (2, 2, 2))])
def test_identity_single_modality_is_per_tile_zscore(shape: tuple[int, ...], grid: tuple[int, ...]) -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=grid, num_permutations=5), num_modalities=1, spatial_dims=len(shape))
    x = _images(2, 1, shape)
    out = p.apply(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, p.num_tiles, dtype=torch.long))
    expected = x.clone()
    for i, s in itertools.product(range(2), tile_slices(shape, grid, min_tile=1)):
        expected[(i, 0, *s)] = _zscore(x[(i, 0, *s)])
    torch.testing.assert_close(out, expected)


def test_apply_takes_each_tile_from_its_modality_then_shuffles() -> None:
    shape, grid, m = (8, 12), (2, 3), 3
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=grid, num_permutations=8), m, 2)
    x = _images(2, m, shape)
    labels = torch.tensor([3, 7])
    modalities = torch.tensor([[0, 1, 2, 2, 1, 0], [2, 2, 0, 1, 0, 1]])
    out = p.apply(x, labels, modalities)
    sl = tile_slices(shape, grid, min_tile=1)
    for i, pos in itertools.product(range(2), range(p.num_tiles)):
        src = int(p.permutations[labels[i], pos])
        expected = _zscore(x[(i, int(modalities[i, src]), *sl[src])])
        for c in range(m):
            torch.testing.assert_close(out[(i, c, *sl[pos])], expected)


@pytest.mark.parametrize("shape", [(12, 12), (8, 8, 8)])
def test_every_output_tile_comes_from_exactly_one_modality(shape: tuple[int, ...]) -> None:
    """By content: tiles of random patterns match one (position, modality) source and nothing else."""
    m, n = 3, 3
    p = TalebPuzzlePretext(TalebPuzzleConfig(num_permutations=12), m, len(shape))
    x = _images(n, m, shape, seed=2)
    out, labels, modalities = p.sample(x, _gen(3))
    sl = tile_slices(shape, p.grid, min_tile=1)
    used = set()
    for i, pos in itertools.product(range(n), range(p.num_tiles)):
        got = out[(i, 0, *sl[pos])]
        matches = [
            (src, mod)
            for src, mod in itertools.product(range(p.num_tiles), range(m))
            if torch.allclose(got, _zscore(x[(i, mod, *sl[src])]), atol=1e-4)
        ]
        src = int(p.permutations[labels[i], pos])
        assert matches == [(src, int(modalities[i, src]))]
        used.add(matches[0][1])
    assert used == set(range(m))  # tiles really come from different modalities


def test_sample_modalities_per_tile_and_per_sample() -> None:
    per_tile = TalebPuzzlePretext(TalebPuzzleConfig(grid=(3, 3), num_permutations=5), 4, 2)
    mods = per_tile.sample_modalities(200, _gen(0))
    assert mods.shape == (200, 9) and mods.dtype == torch.long
    assert set(mods.unique().tolist()) == set(range(4))
    assert (mods != mods[:, :1]).any(dim=1).float().mean() > 0.9  # tiles vary within a sample
    counts = torch.bincount(mods.flatten(), minlength=4).float() / mods.numel()
    assert (counts - 0.25).abs().max() < 0.05  # uniform over the modalities

    per_sample = TalebPuzzlePretext(TalebPuzzleConfig(grid=(3, 3), num_permutations=5, modality_per_tile=False), 4, 2)
    mods = per_sample.sample_modalities(200, _gen(0))
    assert (mods == mods[:, :1]).all() and set(mods[:, 0].tolist()) == set(range(4))


def test_state_dict_round_trip_gives_identical_puzzles() -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2, 2), num_permutations=15, seed=3), 2, 3)
    state = json.loads(json.dumps(p.state_dict()))
    assert state["format_version"] == 1 and state["num_modalities"] == 2 and state["spatial_dims"] == 3
    assert state["permutations"] == p.permutations.tolist() and state["config"]["grid"] == [2, 2, 2]
    q = TalebPuzzlePretext.from_state_dict(state)
    assert torch.equal(q.permutations, p.permutations)
    x = _images(3, 2, (8, 8, 8))
    a, la = p(x, _gen(9))
    b, lb = q(x, _gen(9))
    assert torch.equal(a, b) and torch.equal(la, lb)

    stored = dict(state, permutations=state["permutations"][::-1])  # the stored set wins over a rebuild
    assert torch.equal(TalebPuzzlePretext.from_state_dict(stored).permutations, p.permutations.flip(0))
    with pytest.raises(PretextConfigError, match="format_version"):
        TalebPuzzlePretext.from_state_dict(dict(state, format_version=2))
    with pytest.raises(PretextConfigError, match="distinct"):
        TalebPuzzlePretext.from_state_dict(dict(state, permutations=[state["permutations"][0]] * 3))


def test_bad_inputs_are_rejected() -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2), num_permutations=5), 2, 2)
    with pytest.raises(ValueError, match="expected images"):
        p(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="floating point"):
        p(torch.zeros(1, 2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be in"):
        p.apply(torch.rand(1, 2, 8, 8), [5], torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="modalities must be in"):
        p.apply(torch.rand(1, 2, 8, 8), [0], torch.full((1, 4), 2))


def test_single_modality_plain_jigsaw_and_loss_score() -> None:
    p = TalebPuzzlePretext(TalebPuzzleConfig(grid=(2, 2), num_permutations=4), 1, 2)
    out, labels = p(torch.rand(5, 1, 8, 8), _gen(0))
    assert out.shape == (5, 1, 8, 8)
    logits = torch.nn.functional.one_hot(labels, p.num_classes).float() * 10
    assert float(p.loss(logits, labels)) < 1e-3
    total, count = p.score(logits, labels)
    assert int(total) == count == 5
