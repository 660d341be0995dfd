"""The synthetic dataset generator: layout nnU-Net accepts, determinism, the contrasts the fusion story
relies on, and clean failures that never leave a half-written dataset behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_slem.cli import main
from nnunet_slem.data import phantoms, synthetic
from nnunet_slem.data.phantoms import generate_case
from nnunet_slem.data.synthetic import make_dataset
from nnunet_slem.errors import UserFacingError

SMALL = (24, 24, 24)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _case_arrays(folder: Path, split: str, case_id: str, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    images_dir = folder / f"images{split}"
    images = np.stack([_read(images_dir / f"{case_id}_{c:04d}.nii.gz") for c in range(n_channels)])
    return images, _read(folder / f"labels{split}" / f"{case_id}.nii.gz")


@pytest.fixture(scope="module")
def brats_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return make_dataset(501, root, n_cases=3, n_test=1, modalities="brats", seed=3, shape=SMALL)


# ----------------------------------------------------------------------------------------------------------
# Layout and metadata
# ----------------------------------------------------------------------------------------------------------


def test_brats_layout_and_dataset_json(brats_dataset: Path) -> None:
    assert brats_dataset.name == "Dataset501_SLeMSynthBraTS"
    assert sorted(p.name for p in brats_dataset.parent.iterdir()) == [brats_dataset.name]  # no leftovers
    meta = json.loads((brats_dataset / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert meta["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                              "enhancing tumor": [3]}
    assert meta["regions_class_order"] == [1, 2, 3]
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz" and meta["description"]

    train = ["SLEM_000", "SLEM_001", "SLEM_002"]
    assert sorted(p.name for p in (brats_dataset / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in train]
    assert sorted(p.name for p in (brats_dataset / "imagesTr").iterdir()) == [
        f"{c}_{m:04d}.nii.gz" for c in train for m in range(4)
    ]
    assert sorted(p.name for p in (brats_dataset / "labelsTs").iterdir()) == ["SLEM_003.nii.gz"]
    assert len(list((brats_dataset / "imagesTs").iterdir())) == 4

    image = sitk.ReadImage(str(brats_dataset / "imagesTr" / "SLEM_000_0002.nii.gz"))
    label = sitk.ReadImage(str(brats_dataset / "labelsTr" / "SLEM_000.nii.gz"))
    assert image.GetPixelID() == sitk.sitkFloat32 and label.GetPixelID() == sitk.sitkUInt8
    assert image.GetSpacing() == (1.0, 1.0, 1.0) == label.GetSpacing()
    assert sitk.GetArrayFromImage(image).shape == SMALL


def test_dataset_json_is_written_by_nnunets_generator(brats_dataset: Path) -> None:
    """nnU-Net's ``generate_dataset_json`` writes it (its field order, its ``converted_by``); our own fields pass
    through unchanged."""
    meta = json.loads((brats_dataset / "dataset.json").read_text(encoding="utf-8"))
    assert list(meta)[:6] == ["channel_names", "labels", "numTraining", "file_ending", "licence", "converted_by"]
    assert meta["converted_by"] == "nnunet-slem make-dataset" and meta["licence"] == "CC0 (synthetic data)"
    assert meta["name"] == "SLeMSynthBraTS" and meta["numTest"] == 1
    assert meta["generator"] == {"tool": "nnunet-slem make-dataset", "modalities": "brats", "seed": 3,
                                 "shape_zyx": list(SMALL)}


def test_written_files_are_generate_case(brats_dataset: Path) -> None:
    """Tests and tools can reproduce any written case in memory, including held-out ones."""
    for split, case_id, index in (("Tr", "SLEM_001", 1), ("Ts", "SLEM_003", 3)):
        images, label = _case_arrays(brats_dataset, split, case_id, 4)
        case = generate_case("brats", seed=3, index=index, shape=SMALL)
        np.testing.assert_array_equal(images, case.images)
        np.testing.assert_array_equal(label, case.label)
        assert set(np.unique(label)) <= {0, 1, 2, 3} and images.min() >= 0


def test_nnunet_verify_dataset_integrity_accepts_it(brats_dataset: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(brats_dataset), num_processes=1)


# ----------------------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_other_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(n_cases=2, n_test=0, modalities="chaos", shape=(16, 20, 20))
    a = make_dataset(12, tmp_path / "a", seed=5, **kwargs)
    b = make_dataset(12, tmp_path / "b", seed=5, **kwargs)
    c = make_dataset(12, tmp_path / "c", seed=6, **kwargs)
    for case_id in ("SLEM_000", "SLEM_001"):
        images_a, label_a = _case_arrays(a, "Tr", case_id, 2)
        images_b, label_b = _case_arrays(b, "Tr", case_id, 2)
        images_c, _ = _case_arrays(c, "Tr", case_id, 2)
        assert images_a.tobytes() == images_b.tobytes() and label_a.tobytes() == label_b.tobytes()
        assert not np.array_equal(images_a, images_c)
    # cases differ from each other, and a case does not depend on how many test cases there are
    first, second = _case_arrays(a, "Tr", "SLEM_000", 2)[0], _case_arrays(a, "Tr", "SLEM_001", 2)[0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(generate_case("chaos", 5, 1, (16, 20, 20)).images, second)


# ----------------------------------------------------------------------------------------------------------
# Content: the modalities carry complementary information
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brats_cases() -> list[phantoms.SyntheticCase]:
    return [generate_case("brats", seed=0, index=i, shape=(32, 32, 32)) for i in range(12)]


def _normalised_by_brain_median(case: phantoms.SyntheticCase) -> np.ndarray:
    medians = np.array([np.median(channel[case.body]) for channel in case.images])
    return case.images / medians[:, None, None, None]


def _pooled_means(cases: list[phantoms.SyntheticCase]) -> dict[str, np.ndarray]:
    """Mean normalised intensity per channel (FLAIR, T1, T1ce, T2), pooled over cases, per region."""
    pooled: dict[str, list[np.ndarray]] = {"normal": [], "edema": [], "necrosis": [], "enhancing": []}
    for case in cases:
        n = _normalised_by_brain_median(case)
        masks = {"normal": case.body & (case.label == 0), "edema": case.label == 1,
                 "necrosis": case.label == 2, "enhancing": case.label == 3}
        for region, mask in masks.items():
            pooled[region].append(n[:, mask])
    return {region: np.concatenate(v, axis=1).mean(axis=1) for region, v in pooled.items()}


def test_brats_labels_follow_the_convention(brats_cases: list[phantoms.SyntheticCase]) -> None:
    sizes = []
    for case in brats_cases:
        values = set(np.unique(case.label).tolist())
        assert values <= {0, 1, 2, 3} and 1 in values and values & {2, 3}
        assert not (case.label > 0)[~case.body].any()  # tumour lies inside the brain
        sizes.append(int((case.label > 0).sum()))
    with_et = sum(int((c.label == 3).any()) for c in brats_cases)
    assert with_et >= len(brats_cases) // 2  # ET usually present, may be missing in a few
    assert max(sizes) > 4 * min(sizes)  # tumour size varies a lot between cases


def test_brats_enhancement_is_seen_only_by_comparing_t1ce_with_t1(
    brats_cases: list[phantoms.SyntheticCase],
) -> None:
    means = _pooled_means(brats_cases)
    et_contrast = means["enhancing"][2] - means["enhancing"][1]
    core_contrast = means["necrosis"][2] - means["necrosis"][1]
    assert et_contrast > core_contrast + 0.6
    # On T1 the rim looks like the core ...
    assert abs(means["enhancing"][1] - means["necrosis"][1]) < 0.25
    # ... and T1ce alone is ambiguous: some normal-brain voxels are as bright as the average rim.
    assert any(
        (_normalised_by_brain_median(c)[2][c.body & (c.label == 0)] > means["enhancing"][2]).any()
        for c in brats_cases
    )


def test_brats_edema_needs_flair_or_t2(brats_cases: list[phantoms.SyntheticCase]) -> None:
    means = _pooled_means(brats_cases)
    flair, t1, t1ce, t2 = range(4)
    assert means["edema"][flair] > 1.5 * means["normal"][flair]
    assert means["edema"][t2] > 1.2 * means["normal"][t2]
    assert abs(means["edema"][t1] / means["normal"][t1] - 1.0) < 0.15
    assert abs(means["edema"][t1ce] / means["normal"][t1ce] - 1.0) < 0.15
    # necrosis: dark on T1, bright on T2, intermediate on FLAIR (below edema)
    assert means["necrosis"][t1] < 0.75 * means["normal"][t1]
    assert means["necrosis"][t2] > 1.3 * means["normal"][t2]
    assert means["normal"][flair] < means["necrosis"][flair] < means["edema"][flair]


def test_brats_channels_have_different_scales(brats_cases: list[phantoms.SyntheticCase]) -> None:
    medians = np.array([[np.median(ch[c.body]) for ch in c.images] for c in brats_cases]).mean(axis=0)
    assert medians.max() > 2.5 * medians.min()
    assert all(c.images.min() >= 0 for c in brats_cases)


def test_chaos_labels_and_out_of_phase_contrast(tmp_path: Path) -> None:
    folder = make_dataset(22, tmp_path, n_cases=3, n_test=0, modalities="chaos", seed=1, shape=(24, 32, 32))
    assert folder.name == "Dataset022_SLeMSynthCHAOS"
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "T1_in_phase", "1": "T1_out_phase"}
    assert meta["labels"] == {"background": 0, "liver": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}
    assert "regions_class_order" not in meta
    spacing = sitk.ReadImage(str(folder / "labelsTr" / "SLEM_000.nii.gz")).GetSpacing()
    assert spacing[2] > spacing[0] == spacing[1]  # coarse through-plane = first numpy axis

    complete = 0
    for index in range(3):
        images, label = _case_arrays(folder, "Tr", f"SLEM_{index:03d}", 2)
        complete += set(np.unique(label).tolist()) == {0, 1, 2, 3, 4}
        in_phase, out_phase = images
        # interiors, so the comparison is not dominated by partial volume at the boundary
        liver = ndimage.binary_erosion(label == 1, iterations=1)
        spleen = ndimage.binary_erosion(label == 4, iterations=1)
        # right kidney on the patient's right = image left (low x)
        assert np.argwhere(label == 2)[:, 2].mean() < np.argwhere(label == 3)[:, 2].mean()
        # liver and spleen look alike in phase but not out of phase
        assert abs(in_phase[liver].mean() / in_phase[spleen].mean() - 1.0) < 0.3
        liver_drop = out_phase[liver].mean() / in_phase[liver].mean()
        spleen_drop = out_phase[spleen].mean() / in_phase[spleen].mean()
        assert liver_drop < spleen_drop - 0.1
        # "India ink": the organ boundary cancels out of phase, not in phase
        interior = ndimage.binary_erosion(label == 1, iterations=2)
        rim = ndimage.binary_dilation(label == 1, iterations=1) & ~liver
        ratio_out = out_phase[rim].mean() / out_phase[interior].mean()
        ratio_in = in_phase[rim].mean() / in_phase[interior].mean()
        assert ratio_out < ratio_in - 0.1
    assert complete >= 2


# ----------------------------------------------------------------------------------------------------------
# Errors: clear messages, nothing half-written left behind
# ----------------------------------------------------------------------------------------------------------


def test_unset_nnunet_raw_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(UserFacingError, match="nnUNet_raw") as excinfo:
        make_dataset(5, n_cases=2, n_test=0, shape=(16, 16, 16))
    assert "export nnUNet_raw=" in str(excinfo.value)


def test_nnunet_raw_is_the_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    folder = make_dataset(5, n_cases=2, n_test=0, shape=(16, 16, 16))
    assert folder == tmp_path.resolve() / "Dataset005_SLeMSynthBraTS" and folder.is_dir()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dataset_id": 0}, {"dataset_id": 1000}, {"n_cases": 1}, {"n_test": -1},
        {"shape": (16, 15, 16)}, {"shape": (16, 16)}, {"modalities": "ct"},
    ],
)
def test_bad_arguments_are_rejected_before_writing(tmp_path: Path, kwargs: dict) -> None:
    args = {"dataset_id": 5, "raw_root": tmp_path / "raw", "n_cases": 2, "n_test": 0, "shape": (16, 16, 16)}
    args.update(kwargs)
    with pytest.raises(UserFacingError):
        make_dataset(**args)
    assert not (tmp_path / "raw").exists()


def test_existing_id_with_other_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Dataset501_SomethingElse").mkdir()
    with pytest.raises(UserFacingError, match="Dataset501_SomethingElse") as excinfo:
        make_dataset(501, tmp_path, n_cases=2, n_test=0, shape=(16, 16, 16))
    assert "-d" in str(excinfo.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset501_SomethingElse"]


def test_existing_same_name_needs_overwrite(tmp_path: Path) -> None:
    first = make_dataset(8, tmp_path, n_cases=2, n_test=0, shape=(16, 16, 16), seed=1)
    (first / "marker.txt").write_text("old", encoding="utf-8")
    with pytest.raises(UserFacingError, match="overwrite"):
        make_dataset(8, tmp_path, n_cases=2, n_test=0, shape=(16, 16, 16), seed=2)
    assert (first / "marker.txt").exists()

    second = make_dataset(8, tmp_path, n_cases=3, n_test=0, shape=(16, 16, 16), seed=2, overwrite=True)
    assert second == first and not (second / "marker.txt").exists()
    assert json.loads((second / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # nothing hidden left over


def test_failure_midway_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_dataset(9, tmp_path, n_cases=2, n_test=0, shape=(16, 16, 16))
    original_write_case = synthetic._write_case
    calls = []

    def failing_write_case(*args: object) -> None:
        calls.append(1)
        if len(calls) in (2, 4):  # the second case of each of the two runs below
            raise OSError("disk full")
        original_write_case(*args)

    monkeypatch.setattr(synthetic, "_write_case", failing_write_case)
    with pytest.raises(OSError, match="disk full"):
        make_dataset(9, tmp_path, n_cases=3, n_test=0, shape=(16, 16, 16), seed=4, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        make_dataset(10, tmp_path, n_cases=3, n_test=0, shape=(16, 16, 16))
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name]
    assert json.loads((old / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 2  # old dataset intact


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def test_cli_writes_and_prints_next_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["make-dataset", "-d", "7", "--cases", "2", "--test-cases", "1", "--shape", "16", "16", "16",
          "--modalities", "chaos", "--seed", "2", "--raw", str(tmp_path)])
    out = capsys.readouterr().out
    folder = tmp_path.resolve() / "Dataset007_SLeMSynthCHAOS"
    assert str(folder) in out
    assert "nnUNetv2_plan_and_preprocess -d 7 -c 3d_fullres --verify_dataset_integrity" in out
    assert len(list((folder / "imagesTs").iterdir())) == 2

    with pytest.raises(SystemExit) as excinfo:
        main(["make-dataset", "-d", "7", "--modalities", "chaos", "--raw", str(tmp_path)])
    assert excinfo.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_generator_does_not_import_torch() -> None:
    code = (
        "import sys, nnunet_slem.commands.make_dataset, nnunet_slem.data.synthetic; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unlabeled_cases_are_images_only_and_never_a_training_or_test_case(tmp_path: Path) -> None:
    """make-dataset --unlabeled-cases: imagesUnlabeled/ holds image-only cases the pool checks accept, drawn after
    the training and test cases (so the labelled part is unchanged), and pretrain --unlabeled reads them."""
    from nnunet_slem.pretrain.unlabeled_pool import pool_cases

    plain = make_dataset(13, tmp_path / "plain", n_cases=2, n_test=1, seed=4, shape=SMALL)
    pooled = make_dataset(13, tmp_path / "pooled", n_cases=2, n_test=1, seed=4, shape=SMALL, n_unlabeled=2)
    dataset_json = json.loads((pooled / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["numUnlabeled"] == 2
    cases = pool_cases(pooled / "imagesUnlabeled", dataset_json)
    assert sorted(cases) == ["SLEM_003", "SLEM_004"] and not (pooled / "labelsUnlabeled").exists()
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        assert sorted(p.name for p in (plain / folder).iterdir()) == sorted(p.name for p in (pooled / folder).iterdir())
        for p in (plain / folder).iterdir():
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(pooled / folder / p.name)))
            assert np.array_equal(a, b)
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(pooled / "imagesUnlabeled" / "SLEM_003_0000.nii.gz")))
    test = sitk.GetArrayFromImage(sitk.ReadImage(str(pooled / "imagesTs" / "SLEM_002_0000.nii.gz")))
    assert not np.array_equal(first, test)
    with pytest.raises(UserFacingError, match="--unlabeled-cases"):
        make_dataset(14, tmp_path / "bad", n_cases=2, n_test=1, shape=SMALL, n_unlabeled=-1)
