"""The ICBM152-based brain generator: skull-stripped like BraTS (exact zero background, a brain small enough in
its field of view that nnU-Net z-scores inside the mask), nested tumours, an enhancing rim that needs T1ce
*and* T1, reproducibility per (seed, case), and a clear error without nilearn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_slem.cli import main
from nnunet_slem.data import icbm_brain, phantoms, synthetic
from nnunet_slem.data.icbm_brain import generate_case, make_dataset
from nnunet_slem.errors import UserFacingError

N_CASES = 12  # enough for the size/pose spread; each case takes ~0.1 s at 4 mm


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def cases() -> list[phantoms.SyntheticCase]:
    return [generate_case(0, i) for i in range(N_CASES)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(611, tmp_path_factory.mktemp("raw"), n_cases=3, n_test=2, seed=1)


# ----------------------------------------------------------------------------------------------------------
# Layout, metadata, reproducibility
# ----------------------------------------------------------------------------------------------------------


def test_layout_and_dataset_json(dataset: Path) -> None:
    assert dataset.name == "Dataset611_SLeMICBMBraTS"
    assert sorted(p.name for p in dataset.parent.iterdir()) == [dataset.name]  # atomic: no leftovers
    meta = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    phantom = synthetic._dataset_json("brats", 3, 2, 1, (48, 48, 48))
    for key in ("channel_names", "labels", "regions_class_order", "file_ending", "numTraining", "numTest"):
        assert meta[key] == phantom[key], key
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert meta["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                              "enhancing tumor": [3]}
    assert meta["name"] == "SLeMICBMBraTS" and "ICBM" in meta["description"] and "Collins" in meta["licence"]
    shape = list(icbm_brain.load_template(4.0).mask.shape)
    assert meta["generator"] == {"tool": "nnunet-slem make-dataset", "anatomy": "icbm152", "modalities": "brats",
                                 "seed": 1, "voxel_mm": 4.0, "shape_zyx": shape,
                                 "template": "ICBM152 2009a nonlinear symmetric (nilearn package data)"}
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [
        f"SLEM_{c:03d}_{m:04d}.nii.gz" for c in range(3) for m in range(4)]
    assert sorted(p.name for p in (dataset / "labelsTs").iterdir()) == ["SLEM_003.nii.gz", "SLEM_004.nii.gz"]


def test_written_case_is_generate_case(dataset: Path) -> None:
    case = generate_case(1, 4)  # the second held-out case: test ids continue the numbering
    image = sitk.ReadImage(str(dataset / "imagesTs" / "SLEM_004_0002.nii.gz"))
    assert image.GetSpacing() == (4.0, 4.0, 4.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), case.images[2])
    np.testing.assert_array_equal(_read(dataset / "labelsTs" / "SLEM_004.nii.gz"), case.label)


def test_same_seed_same_data_and_test_cases_do_not_change_training(tmp_path: Path) -> None:
    a = make_dataset(12, tmp_path / "a", n_cases=2, n_test=0, seed=5, voxel_mm=6.0)
    b = make_dataset(12, tmp_path / "b", n_cases=2, n_test=3, seed=5, voxel_mm=6.0)
    for name in ("imagesTr/SLEM_001_0000.nii.gz", "imagesTr/SLEM_001_0003.nii.gz", "labelsTr/SLEM_001.nii.gz"):
        np.testing.assert_array_equal(_read(a / name), _read(b / name))
    first, again, other = generate_case(5, 0, 6.0), generate_case(5, 0, 6.0), generate_case(6, 0, 6.0)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.label, again.label)
    assert not np.array_equal(first.images, other.images)


# ----------------------------------------------------------------------------------------------------------
# Skull-stripped like BraTS
# ----------------------------------------------------------------------------------------------------------


def test_background_exactly_zero_and_brain_nonzero(cases: list[phantoms.SyntheticCase]) -> None:
    for case in cases:
        assert case.images.dtype == np.float32 and case.images.shape[0] == 4
        assert np.all(case.images[:, ~case.body] == 0)  # after pose, bias and noise
        assert np.all(case.images[:, case.body] > 0)  # so nnU-Net's nonzero mask is the brain mask
        assert np.all(case.label[~case.body] == 0)


def test_brain_bounding_box_well_under_three_quarters(cases: list[phantoms.SyntheticCase]) -> None:
    """nnU-Net enables use_mask_for_norm only if the median relative size after cropping is < 0.75."""
    ratios = []
    for case in cases:
        nonzero = np.any(case.images != 0, axis=0)
        corners = np.argwhere(nonzero)
        lo, hi = corners.min(0), corners.max(0)
        assert np.all(lo >= 1) and np.all(hi <= np.asarray(nonzero.shape) - 2)  # the pose never cuts the brain
        ratios.append(np.prod(hi - lo + 1) / nonzero.size)
    assert max(ratios) < 0.75 and np.median(ratios) < 0.6, ratios


def test_pose_differs_between_cases(cases: list[phantoms.SyntheticCase]) -> None:
    template = icbm_brain.load_template(4.0)
    volumes = np.array([case.body.sum() for case in cases]) / template.mask.sum()
    assert 0.9**3 - 0.03 < volumes.min() and volumes.max() < 1.1**3 + 0.03  # scale 0.9-1.1
    assert volumes.max() / volumes.min() > 1.1
    assert not np.array_equal(cases[0].body, cases[1].body)


def test_shape_follows_voxel_size() -> None:
    coarse, default = icbm_brain.load_template(6.0).mask.shape, icbm_brain.load_template(4.0).mask.shape
    assert all(40 <= n <= 64 for n in default), default
    assert all(c < d for c, d in zip(coarse, default))
    assert icbm_brain.load_template(4.0) is icbm_brain.load_template(4.0)  # cached per process


# ----------------------------------------------------------------------------------------------------------
# Contrasts and tumours
# ----------------------------------------------------------------------------------------------------------


def test_healthy_tissue_contrasts() -> None:
    template = icbm_brain.load_template(4.0)
    label = np.zeros(template.mask.shape, dtype=np.uint8)
    grid = phantoms.voxel_grid(label.shape)
    clean = icbm_brain._clean_images(np.random.default_rng(0), grid, template, label)
    pure = {name: template.mask & (getattr(template, name) > 0.8) for name in ("gm", "wm", "csf")}
    flair, t1, t1ce, t2 = ({k: float(np.median(c[m])) for k, m in pure.items()} for c in clean)
    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t2["csf"] > t2["gm"] > t2["wm"]
    assert flair["gm"] > flair["wm"] > flair["csf"]
    assert abs(t1ce["wm"] - t1["wm"]) < 0.02  # no enhancement in healthy tissue
    assert np.sum(clean[2] > 1.1) > 0 and np.sum(clean[1] > 1.1) > 0  # T1- and T1ce-bright decoys


def test_labels_nested(cases: list[phantoms.SyntheticCase]) -> None:
    """Edema wraps the core, the enhancing rim wraps the necrosis (up to the brain's edge and the pose)."""
    core_touching_healthy, necrosis_touching_outside = [], []
    for case in cases:
        label = case.label
        assert set(np.unique(label)) <= {0, 1, 2, 3} and np.any(label == 1)
        core, necrosis = label >= 2, label == 2
        assert core.any()
        shell = ndimage.binary_dilation(core) & ~core & case.body
        core_touching_healthy.append(np.mean(label[shell] == 0))
        if necrosis.any() and np.any(label == 3):
            shell = ndimage.binary_dilation(necrosis) & ~necrosis
            necrosis_touching_outside.append(np.mean(label[shell] <= 1))
    assert np.mean(core_touching_healthy) < 0.05, core_touching_healthy
    assert necrosis_touching_outside and np.mean(necrosis_touching_outside) < 0.1, necrosis_touching_outside


def test_tumours_vary_in_size(cases: list[phantoms.SyntheticCase]) -> None:
    whole = np.array([np.sum(case.label > 0) for case in cases])
    assert whole.max() / whole.min() > 4, whole


def test_tumour_contrasts(cases: list[phantoms.SyntheticCase]) -> None:
    for case in cases:
        healthy = case.body & (case.label == 0)
        rel = [image / np.median(image[healthy]) for image in case.images]
        edema = case.label == 1
        assert np.median(rel[0][edema]) > 1.3 and np.median(rel[3][edema]) > 1.2  # FLAIR/T2 hyperintense
        enhancing = case.label == 3
        if enhancing.sum() >= 10:
            assert np.median(rel[2][enhancing]) > 1.3 > np.median(rel[1][enhancing])  # bright on T1ce only


def _best_dice(score: np.ndarray, target: np.ndarray) -> float:
    best = 0.0
    for threshold in np.quantile(score, np.linspace(0.9, 0.9999, 150)):
        predicted = score > threshold
        best = max(best, 2.0 * np.sum(predicted & target) / (predicted.sum() + target.sum()))
    return best


def test_enhancing_tumour_needs_t1ce_minus_t1(cases: list[phantoms.SyntheticCase]) -> None:
    """Healthy spots and haemorrhage are bright on T1 and T1ce: a T1ce threshold alone finds them too."""
    alone, difference = [], []
    for case in cases:
        mask, target = case.body, case.label[case.body] == 3
        if target.sum() < 10:
            continue
        t1, t1ce = ((image[mask] - image[mask].mean()) / image[mask].std() for image in case.images[1:3])
        alone.append(_best_dice(t1ce, target))
        difference.append(_best_dice(t1ce - t1, target))
    assert len(alone) >= 6
    assert np.mean(difference) > 0.8 and np.mean(difference) - np.mean(alone) > 0.2, (alone, difference)


# ----------------------------------------------------------------------------------------------------------
# Errors and the CLI
# ----------------------------------------------------------------------------------------------------------


def test_missing_nilearn_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nilearn", None)  # makes `from nilearn import datasets` raise ImportError
    monkeypatch.setitem(sys.modules, "nilearn.datasets", None)
    with pytest.raises(UserFacingError, match=r"pip install 'nnunet-slem\[realistic\]'") as excinfo:
        make_dataset(5, tmp_path, n_cases=2, n_test=0)
    assert "\n" not in str(excinfo.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("voxel_mm", [0.5, 9, float("nan"), "x", True])
def test_bad_voxel_size(voxel_mm: object, tmp_path: Path) -> None:
    with pytest.raises(UserFacingError, match="voxel-mm"):
        make_dataset(5, tmp_path, n_cases=2, n_test=0, voxel_mm=voxel_mm)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_cli_icbm152(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["make-dataset", "-d", "7", "--anatomy", "icbm152", "--voxel-mm", "6", "--cases", "2", "--test-cases",
          "1", "--raw", str(tmp_path)])
    assert "Dataset007_SLeMICBMBraTS" in capsys.readouterr().out
    meta = json.loads((tmp_path / "Dataset007_SLeMICBMBraTS" / "dataset.json").read_text(encoding="utf-8"))
    assert meta["generator"]["voxel_mm"] == 6.0 and meta["numTest"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anatomy", "icbm152", "--modalities", "chaos"], "--modalities brats"),
        (["--anatomy", "icbm152", "--shape", "32", "32", "32"], "--voxel-mm"),
        (["--voxel-mm", "3"], "--anatomy icbm152 only"),
    ],
)
def test_cli_rejects_mixed_flags(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["make-dataset", "-d", "8", "--raw", str(tmp_path), *extra])
    assert excinfo.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_phantom_default_unchanged(tmp_path: Path) -> None:
    folder = synthetic.make_dataset(9, tmp_path, n_cases=2, n_test=0, shape=(16, 16, 16))
    assert folder.name == "Dataset009_SLeMSynthBraTS"
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert meta == synthetic._dataset_json("brats", 2, 0, 0, (16, 16, 16))
    np.testing.assert_array_equal(_read(folder / "imagesTr" / "SLEM_001_0001.nii.gz"),
                                  phantoms.generate_case("brats", 0, 1, (16, 16, 16)).images[1])
