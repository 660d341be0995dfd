"""Tests for ``nnunet_slem.evaluation.metrics`` and ``nnunet-slem evaluate``.

Expected values are computed by hand on tiny images, or by brute force (all pairwise surface distances), and
Dice is cross-checked against nnU-Net's own evaluator.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from nnunet_slem.commands import evaluate as evaluate_cmd
from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.lesionwise import LesionSettings
from nnunet_slem.evaluation.metrics import (
    MetricOptions,
    Region,
    dice,
    evaluate_case,
    evaluate_folders,
    hd95_and_nsd,
    hd95_mm,
    image_diagonal_mm,
    metrics_for_arrays,
    regions_from_labels,
)

BRATS_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


def write_seg(path: Path, arr: np.ndarray, spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    """Write a (z, y, x) array as NIfTI with the given (x, y, z) spacing."""
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing_xyz)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    evaluate_cmd.run(parser.parse_args(argv))


# ------------------------------------------------------------------------------------ hand-computed values


def test_dice_of_two_overlapping_cubes_read_from_nifti(tmp_path: Path) -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred[2:6, 2:6, 3:7] = 1  # shifted by one along x: overlap 4*4*3 = 48
    spacing = (0.5, 1.0, 2.0)  # voxel = 1 mm^3
    write_seg(tmp_path / "ref.nii.gz", ref, spacing)
    write_seg(tmp_path / "pred.nii.gz", pred, spacing)
    (row,) = evaluate_case("c", tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz", [Region("fg", (1,))])
    assert row.dice == pytest.approx(2 * 48 / 128)
    assert row.ref_ml == pytest.approx(64 / 1000)
    assert row.pred_ml == pytest.approx(64 / 1000)
    # the side faces coincide (distance 0); the x=const faces are one x-step (0.5 mm) from the other cube's
    # surface: 20 of each cube's 56 surface voxels, so more than 5% of distances are 0.5 mm, none larger
    assert row.hd95_mm == pytest.approx(0.5)


@pytest.mark.parametrize(("axis", "k"), [(0, 2), (2, 3)])
def test_hd95_of_shifted_planes_uses_anisotropic_spacing_from_file(tmp_path: Path, axis: int, k: int) -> None:
    """One-voxel-thick planes are their own surface, so every surface distance is k * spacing[axis]."""
    spacing_xyz = (0.7, 1.1, 3.0)
    spacing_zyx = spacing_xyz[::-1]
    ref = np.zeros((8, 9, 10), np.uint8)
    pred = np.zeros_like(ref)
    idx_ref = [slice(None)] * 3
    idx_pred = [slice(None)] * 3
    idx_ref[axis], idx_pred[axis] = 1, 1 + k
    ref[tuple(idx_ref)] = 1
    pred[tuple(idx_pred)] = 1
    write_seg(tmp_path / "r.nii.gz", ref, spacing_xyz)
    write_seg(tmp_path / "p.nii.gz", pred, spacing_xyz)
    (row,) = evaluate_case("c", tmp_path / "r.nii.gz", tmp_path / "p.nii.gz", [Region("fg", (1,))])
    assert row.dice == 0.0
    assert row.hd95_mm == pytest.approx(k * spacing_zyx[axis])


def test_hd95_percentile_interpolates_the_union_of_both_directions() -> None:
    """ref = {x0}; pred = {x0, x4} (two isolated voxels): distances ref->pred [0], pred->ref [0, 4s].

    Union [0, 0, 4s]; numpy's linear 95th percentile sits at index 1.9 -> 0.9 * 4s.
    """
    s = 0.5
    ref = np.zeros((1, 1, 8), bool)
    pred = np.zeros_like(ref)
    ref[0, 0, 0] = True
    pred[0, 0, [0, 4]] = True
    assert hd95_mm(ref, pred, (2.0, 3.0, s)) == pytest.approx(0.9 * 4 * s)


def _brute_force_hd95(ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> float:
    def surface_points(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        interior = np.ones_like(mask)
        for ax in range(mask.ndim):
            for shift in (-1, 1):
                interior &= np.roll(padded, shift, axis=ax)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~interior) * np.asarray(spacing)

    a, b = surface_points(ref), surface_points(pred)
    d = cdist(a, b)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force_on_random_blobs(seed: int) -> None:
    """Cropping + distance transform equals all-pairs distances, including objects touching the border."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    shape = (9, 11, 13)
    ref_field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    pred_field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    ref = ref_field > np.percentile(ref_field, 60)
    pred = pred_field > np.percentile(pred_field, 70)
    ref[0, 0, :] = True  # touches the image border
    spacing = (2.5, 0.8, 1.3)
    assert hd95_mm(ref, pred, spacing) == pytest.approx(_brute_force_hd95(ref, pred, spacing), rel=1e-9)


