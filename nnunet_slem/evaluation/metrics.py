"""Per-case segmentation metrics: Dice, symmetric HD95 in mm, reference and predicted volume in mL.

nnU-Net's own evaluator reports Dice only and returns NaN where a region is empty in both images, so papers
built on it silently drop exactly the cases that matter (a missed enhancing tumour). This module reports a
number for every case and region, with the conventions below spelled out so results can be compared.

Conventions (README-ready)
--------------------------
* **Regions.** Read from the dataset's ``dataset.json``. For a region dataset (some label given as a list,
  BraTS style) every non-background entry is one region, the union of its label values, e.g.
  ``"tumor core": [2, 3]``; the BraTS names "whole tumor", "tumor core" and "enhancing tumor" are reported as
  ``WT``, ``TC`` and ``ET``. Otherwise every foreground label is its own region, named as in ``dataset.json``.
  Voxels carrying the ``ignore`` label in the reference are left out of both masks (as nnU-Net does).
* **Dice** = 2|R∩P| / (|R| + |P|). Both masks empty → **1** (a correct "nothing here"); exactly one empty → 0.
* **HD95** (mm): the 95th percentile (numpy's default linear interpolation) of the union of both directed
  surface-distance sets, reference surface → prediction surface and back. A surface is the set of mask voxels
  removed by one binary erosion with the face-connected (6-neighbour in 3D) structuring element; the outside
  of the image counts as background, so an object touching the image border has a surface there. Distances
  are Euclidean between voxel centres, in mm, from ``scipy.ndimage.distance_transform_edt`` with the image
  spacing read from the file.
  Both masks empty → **0**. Exactly one empty → by default the **diagonal of the image's field of view**
  (``sqrt(sum((size_i * spacing_i)^2))`` in mm): finite, so means stay defined, and larger than any distance
  that can be measured inside the image, so it is always the worst possible value. Choose
  ``--one-empty-hd95 nan`` for nnU-Net-like NaN (then summaries average over the finite values only), a
  number in mm, or a BraTS preset (``ONE_EMPTY_PRESETS``: ``brats2021`` 373.12866, ``brats2023`` 374).
* **NSD** (normalized surface Dice): (|{r ∈ ∂R: d(r,∂P) ≤ τ}| + |{p ∈ ∂P: d(p,∂R) ≤ τ}|) / (|∂R| + |∂P|), surfaces
  and distances as for HD95, τ = ``DEFAULT_NSD_TOLERANCE_MM`` by default. Both empty → 1, one empty → 0.
* **Optional**: BraTS 2023 lesion-wise Dice/HD95 (``lesionwise``), CHAOS RAVD/ASSD/MSSD (``chaos_metrics``).
* **Volumes**: voxel count × voxel volume (product of spacings), in mL (= cm³ = 1000 mm³).
* **Cases** are matched by file name; every reference file needs a prediction with the same name (extra
  predictions are ignored). Reference and prediction must have the same shape, spacing, origin and direction
  (within ``SPACING_TOLERANCE_MM``) and, when the caller passes them, only label values dataset.json defines.
* **Summary**: per region mean, population standard deviation (ddof=0) and median over cases.

Only numpy, scipy and SimpleITK are imported so worker processes start quickly (no torch).
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_slem.atomic import write_text_atomic
from nnunet_slem.errors import UserFacingError

if TYPE_CHECKING:
    from nnunet_slem.evaluation.lesionwise import LesionSettings

#: What HD95 is when exactly one of reference and prediction is empty: "diagonal" (the image's field-of-view
#: diagonal in mm), or a float in mm (``float("nan")`` reproduces nnU-Net's undefined value).
DEFAULT_ONE_EMPTY_HD95: str = "diagonal"
OneEmptyHD95 = str | float
#: Fixed one-empty HD95 values (mm) of the official BraTS evaluation scripts.
ONE_EMPTY_PRESETS = {"brats2021": 373.12866, "brats2023": 374.0}

#: NSD tolerance (mm): 2 mm, the value of the BraTS 2025 metrics scripts (dani-capellan/BraTS-2025-Metrics,
#: ``compute_surface_dice_at_tolerance(..., 2)``); the BraTS 2023 scripts compute no NSD. See docs/evaluation.md.
DEFAULT_NSD_TOLERANCE_MM = 2.0

#: Largest spacing difference (mm, per axis) tolerated between a reference and its prediction.
SPACING_TOLERANCE_MM = 1e-3

#: Short names for the BraTS regions, used when these (case-insensitive) names are in dataset.json.
BRATS_SHORT_NAMES = {"whole tumor": "WT", "tumor core": "TC", "enhancing tumor": "ET"}

CSV_COLUMNS = ("case", "region", "dice", "hd95_mm", "ref_ml", "pred_ml", "nsd")
LESION_COLUMNS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
CHAOS_COLUMNS = ("ravd_pct", "assd_mm", "mssd_mm")


@dataclass(frozen=True)
class Region:
    """A named set of label values whose union is evaluated as one binary mask."""

    name: str
    labels: tuple[int, ...]


@dataclass(frozen=True)
class CaseMetrics:
    """One row of ``metrics_per_case.csv``."""

    case: str
    region: str
    dice: float
    hd95_mm: float
    ref_ml: float
    pred_ml: float
    nsd: float = float("nan")
    # filled only when asked for (MetricOptions): BraTS 2023 lesion-wise, then CHAOS
    lesion_dice: float | None = None
    lesion_hd95: float | None = None
    lesion_tp: int | None = None
    lesion_fp: int | None = None
    lesion_fn: int | None = None
    ravd_pct: float | None = None
    assd_mm: float | None = None
    mssd_mm: float | None = None


@dataclass(frozen=True)
class MetricOptions:
    """What to compute beyond Dice/HD95/NSD/volumes, and the label values the files may hold."""

    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    lesion: LesionSettings | None = None  # BraTS 2023 lesion-wise metrics when set
    chaos: bool = False  # CHAOS RAVD/ASSD/MSSD
    allowed_labels: tuple[int, ...] | None = None  # None: not checked


# ----------------------------------------------------------------------------------------------- regions


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


# ----------------------------------------------------------------------------------------------- metrics


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (see module docstring)."""
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
    """Dice per region with this module's conventions (both empty = 1, ignore voxels left out)."""
    return [dice(*region_masks(ref, pred, region, ignore_label)) for region in regions]


