"""The MAE pretext: cube geometry and mask ratio, zeroed inputs, a loss on masked voxels only, seeded masks,
shared vs. per-modality masks, and the checkpoint round trip. (The real pretraining hand-off to
``SLeMTrainer_fromMAE`` is in ``tests/test_baselines.py``.)"""

from __future__ import annotations

import math

import pytest
import torch

from nnunet_slem.checkpoint_format import _DENSE_PRETEXTS, pretrain_folder_name
from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.mae import MAEConfig, MAEPretext, cube_grid, cube_index
from nnunet_slem.pretext.registry import build_pretext


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 2, m: int = 3, spatial: tuple[int, ...] = (20, 24, 16), seed: int = 0) -> torch.Tensor:
    return torch.randn((n, m, *spatial), generator=gen(seed))


def test_cube_grid_scales_to_the_patch():
    assert cube_grid((160, 128, 40), 16, 4) == (10, 8, 4)  # Wald et al.'s 16^3 cubes; small axes keep 4
    assert cube_grid((16, 3), 16, 4) == (4, 3)  # never a cell below one voxel
    index = cube_index(40, 4)
    assert index.tolist() == sorted(index.tolist()) and torch.bincount(index).tolist() == [10, 10, 10, 10]
    sizes = torch.bincount(cube_index(35, 4))
    assert int(sizes.sum()) == 35 and int(sizes.max() - sizes.min()) <= 1


def test_mask_ratio_and_cube_geometry():
    pretext = MAEPretext(MAEConfig(), num_modalities=3, spatial_dims=3)
    spatial = (20, 24, 16)
    grid = pretext.grid(spatial)
    assert grid == (4, 4, 4)
    masks = pretext.masks(4, spatial, gen(1))
    assert masks.shape == (4, 3, *spatial) and masks.dtype == torch.bool
    num_masked = pretext.num_masked(math.prod(grid))
    assert num_masked == 48
    for mask in masks[:, 0]:
        # every cube is wholly masked or wholly visible, and exactly num_masked cubes are masked
        cells = [cube_index(s, g) for s, g in zip(spatial, grid)]
        cube_id = (cells[0][:, None, None] * grid[1] + cells[1][None, :, None]) * grid[2] + cells[2][None, None, :]
        per_cube = torch.zeros(math.prod(grid)).index_add_(0, cube_id.flatten(), mask.flatten().float())
        sizes = torch.bincount(cube_id.flatten())
        assert torch.all((per_cube == 0) | (per_cube == sizes))
        assert int((per_cube > 0).sum()) == num_masked
        assert abs(mask.float().mean().item() - 0.75) < 0.05


def test_masked_voxels_are_zero_and_targets_carry_image_and_mask():
    pretext = MAEPretext(MAEConfig(), num_modalities=3, spatial_dims=3)
    x = images() + 5.0  # no zeros in the image itself
    inputs, targets = pretext(x, gen(2))
    assert inputs.shape == x.shape and targets.shape == (2, 6, *x.shape[2:])
    mask = targets[:, 3:].bool()
    assert torch.equal(targets[:, :3], x)
    assert torch.all(inputs[mask] == 0) and torch.equal(inputs[~mask], x[~mask])


def test_loss_counts_masked_voxels_only():
    pretext = MAEPretext(MAEConfig(), num_modalities=2, spatial_dims=3)
    x = images(m=2)
    _, targets = pretext(x, gen(3))
    mask = targets[:, 2:].bool()
    output = torch.randn(x.shape, generator=gen(4))
    base = pretext.loss(output, targets)
    assert torch.isclose(base, ((output - x) ** 2)[mask].mean())
    visible = (~mask).nonzero()[0].tolist()
    masked = mask.nonzero()[0].tolist()
    changed = output.clone()
    changed[tuple(visible)] += 100.0
    assert torch.equal(pretext.loss(changed, targets), base)
    changed = output.clone()
    changed[tuple(masked)] += 100.0
    assert pretext.loss(changed, targets) > base
    # the perfect reconstruction scores 1, the masked voxels' mean 0
    total, count = pretext.score(x, targets)
    assert count == 2 and total.item() == pytest.approx(2.0)
    means = torch.stack([torch.stack([x[i, c][mask[i, c]].mean() for c in range(2)]) for i in range(2)])
    flat = means[:, :, None, None, None].expand_as(x)
    total, count = pretext.score(flat, targets)
    assert count == 2 and total.item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="targets"):
        pretext.loss(output[:, :1], targets)


