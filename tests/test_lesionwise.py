"""BraTS 2023 lesion-wise Dice/HD95 (``nnunet_slem.evaluation.lesionwise``) on constructed cases.

Every expected value is computed by hand in the comments (1 mm isotropic voxels, 4x4x4 cubes of 64 voxels with
56 surface voxels: two 16-voxel faces and two 12-voxel rings along each axis). Where panoptica (BraTS' instance
evaluator since 2024, Apache-2.0) is installed, the cases on which its definition coincides with BraTS 2023's
are cross-checked against it; panoptica is not a dependency (it pins numpy<2.3).
"""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.lesionwise import LESION_HD95_PENALTY_MM, gt_lesions, lesion_wise_case

SHAPE = (12, 12, 40)
SPACING = (1.0, 1.0, 1.0)
P = LESION_HD95_PENALTY_MM  # 374


def cube(mask: np.ndarray, x0: int, size: int = 4, yz0: int = 2) -> np.ndarray:
    mask[yz0:yz0 + size, yz0:yz0 + size, x0:x0 + size] = True
    return mask


def empty() -> np.ndarray:
    return np.zeros(SHAPE, bool)


def case_hit():
    # pred = GT shifted one voxel along x: overlap 48, Dice 96/128; every surface distance is 0 or 1 mm and
    # more than 5% are 1 (the x faces) -> HD95 1
    return cube(empty(), 2), cube(empty(), 3)


def case_miss():
    # GT lesions at x 2..5 and 30..33, pred = the first exactly: (1 + 0) / 2; HD95 (0 + 374) / 2
    return cube(cube(empty(), 2), 30), cube(empty(), 2)


def case_false_positive():
    # one exact hit plus a predicted cube far from any GT lesion: (1 + 0) / 2; HD95 (0 + 374) / 2
    pred = cube(empty(), 2)
    pred[8:12, 8:12, 30:34] = True
    return cube(empty(), 2), pred


def case_merged():
    # GT cubes at x 2..5 and 10..13 (gap of 4 voxels); 3 dilations join them into one 128-voxel lesion.
    # pred = the first cube: Dice 2*64/(128+64) = 2/3. Distances: 56 zeros (cube 1 -> pred), 56 zeros
    # (pred -> GT), cube 2's surface -> pred's x=5 face: 16 x 5, 12 x 6, 12 x 7, 16 x 8 mm; 168 values, the
    # 95th percentile sits at index 158.65, inside the 16 eights (152..167) -> HD95 8
    return cube(cube(empty(), 2), 10), cube(empty(), 2)


def case_tiny_left_out():
    # GT: a 64-voxel lesion (hit exactly) and a 27-voxel lesion (<= 50, left out) that nobody predicts
    ref = cube(empty(), 2)
    ref[7:10, 7:10, 30:33] = True
    return ref, cube(empty(), 2)


def case_empty_prediction():
    return cube(empty(), 2), empty()


def case_near_miss():
    # pred cube at x 8..11, two voxels from the GT cube (x 2..5): inside the 3-voxel dilation, so matched with
    # Dice 0 (a TP in BraTS' counting). Distances both ways: 16 x 3, 12 x 4, 12 x 5, 16 x 6 mm; 112 values,
    # index 105.45 falls in the sixes (80..111) -> HD95 6
    return cube(empty(), 2), cube(empty(), 8)


