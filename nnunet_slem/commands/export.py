"""``nnunet-slem export brats``: nnU-Net predictions back to a BraTS release's native labels, for submission.

``nnunet-slem convert brats`` maps the native labels to nnU-Net's (1 edema, 2 necrosis / non-enhancing core,
3 enhancing tumour, 4 resection cavity) so the regions nest as WT ⊃ TC ⊃ ET; challenge platforms expect the
native values:

* ``--year 2021``: 1 NCR, 2 ED, 4 ET  (nnU-Net 1→2, 2→1, 3→4)
* ``--year 2023`` (GLI, MEN, MET, PED, SSA): 1 NETC, 2 SNFH, 3 ET  (nnU-Net 1→2, 2→1, 3→3)
* ``--year 2024`` (post-treatment glioma): 1 NETC, 2 SNFH, 3 ET, 4 RC  (nnU-Net 1→2, 2→1, 3→3, 4→4)

The mapping is the inverse of the converter's (``nnunet_slem.convert.brats``), so export after convert gives
back the original segmentation voxel for voxel. Geometry (spacing, origin, direction) and case names
(``CASE.nii.gz``) are kept. Each file is read once, checked and relabelled into a hidden staging folder (by
``-np`` worker processes); only when every file has passed are they renamed into OUT_DIR, so a bad label value
leaves OUT_DIR as it was.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nnunet_slem.errors import UserFacingError

FILE_ENDING = ".nii.gz"
YEARS = ("2021", "2023", "2024")
#: nnU-Net label names of the datasets ``convert brats`` writes, for the message about unexpected values
NN_LABEL_NAMES = ("background", "edema", "necrosis", "enhancing", "resection cavity")


def default_num_processes() -> int:
    """nnU-Net's ``default_num_processes`` (``nnUNet_def_n_proc``), at most the CPU count: as ``evaluate``."""
    from nnunetv2.configuration import default_num_processes as nnunet_default

    return max(1, min(nnunet_default, os.cpu_count() or 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    brats = sub.add_parser(
        "brats",
        help="BraTS native labels (2021: 1 NCR, 2 ED, 4 ET; 2023: 1 NETC, 2 SNFH, 3 ET; 2024: also 4 RC)",
        description="Map nnU-Net predictions of a dataset made by 'nnunet-slem convert brats' (1 edema, "
        "2 necrosis/NETC, 3 enhancing, 4 resection cavity) back to the release's native labels. Keeps geometry "
        "and case names.",
    )
    brats.add_argument("pred", metavar="PRED_DIR", help="nnUNetv2_predict output folder (CASE.nii.gz files)")
    brats.add_argument("out", metavar="OUT_DIR", help="folder for the relabelled files (created if missing)")
    brats.add_argument("--year", required=True, choices=YEARS,
                       help="BraTS release whose label convention to write (2023 = GLI, MEN, MET, PED, SSA; "
                       "2024 = post-treatment glioma, with 4 resection cavity)")
    brats.add_argument("-np", dest="num_processes", type=int, default=None, metavar="N",
                       help="worker processes (default: nnU-Net's default_num_processes, at most the CPU count)")


def label_map(year: str) -> dict[int, int]:
    """nnU-Net label -> native label: the inverse of the converter's mapping for that release."""
    from nnunet_slem.convert.brats import BRATS2021, BRATS_GLI, BRATS_GLI_POST

    layout = {"2021": BRATS2021, "2023": BRATS_GLI, "2024": BRATS_GLI_POST}[year]
    return {nn: native for native, nn in layout.label_map.items()}


def _export_one(job: tuple[str, str, tuple[int, ...], str]) -> str | None:
    """Read one prediction, check its labels, write it relabelled to the staging path.

    Returns the one-line error for a file that does not read to its end, has spacing that is not finite and > 0,
    or holds a NaN or non-integer value, or for a label value outside the year's nnU-Net labels (None when
    written): a message, not an exception, so it crosses the process boundary as plain text.
    """
    import numpy as np
    import SimpleITK as sitk

    from nnunet_slem.validation.nifti import read_image

    src, staged, lut_values, year = job
    try:
        image = read_image(src, "prediction", "Predict it again, or remove it from PRED_DIR.", labels=True)
    except UserFacingError as e:
        return str(e)
    array = sitk.GetArrayViewFromImage(image)
    unknown = sorted(int(v) for v in np.setdiff1d(np.unique(array), np.arange(len(lut_values))))
    if unknown:
        known = ", ".join(f"{i} {name}" for i, name in enumerate(NN_LABEL_NAMES[: len(lut_values)]))
        hint = " (4 is the resection cavity of BraTS 2024 post-treatment models: use --year 2024)" if (
            unknown == [4] and year == "2023") else ""
        return (
            f"{src}: label values {unknown} are not nnU-Net BraTS labels for --year {year} ({known}){hint}; "
            "export brats expects predictions of a dataset made by 'nnunet-slem convert brats'. "
            "Remove the file or predict it again with that model."
        )
    lut = np.asarray(lut_values, np.uint8)
    index = array if np.issubdtype(array.dtype, np.integer) else array.astype(np.intp)  # values checked above
    result = sitk.GetImageFromArray(lut[index])
    result.CopyInformation(image)
    sitk.WriteImage(result, staged, useCompression=True)
    with open(staged, "rb+") as fh:
        os.fsync(fh.fileno())
    return None


def export_brats(pred_dir: str | Path, out_dir: str | Path, year: str, num_processes: int = 1,
                 progress: bool = True) -> list[Path]:
    """Relabel every ``*.nii.gz`` in ``pred_dir`` into ``out_dir`` with ``num_processes`` workers; returns the
    written files. Nothing reaches ``out_dir`` unless every file passes (a new ``out_dir`` is removed again)."""
    from tqdm import tqdm

    from nnunet_slem.atomic import publish

    if year not in YEARS:
        raise UserFacingError(f"--year {year}: choose one of {', '.join(YEARS)}")
    if num_processes < 1:
        raise UserFacingError(f"-np {num_processes}: give at least 1 worker process")
    pred, out = Path(pred_dir), Path(out_dir)
    if not pred.is_dir():
        raise UserFacingError(f"prediction folder {pred} does not exist")
    # a directory or a broken link named like a prediction is refused by name (_export_one), not skipped
    files = sorted(p for p in pred.iterdir() if p.name.endswith(FILE_ENDING))
    if not files:
        raise UserFacingError(f"no {FILE_ENDING} predictions in {pred}; point PRED_DIR at nnUNetv2_predict output")
    if out.resolve() == pred.resolve():
        raise UserFacingError(
            f"OUT_DIR is PRED_DIR ({pred}); exporting in place would mix label conventions. Give another folder."
        )
    mapping = label_map(year)
    lut = tuple(mapping.get(nn_label, 0) for nn_label in range(max(mapping) + 1))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # staged inside OUT_DIR (same filesystem, so publishing is a rename); NIfTI writers need the real ending
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    jobs = [(str(f), str(staging / f.name), lut, year) for f in files]
    try:
        with tqdm(total=len(jobs), desc=f"export BraTS {year}", unit="file", disable=not progress) as bar:
            if num_processes == 1 or len(jobs) == 1:
                results = (_export_one(job) for job in jobs)
                _raise_first_error(results, bar)
            else:
                # spawn, like nnU-Net and evaluate: SimpleITK's threads do not survive fork reliably
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(min(num_processes, len(jobs))) as pool:
                    _raise_first_error(pool.imap(_export_one, jobs), bar)  # in file order: same error as -np 1
        written = []
        for f in files:
            publish(staging / f.name, out / f.name)
            written.append(out / f.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)  # we made it, so all in it is ours: leave no partial export
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return written


def _raise_first_error(results: Iterable[str | None], bar: Any) -> None:
    """Advance ``bar`` per finished file; raise the first file's error, in file order (the pool then stops)."""
    for error in results:
        if error is not None:
            raise UserFacingError(error)
        bar.update()


def run(args: argparse.Namespace) -> None:
    num_processes = args.num_processes if args.num_processes is not None else default_num_processes()
    from nnunet_slem.commands.evaluate import show_progress  # a bar only on a terminal: an error stays one line

    written = export_brats(args.pred, args.out, args.year, num_processes=num_processes, progress=show_progress())
    mapping = ", ".join(f"{a}->{b}" for a, b in label_map(args.year).items())
    print(f"BraTS {args.year} labels ({mapping}): wrote {len(written)} files to {args.out}")
