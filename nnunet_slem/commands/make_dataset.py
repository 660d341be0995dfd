"""``nnunet-slem make-dataset``: write the bundled synthetic multi-modal dataset into nnU-Net's raw folder.

Kept free of torch imports so that generating data is quick and works in a bare environment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a synthetic multi-modal MRI dataset (BraTS-like brain or CHAOS-like abdomen) in nnU-Net v2 "
        "raw format: imagesTr/labelsTr for training, imagesTs/labelsTs (held-out cases with labels) for "
        "evaluation. --anatomy icbm152 builds the brain on the ICBM152 template instead of a phantom "
        "(skull-stripped: background exactly 0, like BraTS)."
    )
    parser.add_argument("-d", "--dataset-id", type=int, required=True,
                        help="nnU-Net dataset id (1..999); the folder is Dataset{ID:03d}_SLeMSynth... "
                        "(Dataset{ID:03d}_SLeMICBMBraTS with --anatomy icbm152)")
    parser.add_argument("--cases", type=int, default=12, metavar="N", help="training cases (default: 12)")
    parser.add_argument("--test-cases", type=int, default=4, metavar="N",
                        help="held-out cases with labels in imagesTs/labelsTs (default: 4)")
    parser.add_argument("--unlabeled-cases", type=int, default=0, metavar="N",
                        help="image-only cases in imagesUnlabeled/, for pretraining (pretrain/compare --unlabeled); "
                        "independent draws after the training and test cases, never a test case (default: 0)")
    parser.add_argument("--modalities", choices=("brats", "chaos"), default="brats",
                        help="brats: FLAIR/T1/T1ce/T2 brain tumour; chaos: T1 in/out-of-phase abdomen "
                        "(default: brats)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; the same seed gives identical data (default: 0)")
    parser.add_argument("--anatomy", choices=("phantom", "icbm152"), default="phantom",
                        help="phantom: ellipsoidal phantom with a noisy background (fast, any --shape); icbm152: "
                        "realistic skull-stripped brain from the ICBM152 2009a template bundled with nilearn "
                        "(pip install 'nnunet-slem[realistic]'), posed per case, background exactly 0; "
                        "--modalities brats only (default: phantom)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="phantom volume size in voxels, each >= 16 (default: 48 48 48); not with "
                        "--anatomy icbm152, whose size follows from --voxel-mm")
    parser.add_argument("--voxel-mm", type=float, default=None, metavar="MM",
                        help="--anatomy icbm152 only: isotropic voxel size the 1 mm template is resampled to; "
                        "4 mm gives 54x62x50 voxels (brain ~38x46x36), 2 mm about twice that per axis "
                        "(range 1..8, default: 4)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset of the same name, once the new one is complete")
    parser.add_argument("--raw", type=Path, default=None, metavar="DIR",
                        help="nnU-Net raw data folder (default: $nnUNet_raw)")


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.errors import UserFacingError

    if args.anatomy == "icbm152":
        if args.modalities != "brats":
            raise UserFacingError("--anatomy icbm152 is a brain: use it with --modalities brats (the default).")
        if args.shape is not None:
            raise UserFacingError("--shape applies to --anatomy phantom only; with icbm152 set --voxel-mm instead.")
        from nnunet_slem.data import icbm_brain

        folder = icbm_brain.make_dataset(
            dataset_id=args.dataset_id,
            raw_root=args.raw,
            n_cases=args.cases,
            n_test=args.test_cases,
            seed=args.seed,
            voxel_mm=icbm_brain.DEFAULT_VOXEL_MM if args.voxel_mm is None else args.voxel_mm,
            overwrite=args.overwrite,
            n_unlabeled=args.unlabeled_cases,
        )
    else:
        if args.voxel_mm is not None:
            raise UserFacingError("--voxel-mm applies to --anatomy icbm152 only; the phantom's size is --shape.")
        if args.shape is not None:  # refused with the estimate before a volume is allocated
            import math

            from nnunet_slem.validation.numbers import check_fits, physical_memory_bytes

            channels = 4 if args.modalities == "brats" else 2
            check_fits(4 * channels * math.prod(max(1, n) for n in args.shape), physical_memory_bytes(),
                       f"--shape {' '.join(map(str, args.shape))} ({channels} float32 volumes of one case)",
                       "this machine's RAM", "Pass a smaller --shape (48 48 48 is the default).")
        from nnunet_slem.data.synthetic import make_dataset  # scipy/SimpleITK only when actually generating

        folder = make_dataset(
            dataset_id=args.dataset_id,
            raw_root=args.raw,
            n_cases=args.cases,
            n_test=args.test_cases,
            modalities=args.modalities,
            seed=args.seed,
            shape=(48, 48, 48) if args.shape is None else tuple(args.shape),
            overwrite=args.overwrite,
            n_unlabeled=args.unlabeled_cases,
        )
    kind = args.modalities if args.anatomy == "phantom" else f"{args.modalities} ({args.anatomy})"
    pool = f" + {args.unlabeled_cases} unlabelled in {folder / 'imagesUnlabeled'}" if args.unlabeled_cases else ""
    print(f"Wrote {folder} ({args.cases} training + {args.test_cases} held-out {kind} cases{pool}).")
    if not _is_nnunet_raw(folder.parent):
        print(f"Note: nnU-Net only finds datasets under $nnUNet_raw; run `export nnUNet_raw={folder.parent}` "
              "first.")
    print("Next:")
    print(f"  nnUNetv2_plan_and_preprocess -d {args.dataset_id} -c 3d_fullres --verify_dataset_integrity")


def _is_nnunet_raw(folder: Path) -> bool:
    """Whether ``folder`` is what nnU-Net will read, so the hint is shown only when it matters."""
    env = os.environ.get("nnUNet_raw", "")
    return bool(env) and Path(env).expanduser().resolve() == folder.resolve()
