"""Tests for ``nnunet-slem convert {brats,chaos}`` on tiny fixtures written here.

Checks the label mappings voxel by voxel, the channel order, the CHAOS slice pairing (file names deliberately
run against the slice positions), and that every refused input leaves ``nnUNet_raw`` as it was.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_slem.commands import convert as convert_cmd
from nnunet_slem.errors import UserFacingError

SHAPE = (8, 10, 12)  # numpy (z, y, x)
SPACING = (1.0, 1.2, 1.5)  # (x, y, z)


@pytest.fixture()
def raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    raw = tmp_path / "nnUNet_raw"
    raw.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return raw


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    convert_cmd.add_arguments(parser)
    convert_cmd.run(parser.parse_args(argv))


def write_nifti(path: Path, arr: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


# ---------------------------------------------------------------------------------------------------- BraTS

BRATS21 = ("BraTS2021_{:05d}", "_", ("flair", "t1", "t1ce", "t2"), (0, 1, 2, 4))
SEQ_2023 = ("t2f", "t1n", "t1c", "t2w")
GLI = ("BraTS-GLI-{:05d}-000", "-", SEQ_2023, (0, 1, 2, 3))
MEN = ("BraTS-MEN-{:05d}-000", "-", SEQ_2023, (0, 1, 2, 3))
MET = ("BraTS-MET-{:05d}-000", "-", SEQ_2023, (0, 1, 2, 3))
PED = ("BraTS-PED-{:05d}-000", "-", SEQ_2023, (0, 1, 2, 3))
SSA = ("BraTS-SSA-{:05d}-000", "-", SEQ_2023, (0, 1, 2, 3))
GLI_POST = ("BraTS-GLI-{:05d}-100", "-", SEQ_2023, (0, 1, 2, 3, 4))  # 2024 post-treatment: 4 resection cavity
MAP_2023 = {0: 0, 2: 1, 1: 2, 3: 3}
TUMOUR_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


def brats_seg(values: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array(values, np.uint8), size=SHAPE)


def channel_image(channel: int, seed: int) -> np.ndarray:
    """Distinct value range per channel, so the channel order is visible in the output."""
    rng = np.random.default_rng(100 + seed)
    return (1000 * (channel + 1) + rng.integers(0, 500, SHAPE)).astype(np.int16)


def make_brats(src: Path, layout: tuple, n: int, with_seg=lambda i: True) -> list[str]:
    pattern, sep, sequences, values = layout
    cases = []
    for i in range(n):
        case = pattern.format(i)
        for channel, seq in enumerate(sequences):
            write_nifti(src / case / f"{case}{sep}{seq}.nii.gz", channel_image(channel, i))
        if with_seg(i):
            write_nifti(src / case / f"{case}{sep}seg.nii.gz", brats_seg(values, i))
        cases.append(case)
    return cases


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize(
    ("layout", "mapping", "labels", "regions_class_order"),
    [
        (BRATS21, {0: 0, 2: 1, 1: 2, 4: 3}, TUMOUR_LABELS, [1, 2, 3]),
        (GLI, MAP_2023, TUMOUR_LABELS, [1, 2, 3]),
        (MEN, MAP_2023, TUMOUR_LABELS, [1, 2, 3]),
        (MET, MAP_2023, TUMOUR_LABELS, [1, 2, 3]),
        (PED, MAP_2023, TUMOUR_LABELS, [1, 2, 3]),
        (SSA, MAP_2023, TUMOUR_LABELS, [1, 2, 3]),
        # the resection cavity keeps 4, as its own region outside WT/TC/ET, painted last
        (GLI_POST, {**MAP_2023, 4: 4}, {**TUMOUR_LABELS, "resection cavity": [4]}, [1, 2, 3, 4]),
    ],
    ids=["brats2021", "gli", "men", "met", "ped", "ssa", "gli-post-2024"],
)
def test_brats_labels_channels_and_unlabelled_cases(raw: Path, tmp_path: Path, layout, mapping, labels,
                                                    regions_class_order) -> None:
    src = tmp_path / "src"
    cases = make_brats(src, layout, 3, with_seg=lambda i: i != 2)  # case 2: validation case, no seg
    run_cli(["brats", str(src), "-d", "7"])
    ds = raw / "Dataset007_BraTS"
    assert sorted(os.listdir(raw)) == ["Dataset007_BraTS"]
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert dj["labels"] == labels
    assert list(dj["labels"]) == list(labels)  # order matters: regions_class_order follows it
    assert dj["regions_class_order"] == regions_class_order
    assert (dj["numTraining"], dj["numUnlabeled"], dj["file_ending"]) == (2, 1, ".nii.gz")
    for i, case in enumerate(cases):
        folder = ds / ("imagesTr" if i != 2 else "imagesUnlabeled")
        for channel in range(4):
            assert np.array_equal(read(folder / f"{case}_{channel:04d}.nii.gz"), channel_image(channel, i))
    assert sorted(os.listdir(ds / "labelsTr")) == [f"{c}.nii.gz" for c in cases[:2]]
    for i, case in enumerate(cases[:2]):
        original = brats_seg(layout[3], i)
        converted = read(ds / "labelsTr" / f"{case}.nii.gz")
        expected = np.vectorize(mapping.get)(original)
        assert np.array_equal(converted, expected)
        assert set(np.unique(original)) == set(layout[3])  # every label value was exercised
        img = sitk.ReadImage(str(ds / "labelsTr" / f"{case}.nii.gz"))
        assert img.GetSpacing() == pytest.approx(SPACING)


def test_brats_images_only(raw: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cases = make_brats(src, GLI, 2)
    run_cli(["brats", str(src), "-d", "8", "--images-only", "--name", "GLIunlab"])
    ds = raw / "Dataset008_GLIunlab"
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert (dj["numTraining"], dj["numUnlabeled"]) == (0, 2)
    assert os.listdir(ds / "imagesTr") == [] and os.listdir(ds / "labelsTr") == []
    assert len(os.listdir(ds / "imagesUnlabeled")) == 4 * len(cases)


def _assert_raw_untouched(raw: Path, expected: list[str] | None = None) -> None:
    assert sorted(os.listdir(raw)) == (expected or [])


def test_missing_sequence_names_case_and_file(raw: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cases = make_brats(src, BRATS21, 3)
    (src / cases[2] / f"{cases[2]}_t1ce.nii.gz").unlink()  # last case: earlier cases were already written
    with pytest.raises(UserFacingError, match=rf"case {cases[2]}: missing {cases[2]}_t1ce\.nii\.gz"):
        run_cli(["brats", str(src), "-d", "9"])
    _assert_raw_untouched(raw)


@pytest.mark.parametrize("what", ["shape", "origin"])
def test_mismatched_channel_geometry_names_both(raw: Path, tmp_path: Path, what: str) -> None:
    src = tmp_path / "src"
    cases = make_brats(src, GLI, 2)
    bad = src / cases[1] / f"{cases[1]}-t2w.nii.gz"
    if what == "shape":
        write_nifti(bad, np.zeros((8, 10, 13), np.int16))
    else:
        write_nifti(bad, channel_image(3, 1), origin=(0.0, 0.01, 0.0))
    with pytest.raises(UserFacingError) as err:
        run_cli(["brats", str(src), "-d", "10"])
    msg = str(err.value)
    assert f"case {cases[1]}" in msg and f"{cases[1]}-t2f.nii.gz" in msg and f"{cases[1]}-t2w.nii.gz" in msg
    assert ("(13, 10, 8)" in msg and "(12, 10, 8)" in msg) if what == "shape" else "0.01" in msg
    _assert_raw_untouched(raw)


def test_unknown_label_value_is_refused(raw: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    cases = make_brats(src, GLI, 1)
    seg = brats_seg(GLI[3], 0)
    seg[0, 0, 0] = 4  # resection cavity (BraTS 2024) is not a GLI 2023 tumour label
    write_nifti(src / cases[0] / f"{cases[0]}-seg.nii.gz", seg)
    with pytest.raises(UserFacingError, match=rf"case {cases[0]}: segmentation has label values \[4\]") as err:
        run_cli(["brats", str(src), "-d", "11"])
    assert "--layout gli-post" in str(err.value)  # the way out for post-treatment cases with 0NN folders
    _assert_raw_untouched(raw)


def test_forced_gli_post_layout_keeps_the_resection_cavity(raw: Path, tmp_path: Path) -> None:
    """--layout gli-post converts post-treatment cases whatever their suffix (here -000, the 2023 pattern)."""
    src = tmp_path / "src"
    cases = make_brats(src, (GLI[0], "-", SEQ_2023, GLI_POST[3]), 2)
    run_cli(["brats", str(src), "-d", "15", "--layout", "gli-post"])
    ds = raw / "Dataset015_BraTS"
    assert json.loads((ds / "dataset.json").read_text(encoding="utf-8"))["labels"]["resection cavity"] == [4]
    for i, case in enumerate(cases):
        original = brats_seg(GLI_POST[3], i)
        assert np.array_equal(read(ds / "labelsTr" / f"{case}.nii.gz"),
                              np.vectorize({**MAP_2023, 4: 4}.get)(original))


def test_evaluate_reports_the_resection_cavity_apart_from_the_tumour(raw: Path, tmp_path: Path) -> None:
    """A prediction that misses every cavity voxel: WT/TC/ET stay perfect (RC is outside them), RC scores 0."""
    from nnunet_slem.commands import evaluate as evaluate_cmd

    src = tmp_path / "src"
    cases = make_brats(src, GLI_POST, 2)
    run_cli(["brats", str(src), "-d", "18"])
    ds = raw / "Dataset018_BraTS"
    pred = tmp_path / "pred"
    for case in cases:
        img = sitk.ReadImage(str(ds / "labelsTr" / f"{case}.nii.gz"))
        arr = sitk.GetArrayFromImage(img)
        assert (arr == 4).any()
        arr[arr == 4] = 0
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        pred.mkdir(exist_ok=True)
        sitk.WriteImage(out, str(pred / f"{case}.nii.gz"))
    parser = argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    evaluate_cmd.run(parser.parse_args(["-ref", str(ds / "labelsTr"), "-pred", str(pred), "-dj",
                                        str(ds / "dataset.json"), "-o", str(tmp_path / "m"), "-np", "1"]))
    regions = json.loads((tmp_path / "m" / "summary.json").read_text(encoding="utf-8"))["regions"]
    assert list(regions) == ["WT", "TC", "ET", "resection cavity"]
    assert [regions[r]["dice"]["mean"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    assert regions["resection cavity"]["dice"]["mean"] == 0.0


@pytest.mark.parametrize(
    ("first", "second", "names"),
    [(GLI, GLI_POST, ("BraTS 2023 GLI", "BraTS 2024 post-treatment glioma")),
     (MET, BRATS21, ("BraTS 2023 MET", "BraTS 2021"))],
    ids=["gli-2023-and-2024", "met-and-2021"],
)
def test_mixed_layouts_name_a_case_of_each(raw: Path, tmp_path: Path, first, second, names) -> None:
    src = tmp_path / "src"
    a = make_brats(src, first, 2)
    b = make_brats(src, second, 1)
    with pytest.raises(UserFacingError, match="mixes BraTS layouts") as err:
        run_cli(["brats", str(src), "-d", "16"])
    msg = str(err.value)
    assert "\n" not in msg
    assert a[0] in msg and b[0] in msg and all(n in msg for n in names)
    _assert_raw_untouched(raw)


def test_forced_layout_still_refuses_other_layouts(raw: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_brats(src, MEN, 1)
    make_brats(src, SSA, 1)
    with pytest.raises(UserFacingError, match=r"BraTS-SSA-00000-000 is BraTS 2023 SSA"):
        run_cli(["brats", str(src), "-d", "17", "--layout", "men"])
    _assert_raw_untouched(raw)


def test_unknown_layout_lists_every_layout_on_one_line(raw: Path, tmp_path: Path) -> None:
    (tmp_path / "src" / "patient_1").mkdir(parents=True)
    (tmp_path / "src" / "BraTS-MEN-RT-0001-1").mkdir()  # BraTS 2024 meningioma RT: another layout, not supported
    with pytest.raises(UserFacingError) as err:
        run_cli(["brats", str(tmp_path / "src"), "-d", "12"])
    msg = str(err.value)
    assert "\n" not in msg
    assert "BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz" in msg
    for kind in ("GLI", "MEN", "MET", "PED", "SSA"):
        assert f"BraTS 2023 {kind}" in msg and f"BraTS-{kind}-NNNNN-" in msg
    assert "BraTS 2024 post-treatment glioma [gli-post]: BraTS-GLI-NNNNN-1NN" in msg
    _assert_raw_untouched(raw)


def test_command_layout_names_are_the_converters() -> None:
    from nnunet_slem.convert import brats

    assert convert_cmd.LAYOUT_KEYS == brats.LAYOUT_KEYS


def test_existing_dataset_id_is_refused_and_left_alone(raw: Path, tmp_path: Path) -> None:
    existing = raw / "Dataset013_Mine"
    (existing / "imagesTr").mkdir(parents=True)
    (existing / "dataset.json").write_text("{}", encoding="utf-8")
    src = tmp_path / "src"
    make_brats(src, GLI, 1)
    with pytest.raises(UserFacingError, match=r"dataset ID 13 is already used by .*Dataset013_Mine"):
        run_cli(["brats", str(src), "-d", "13"])
    _assert_raw_untouched(raw, ["Dataset013_Mine"])
    assert (existing / "dataset.json").read_text(encoding="utf-8") == "{}"
    assert os.listdir(existing / "imagesTr") == []


def test_unset_nnunet_raw_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    make_brats(tmp_path / "src", GLI, 1)
    with pytest.raises(UserFacingError, match="nnUNet_raw is not set"):
        run_cli(["brats", str(tmp_path / "src"), "-d", "14"])


# ---------------------------------------------------------------------------------------------------- CHAOS

T1_SIZE = (5, 6, 7)  # slices, rows, cols
T1_SPACING = (1.5, 1.25, 4.0)  # x (col), y (row), z (slice)
T1_ORIGIN = (-10.0, -20.0, 30.0)
STUDY_UID = "1.2.826.0.1.3680043.2.1125.9"


def write_dicom_series(
    folder: Path, arr: np.ndarray, spacing, origin, series_uid: str, names: list[str]
) -> None:
    """One file per slice with the tags GDCM sorts and positions by; ``names[z]`` is slice z's file."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr.shape[0]):
        sl = sitk.GetImageFromArray(arr[z].astype(np.int16))
        sl.SetSpacing(spacing[:2])
        position = (origin[0], origin[1], origin[2] + z * spacing[2])
        tags = {
            "0008|0060": "MR",
            "0020|000d": STUDY_UID,
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0032": "\\".join(f"{p:g}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]:g}\\{spacing[0]:g}",  # row spacing \ column spacing
            "0018|0050": f"{spacing[2]:g}",
            "0020|0013": str(z + 1),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / names[z]))
        writer.Execute(sl)


