"""BraTS (2021, and 2023+ adult glioma "GLI") → nnU-Net v2 raw dataset with the WT/TC/ET regions.

Both releases ship one folder per case with four co-registered sequences and, for training cases, a
segmentation; they differ in file naming and in the label values:

* BraTS 2021: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``; labels 1 NCR, 2 ED, 4 ET.
  Converted with nnU-Net's own ``copy_BraTS_segmentation_and_convert_labels_to_nnUNet``
  (``Dataset137_BraTS21``): 2→1, 1→2, 4→3.
* BraTS 2023+ GLI: ``BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{t2f,t1n,t1c,t2w,seg}.nii.gz``; labels 1 NCR,
  2 ED, 3 ET. nnU-Net 2.8.1 ships no label conversion for this release (its ``Dataset226`` keeps the native
  labels and no regions), so the same mapping is applied here: 2→1, 1→2, 3→3. Label 4 (resection cavity,
  BraTS 2024 post-treatment data) is not a tumour sub-region and is refused.

After the mapping the regions are nested: "whole tumor" [1,2,3], "tumor core" [2,3], "enhancing tumor" [3],
trained as regions with ``regions_class_order`` [1,2,3] (as in nnU-Net's BraTS datasets). Channels are
FLAIR, T1, T1ce, T2 in that order for both releases, so models and pretrained encoders transfer between them.

Images are copied byte for byte (their headers are checked, not rewritten); cases without a segmentation
(validation sets) and all cases with ``--images-only`` go to ``imagesUnlabeled/``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_slem.convert import (
    FILE_ENDING,
    UNLABELED_FOLDER,
    Geometry,
    Release,
    image_path,
    make_case_folders,
    read_geometry,
    report_converted,
    require_same_geometry,
    staged_dataset,
    write_dataset_json,
)
from nnunet_slem.errors import UserFacingError

CHANNEL_NAMES = {0: "FLAIR", 1: "T1", 2: "T1ce", 3: "T2"}
LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
REGIONS_CLASS_ORDER = [1, 2, 3]


@dataclass(frozen=True)
class Layout:
    """One BraTS release's file naming and label values."""

    name: str
    case_pattern: str  # regex for the case folder name
    example: str  # shown in the "unknown layout" message
    separator: str  # between case id and sequence suffix
    sequences: tuple[str, str, str, str]  # file suffixes in channel order FLAIR, T1, T1ce, T2
    label_map: dict[int, int]  # original -> nnU-Net label, background 0 implied

    def file(self, case_dir: Path, suffix: str) -> Path:
        return case_dir / f"{case_dir.name}{self.separator}{suffix}{FILE_ENDING}"


BRATS2021 = Layout("BraTS 2021", r"BraTS2021_\d{5}", "BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz",
                   separator="_", sequences=("flair", "t1", "t1ce", "t2"), label_map={2: 1, 1: 2, 4: 3})
BRATS_GLI = Layout("BraTS 2023+ GLI", r"BraTS-GLI-\d{5}-\d{3}",
                   "BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{t2f,t1n,t1c,t2w,seg}.nii.gz",
                   separator="-", sequences=("t2f", "t1n", "t1c", "t2w"), label_map={2: 1, 1: 2, 3: 3})
LAYOUTS = (BRATS2021, BRATS_GLI)


def detect_layout(src: Path) -> tuple[Layout, list[Path]]:
    """The release whose case-folder pattern the subfolders of ``src`` match, and those case folders."""
    if not src.is_dir():
        raise UserFacingError(f"{src} is not a folder; give the folder that holds the BraTS case folders")
    subdirs = sorted(p for p in src.iterdir() if p.is_dir())
    found = [
        (layout, [p for p in subdirs if re.fullmatch(layout.case_pattern, p.name)]) for layout in LAYOUTS
    ]
    matching = [(layout, cases) for layout, cases in found if cases]
    if len(matching) == 1:
        return matching[0]
    expected = "\n".join(f"  {layout.name}: SRC/{layout.example}" for layout in LAYOUTS)
    if not matching:
        raise UserFacingError(
            f"no BraTS case folders in {src}. Expected one of these layouts:\n{expected}\n"
            "Point SRC at the folder that directly contains the case folders."
        )
    raise UserFacingError(
        f"{src} mixes BraTS releases ({', '.join(m.name for m, _ in matching)}); convert each release into "
        "its own dataset (label values differ between releases)."
    )


