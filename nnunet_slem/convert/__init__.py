"""Import public multi-modal MRI datasets (BraTS, CHAOS MR) as nnU-Net v2 raw datasets.

What every converter shares lives here: where ``nnUNet_raw`` is, the all-or-nothing dataset folder, and the
geometry comparison used to refuse channels that are not voxel-aligned.

Layout written (nnU-Net v2 raw format, plus one folder of ours)::

    $nnUNet_raw/DatasetXXX_NAME/
        dataset.json          numTraining counts labelled cases only
        imagesTr/             CASE_0000.nii.gz ... one file per channel, labelled cases
        labelsTr/             CASE.nii.gz
        imagesUnlabeled/      CASE_0000.nii.gz ... cases without a segmentation; nnU-Net ignores this
                              folder, ``nnunet-slem pretrain --unlabeled`` uses it for self-supervised
                              pretraining

A dataset is built in a hidden temporary sibling folder and renamed into place only when complete, so an
error (or Ctrl-C) leaves nothing half-written and an existing dataset is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_slem.errors import UserFacingError
from nnunet_slem.paths import nnunet_raw_dir
from nnunet_slem.validation.nifti import check_file, check_spacing

#: Largest difference (per component: mm for spacing/origin, unitless for direction cosines) for two images
#: to count as the same voxel grid.
GEOMETRY_TOLERANCE = 1e-3

UNLABELED_FOLDER = "imagesUnlabeled"
FILE_ENDING = ".nii.gz"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an image: what must agree for channels (and labels) to be voxel-aligned."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image | sitk.ImageFileReader) -> Geometry:
        return cls(
            tuple(int(s) for s in image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(s) for s in image.GetOrigin()),
            tuple(float(s) for s in image.GetDirection()),
        )

    def matches(self, other: Geometry, tol: float = GEOMETRY_TOLERANCE) -> bool:
        if self.size != other.size:
            return False
        return all(
            np.allclose(a, b, rtol=0.0, atol=tol)
            for a, b in (
                (self.spacing, other.spacing),
                (self.origin, other.origin),
                (self.direction, other.direction),
            )
        )

    def describe(self) -> str:
        def r(v: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"

        return (
            f"size {self.size}, spacing {r(self.spacing)}, origin {r(self.origin)}, "
            f"direction {r(self.direction)}"
        )


#: the fix for a source image or label that cannot be used
SOURCE_FIX = "Restore the file from the release, or remove its case from SRC (nothing was written)."


def read_geometry(path: Path) -> Geometry:
    """Geometry from the file header (no voxel data kept), so checking BraTS stays fast; the file must read to its
    end first (``validation.nifti.check_file``: a truncated image would otherwise be copied as it is) and the
    spacing must be finite and > 0."""
    check_file(path, "image", SOURCE_FIX)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise UserFacingError(f"cannot read {path}: {str(e).strip().splitlines()[-1]}") from None
    check_spacing(reader.GetSpacing(), path, "image", SOURCE_FIX)
    return Geometry.of(reader)


def require_same_geometry(subject: str, ref_name: str, ref: Geometry, name: str, geom: Geometry) -> None:
    """UserFacingError naming ``subject`` ("case X") and both geometries unless ``geom`` matches ``ref``."""
    if not ref.matches(geom):
        raise UserFacingError(
            f"{subject}: {name} is not on the same voxel grid as {ref_name} (tolerance "
            f"{GEOMETRY_TOLERANCE}):\n  {ref_name}: {ref.describe()}\n  {name}: {geom.describe()}\n"
            "nnU-Net needs voxel-aligned channels; register/resample the case or remove it from the source."
        )


# ----------------------------------------------------------------------------------------- dataset folder


def check_dataset_id_free(dataset_id: int) -> None:
    """Refuse an ID already used in nnUNet_raw/preprocessed/results: nnU-Net resolves IDs by folder prefix, and
    its own lookup (``find_candidate_datasets``, read from the environment now) says which names are taken."""
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets

    existing = [str(name) for name in find_candidate_datasets(dataset_id)]
    if existing:
        raise UserFacingError(
            f"dataset ID {dataset_id} is already used by {', '.join(existing)} (in nnUNet_raw, nnUNet_preprocessed "
            "or nnUNet_results); choose another -d ID or remove that folder yourself (nothing was written)."
        )


def validate_dataset_args(dataset_id: int, name: str) -> None:
    if not 1 <= dataset_id <= 999:
        raise UserFacingError(f"-d {dataset_id}: nnU-Net dataset IDs are 1..999")
    if not _NAME_RE.match(name):
        raise UserFacingError(
            f"--name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )


@contextmanager
def staged_dataset(dataset_id: int, name: str) -> Iterator[Path]:
    """Yield an empty folder to build the dataset in; on success it becomes ``$nnUNet_raw/DatasetXXX_NAME``.

    The folder is a hidden sibling of the final one (same filesystem, so the final rename is atomic). On any
    exception it is deleted and the exception propagates; nothing else in ``nnUNet_raw`` is touched.
    """
    validate_dataset_args(dataset_id, name)
    raw = nnunet_raw_dir()
    check_dataset_id_free(dataset_id)
    raw.mkdir(parents=True, exist_ok=True)
    final = raw / dataset_folder_name(dataset_id, name)
    # os.mkdir, not tempfile.mkdtemp: mkdtemp makes the folder 0700, which would survive the rename and hide
    # the dataset from other users of a shared nnUNet_raw
    tmp = raw / f".{final.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        check_dataset_id_free(dataset_id)  # another process may have taken the ID meanwhile
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name of a dataset, e.g. ``Dataset137_BraTS``."""
    return f"Dataset{dataset_id:03d}_{name}"


