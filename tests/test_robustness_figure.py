"""``nnunet-slem robustness`` and ``nnunet-slem figure``.

Unit tests (channel removal, conditions, slice choice, colours, error messages) need no model. The
integration tests train ``SLeMTrainer_noPretrain_smoke`` on fold 4 of the shared project (no other test uses
fold 4) through ``nnUNetv2_train`` and then drive both commands through the console script, as a user would.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.figure import (
    BRATS_COLORS,
    choose_slice,
    drawing_order,
    parse_prediction,
    region_colors,
)
from nnunet_slem.evaluation.metrics import Region, regions_from_labels
from nnunet_slem.evaluation.robustness import (
    ALL_CHANNELS,
    check_model_folder,
    list_image_cases,
    make_conditions,
    noise_rng,
    preprocess_case,
    remove_channels,
    run_robustness,
)

FOLD = 4
TRAINER = "SLeMTrainer_noPretrain_smoke"
N_CASES = 2

# ------------------------------------------------------------------------------------ channel removal


def test_zero_fill_replaces_only_the_removed_channels() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 5, 6, 7)).astype(np.float32)
    out = remove_channels(data, (1, 3), "zero")
    assert np.all(out[[1, 3]] == 0.0)
    assert np.array_equal(out[[0, 2]], data[[0, 2]])
    assert not np.all(data[1] == 0.0), "the input must not be modified"


def test_noise_fill_is_standard_normal_inside_the_normalisation_mask_and_reproducible() -> None:
    data = np.full((3, 20, 30, 40), 5.0, np.float32)
    mask = np.zeros((20, 30, 40), bool)
    mask[2:18, 3:27, 4:36] = True
    rngs = {c: noise_rng(7, "caseA", c) for c in (0, 2)}
    out = remove_channels(data, (0, 2), "noise", nonzero_mask=mask, use_mask_for_norm=[True, True, False],
                          rngs=rngs)
    assert np.array_equal(out[1], data[1])
    inside = out[0][mask]
    assert abs(inside.mean()) < 0.05 and abs(inside.std() - 1.0) < 0.05
    assert np.all(out[0][~mask] == 0.0), "outside the mask nnU-Net leaves a masked-normalised channel at 0"
    assert np.count_nonzero(out[2] == 0.0) < 10, "channel 2 is not masked-normalised: noise everywhere"
    again = remove_channels(data, (0,), "noise", mask, [True, True, False], {0: noise_rng(7, "caseA", 0)})
    assert np.array_equal(again[0], out[0]), "the same channel gets the same noise in every condition"
    other_case = remove_channels(data, (0,), "noise", mask, [True, True, False], {0: noise_rng(7, "caseB", 0)})
    assert not np.array_equal(other_case[0], out[0])


def test_unknown_fill_is_a_user_error() -> None:
    with pytest.raises(UserFacingError, match="unknown fill 'mean'"):
        remove_channels(np.zeros((2, 3, 3, 3), np.float32), (0,), "mean")


def test_conditions_single_channels_and_pairs() -> None:
    names = ["t1", "t1ce", "t2", "flair"]
    single = make_conditions(names)
    assert [c.name for c in single] == [ALL_CHANNELS, "no t1", "no t1ce", "no t2", "no flair"]
    both = make_conditions(names, pairs=True)
    assert len(both) == 1 + 4 + 6 and both[5].removed == (0, 1) and both[5].name == "no t1+t1ce"
    with pytest.raises(UserFacingError, match="multi-modal"):
        make_conditions(["ct"])


def test_images_without_every_channel_name_the_missing_files(tmp_path: Path) -> None:
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserFacingError) as e:
        list_image_cases(tmp_path, ".nii.gz", ["T1", "FLAIR"])
    assert "b lacks _0001 (FLAIR)" in str(e.value) and "channel_names" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserFacingError, match="no images named CASE_XXXX.nii.gz"):
        list_image_cases(tmp_path / "empty", ".nii.gz", ["T1", "FLAIR"])


def test_missing_fold_names_the_checkpoint_and_the_training_command(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset123_X" / "MyTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (folder / "plans.json").write_text("{}", encoding="utf-8")
    (folder / "dataset.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserFacingError) as e:
        check_model_folder(folder, 3)
    msg = str(e.value)
    assert str(folder / "fold_3" / "checkpoint_final.pth") in msg and "fold_0" in msg
    assert "nnUNetv2_train Dataset123_X 3d_fullres 3 -tr MyTrainer -p nnUNetPlans" in msg
    assert check_model_folder(folder, 0) == folder / "fold_0" / "checkpoint_final.pth"


# ------------------------------------------------------------------------------------------- figure units


def test_automatic_slice_is_the_one_with_most_foreground() -> None:
    label = np.zeros((12, 20, 16), np.uint8)
    label[3, 2:6, 2:6] = 1  # 16 voxels in z-slice 3
    label[8, 5:15, 4:12] = 2  # 80 voxels in z-slice 8
    label[9, 0:2, 0:2] = 1
    assert choose_slice(label > 0, axis=0) == 8
    assert choose_slice(label > 0, axis=1) == 5  # y rows 5..14 hold 8 voxels each, 5 also has slice 3's 4
    assert choose_slice(label > 0, axis=2) == 4  # x = 4, 5 hold z3's and z8's voxels; ties -> first
    assert choose_slice(np.zeros((6, 4, 4), bool), axis=0) == 3  # nothing labelled: the middle slice
    with pytest.raises(UserFacingError, match="--axis 3"):
        choose_slice(label > 0, axis=3)


def test_brats_regions_are_drawn_outer_first_in_green_yellow_red() -> None:
    regions, _ = regions_from_labels(
        {"background": 0, "enhancing tumor": [3], "tumor core": [2, 3], "whole tumor": [1, 2, 3]}
    )
    order = drawing_order(regions, has_regions=True)
    assert [r.name for r in order] == ["WT", "TC", "ET"]
    assert region_colors(order) == BRATS_COLORS
    labels = [Region("liver", (1,)), Region("kidney", (2,)), Region("spleen", (3,))]
    colors = region_colors(drawing_order(labels, has_regions=False))
    assert len(set(colors.values())) == 3


def test_prediction_argument_forms() -> None:
    assert parse_prediction("SLeM=/x/pred").name == "SLeM"
    assert parse_prediction("/x/pred_scratch").name == "pred_scratch"
    with pytest.raises(ValueError):
        parse_prediction("=/x")


@pytest.mark.parametrize(("extra", "disabled"), [(["--disable_tta"], True), (["--disable-tta"], True), ([], False)])
def test_disable_tta_takes_nnunets_spelling_and_the_earlier_one(extra: list[str], disabled: bool) -> None:
    import argparse

    from nnunet_slem.commands import robustness as robustness_cmd

    parser = argparse.ArgumentParser()
    robustness_cmd.add_arguments(parser)
    args = parser.parse_args(["-i", "imgs", "-ref", "labels", "-d", "1", "-c", "3d_fullres", "-f", "0", "-tr", "T",
                              *extra])
    assert args.disable_tta is disabled
    shown = parser.format_help()
    assert "--disable_tta" in shown and "--disable-tta" not in shown  # one spelling in --help: nnU-Net's


# ------------------------------------------------------------------------------ lesion-wise Dice, no model

BRATS_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


def _fake_run(tmp_path: Path, monkeypatch, lesion_wise: bool | None):
    """``run_robustness`` on one constructed BraTS-region case, nnU-Net replaced by stand-ins.

    Reference: a 125-voxel ET cube and a 64-voxel edema cube (WT only). The stand-in model predicts the
    reference, except without FLAIR, where it misses the edema lesion and adds a 27-voxel ET false positive.
    """
    from nnunet_slem.evaluation import robustness

    folder = tmp_path / "Dataset500_B" / "T__P__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (folder / "plans.json").write_text("{}", encoding="utf-8")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": BRATS_LABELS, "file_ending": ".nii.gz"
    }), encoding="utf-8")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("c1_0000.nii.gz", "c1_0001.nii.gz"):
        (images / name).write_bytes(b"")  # never read: preprocessing is replaced
    (labels / "c1.nii.gz").write_bytes(b"")
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[2:7, 2:7, 2:7] = 3
    ref[12:16, 12:16, 12:16] = 1
    without_flair = np.where(ref == 1, 0, ref).astype(np.uint8)
    without_flair[12:15, 2:5, 2:5] = 3

    reader = SimpleNamespace(read_seg=lambda path: (ref[None], {"spacing": [1.0, 1.0, 1.0]}))
    predictor = SimpleNamespace(
        configuration_manager=SimpleNamespace(normalization_schemes=["ZScoreNormalization"] * 2,
                                              use_mask_for_norm=[False, False]),
        plans_manager=SimpleNamespace(image_reader_writer_class=lambda: reader),
    )
    monkeypatch.setattr(robustness, "make_predictor", lambda *args, **kwargs: predictor)
    monkeypatch.setattr(robustness, "preprocess_case",
                        lambda pred, files: (np.ones((2, *ref.shape), np.float32), np.ones(ref.shape, bool), {}))
    monkeypatch.setattr(robustness, "predict_segmentation",
                        lambda pred, data, props: without_flair if not data[1].any() else ref.copy())
    return robustness.run_robustness(folder, 0, images, labels, tmp_path / "out", device="cpu", progress=False,
                                     lesion_wise=lesion_wise)


@pytest.mark.parametrize("lesion_wise", [None, True])
def test_lesion_wise_dice_next_to_global_dice_on_brats_regions(tmp_path: Path, monkeypatch, lesion_wise) -> None:
    result = _fake_run(tmp_path, monkeypatch, lesion_wise)  # None: on by itself, the regions are WT, TC, ET
    assert result.lesion is not None and [r.name for r in result.regions] == ["WT", "TC", "ET"]
    per_case = _read_csv(result.out_dir / "robustness_per_case.csv")
    assert list(per_case[0]) == ["condition", "removed_channels", "case", "region", "dice", "lesion_dice"]
    lesion = {(r["condition"], r["region"]): float(r["lesion_dice"]) for r in per_case}
    assert all(lesion[(c, g)] == 1.0 for c in (ALL_CHANNELS, "no T1") for g in ("WT", "TC", "ET"))
    # WT: ET cube hit (1), edema lesion missed (0), one false positive (0) -> 1/3; TC, ET: hit + FP -> 1/2
    assert lesion[("no FLAIR", "WT")] == pytest.approx(1 / 3) and lesion[("no FLAIR", "ET")] == pytest.approx(0.5)
    summary = {(r["condition"], r["region"]): r for r in _read_csv(result.out_dir / "robustness.csv")}
    assert list(next(iter(summary.values()))) == ["condition", "removed_channels", "region", "n_cases", "mean_dice",
                                                  "std_dice", "dice_drop", "mean_lesion_dice", "std_lesion_dice",
                                                  "lesion_dice_drop"]
    wt = summary[("no FLAIR", "WT")]
    assert float(wt["dice_drop"]) == pytest.approx(1 - 250 / 341)  # global: 2*125 / (189 + 152)
    assert float(wt["lesion_dice_drop"]) == pytest.approx(2 / 3)
    assert float(summary[("no FLAIR", "TC")]["lesion_dice_drop"]) == pytest.approx(0.5)
    assert float(summary[(ALL_CHANNELS, "ET")]["lesion_dice_drop"]) == 0.0
    markdown = (result.out_dir / "robustness.md").read_text(encoding="utf-8")
    assert "## Lesion-wise Dice (BraTS 2023)" in markdown
    assert "| condition | removed | WT lesion-wise Dice | WT drop |" in markdown
    assert "| no FLAIR | FLAIR | 0.3333 | +0.6667 |" in markdown


def test_lesion_wise_off_keeps_the_former_tables(tmp_path: Path, monkeypatch) -> None:
    result = _fake_run(tmp_path, monkeypatch, lesion_wise=False)
    assert result.lesion is None and "lesion_dice" not in result.per_case[0]
    with open(result.out_dir / "robustness.csv", encoding="utf-8") as f:
        assert f.readline().strip() == "condition,removed_channels,region,n_cases,mean_dice,std_dice,dice_drop"
    with open(result.out_dir / "robustness_per_case.csv", encoding="utf-8") as f:
        assert f.readline().strip() == "condition,removed_channels,case,region,dice"
    assert "Lesion-wise" not in (result.out_dir / "robustness.md").read_text(encoding="utf-8")


def test_lesion_wise_default_follows_the_brats_regions() -> None:
    from nnunet_slem.evaluation.lesionwise import has_brats_regions

    assert has_brats_regions(regions_from_labels(BRATS_LABELS)[0])
    assert has_brats_regions([Region("wt", (1, 2, 3)), Region("TC", (2, 3)), Region("ET", (3,))])
    assert not has_brats_regions(regions_from_labels({"background": 0, "lesion": [1, 2], "core": [2]})[0])
    assert not has_brats_regions(regions_from_labels({"background": 0, "whole tumor": 1, "tumor core": 2})[0])


# ------------------------------------------------------------------------------- normalisation, no model


@pytest.mark.integration
def test_removal_happens_after_nnunets_own_normalisation(project) -> None:
    """Preprocess a raw case with the project's plans; the removed channel is 0, the others nnU-Net's output."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((project.preprocessed / f"{project.plans}.json").read_text(encoding="utf-8"))
    dataset_json = json.loads((project.raw / "dataset.json").read_text(encoding="utf-8"))
    pm = PlansManager(plans)
    cm = pm.get_configuration(project.configuration)
    assert cm.normalization_schemes == ["ZScoreNormalization"] * 4
    fake_predictor = SimpleNamespace(plans_manager=pm, configuration_manager=cm, dataset_json=dataset_json)
    files = sorted((project.raw / "imagesTr").glob("pat00_*.nii.gz"))
    data, mask, props = preprocess_case(fake_predictor, files)
    assert data.shape[0] == 4 and mask.shape == data.shape[1:] and "bbox_used_for_cropping" in props
    for c in range(4):  # normalised: the raw images have means ~300 + 10c
        assert abs(float(data[c][mask].mean())) < 1e-3 and abs(float(data[c][mask].std()) - 1.0) < 1e-2
    out = remove_channels(data, (2,), "zero", mask, cm.use_mask_for_norm)
    assert np.all(out[2] == 0.0) and np.array_equal(out[[0, 1, 3]], data[[0, 1, 3]])


