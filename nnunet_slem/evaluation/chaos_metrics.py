"""The CHAOS challenge's per-organ metrics: Dice, RAVD, ASSD and MSSD (Kavur et al., Med. Image Anal. 2021).

Definitions follow the challenge's own evaluation code (github.com/emrekavur/CHAOS-evaluation,
``Python/CHAOSmetrics.py``; chaos.grand-challenge.org/Evaluation):

* **Dice** = 2|R∩P| / (|R| + |P|) (as ``overlap.dice``).
* **RAVD** (relative absolute volume difference, %) = | |P| − |R| | / |R| × 100.
* **Surfaces**: ``mask XOR erosion(mask)`` with the face-connected structuring element and the image outside
  counted as *foreground* (``border_value=1``), so unlike ``overlap.surface`` an organ cut by the image border
  has no surface along that border.
* **ASSD** (mm) = (sum of ref→pred surface distances + sum of pred→ref) / (number of both surface voxels).
* **MSSD** (mm) = the largest distance of both sets (the symmetric Hausdorff distance of the surfaces).

Distances are Euclidean between voxel centres with the file's spacing; the challenge code maps voxel indices
to DICOM patient coordinates, which is the same for the axis-aligned grids ``convert chaos`` writes.
Edge cases the challenge code leaves undefined (it divides by zero): both masks empty → Dice 1, RAVD 0,
ASSD 0, MSSD 0; reference empty, prediction not → RAVD NaN; exactly one empty → ASSD and MSSD per
``--one-empty-hd95`` (image diagonal by default), Dice 0; a mask filling the whole image (no surface) →
ASSD/MSSD NaN. The challenge's 0–100 point scores are not computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnunet_slem.evaluation.overlap import (
    DEFAULT_ONE_EMPTY_HD95,
    OneEmptyHD95,
    one_empty_hd95_value,
    surface_distance_sets,
)

#: The organs ``nnunet-slem convert chaos`` writes; a dataset whose foreground labels are exactly these gets
#: the CHAOS metrics without ``--chaos``.
CHAOS_ORGANS = frozenset({"liver", "right kidney", "left kidney", "spleen"})


def is_chaos_dataset(labels: dict) -> bool:
    """True when the dataset.json ``labels`` are the CHAOS MR organs (names compared case-insensitively)."""
    names = {name.lower() for name in labels if name not in ("background", "ignore")}
    return names == CHAOS_ORGANS


def ravd_pct(ref: np.ndarray, pred: np.ndarray) -> float:
    """Relative absolute volume difference in percent of the reference volume."""
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    if n_ref == 0:
        return 0.0 if n_pred == 0 else math.nan
    return abs(n_pred - n_ref) / n_ref * 100.0


def assd_mssd(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
              one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95) -> tuple[float, float]:
    """Average and maximum symmetric surface distance in mm with CHAOS surfaces (``border_value=1``)."""
    ref_any, pred_any = bool(ref.any()), bool(pred.any())
    if not ref_any and not pred_any:
        return 0.0, 0.0
    if ref_any != pred_any:
        value = one_empty_hd95_value(one_empty, ref.shape, spacing)
        return value, value
    both = np.concatenate(surface_distance_sets(ref, pred, spacing, border_value=1))
    if both.size == 0:
        return math.nan, math.nan
    return float(both.mean()), float(both.max())


def chaos_fields(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                 one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95) -> dict:
    """The CHAOS fields of ``metrics.CaseMetrics`` for one organ (Dice is the row's ``dice``)."""
    assd, mssd = assd_mssd(ref, pred, spacing, one_empty)
    return {"ravd_pct": ravd_pct(ref, pred), "assd_mm": assd, "mssd_mm": mssd}
