"""Qualitative comparison figure: per case one row of modality slices, ground truth and model predictions.

Papers show a few cases side by side; doing that by hand invites cherry-picked slices and mismatched colours.
Here the defaults are mechanical: the cases with the largest ground-truth foreground, and in each case the slice
where the ground-truth foreground is largest, so the same command gives the same figure for every model.

Conventions
-----------
* Images are read with SimpleITK, as nnU-Net's default reader does; arrays are (z, y, x) for 3D files, and
  ``axis`` counts in that order (0 = slices along z, the axial plane for the usual acquisitions). Pixels are
  shown with their physical aspect ratio (from the file's spacing). Slices along z are drawn with the first
  row on top, slices along y or x with z increasing upwards.
* Grey values: the first modality (and every modality panel) is windowed to its 0.5-99.5 percentiles of
  the non-zero voxels of the shown slice.
* Overlays: for a region dataset (BraTS style) every region is drawn in its own colour, outer regions first
  (more labels = outer; WT green, TC yellow, ET red), so inner regions stay visible; otherwise one colour per
  label. Both are drawn on the first modality.
* Dice in the titles is per case over the whole volume (not the slice), with the conventions of
  :mod:`nnunet_slem.evaluation.metrics` (both empty = 1, ignore label left out).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_slem.atomic import write_bytes_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.overlap import Region, dice_per_region, region_mask, regions_from_labels

#: Colours of the BraTS regions (their short names from ``metrics.BRATS_SHORT_NAMES``).
BRATS_COLORS = {"WT": "#2ca02c", "TC": "#ffd700", "ET": "#d62728"}
#: Colours of other regions / labels, in drawing order: green, yellow, red first like BraTS.
PALETTE = ("#2ca02c", "#ffd700", "#d62728", "#17becf", "#e377c2", "#1f77b4", "#ff7f0e", "#9467bd",
           "#8c564b", "#bcbd22")
OVERLAY_ALPHA = 0.5
DEFAULT_N_CASES = 3


@dataclass(frozen=True)
class Prediction:
    """A named folder of predicted segmentations (same file names as the references)."""

    name: str
    folder: Path


def parse_prediction(text: str) -> Prediction:
    """``NAME=DIR``, or just ``DIR`` (named after the folder)."""
    if "=" in text:
        name, folder = text.split("=", 1)
        if not name or not folder:
            raise ValueError(f"--pred {text!r}: expected NAME=PRED_DIR")
        return Prediction(name, Path(folder))
    return Prediction(Path(text).name or text, Path(text))


# ------------------------------------------------------------------------------------------ choices


def choose_slice(foreground: np.ndarray, axis: int = 0) -> int:
    """Index along ``axis`` with the most foreground voxels (the first of ties); the middle one if none."""
    if not 0 <= axis < foreground.ndim:
        raise UserFacingError(f"--axis {axis}: the images have {foreground.ndim} axes (0-{foreground.ndim - 1})")
    other = tuple(a for a in range(foreground.ndim) if a != axis)
    counts = np.count_nonzero(foreground, axis=other) if other else foreground.astype(int)
    if not counts.any():
        return foreground.shape[axis] // 2
    return int(np.argmax(counts))


def foreground_mask(seg: np.ndarray, ignore_label: int | None) -> np.ndarray:
    """Every labelled voxel (not background, not the ignore label)."""
    fg = seg != 0
    if ignore_label is not None:
        fg &= seg != ignore_label
    return fg


def drawing_order(regions: Sequence[Region], has_regions: bool) -> list[Region]:
    """Outer regions first for region datasets (more labels = outer; stable), dataset order otherwise."""
    if not has_regions:
        return list(regions)
    return sorted(regions, key=lambda r: -len(r.labels))


def region_colors(regions: Sequence[Region]) -> dict[str, str]:
    """BraTS colours for WT/TC/ET; the palette, in drawing order, for everything else."""
    colors: dict[str, str] = {}
    free = list(PALETTE)
    for r in regions:
        if r.name in BRATS_COLORS:
            colors[r.name] = BRATS_COLORS[r.name]
            if BRATS_COLORS[r.name] in free:
                free.remove(BRATS_COLORS[r.name])
    for i, r in enumerate(x for x in regions if x.name not in colors):
        colors[r.name] = free[i % len(free)]
    return colors


# --------------------------------------------------------------------------------------------- input


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Array as (z, y, x) (2D files get a leading axis of 1) and spacing per array axis."""
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    spacing = tuple(float(s) for s in img.GetSpacing()[::-1])
    if arr.ndim == 2:
        arr, spacing = arr[None], (1.0, *spacing)
    return arr, spacing


