"""CHAOS MR (T1-DUAL in/opposed phase, optionally T2-SPIR) → nnU-Net v2 raw dataset with four organs.

Source layout (the challenge's ``CHAOS_Train_Sets``)::

    MR/<patient>/T1DUAL/DICOM_anon/InPhase/*.dcm
    MR/<patient>/T1DUAL/DICOM_anon/OutPhase/*.dcm
    MR/<patient>/T1DUAL/Ground/*.png          one PNG per slice; absent for test patients
    MR/<patient>/T2SPIR/DICOM_anon/*.dcm
    MR/<patient>/T2SPIR/Ground/*.png

SRC may be the ``MR`` folder, the folder containing it (``Train_Sets``), or the folder above that.

Channels: 0 T1 in-phase, 1 T1 out-of-phase. The two echoes of the dual-echo acquisition share one voxel grid
(checked), which is what makes them a genuine multi-modal case. With ``--t2spir``, T2-SPIR becomes channel
2, **resampled onto the T1 grid with linear interpolation**: a deviation from the challenge data, since
T2-SPIR is a separate acquisition (other breath-hold, other grid) and is only aligned through the scanner
coordinates. The T1-DUAL ground truth is used; T2-SPIR's own ground truth is not.

Ground truth: the PNG grey values liver 63 (55–70), right kidney 126 (110–135), left kidney 189 (175–200),
spleen 252 (240–255) become labels 1..4; any other non-zero value is refused. **Slice order:** following the
challenge's own evaluation code ("the orientation of the slices is determined by order of image names, NOT by
position tags"), the k-th PNG in file-name order belongs to the k-th DICOM file of the InPhase series in
file-name order; the labels are then put in the slice order SimpleITK/GDCM uses for the image (sorted by
position), so image and label stay aligned whichever way the file names run. The PNG count must equal the
slice count. Patients without ground truth go to ``imagesUnlabeled/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_slem import convert as common
from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.files import brief
from nnunet_slem.validation.nifti import check_spacing

LABELS = {"background": 0, "liver": 1, "right kidney": 2, "left kidney": 3, "spleen": 4}
#: (label, lowest, highest grey value) of the CHAOS MR ground-truth PNGs, inclusive
PNG_RANGES = ((1, 55, 70), (2, 110, 135), (3, 175, 200), (4, 240, 255))
CHANNELS = {0: "T1_in_phase", 1: "T1_out_phase"}
T2_CHANNEL = {2: "T2_SPIR"}


def find_mr_root(src: Path) -> Path:
    """The folder holding the patient folders, from any of the accepted SRC levels."""
    for candidate in (src, src / "MR", src / "Train_Sets" / "MR"):
        if candidate.is_dir() and any((p / "T1DUAL").is_dir() for p in candidate.iterdir() if p.is_dir()):
            return candidate
    raise UserFacingError(
        f"no CHAOS MR patients under {src}: expected "
        "MR/<patient>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm. Give the MR folder, the Train_Sets "
        "folder containing it, or the folder above Train_Sets."
    )


def case_id(patient: str) -> str:
    """``CHAOS_MR_001`` for patient folder ``1``: zero-padded so cases sort numerically."""
    if patient.isdigit():
        return f"CHAOS_MR_{int(patient):03d}"
    return "CHAOS_MR_" + re.sub(r"[^A-Za-z0-9]+", "-", patient)


def read_dicom_series(folder: Path, patient: str) -> tuple[sitk.Image, list[str]]:
    """The single DICOM series in ``folder`` and its files in the slice order of the returned image."""
    if not folder.is_dir():
        raise UserFacingError(f"patient {patient}: missing folder {folder}; restore it or remove the patient")
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        raise UserFacingError(
            f"patient {patient}: {folder} holds {len(series)} DICOM series, expected exactly one; "
            "keep one series per folder as in the CHAOS release."
        )
    files = list(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise UserFacingError(f"patient {patient}: cannot read the DICOM series in {folder} ({brief(e, 160)}). "
                              f"{common.SOURCE_FIX}") from None
    check_spacing(image.GetSpacing(), folder, f"patient {patient}: the DICOM series", common.SOURCE_FIX)
    return image, files


def png_to_labels(png: np.ndarray, patient: str, name: str) -> np.ndarray:
    """Map CHAOS grey values to labels 1..4; unexpected non-zero values are an error, not silently dropped."""
    out = np.zeros(png.shape, np.uint8)
    known = png == 0
    for label, lo, hi in PNG_RANGES:
        sel = (png >= lo) & (png <= hi)
        out[sel] = label
        known |= sel
    if not known.all():
        values = sorted({int(v) for v in np.unique(png[~known])})
        raise UserFacingError(
            f"patient {patient}: ground truth {name} has grey values {values[:10]} outside the CHAOS MR "
            "ranges (liver 55-70, right kidney 110-135, left kidney 175-200, spleen 240-255)."
        )
    return out


def read_ground_truth(ground: Path, name_sorted_dicoms: list[str], image_order: list[str], patient: str,
                      image: sitk.Image) -> sitk.Image:
    """Label volume on ``image``'s grid: PNG k (name order) ↔ DICOM k (name order), then image slice order."""
    pngs = sorted(p for p in ground.iterdir() if p.suffix.lower() == ".png")
    n_slices = image.GetSize()[2]
    if len(pngs) != n_slices:
        raise UserFacingError(
            f"patient {patient}: {len(pngs)} ground-truth PNGs in {ground} but {n_slices} DICOM slices; "
            "there must be one PNG per slice."
        )
    rows_cols = (image.GetSize()[1], image.GetSize()[0])
    name_rank = {f: k for k, f in enumerate(name_sorted_dicoms)}
    volume = np.zeros((n_slices, *rows_cols), np.uint8)
    for z, dicom_file in enumerate(image_order):
        png_file = pngs[name_rank[dicom_file]]
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(png_file)))
        if arr.ndim == 3:  # RGB(A) PNG: the grey value is in every colour channel
            arr = arr[..., 0]
        if arr.shape != rows_cols:
            raise UserFacingError(
                f"patient {patient}: {png_file.name} is {arr.shape[1]}x{arr.shape[0]} pixels but the DICOM "
                f"slices are {rows_cols[1]}x{rows_cols[0]}."
            )
        volume[z] = png_to_labels(arr, patient, png_file.name)
    label = sitk.GetImageFromArray(volume)
    label.CopyInformation(image)
    return label