def ground_png(k: int) -> np.ndarray:
    """PNG number k (in file-name order): grey values from inside each CHAOS range, placed depending on k."""
    png = np.zeros(T1_SIZE[1:], np.uint8)
    png[k % T1_SIZE[1], :] = 63  # liver row moves with k
    png[:, 0] = 60  # liver, off-centre grey value
    png[0, 1 + k % 3] = 126  # right kidney
    png[-1, -1] = 189  # left kidney
    png[-1, -2] = 245  # spleen
    return png


def expected_labels(k: int) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    lut[[60, 63]], lut[126], lut[189], lut[245] = 1, 2, 3, 4
    return lut[ground_png(k)]


def t1_image(echo: int) -> np.ndarray:
    return (np.arange(np.prod(T1_SIZE)).reshape(T1_SIZE) + 1000 * echo).astype(np.int16)


def make_chaos_patient(mr: Path, patient: str, labelled: bool, uid: str, t2: bool = True) -> None:
    """File names run against slice position (name rank k is slice n-1-k), as a stress test of pairing."""
    n = T1_SIZE[0]
    in_names = [f"IMG-0004-{2 * (n - z):05d}.dcm" for z in range(n)]
    out_names = [f"IMG-0004-{2 * (n - z) - 1:05d}.dcm" for z in range(n)]
    dicom = mr / patient / "T1DUAL" / "DICOM_anon"
    write_dicom_series(dicom / "InPhase", t1_image(1), T1_SPACING, T1_ORIGIN, f"{uid}.1", in_names)
    write_dicom_series(dicom / "OutPhase", t1_image(2), T1_SPACING, T1_ORIGIN, f"{uid}.2", out_names)
    if labelled:
        ground = mr / patient / "T1DUAL" / "Ground"
        ground.mkdir(parents=True)
        for k, name in enumerate(sorted(in_names)):
            sitk.WriteImage(sitk.GetImageFromArray(ground_png(k)), str(ground / name.replace(".dcm", ".png")))
    if t2:
        # T2-SPIR on its own, larger grid; intensity 4 * x_mm is linear, so linear resampling is exact
        t2_spacing, t2_origin, t2_shape = (0.75, 2.0, 5.0), (-10.75, -24.0, 25.0), (6, 8, 16)
        x_mm = t2_origin[0] + t2_spacing[0] * np.arange(t2_shape[2])
        arr = np.broadcast_to(4 * x_mm, t2_shape)
        names = [f"IMG-0002-{z + 1:05d}.dcm" for z in range(t2_shape[0])]
        t2_dir = mr / patient / "T2SPIR" / "DICOM_anon"
        write_dicom_series(t2_dir, arr, t2_spacing, t2_origin, f"{uid}.3", names)


