"""CHAOS metrics (Dice, RAVD, ASSD, MSSD) on hand-computed cases, and their use by ``nnunet-slem evaluate``."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_slem.commands import evaluate as evaluate_cmd
from nnunet_slem.convert.chaos import LABELS as CHAOS_LABELS
from nnunet_slem.evaluation.chaos_metrics import assd_mssd, chaos_fields, is_chaos_dataset, ravd_pct


def test_shifted_cubes_by_hand() -> None:
    """4x4x4 cubes shifted one voxel: per side 36 surface voxels at 0 mm and 20 at 1 mm -> ASSD 40/112."""
    ref = np.zeros((10, 10, 10), bool)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = True
    pred[2:6, 2:6, 3:7] = True
    assert assd_mssd(ref, pred, (1.0, 1.0, 1.0)) == (pytest.approx(40 / 112), 1.0)
    assert ravd_pct(ref, pred) == 0.0
    pred[2:6, 2:6, 7] = True  # 80 voxels against 64
    assert ravd_pct(ref, pred) == pytest.approx(25.0)


def test_the_image_border_is_not_a_surface() -> None:
    """CHAOS erodes with the outside counted as foreground: in a 1x1x8 image the only surface voxels are the
    inner ends, x=3 (reference, x 0..3) and x=4 (prediction, x 0..4), 1 voxel = 2 mm apart."""
    ref = np.zeros((1, 1, 8), bool)
    pred = np.zeros_like(ref)
    ref[..., :4] = True
    pred[..., :5] = True
    assert assd_mssd(ref, pred, (1.0, 1.0, 2.0)) == (2.0, 2.0)


def test_empty_conventions() -> None:
    empty = np.zeros((4, 5, 6), bool)
    some = empty.copy()
    some[1, 1, 1] = True
    assert chaos_fields(empty, empty, (1.0, 1.0, 1.0)) == {"ravd_pct": 0.0, "assd_mm": 0.0, "mssd_mm": 0.0}
    missed = chaos_fields(some, empty, (1.0, 1.0, 1.0), one_empty="brats2023")
    assert missed == {"ravd_pct": 100.0, "assd_mm": 374.0, "mssd_mm": 374.0}
    assert math.isnan(chaos_fields(empty, some, (1.0, 1.0, 1.0))["ravd_pct"])


def test_chaos_datasets_are_recognised() -> None:
    assert is_chaos_dataset(CHAOS_LABELS)
    assert not is_chaos_dataset({"background": 0, "liver": 1})
    assert not is_chaos_dataset({"background": 0, "whole tumor": [1, 2, 3]})


def test_evaluate_adds_chaos_columns_for_a_chaos_dataset(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": CHAOS_LABELS, "file_ending": ".nii.gz"}))
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1  # liver
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 3:7] = 1
    for folder, arr in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / folder / "CHAOS_MR_001.nii.gz"))
    parser = argparse.ArgumentParser()
    evaluate_cmd.add_arguments(parser)
    evaluate_cmd.run(parser.parse_args(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"),
                                        "-dj", str(tmp_path / "dataset.json"), "-np", "1"]))
    with open(tmp_path / "pred" / "slem_metrics" / "metrics_per_case.csv", encoding="utf-8") as f:
        rows = {r["region"]: r for r in csv.DictReader(f)}
    assert list(rows["liver"])[-3:] == ["ravd_pct", "assd_mm", "mssd_mm"]
    assert float(rows["liver"]["assd_mm"]) == pytest.approx(40 / 112)
    assert rows["spleen"]["dice"] == "1.0" and rows["spleen"]["ravd_pct"] == "0.0"  # both empty
