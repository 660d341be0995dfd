"""``nnunet-slem compare``: SLeM vs. JiGen, Taleb's puzzle, supervoxels and training from scratch, at few labels."""

from __future__ import annotations

import argparse

from nnunet_slem.experiments.comparison import CompareSettings
from nnunet_slem.experiments.methods import ALL_METHODS, METHODS, parse_methods


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "For each method: pretrain (finished checkpoints are reused), fine-tune with nnUNetv2_train on the "
        "fold's training cases (optionally only --labeled of them), validate on the fold's validation cases "
        "(monitoring), predict the held-out test cases (imagesTs/labelsTs) and write results.csv/.md/.png and, "
        "on the test split, paired.csv/.png: each method minus --reference per region with a paired t 95% CI "
        "over seeds (each seed's mean over the test cases), its p, a Wilcoxon p and Holm-adjusted p values. "
        "Seed s fixes the labelled subset and the fine-tuning RNG identically for every method. Rerunning "
        "continues an interrupted comparison. "
        "Methods: " + "; ".join(f"{m.name}: {m.description}" for m in ALL_METHODS.values())
    )
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-f", dest="fold", type=int, required=True, help="fold of splits_final.json")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    parser.add_argument("-device", dest="device", default="cuda", choices=["cuda", "cpu", "mps"])
    parser.add_argument("--methods", type=parse_methods, default=list(METHODS),
                        help=f"comma-separated subset of {','.join(ALL_METHODS)} [{','.join(METHODS)}]")
    parser.add_argument("--labeled", default=None,
                        help="labelled training cases per run: a count (4) or a fraction (0.25) of the fold's "
                        "training patients [all]")
    parser.add_argument("--seeds", type=int, default=1,
                        help="paired fine-tuning seeds: seed s picks the labelled subset and seeds the fine-tuning "
                        "RNG, the same for every method [1]")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first paired seed: seeds first..first+K-1 run, e.g. --first-seed 6 --seeds 6 adds "
                        "seeds 6-11 to a comparison whose seeds 0-5 are stored elsewhere [0]")
    parser.add_argument("--pretrain-seeds", type=int, default=1,
                        help="pretrain each pretext P times (--seed 0..P-1); fine-tuning seed s starts from "
                        "pretraining s mod P [1]")
    parser.add_argument("--reference", default="scratch",
                        help="the method every other one is compared with in paired.csv [scratch]")
    parser.add_argument("--test-images", default=None, metavar="DIR",
                        help="held-out test images [the raw dataset's imagesTs]")
    parser.add_argument("--test-labels", default=None, metavar="DIR",
                        help="their labels [the raw dataset's labelsTs]")
    parser.add_argument("--disable_tta", dest="tta", action="store_false",
                        help="predict the test cases without nnU-Net's test-time mirroring (8x faster on a CPU; "
                        "the same for every method; nnU-Net's spelling)")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--unlabeled", default=None, metavar="DIR",
                        help="an unlabelled image pool (imagesTr naming, no labels, e.g. make-dataset "
                        "--unlabeled-cases): every pool arm (slem_pool, slem_x8_pool, mae_x8_pool, "
                        "slem_recon_x8_pool) pretrains on the training images plus these; the pool's folder and "
                        "case count name its pretraining folders")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny pretraining and fine-tuning schedules for a CPU check of the whole pipeline "
                        "(pretraining goes to the comparison's own folder, never reused for real runs)")
    parser.add_argument("--out", default=None,
                        help="output folder [$nnUNet_results/DATASET/SLeMCompare__PLANS__CONFIG/fold_F__labeled_N]")
    schedule = parser.add_argument_group("schedules (default: nnunet-slem pretrain's and nnU-Net's)")
    schedule.add_argument("--pretrain-epochs", type=int, default=None)
    schedule.add_argument("--pretrain-iters", type=int, default=None)
    schedule.add_argument("--pretrain-batch", type=int, default=None)
    schedule.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs, same for every method")
    schedule.add_argument("--iters-per-epoch", type=int, default=None)
    schedule.add_argument("--val-iters", type=int, default=None)
    schedule.add_argument("--save-every", type=int, default=5,
                          help="fine-tuning writes checkpoint_latest.pth every N epochs (nnU-Net: 50), so a killed "
                          "comparison loses at most N epochs of the run it was in [5]")


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.experiments.comparison import Comparison

    fields = CompareSettings.__dataclass_fields__
    Comparison(CompareSettings(**{k: v for k, v in vars(args).items() if k in fields})).run()
