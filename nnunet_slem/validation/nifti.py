"""NIfTI (and other image) files read by ``evaluate``, ``export brats`` and ``convert``: readable to the last byte,
finite positive spacing, integer label values.

SimpleITK reads a ``.nii.gz`` cut short or with flipped bytes without a word as long as the header survives (it
stops decompressing where the voxels end, before gzip's CRC), and it takes the spacing from the sform when the
header's ``pixdim`` is 0 or NaN, which other readers (nibabel, nnU-Net's NibabelIO) use as it is. So a gzip file is
decompressed in full here (its CRC and length checked), the NIfTI header's ``pixdim`` is checked as well as the
spacing a reader reports, and label arrays must hold finite integer values. Each failure is one
:class:`~nnunet_slem.errors.UserFacingError` naming the file and the fix.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.files import brief, require_file

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _header_spacing(head: bytes) -> tuple[float, ...] | None:
    """The spatial ``pixdim`` of a NIfTI-1 or NIfTI-2 header (either byte order); ``None`` if ``head`` is none."""
    for order in "<>":
        if len(head) < 4:
            return None
        size = struct.unpack(f"{order}i", head[:4])[0]
        if size == 348 and len(head) >= 348:
            dim, pixdim = struct.unpack(f"{order}8h", head[40:56]), struct.unpack(f"{order}8f", head[76:108])
        elif size == 540 and len(head) >= 540:
            dim, pixdim = struct.unpack(f"{order}8q", head[16:80]), struct.unpack(f"{order}8d", head[104:168])
        else:
            continue
        n = dim[0] if 1 <= dim[0] <= 7 else 3
        return tuple(float(s) for s in pixdim[1: 1 + min(n, 3)])
    return None


def check_spacing(spacing: Sequence[Any], path: str | os.PathLike, what: str, fix: str) -> tuple[float, ...]:
    """``spacing`` as floats if every entry is a finite number > 0; else one error naming ``path``."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        shown = ", ".join(f"{s:g}" for s in values) if values else repr(spacing)
        raise UserFacingError(f"{what} {path} has voxel spacing ({shown}); every spacing must be a finite number "
                              f"> 0 (mm). {fix}")
    return values


def check_file(path: str | os.PathLike, what: str, fix: str, labels: bool = False) -> Path:
    """``path`` if it is a regular file that reads to its end: a gzip file (``.nii.gz``) is decompressed in full,
    so a truncated file or flipped bytes fail its CRC here; a NIfTI header's ``pixdim`` must be finite and > 0;
    with ``labels``, a NIfTI's voxels as stored must be finite integers (:func:`check_nifti_labels`)."""
    path = require_file(path, what, fix)
    head = b""
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == GZIP_MAGIC
        if compressed:
            with gzip.open(path, "rb") as gz:
                while chunk := gz.read(_CHUNK):
                    if len(head) < 540:
                        head += chunk[: 540 - len(head)]
        elif path.name.endswith(".nii"):
            with open(path, "rb") as fh:
                head = fh.read(540)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise UserFacingError(f"Cannot read {what} {path} ({brief(e, 160)}); the file is truncated or corrupt. "
                              f"{fix}") from None
    if path.name.endswith((".nii", ".nii.gz")):
        spacing = _header_spacing(head)
        if spacing is None:
            raise UserFacingError(f"{what} {path} has no NIfTI header (it is truncated or not a NIfTI file). {fix}")
        check_spacing(spacing, path, what, fix)
        if labels:
            check_nifti_labels(path, what, fix)
    return path


def check_nifti_labels(path: Path, what: str, fix: str) -> None:
    """NaN, Inf or non-integer voxels of a NIfTI label file, read as stored: SimpleITK reads NaN as 0, so its
    array cannot show them. An integer data type without scaling is accepted from the header alone."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        slope, inter = image.header.get_slope_inter()
        if (np.issubdtype(image.get_data_dtype(), np.integer) and slope in (None, 1.0)
                and inter in (None, 0.0)):
            return
        data = np.asanyarray(image.dataobj)
    except Exception as e:  # nibabel's errors for a damaged header or data
        raise UserFacingError(f"Cannot read {what} {path} ({brief(e, 160)}). {fix}") from None
    check_labels(data, path, what, fix)


def check_labels(array: np.ndarray, path: str | os.PathLike, what: str, fix: str) -> None:
    """Refuse a label array with NaN/Inf or non-integer values (a probability map or a resampled segmentation)."""
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    finite = np.isfinite(arr)
    if not finite.all():
        raise UserFacingError(f"{what} {path} holds NaN or Inf values ({int((~finite).sum())} voxels); a label "
                              f"file must hold integer label values. {fix}")
    fractional = arr != np.round(arr)
    if fractional.any():
        raise UserFacingError(f"{what} {path} holds non-integer values (e.g. {float(arr[fractional][0]):g}, "
                              f"{int(fractional.sum())} voxels); a label file must hold integer label values (not "
                              f"probabilities or linearly resampled labels). {fix}")


def read_image(path: str | os.PathLike, what: str, fix: str, labels: bool = False) -> Any:
    """The ``SimpleITK.Image`` in ``path`` after :func:`check_file`, with its spacing checked, and with
    ``labels`` its values (:func:`check_labels`)."""
    import SimpleITK as sitk

    path = check_file(path, what, fix, labels)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise UserFacingError(f"Cannot read {what} {path} ({brief(e, 160)}). {fix}") from None
    check_spacing(image.GetSpacing(), path, what, fix)
    if labels:
        check_labels(sitk.GetArrayViewFromImage(image), path, what, fix)
    return image