def _patient_images(patient_dir: Path, with_t2: bool) -> tuple[list[sitk.Image], list[str]]:
    """Channel images (on the T1 grid) and the InPhase files in image slice order."""
    patient = patient_dir.name
    dicom = patient_dir / "T1DUAL" / "DICOM_anon"
    in_phase, in_files = read_dicom_series(dicom / "InPhase", patient)
    out_phase, _ = read_dicom_series(dicom / "OutPhase", patient)
    grid = common.Geometry.of(in_phase)
    common.require_same_geometry(f"patient {patient}", "T1 InPhase", grid, "T1 OutPhase", common.Geometry.of(out_phase))
    images = [in_phase, out_phase]
    if with_t2:
        t2, _ = read_dicom_series(patient_dir / "T2SPIR" / "DICOM_anon", patient)
        images.append(sitk.Resample(t2, in_phase, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    return images, in_files


def convert_chaos(src: str | Path, dataset_id: int, name: str = "CHAOS_MR", t2spir: bool = False,
                  progress: bool = True) -> Path:
    """Convert the CHAOS MR patients under ``src``; returns the new dataset folder. ``progress`` shows a bar
    (reading and resampling DICOM series takes seconds per patient)."""
    from tqdm import tqdm

    mr_root = find_mr_root(Path(src))
    patients = sorted(
        (p for p in mr_root.iterdir() if p.is_dir() and (p / "T1DUAL").is_dir()),
        key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name),
    )
    channels = {**CHANNELS, **(T2_CHANNEL if t2spir else {})}
    n_labelled = n_unlabelled = 0
    with common.staged_dataset(dataset_id, name) as out:
        images_tr, labels_tr, unlabeled = common.make_case_folders(out)
        for patient_dir in tqdm(patients, desc="converting CHAOS MR", unit="patient", disable=not progress):
            case = case_id(patient_dir.name)
            images, in_files = _patient_images(patient_dir, t2spir)
            ground = patient_dir / "T1DUAL" / "Ground"
            labelled = ground.is_dir() and any(p.suffix.lower() == ".png" for p in ground.iterdir())
            if labelled:
                name_sorted = sorted(in_files, key=lambda f: Path(f).name)
                label = read_ground_truth(ground, name_sorted, in_files, patient_dir.name, images[0])
                sitk.WriteImage(label, str(labels_tr / f"{case}{common.FILE_ENDING}"))
                n_labelled += 1
            else:
                n_unlabelled += 1
            target = images_tr if labelled else unlabeled
            for channel, image in enumerate(images):
                sitk.WriteImage(image, str(common.image_path(target, case, channel)))
        t2_note = ", T2-SPIR linearly resampled onto the T1 grid (separate acquisition)" if t2spir else ""
        release = common.Release(
            description=f"CHAOS MR converted by nnunet-slem: T1-DUAL in/out phase{t2_note}; T1-DUAL ground truth; "
            f"unlabeled patients in {common.UNLABELED_FOLDER}/",
            reference="https://chaos.grand-challenge.org/Data/",
            license="see https://chaos.grand-challenge.org/Data/",
        )
        common.write_dataset_json(out, dataset_id, name, channels, LABELS, n_labelled, n_unlabelled, release)
    return common.report_converted(out, dataset_id, name, "CHAOS MR", (n_labelled, n_unlabelled), "patients")
