"""BraTS (2021, the 2023 GLI/MEN/MET/PED/SSA sets, 2024 post-treatment glioma) → nnU-Net v2 raw dataset.

Every release ships one folder per case with four co-registered sequences and, for training cases, a
segmentation; they differ in file naming and in the label values:

* BraTS 2021: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``; labels 1 NCR, 2 ED, 4 ET.
  Converted with nnU-Net's own ``copy_BraTS_segmentation_and_convert_labels_to_nnUNet``
  (``Dataset137_BraTS21``): 2→1, 1→2, 4→3.
* BraTS 2023 GLI, MEN, MET, PED, SSA: ``BraTS-XXX-NNNNN-NNN/BraTS-XXX-NNNNN-NNN-{t2f,t1n,t1c,t2w,seg}.nii.gz``
  (XXX the tumour type); labels 1 NETC, 2 SNFH, 3 ET. nnU-Net 2.8.1 ships no label conversion for these (its
  ``Dataset226`` keeps the native labels and no regions), so the 2021 mapping is applied: 2→1, 1→2, 3→3.
* BraTS 2024 post-treatment glioma: GLI naming, labels 1 NETC, 2 SNFH, 3 ET and 4 RC (resection cavity);
  2→1, 1→2, 3→3, 4→4. Its case folders end in ``-1NN`` (the post-treatment time points, e.g.
  ``BraTS-GLI-03011-101``) where the 2023 GLI ones end in ``-0NN`` (``BraTS-GLI-00008-001``): that suffix is
  what tells the two apart (an assumption from the public case listings; ``--layout`` overrides it).

After the mapping the tumour regions are nested: "whole tumor" [1,2,3], "tumor core" [2,3], "enhancing tumor"
[3], trained as regions with ``regions_class_order`` [1,2,3] (as in nnU-Net's BraTS datasets). The resection
cavity is not tumour: it is its own region "resection cavity" [4], outside WT/TC/ET (as in BraTS 2024's own
scoring), listed last with ``regions_class_order`` [1,2,3,4], so a voxel predicted as cavity is cavity.
``nnunet-slem evaluate`` reports it as a region of its own, ``export brats --year 2024`` writes it back as 4.
Channels are FLAIR, T1, T1ce, T2 in that order for every release, so models and pretrained encoders transfer
between them.

Images are copied byte for byte (their headers are checked, not rewritten); cases without a segmentation
(validation sets) and all cases with ``--images-only`` go to ``imagesUnlabeled/``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_slem.convert import (
    FILE_ENDING,
    SOURCE_FIX,
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
from nnunet_slem.validation.nifti import read_image

CHANNEL_NAMES = {0: "FLAIR", 1: "T1", 2: "T1ce", 3: "T2"}
LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
REGIONS_CLASS_ORDER = [1, 2, 3]
#: nnU-Net label (= native BraTS 2024 label) of the resection cavity, and its region in dataset.json
RC_LABEL = 4
RC_REGION = "resection cavity"


@dataclass(frozen=True)
class Layout:
    """One BraTS release's file naming and label values."""

    key: str  # the --layout name
    name: str
    case_pattern: str  # regex for the case folder name, used to recognise the layout
    example: str  # shown in the "unknown layout" message
    separator: str  # between case id and sequence suffix
    sequences: tuple[str, str, str, str]  # file suffixes in channel order FLAIR, T1, T1ce, T2
    label_map: dict[int, int]  # original -> nnU-Net label, background 0 implied
    family_pattern: str = ""  # case folders taken when --layout forces this layout (default: case_pattern)

    def file(self, case_dir: Path, suffix: str) -> Path:
        return case_dir / f"{case_dir.name}{self.separator}{suffix}{FILE_ENDING}"

    def accepts(self, folder_name: str) -> bool:
        """Whether ``--layout`` with this layout converts a case folder of that name."""
        return re.fullmatch(self.family_pattern or self.case_pattern, folder_name) is not None

    @property
    def labels(self) -> dict[str, int | list[int]]:
        """dataset.json ``labels``: the WT/TC/ET regions, and the resection cavity where the release has one."""
        return {**LABELS, RC_REGION: [RC_LABEL]} if RC_LABEL in self.label_map.values() else dict(LABELS)

    @property
    def regions_class_order(self) -> list[int]:
        return [*REGIONS_CLASS_ORDER, RC_LABEL] if RC_LABEL in self.label_map.values() else list(REGIONS_CLASS_ORDER)