def test_empty_conventions() -> None:
    shape, spacing = (4, 5, 6), (3.0, 1.0, 0.5)
    empty = np.zeros(shape, bool)
    some = empty.copy()
    some[1, 2, 3] = True
    diagonal = math.sqrt((4 * 3.0) ** 2 + (5 * 1.0) ** 2 + (6 * 0.5) ** 2)
    assert image_diagonal_mm(shape, spacing) == pytest.approx(diagonal)
    # both empty
    assert dice(empty, empty) == 1.0
    assert hd95_mm(empty, empty, spacing) == 0.0
    # exactly one empty, either way round
    for ref, pred in ((empty, some), (some, empty)):
        assert dice(ref, pred) == 0.0
        assert hd95_mm(ref, pred, spacing) == pytest.approx(diagonal)
        assert math.isnan(hd95_mm(ref, pred, spacing, one_empty="nan"))
        assert hd95_mm(ref, pred, spacing, one_empty=123.0) == 123.0
        assert hd95_mm(ref, pred, spacing, one_empty="50") == 50.0


def test_empty_pred_and_empty_ref_cases_from_files(tmp_path: Path) -> None:
    ref = np.zeros((4, 5, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    empty = np.zeros_like(ref)
    write_seg(tmp_path / "ref" / "a.nii.gz", ref)
    write_seg(tmp_path / "pred" / "a.nii.gz", empty)  # empty prediction
    write_seg(tmp_path / "ref" / "b.nii.gz", empty)
    write_seg(tmp_path / "pred" / "b.nii.gz", ref)  # empty reference
    write_seg(tmp_path / "ref" / "c.nii.gz", empty)
    write_seg(tmp_path / "pred" / "c.nii.gz", empty)  # both empty
    rows = evaluate_folders(tmp_path / "ref", tmp_path / "pred", [Region("fg", (1,))])
    by_case = {r.case: r for r in rows}
    diag = image_diagonal_mm((4, 5, 6), (1.0, 1.0, 1.0))
    assert (by_case["a"].dice, by_case["a"].hd95_mm, by_case["a"].pred_ml) == (0.0, pytest.approx(diag), 0.0)
    assert (by_case["b"].dice, by_case["b"].hd95_mm, by_case["b"].ref_ml) == (0.0, pytest.approx(diag), 0.0)
    assert (by_case["c"].dice, by_case["c"].hd95_mm) == (1.0, 0.0)


# ------------------------------------------------------------------------------------------------ regions


def test_brats_regions_are_unions_named_wt_tc_et() -> None:
    regions, ignore = regions_from_labels(BRATS_LABELS)
    assert ignore is None
    assert regions == [Region("WT", (1, 2, 3)), Region("TC", (2, 3)), Region("ET", (3,))]
    ref = np.array([1, 1, 2, 2, 3, 3, 0, 0]).reshape(1, 1, 8)
    pred = np.array([1, 2, 2, 3, 3, 0, 0, 0]).reshape(1, 1, 8)
    rows = {r.region: r for r in metrics_for_arrays("c", ref, pred, (1.0, 1.0, 1.0), regions)}
    assert rows["WT"].dice == pytest.approx(2 * 5 / 11)  # ref {0..5}, pred {0..4}
    assert rows["TC"].dice == pytest.approx(2 * 3 / 8)  # ref {2..5}, pred {1..4}
    assert rows["ET"].dice == pytest.approx(2 * 1 / 4)  # ref {4,5}, pred {3,4}
    assert rows["WT"].ref_ml == pytest.approx(6 / 1000)


def test_label_dataset_gives_one_region_per_label_and_honours_ignore() -> None:
    regions, ignore = regions_from_labels({"background": 0, "liver": 1, "spleen": 2, "ignore": 3})
    assert regions == [Region("liver", (1,)), Region("spleen", (2,))]
    assert ignore == 3
    ref = np.array([1, 1, 3, 3, 0]).reshape(1, 1, 5)
    pred = np.array([1, 0, 1, 1, 0]).reshape(1, 1, 5)  # the predictions under the ignore label do not count
    rows = {r.region: r for r in metrics_for_arrays("c", ref, pred, (1.0, 1.0, 1.0), regions, ignore)}
    assert rows["liver"].dice == pytest.approx(2 / 3)
    assert rows["spleen"].dice == 1.0


def test_missing_background_is_a_user_error() -> None:
    with pytest.raises(UserFacingError, match="background"):
        regions_from_labels({"liver": 1})


# ------------------------------------------------------------------------------------ agreement with nnU-Net


def _random_cases(folder_ref: Path, folder_pred: Path, n: int) -> None:
    rng = np.random.default_rng(42)
    from scipy import ndimage

    for i in range(n):
        shape = (10, 12, 14)
        ref = np.zeros(shape, np.uint8)
        pred = np.zeros(shape, np.uint8)
        for arr, thr in ((ref, 0.5), (pred, 0.52)):
            wt = ndimage.binary_opening(rng.random(shape) > thr)
            tc = wt & (rng.random(shape) > 0.4)
            et = tc & (rng.random(shape) > 0.5)
            arr[wt], arr[tc], arr[et] = 1, 2, 3
        if i == 0:
            ref[ref == 3] = 2  # ET empty in reference only
        if i == 1:
            ref[ref == 3] = 2
            pred[pred == 3] = 2  # ET empty in both: nnU-Net says NaN, we say 1
        write_seg(folder_ref / f"case_{i:03d}.nii.gz", ref, (1.0, 0.9, 2.5))
        write_seg(folder_pred / f"case_{i:03d}.nii.gz", pred, (1.0, 0.9, 2.5))


def test_dice_agrees_with_nnunet_evaluator(tmp_path: Path) -> None:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    _random_cases(ref_dir, pred_dir, 5)
    regions, _ = regions_from_labels(BRATS_LABELS)
    label_regions = [Region(str(v), (v,)) for v in (1, 2, 3)]
    ours = evaluate_folders(ref_dir, pred_dir, regions + label_regions)
    theirs = compute_metrics_on_folder(
        str(ref_dir), str(pred_dir), None, SimpleITKIO(), ".nii.gz",
        [r.labels for r in regions] + [1, 2, 3], num_processes=1,
    )
    nn = {
        (Path(c["reference_file"]).name[: -len(".nii.gz")], key): m["Dice"]
        for c in theirs["metric_per_case"]
        for key, m in c["metrics"].items()
    }
    compared = nan_cases = 0
    for row in ours:
        region = next(r for r in regions + label_regions if r.name == row.region)
        key = region.labels if region in regions else region.labels[0]
        theirs_dice = nn[(row.case, key)]
        if isinstance(theirs_dice, float) and math.isnan(theirs_dice):
            nan_cases += 1
            assert row.dice == 1.0  # both empty: our documented convention
            continue
        assert row.dice == pytest.approx(theirs_dice, abs=1e-6)
        compared += 1
    assert nan_cases >= 2  # case_001 ET region and label 3
    assert compared == len(ours) - nan_cases


# ---------------------------------------------------------------------------------------------------- CLI


def _dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    raw = tmp_path / "raw"
    ds = raw / "Dataset321_Toy"
    ds.mkdir(parents=True)
    (ds / "dataset.json").write_text(
        json.dumps({"labels": BRATS_LABELS, "regions_class_order": [1, 2, 3], "file_ending": ".nii.gz"})
    )
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return ds


def test_cli_writes_csv_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _dataset(tmp_path, monkeypatch)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    _random_cases(ref_dir, pred_dir, 3)
    (pred_dir / "extra_case.nii.gz").write_bytes((pred_dir / "case_000.nii.gz").read_bytes())  # ignored
    run_cli(["-ref", str(ref_dir), "-pred", str(pred_dir), "-d", "321", "--num-processes", "2"])
    out = pred_dir / "slem_metrics"
    assert sorted(p.name for p in out.iterdir()) == ["metrics_per_case.csv", "summary.json"]  # no temp files
    with open(out / "metrics_per_case.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "region", "dice", "hd95_mm", "ref_ml", "pred_ml", "nsd"]
    assert [(r["case"], r["region"]) for r in rows[:3]] == [("case_000", "WT"), ("case_000", "TC"),
                                                              ("case_000", "ET")]
    assert len(rows) == 9
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 3
    wt = summary["regions"]["WT"]
    dices = [float(r["dice"]) for r in rows if r["region"] == "WT"]
    assert wt["n"] == 3
    assert wt["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert wt["dice"]["std"] == pytest.approx(np.std(dices))
    assert wt["dice"]["median"] == pytest.approx(np.median(dices))
    assert set(wt["hd95_mm"]) >= {"mean", "std", "median"}
    # case_000: ET empty in reference only -> HD95 is the field-of-view diagonal
    et0 = next(r for r in rows if r["case"] == "case_000" and r["region"] == "ET")
    assert float(et0["hd95_mm"]) == pytest.approx(image_diagonal_mm((10, 12, 14), (2.5, 0.9, 1.0)))
    printed = capsys.readouterr().out
    assert "WT" in printed and "ET" in printed


def test_cli_with_dataset_json_and_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _dataset(tmp_path, monkeypatch)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    _random_cases(ref_dir, pred_dir, 2)
    run_cli(["-ref", str(ref_dir), "-pred", str(pred_dir), "-dj", str(ds / "dataset.json"),
             "-o", str(tmp_path / "out"), "--one-empty-hd95", "nan", "-np", "1"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    et = summary["regions"]["ET"]["hd95_mm"]  # case_000: one empty -> nan; case_001: both empty -> 0
    assert (et["n_finite"], et["mean"]) == (1, 0.0)
    csv_text = (tmp_path / "out" / "metrics_per_case.csv").read_text(encoding="utf-8")
    assert "case_000,ET,0.0,nan," in csv_text


def test_missing_predictions_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path, monkeypatch)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    _random_cases(ref_dir, pred_dir, 3)
    (pred_dir / "case_001.nii.gz").unlink()
    with pytest.raises(UserFacingError, match=r"1 of 3 .*case_001\.nii\.gz"):
        run_cli(["-ref", str(ref_dir), "-pred", str(pred_dir), "-d", "321"])
    assert not (pred_dir / "slem_metrics").exists()


@pytest.mark.parametrize("what", ["shape", "spacing"])
def test_geometry_mismatch_names_the_case(tmp_path: Path, what: str) -> None:
    ref = np.zeros((4, 5, 6), np.uint8)
    write_seg(tmp_path / "ref" / "bad_case.nii.gz", ref)
    if what == "shape":
        write_seg(tmp_path / "pred" / "bad_case.nii.gz", np.zeros((4, 5, 7), np.uint8))
    else:
        write_seg(tmp_path / "pred" / "bad_case.nii.gz", ref, (1.0, 1.0, 1.5))
    with pytest.raises(UserFacingError, match=f"bad_case.*{'size' if what == 'shape' else 'spacing'}"):
        evaluate_folders(tmp_path / "ref", tmp_path / "pred", [Region("fg", (1,))])


def test_unknown_dataset_id_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path, monkeypatch)
    with pytest.raises(UserFacingError, match="-dj"):
        run_cli(["-ref", str(tmp_path), "-pred", str(tmp_path), "-d", "999"])


# ------------------------------------------------------------------------------ NSD, presets, lesion-wise, bad inputs


def test_nsd_of_shifted_cubes_by_hand() -> None:
    """4x4x4 cubes shifted one voxel along x: of each cube's 56 surface voxels, the 20 on or next to an x face
    are 1 mm from the other surface, the other 36 are on it (0 mm). NSD at 0.5 mm = 72/112, at 1 mm = 1."""
    ref = np.zeros((10, 10, 10), bool)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = True
    pred[2:6, 2:6, 3:7] = True
    assert hd95_and_nsd(ref, pred, (1.0, 1.0, 1.0), nsd_tolerance_mm=0.5)[1] == pytest.approx(72 / 112)
    assert hd95_and_nsd(ref, pred, (1.0, 1.0, 1.0), nsd_tolerance_mm=1.0)[1] == 1.0
    # 3 mm along x (numpy axis 2): the 16 voxels of the face outside the other cube are 3 mm away (> 2 mm); the
    # 4 inner voxels of the face inside it are 1 mm (along y or z) from the other cube's side -> 80/112
    assert hd95_and_nsd(ref, pred, (1.0, 1.0, 3.0), nsd_tolerance_mm=2.0)[1] == pytest.approx(80 / 112)
    empty = np.zeros_like(ref)
    assert hd95_and_nsd(empty, empty, (1.0, 1.0, 1.0))[1] == 1.0
    assert hd95_and_nsd(ref, empty, (1.0, 1.0, 1.0))[1] == 0.0


def test_brats_one_empty_presets() -> None:
    some = np.zeros((4, 5, 6), bool)
    some[1, 1, 1] = True
    empty = np.zeros_like(some)
    assert hd95_mm(some, empty, (1.0, 1.0, 1.0), one_empty="brats2021") == pytest.approx(373.12866)
    assert hd95_mm(some, empty, (1.0, 1.0, 1.0), one_empty="brats2023") == 374.0
    assert hd95_mm(some, empty, (1.0, 1.0, 1.0), one_empty="374") == 374.0
    with pytest.raises(UserFacingError, match="brats2021"):
        hd95_mm(some, empty, (1.0, 1.0, 1.0), one_empty="brats2019")


def test_cli_lesion_wise_and_nsd_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path, monkeypatch)
    ref = np.zeros((12, 12, 40), np.uint8)
    ref[2:6, 2:6, 2:6] = 3  # one 64-voxel lesion in WT, TC and ET
    ref[2:6, 2:6, 30:34] = 1  # a second WT lesion (edema only)
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 2:6] = 3  # first lesion exact, second missed
    pred[8:12, 8:12, 20:24] = 2  # a false positive in WT and TC
    write_seg(tmp_path / "ref" / "c1.nii.gz", ref)
    write_seg(tmp_path / "pred" / "c1.nii.gz", pred)
    run_cli(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-d", "321", "-np", "1",
             "--lesion-wise", "--nsd-tolerance", "1"])
    out = tmp_path / "pred" / "slem_metrics"
    with open(out / "metrics_per_case.csv", encoding="utf-8") as f:
        rows = {r["region"]: r for r in csv.DictReader(f)}
    assert list(rows["WT"])[-5:] == ["lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn"]
    # WT: hit (1, 0), miss (0, 374), false positive (0, 374) -> 1/3 and 748/3
    assert (float(rows["WT"]["lesion_dice"]), float(rows["WT"]["lesion_hd95"])) == (
        pytest.approx(1 / 3), pytest.approx(748 / 3))
    assert (rows["WT"]["lesion_tp"], rows["WT"]["lesion_fp"], rows["WT"]["lesion_fn"]) == ("1", "1", "1")
    # TC: hit and false positive -> 1/2, 187; ET: the hit alone -> 1, 0
    assert float(rows["TC"]["lesion_dice"]) == pytest.approx(0.5)
    assert float(rows["TC"]["lesion_hd95"]) == pytest.approx(187.0)
    assert (float(rows["ET"]["lesion_dice"]), float(rows["ET"]["lesion_hd95"])) == (1.0, 0.0)
    assert float(rows["ET"]["nsd"]) == 1.0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["regions"]["WT"]["lesion_dice"]["mean"] == pytest.approx(1 / 3)
    assert summary["regions"]["WT"]["lesion_fn"]["total"] == 1
    assert summary["cases"]["c1"]["TC"]["lesion_fp"] == 1
    assert summary["nsd_tolerance_mm"] == 1.0 and summary["lesion_wise"]["dilation_iters"] == 3


def test_lesion_options_reach_the_metrics() -> None:
    ref = np.zeros((12, 12, 40), bool)
    ref[2:6, 2:6, 2:6] = ref[2:6, 2:6, 10:14] = True  # merged with 3 dilations, separate with 1
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 2:6] = True
    region = [Region("fg", (1,))]
    (row,) = metrics_for_arrays("c", ref.astype(np.uint8), pred.astype(np.uint8), (1.0, 1.0, 1.0), region,
                                options=MetricOptions(lesion=LesionSettings(dilation_iters=1)))
    assert (row.lesion_tp, row.lesion_fn, row.lesion_dice) == (1, 1, 0.5)