@pytest.mark.parametrize("level", ["MR", "Train_Sets", "above"])
def test_chaos_conversion(raw: Path, tmp_path: Path, level: str) -> None:
    base = tmp_path / "CHAOS_Train_Sets"
    mr = base / "Train_Sets" / "MR"
    make_chaos_patient(mr, "1", labelled=True, uid="1.2.826.0.1.3680043.2.1125.100")
    make_chaos_patient(mr, "2", labelled=False, uid="1.2.826.0.1.3680043.2.1125.200")
    src = {"MR": mr, "Train_Sets": base / "Train_Sets", "above": base}[level]
    run_cli(["chaos", str(src), "-d", "21"])
    ds = raw / "Dataset021_CHAOS_MR"
    assert sorted(os.listdir(raw)) == ["Dataset021_CHAOS_MR"]
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["channel_names"] == {"0": "T1_in_phase", "1": "T1_out_phase"}
    assert dj["labels"] == {"background": 0, "liver": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}
    assert (dj["numTraining"], dj["numUnlabeled"]) == (1, 1)
    assert sorted(os.listdir(ds / "imagesTr")) == [f"CHAOS_MR_001_000{c}.nii.gz" for c in (0, 1)]
    assert sorted(os.listdir(ds / "imagesUnlabeled")) == [f"CHAOS_MR_002_000{c}.nii.gz" for c in (0, 1)]

    in_phase = sitk.ReadImage(str(ds / "imagesTr" / "CHAOS_MR_001_0000.nii.gz"))
    assert in_phase.GetSpacing() == pytest.approx(T1_SPACING)
    assert in_phase.GetOrigin() == pytest.approx(T1_ORIGIN)
    assert np.array_equal(sitk.GetArrayFromImage(in_phase), t1_image(1))  # slices in position order
    assert np.array_equal(read(ds / "imagesTr" / "CHAOS_MR_001_0001.nii.gz"), t1_image(2))

    label = sitk.ReadImage(str(ds / "labelsTr" / "CHAOS_MR_001.nii.gz"))
    assert label.GetSpacing() == pytest.approx(T1_SPACING) and label.GetOrigin() == pytest.approx(T1_ORIGIN)
    lab = sitk.GetArrayFromImage(label)
    n = T1_SIZE[0]
    for z in range(n):
        # slice z is InPhase file name rank n-1-z, hence PNG number n-1-z
        assert np.array_equal(lab[z], expected_labels(n - 1 - z)), z
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4}