# name -> (builder, dilation, (dice, hd95, tp, fp, fn))
CASES = {
    "hit": (case_hit, 3, (0.75, 1.0, 1, 0, 0)),
    "miss": (case_miss, 3, (0.5, P / 2, 1, 0, 1)),
    "false_positive": (case_false_positive, 3, (0.5, P / 2, 1, 1, 0)),
    "merged_by_dilation": (case_merged, 3, (2 / 3, 8.0, 1, 0, 0)),
    "not_merged_dilation_1": (case_merged, 1, (0.5, P / 2, 1, 0, 1)),
    "tiny_lesion_left_out": (case_tiny_left_out, 3, (1.0, 0.0, 1, 0, 0)),
    "empty_prediction": (case_empty_prediction, 3, (0.0, P, 0, 0, 1)),
    "near_miss_matched": (case_near_miss, 3, (0.0, 6.0, 1, 0, 0)),
    "both_empty": (lambda: (empty(), empty()), 3, (1.0, 0.0, 0, 0, 0)),
    "only_false_positive": (lambda: (empty(), cube(empty(), 2)), 3, (0.0, P, 0, 1, 0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_constructed_cases_match_hand_computed_values(name: str) -> None:
    build, dilation, (d, hd, tp, fp, fn) = CASES[name]
    ref, pred = build()
    s = lesion_wise_case(ref, pred, SPACING, dilation_iters=dilation)
    assert (s.dice, s.hd95_mm) == (pytest.approx(d), pytest.approx(hd))
    assert (s.tp, s.fp, s.fn) == (tp, fp, fn)


def test_dilation_merges_gt_lesions_only_when_they_come_close() -> None:
    ref, _ = case_merged()
    assert gt_lesions(ref, 3)[1] == 1
    assert gt_lesions(ref, 2)[1] == 1  # x 2..7 and 8..13: touching after two dilations
    assert gt_lesions(ref, 1)[1] == 2
    assert gt_lesions(ref, 0)[1] == 2  # 0 = no dilation (scipy would otherwise dilate until stable)
    labels, n = gt_lesions(ref, 3)
    assert set(np.unique(labels)) == {0, 1} and int((labels > 0).sum()) == 128  # voxels are not dilated


def test_small_lesions_do_not_count_but_their_matches_are_not_false_positives() -> None:
    ref, _ = case_tiny_left_out()
    s = lesion_wise_case(ref, ref, SPACING)  # the tiny lesion predicted exactly
    assert (s.dice, s.tp, s.fp, s.fn, s.n_small) == (1.0, 1, 0, 0, 1)
    s = lesion_wise_case(ref, ref, SPACING, min_lesion_voxels=26)  # now the 27-voxel lesion counts
    assert (s.tp, s.n_small) == (2, 0)
    assert [m.voxels for m in s.lesions] == [64, 27]


def test_one_component_matching_two_lesions_counts_for_both() -> None:
    ref = cube(cube(empty(), 2), 12)  # gap 6: separate lesions with 1 dilation
    pred = empty()
    pred[2:6, 2:6, 2:16] = True  # one bar covering both
    s = lesion_wise_case(ref, pred, SPACING, dilation_iters=1)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert [m.pred_components for m in s.lesions] == [(1,), (1,)]
    assert s.dice == pytest.approx(2 * 64 / (64 + 4 * 4 * 14))  # each lesion against the whole 224-voxel bar


def test_anisotropic_spacing_enters_distances_only() -> None:
    ref, pred = case_hit()
    s = lesion_wise_case(ref, pred, (3.0, 2.0, 0.5))
    assert s.dice == pytest.approx(0.75)
    assert s.hd95_mm == pytest.approx(0.5)  # the one-voxel shift is along x (numpy axis 2, 0.5 mm)


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserFacingError, match="shape"):
        lesion_wise_case(empty(), np.zeros((2, 2, 2), bool), SPACING)
    with pytest.raises(UserFacingError, match="0 or more"):
        lesion_wise_case(empty(), empty(), SPACING, dilation_iters=-1)


# ------------------------------------------------------------------------------- cross-check with panoptica

#: Cases where panoptica's BraTS configuration (26-connected components, one-to-one matching at IoU > 0.5, no
#: merging by dilation, no size threshold) and BraTS 2023 define the same lesions and matches.
PANOPTICA_COMPARABLE = ["hit", "miss", "false_positive", "empty_prediction", "only_false_positive"]


def panoptica_lesion_wise(ref: np.ndarray, pred: np.ndarray) -> tuple[float, float, int, int, int]:
    """BraTS-style aggregate computed from panoptica's TP/FP/FN and per-match mean Dice/HD95."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )
    from panoptica.metrics import Metric

    def run(metrics: list) -> object:
        evaluator = Panoptica_Evaluator(
            expected_input=InputType.SEMANTIC,
            instance_approximator=ConnectedComponentsInstanceApproximator(),
            instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5),
            instance_metrics=metrics,
            global_metrics=[Metric.DSC],
        )
        result = evaluator.evaluate(pred.astype(np.uint8), ref.astype(np.uint8), verbose=False)
        return next(iter(result.values())) if isinstance(result, dict) else result

    result = run([Metric.DSC])
    tp, fp, fn = int(result.tp), int(result.fp), int(result.fn)
    n = tp + fp + fn
    if n == 0:
        return 1.0, 0.0, 0, 0, 0
    if tp == 0:  # panoptica has no zero-TP rule for HD95; every lesion is then a penalty
        return 0.0, P, tp, fp, fn
    result = run([Metric.DSC, Metric.HD95])
    return result.sq_dsc * tp / n, (result.sq_hd95 * tp + P * (fp + fn)) / n, tp, fp, fn


@pytest.mark.parametrize("name", PANOPTICA_COMPARABLE)
def test_agrees_with_panoptica_where_definitions_coincide(name: str) -> None:
    pytest.importorskip("panoptica")
    build, dilation, _ = CASES[name]
    ref, pred = build()
    ours = lesion_wise_case(ref, pred, SPACING, dilation_iters=dilation)
    d, hd, tp, fp, fn = panoptica_lesion_wise(ref, pred)
    assert (ours.dice, ours.hd95_mm) == (pytest.approx(d), pytest.approx(hd))
    assert (ours.tp, ours.fp, ours.fn) == (tp, fp, fn)