def test_label_values_not_in_dataset_json_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path, monkeypatch)
    ref = np.zeros((4, 5, 6), np.uint8)
    pred = ref.copy()
    pred[0, 0, 0] = 4  # native BraTS 2021 ET, not an nnU-Net label of this dataset
    write_seg(tmp_path / "ref" / "c1.nii.gz", ref)
    write_seg(tmp_path / "pred" / "c1.nii.gz", pred)
    with pytest.raises(UserFacingError, match=r"case c1: prediction .*c1\.nii\.gz has label values \[4\] that "
                       r"dataset\.json does not define \(it defines \[0, 1, 2, 3\]\)"):
        run_cli(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-d", "321", "-np", "1"])


def test_empty_prediction_folder_is_named(tmp_path: Path) -> None:
    write_seg(tmp_path / "ref" / "c1.nii.gz", np.zeros((4, 5, 6), np.uint8))
    (tmp_path / "pred").mkdir()
    with pytest.raises(UserFacingError, match=r"no prediction files ending in '\.nii\.gz' in .*pred; point -pred"):
        evaluate_folders(tmp_path / "ref", tmp_path / "pred", [Region("fg", (1,))])


def test_origin_mismatch_names_the_case(tmp_path: Path) -> None:
    arr = np.zeros((4, 5, 6), np.uint8)
    write_seg(tmp_path / "ref" / "bad_case.nii.gz", arr)
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin((0.0, 0.0, 5.0))
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(img, str(tmp_path / "pred" / "bad_case.nii.gz"))
    with pytest.raises(UserFacingError, match="case bad_case: reference origin"):
        evaluate_folders(tmp_path / "ref", tmp_path / "pred", [Region("fg", (1,))])


# ------------------------------------------------------------------- nnU-Net's reader/writer, aliases, progress


def _as_tiff_dataset(nifti_dir: Path, tiff_dir: Path) -> None:
    """The NIfTI files of ``nifti_dir`` as nnU-Net's Tiff3DIO stores them: ``CASE.tif`` with the spacing in a
    ``CASE.json`` sidecar (per array axis, the exact spacing SimpleITK reads from the NIfTI header)."""
    import tifffile

    tiff_dir.mkdir(parents=True)
    for path in sorted(nifti_dir.glob("*.nii.gz")):
        case = path.name[: -len(".nii.gz")]
        img = sitk.ReadImage(str(path))
        tifffile.imwrite(tiff_dir / f"{case}.tif", sitk.GetArrayFromImage(img))
        (tiff_dir / f"{case}.json").write_text(json.dumps({"spacing": list(img.GetSpacing()[::-1])}))


def test_tif_with_spacing_sidecars_scores_as_the_same_data_in_nifti(tmp_path: Path) -> None:
    """nnU-Net picks Tiff3DIO for a 3D ``.tif`` dataset and takes the spacing from the sidecars (SimpleITK would
    ignore them): every metric, HD95 in mm and volumes included, equals the NIfTI evaluation."""
    outs = {}
    for ending, folder in ((".nii.gz", "nii"), (".tif", "tif")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "dataset.json").write_text(json.dumps({"labels": BRATS_LABELS, "file_ending": ending}))
    _random_cases(tmp_path / "nii" / "ref", tmp_path / "nii" / "pred", 3)  # spacing (2.5, 0.9, 1.0) per array axis
    _as_tiff_dataset(tmp_path / "nii" / "ref", tmp_path / "tif" / "ref")
    _as_tiff_dataset(tmp_path / "nii" / "pred", tmp_path / "tif" / "pred")
    for folder, n_proc in (("nii", "1"), ("tif", "2")):  # 2 worker processes: the reader class reaches them
        out = tmp_path / f"out_{folder}"
        run_cli(["-ref", str(tmp_path / folder / "ref"), "-pred", str(tmp_path / folder / "pred"), "-djfile",
                 str(tmp_path / folder / "dataset.json"), "-o", str(out), "-np", n_proc, "--lesion-wise"])
        outs[folder] = out
    nii, tif = ((outs[f] / "metrics_per_case.csv").read_text(encoding="utf-8") for f in ("nii", "tif"))
    assert tif == nii and len(tif.splitlines()) == 1 + 3 * 3
    regions = [json.loads((outs[f] / "summary.json").read_text(encoding="utf-8"))["regions"] for f in ("nii", "tif")]
    assert regions[0] == regions[1]
    # the sidecars' spacing is what made them equal: with the isotropic spacing SimpleITK would have used, HD95
    # and the volumes differ
    with open(outs["tif"] / "metrics_per_case.csv", encoding="utf-8") as f:
        wt = next(r for r in csv.DictReader(f) if r["case"] == "case_002" and r["region"] == "WT")
    import tifffile

    ref, pred = (tifffile.imread(tmp_path / "tif" / d / "case_002.tif") for d in ("ref", "pred"))
    (iso,) = metrics_for_arrays("case_002", ref, pred, (1.0, 1.0, 1.0), [Region("WT", (1, 2, 3))])
    assert float(wt["hd95_mm"]) != pytest.approx(iso.hd95_mm) and float(wt["ref_ml"]) != pytest.approx(iso.ref_ml)
    assert float(wt["ref_ml"]) == pytest.approx(iso.ref_ml * 2.5 * float(np.float32(0.9)) * 1.0)


def test_a_reader_that_cannot_read_the_files_is_named(tmp_path: Path) -> None:
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    _random_cases(ref_dir, pred_dir, 1)
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"labels": BRATS_LABELS, "file_ending": ".nii.gz",
                              "overwrite_image_reader_writer": "Tiff3DIO"}))
    with pytest.raises(UserFacingError) as caught:
        run_cli(["-ref", str(ref_dir), "-pred", str(pred_dir), "-djfile", str(dj), "-np", "1"])
    message = str(caught.value)
    assert "\n" not in message
    assert f"Tiff3DIO (the reader dataset.json selects) cannot read reference {ref_dir / 'case_000.nii.gz'}" in message