def _image_files(images_dir: Path, case: str, n_channels: int, file_ending: str) -> list[Path]:
    return [images_dir / f"{case}_{c:04d}{file_ending}" for c in range(n_channels)]


def candidate_cases(
    images_dir: Path, ref_dir: Path, predictions: Sequence[Prediction], n_channels: int, file_ending: str
) -> list[str]:
    """Reference cases that have every channel and a file in every prediction folder."""
    for label, folder in [("images", images_dir), ("reference", ref_dir)] + [
        (f"prediction {p.name}", p.folder) for p in predictions
    ]:
        if not folder.is_dir():
            raise UserFacingError(f"{label} folder {folder} does not exist")
    refs = sorted(p.name[: -len(file_ending)] for p in ref_dir.iterdir() if p.name.endswith(file_ending))
    if not refs:
        raise UserFacingError(f"no reference files ending in {file_ending!r} in {ref_dir}")
    ok = [c for c in refs if all(f.is_file() for f in _image_files(images_dir, c, n_channels, file_ending))]
    ok = [c for c in ok if all((p.folder / f"{c}{file_ending}").is_file() for p in predictions)]
    if not ok:
        raise UserFacingError(
            f"no case has a reference in {ref_dir}, all {n_channels} channels in {images_dir} "
            f"(CASE_0000{file_ending} ...) and a prediction in every --pred folder; check the folders and -d."
        )
    return ok


def check_cases(cases: Sequence[str], available: Sequence[str], where: str) -> None:
    missing = [c for c in cases if c not in available]
    if missing:
        raise UserFacingError(
            f"--cases {' '.join(missing)}: not available ({where}); choose among: {', '.join(available[:20])}"
            + (" ..." if len(available) > 20 else "")
        )


def largest_foreground_cases(
    ref_dir: Path, cases: Sequence[str], file_ending: str, ignore_label: int | None, n: int = DEFAULT_N_CASES
) -> list[str]:
    """The ``n`` cases with the most ground-truth foreground voxels (ties: name order)."""
    sizes = []
    for case in cases:
        seg, _ = _read(ref_dir / f"{case}{file_ending}")
        sizes.append((-int(foreground_mask(seg, ignore_label).sum()), case))
    return [case for _, case in sorted(sizes)[:n]]


# ----------------------------------------------------------------------------------------------- draw


