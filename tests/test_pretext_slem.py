"""SLeM pretext: the assignment set, the block layouts, the shuffle and its shortcut guards."""

from __future__ import annotations

import io
import json
import math
import time

import numpy as np
import pytest
import torch

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext import (
    BlockLayout,
    PretextConfigError,
    SLeMPretext,
    SLeMPretextConfig,
    build_assignment_set,
    default_grid,
    default_num_assignments,
    min_pairwise_hamming,
)

# ------------------------------------------------------------------------------------ assignment set


def _random_distinct_set(rng: np.random.Generator, m: int, b: int, k: int) -> np.ndarray:
    rows: dict[bytes, np.ndarray] = {}
    while len(rows) < k:
        a = np.stack([rng.permutation(m) for _ in range(b)])
        rows[a.tobytes()] = a
    return np.stack(list(rows.values()))


def test_assignment_set_is_deterministic_and_seeded() -> None:
    a = build_assignment_set(4, 4, seed=0)
    assert np.array_equal(a, build_assignment_set(4, 4, seed=0))
    others = [build_assignment_set(4, 4, seed=s) for s in (1, 2, 3)]
    assert any(not np.array_equal(a, o) for o in others)  # tie-breaking depends on the seed


@pytest.mark.parametrize(("m", "b", "k"), [(4, 4, 24), (2, 4, 16), (3, 4, 10), (2, 8, 24), (3, 8, 24)])
def test_assignment_set_rows(m: int, b: int, k: int) -> None:
    a = build_assignment_set(m, b, k)
    assert a.shape == (k, b, m) and a.dtype == np.int64
    assert np.array_equal(a[0], np.tile(np.arange(m), (b, 1)))  # class 0 = unshuffled image
    assert (np.sort(a, axis=-1) == np.arange(m)).all()  # rows are permutations
    assert len(np.unique(a.reshape(k, -1), axis=0)) == k  # all distinct


def test_defaults_match_brats_and_chaos() -> None:
    assert default_num_assignments(4, 4) == 24
    assert default_num_assignments(2, 4) == 16
    assert default_num_assignments(2, 1) == 2
    assert build_assignment_set(4, 4).shape == (24, 4, 4)
    assert build_assignment_set(2, 4).shape == (16, 4, 2)


def test_greedy_set_is_at_least_as_spread_as_random_sets() -> None:
    greedy = min_pairwise_hamming(build_assignment_set(4, 4))
    rng = np.random.default_rng(0)
    random_best = max(min_pairwise_hamming(_random_distinct_set(rng, 4, 4, 24)) for _ in range(20))
    assert greedy >= random_best
    assert greedy >= 10


def test_brats_set_builds_fast() -> None:
    start = time.perf_counter()
    build_assignment_set(4, 4, 24, seed=7)
    assert time.perf_counter() - start < 2.0


def test_assignment_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"at least two modalities/channels.*has 1"):
        build_assignment_set(1, 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_assignment_set(2, 4, num_assignments=1)
    with pytest.raises(ValueError, match=r"more than the 16 distinct assignments"):
        build_assignment_set(2, 4, num_assignments=17)
    with pytest.raises(UserFacingError):  # printed by the CLI without a traceback
        build_assignment_set(1, 4)


# ------------------------------------------------------------------------------------------ layouts


def _coverage(layout: BlockLayout) -> np.ndarray:
    count = np.zeros(layout.spatial_shape, dtype=np.int64)
    for sl in layout.block_slices():
        count[sl] += 1
    return count


@pytest.mark.parametrize(
    ("grid", "shape"), [((2, 2, 1), (16, 20, 24)), ((2, 2, 2), (16, 16, 12)), ((2, 2), (24, 18))]
)
def test_layouts_cover_the_volume_exactly(grid: tuple[int, ...], shape: tuple[int, ...]) -> None:
    pretext = SLeMPretext(SLeMPretextConfig(grid=grid), num_modalities=2, spatial_dims=len(shape))
    for layout in pretext.sample_layouts(shape, 20, torch.Generator().manual_seed(0)):
        assert len(layout.block_slices()) == math.prod(grid)
        assert (_coverage(layout) == 1).all()  # disjoint and complete
        ids = layout.block_index_map()
        for b, sl in enumerate(layout.block_slices()):
            assert (ids[sl] == b).all()


def test_jittered_cuts_stay_in_bounds() -> None:
    cfg = SLeMPretextConfig(grid=(3, 2, 1), jitter=0.2, min_block=4, random_unsplit_axis=False)
    pretext = SLeMPretext(cfg, num_modalities=2, spatial_dims=3)
    shape = (14, 40, 9)
    moved = False
    for layout in pretext.sample_layouts(shape, 200, torch.Generator().manual_seed(1)):
        for size, parts, bounds in zip(shape, layout.parts, layout.boundaries, strict=True):
            assert bounds[0] == 0 and bounds[-1] == size
            assert all(hi - lo >= cfg.min_block for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))
            for k in range(1, parts):
                offset = abs(bounds[k] - size * k / parts)
                assert offset <= cfg.jitter * size + 0.5
                moved |= offset >= 1
    assert moved


