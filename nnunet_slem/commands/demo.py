"""``nnunet-slem demo``: generated data -> pretrain -> fine-tune with and without SLeM -> Dice table."""

from __future__ import annotations

import argparse

from nnunet_slem.experiments.demo_pipeline import DemoSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    parser.description = (
        "Runs the whole SLeM story through nnU-Net's own commands on the bundled synthetic dataset: make "
        "dataset, plan/preprocess, pretrain, fine-tune SLeMTrainer and SLeMTrainer_noPretrain on a few labelled "
        "cases, predict held-out cases, print a Dice table and write dice.png. Defaults take under 10 minutes "
        "on 2 CPU cores; rerunning continues an interrupted demo."
    )
    parser.add_argument("--out", default=d.out,
                        help=f"working folder (nnUNet_raw/preprocessed/results inside) [{d.out}]")
    parser.add_argument("-device", dest="device", default=d.device, choices=["cpu", "cuda", "mps"])
    parser.add_argument("-d", dest="dataset_id", type=int, default=d.dataset_id, help="dataset id to generate")
    parser.add_argument("--modalities", choices=["brats", "chaos"], default=d.modalities)
    parser.add_argument("--cases", type=int, default=d.cases, help="training images (all used for pretraining)")
    parser.add_argument("--test-cases", type=int, default=d.test_cases, help="held-out labelled test cases")
    parser.add_argument("--labeled", type=int, default=d.labeled, help="labelled cases used for fine-tuning")
    parser.add_argument("--val-cases", type=int, default=d.val_cases, help="fixed validation cases")
    parser.add_argument("--shape", type=int, nargs=3, default=list(d.shape), metavar=("Z", "Y", "X"))
    parser.add_argument("--features", type=int, nargs="+", default=list(d.features),
                        help="U-Net features per stage of the demo's small plans")
    parser.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    parser.add_argument("--pretrain-iters", type=int, default=d.pretrain_iters)
    parser.add_argument("--pretrain-batch", type=int, default=d.pretrain_batch)
    parser.add_argument("--audit-samples", type=int, default=d.audit_samples)
    parser.add_argument("--probe-samples", type=int, default=d.probe_samples,
                        help=f"held-out samples per shortcut probe of the pretrained network [{d.probe_samples}]")
    parser.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    parser.add_argument("--finetune-iters", type=int, default=d.finetune_iters)
    parser.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.experiments.demo_pipeline import Demo

    fields = DemoSettings.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["shape"] = tuple(values["shape"])
    values["features"] = tuple(values["features"])
    Demo(DemoSettings(**values)).run()
