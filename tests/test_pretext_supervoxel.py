"""Supervoxel pretext: multi-modal SLIC supervoxels, their cache, the (support, query) pairs and the loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext import supervoxel_cache as sv
from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import Pretext
from nnunet_slem.pretext.supervoxel import SupervoxelConfig, SupervoxelPretext
from nnunet_slem.pretext.supervoxel_cache import SupervoxelCache, body_mask, cache_folder_name, compute_supervoxels

S = 24


def _impurity(ids: np.ndarray, region: np.ndarray) -> float:
    """Fraction of voxels in the minority part (inside/outside ``region``) of their supervoxel."""
    bad = 0
    for v in np.unique(ids):
        r = region[ids == v]
        bad += min(int(r.sum()), int((~r).sum()))
    return bad / ids.size


def _two_pattern_volume(noise: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel 0 shows only a slab, channel 1 only a cube (with a little noise, so there is no body mask)."""
    slab = np.zeros((S, S, S), bool)
    slab[:, :, :10] = True
    cube = np.zeros((S, S, S), bool)
    cube[7:19, 5:17, 6:18] = True
    x = np.zeros((2, S, S, S), np.float32)
    x[0][slab] = 1.0
    x[1][cube] = 1.0
    x += np.random.default_rng(0).normal(0, noise, x.shape).astype(np.float32)
    return x, slab, cube


# ------------------------------------------------------------------------------------------------ config


def test_config_round_trip_and_unknown_keys() -> None:
    c = SupervoxelConfig(n_segments=50, compactness=0.3, flip=False)
    assert SupervoxelConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(PretextConfigError, match="unknown supervoxel pretext setting"):
        SupervoxelConfig.from_dict({**c.to_dict(), "n_segmnts": 3})
    for bad in ({"n_segments": 0}, {"compactness": 0.0}, {"min_fraction": 1.0}, {"temperature": -1.0},
                {"embedding_dim": 1}):
        with pytest.raises(PretextConfigError):
            SupervoxelConfig(**bad)


# ------------------------------------------------------------------------------------------- supervoxels


def test_supervoxels_follow_boundaries_of_every_modality() -> None:
    x, slab, cube = _two_pattern_volume()
    ids = compute_supervoxels(x, SupervoxelConfig(n_segments=40))
    assert ids.dtype == np.int32 and ids.shape == (S, S, S)
    assert ids.min() == 1 and len(np.unique(ids)) > 10
    assert _impurity(ids, slab) < 0.02
    assert _impurity(ids, cube) < 0.02
    # control: from channel 0 alone the cube is invisible, so its boundary is crossed; the test can fail
    only_slab = compute_supervoxels(x[:1], SupervoxelConfig(n_segments=40))
    assert _impurity(only_slab, cube) > 0.04


def test_three_modalities_are_not_treated_as_rgb() -> None:
    x, slab, cube = _two_pattern_volume()
    x3 = np.concatenate([x, x[:1] * 0.5], axis=0)
    ids = compute_supervoxels(x3, SupervoxelConfig(n_segments=40))
    assert _impurity(ids, slab) < 0.02 and _impurity(ids, cube) < 0.02


def test_supervoxels_2d() -> None:
    x, slab, cube = _two_pattern_volume()
    ids = compute_supervoxels(x[:, 12], SupervoxelConfig(n_segments=15))  # a slice through slab and cube
    assert ids.shape == (S, S) and ids.min() == 1 and ids.max() > 5
    assert _impurity(ids, slab[12]) < 0.03 and _impurity(ids, cube[12]) < 0.03
    assert _impurity(compute_supervoxels(x[:1, 12], SupervoxelConfig(n_segments=15)), cube[12]) > 0.08