def test_unsplit_axis_is_random_and_respects_short_axes() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=2, spatial_dims=3)
    layouts = pretext.sample_layouts((16, 16, 16), 60, torch.Generator().manual_seed(0))
    assert {layout.parts.index(1) for layout in layouts} == {0, 1, 2}
    # a short axis (6 < 2 * min_block) can only stay unsplit
    layouts = pretext.sample_layouts((16, 16, 6), 30, torch.Generator().manual_seed(0))
    assert all(layout.parts == (2, 2, 1) for layout in layouts)
    fixed = SLeMPretext(SLeMPretextConfig(random_unsplit_axis=False), num_modalities=2, spatial_dims=3)
    assert all(lay.parts == (2, 2, 1) for lay in fixed.sample_layouts((16, 16, 16), 30, torch.Generator()))


def test_too_small_patch_names_patch_grid_and_fix() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(grid=(2, 2, 2)), num_modalities=2, spatial_dims=3)
    with pytest.raises(ValueError, match=r"\(16, 16, 6\).*\(2, 2, 2\).*larger patch size.*smaller grid"):
        pretext.sample_layouts((16, 16, 6), 1, torch.Generator())


def test_grid_must_match_dimensionality() -> None:
    assert default_grid(3) == (2, 2, 1) and default_grid(2) == (2, 2)
    with pytest.raises(ValueError, match=r"\(2, 2, 1\) has 3 entries but the data is 2D.*\(2, 2\)"):
        SLeMPretext(SLeMPretextConfig(grid=(2, 2, 1)), num_modalities=2, spatial_dims=2)
    with pytest.raises(ValueError, match="at least two modalities"):
        SLeMPretext(SLeMPretextConfig(), num_modalities=1, spatial_dims=3)


# -------------------------------------------------------------------------------------------- shuffle