def test_chaos_t2spir_is_resampled_onto_t1_grid(raw: Path, tmp_path: Path) -> None:
    mr = tmp_path / "MR"
    make_chaos_patient(mr, "3", labelled=True, uid="1.2.826.0.1.3680043.2.1125.300")
    run_cli(["chaos", str(mr), "-d", "22", "--t2spir"])
    ds = raw / "Dataset022_CHAOS_MR"
    dj = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert dj["channel_names"] == {"0": "T1_in_phase", "1": "T1_out_phase", "2": "T2_SPIR"}
    t2 = sitk.ReadImage(str(ds / "imagesTr" / "CHAOS_MR_003_0002.nii.gz"))
    assert t2.GetSize() == T1_SIZE[::-1] and t2.GetSpacing() == pytest.approx(T1_SPACING)
    x_mm = T1_ORIGIN[0] + T1_SPACING[0] * np.arange(T1_SIZE[2])
    assert np.allclose(sitk.GetArrayFromImage(t2), np.broadcast_to(4 * x_mm, T1_SIZE), atol=1e-4)


def test_chaos_png_count_mismatch_is_refused(raw: Path, tmp_path: Path) -> None:
    mr = tmp_path / "MR"
    make_chaos_patient(mr, "1", labelled=True, uid="1.2.826.0.1.3680043.2.1125.400", t2=False)
    make_chaos_patient(mr, "5", labelled=True, uid="1.2.826.0.1.3680043.2.1125.500", t2=False)
    sorted((mr / "5" / "T1DUAL" / "Ground").iterdir())[0].unlink()
    with pytest.raises(UserFacingError, match=r"patient 5: 4 ground-truth PNGs .* but 5 DICOM slices"):
        run_cli(["chaos", str(mr), "-d", "23"])
    _assert_raw_untouched(raw)


