"""The reconstructive SLeM pretext on small tensors: recombination, masking, targets, loss, score, persistence."""

from __future__ import annotations

import pytest
import torch

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.registry import build_pretext
from nnunet_slem.pretext.slem_recon import SLeMReconConfig, SLeMReconPretext, assignment_of


def _images(n: int = 3, m: int = 4, shape=(16, 16, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, m, *shape), generator=g)
    x[..., :2] = 0.0  # a background slab, exactly 0 in every channel (skull-stripped)
    return x


def _pretext(**options) -> SLeMReconPretext:
    return build_pretext("slem_recon", options, num_modalities=4, spatial_dims=3, seed=0)


def test_targets_restore_the_original_order_and_mark_what_was_hidden():
    pretext = _pretext(mask_ratio=0.5)
    images = _images()
    inputs, targets = pretext(images, torch.Generator().manual_seed(1))
    m = 4
    assert inputs.shape == images.shape and targets.shape == (3, 2 * m + 2, 16, 16, 8)
    assert torch.equal(targets[:, :m], images)  # the target is the original patch, original channel order
    labels = targets[:, -1, 0, 0, 0].long()
    assert torch.equal(targets[:, -1], labels.float().view(3, 1, 1, 1).expand(3, 16, 16, 8))
    assert torch.equal(targets[:, 2 * m], (images != 0).any(dim=1).float())
    hidden = targets[:, m:2 * m]
    # every hidden original channel is 0 in the input channel that shows it; every visible one is its original
    perms = assignment_of(pretext, labels.tolist())
    generator = torch.Generator().manual_seed(1)
    _, layouts = pretext.slem._draw(images, 3, generator)
    for i, layout in enumerate(layouts):
        for b, slices in enumerate(layout.block_slices()):
            for c in range(m):
                source = int(perms[i, b, c])
                block_in = inputs[(i, c, *slices)]
                if hidden[(i, source, *slices)].flatten()[0] == 1:
                    assert not block_in.any()
                else:
                    assert torch.equal(block_in, images[(i, source, *slices)])  # normalization "none": copied
            assert hidden[(i, slice(None), *slices)].flatten(1)[:, 0].sum() < m  # never every channel hidden
    assert 0 < hidden.mean() < 0.75


def test_no_masking_and_the_identity_is_one_of_the_classes():
    pretext = _pretext(mask_ratio=0.0)
    _, targets = pretext(_images(), torch.Generator().manual_seed(2))
    assert not targets[:, 4:8].any()
    assert torch.equal(assignment_of(pretext, [0])[0], torch.arange(4).expand(4, 4))
    assert pretext.num_classes == 4 + pretext.num_assignments == 4 + 24


def test_same_generator_same_sample_and_another_differs():
    pretext, images = _pretext(), _images()
    a = pretext(images, torch.Generator().manual_seed(5))
    b = pretext(images, torch.Generator().manual_seed(5))
    c = pretext(images, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_loss_and_score():
    pretext, images = _pretext(aux_weight=0.0), _images()
    _, targets = pretext(images, torch.Generator().manual_seed(3))
    labels = targets[:, -1, 0, 0, 0].long()
    logits = torch.nn.functional.one_hot(labels, pretext.num_assignments).float()[..., None, None, None] * 50
    perfect = torch.cat([images, logits.expand(-1, -1, 16, 16, 8)], dim=1)
    assert pretext.loss(perfect, targets).item() == pytest.approx(0.0, abs=1e-7)
    total, count = pretext.score(perfect, targets)
    assert count == 3 and total.item() == pytest.approx(3.0)
    # background voxels do not count: errors there cost nothing
    noisy_background = perfect.clone()
    noisy_background[:, :4, ..., :2] += 5.0
    assert pretext.loss(noisy_background, targets).item() == pytest.approx(0.0, abs=1e-7)
    zero = torch.zeros_like(perfect)
    assert pretext.loss(zero, targets) > 0.5 and pretext.score(zero, targets)[0] < 3.0
    # the auxiliary head adds the cross-entropy of the patch-mean logits
    with_aux = _pretext(aux_weight=1.0)
    assert with_aux.loss(perfect, targets).item() == pytest.approx(0.0, abs=1e-6)
    wrong = perfect.clone()
    wrong[:, 4:] = 0.0
    assert with_aux.loss(wrong, targets).item() == pytest.approx(float(torch.log(torch.tensor(24.0))), rel=1e-5)


def test_state_round_trip_and_bad_options():
    pretext = _pretext(mask_ratio=0.3, normalization="rank")
    again = SLeMReconPretext.from_state_dict(pretext.state_dict())
    assert again.state_dict() == pretext.state_dict()
    assert again.slem.config.normalization == "rank" and again.config.mask_ratio == 0.3
    for bad in ({"mask_ratio": 1.0}, {"mask_ratio": "half"}, {"aux_weight": -1}, {"aux_weight": float("inf")},
                {"normalization": "minmax"}, {"nonsense": 1}):
        with pytest.raises(PretextConfigError):
            build_pretext("slem_recon", bad, num_modalities=4, spatial_dims=3, seed=0).check_patch((16, 16, 8))
    assert SLeMReconConfig().normalization == "none"