def test_background_mask_rule() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 16, 16, 16)).astype(np.float32)
    grid = np.indices((16, 16, 16)) - 7.5
    body = (grid**2).sum(0) < 6.5**2  # about 27 % of the voxels
    x[:, ~body] = 0.0
    x[1, body & (grid[0] > 0)] = 0.0  # a channel may be 0 inside too: "any channel differs" keeps it
    assert np.array_equal(body_mask(x), body)
    ids = compute_supervoxels(x, SupervoxelConfig(n_segments=20))
    assert (ids[~body] == 0).all() and (ids[body] > 0).all()
    # a background of under 5 % is no mask: everything gets a supervoxel
    y = rng.normal(0, 1, (2, 16, 16, 16)).astype(np.float32)
    y[:, :2, :2, :] = 0.0
    assert body_mask(y) is None
    assert (compute_supervoxels(y, SupervoxelConfig(n_segments=20)) > 0).all()
    # a body of under 5 % is no mask either
    z = np.zeros((1, 16, 16, 16), np.float32)
    z[0, :2, :2, :2] = 1.0
    assert body_mask(z) is None


def test_supervoxels_are_deterministic() -> None:
    x, _, _ = _two_pattern_volume(noise=0.2)
    config = SupervoxelConfig(n_segments=30)
    assert np.array_equal(compute_supervoxels(x, config), compute_supervoxels(x.copy(), config))


def test_non_finite_image_is_rejected() -> None:
    x, _, _ = _two_pattern_volume()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_supervoxels(x, SupervoxelConfig())


# ------------------------------------------------------------------------------------------------- cache


class _FakeSource:
    def __init__(self, images: dict[str, np.ndarray]) -> None:
        self.names, self.images = list(images), list(images.values())

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        return self.images[index]

    def case_name(self, index: int) -> str:
        return self.names[index]


@pytest.fixture
def source() -> _FakeSource:
    x, _, _ = _two_pattern_volume()
    return _FakeSource({"case_a": x[:, :12, :12, :12].copy(), "case_b": x[:, 8:20, 8:20, 8:16].copy()})


def test_cache_computes_once_and_loads_memory_mapped(tmp_path: Path, source, monkeypatch) -> None:
    calls = []
    original = sv.compute_supervoxels
    monkeypatch.setattr(sv, "compute_supervoxels",
                        lambda img, cfg, spacing=None: calls.append(1) or original(img, cfg, spacing))
    folder = tmp_path / cache_folder_name("nnUNetPlans_3d_fullres")
    assert folder.name == "slem_supervoxels__nnUNetPlans_3d_fullres"
    config = SupervoxelConfig(n_segments=10)
    cache = SupervoxelCache(folder, config)
    assert cache.ensure(source) == 2 and len(calls) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["case_a.npy", "case_b.npy", "config.json"]
    mtime = (folder / "case_a.npy").stat().st_mtime_ns
    assert SupervoxelCache(folder, config).ensure(source) == 0 and len(calls) == 2
    assert (folder / "case_a.npy").stat().st_mtime_ns == mtime
    ids = cache.load(source, 1)
    assert isinstance(ids, np.memmap) and ids.dtype == np.int32 and ids.shape == (12, 12, 8)
    assert np.array_equal(ids, original(source.image(1), config))
    # a corrupt file is named on load and recomputed by the next ensure
    (folder / "case_b.npy").write_bytes(b"not a numpy file")
    with pytest.raises(UserFacingError, match="case_b.npy"):
        cache.load(source, 1)
    assert cache.ensure(source) == 1 and len(calls) == 3
    (folder / "case_a.npy").unlink()
    with pytest.raises(UserFacingError, match="No supervoxels for case case_a"):
        cache.load(source, 0)


def test_cache_rejects_other_settings(tmp_path: Path, source) -> None:
    SupervoxelCache(tmp_path, SupervoxelConfig(n_segments=10)).ensure(source)
    SupervoxelCache(tmp_path, SupervoxelConfig(n_segments=10, embedding_dim=8))  # not a supervoxel setting
    with pytest.raises(PretextConfigError, match=rf"{tmp_path}.*Delete that folder"):
        SupervoxelCache(tmp_path, SupervoxelConfig(n_segments=11))
    with pytest.raises(PretextConfigError, match="compactness"):
        SupervoxelCache(tmp_path, SupervoxelConfig(n_segments=10, compactness=1.0))


