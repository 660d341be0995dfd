"""Unit tests of the CFB, its placement rule and the wrapped nnU-Net network."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_slem.network.cfb import CFBConfig, CFBLayers, ContextualFusionBlock, usable_dilations
from nnunet_slem.network.slem_network import (
    SLeMNetwork,
    build_slem_network,
    cfb_config_from_plans,
    cfb_layers_from_plans,
    choose_cfb_stage,
    feature_map_sizes,
)
from tests.plans_factory import configuration_manager, make_plans


@pytest.mark.parametrize("size", [(8, 8, 8), (6, 10, 12), (16, 16)])
def test_cfb_is_identity_at_init_and_keeps_shape(size):
    torch.manual_seed(0)
    block = ContextualFusionBlock(16, size)
    x = torch.randn(2, 16, *size)
    y = block(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)


def test_cfb_learns_away_from_identity():
    torch.manual_seed(0)
    block = ContextualFusionBlock(8, (8, 8, 8))
    opt = torch.optim.SGD(block.parameters(), lr=0.1)
    x = torch.randn(2, 8, 8, 8, 8)
    loss = (block(x) - 2 * x).pow(2).mean()
    loss.backward()
    assert block.fuse.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(block(x), x)


def test_usable_dilations_drop_branches_that_only_see_padding():
    assert usable_dilations([1, 2, 4, 8], (4, 4, 4)) == [(1, 1, 1)]
    assert usable_dilations([1, 2, 4, 8], (8, 8, 8)) == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]
    # anisotropic map: large in-plane dilations survive, the short axis is capped
    assert usable_dilations([1, 2, 4], (2, 16, 16)) == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    with pytest.raises(ValueError):
        usable_dilations([0], (8, 8, 8))


@pytest.mark.parametrize("extent", range(3, 20))
def test_every_kept_dilation_has_a_position_whose_both_taps_are_inside(extent):
    # at d = s/2 (the old cap s // 2) every position reads padding through one tap
    for (d,) in usable_dilations([1, 2, 4, 8, 16], (extent,)):
        assert any(x - d >= 0 and x + d <= extent - 1 for x in range(extent)), (extent, d)


def test_placement_rule():
    # 128^3 patch, five poolings: 4^3 bottleneck is too small, the 8^3 stage takes the CFB
    sizes = feature_map_sizes([128] * 3, [[1, 1, 1]] + [[2, 2, 2]] * 5)
    assert sizes[-1] == [4, 4, 4] and sizes[-2] == [8, 8, 8]
    assert choose_cfb_stage(sizes, [128] * 3) == 4
    # a bottleneck that is large enough is used
    assert choose_cfb_stage(feature_map_sizes([64] * 3, [[1] * 3] + [[2] * 3] * 3), [64] * 3) == 3
    # anisotropic patch: the short axis never reaches 8, so it does not block placement
    sizes = feature_map_sizes([6, 128, 128], [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [1, 2, 2]])
    assert choose_cfb_stage(sizes, [6, 128, 128]) == 4
    # nothing qualifies but the full-resolution stage
    assert choose_cfb_stage(feature_map_sizes([16] * 3, [[1] * 3, [2] * 3]), [16] * 3, min_extent=16) == 0


@pytest.mark.parametrize(
    "patch,residual",
    [((32, 32, 32), False), ((32, 32, 32), True), ((64, 64), False), ((64, 64), True)],
)
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_network_shapes_and_deep_supervision(patch, residual, deep_supervision):
    cm = configuration_manager(patch_size=patch, residual=residual)
    net = build_slem_network(cm, 4, 3, deep_supervision, CFBConfig())
    x = torch.randn(2, 4, *patch)
    out = net(x)
    if deep_supervision:
        assert isinstance(out, (list, tuple)) and out[0].shape == (2, 3, *patch)
        assert len(out) == 3  # one output per decoder stage
    else:
        assert out.shape == (2, 3, *patch)
    # 32^3 -> stages 32,16,8,4: the 8 stage (index 2) holds the CFB; 64^2 -> 8 at index 3
    assert net.cfb_stage == (2 if len(patch) == 3 else 3)
    assert net.cfb.feature_map_size == tuple(s // 2 ** net.cfb_stage for s in patch)


def test_fresh_slem_network_computes_what_the_plain_network_computes():
    cm = configuration_manager()
    torch.manual_seed(1)
    net = build_slem_network(cm, 4, 3, False, CFBConfig())
    plain = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 4, 3, deep_supervision=False)
    plain_state = plain.state_dict()
    slem_state = net.state_dict()
    # same key names as nnU-Net's network, plus the CFB
    assert set(slem_state) - set(plain_state) == {k for k in slem_state if k.startswith("cfb.")}
    assert set(plain_state) <= set(slem_state)
    plain.load_state_dict({k: v for k, v in slem_state.items() if not k.startswith("cfb.")})
    net.eval()
    plain.eval()
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), plain(x), atol=1e-6)


def test_strict_reload_round_trip():
    cm = configuration_manager()
    a = build_slem_network(cm, 4, 3, True, CFBConfig())
    b = build_slem_network(cm, 4, 3, False, CFBConfig())  # prediction builds without deep supervision
    b.load_state_dict(a.state_dict(), strict=True)


def test_cfb_options_from_plans():
    cm = configuration_manager(slem_cfb={"dilations": [1, 3], "reduction": 2, "stage": 1})
    cfg = cfb_config_from_plans(cm, CFBConfig())
    assert cfg.dilations == [1, 3] and cfg.reduction == 2 and cfg.stage == 1
    net = build_slem_network(cm, 4, 2, False, cfg)
    assert net.cfb_stage == 1 and len(net.cfb.branches) == 2
    with pytest.raises(ValueError, match="Unknown CFB option"):
        cfb_config_from_plans(configuration_manager(slem_cfb={"dilation": [1]}), CFBConfig())
    with pytest.raises(ValueError, match="outside the encoder"):
        build_slem_network(configuration_manager(slem_cfb={"stage": 9}), 4, 2, False, CFBConfig(stage=9))


def test_unsupported_architecture_is_named():
    with pytest.raises(TypeError, match="encoder-decoder"):
        SLeMNetwork(torch.nn.Conv3d(1, 1, 1), ContextualFusionBlock(8, (8, 8, 8)), 0)


def test_torch_compile_wrapper_is_transparent_for_state_dict():
    cm = configuration_manager()
    net = build_slem_network(cm, 4, 3, False, CFBConfig())
    compiled = torch.compile(net)
    assert compiled._orig_mod is net
    assert set(compiled._orig_mod.state_dict()) == set(net.state_dict())


def test_cfb_convolutions_start_from_nnunets_he_init_and_the_block_stays_an_identity():
    """InitWeights_He(1e-2) as nnU-Net's U-Net gets (std sqrt(2 / fan_in), zero bias), except the zero fuse."""
    torch.manual_seed(0)
    block = ContextualFusionBlock(32, (8, 8, 8))
    for weight in [branch[0].weight for branch in block.branches] + [block.image_pool[1].weight]:
        fan_in = weight[0].numel()
        assert weight.std().item() == pytest.approx((2 / (1 + 1e-4) / fan_in) ** 0.5, rel=0.1)
    assert not block.image_pool[1].bias.any()
    assert not block.fuse.weight.any() and not block.fuse.bias.any()
    x = torch.randn(2, 32, 8, 8, 8)
    assert torch.equal(block(x), x)


