"""Extra inputs: a pretext declares the per-case arrays it needs beside the images (``Pretext.extra_input``) and
the loader appends their window to every patch, the same way for any pretext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnunet_slem.pretext.base import ExtraInput, Pretext
from nnunet_slem.pretext.registry import PRETEXT_NAMES, build_pretext
from nnunet_slem.pretext.supervoxel_cache import SupervoxelCache, cache_folder_name
from nnunet_slem.pretrain.data import ImageSource, PatchStream, crop, patch_window, sample_rng


@pytest.mark.parametrize("name", PRETEXT_NAMES)
def test_every_pretext_declares_its_extra_input(name: str, tmp_path: Path) -> None:
    pretext = build_pretext(name, {}, num_modalities=2, spatial_dims=3, seed=0)
    assert isinstance(pretext, Pretext)
    extra = pretext.extra_input(tmp_path, "nnUNetPlans_3d_fullres")
    assert (extra is None) == (pretext.extra_channels == 0)
    if extra is not None:
        assert isinstance(extra, ExtraInput)


def test_supervoxel_extra_input_is_the_cache_beside_the_preprocessed_data(tmp_path: Path) -> None:
    pretext = build_pretext("supervoxel", {"n_segments": 7}, num_modalities=2, spatial_dims=3, seed=0)
    cache = pretext.extra_input(tmp_path, "nnUNetPlans_3d_fullres")
    assert isinstance(cache, SupervoxelCache) and cache.config is pretext.config
    assert cache.folder == tmp_path / cache_folder_name("nnUNetPlans_3d_fullres")


class _OffsetIds:
    """An extra input whose array of case ``i`` is the case's first channel plus ``1000 * (i + 1)``."""

    def __init__(self) -> None:
        self.ensured = 0

    def ensure(self, source) -> int:
        self.ensured += 1
        return 0

    def load(self, source, index: int) -> np.ndarray:
        return np.asarray(source.image(index)[0]) + 1000.0 * (index + 1)


@pytest.fixture
def unlabeled(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    for name, shape in (("a", (2, 9, 11, 10)), ("b", (2, 6, 12, 7))):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=shape).astype(np.float32))
    return tmp_path


def test_patches_carry_the_same_window_of_the_extra_array(unlabeled: Path) -> None:
    extra = _OffsetIds()
    plain, with_extra = ImageSource(None, unlabeled), ImageSource(None, unlabeled, extra=extra)
    assert isinstance(extra, ExtraInput)
    for seed in range(6):
        index = seed % 2
        a = plain.patch(index, (8, 8, 8), sample_rng(seed, 0, 0, 0, 0))
        b = with_extra.patch(index, (8, 8, 8), sample_rng(seed, 0, 0, 0, 0))
        assert b.shape == (3, 8, 8, 8) and np.array_equal(b[:2], a)  # the images' draws do not change
        window = patch_window(plain.image(index).shape[1:], (8, 8, 8), sample_rng(seed, 0, 0, 0, 0))
        assert np.array_equal(b[2], crop(extra.load(plain, index)[None], window, (8, 8, 8))[0])
    # mirroring flips the extra channel with the images: it stays the first channel plus the case's offset
    batch = PatchStream(with_extra, (8, 8, 8), 8, seed=1).batch(0).numpy()
    inside = batch[:, 2] != 0  # zero padding outside the image in every channel
    offsets = np.unique(np.round(batch[:, 2][inside] - batch[:, 0][inside]))
    assert set(offsets) <= {1000.0, 2000.0} and extra.ensured == 0