# ------------------------------------------------------------------------------------ trained model, CLI


@pytest.fixture(scope="module")
def trained_fold(project) -> Path:
    """``SLeMTrainer_noPretrain_smoke`` on fold 4, trained by nnU-Net's CLI."""
    project.run("nnUNetv2_train", project.dataset_id, project.configuration, FOLD, "-tr", TRAINER, "-p",
                project.plans, "-device", "cpu")
    folder = project.results / f"{TRAINER}__{project.plans}__{project.configuration}"
    assert (folder / f"fold_{FOLD}" / "checkpoint_final.pth").is_file()
    return folder


@pytest.fixture(scope="module")
def small_set(project, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """Two raw cases copied into their own images and labels folders."""
    root = tmp_path_factory.mktemp("robustness_inputs")
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    cases = [f"pat{i:02d}" for i in range(N_CASES)]
    for case in cases:
        for f in (project.raw / "imagesTr").glob(f"{case}_*.nii.gz"):
            shutil.copy(f, images / f.name)
        shutil.copy(project.raw / "labelsTr" / f"{case}.nii.gz", labels / f"{case}.nii.gz")
    return images, labels, cases


@pytest.fixture(scope="module")
def robustness_cli_out(project, trained_fold, small_set, tmp_path_factory) -> Path:
    images, labels, _ = small_set
    out = tmp_path_factory.mktemp("robustness_out")
    proc = project.run("nnunet-slem", "robustness", "-i", images, "-ref", labels, "-d", project.dataset_id,
                       "-c", project.configuration, "-f", FOLD, "-tr", TRAINER, "-p", project.plans,
                       "-device", "cpu", "--disable-tta", "--save-predictions", "-o", out)
    assert "| no seqA |" in proc.stdout
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.integration
def test_robustness_cli_reports_one_row_per_condition_and_region(robustness_cli_out: Path) -> None:
    rows = _read_csv(robustness_cli_out / "robustness.csv")
    conditions = [ALL_CHANNELS, "no seqA", "no seqB", "no seqC", "no seqD"]
    assert [(r["condition"], r["region"]) for r in rows] == [(c, g) for c in conditions for g in ("lesion", "core")]
    assert {r["removed_channels"] for r in rows} == {"", "seqA", "seqB", "seqC", "seqD"}
    assert all(math.isfinite(float(r["dice_drop"])) and 0.0 <= float(r["mean_dice"]) <= 1.0 for r in rows)
    assert all(int(r["n_cases"]) == N_CASES for r in rows)
    base = {r["region"]: float(r["mean_dice"]) for r in rows if r["condition"] == ALL_CHANNELS}
    for r in rows:
        expected = 0.0 if r["condition"] == ALL_CHANNELS else base[r["region"]] - float(r["mean_dice"])
        assert float(r["dice_drop"]) == pytest.approx(expected, abs=1e-12)
    assert len(_read_csv(robustness_cli_out / "robustness_per_case.csv")) == len(conditions) * 2 * N_CASES
    assert (robustness_cli_out / "robustness.png").stat().st_size > 5000
    markdown = (robustness_cli_out / "robustness.md").read_text(encoding="utf-8")
    assert "| condition | removed | lesion Dice | lesion drop |" in markdown
    assert len(list((robustness_cli_out / "predictions" / "all_channels").glob("*.nii.gz"))) == N_CASES
    assert not list(robustness_cli_out.glob(".*")), "no temporary files or caches left behind"


@pytest.mark.integration
def test_all_channels_prediction_equals_nnUNetv2_predict(project, small_set, robustness_cli_out, tmp_path) -> None:
    """The split inference path (preprocess, predict logits, export) gives nnU-Net's own segmentation."""
    images, _, cases = small_set
    project.run("nnUNetv2_predict", "-i", images, "-o", tmp_path / "nnunet", "-d", project.dataset_id, "-c",
                project.configuration, "-f", FOLD, "-tr", TRAINER, "-p", project.plans, "-device", "cpu",
                "--disable_tta", "-npp", 1, "-nps", 1)
    for case in cases:
        ours = sitk.ReadImage(str(robustness_cli_out / "predictions" / "all_channels" / f"{case}.nii.gz"))
        theirs = sitk.ReadImage(str(tmp_path / "nnunet" / f"{case}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
        assert ours.GetSpacing() == theirs.GetSpacing() and ours.GetOrigin() == theirs.GetOrigin()


@pytest.mark.integration
def test_robustness_pairs_in_process_with_noise(nnunet_paths, trained_fold, small_set, tmp_path) -> None:
    import torch

    images, labels, cases = small_set
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_robustness(trained_fold, FOLD, images, labels, tmp_path / "pairs", device="cpu", pairs=True,
                                fill="noise", use_mirroring=False, cases=cases[:1], progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(result.conditions) == 1 + 4 + 6
    assert len(result.summary) == 11 * 2 and len(result.per_case) == 11 * 2
    assert all(math.isfinite(r["dice_drop"]) for r in result.summary)
    assert all(r["dice_drop"] == 0.0 for r in result.summary if r["condition"] == ALL_CHANNELS)
    assert {r["removed_channels"] for r in result.summary} >= {"seqA;seqB", "seqC;seqD"}
    assert (tmp_path / "pairs" / "robustness.png").is_file()


@pytest.mark.integration
def test_robustness_without_a_trained_model_says_how_to_train_it(project, small_set) -> None:
    images, labels, _ = small_set
    proc = project.run("nnunet-slem", "robustness", "-i", images, "-ref", labels, "-d", project.dataset_id, "-c",
                       project.configuration, "-f", FOLD, "-tr", "NoSuchTrainer", "-p", project.plans,
                       "-device", "cpu", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    folder = project.results / f"NoSuchTrainer__{project.plans}__{project.configuration}"
    assert f"no trained model folder {folder}" in proc.stderr
    assert (f"nnUNetv2_train {project.dataset_name} {project.configuration} {FOLD} -tr NoSuchTrainer "
            f"-p {project.plans}") in proc.stderr


@pytest.mark.integration
def test_figure_cli_writes_png_and_pdf(project, small_set, robustness_cli_out, tmp_path) -> None:
    images, labels, cases = small_set
    out = tmp_path / "fig" / "compare.png"
    proc = project.run("nnunet-slem", "figure", "-i", images, "-ref", labels, "--pred", f"oracle={labels}",
                       "--pred", f"smoke={robustness_cli_out / 'predictions' / 'all_channels'}", "-d",
                       project.dataset_id, "-o", out)
    assert all(case in proc.stdout for case in cases)
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").stat().st_size > 5_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    # a fixed slice along another axis, one case
    proc = project.run("nnunet-slem", "figure", "-i", images, "-ref", labels, "--pred", f"oracle={labels}",
                       "-d", project.dataset_id, "--cases", cases[0], "--slice", 5, "--axis", 2, "-o",
                       tmp_path / "one.png")
    assert f"{cases[0]} (slice 5)" in proc.stdout and (tmp_path / "one.pdf").is_file()
    proc = project.run("nnunet-slem", "figure", "-i", images, "-ref", labels, "--pred", f"oracle={labels}",
                       "-d", project.dataset_id, "--slice", 999, "-o", tmp_path / "bad.png", check=False)
    assert proc.returncode == 2 and "--slice 999" in proc.stderr


def test_figure_from_synthetic_arrays_picks_the_largest_case(tmp_path: Path) -> None:
    """In-process, no nnU-Net: two cases, the larger lesion is shown first, on its largest slice."""
    from nnunet_slem.evaluation.figure import Prediction, make_figure

    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    for case, (z, r) in {"small": (4, 2), "big": (7, 4)}.items():
        seg = np.zeros((12, 16, 16), np.uint8)
        seg[z, 8 - r:8 + r, 8 - r:8 + r] = 1
        seg[z, 7:9, 7:9] = 2
        sitk.WriteImage(sitk.GetImageFromArray(seg), str(labels / f"{case}.nii.gz"))
        for c in range(2):
            img = np.random.default_rng(c).normal(100, 10, seg.shape).astype(np.float32) + 50 * seg
            sitk.WriteImage(sitk.GetImageFromArray(img), str(images / f"{case}_{c:04d}.nii.gz"))
    dj = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "organ": 1, "vessel": 2},
          "file_ending": ".nii.gz"}
    png, pdf, shown = make_figure(images, labels, [Prediction("gt", labels)], dj, tmp_path / "f.png")
    assert list(shown.items()) == [("big", 7), ("small", 4)]
    assert png.stat().st_size > 5000 and pdf.stat().st_size > 2000