# ------------------------------------------------------------------------------------------------ spacing


def _physical_extent(ids: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Mean over supervoxels of the standard deviation of their voxels' positions in mm, per axis."""
    position = np.indices(ids.shape).reshape(ids.ndim, -1).T * np.asarray(spacing)
    flat = ids.ravel()
    return np.mean([position[flat == v].std(0) for v in np.unique(flat)], axis=0)


def test_anisotropic_spacing_gives_supervoxels_compact_in_millimetres() -> None:
    """3 mm along axis 0, 1 mm in-plane: without the spacing SLIC makes supervoxels compact in voxels, which in
    millimetres are stretched ~2.5x along the coarse axis; with it they are compact in millimetres."""
    spacing = (3.0, 1.0, 1.0)
    x = np.random.default_rng(0).normal(0, 1, (2, 16, 48, 48)).astype(np.float32)
    config = SupervoxelConfig(n_segments=50, compactness=0.3)
    without = _physical_extent(compute_supervoxels(x, config), spacing)
    with_spacing = compute_supervoxels(x, config, spacing)
    extent = _physical_extent(with_spacing, spacing)
    assert without[0] / without[1:].mean() > 2.0, without
    assert extent[0] / extent[1:].mean() < 1.3, extent
    # only the ratio matters (compactness keeps its meaning); isotropic spacing changes nothing
    assert np.array_equal(compute_supervoxels(x, config, (6.0, 2.0, 2.0)), with_spacing)
    assert np.array_equal(compute_supervoxels(x, config, (5.0, 5.0, 5.0)), compute_supervoxels(x, config))
    with pytest.raises(ValueError, match="spacing"):
        compute_supervoxels(x, config, (1.0, 1.0))


def test_spacing_is_part_of_the_cache_key(tmp_path: Path, source) -> None:
    config = SupervoxelConfig(n_segments=10)
    cache = SupervoxelCache(tmp_path, config, (3.0, 1.0, 1.0))
    cache.ensure(source)
    assert json.loads((tmp_path / "config.json").read_text())["spacing"] == [3.0, 1.0, 1.0]
    assert np.array_equal(cache.load(source, 0), compute_supervoxels(source.image(0), config, (3.0, 1.0, 1.0)))
    with pytest.raises(PretextConfigError, match="spacing"):
        SupervoxelCache(tmp_path, config, (1.0, 1.0, 1.0))
    with pytest.raises(PretextConfigError, match="spacing"):
        SupervoxelCache(tmp_path, config)
    # a cache written before the spacing was recorded was isotropic: reused by isotropic runs only
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(config.supervoxel_params()))
    SupervoxelCache(old, config, (2.0, 2.0, 2.0))
    with pytest.raises(PretextConfigError, match="spacing"):
        SupervoxelCache(old, config, (3.0, 1.0, 1.0))


def test_the_pretext_reads_the_spacing_from_the_plans(tmp_path: Path) -> None:
    """``extra_input`` finds the configuration by its data identifier, inherited keys included (as nnU-Net)."""
    from tests.plans_factory import make_plans

    plans = make_plans()
    plans["configurations"]["cfg"]["spacing"] = [3.0, 1.0, 1.0]
    plans["configurations"]["cfg_copy"] = {"inherits_from": "cfg"}
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}}))
    assert sv.plans_spacing(tmp_path, "nnUNetPlans_cfg") == (3.0, 1.0, 1.0)
    assert sv.plans_spacing(tmp_path, "nnUNetPlans_2d") is None
    cache = SupervoxelPretext(SupervoxelConfig()).extra_input(tmp_path, "nnUNetPlans_cfg")
    assert cache.spacing == (3.0, 1.0, 1.0)
    plans["configurations"]["cfg_copy"]["spacing"] = [1.0, 1.0, 1.0]
    (tmp_path / "otherPlans.json").write_text(json.dumps(plans))
    with pytest.raises(UserFacingError, match="different spacings"):
        sv.plans_spacing(tmp_path, "nnUNetPlans_cfg")


