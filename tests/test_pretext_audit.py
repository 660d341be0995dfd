"""Shortcut audit: near chance with the guards on, clearly above chance when they are off."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from nnunet_slem.pretext import (
    AuditResult,
    SLeMPretext,
    SLeMPretextConfig,
    block_histogram_features,
    run_audit,
)

SHAPE = (16, 16, 16)
M = 3


def scaled_modalities(seed: int = 0) -> Callable[[int], torch.Tensor]:
    """Shared 'anatomy' plus per-channel noise; channel c is multiplied by 10**c and shifted by 5c, so
    modalities differ strongly in intensity level and spread but not in histogram shape."""
    g = torch.Generator().manual_seed(seed)
    scale = (10.0 ** torch.arange(M)).reshape(1, M, 1, 1, 1)
    shift = (5.0 * torch.arange(M)).reshape(1, M, 1, 1, 1)

    def sample(n: int) -> torch.Tensor:
        anatomy = torch.randn((n, 1, *SHAPE), generator=g)
        noise = torch.randn((n, M, *SHAPE), generator=g)
        return (anatomy + noise) * scale + shift

    return sample


def test_features_are_histograms_mean_and_std_per_block() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=M, spatial_dims=3)
    images, _, layouts = pretext.sample(scaled_modalities()(4), torch.Generator().manual_seed(0))
    bins = 8
    feats = block_histogram_features(images, layouts, bins=bins)
    assert feats.shape == (4, 4 * M * (bins + 2))
    per_block = feats.reshape(4, 4, M, bins + 2)
    assert torch.allclose(per_block[..., :bins].sum(-1), torch.ones(4, 4, M), atol=1e-5)
    i, b = 2, 3
    block = images[(i, slice(None), *layouts[i].block_slices()[b])].reshape(M, -1).double()
    assert torch.allclose(per_block[i, b, :, bins].double(), block.mean(1), atol=1e-5)
    assert torch.allclose(per_block[i, b, :, bins + 1].double(), block.std(1, unbiased=False), atol=1e-4)


@pytest.fixture(scope="module")
def audits() -> dict[str, AuditResult]:
    """The same data audited with the guards on and off (shared: the audits are the slow part).

    One intra-op thread: the work is many small tensor ops, which extra threads only slow down on a busy
    machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {}
        for name, guards in (("on", True), ("off", False)):
            cfg = SLeMPretextConfig(normalization="zscore" if guards else "none", intensity_aug=guards)
            pretext = SLeMPretext(cfg, num_modalities=M, spatial_dims=3)
            results[name] = run_audit(pretext, scaled_modalities(1), n_train=600, n_test=300, steps=200)
    finally:
        torch.set_num_threads(threads)
    return results


def test_guards_leave_the_classifier_near_chance(audits: dict[str, AuditResult]) -> None:
    result = audits["on"]
    assert result.num_classes == 24 and result.chance == pytest.approx(1 / 24)
    assert result.accuracy < 2 * result.chance, result.summary()


def test_audit_catches_the_shortcut_without_guards(audits: dict[str, AuditResult]) -> None:
    result = audits["off"]
    assert result.accuracy > 0.5 and result.accuracy > 10 * result.chance, result.summary()


def test_result_serialises(audits: dict[str, AuditResult]) -> None:
    d = json.loads(json.dumps(audits["on"].to_dict()))
    assert {"accuracy", "chance", "n_train", "n_test", "num_classes", "ratio_to_chance"} <= set(d)
    assert (d["n_train"], d["n_test"]) == (600, 300)


def shaped_modalities(seed: int = 0) -> Callable[[int], torch.Tensor]:
    """Channels with the same anatomy but different histogram *shapes* (Gaussian, log-normal, uniform), as
    MRI sequences have: z-scoring leaves the shape, only rank normalisation removes it."""
    g = torch.Generator().manual_seed(seed)

    def sample(n: int) -> torch.Tensor:
        base = torch.randn((n, 1, *SHAPE), generator=g) + 0.3 * torch.randn((n, M, *SHAPE), generator=g)
        return torch.cat([base[:, :1], torch.exp(1.5 * base[:, 1:2]), torch.special.ndtr(base[:, 2:3])], dim=1)

    return sample


@pytest.fixture(scope="module")
def shape_audits() -> dict[str, AuditResult]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            norm: run_audit(SLeMPretext(SLeMPretextConfig(normalization=norm, intensity_aug=norm == "zscore"),
                                        num_modalities=M, spatial_dims=3),
                            shaped_modalities(2), n_train=600, n_test=300, steps=200)
            for norm in ("zscore", "rank")
        }
    finally:
        torch.set_num_threads(threads)


def test_zscore_leaves_a_histogram_shape_shortcut(shape_audits: dict[str, AuditResult]) -> None:
    result = shape_audits["zscore"]
    assert result.accuracy > 0.5, result.summary()


def test_rank_normalisation_closes_the_histogram_shortcut(shape_audits: dict[str, AuditResult]) -> None:
    result = shape_audits["rank"]
    assert result.accuracy < 2 * result.chance, result.summary()
