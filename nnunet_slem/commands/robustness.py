"""``nnunet-slem robustness``: Dice drop per region when a modality (or a pair) is missing at inference.

Arguments mirror ``nnUNetv2_predict`` (``-d -c -f -tr -p -device -chk``) so the model is named the same way;
the method and fill conventions are in :mod:`nnunet_slem.evaluation.robustness`. On BraTS-region datasets
(regions WT, TC, ET) BraTS 2023 lesion-wise Dice is reported too, since that is what BraTS ranks by;
``--lesion-wise`` / ``--no-lesion-wise`` override that choice, with ``evaluate``'s lesion settings.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nnunet_slem.commands.evaluate import non_negative_int
from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.lesionwise import DEFAULT_DILATION_ITERS, DEFAULT_MIN_LESION_VOXELS, LesionSettings

HELP = "Dice drop per region with each modality (or pair) removed after nnU-Net's normalisation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="images", required=True, metavar="IMAGES_DIR",
                        help="images in nnU-Net naming (CASE_0000.nii.gz, ...), all channels per case")
    parser.add_argument("-ref", dest="ref", required=True, metavar="LABELS_DIR",
                        help="reference segmentations CASE.nii.gz for every case in IMAGES_DIR")
    parser.add_argument("-d", dest="dataset", required=True, metavar="ID", help="dataset id or name")
    parser.add_argument("-c", dest="configuration", required=True, metavar="CONFIG",
                        help="configuration, e.g. 3d_fullres")
    parser.add_argument("-f", dest="fold", required=True, metavar="FOLD", help="fold of the trained model (or 'all')")
    parser.add_argument("-tr", dest="trainer", required=True, metavar="TRAINER", help="trainer, e.g. SLeMTrainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", metavar="PLANS",
                        help="plans identifier [nnUNetPlans]")
    parser.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                        help="checkpoint file name in fold_F [checkpoint_final.pth]")
    parser.add_argument("-o", dest="out", metavar="OUT",
                        help="output folder [$nnUNet_results/DATASET/TRAINER__PLANS__CONFIG/fold_F/robustness]")
    parser.add_argument("-device", dest="device", default="cuda", choices=["cuda", "cpu", "mps"],
                        help="inference device [cuda]")
    parser.add_argument("--pairs", action="store_true", help="also remove every pair of channels")
    parser.add_argument("--fill", choices=["zero", "noise"], default="zero",
                        help="what replaces a removed channel after normalisation: zero (= the channel's mean "
                        "after z-scoring) or noise (standard normal where the channel was normalised) [zero]")
    parser.add_argument("--disable_tta", dest="disable_tta", action="store_true",
                        help="no mirroring test-time augmentation (faster; nnUNetv2_predict's flag)")
    # the earlier spelling keeps working, out of --help (one spelling per concept: nnU-Net's)
    parser.add_argument("--disable-tta", dest="disable_tta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="seed of --fill noise [0]")
    parser.add_argument("--save-predictions", action="store_true",
                        help="also write every condition's segmentations to OUT/predictions/CONDITION/")
    parser.add_argument("--lesion-wise", action=argparse.BooleanOptionalAction, default=None,
                        help="also report BraTS 2023 lesion-wise Dice and its drop [on when the regions include "
                        "WT, TC and ET (whole tumor, tumor core, enhancing tumor), off otherwise]")
    parser.add_argument("--lesion-dilation", type=non_negative_int, default=DEFAULT_DILATION_ITERS, metavar="N",
                        help=f"dilation iterations that merge and match lesions [{DEFAULT_DILATION_ITERS}: BraTS "
                        "glioma; 1: meningioma, metastases]")
    parser.add_argument("--min-lesion-voxels", type=non_negative_int, default=DEFAULT_MIN_LESION_VOXELS,
                        metavar="N", help="reference lesions of N voxels or fewer are left out "
                        f"[{DEFAULT_MIN_LESION_VOXELS}; BraTS-MET: 2]")
    parser.epilog = (
        "Writes robustness.csv (condition, removed_channels, region, n_cases, mean_dice, std_dice, dice_drop "
        "[, mean_lesion_dice, std_lesion_dice, lesion_dice_drop]), robustness_per_case.csv (... dice "
        "[, lesion_dice]), robustness.md and robustness.png (heatmap of the Dice drop). "
        "Drop = mean Dice with all channels - mean Dice of the condition: positive = worse."
    )


def model_folder_for(dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    """``$nnUNet_results/<Dataset>/<TRAINER>__<PLANS>__<CONFIG>``: nnU-Net's own ``get_output_folder``, with
    its errors (unset variable, unknown or ambiguous id) turned into one line naming the fix."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    if not os.environ.get("nnUNet_results"):
        raise UserFacingError("nnUNet_results is not set; export it as for nnUNetv2_predict")
    try:
        return Path(get_output_folder(dataset, trainer, plans, configuration))
    except (RuntimeError, ValueError) as e:
        raise UserFacingError(
            f"-d {dataset}: {e}\nCheck nnUNet_raw / nnUNet_preprocessed / nnUNet_results, or pass the full "
            "dataset name (DatasetXXX_Name)."
        ) from None


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.evaluation.robustness import run_robustness

    folder = model_folder_for(args.dataset, args.trainer, args.plans, args.configuration)
    fold = args.fold if args.fold == "all" else _int_fold(args.fold)
    result = run_robustness(
        folder, fold, args.images, args.ref, args.out, device=args.device, pairs=args.pairs, fill=args.fill,
        use_mirroring=not args.disable_tta, checkpoint_name=args.checkpoint, seed=args.seed,
        save_predictions=args.save_predictions, lesion_wise=args.lesion_wise,
        lesion_settings=LesionSettings(args.lesion_dilation, args.min_lesion_voxels),
    )
    print((result.out_dir / "robustness.md").read_text(encoding="utf-8"))
    print(f"wrote {result.out_dir / 'robustness.csv'}, robustness_per_case.csv, robustness.md, robustness.png")


def _int_fold(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserFacingError(f"-f {text}: a fold is a number (0-4 for nnU-Net's 5 folds) or 'all'") from None
