"""``nnunet-slem export brats``: nnU-Net predictions back to a BraTS release's native labels, for submission.

``nnunet-slem convert brats`` maps the native labels to nnU-Net's (1 edema, 2 necrosis / non-enhancing core,
3 enhancing tumour) so the regions nest as WT ⊃ TC ⊃ ET; challenge platforms expect the native values:

* ``--year 2021``: 1 NCR, 2 ED, 4 ET  (nnU-Net 1→2, 2→1, 3→4)
* ``--year 2023`` (GLI and later adult glioma): 1 NETC, 2 SNFH, 3 ET  (nnU-Net 1→2, 2→1, 3→3)

The mapping is the inverse of the converter's (``nnunet_slem.convert.brats``), so export after convert gives
back the original segmentation voxel for voxel. Geometry (spacing, origin, direction) and case names
(``CASE.nii.gz``) are kept; every file is written atomically. All predictions are checked before anything is
written, so a bad label value leaves OUT_DIR as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from nnunet_slem.errors import UserFacingError

FILE_ENDING = ".nii.gz"
YEARS = ("2021", "2023")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    brats = sub.add_parser(
        "brats",
        help="BraTS native labels (2021: 1 NCR, 2 ED, 4 ET; 2023: 1 NETC, 2 SNFH, 3 ET)",
        description="Map nnU-Net predictions of a dataset made by 'nnunet-slem convert brats' (1 edema, "
        "2 necrosis/NETC, 3 enhancing) back to the release's native labels. Keeps geometry and case names.",
    )
    brats.add_argument("pred", metavar="PRED_DIR", help="nnUNetv2_predict output folder (CASE.nii.gz files)")
    brats.add_argument("out", metavar="OUT_DIR", help="folder for the relabelled files (created if missing)")
    brats.add_argument("--year", required=True, choices=YEARS,
                       help="BraTS release whose label convention to write (2023 = GLI and later)")


def label_map(year: str) -> dict[int, int]:
    """nnU-Net label -> native label: the inverse of the converter's mapping for that release."""
    from nnunet_slem.convert.brats import BRATS2021, BRATS_GLI

    layout = BRATS2021 if year == "2021" else BRATS_GLI
    return {nn: native for native, nn in layout.label_map.items()}


def _read(path: Path):
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    unknown = sorted(int(v) for v in np.setdiff1d(np.unique(array), [0, 1, 2, 3]))
    if unknown:
        raise UserFacingError(
            f"{path}: label values {unknown} are not nnU-Net BraTS labels (0 background, 1 edema, 2 necrosis, "
            "3 enhancing); export brats expects predictions of a dataset made by 'nnunet-slem convert brats'. "
            "Remove the file or predict it again with that model."
        )
    return image, array


def export_brats(pred_dir: str | Path, out_dir: str | Path, year: str) -> list[Path]:
    """Relabel every ``*.nii.gz`` in ``pred_dir`` into ``out_dir``; returns the written files."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_slem.atomic import publish

    if year not in YEARS:
        raise UserFacingError(f"--year {year}: choose one of {', '.join(YEARS)}")
    pred, out = Path(pred_dir), Path(out_dir)
    if not pred.is_dir():
        raise UserFacingError(f"prediction folder {pred} does not exist")
    files = sorted(p for p in pred.iterdir() if p.is_file() and p.name.endswith(FILE_ENDING))
    if not files:
        raise UserFacingError(f"no {FILE_ENDING} predictions in {pred}; point PRED_DIR at nnUNetv2_predict output")
    if out.resolve() == pred.resolve():
        raise UserFacingError(
            f"OUT_DIR is PRED_DIR ({pred}); exporting in place would mix label conventions. Give another folder."
        )
    for f in files:  # check everything first: a bad file must not leave a half-exported folder
        _read(f)
    lut = np.zeros(4, np.uint8)
    for nn_label, native in label_map(year).items():
        lut[nn_label] = native
    out.mkdir(parents=True, exist_ok=True)
    written = []
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        for f in files:
            image, array = _read(f)
            result = sitk.GetImageFromArray(lut[array])
            result.CopyInformation(image)
            tmp = staging / f.name  # NIfTI writers need the real file ending, so stage under the real name
            sitk.WriteImage(result, str(tmp), useCompression=True)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            publish(tmp, out / f.name)
            written.append(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def run(args: argparse.Namespace) -> None:
    written = export_brats(args.pred, args.out, args.year)
    mapping = ", ".join(f"{a}->{b}" for a, b in label_map(args.year).items())
    print(f"BraTS {args.year} labels ({mapping}): wrote {len(written)} files to {args.out}")
