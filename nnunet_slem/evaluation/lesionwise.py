"""Lesion-wise Dice and HD95 of one region of one case, as the BraTS 2023 evaluation defines them.

Global Dice is dominated by the largest lesion: a model that misses three small metastases next to a big one
still scores well. BraTS 2023 therefore ranks by *lesion-wise* scores (Saluja et al., the challenge's
``brats_val_2023`` / ``BraTS-2023-Metrics`` scripts; Synapse syn51156910, discussion thread 10357). This module
follows that definition step by step:

1. **GT lesions.** The 26-connected components of the reference mask, where components that touch after
   dilating the whole reference ``dilation_iters`` times with the 18-neighbour structuring element
   (``generate_binary_structure(3, 2)``) are merged into one lesion (3 for glioma GLI/SSA/PED, 1 for
   meningioma and metastases). Only the grouping uses the dilation; each lesion keeps its own voxels.
2. **Matching.** Predicted lesions are the 26-connected components of the prediction. A predicted component
   belongs to a GT lesion when it overlaps that lesion dilated ``dilation_iters`` times (same structuring
   element); it may belong to several. The GT lesion is scored against the union of its components.
3. **Scores.** A matched lesion scores its Dice and HD95; a missed lesion (no component) scores Dice 0 and
   HD95 ``hd95_penalty`` (374 mm, the scripts' replacement for an infinite distance). Every predicted
   component that belongs to no GT lesion is a false positive scoring Dice 0 and HD95 374.
4. **Small lesions.** GT lesions of ``min_lesion_voxels`` voxels or fewer are left out of the score and the
   counts, but components matched to them are not false positives (as in the scripts).
5. **Aggregation.** lesion-wise value = (sum over counted GT lesions + sum over false positives) /
   (number of counted GT lesions + number of false positives). No counted lesion and no false positive:
   Dice 1, HD95 0 (the scripts' values for that case).

Differences from the official scripts (also in docs/evaluation.md): the per-lesion HD95 is this project's
HD95 (95th percentile of the union of both directed voxel-surface distance sets, as medpy and
``overlap.hd95_mm``), where the scripts use DeepMind's ``surface_distance`` (surfel-area weighted, the larger
of the two directed 95th percentiles); and the small-lesion threshold counts voxels, where the scripts compare
a volume in mm³ (identical on BraTS' 1 mm isotropic grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.overlap import BRATS_SHORT_NAMES, Region, bounding_box, dice, hd95_mm, region_masks

#: HD95 (mm) of a missed GT lesion or a false-positive component in the BraTS 2023 scripts.
LESION_HD95_PENALTY_MM = 374.0
#: Dilation iterations used to merge and match lesions: 3 for BraTS glioma (GLI, SSA, PED), 1 for MEN and MET.
DEFAULT_DILATION_ITERS = 3
#: GT lesions of this many voxels or fewer are left out (BraTS 2023: 50; metastases: 2).
DEFAULT_MIN_LESION_VOXELS = 50


@dataclass(frozen=True)
class LesionSettings:
    """How lesions are formed, matched and penalised (defaults: BraTS 2023 glioma)."""

    dilation_iters: int = DEFAULT_DILATION_ITERS
    min_lesion_voxels: int = DEFAULT_MIN_LESION_VOXELS
    hd95_penalty: float = LESION_HD95_PENALTY_MM


@dataclass(frozen=True)
class LesionMatch:
    """One GT lesion: its size, the predicted components matched to it and its scores."""

    lesion: int  # 1-based id after merging
    voxels: int
    pred_components: tuple[int, ...]  # ids of the prediction's 26-connected components, empty = missed
    dice: float
    hd95_mm: float
    counted: bool  # False when the lesion has min_lesion_voxels voxels or fewer


@dataclass(frozen=True)
class LesionScores:
    """Lesion-wise result of one region of one case."""

    dice: float
    hd95_mm: float
    tp: int  # counted GT lesions with at least one matched component
    fp: int  # predicted components matched to no GT lesion (small ones included)
    fn: int  # counted GT lesions with no matched component
    n_small: int  # GT lesions left out for size
    lesions: tuple[LesionMatch, ...]


def _full_connectivity(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, ndim)  # 26 neighbours in 3D


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    # scipy treats iterations=0 as "until nothing changes", so 0 must mean "no dilation" explicitly
    if iterations == 0:
        return mask
    structure = ndimage.generate_binary_structure(mask.ndim, min(2, mask.ndim))  # 18 neighbours in 3D
    return ndimage.binary_dilation(mask, structure=structure, iterations=iterations)


def gt_lesions(ref: np.ndarray, dilation_iters: int = DEFAULT_DILATION_ITERS) -> tuple[np.ndarray, int]:
    """Label image of the GT lesions (components merged when they touch after dilation) and their count."""
    ref = np.asarray(ref, bool)
    dilated, n = ndimage.label(_dilate(ref, dilation_iters), structure=_full_connectivity(ref.ndim))
    # every component of the dilated mask contains reference voxels, so the ids 1..n all survive
    return np.where(ref, dilated, 0), int(n)


def lesion_wise_case(
    ref_mask: np.ndarray,
    pred_mask: np.ndarray,
    spacing: Sequence[float],
    dilation_iters: int = DEFAULT_DILATION_ITERS,
    min_lesion_voxels: int = DEFAULT_MIN_LESION_VOXELS,
    hd95_penalty: float = LESION_HD95_PENALTY_MM,
) -> LesionScores:
    """BraTS 2023 lesion-wise Dice/HD95 and TP/FP/FN counts of one region (boolean masks, spacing per axis).

    Masks are binary masks of one region (e.g. ``overlap.region_masks``); ``spacing`` is in mm per numpy axis
    and only enters the distances (dilation and size threshold count voxels, as BraTS does on its 1 mm grid).
    """
    ref, pred = np.asarray(ref_mask, bool), np.asarray(pred_mask, bool)
    if ref.shape != pred.shape:
        raise UserFacingError(f"lesion-wise metrics: reference shape {ref.shape} != prediction shape {pred.shape}")
    if dilation_iters < 0 or min_lesion_voxels < 0:
        raise UserFacingError(
            f"lesion-wise metrics: dilation iterations ({dilation_iters}) and the minimum lesion size "
            f"({min_lesion_voxels} voxels) must be 0 or more"
        )
    lesions, n_lesions = gt_lesions(ref, dilation_iters)
    pred_cc, n_pred = ndimage.label(pred, structure=_full_connectivity(pred.ndim))
    sizes = np.bincount(lesions.ravel(), minlength=n_lesions + 1)
    matched_any: set[int] = set()
    matches = []
    for lesion in range(1, n_lesions + 1):
        lesion_mask = lesions == lesion
        # the dilation reaches at most dilation_iters voxels along each axis, so a box with that margin holds it
        box = bounding_box(lesion_mask, dilation_iters)
        roi = _dilate(lesion_mask[box], dilation_iters)
        components = np.unique(pred_cc[box][roi])
        components = tuple(int(c) for c in components[components != 0])
        matched_any.update(components)
        if components:
            pred_union = np.isin(pred_cc, components)
            d, hd = dice(lesion_mask, pred_union), hd95_mm(lesion_mask, pred_union, spacing)
        else:
            d, hd = 0.0, float(hd95_penalty)
        voxels = int(sizes[lesion])
        matches.append(LesionMatch(lesion, voxels, components, d, hd, counted=voxels > min_lesion_voxels))
    counted = [m for m in matches if m.counted]
    fp = n_pred - len(matched_any)
    tp = sum(1 for m in counted if m.pred_components)
    denominator = len(counted) + fp
    if denominator == 0:
        lw_dice, lw_hd95 = 1.0, 0.0
    else:
        lw_dice = sum(m.dice for m in counted) / denominator
        lw_hd95 = (sum(m.hd95_mm for m in counted) + fp * float(hd95_penalty)) / denominator
    return LesionScores(
        dice=float(lw_dice), hd95_mm=float(lw_hd95), tp=tp, fp=fp, fn=len(counted) - tp,
        n_small=len(matches) - len(counted), lesions=tuple(matches),
    )


def lesion_fields(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], settings: LesionSettings) -> dict:
    """The ``lesion_*`` fields of ``metrics.CaseMetrics`` for one region."""
    s = lesion_wise_case(ref, pred, spacing, settings.dilation_iters, settings.min_lesion_voxels,
                         settings.hd95_penalty)
    return {"lesion_dice": s.dice, "lesion_hd95": s.hd95_mm, "lesion_tp": s.tp, "lesion_fp": s.fp,
            "lesion_fn": s.fn}


def has_brats_regions(regions: Sequence[Region]) -> bool:
    """True when the regions include BraTS' WT, TC and ET (``regions_from_labels`` names "whole tumor",
    "tumor core", "enhancing tumor" so): lesion-wise scores are what BraTS ranks by, so tools turn them on there
    by default, and only there, since the default settings are BraTS glioma's."""
    return set(BRATS_SHORT_NAMES.values()) <= {r.name.upper() for r in regions}


def lesion_dice_per_region(ref: np.ndarray, pred: np.ndarray, regions: Sequence[Region], ignore_label: int | None,
                           spacing: Sequence[float], settings: LesionSettings) -> list[float]:
    """Lesion-wise Dice per region of a label image pair, masks as ``overlap.dice_per_region`` makes them."""
    return [
        lesion_wise_case(*region_masks(ref, pred, region, ignore_label), spacing, settings.dilation_iters,
                         settings.min_lesion_voxels, settings.hd95_penalty).dice
        for region in regions
    ]
