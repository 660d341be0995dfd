"""``nnunet-slem convert {brats,chaos}``: public multi-modal MRI datasets as nnU-Net v2 raw datasets.

The converters live in ``nnunet_slem.convert``; this module only parses arguments. The dataset is written to
``$nnUNet_raw/DatasetXXX_NAME`` all at once (nothing is left behind on error).
"""

from __future__ import annotations

import argparse

#: ``--layout`` names, as in ``nnunet_slem.convert.brats.LAYOUT_KEYS`` (kept here so --help needs no SimpleITK import;
#: tests/test_convert.py checks the two agree)
LAYOUT_KEYS = ("brats2021", "gli", "men", "met", "ped", "ssa", "gli-post")
ID_HELP = "new nnU-Net dataset ID (1-999); must not exist yet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    brats = _add_source(
        sources, "brats", default_name="BraTS", src_help="folder that directly contains the case folders",
        help_text="BraTS 2021, 2023 (GLI, MEN, MET, PED, SSA) or 2024 post-treatment glioma case folders",
        description="Convert BraTS 2021 (BraTS2021_XXXXX/..._{flair,t1,t1ce,t2,seg}.nii.gz), BraTS 2023 GLI, "
        "MEN, MET, PED or SSA (BraTS-XXX-NNNNN-NNN/...-{t2f,t1n,t1c,t2w,seg}.nii.gz) or BraTS 2024 "
        "post-treatment glioma (BraTS-GLI-NNNNN-1NN, label 4 resection cavity) into a region dataset "
        "(WT/TC/ET, plus 'resection cavity' for 2024 post-treatment), channels FLAIR, T1, T1ce, T2. The layout "
        "is recognised from the case folder names. Cases without seg go to imagesUnlabeled/.",
    )
    brats.add_argument(
        "--images-only", action="store_true",
        help="ignore segmentations: all cases to imagesUnlabeled/ (for nnunet-slem pretrain --unlabeled)",
    )
    brats.add_argument(
        "--layout", choices=LAYOUT_KEYS, default=None,
        help="take this layout instead of recognising it from the folder names (e.g. gli-post for "
        "post-treatment cases whose folders do not end in -1NN)",
    )
    chaos = _add_source(
        sources, "chaos", default_name="CHAOS_MR",
        src_help="the MR folder, the Train_Sets folder, or the folder above it",
        help_text="CHAOS challenge MR (T1-DUAL in/out phase)",
        description="Convert CHAOS MR (MR/<patient>/T1DUAL/DICOM_anon/{InPhase,OutPhase}, Ground PNGs) "
        "into a dataset with liver, right kidney, left kidney, spleen. Patients without Ground go to "
        "imagesUnlabeled/.",
    )
    chaos.add_argument(
        "--t2spir", action="store_true",
        help="add T2-SPIR as channel 2, linearly resampled onto the T1 grid (a separate acquisition: "
        "alignment only through scanner coordinates)",
    )


def _add_source(sources: argparse._SubParsersAction, name: str, default_name: str, src_help: str,
                help_text: str, description: str) -> argparse.ArgumentParser:
    """The subcommand for one source, with the arguments every source takes: SRC, -d and --name."""
    parser = sources.add_parser(name, help=help_text, description=description)
    parser.add_argument("src", metavar="SRC", help=src_help)
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help=ID_HELP)
    parser.add_argument("--name", default=default_name, help=f"dataset name (default: {default_name})")
    return parser


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.commands.evaluate import show_progress  # a bar only on a terminal: an error stays one line

    if args.source == "brats":
        from nnunet_slem.convert.brats import convert_brats

        convert_brats(args.src, args.dataset_id, name=args.name, images_only=args.images_only,
                      layout_key=args.layout, progress=show_progress())
    else:
        from nnunet_slem.convert.chaos import convert_chaos

        convert_chaos(args.src, args.dataset_id, name=args.name, t2spir=args.t2spir, progress=show_progress())
