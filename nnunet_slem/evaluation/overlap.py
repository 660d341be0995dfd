"""Regions, overlap and surface distances: the primitives every metric of ``nnunet_slem.evaluation`` builds on.

Kept apart from :mod:`nnunet_slem.evaluation.metrics`, which composes them (with the lesion-wise and CHAOS
metrics) into per-case rows, so that ``lesionwise`` and ``chaos_metrics`` can use Dice, HD95 and the surface
distances without importing the module that imports them: imports point one way, from composers down to this
module. The conventions (both empty, one empty, surfaces, spacing) are spelled out in ``metrics``' docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_slem.errors import UserFacingError

#: What HD95 is when exactly one of reference and prediction is empty: "diagonal" (the image's field-of-view
#: diagonal in mm), or a float in mm (``float("nan")`` reproduces nnU-Net's undefined value).
DEFAULT_ONE_EMPTY_HD95: str = "diagonal"
OneEmptyHD95 = str | float
#: Fixed one-empty HD95 values (mm) of the official BraTS evaluation scripts.
ONE_EMPTY_PRESETS = {"brats2021": 373.12866, "brats2023": 374.0}

#: NSD tolerance (mm): 2 mm, the value of the BraTS 2025 metrics scripts (dani-capellan/BraTS-2025-Metrics,
#: ``compute_surface_dice_at_tolerance(..., 2)``); the BraTS 2023 scripts compute no NSD. See docs/evaluation.md.
DEFAULT_NSD_TOLERANCE_MM = 2.0

#: Short names for the BraTS regions, used when these (case-insensitive) names are in dataset.json.
BRATS_SHORT_NAMES = {"whole tumor": "WT", "tumor core": "TC", "enhancing tumor": "ET"}


@dataclass(frozen=True)
class Region:
    """A named set of label values whose union is evaluated as one binary mask."""

    name: str
    labels: tuple[int, ...]


def regions_from_labels(labels: dict[str, int | list[int]]) -> tuple[list[Region], int | None]:
    """Regions to evaluate and the ignore label (or None) from a dataset.json ``labels`` dict.

    Uses nnU-Net's rule for "is this a region dataset" (some value is a list of more than one label), so the
    regions are the ones nnU-Net trains on.
    """
    if "background" not in labels:
        raise UserFacingError(
            "dataset.json 'labels' has no 'background' entry; nnU-Net requires \"background\": 0. "
            "Fix the dataset.json you pointed to."
        )
    ignore = labels.get("ignore")
    ignore_label = None if ignore is None else int(ignore)
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    regions: list[Region] = []
    for name, value in labels.items():
        if name in ("background", "ignore"):
            continue
        values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if not has_regions and len(values) != 1:
            continue  # an empty list: nothing to evaluate
        short = BRATS_SHORT_NAMES.get(name.lower(), name)
        regions.append(Region(short, values))
    if not regions:
        raise UserFacingError("dataset.json 'labels' defines no foreground label; nothing to evaluate.")
    return regions, ignore_label


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (see ``metrics``' docstring)."""
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    if n_ref + n_pred == 0:
        return 1.0
    return 2.0 * int(np.logical_and(ref, pred).sum()) / (n_ref + n_pred)


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Field-of-view diagonal: an upper bound on every distance measurable between two voxels."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def one_empty_hd95_value(policy: OneEmptyHD95, shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The HD95 reported when exactly one mask is empty, under ``policy`` (see ``DEFAULT_ONE_EMPTY_HD95``)."""
    if isinstance(policy, str):
        if policy == "diagonal":
            return image_diagonal_mm(shape, spacing)
        if policy.lower() == "nan":
            return float("nan")
        if policy.lower() in ONE_EMPTY_PRESETS:
            return ONE_EMPTY_PRESETS[policy.lower()]
        try:
            return float(policy)
        except ValueError:
            raise UserFacingError(
                f"unknown one-empty HD95 policy {policy!r}; use 'diagonal', 'nan', "
                f"{', '.join(repr(k) for k in ONE_EMPTY_PRESETS)} or a number in mm"
            ) from None
    return float(policy)


def surface(mask: np.ndarray, border_value: int = 0) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it; the image outside counts as background, or as
    foreground with ``border_value=1`` (the CHAOS convention: no surface along the image border)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=border_value)


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Box around a non-empty ``mask``, ``margin`` voxels wider per side (clipped): operations reaching no further
    than the margin give the same result there as on the whole image, much faster (HD95, lesion matching)."""
    coords = np.nonzero(mask)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, mask.shape, strict=True)
    )


def surface_distance_sets(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                          border_value: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two directed surface-distance sets (ref→pred, pred→ref) in mm; masks must be non-empty.

    Works on the bounding box of the union plus a one-voxel margin: every surface voxel lies inside it, so the
    distance transform there is exact, and the margin is background, so erosion inside the box equals erosion
    in the full image (where the box touches the image border, so does the full image). On BraTS-sized
    volumes this is an order of magnitude faster than transforming the whole image.
    """
    box = bounding_box(ref | pred, margin=1)
    ref_s, pred_s = surface(ref[box], border_value), surface(pred[box], border_value)
    if not ref_s.any() or not pred_s.any():  # only with border_value=1 and a mask filling the image
        return np.empty(0), np.empty(0)
    sampling = [float(s) for s in spacing]
    to_pred = ndimage.distance_transform_edt(~pred_s, sampling=sampling)
    to_ref = ndimage.distance_transform_edt(~ref_s, sampling=sampling)
    return to_pred[ref_s], to_ref[pred_s]


def hd95_mm(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
            one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; ``spacing`` is per numpy axis of the masks."""
    return hd95_and_nsd(ref, pred, spacing, one_empty)[0]


def hd95_and_nsd(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                 one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
                 nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> tuple[float, float]:
    """HD95 (as :func:`hd95_mm`) and NSD at ``nsd_tolerance_mm`` from one computation of the distances."""
    ref_any, pred_any = bool(ref.any()), bool(pred.any())
    if not ref_any and not pred_any:
        return 0.0, 1.0
    if ref_any != pred_any:
        return one_empty_hd95_value(one_empty, ref.shape, spacing), 0.0
    both = np.concatenate(surface_distance_sets(ref, pred, spacing))
    return float(np.percentile(both, 95)), float(np.count_nonzero(both <= nsd_tolerance_mm) / both.size)


def region_mask(seg: np.ndarray, region: Region) -> np.ndarray:
    return np.isin(seg, region.labels)


def region_masks(ref: np.ndarray, pred: np.ndarray, region: Region,
                 ignore_label: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Reference and predicted masks of one region, with voxels the reference marks ``ignore`` left out."""
    r, p = region_mask(ref, region), region_mask(pred, region)
    if ignore_label is not None:
        valid = ref != ignore_label
        r &= valid
        p &= valid
    return r, p


def dice_per_region(ref: np.ndarray, pred: np.ndarray, regions: Sequence[Region],
                    ignore_label: int | None) -> list[float]:
    """Dice per region with ``metrics``' conventions (both empty = 1, ignore voxels left out)."""
    return [dice(*region_masks(ref, pred, region, ignore_label)) for region in regions]