def _coded(n: int, m: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """value = channel * 1e6 + flat voxel index, so every value says where it came from."""
    voxels = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    x = torch.stack([c * 1e6 + voxels for c in range(m)])
    return x.expand(n, *x.shape).to(dtype).clone()


def _check_shuffle(pretext: SLeMPretext, images: torch.Tensor, out: torch.Tensor, labels, layouts) -> None:
    out = out.double().numpy()
    source_channel = np.floor(out / 1e6).astype(np.int64)
    source_voxel = np.round(out - source_channel * 1e6).astype(np.int64)
    shape = tuple(images.shape[2:])
    flat_index = np.arange(math.prod(shape)).reshape(shape)
    assignments = pretext.assignments.numpy()
    for i, layout in enumerate(layouts):
        assert (source_voxel[i] == flat_index).all()  # nothing moves in space
        expected = assignments[int(labels[i])][layout.block_index_map()]  # (*spatial, M)
        assert (source_channel[i] == np.moveaxis(expected, -1, 0)).all()


OFF = {"normalization": "none", "intensity_aug": False}


@pytest.mark.parametrize(
    ("grid", "m", "shape"),
    [
        ((2, 2, 1), 4, (16, 16, 16)),
        ((2, 2, 1), 2, (12, 16, 20)),
        ((2, 2, 2), 3, (16, 12, 8)),
        ((2, 2), 4, (20, 16)),
        ((2, 2), 2, (16, 16)),
    ],
)
def test_shuffle_moves_each_block_to_the_assigned_modality(
    grid: tuple[int, ...], m: int, shape: tuple[int, ...]
) -> None:
    pretext = SLeMPretext(SLeMPretextConfig(grid=grid, **OFF), num_modalities=m, spatial_dims=len(shape))
    images = _coded(6, m, shape)
    out, labels, layouts = pretext.sample(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert ((labels >= 0) & (labels < pretext.num_classes)).all()
    _check_shuffle(pretext, images, out, labels, layouts)
    # every class, including the identity (class 0 leaves the image unchanged)
    all_labels = torch.arange(pretext.num_classes)
    layouts = pretext.sample_layouts(shape, len(all_labels), torch.Generator().manual_seed(4))
    batch = _coded(len(all_labels), m, shape)
    shuffled = pretext.apply(batch, all_labels, layouts)
    _check_shuffle(pretext, batch, shuffled, all_labels, layouts)
    assert torch.equal(shuffled[0], batch[0])


def test_cross_case_takes_every_block_from_another_patch() -> None:
    """value = patch * 1e7 + channel * 1e6 + voxel: block b of sample i must come from patch (i + b) % n, still
    shuffled by its assignment, and never from sample i itself."""
    pretext = SLeMPretext(SLeMPretextConfig(cross_case=True, **OFF), num_modalities=2, spatial_dims=3)
    n, shape = 5, (16, 16, 8)
    images = _coded(n, 2, shape) + torch.arange(n, dtype=torch.float64).reshape(n, 1, 1, 1, 1) * 1e7
    out, labels, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    patch = np.floor(out.numpy() / 1e7).astype(np.int64)
    for i, layout in enumerate(layouts):
        expected = (i + layout.block_index_map()) % n
        assert (patch[i] == expected).all() and (patch[i] != i).any()
    _check_shuffle(pretext, images, out - torch.as_tensor(patch * 1e7), labels, layouts)


def test_sample_each_draws_like_per_sample_calls_but_mixes_patches_for_cross_case() -> None:
    """The pretrainer draws each sample with its own generator; without cross_case that must be exactly what
    per-image ``sample`` calls draw, with it every block must still come from patch (i + b) % n of the batch
    (drawn one image at a time, cross_case had no other patch to take blocks from and did nothing)."""
    n, shape = 5, (16, 16, 8)
    images = _coded(n, 2, shape) + torch.arange(n, dtype=torch.float64).reshape(n, 1, 1, 1, 1) * 1e7
    seeds = [3, 1, 4, 1, 5]
    plain = SLeMPretext(SLeMPretextConfig(modality_dropout=0.3), num_modalities=2, spatial_dims=3)
    out, labels, layouts = plain.sample_each(images, [torch.Generator().manual_seed(s) for s in seeds])
    for j, s in enumerate(seeds):
        one, label, layout = plain.sample(images[j:j + 1], torch.Generator().manual_seed(s))
        assert torch.equal(out[j:j + 1], one) and torch.equal(labels[j:j + 1], label) and layouts[j] == layout[0]

    mixed = SLeMPretext(SLeMPretextConfig(cross_case=True, **OFF), num_modalities=2, spatial_dims=3)
    out, labels, layouts = mixed.sample_each(images, [torch.Generator().manual_seed(s) for s in seeds])
    patch = np.floor(out.numpy() / 1e7).astype(np.int64)
    for i, layout in enumerate(layouts):
        assert (patch[i] == (i + layout.block_index_map()) % n).all()
    _check_shuffle(mixed, images, out - torch.as_tensor(patch * 1e7), labels, layouts)
    with pytest.raises(PretextConfigError, match=r"cross_case .* batch has 1 patch.*--batch-size"):
        mixed.sample(images[:1], torch.Generator().manual_seed(0))


def test_modality_dropout_zeroes_whole_channels_of_blocks_but_never_a_whole_block() -> None:
    p = 0.5
    pretext = SLeMPretext(SLeMPretextConfig(modality_dropout=p, **OFF), num_modalities=4, spatial_dims=3)
    images = _coded(64, 4, (16, 16, 8)) + 1  # no zero anywhere before the dropout
    out, labels, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    dropped = []
    for i, layout in enumerate(layouts):
        for sl in layout.block_slices():
            block = out[(i, slice(None), *sl)].reshape(4, -1)
            zero = (block == 0).all(1)
            assert ((block == 0).any(1) == zero).all() and not zero.all()  # whole channels, never all four
            dropped.append(zero.float().mean())
    # (3 of 4 channels can drop): between 0.3 and 0.5 of the channels are zero on average for p = 0.5
    assert 0.3 < float(torch.stack(dropped).mean()) < 0.5
    kept = out != 0  # what is left is the plain shuffle
    plain = SLeMPretext(SLeMPretextConfig(**OFF), num_modalities=4, spatial_dims=3).apply(images, labels, layouts)
    assert torch.equal(out[kept], plain[kept])
    same = pretext.sample(images, torch.Generator().manual_seed(0))[0]
    assert torch.equal(out, same)
    with pytest.raises(PretextConfigError, match="modality_dropout"):
        SLeMPretextConfig(modality_dropout=1.0)


def test_float16_input_keeps_dtype_and_values() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(**OFF), num_modalities=2, spatial_dims=3)
    images = torch.randn(3, 2, 8, 8, 8).half()
    layouts = pretext.sample_layouts((8, 8, 8), 3, torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 5, 9])
    out = pretext.apply(images, labels, layouts)
    expected = pretext.apply(images.double(), labels, layouts)
    assert out.dtype == torch.float16 and torch.equal(out.double(), expected)
    guarded = SLeMPretext(SLeMPretextConfig(), num_modalities=2, spatial_dims=3)
    out = guarded.apply(images, labels, layouts, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_guards_give_zero_mean_unit_std_per_block_and_channel() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=3, spatial_dims=3)
    scale = torch.tensor([1.0, 30.0, 2000.0]).reshape(1, 3, 1, 1, 1)
    images = torch.rand(4, 3, 16, 16, 12) * scale + 7
    out, _, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    for i, layout in enumerate(layouts):
        for sl in layout.block_slices():
            block = out[(i, slice(None), *sl)].reshape(3, -1).double()
            assert torch.allclose(block.mean(1), torch.zeros(3, dtype=torch.double), atol=1e-4)
            assert torch.allclose(block.std(1, unbiased=False), torch.ones(3, dtype=torch.double), atol=1e-3)


