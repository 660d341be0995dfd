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
        "evaluation."
    )
    parser.add_argument("-d", "--dataset-id", type=int, required=True,
                        help="nnU-Net dataset id (1..999); the folder is Dataset{ID:03d}_SLeMSynth...")
    parser.add_argument("--cases", type=int, default=12, metavar="N", help="training cases (default: 12)")
    parser.add_argument("--test-cases", type=int, default=4, metavar="N",
                        help="held-out cases with labels in imagesTs/labelsTs (default: 4)")
    parser.add_argument("--modalities", choices=("brats", "chaos"), default="brats",
                        help="brats: FLAIR/T1/T1ce/T2 brain tumour; chaos: T1 in/out-of-phase abdomen "
                        "(default: brats)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; the same seed gives identical data (default: 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 48, 48), metavar=("Z", "Y", "X"),
                        help="volume size in voxels, each >= 16 (default: 48 48 48)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset of the same name, once the new one is complete")
    parser.add_argument("--raw", type=Path, default=None, metavar="DIR",
                        help="nnU-Net raw data folder (default: $nnUNet_raw)")


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.data.synthetic import make_dataset  # scipy/SimpleITK only when actually generating

    folder = make_dataset(
        dataset_id=args.dataset_id,
        raw_root=args.raw,
        n_cases=args.cases,
        n_test=args.test_cases,
        modalities=args.modalities,
        seed=args.seed,
        shape=tuple(args.shape),
        overwrite=args.overwrite,
    )
    print(f"Wrote {folder} ({args.cases} training + {args.test_cases} held-out {args.modalities} cases).")
    if not _is_nnunet_raw(folder.parent):
        print(f"Note: nnU-Net only finds datasets under $nnUNet_raw; run `export nnUNet_raw={folder.parent}` "
              "first.")
    print("Next:")
    print(f"  nnUNetv2_plan_and_preprocess -d {args.dataset_id} -c 3d_fullres --verify_dataset_integrity")


def _is_nnunet_raw(folder: Path) -> bool:
    """Whether ``folder`` is what nnU-Net will read, so the hint is shown only when it matters."""
    env = os.environ.get("nnUNet_raw", "")
    return bool(env) and Path(env).expanduser().resolve() == folder.resolve()