_SEQ_2023 = ("t2f", "t1n", "t1c", "t2w")
_MAP_2023 = {2: 1, 1: 2, 3: 3}  # 1 NETC, 2 SNFH, 3 ET -> nnU-Net 1 edema, 2 necrosis/NETC, 3 enhancing
_GLI_ANY = r"BraTS-GLI-\d{5}-\d{3}"


def _layout_2023(kind: str, what: str, suffix: str = r"\d{3}", example_suffix: str = "NNN") -> Layout:
    """A BraTS 2023-style layout: ``BraTS-<kind>-NNNNN-NNN/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``."""
    return Layout(
        kind.lower(), f"BraTS 2023 {kind} ({what})", rf"BraTS-{kind}-\d{{5}}-{suffix}",
        f"BraTS-{kind}-NNNNN-{example_suffix}/<case>-{{t2f,t1n,t1c,t2w,seg}}.nii.gz", "-", _SEQ_2023, _MAP_2023,
        family_pattern=rf"BraTS-{kind}-\d{{5}}-\d{{3}}",
    )


BRATS2021 = Layout("brats2021", "BraTS 2021", r"BraTS2021_\d{5}",
                   "BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz",
                   separator="_", sequences=("flair", "t1", "t1ce", "t2"), label_map={2: 1, 1: 2, 4: 3})
BRATS_GLI = _layout_2023("GLI", "adult glioma", suffix=r"0\d{2}", example_suffix="0NN")
BRATS_MEN = _layout_2023("MEN", "meningioma")
BRATS_MET = _layout_2023("MET", "metastases")
BRATS_PED = _layout_2023("PED", "paediatric")
BRATS_SSA = _layout_2023("SSA", "sub-Saharan Africa glioma")
BRATS_GLI_POST = Layout(
    "gli-post", "BraTS 2024 post-treatment glioma", r"BraTS-GLI-\d{5}-1\d{2}",
    "BraTS-GLI-NNNNN-1NN/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz, label 4 resection cavity", "-", _SEQ_2023,
    {**_MAP_2023, RC_LABEL: RC_LABEL}, family_pattern=_GLI_ANY,
)
LAYOUTS = (BRATS2021, BRATS_GLI, BRATS_MEN, BRATS_MET, BRATS_PED, BRATS_SSA, BRATS_GLI_POST)
LAYOUT_KEYS = tuple(layout.key for layout in LAYOUTS)


def recognised_layouts() -> str:
    """One line naming every layout and its folder pattern, for the messages about unknown layouts."""
    return "; ".join(f"{layout.name} [{layout.key}]: {layout.example}" for layout in LAYOUTS)


def _layout_of(folder_name: str) -> Layout | None:
    return next((layout for layout in LAYOUTS if re.fullmatch(layout.case_pattern, folder_name)), None)


def _mixed(src: Path, a: tuple[Layout, Path], b: tuple[Layout, Path]) -> UserFacingError:
    return UserFacingError(
        f"{src} mixes BraTS layouts: {a[1].name} is {a[0].name}, {b[1].name} is {b[0].name}; label values differ, "
        "so convert each layout into its own dataset (or force one with --layout)."
    )