def metrics_for_arrays(
    case: str,
    ref: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    regions: Sequence[Region],
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
    options: MetricOptions | None = None,
) -> list[CaseMetrics]:
    """All metrics of one case; ``spacing`` is per numpy axis (z, y, x for SimpleITK arrays)."""
    opts = options or MetricOptions()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for region in regions:
        r, p = region_masks(ref, pred, region, ignore_label)
        hd95, nsd_value = hd95_and_nsd(r, p, spacing, one_empty, opts.nsd_tolerance_mm)
        extra: dict = {}
        if opts.lesion is not None:
            from nnunet_slem.evaluation.lesionwise import lesion_fields

            extra.update(lesion_fields(r, p, spacing, opts.lesion))
        if opts.chaos:
            from nnunet_slem.evaluation.chaos_metrics import chaos_fields

            extra.update(chaos_fields(r, p, spacing, one_empty))
        rows.append(CaseMetrics(case, region.name, dice(r, p), hd95, int(r.sum()) * voxel_ml,
                                int(p.sum()) * voxel_ml, nsd_value, **extra))
    return rows


def _check_labels(case: str, what: str, path: str | Path, arr: np.ndarray, allowed: Sequence[int]) -> None:
    if not np.isin(arr, allowed).all():
        unknown = sorted(int(v) for v in np.setdiff1d(np.unique(arr), allowed))
        raise UserFacingError(
            f"case {case}: {what} {path} has label values {unknown} that dataset.json does not define "
            f"(it defines {list(allowed)}); pass the dataset the model was trained on (-d/-dj), or convert the "
            "segmentations to its labels (e.g. nnunet-slem convert brats for native BraTS labels)."
        )


def evaluate_case(
    case: str,
    ref_file: str | Path,
    pred_file: str | Path,
    regions: Sequence[Region],
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
    options: MetricOptions | None = None,
) -> list[CaseMetrics]:
    """Read one reference/prediction pair and compute its metrics; geometry must agree."""
    ref_img, pred_img = sitk.ReadImage(str(ref_file)), sitk.ReadImage(str(pred_file))
    if ref_img.GetSize() != pred_img.GetSize():
        raise UserFacingError(
            f"case {case}: reference {ref_file} has size {ref_img.GetSize()} but prediction {pred_file} has "
            f"size {pred_img.GetSize()}; predictions must be on the reference grid (export them with "
            "nnU-Net's predict, which resamples to the original geometry)."
        )
    for what, get in (("spacing", "GetSpacing"), ("origin", "GetOrigin"), ("direction", "GetDirection")):
        a, b = np.array(getattr(ref_img, get)()), np.array(getattr(pred_img, get)())
        if np.max(np.abs(a - b)) > SPACING_TOLERANCE_MM:
            raise UserFacingError(
                f"case {case}: reference {what} {tuple(a)} != prediction {what} {tuple(b)} "
                f"(tolerance {SPACING_TOLERANCE_MM}); predictions must be on the reference grid."
            )
    spacing = tuple(float(s) for s in ref_img.GetSpacing()[::-1])  # SimpleITK arrays are (z, y, x)
    ref, pred = sitk.GetArrayViewFromImage(ref_img), sitk.GetArrayViewFromImage(pred_img)
    if options is not None and options.allowed_labels is not None:
        _check_labels(case, "reference", ref_file, ref, options.allowed_labels)
        _check_labels(case, "prediction", pred_file, pred, options.allowed_labels)
    return metrics_for_arrays(case, ref, pred, spacing, regions, ignore_label, one_empty, options)