def test_same_generator_seed_gives_same_sample() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=2, spatial_dims=3)
    images = torch.randn(2, 2, 12, 12, 12)
    a, ya = pretext(images, torch.Generator().manual_seed(5))
    b, yb = pretext(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(ya, yb) and ya.dtype == torch.long


def test_bad_labels_and_shapes_are_rejected() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(**OFF), num_modalities=2, spatial_dims=3)
    images = torch.randn(2, 2, 8, 8, 8)
    layouts = pretext.sample_layouts((8, 8, 8), 2, torch.Generator())
    with pytest.raises(ValueError, match=r"labels must be in \[0, 16\)"):
        pretext.apply(images, [0, 16], layouts)
    with pytest.raises(ValueError, match="expected images of shape"):
        pretext.apply(torch.randn(2, 3, 8, 8, 8), [0, 1], layouts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_images_device() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(**OFF), num_modalities=4, spatial_dims=3)
    images = _coded(2, 4, (16, 16, 16), torch.float32).cuda()
    out, labels, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    assert out.device == images.device and labels.device == images.device
    _check_shuffle(pretext, images.cpu(), out.cpu(), labels.cpu(), layouts)
    guarded = SLeMPretext(SLeMPretextConfig(), num_modalities=4, spatial_dims=3)
    assert guarded(images.half(), torch.Generator().manual_seed(0))[0].device == images.device


# ---------------------------------------------------------------------------------------- persistence


def test_state_dict_round_trip_is_json_and_weights_only_safe() -> None:
    cfg = SLeMPretextConfig(grid=(2, 2), num_assignments=12, seed=3, jitter=0.05, intensity_aug=False)
    pretext = SLeMPretext(cfg, num_modalities=3, spatial_dims=2)
    state = pretext.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    for loaded in (json.loads(json.dumps(state)), torch.load(buffer, weights_only=True)):
        restored = SLeMPretext.from_state_dict(loaded)
        assert restored.config == cfg
        assert torch.equal(restored.assignments, pretext.assignments)
        assert (restored.num_modalities, restored.spatial_dims, restored.num_classes) == (3, 2, 12)


def test_config_dict_round_trip_and_unknown_keys() -> None:
    cfg = SLeMPretextConfig(grid=(2, 2, 2), random_unsplit_axis=False, min_block=2)
    assert SLeMPretextConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["grid"] == [2, 2, 2]
    with pytest.raises(ValueError, match="unknown SLeM pretext setting"):
        SLeMPretextConfig.from_dict({**cfg.to_dict(), "blocks": 4})


def test_given_assignments_are_validated() -> None:
    cfg = SLeMPretextConfig(grid=(2, 2))
    bad = np.zeros((3, 4, 2), dtype=np.int64)
    with pytest.raises(PretextConfigError, match="permutation"):
        SLeMPretext(cfg, num_modalities=2, spatial_dims=2, assignments=bad)
    with pytest.raises(PretextConfigError, match="shape"):
        SLeMPretext(cfg, num_modalities=2, spatial_dims=2, assignments=build_assignment_set(2, 8))