# ----------------------------------------------------------------------------------------------- pretext


def _patches(n: int = 2, shape: tuple[int, ...] = (8, 8, 8), m: int = 2) -> torch.Tensor:
    """Random images plus an id map of four slabs along the first axis (ids 1..4)."""
    g = torch.Generator().manual_seed(5)
    images = torch.rand((n, m, *shape), generator=g)
    ids = (torch.arange(shape[0]) * 4 // shape[0] + 1).float().reshape(-1, *([1] * (len(shape) - 1)))
    return torch.cat([images, ids.expand(shape).expand(n, 1, *shape)], dim=1)


def test_pretext_protocol_and_patch_check() -> None:
    p = SupervoxelPretext(SupervoxelConfig(embedding_dim=16))
    assert isinstance(p, Pretext)
    assert (p.name, p.kind, p.extra_channels, p.num_classes, p.chance) == ("supervoxel", "dense", 1, 16, None)
    p.check_patch((8, 8, 8))
    p.check_patch((16, 16))
    with pytest.raises(PretextConfigError, match="at least 8 voxels"):
        p.check_patch((16, 4, 16))


def test_pairs_are_interleaved_and_masks_are_the_chosen_supervoxel() -> None:
    p = SupervoxelPretext(SupervoxelConfig(flip=False, intensity_aug=False))
    images = _patches(3)
    inputs, masks, draws = p.sample(images, torch.Generator().manual_seed(0))
    assert inputs.shape == (6, 2, 8, 8, 8) and masks.shape == (6, 8, 8, 8) and masks.dtype == torch.float32
    for i, draw in enumerate(draws):
        assert draw.supervoxel in (1, 2, 3, 4) and draw.flips == ()
        assert torch.equal(inputs[2 * i], images[i, :2]) and torch.equal(inputs[2 * i + 1], images[i, :2])
        expected = (images[i, 2] == draw.supervoxel).float()
        assert torch.equal(masks[2 * i], expected) and torch.equal(masks[2 * i + 1], expected)
    # uniform over the qualifying supervoxels: all four get picked
    picks = {p.sample(images[:1], torch.Generator().manual_seed(s))[2][0].supervoxel for s in range(40)}
    assert picks == {1, 2, 3, 4}


def test_query_is_the_flipped_support_with_its_mask() -> None:
    p = SupervoxelPretext(SupervoxelConfig(intensity_aug=False))
    images = _patches(1)
    seen = set()
    for seed in range(12):
        inputs, masks, draws = p.sample(images, torch.Generator().manual_seed(seed))
        flips = draws[0].flips
        seen.add(flips)
        assert torch.equal(inputs[1], torch.flip(inputs[0], dims=[a + 1 for a in flips]))
        assert torch.equal(masks[1], torch.flip(masks[0], dims=list(flips)))
        assert masks[0].sum() > 0
    assert () in seen and any(0 in f for f in seen)  # flips along the slab axis move the mask


def test_intensity_augmentation_changes_only_the_query() -> None:
    p = SupervoxelPretext(SupervoxelConfig(flip=False))
    images = _patches(1)
    inputs, masks, _ = p.sample(images, torch.Generator().manual_seed(3))
    assert torch.equal(inputs[0], images[0, :2])
    assert not torch.allclose(inputs[1], images[0, :2])
    assert torch.equal(masks[0], masks[1])
    # monotonic per channel: the voxel order within each channel is kept
    for c in range(2):
        assert torch.equal(inputs[1, c].flatten().argsort(), images[0, c].flatten().argsort())


def test_no_usable_supervoxel_gives_ignored_pair_and_finite_loss() -> None:
    p = SupervoxelPretext(SupervoxelConfig(embedding_dim=4, min_fraction=0.3))
    images = _patches(2)  # slabs of 25 % < 30 %
    images[1, -1] = 0.0  # and no supervoxel at all (padding / outside the body)
    inputs, masks = p(images, torch.Generator().manual_seed(0))
    assert (masks == -1).all()
    output = torch.randn((4, 4, 8, 8, 8), requires_grad=True)
    loss = p.loss(output, masks)
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()
    assert output.grad is not None and torch.isfinite(output.grad).all()
    assert p.score(output, masks)[1] == 0


def test_mixed_valid_and_invalid_pairs() -> None:
    p = SupervoxelPretext(SupervoxelConfig(embedding_dim=4, flip=False))
    images = _patches(2)
    images[1, -1] = 0.0
    _, masks = p(images, torch.Generator().manual_seed(0))
    assert (masks[:2] >= 0).all() and (masks[2:] == -1).all()
    output = torch.randn((4, 4, 8, 8, 8), requires_grad=True)
    p.loss(output, masks).backward()
    assert output.grad[:2].abs().sum() > 0 and output.grad[2:].abs().sum() == 0
    assert p.score(output, masks)[1] == 1


def _one_hot_embedding(masks: torch.Tensor, dim: int) -> torch.Tensor:
    out = torch.zeros((masks.shape[0], dim, *masks.shape[1:]))
    out[:, 0] = 1 - masks.clamp_min(0)
    out[:, 1] = masks.clamp_min(0)
    return out


def test_loss_prefers_an_embedding_that_separates_the_supervoxel() -> None:
    p = SupervoxelPretext(SupervoxelConfig(embedding_dim=8))
    inputs, masks = p(_patches(2), torch.Generator().manual_seed(1))
    perfect = _one_hot_embedding(masks, 8)
    random = torch.randn(perfect.shape, generator=torch.Generator().manual_seed(0))
    assert float(p.loss(perfect, masks)) < 1e-3
    assert float(p.loss(random, masks)) > 0.1
    total, count = p.score(perfect, masks)
    assert count == 2 and float(total) / count == pytest.approx(1.0)
    total, count = p.score(random, masks)
    assert float(total) / count < 0.9
    # the score compares the query with the query mask: swapping queries of the two pairs breaks it
    swapped = perfect.clone()
    swapped[1], swapped[3] = perfect[3], perfect[1]
    assert not torch.equal(masks[1], masks[3])  # seed 1 picks different supervoxels for the two pairs
    assert float(p.score(swapped, masks)[0]) / 2 < 0.99


def test_loss_and_score_2d() -> None:
    p = SupervoxelPretext(SupervoxelConfig(embedding_dim=4))
    inputs, masks = p(_patches(2, (12, 10)), torch.Generator().manual_seed(2))
    assert inputs.shape == (4, 2, 12, 10)
    total, count = p.score(_one_hot_embedding(masks, 4), masks)
    assert count == 2 and float(total) == pytest.approx(2.0)


def test_same_seed_same_pairs() -> None:
    p = SupervoxelPretext(SupervoxelConfig())
    images = _patches(2)
    a = p(images, torch.Generator().manual_seed(7))
    b = p(images, torch.Generator().manual_seed(7))
    c = p(images, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_state_dict_round_trip() -> None:
    p = SupervoxelPretext(SupervoxelConfig(n_segments=77, temperature=10.0, flip=False))
    state = json.loads(json.dumps(p.state_dict()))
    assert state["format_version"] == 1
    q = SupervoxelPretext.from_state_dict(state)
    assert q.config == p.config and q.state_dict() == p.state_dict()
    with pytest.raises(PretextConfigError, match="format version"):
        SupervoxelPretext.from_state_dict({**state, "format_version": 99})