def _plans_manager_with(**arch_changes):
    import copy

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = copy.deepcopy(make_plans())
    plans["configurations"]["cfg"]["architecture"]["arch_kwargs"].update(arch_changes)
    return PlansManager(plans).get_configuration("cfg")


def test_cfb_is_built_from_the_plans_norm_and_nonlinearity():
    cm = _plans_manager_with(norm_op="torch.nn.BatchNorm3d", norm_op_kwargs={"eps": 1e-3, "momentum": 0.2},
                             nonlin="torch.nn.ReLU", nonlin_kwargs={"inplace": False})
    net = build_slem_network(cm, 4, 3, False, CFBConfig())
    for branch in net.cfb.branches:
        assert type(branch[1]) is torch.nn.BatchNorm3d and branch[1].eps == 1e-3 and branch[1].momentum == 0.2
        assert type(branch[2]) is torch.nn.ReLU and not branch[2].inplace
    assert type(net.cfb.image_pool[2]) is torch.nn.ReLU
    assert any(k.startswith("cfb.") and k.endswith("running_mean") for k in net.state_dict())
    net.eval()
    x = torch.randn(1, 4, 32, 32, 32)
    assert net(x).shape == (1, 3, 32, 32, 32)
    # no norm and no nonlinearity in the plans: none in the CFB either (as in nnU-Net's U-Net)
    bare = cfb_layers_from_plans(_plans_manager_with(norm_op=None, nonlin=None))
    block = ContextualFusionBlock(16, (8, 8, 8), layers=bare)
    assert all(isinstance(b[1], torch.nn.Identity) and isinstance(b[2], torch.nn.Identity) for b in block.branches)


def test_default_plans_give_nnunets_default_layers_and_unchanged_checkpoint_keys():
    """Checkpoints written before the CFB read the plans hold exactly these CFB keys; they must still load."""
    cm = configuration_manager()
    layers = cfb_layers_from_plans(cm)
    assert layers == CFBLayers.nnunet_default(3)
    net = build_slem_network(cm, 4, 3, False, CFBConfig())
    branch_keys = {f"cfb.branches.{i}.{k}" for i in range(3) for k in ("0.weight", "1.weight", "1.bias")}
    expected = branch_keys | {"cfb.image_pool.1.weight", "cfb.image_pool.1.bias", "cfb.fuse.weight", "cfb.fuse.bias"}
    assert {k for k in net.state_dict() if k.startswith("cfb.")} == expected
    assert isinstance(net.cfb.branches[0][1], torch.nn.InstanceNorm3d) and net.cfb.branches[0][1].affine
    assert isinstance(net.cfb.branches[0][2], torch.nn.LeakyReLU) and net.cfb.branches[0][2].negative_slope == 0.01


def test_cfb_refuses_a_conv_op_of_another_dimension():
    with pytest.raises(ValueError, match="Conv2d does not fit a 3D feature map"):
        ContextualFusionBlock(16, (8, 8, 8), layers=CFBLayers.nnunet_default(2))
