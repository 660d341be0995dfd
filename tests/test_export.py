"""``nnunet-slem export brats``: native BraTS labels back from nnU-Net's, round-tripping ``convert brats``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_slem.commands import convert as convert_cmd
from nnunet_slem.commands import export as export_cmd
from nnunet_slem.errors import UserFacingError

SHAPE = (6, 7, 8)
SPACING = (1.0, 1.2, 1.5)
ORIGIN = (-10.0, 4.0, 2.5)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)

# (case pattern, separator, sequence suffixes, native label values)
LAYOUTS = {
    "2021": ("BraTS2021_{:05d}", "_", ("flair", "t1", "t1ce", "t2"), (0, 1, 2, 4)),
    "2023": ("BraTS-GLI-{:05d}-000", "-", ("t2f", "t1n", "t1c", "t2w"), (0, 1, 2, 3)),
    "2024": ("BraTS-GLI-{:05d}-100", "-", ("t2f", "t1n", "t1c", "t2w"), (0, 1, 2, 3, 4)),  # post-treatment
}


def write(path: Path, arr: np.ndarray) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def run_cli(module, argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    module.run(parser.parse_args(argv))


@pytest.mark.parametrize("year", ["2021", "2023", "2024"])
def test_export_round_trips_convert_brats(year: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    pattern, sep, sequences, values = LAYOUTS[year]
    originals = {}
    for i in range(2):
        case = pattern.format(i)
        rng = np.random.default_rng(i)
        for seq in sequences:
            write(tmp_path / "src" / case / f"{case}{sep}{seq}.nii.gz", rng.integers(0, 100, SHAPE).astype(np.int16))
        originals[case] = rng.choice(np.array(values, np.uint8), size=SHAPE)
        write(tmp_path / "src" / case / f"{case}{sep}seg.nii.gz", originals[case])
    run_cli(convert_cmd, ["brats", str(tmp_path / "src"), "-d", "5"])
    labels = raw / "Dataset005_BraTS" / "labelsTr"  # stands in for nnUNetv2_predict output: same labels
    out = tmp_path / "submission"
    run_cli(export_cmd, ["brats", str(labels), str(out), "--year", year, "-np", "1"])
    assert sorted(os.listdir(out)) == sorted(f"{c}.nii.gz" for c in originals)  # names kept, no temp files left
    for case, original in originals.items():
        img = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(img), original)
        assert set(np.unique(original)) == set(values)  # every label value was exercised
        assert img.GetSpacing() == pytest.approx(SPACING)
        assert img.GetOrigin() == pytest.approx(ORIGIN)
        assert img.GetDirection() == pytest.approx(DIRECTION)


def test_label_maps_are_the_documented_ones() -> None:
    assert export_cmd.label_map("2021") == {1: 2, 2: 1, 3: 4}
    assert export_cmd.label_map("2023") == {1: 2, 2: 1, 3: 3}
    assert export_cmd.label_map("2024") == {1: 2, 2: 1, 3: 3, 4: 4}


def _predictions(folder: Path, n: int, values: tuple[int, ...]) -> None:
    for i in range(n):
        write(folder / f"case_{i:03d}.nii.gz", np.random.default_rng(i).choice(np.array(values, np.uint8), SHAPE))


def test_two_workers_write_what_one_writes(tmp_path: Path) -> None:
    _predictions(tmp_path / "pred", 5, (0, 1, 2, 3, 4))
    one = export_cmd.export_brats(tmp_path / "pred", tmp_path / "np1", "2024", num_processes=1)
    two = export_cmd.export_brats(tmp_path / "pred", tmp_path / "np2", "2024", num_processes=2)
    assert [p.name for p in one] == [p.name for p in two] == [f"case_{i:03d}.nii.gz" for i in range(5)]
    assert sorted(os.listdir(tmp_path / "np2")) == [p.name for p in two]  # no staging folder left
    lut = np.array([0, 2, 1, 3, 4], np.uint8)
    for a, b in zip(one, two, strict=True):
        img_a, img_b = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
        arr_b = sitk.GetArrayFromImage(img_b)
        assert np.array_equal(sitk.GetArrayFromImage(img_a), arr_b)
        assert arr_b.dtype == np.uint8
        original = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / b.name)))
        assert np.array_equal(arr_b, lut[original])  # and both are the relabelled prediction
        assert (img_a.GetSpacing(), img_a.GetOrigin(), img_a.GetDirection()) == (
            img_b.GetSpacing(), img_b.GetOrigin(), img_b.GetDirection())


def test_two_workers_refuse_a_bad_file_and_write_nothing(tmp_path: Path) -> None:
    _predictions(tmp_path / "pred", 4, (0, 1, 2, 3))
    bad = np.zeros(SHAPE, np.uint8)
    bad[1, 2, 3] = 4  # a resection cavity: not a label of a 2023 dataset
    write(tmp_path / "pred" / "case_002.nii.gz", bad)
    with pytest.raises(UserFacingError, match=r"case_002\.nii\.gz: label values \[4\] .*use --year 2024"):
        export_cmd.export_brats(tmp_path / "pred", tmp_path / "out", "2023", num_processes=2)
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserFacingError, match="case_002"):
        export_cmd.export_brats(tmp_path / "pred", tmp_path / "kept", "2023", num_processes=2)
    assert os.listdir(tmp_path / "kept") == ["mine.txt"]  # an existing OUT_DIR is left as it was


def test_np_below_one_is_refused(tmp_path: Path) -> None:
    _predictions(tmp_path / "pred", 1, (0, 1))
    with pytest.raises(UserFacingError, match=r"-np 0: give at least 1 worker process"):
        export_cmd.export_brats(tmp_path / "pred", tmp_path / "out", "2023", num_processes=0)


def test_label_outside_0_to_3_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    write(tmp_path / "pred" / "a.nii.gz", np.ones(SHAPE, np.uint8))
    bad = np.zeros(SHAPE, np.uint8)
    bad[0, 0, 0] = 4  # already a native BraTS 2021 label
    write(tmp_path / "pred" / "b.nii.gz", bad)
    with pytest.raises(UserFacingError, match=r"b\.nii\.gz: label values \[4\] are not nnU-Net BraTS labels"):
        export_cmd.export_brats(tmp_path / "pred", tmp_path / "out", "2021")
    assert not (tmp_path / "out").exists()


def test_empty_prediction_folder_and_in_place_export_are_refused(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    with pytest.raises(UserFacingError, match="no .nii.gz predictions"):
        export_cmd.export_brats(tmp_path / "pred", tmp_path / "out", "2023")
    write(tmp_path / "pred" / "a.nii.gz", np.ones(SHAPE, np.uint8))
    with pytest.raises(UserFacingError, match="OUT_DIR is PRED_DIR"):
        export_cmd.export_brats(tmp_path / "pred", tmp_path / "pred", "2023")