def _check_labels(case: str, seg: np.ndarray, layout: Layout) -> None:
    allowed = {0, *layout.label_map}
    unknown = sorted({v.item() for v in np.unique(seg)} - allowed)
    if unknown:
        raise UserFacingError(
            f"case {case}: segmentation has label values {unknown} not in the {layout.name} convention "
            f"{sorted(allowed)}; fix or remove the case (BraTS 2024 post-treatment data with label 4, "
            "resection cavity, is not supported)."
        )


def _map_labels(seg: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    out = np.zeros(seg.shape, np.uint8)
    for src_value, dst_value in label_map.items():
        out[seg == src_value] = dst_value
    return out


def _write_label(case: str, seg_file: Path, out_file: Path, layout: Layout, grid: Geometry) -> None:
    seg_img = sitk.ReadImage(str(seg_file))
    first = layout.file(seg_file.parent, layout.sequences[0]).name
    require_same_geometry(f"case {case}", first, grid, seg_file.name, Geometry.of(seg_img))
    seg = sitk.GetArrayViewFromImage(seg_img)
    _check_labels(case, seg, layout)
    if layout is BRATS2021:
        # nnU-Net's own converter for this release; values were validated above, so it cannot raise
        from nnunetv2.dataset_conversion.Dataset137_BraTS21 import (
            copy_BraTS_segmentation_and_convert_labels_to_nnUNet,
        )

        copy_BraTS_segmentation_and_convert_labels_to_nnUNet(str(seg_file), str(out_file))
        return
    out = sitk.GetImageFromArray(_map_labels(seg, layout.label_map))
    out.CopyInformation(seg_img)
    sitk.WriteImage(out, str(out_file))


def convert_brats(src: str | Path, dataset_id: int, name: str = "BraTS", images_only: bool = False) -> Path:
    """Convert the BraTS release in ``src``; returns the new dataset folder."""
    layout, case_dirs = detect_layout(Path(src))
    n_labelled = n_unlabelled = 0
    with staged_dataset(dataset_id, name) as out:
        images_tr, labels_tr, unlabeled = make_case_folders(out)
        for i, case_dir in enumerate(case_dirs):
            case = case_dir.name
            files = [layout.file(case_dir, s) for s in layout.sequences]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise UserFacingError(
                    f"case {case}: missing {', '.join(missing)} in {case_dir} (each case needs "
                    f"{', '.join(layout.file(case_dir, s).name for s in layout.sequences)}); "
                    "restore the files or remove the case folder."
                )
            geoms = [read_geometry(f) for f in files]
            for f, g in zip(files[1:], geoms[1:], strict=True):
                require_same_geometry(f"case {case}", files[0].name, geoms[0], f.name, g)
            seg_file = layout.file(case_dir, "seg")
            labelled = not images_only and seg_file.is_file()
            if labelled:
                _write_label(case, seg_file, labels_tr / f"{case}{FILE_ENDING}", layout, geoms[0])
                n_labelled += 1
            else:
                n_unlabelled += 1
            target = images_tr if labelled else unlabeled
            for channel, f in enumerate(files):
                shutil.copyfile(f, image_path(target, case, channel))
            if (i + 1) % 100 == 0:
                print(f"  {i + 1}/{len(case_dirs)} cases")
        mapping = ", ".join(f"{a}->{b}" for a, b in layout.label_map.items())
        release = Release(
            description=f"{layout.name} converted by nnunet-slem; labels mapped {mapping}; unlabeled cases in "
            f"{UNLABELED_FOLDER}/",
            reference="https://www.synapse.org/brats",
            license="see the BraTS data use agreement",
        )
        write_dataset_json(out, dataset_id, name, CHANNEL_NAMES, LABELS, n_labelled, n_unlabelled, release,
                           regions_class_order=REGIONS_CLASS_ORDER)
    return report_converted(out, dataset_id, name, layout.name, (n_labelled, n_unlabelled), "cases")
