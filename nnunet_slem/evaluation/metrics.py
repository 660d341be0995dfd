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
  ``--one-empty-hd95 nan`` for nnU-Net-like NaN (then summaries average over the finite values only) or a
  number for a fixed penalty in mm; see ``DEFAULT_ONE_EMPTY_HD95``.
* **Volumes**: voxel count × voxel volume (product of spacings), in mL (= cm³ = 1000 mm³).
* **Cases** are matched by file name; every reference file needs a prediction with the same name (extra
  predictions are ignored). Reference and prediction must have the same shape and spacing (within
  ``SPACING_TOLERANCE_MM``).
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

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_slem.atomic import write_text_atomic
from nnunet_slem.errors import UserFacingError

#: What HD95 is when exactly one of reference and prediction is empty: "diagonal" (the image's field-of-view
#: diagonal in mm), or a float in mm (``float("nan")`` reproduces nnU-Net's undefined value).
DEFAULT_ONE_EMPTY_HD95: str = "diagonal"
OneEmptyHD95 = str | float

#: Largest spacing difference (mm, per axis) tolerated between a reference and its prediction.
SPACING_TOLERANCE_MM = 1e-3

#: Short names for the BraTS regions, used when these (case-insensitive) names are in dataset.json.
BRATS_SHORT_NAMES = {"whole tumor": "WT", "tumor core": "TC", "enhancing tumor": "ET"}

CSV_COLUMNS = ("case", "region", "dice", "hd95_mm", "ref_ml", "pred_ml")


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
        try:
            return float(policy)
        except ValueError:
            raise UserFacingError(
                f"unknown one-empty HD95 policy {policy!r}; use 'diagonal', 'nan' or a number in mm"
            ) from None
    return float(policy)


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the image outside counts as background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    coords = np.nonzero(mask)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, mask.shape, strict=True)
    )