def test_reader_writer_for_names_a_file_no_reader_reads(tmp_path: Path) -> None:
    from nnunet_slem.evaluation.segmentation_io import reader_writer_for

    bad = tmp_path / "case.tif"
    bad.write_bytes(b"not an image")
    with pytest.raises(UserFacingError, match=r"^no nnU-Net reader/writer can read .*case\.tif; set dataset\.json"):
        reader_writer_for({"file_ending": ".tif"}, bad)
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    assert reader_writer_for({"file_ending": ".nii.gz"}) is SimpleITKIO


@pytest.mark.parametrize("flag", ["-djfile", "-dj"])
def test_djfile_is_nnunets_spelling_and_dj_still_works(flag: str) -> None:
    parser = argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    args = parser.parse_args(["-ref", "r", "-pred", "p", flag, "x/dataset.json"])
    assert args.dataset_json == "x/dataset.json"
    shown = parser.format_help()
    assert "-djfile JSON" in shown and "-dj JSON" not in shown and "-dj " not in shown.replace("-djfile", "")


def test_progress_bar_over_cases_only_when_asked(tmp_path: Path, capsys, monkeypatch) -> None:
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    _random_cases(ref_dir, pred_dir, 3)
    regions, _ = regions_from_labels(BRATS_LABELS)
    quiet = evaluate_folders(ref_dir, pred_dir, regions)
    assert capsys.readouterr().err == ""
    shown = evaluate_folders(ref_dir, pred_dir, regions, progress=True)
    assert "evaluating" in (err := capsys.readouterr().err) and "3/3" in err
    assert shown == quiet
    assert evaluate_cmd.show_progress() is False  # pytest captures: not a terminal, so the CLI shows no bar
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert evaluate_cmd.show_progress() is True


def test_a_2d_png_dataset_is_scored_in_2d(tmp_path: Path) -> None:
    """NaturalImage2DIO gives a 2D image a marker axis of spacing 999: dropped, so HD95 and NSD are 2D ones."""
    from skimage import io

    ref = np.zeros((20, 30), np.uint8)
    ref[5:10, 5:15] = 1
    pred = np.zeros_like(ref)
    pred[5:10, 7:17] = 1  # two pixels to the right
    for folder, arr in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        io.imsave(tmp_path / folder / "a.png", arr, check_contrast=False)
    (row,) = evaluate_folders(tmp_path / "ref", tmp_path / "pred", [Region("fg", (1,))], ".png",
                              dataset_json={"file_ending": ".png"})
    # the short sides of the contours are 2 px (2 mm) apart, well over 5 % of the distances; the area is 50 mm^2
    # (it would be 999 times that with the marker axis kept)
    assert (row.dice, row.hd95_mm, row.ref_ml) == (pytest.approx(0.8), pytest.approx(2.0), pytest.approx(0.05))
    assert row.nsd == 1.0  # every contour pixel within 2 mm