def test_score_skips_constant_samples():
    pretext = MAEPretext(MAEConfig(), num_modalities=2, spatial_dims=2)
    x = torch.zeros((1, 2, 32, 32))  # all background: no meaningful R2
    _, targets = pretext(x, gen(0))
    total, count = pretext.score(torch.randn(x.shape), targets)
    assert count == 0 and total.item() == 0.0


def test_same_seed_same_mask():
    pretext = MAEPretext(MAEConfig(per_modality_masks=True), num_modalities=3, spatial_dims=3)
    x = images(n=1)
    a, ta = pretext(x, gen(7))
    b, tb = pretext(x, gen(7))
    c, _ = pretext(x, gen(8))
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)


def test_shared_and_per_modality_masks():
    shared = MAEPretext(MAEConfig(), num_modalities=4, spatial_dims=3).masks(3, (20, 24, 16), gen(5))
    assert all(torch.equal(shared[:, 0], shared[:, c]) for c in range(1, 4))
    assert not torch.equal(shared[0], shared[1])  # but samples differ
    per = MAEPretext(MAEConfig(per_modality_masks=True), num_modalities=4, spatial_dims=3).masks(3, (20, 24, 16),
                                                                                                 gen(5))
    assert all(not torch.equal(per[:, 0], per[:, c]) for c in range(1, 4))
    assert all(abs(per[:, c].float().mean().item() - 0.75) < 0.05 for c in range(4))


def test_state_dict_round_trip_and_registry():
    pretext = build_pretext("mae", {"mask_ratio": 0.6, "per_modality_masks": True}, 4, 3, seed=3)
    assert isinstance(pretext, MAEPretext) and pretext.kind == "dense" and pretext.num_classes == 4
    assert pretext.config.seed == 3 and pretext.config.mask_ratio == 0.6
    state = pretext.state_dict()
    again = MAEPretext.from_state_dict(state)
    assert again.state_dict() == state
    x = images(m=4)
    assert all(torch.equal(p, q) for p, q in zip(pretext(x, gen(1)), again(x, gen(1))))
    with pytest.raises(PretextConfigError, match="format version"):
        MAEPretext.from_state_dict({**state, "format_version": 99})
    assert "mae" in _DENSE_PRETEXTS
    assert pretrain_folder_name("P", "C", "mae") == "MAEPretrain__P__C"
    assert pretrain_folder_name("P", "C", "mae", cfb=False) == "MAEPretrain_noCFB__P__C"


@pytest.mark.parametrize("options", [{"mask_ratio": 1.0}, {"mask_ratio": 0}, {"cube": 0}, {"cube": 2.5},
                                     {"per_modality_masks": "yes"}, {"mask_size": 16}])
def test_bad_settings_name_the_fix(options):
    with pytest.raises(PretextConfigError):
        build_pretext("mae", options, 4, 3, seed=0)


def test_patch_too_small_for_two_cubes():
    pretext = MAEPretext(MAEConfig(), num_modalities=2, spatial_dims=2)
    pretext.check_patch((2, 1))  # two one-voxel cubes: still a task
    with pytest.raises(PretextConfigError, match="larger patch"):
        pretext.check_patch((1, 1))
    with pytest.raises(PretextConfigError, match="2D"):
        pretext.check_patch((16, 16, 16))