def test_rank_normalisation_gives_every_block_the_same_histogram():
    torch.manual_seed(0)
    images = torch.cat([torch.randn(2, 1, 16, 16, 8), torch.rand(2, 1, 16, 16, 8) ** 3], dim=1)
    pretext = SLeMPretext(SLeMPretextConfig(grid=(2, 2, 1), random_unsplit_axis=False, jitter=0.0),
                          num_modalities=2, spatial_dims=3)
    out, _, layouts = pretext.sample(images, torch.Generator().manual_seed(1))
    reference = None
    for i, layout in enumerate(layouts):
        for slices in layout.block_slices():
            for c in range(2):
                values = out[(i, c, *slices)].flatten().sort().values
                reference = values if reference is None else reference
                assert torch.allclose(values, reference, atol=1e-5)
                assert abs(values.mean().item()) < 1e-4 and abs(values.std(unbiased=False).item() - 1) < 1e-3


def test_rank_normalisation_shares_ranks_between_ties():
    from nnunet_slem.pretext.block_norm import gaussian_rank

    x = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0, 2.0]])
    z = gaussian_rank(x)
    assert z[0, 0] == z[0, 1] == z[0, 2] and z[0, 4] == z[0, 5]
    assert z[0, 0] < z[0, 3] < z[0, 4]


def _mean_rank_reference(x: torch.Tensor) -> torch.Tensor:
    """Straightforward mean ranks per row via torch.unique (synchronising on a GPU, hence not used)."""
    out = torch.empty_like(x)
    for row in range(x.shape[0]):
        _, inverse, counts = torch.unique(x[row], sorted=True, return_inverse=True, return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        mean_rank = first.to(x.dtype) + (counts.to(x.dtype) - 1) / 2
        out[row] = torch.special.ndtri(((mean_rank[inverse] + 0.5) / x.shape[1]).clamp(1e-6, 1 - 1e-6))
    return out


@pytest.mark.parametrize("ties", ["none", "rounded", "background"])
def test_sync_free_gaussian_rank_equals_mean_ranks_bit_for_bit(ties):
    from nnunet_slem.pretext.block_norm import gaussian_rank

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3001, generator=g)
    if ties == "rounded":
        x = (x * 3).round()
    elif ties == "background":
        x[:, :2000] = 0.0  # a large tie group, as outside the body
    assert torch.equal(gaussian_rank(x), _mean_rank_reference(x))


# ----------------------------------------------------------------------- zero background (use_mask_for_norm)