def surface_distances_mm(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Both directed surface-distance sets, concatenated (ref→pred, then pred→ref); masks must be non-empty.

    Works on the bounding box of the union plus a one-voxel margin: every surface voxel lies inside it, so the
    distance transform there is exact, and the margin is background, so erosion inside the box equals erosion
    in the full image (where the box touches the image border, so does the full image). On BraTS-sized
    volumes this is an order of magnitude faster than transforming the whole image.
    """
    box = _bounding_box(ref | pred, margin=1)
    ref_s, pred_s = surface(ref[box]), surface(pred[box])
    sampling = [float(s) for s in spacing]
    to_pred = ndimage.distance_transform_edt(~pred_s, sampling=sampling)
    to_ref = ndimage.distance_transform_edt(~ref_s, sampling=sampling)
    return np.concatenate([to_pred[ref_s], to_ref[pred_s]])


def hd95_mm(
    ref: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; ``spacing`` is per numpy axis of the masks."""
    ref_any, pred_any = bool(ref.any()), bool(pred.any())
    if not ref_any and not pred_any:
        return 0.0
    if ref_any != pred_any:
        return one_empty_hd95_value(one_empty, ref.shape, spacing)
    return float(np.percentile(surface_distances_mm(ref, pred, spacing), 95))


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
) -> list[CaseMetrics]:
    """All metrics of one case; ``spacing`` is per numpy axis (z, y, x for SimpleITK arrays)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for region in regions:
        r, p = region_masks(ref, pred, region, ignore_label)
        rows.append(
            CaseMetrics(
                case=case,
                region=region.name,
                dice=dice(r, p),
                hd95_mm=hd95_mm(r, p, spacing, one_empty),
                ref_ml=int(r.sum()) * voxel_ml,
                pred_ml=int(p.sum()) * voxel_ml,
            )
        )
    return rows


def evaluate_case(
    case: str,
    ref_file: str | Path,
    pred_file: str | Path,
    regions: Sequence[Region],
    ignore_label: int | None = None,
    one_empty: OneEmptyHD95 = DEFAULT_ONE_EMPTY_HD95,
) -> list[CaseMetrics]:
    """Read one reference/prediction pair and compute its metrics; geometry must agree."""
    ref_img, pred_img = sitk.ReadImage(str(ref_file)), sitk.ReadImage(str(pred_file))
    if ref_img.GetSize() != pred_img.GetSize():
        raise UserFacingError(
            f"case {case}: reference {ref_file} has size {ref_img.GetSize()} but prediction {pred_file} has "
            f"size {pred_img.GetSize()}; predictions must be on the reference grid (export them with "
            "nnU-Net's predict, which resamples to the original geometry)."
        )
    ref_sp, pred_sp = np.array(ref_img.GetSpacing()), np.array(pred_img.GetSpacing())
    if np.max(np.abs(ref_sp - pred_sp)) > SPACING_TOLERANCE_MM:
        raise UserFacingError(
            f"case {case}: reference spacing {tuple(ref_sp)} != prediction spacing {tuple(pred_sp)} "
            f"(tolerance {SPACING_TOLERANCE_MM} mm); predictions must be on the reference grid."
        )
    spacing = tuple(float(s) for s in ref_sp[::-1])  # SimpleITK arrays are (z, y, x)
    ref = sitk.GetArrayViewFromImage(ref_img)
    pred = sitk.GetArrayViewFromImage(pred_img)
    return metrics_for_arrays(case, ref, pred, spacing, regions, ignore_label, one_empty)


# ------------------------------------------------------------------------------------------------ folders


def match_cases(ref_dir: Path, pred_dir: Path, file_ending: str) -> list[tuple[str, Path, Path]]:
    """(case, ref file, pred file) for every reference file; missing predictions are an error."""
    if not ref_dir.is_dir():
        raise UserFacingError(f"reference folder {ref_dir} does not exist")
    if not pred_dir.is_dir():
        raise UserFacingError(f"prediction folder {pred_dir} does not exist")
    ref_names = sorted(p.name for p in ref_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not ref_names:
        raise UserFacingError(
            f"no reference files ending in {file_ending!r} in {ref_dir}; point -ref at a labelsTr-like "
            "folder (the file ending comes from dataset.json)"
        )
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
) -> list[CaseMetrics]:
    """Metrics for every reference case, in case order then region order."""
    matched = match_cases(Path(ref_dir), Path(pred_dir), file_ending)
    jobs = [(case, r, p, list(regions), ignore_label, one_empty) for case, r, p in matched]
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


def summarize(rows: Sequence[CaseMetrics], regions: Sequence[Region]) -> dict:
    """Per region: n cases, and mean/std/median of Dice and HD95 (HD95 over its finite values)."""
    out: dict = {}
    for region in regions:
        sel = [r for r in rows if r.region == region.name]
        hd = [r.hd95_mm for r in sel]
        out[region.name] = {
            "labels": list(region.labels),
            "n": len(sel),
            "dice": _stats([r.dice for r in sel]),
            "hd95_mm": {**_stats(hd), "n_finite": sum(not math.isnan(v) for v in hd)},
        }
    return out


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else repr(float(v))


def write_outputs(rows: Sequence[CaseMetrics], summary: dict, out_dir: str | Path, meta: dict) -> None:
    """``metrics_per_case.csv`` and ``summary.json``, each replaced atomically (no half-written file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        d = asdict(r)
        writer.writerow([d["case"], d["region"], *(_fmt(d[k]) for k in CSV_COLUMNS[2:])])
    write_text_atomic(out / "metrics_per_case.csv", buf.getvalue())
    doc = {**meta, "regions": summary}
    write_text_atomic(out / "summary.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")


def format_table(summary: dict) -> str:
    """A small fixed-width table of the summary for the terminal."""

    def pm(stats: dict) -> str:
        if stats["mean"] is None:
            return "n/a"
        return f"{stats['mean']:.4f} ± {stats['std']:.4f} (median {stats['median']:.4f})"

    name_w = max(6, *(len(k) for k in summary))
    lines = [f"{'region':<{name_w}}  {'n':>4}  {'Dice mean ± std':<36}  HD95 mm mean ± std"]
    for name, s in summary.items():
        lines.append(f"{name:<{name_w}}  {s['n']:>4}  {pm(s['dice']):<36}  {pm(s['hd95_mm'])}")
    return "\n".join(lines)