def test_chaos_out_phase_on_other_grid_is_refused(raw: Path, tmp_path: Path) -> None:
    mr = tmp_path / "MR"
    make_chaos_patient(mr, "1", labelled=False, uid="1.2.826.0.1.3680043.2.1125.600", t2=False)
    out_phase = mr / "1" / "T1DUAL" / "DICOM_anon" / "OutPhase"
    for f in out_phase.iterdir():
        f.unlink()
    names = [f"IMG-{z:05d}.dcm" for z in range(T1_SIZE[0])]
    write_dicom_series(out_phase, t1_image(2), (1.5, 1.25, 4.5), T1_ORIGIN, "1.2.826.0.1.3680043.2.1125.601",
                       names)
    with pytest.raises(UserFacingError, match=r"patient 1: T1 OutPhase is not on the same voxel grid") as err:
        run_cli(["chaos", str(mr), "-d", "24"])
    assert "4.5" in str(err.value) and "spacing (1.5, 1.25, 4)" in str(err.value)
    _assert_raw_untouched(raw)


def test_chaos_unknown_layout(raw: Path, tmp_path: Path) -> None:
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(UserFacingError, match=r"MR/<patient>/T1DUAL/DICOM_anon/\{InPhase,OutPhase\}"):
        run_cli(["chaos", str(tmp_path / "nothing_here"), "-d", "25"])
    _assert_raw_untouched(raw)