def detect_layout(src: Path, forced: str | None = None) -> tuple[Layout, list[Path]]:
    """The release whose case-folder pattern the subfolders of ``src`` match, and those case folders.

    ``forced`` (a :data:`LAYOUT_KEYS` name) skips the recognition for folders of its family (e.g. ``gli-post``
    takes every ``BraTS-GLI-NNNNN-NNN`` folder); folders of another recognised layout are still refused.
    """
    if not src.is_dir():
        raise UserFacingError(f"{src} is not a folder; give the folder that holds the BraTS case folders")
    subdirs = sorted(p for p in src.iterdir() if p.is_dir())
    if forced is not None:
        by_key = {layout.key: layout for layout in LAYOUTS}
        if forced not in by_key:
            raise UserFacingError(f"--layout {forced}: unknown; recognised layouts: {recognised_layouts()}")
        layout = by_key[forced]
        cases = [p for p in subdirs if layout.accepts(p.name)]
        others = [(lay, p) for p in subdirs if not layout.accepts(p.name) and (lay := _layout_of(p.name))]
        if not cases:
            raise UserFacingError(f"no {layout.name} case folders ({layout.example}) in {src}; point SRC at the "
                                  "folder that directly contains the case folders.")
        if others:
            raise _mixed(src, (layout, cases[0]), others[0])
        return layout, cases
    found: dict[str, tuple[Layout, list[Path]]] = {}  # by key: a Layout holds a dict, so it is not hashable
    for p in subdirs:
        layout = _layout_of(p.name)
        if layout is not None:
            found.setdefault(layout.key, (layout, []))[1].append(p)
    if not found:
        raise UserFacingError(
            f"no BraTS case folders in {src}; point SRC at the folder that directly contains them. Recognised "
            f"layouts: {recognised_layouts()}"
        )
    if len(found) > 1:
        (a, a_cases), (b, b_cases) = list(found.values())[:2]
        raise _mixed(src, (a, a_cases[0]), (b, b_cases[0]))
    return next(iter(found.values()))


def _check_labels(case: str, seg: np.ndarray, layout: Layout) -> None:
    allowed = {0, *layout.label_map}
    unknown = sorted({v.item() for v in np.unique(seg)} - allowed)
    if unknown:
        hint = ""
        if RC_LABEL in unknown and layout is BRATS_GLI:
            hint = (" Label 4 is BraTS 2024's resection cavity: if this is post-treatment data, convert it with "
                    "--layout gli-post.")
        raise UserFacingError(
            f"case {case}: segmentation has label values {unknown} not in the {layout.name} convention "
            f"{sorted(allowed)}; fix or remove the case.{hint}"
        )


def _map_labels(seg: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    out = np.zeros(seg.shape, np.uint8)
    for src_value, dst_value in label_map.items():
        out[seg == src_value] = dst_value
    return out


def _write_label(case: str, seg_file: Path, out_file: Path, layout: Layout, grid: Geometry) -> None:
    seg_img = read_image(seg_file, f"case {case}: segmentation", SOURCE_FIX, labels=True)
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


def convert_brats(src: str | Path, dataset_id: int, name: str = "BraTS", images_only: bool = False,
                  layout_key: str | None = None, progress: bool = True) -> Path:
    """Convert the BraTS release in ``src`` (``layout_key``: a :data:`LAYOUT_KEYS` name, to skip the
    recognition); returns the new dataset folder. ``progress`` shows a bar: a release has up to ~2000 cases."""
    from tqdm import tqdm

    layout, case_dirs = detect_layout(Path(src), layout_key)
    n_labelled = n_unlabelled = 0
    with staged_dataset(dataset_id, name) as out:
        images_tr, labels_tr, unlabeled = make_case_folders(out)
        for case_dir in tqdm(case_dirs, desc=f"converting {layout.name}", unit="case", disable=not progress):
            case = case_dir.name
            files = [layout.file(case_dir, s) for s in layout.sequences]
            missing = [f.name for f in files if not os.path.lexists(f)]  # a folder in its place: read_geometry
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
            labelled = not images_only and os.path.lexists(seg_file)  # a folder there is refused, not skipped
            if labelled:
                _write_label(case, seg_file, labels_tr / f"{case}{FILE_ENDING}", layout, geoms[0])
                n_labelled += 1
            else:
                n_unlabelled += 1
            target = images_tr if labelled else unlabeled
            for channel, f in enumerate(files):
                shutil.copyfile(f, image_path(target, case, channel))
        mapping = ", ".join(f"{a}->{b}" for a, b in layout.label_map.items())
        release = Release(
            description=f"{layout.name} converted by nnunet-slem; labels mapped {mapping}; unlabeled cases in "
            f"{UNLABELED_FOLDER}/",
            reference="https://www.synapse.org/brats",
            license="see the BraTS data use agreement",
        )
        write_dataset_json(out, dataset_id, name, CHANNEL_NAMES, layout.labels, n_labelled, n_unlabelled, release,
                           regions_class_order=layout.regions_class_order)
    return report_converted(out, dataset_id, name, layout.name, (n_labelled, n_unlabelled), "cases")