def skull_stripped(seed: int = 0, shape: tuple[int, ...] = (16, 16, 16), m: int = 3):
    """BraTS-like patches as nnU-Net hands them over with ``use_mask_for_norm``: a brain (an ellipsoid at a
    random place, so blocks hold different background shares) whose channels are differently skewed
    transforms of shared anatomy plus noise (Gaussian, right-skewed, left-skewed), each z-scored inside the
    brain; the background exactly 0 in every channel."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    size = torch.tensor(shape, dtype=torch.float32).reshape(3, 1, 1, 1)
    # increasing transforms (all channels rise with the anatomy, as tissue contrasts would in a rank sense),
    # skewed to the right and to the left
    transforms = [lambda v: v, lambda v: torch.exp(1.2 * v), lambda v: -torch.exp(-1.2 * v)]

    def sample(n: int) -> torch.Tensor:
        out = torch.zeros((n, m, *shape))
        for i in range(n):
            centre = size * (0.2 + 0.6 * torch.rand(3, 1, 1, 1, generator=g))
            radii = size * (0.35 + 0.25 * torch.rand(3, 1, 1, 1, generator=g))
            brain = (((grid - centre) / radii) ** 2).sum(0) < 1
            anatomy = torch.randn(shape, generator=g)
            for c in range(m):
                v = transforms[c % 3](anatomy + 0.5 * torch.randn(shape, generator=g))[brain]
                out[i, c][brain] = (v - v.mean()) / v.std()
        return out

    return sample


def test_foreground_only_keeps_background_zero_and_the_brain_standard_normal() -> None:
    images = skull_stripped(0)(6)
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=3, spatial_dims=3)
    assert pretext.config.foreground_only
    out, _, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    background = (images == 0).all(1, keepdim=True).expand_as(images)
    assert background.any() and (~background).any()
    assert (out[background] == 0).all()  # exactly 0, in every channel and block
    checked = 0
    for i, layout in enumerate(layouts):
        for sl in layout.block_slices():
            fg = ~background[(i, 0, *sl)]
            if fg.sum() < 200:
                continue
            for c in range(3):
                values = out[(i, c, *sl)][fg].double()
                assert abs(values.mean().item()) < 1e-4 and abs(values.std(unbiased=False).item() - 1) < 1e-3
                assert abs(values.median().item()) < 0.05  # symmetric: ranks, not the skewed input
            checked += 1
    assert checked >= 6


def test_blocks_without_foreground_stay_zero() -> None:
    pretext = SLeMPretext(SLeMPretextConfig(random_unsplit_axis=False, jitter=0.0), num_modalities=2,
                          spatial_dims=3)
    images = torch.zeros(1, 2, 16, 16, 8)
    images[0, :, :8, :8] = torch.randn(2, 8, 8, 8)  # block 0 only
    images[0, 1, 15, 15, 7] = 5.0  # one voxel of block 3: below MIN_FOREGROUND of its 512
    out, _, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    slices = layouts[0].block_slices()
    assert (out[(0, slice(None), *slices[0])] != 0).float().mean() > 0.99
    for b in (1, 2, 3):
        assert (out[(0, slice(None), *slices[b])] == 0).all()


@pytest.mark.parametrize(("normalization", "aug"), [("rank", True), ("zscore", True), ("zscore", False),
                                                    ("none", True)])
def test_foreground_only_is_bit_identical_without_exact_zeros(normalization: str, aug: bool) -> None:
    """The bundled data is noisy everywhere: there the mask is everything and nothing may change."""
    images = torch.randn(4, 3, 16, 16, 12) * torch.tensor([1.0, 30.0, 2000.0]).reshape(1, 3, 1, 1, 1) + 7
    outs = []
    for foreground_only in (True, False):
        cfg = SLeMPretextConfig(normalization=normalization, intensity_aug=aug, foreground_only=foreground_only)
        pretext = SLeMPretext(cfg, num_modalities=3, spatial_dims=3)
        outs.append(pretext.sample(images, torch.Generator().manual_seed(3))[0])
        outs.append(pretext.sample(images.half(), torch.Generator().manual_seed(3))[0])
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])


def test_states_without_foreground_only_rebuild_the_old_task() -> None:
    """Checkpoints written before the option existed learnt whole-block ranks; option dicts default to on."""
    pretext = SLeMPretext(SLeMPretextConfig(), num_modalities=2, spatial_dims=3)
    state = pretext.state_dict()
    assert state["config"]["foreground_only"] is True and state["config"]["seam_band"] == 0
    assert SLeMPretext.from_state_dict(state).config.foreground_only
    old = {**state, "config": {k: v for k, v in state["config"].items() if k not in ("foreground_only", "seam_band")}}
    restored = SLeMPretext.from_state_dict(old)
    assert restored.config.foreground_only is False and restored.config.seam_band == 0
    assert SLeMPretextConfig.from_dict(old["config"]).foreground_only is True


def test_seam_band_zeroes_a_band_centred_on_every_seam() -> None:
    cfg = SLeMPretextConfig(seam_band=4, random_unsplit_axis=False, jitter=0.0, **OFF)
    pretext = SLeMPretext(cfg, num_modalities=2, spatial_dims=3)
    images = torch.rand(1, 2, 16, 16, 8) + 1
    out, _, layouts = pretext.sample(images, torch.Generator().manual_seed(0))
    assert layouts[0].boundaries[:2] == ((0, 8, 16), (0, 8, 16))
    zero = (out[0] == 0).all(0)
    expected = torch.zeros(16, 16, 8, dtype=torch.bool)
    expected[6:10] = True
    expected[:, 6:10] = True
    assert torch.equal(zero, expected)
    with pytest.raises(ValueError, match="seam_band"):
        SLeMPretextConfig(seam_band=-1)


def test_masked_gaussian_rank_ranks_the_foreground_among_itself() -> None:
    from nnunet_slem.pretext.block_norm import gaussian_rank

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 500, generator=g)
    fg = torch.rand(1, 500, generator=g) < 0.6
    z = gaussian_rank(x, fg)
    assert (z[:, ~fg[0]] == 0).all()
    for row in range(3):
        assert torch.allclose(z[row, fg[0]], gaussian_rank(x[row : row + 1, fg[0]])[0], atol=1e-5)
    assert torch.equal(gaussian_rank(x, torch.ones_like(fg)), gaussian_rank(x))
