"""Shortcut audit: near chance with the guards on, clearly above chance when they are off."""

from __future__ import annotations

import io
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
            results[name] = run_audit(pretext, scaled_modalities(1), n_train=600, n_test=300)
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
                            shaped_modalities(2), n_train=600, n_test=300)
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


# ------------------------------------------------------------ zero background: the use_mask_for_norm defect


def _audit(cfg: SLeMPretextConfig, sample: Callable[[int], torch.Tensor], m: int = M) -> AuditResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_audit(SLeMPretext(cfg, num_modalities=m, spatial_dims=3), sample, n_train=600, n_test=300)
    finally:
        torch.set_num_threads(threads)


def test_rank_normalisation_leaves_no_background_fingerprint() -> None:
    """Skull-stripped data z-scored inside the brain, background exactly 0 (nnU-Net's ``use_mask_for_norm``):
    ranked with the brain, the background tie lands at a modality-dependent quantile. With the default
    (foreground-only) normalisation the audit must stay near chance."""
    from tests.test_pretext_slem import skull_stripped

    result = _audit(SLeMPretextConfig(), skull_stripped(1))
    assert result.accuracy < 2 * result.chance, result.summary()


def test_whole_block_ranks_on_zero_background_are_a_shortcut() -> None:
    """The old behaviour (still reachable with ``foreground_only=False``) on the same data: far above chance,
    which shows the data of the test above does carry the shortcut."""
    from tests.test_pretext_slem import skull_stripped

    result = _audit(SLeMPretextConfig(foreground_only=False), skull_stripped(1))
    assert result.group_accuracies["histogram"] > 4 * result.chance, result.summary()


# ------------------------------------------------------------------------------ seam and texture features


def smooth_fields(sigmas: tuple[float, ...], seed: int = 0, shape: tuple[int, ...] = SHAPE):
    """Channel ``c``: independent white noise blurred with a Gaussian of ``sigmas[c]`` voxels. After rank
    normalisation every block and channel has the same histogram; only space tells them apart."""
    g = torch.Generator().manual_seed(seed)

    def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
        radius = max(1, int(3 * sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        x = torch.nn.functional.pad(x, (radius,) * 6, mode="replicate")
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = len(k)
            x = torch.nn.functional.conv3d(x, k.reshape(shape))
        return x

    def sample(n: int) -> torch.Tensor:
        noise = torch.randn((n, len(sigmas), *shape), generator=g)
        return torch.cat([blur(noise[:, c : c + 1], s) for c, s in enumerate(sigmas)], dim=1)

    return sample


def test_seam_features_see_continuity_where_histograms_cannot() -> None:
    result = _audit(SLeMPretextConfig(), smooth_fields((2.0, 2.0, 2.0), seed=3))
    acc = result.group_accuracies
    assert set(acc) == {"histogram", "seam", "texture"}
    assert acc["histogram"] < 2 * result.chance, result.summary()
    assert acc["seam"] > 0.5, result.summary()
    assert result.accuracy > 0.5, result.summary()


def test_texture_features_see_roughness() -> None:
    result = _audit(SLeMPretextConfig(), smooth_fields((0.6, 1.5, 3.0), seed=4))
    acc = result.group_accuracies
    assert acc["histogram"] < 2 * result.chance, result.summary()
    assert acc["texture"] > 0.5, result.summary()


def test_seam_features_shape_and_continuity() -> None:
    from nnunet_slem.pretext.audit import seam_features, texture_features

    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=M, spatial_dims=3)
    images = smooth_fields((2.0, 2.0, 2.0))(4)
    layouts = pretext.sample_layouts(SHAPE, 4, torch.Generator().manual_seed(0))
    out = pretext.apply(images, torch.zeros(4, dtype=torch.long), layouts)  # identity: every channel continues
    feats = seam_features(out, layouts).reshape(4, 4, M, M, 2)  # 2x2x1 grid: 4 adjacent pairs
    corr = feats[..., 0]
    diagonal = torch.diagonal(corr, dim1=-2, dim2=-1)
    off = corr.masked_select(~torch.eye(M, dtype=torch.bool))
    assert diagonal.mean() > 0.7 and off.abs().mean() < 0.3
    assert texture_features(out, layouts).shape == (4, 4 * M * 5)


def test_summary_names_every_group(audits: dict[str, AuditResult]) -> None:
    line = audits["on"].summary()
    assert all(g in line for g in ("histogram", "seam", "texture")) and "\n" not in line
    d = json.loads(json.dumps(audits["on"].to_dict()))
    assert set(d["group_accuracies"]) == {"histogram", "seam", "texture"}


# ------------------------------------------------------------------------- the classifier: scikit-learn, converged


def constant_levels(seed: int = 0) -> Callable[[int], torch.Tensor]:
    """Channel ``c`` is the level ``c - 1`` plus faint noise: with the guards off, each block's histogram says
    which modality fills it, and the class is a linear function of those one-hot histograms (the true
    assignment matches every (block, channel) slot, any other one fewer), so a converged fit must find it."""
    g = torch.Generator().manual_seed(seed)
    levels = (torch.arange(M, dtype=torch.float32) - 1).reshape(1, M, 1, 1, 1)

    def sample(n: int) -> torch.Tensor:
        return levels + 0.02 * torch.randn((n, M, *SHAPE), generator=g)

    return sample


def test_a_linearly_separable_shortcut_is_found_on_held_out_samples() -> None:
    cfg = SLeMPretextConfig(normalization="none", intensity_aug=False)
    result = _audit(cfg, constant_levels(5))
    assert result.unconverged == [], result.summary()
    assert result.group_accuracies["histogram"] >= 0.99, result.summary()
    assert result.accuracy >= 0.99, result.summary()


def test_a_fit_stopped_early_warns_and_names_its_group() -> None:
    from nnunet_slem.pretext.audit import AuditConvergenceWarning

    pretext = SLeMPretext(SLeMPretextConfig(normalization="none", intensity_aug=False), num_modalities=M,
                          spatial_dims=3)
    with pytest.warns(AuditConvergenceWarning, match="the histogram classifier did not converge in 2 iterations"):
        result = run_audit(pretext, constant_levels(6), n_train=96, n_test=24, groups=("histogram",), max_iter=2)
    assert result.unconverged == ["histogram"]
    assert "not converged: histogram" in result.summary()
    # pretraining stores the result in its checkpoint, which must load with weights_only (no numpy scalars)
    buffer = io.BytesIO()
    torch.save(result.to_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["group_accuracies"] == result.group_accuracies


def test_sampling_shows_a_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=M, spatial_dims=3)
    run_audit(pretext, scaled_modalities(7), n_train=64, n_test=16, groups=("histogram",), batch_size=8,
              progress=True)
    err = capsys.readouterr().err
    assert "audit: drawing pretext samples" in err and "80/80" in err