def _window(slice2d: np.ndarray) -> tuple[float, float]:
    values = slice2d[slice2d != 0]
    if values.size == 0:
        values = slice2d.ravel()
    lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _overlay(seg2d: np.ndarray, order: Sequence[Region], colors: dict[str, str]) -> np.ndarray:
    """RGBA layer: each region in its colour, later (inner) regions painted over earlier (outer) ones."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*seg2d.shape, 4), dtype=float)
    for region in order:
        mask = region_mask(seg2d, region)
        rgba[mask] = (*to_rgba(colors[region.name])[:3], OVERLAY_ALPHA)
    return rgba


def _dice_text(ref: np.ndarray, pred: np.ndarray, regions: Sequence[Region], ignore_label: int | None) -> str:
    scores = dice_per_region(ref, pred, regions, ignore_label)
    parts = [f"{region.name} {d:.2f}" for region, d in zip(regions, scores)]
    lines = [" ".join(parts[i:i + 3]) for i in range(0, len(parts), 3)]
    return "\n".join(lines)


def make_figure(
    images_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    predictions: Sequence[Prediction],
    dataset_json: dict,
    out: str | os.PathLike,
    cases: Sequence[str] | None = None,
    slice_index: int | None = None,
    axis: int = 0,
    n_cases: int = DEFAULT_N_CASES,
) -> tuple[Path, Path, dict[str, int]]:
    """Draw the figure; returns (png path, pdf path, case -> slice index shown).

    ``out`` names the PNG; the PDF gets the same stem. ``cases`` default: the ``n_cases`` cases with the largest
    ground-truth foreground. ``slice_index`` default: per case, the slice with the most ground-truth foreground.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    images_dir, ref_dir = Path(images_dir), Path(ref_dir)
    channel_names = [dataset_json["channel_names"][k] for k in sorted(dataset_json["channel_names"], key=int)]
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    labels = dataset_json["labels"]
    regions, ignore_label = regions_from_labels(labels)
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    order = drawing_order(regions, has_regions)
    colors = region_colors(order)

    available = candidate_cases(images_dir, ref_dir, predictions, len(channel_names), file_ending)
    if cases:
        check_cases(cases, available, "need a reference, every channel and every prediction")
        chosen = list(cases)
    else:
        chosen = largest_foreground_cases(ref_dir, available, file_ending, ignore_label, n_cases)

    n_cols = len(channel_names) + 1 + len(predictions)
    fig, axes = plt.subplots(len(chosen), n_cols, figsize=(2.3 * n_cols, 2.5 * len(chosen) + 0.5),
                             squeeze=False, constrained_layout=True)
    shown: dict[str, int] = {}
    for row, case in enumerate(chosen):
        ref, spacing = _read(ref_dir / f"{case}{file_ending}")
        if not 0 <= axis < ref.ndim:
            raise UserFacingError(f"--axis {axis}: the images have {ref.ndim} axes (0-{ref.ndim - 1})")
        if slice_index is None:
            index = choose_slice(foreground_mask(ref, ignore_label), axis)
        else:
            index = slice_index
            if not 0 <= index < ref.shape[axis]:
                raise UserFacingError(
                    f"--slice {index}: case {case} has {ref.shape[axis]} slices along axis {axis}"
                )
        shown[case] = index
        rows_sp, cols_sp = (s for a, s in enumerate(spacing) if a != axis)
        aspect = rows_sp / cols_sp
        origin = "upper" if axis == 0 else "lower"

        images = []
        for f in _image_files(images_dir, case, len(channel_names), file_ending):
            img, _ = _read(f)
            if img.shape != ref.shape:
                raise UserFacingError(
                    f"case {case}: {f} has shape {img.shape} but the reference has {ref.shape}"
                )
            images.append(np.take(img, index, axis=axis).astype(float))
            del img
        base = images[0]
        base_window = _window(base)

        panels: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [
            (name, im, None) for name, im in zip(channel_names, images)
        ]
        panels.append(("ground truth", None, np.take(ref, index, axis=axis)))
        titles_extra: list[str] = [""] * (len(channel_names) + 1)
        for p in predictions:
            pred, _ = _read(p.folder / f"{case}{file_ending}")
            if pred.shape != ref.shape:
                raise UserFacingError(
                    f"case {case}: prediction {p.folder / (case + file_ending)} has shape {pred.shape} but the "
                    f"reference has {ref.shape}; predictions must be on the reference grid"
                )
            panels.append((p.name, None, np.take(pred, index, axis=axis)))
            titles_extra.append(_dice_text(ref, pred, regions, ignore_label))
            del pred

        for col, ((title, image, seg2d), extra) in enumerate(zip(panels, titles_extra)):
            ax = axes[row, col]
            if image is not None:
                lo, hi = _window(image)
                ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin,
                          interpolation="nearest")
            else:
                ax.imshow(base, cmap="gray", vmin=base_window[0], vmax=base_window[1], aspect=aspect,
                          origin=origin, interpolation="nearest")
                ax.imshow(_overlay(seg2d, order, colors), aspect=aspect, origin=origin, interpolation="nearest")
            ax.set_title(title + (f"\n{extra}" if extra else ""), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[row, 0].set_ylabel(f"{case}\n{'zyx'[axis] if ref.ndim == 3 else 'axis ' + str(axis)} = {index}",
                                fontsize=8)

    handles = [Patch(facecolor=colors[r.name], alpha=0.8, label=r.name) for r in order]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)

    png = Path(out)
    if png.suffix.lower() != ".png":
        png = png.with_name(png.name + ".png") if png.suffix.lower() != ".pdf" else png.with_suffix(".png")
    pdf = png.with_suffix(".pdf")
    png.parent.mkdir(parents=True, exist_ok=True)
    for path, fmt, dpi in ((png, "png", 150), (pdf, "pdf", None)):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        write_bytes_atomic(path, buf.getvalue())
    plt.close(fig)
    return png, pdf, shown

