"""``nnunet-slem convert {brats,chaos}``: public multi-modal MRI datasets as nnU-Net v2 raw datasets.

The converters live in ``nnunet_slem.convert``; this module only parses arguments. The dataset is written to
``$nnUNet_raw/DatasetXXX_NAME`` all at once (nothing is left behind on error).
"""

from __future__ import annotations

import argparse

ID_HELP = "new nnU-Net dataset ID (1-999); must not exist yet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    brats = _add_source(
        sources, "brats", default_name="BraTS", src_help="folder that directly contains the case folders",
        help_text="BraTS 2021 or BraTS 2023+ GLI case folders",
        description="Convert BraTS 2021 (BraTS2021_XXXXX/..._{flair,t1,t1ce,t2,seg}.nii.gz) or BraTS "
        "2023+ GLI (BraTS-GLI-XXXXX-XXX/...-{t2f,t1n,t1c,t2w,seg}.nii.gz) into a region dataset (WT/TC/ET), "
        "channels FLAIR, T1, T1ce, T2. Cases without seg go to imagesUnlabeled/.",
    )
    brats.add_argument(
        "--images-only", action="store_true",
        help="ignore segmentations: all cases to imagesUnlabeled/ (for nnunet-slem pretrain --unlabeled)",
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
    if args.source == "brats":
        from nnunet_slem.convert.brats import convert_brats

        convert_brats(args.src, args.dataset_id, name=args.name, images_only=args.images_only)
    else:
        from nnunet_slem.convert.chaos import convert_chaos

        convert_chaos(args.src, args.dataset_id, name=args.name, t2spir=args.t2spir)