# ------------------------------------------------------------------------------------------------ folders


def match_cases(ref_dir: Path, pred_dir: Path, file_ending: str) -> list[tuple[str, Path, Path]]:
    """(case, ref file, pred file) for every reference file; missing predictions are an error."""
    for what, folder in (("reference", ref_dir), ("prediction", pred_dir)):
        if not folder.is_dir():
            raise UserFacingError(f"{what} folder {folder} does not exist")
        if not any(p.is_file() and p.name.endswith(file_ending) for p in folder.iterdir()):
            raise UserFacingError(
                f"no {what} files ending in {file_ending!r} in {folder}; point "
                f"{'-ref at a labelsTr-like' if what == 'reference' else '-pred at nnUNetv2_predict output'} "
                "folder (the file ending comes from dataset.json)"
            )
    ref_names = sorted(p.name for p in ref_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    missing = [n for n in ref_names if not (pred_dir / n).is_file()]
    if missing:
        shown = ", ".join(missing[:50]) + (f" ... and {len(missing) - 50} more" if len(missing) > 50 else "")
        raise UserFacingError(
            f"{len(missing)} of {len(ref_names)} reference cases have no prediction in {pred_dir}: {shown}. "
            "Predict them (same file names as the references) or evaluate against a reference folder that "
            "holds only the predicted cases."
        )
    return [(n[: -len(file_ending)], ref_dir / n, pred_dir / n) for n in ref_names]


def _evaluate_star(args: tuple) -> list[CaseMetrics]:
    return evaluate_case(*args)


def evaluate_folders(
    ref_dir: str | Path,
    pred_dir: str | Path,
    regions: Sequence[Region],
    file_ending: str = ".nii.gz",
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
    num_processes: int = 1,
    options: MetricOptions | None = None,
) -> list[CaseMetrics]:
    """Metrics for every reference case, in case order then region order."""
    matched = match_cases(Path(ref_dir), Path(pred_dir), file_ending)
    jobs = [(case, r, p, list(regions), ignore_label, one_empty, options) for case, r, p in matched]
    if num_processes <= 1 or len(jobs) == 1:
        per_case = [_evaluate_star(j) for j in jobs]
    else:
        # spawn, like nnU-Net: SimpleITK's threads do not survive fork reliably
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(num_processes, len(jobs))) as pool:
            per_case = pool.map(_evaluate_star, jobs, chunksize=1)
    return [row for rows in per_case for row in rows]


# ------------------------------------------------------------------------------------------------ summary


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite))}


def _optional_columns(rows: Sequence[CaseMetrics]) -> tuple[str, ...]:
    """The lesion-wise / CHAOS columns, when those metrics were computed."""
    groups = (LESION_COLUMNS, CHAOS_COLUMNS)
    return tuple(c for g in groups if any(getattr(r, g[0]) is not None for r in rows) for c in g)


def summarize(rows: Sequence[CaseMetrics], regions: Sequence[Region]) -> dict:
    """Per region: n cases, mean/std/median of every metric over its finite values; lesion counts' totals."""
    out: dict = {}
    for region in regions:
        sel = [r for r in rows if r.region == region.name]
        hd = [r.hd95_mm for r in sel]
        out[region.name] = {
            "labels": list(region.labels),
            "n": len(sel),
            "dice": _stats([r.dice for r in sel]),
            "hd95_mm": {**_stats(hd), "n_finite": sum(not math.isnan(v) for v in hd)},
            "nsd": _stats([r.nsd for r in sel]),
        }
        for col in _optional_columns(rows):
            values = [float(getattr(r, col)) for r in sel]
            out[region.name][col] = _stats(values)
            if col in ("lesion_tp", "lesion_fp", "lesion_fn"):
                out[region.name][col]["total"] = int(sum(values))
    return out


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else repr(v)


def write_outputs(rows: Sequence[CaseMetrics], summary: dict, out_dir: str | Path, meta: dict) -> None:
    """``metrics_per_case.csv`` and ``summary.json`` (per region, then per case), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = CSV_COLUMNS + _optional_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    cases: dict[str, dict] = {}
    for r in rows:
        d = asdict(r)
        writer.writerow([d["case"], d["region"], *(_fmt(d[k]) for k in columns[2:])])
        cases.setdefault(r.case, {})[r.region] = {
            k: None if isinstance(d[k], float) and math.isnan(d[k]) else d[k] for k in columns[2:]
        }
    write_text_atomic(out / "metrics_per_case.csv", buf.getvalue())
    doc = {**meta, "regions": summary, "cases": cases}
    write_text_atomic(out / "summary.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")