def make_case_folders(out: Path) -> tuple[Path, Path, Path]:
    """Create ``imagesTr``, ``labelsTr`` and ``imagesUnlabeled`` in the staged dataset ``out``; returns them."""
    folders = (out / "imagesTr", out / "labelsTr", out / UNLABELED_FOLDER)
    for folder in folders:
        folder.mkdir()
    return folders


@dataclass(frozen=True)
class Release:
    """What ``dataset.json`` says about the converted release, beyond channels and labels."""

    description: str
    reference: str
    license: str


def write_dataset_json(
    folder: Path,
    dataset_id: int,
    name: str,
    channel_names: dict[int, str],
    labels: dict[str, int | list[int]],
    num_training: int,
    num_unlabeled: int,
    release: Release,
    regions_class_order: list[int] | None = None,
) -> None:
    """dataset.json through nnU-Net's own generator, so the format is exactly what nnU-Net expects."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(folder),
        channel_names=dict(channel_names),
        labels=dict(labels),
        num_training_cases=num_training,
        file_ending=FILE_ENDING,
        regions_class_order=tuple(regions_class_order) if regions_class_order else None,
        numUnlabeled=num_unlabeled,
        unlabeled_folder=UNLABELED_FOLDER,
        converted_by="nnunet-slem convert",
        dataset_name=dataset_folder_name(dataset_id, name),
        description=release.description,
        reference=release.reference,
        license=release.license,
    )


def report_converted(out: Path, dataset_id: int, name: str, what: str, counts: tuple[int, int], unit: str) -> Path:
    """Print ``what: L labelled, U unlabelled <unit> -> <folder>`` and return the published folder (``out`` is
    the staged one, now renamed)."""
    final = Path(out.parent) / dataset_folder_name(dataset_id, name)
    print(f"{what}: {counts[0]} labelled, {counts[1]} unlabelled {unit} -> {final}")
    return final


def image_path(folder: Path, case: str, channel: int) -> Path:
    return folder / f"{case}_{channel:04d}{FILE_ENDING}"
