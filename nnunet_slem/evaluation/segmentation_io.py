"""Reading a reference/prediction pair with the nnU-Net reader/writer its dataset.json names.

nnU-Net trains and predicts through the reader/writer that ``dataset.json`` selects (``file_ending``, or
``overwrite_image_reader_writer``), and that reader decides the array and the spacing: Tiff3DIO, for example,
takes the spacing from a ``.json`` sidecar that SimpleITK ignores. Evaluating with any other reader would measure
HD95, NSD and volumes on a different grid than the one nnU-Net trained on, so ``metrics`` reads every file here,
with nnU-Net's own ``read_seg``.

nnU-Net is imported inside the functions: worker processes import only what their reader class needs (no torch).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.nifti import check_file, check_labels, check_spacing

if TYPE_CHECKING:
    from nnunetv2.imageio.base_reader_writer import BaseReaderWriter

#: Largest geometry difference (spacing, origin, direction, affine entries) tolerated between a reference and its
#: prediction.
SPACING_TOLERANCE_MM = 1e-3
#: nnU-Net's readers give a 2D image a leading axis of size 1 whose spacing is this factor times the largest real
#: spacing (a marker, not a distance).
FAKE_2D_SPACING_FACTOR = 999


def reader_writer_for(dataset_json: dict, example_file: str | Path | None = None) -> type[BaseReaderWriter]:
    """The reader/writer class nnU-Net uses for this dataset, chosen as ``nnUNetv2_evaluate_folder`` chooses it
    (with an example file, nnU-Net tries the readers for the file ending until one reads it)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    ending = dataset_json.get("file_ending", ".nii.gz")
    # nnU-Net prints a traceback for every reader that fails on the example file before one succeeds: noise here
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return determine_reader_writer_from_dataset_json(
                {**dataset_json, "file_ending": ending}, None if example_file is None else str(example_file),
                verbose=False)
        except RuntimeError:
            pass
    shown = f" can read {example_file}" if example_file is not None else f" handles file_ending {ending!r}"
    raise UserFacingError(
        f"no nnU-Net reader/writer{shown}; set dataset.json's file_ending (or overwrite_image_reader_writer) to "
        "one of nnU-Net's readers for these files."
    )


def _default_reader() -> type[BaseReaderWriter]:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO


def check_segmentation_file(case: str, what: str, path: str | Path) -> tuple[str, str]:
    """Refuse a ``what`` ("reference"/"prediction") file that is not a file or does not read to its end, whose
    NIfTI header has a spacing that is not finite and > 0, or whose NIfTI voxels are NaN or not integers (as
    stored: SimpleITK reads NaN as 0); returns (how messages name it, the fix)."""
    label = f"case {case}: {what}"
    fix = (f"Predict case {case} again, or remove {Path(path).name} from the prediction folder." if what == "prediction"
           else f"Restore {Path(path).name} from the dataset, or remove the case from the reference folder.")
    check_file(path, label, fix, labels=True)
    return label, fix


def read_segmentation(case: str, what: str, path: str | Path,
                      reader: type[BaseReaderWriter]) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """(label array, spacing per array axis in mm, the reader's properties) of one file, read by ``reader``.

    nnU-Net's marker axis of a 2D image is dropped, so a 2D file is evaluated in 2D, as its own grid. The file must
    read to its end, with finite positive spacing and integer label values (``validation.nifti``).
    """
    label, fix = check_segmentation_file(case, what, path)
    try:
        seg, properties = reader().read_seg(str(path))
        spacing = tuple(float(s) for s in properties["spacing"])
    except Exception as e:  # any reader, any failure: one line naming the file and the reader
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserFacingError(
            f"case {case}: nnU-Net's {reader.__name__} (the reader dataset.json selects) cannot read {what} "
            f"{path} ({reason}); set dataset.json's file_ending / overwrite_image_reader_writer to a reader for "
            "these files."
        ) from None
    arr = np.asarray(seg)[0]
    check_spacing(spacing, path, label, fix)
    check_labels(arr, path, label, fix)
    if (arr.ndim == 3 and arr.shape[0] == 1 and len(spacing) == 3
            and spacing[0] >= FAKE_2D_SPACING_FACTOR * max(spacing[1:]) * (1 - 1e-9)):
        arr, spacing = arr[0], spacing[1:]
    return arr, spacing, properties


def _geometry(properties: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Every numeric entry of a reader's properties (``spacing``, SimpleITK's origin and direction, nibabel's
    affines...), nested dicts flattened to ``outer.inner`` keys."""
    out: dict[str, np.ndarray] = {}
    for key, value in properties.items():
        if isinstance(value, dict):
            out.update(_geometry(value, f"{prefix}{key}."))
            continue
        try:
            out[f"{prefix}{key}"] = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            continue  # not geometry (a file name, a string)
    return out


def read_pair(case: str, ref_file: str | Path, pred_file: str | Path,
              reader: type[BaseReaderWriter] | None = None) -> tuple[np.ndarray, np.ndarray, Sequence[float]]:
    """Reference and prediction arrays and the spacing per array axis; the prediction must be on the reference's
    grid (same shape, and the same spacing, origin, direction or affine, as far as the reader reports them).

    ``reader`` defaults to nnU-Net's SimpleITKIO (NIfTI, NRRD, MHA...); pass :func:`reader_writer_for`'s class.
    """
    reader = reader or _default_reader()
    ref, spacing, ref_props = read_segmentation(case, "reference", ref_file, reader)
    pred, _, pred_props = read_segmentation(case, "prediction", pred_file, reader)
    if ref.shape != pred.shape:
        raise UserFacingError(
            f"case {case}: reference {ref_file} has size {ref.shape} but prediction {pred_file} has size "
            f"{pred.shape}; predictions must be on the reference grid (export them with nnU-Net's predict, "
            "which resamples to the original geometry)."
        )
    ref_geometry, pred_geometry = _geometry(ref_props), _geometry(pred_props)
    for key, a in ref_geometry.items():
        b = pred_geometry.get(key)
        if b is None:
            continue
        if a.shape != b.shape or (a.size and np.max(np.abs(a - b)) > SPACING_TOLERANCE_MM):
            what = key.rsplit(".", 1)[-1]
            raise UserFacingError(
                f"case {case}: reference {what} {tuple(a.ravel().tolist())} != prediction {what} "
                f"{tuple(b.ravel().tolist())} (tolerance {SPACING_TOLERANCE_MM}); predictions must be on the "
                "reference grid."
            )
    return ref, pred, spacing
