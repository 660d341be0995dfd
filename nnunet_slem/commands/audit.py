"""``nnunet-slem audit``: is the SLeM pretext solvable from per-block intensity statistics on this data?

Trains a logistic regression on per-block, per-channel intensity histograms of pretext samples drawn from
the preprocessed images and prints its held-out accuracy next to chance. Near chance means the network
has to learn spatial, cross-modal features; far above chance means it can cheat (try another
``--normalization``).
"""

from __future__ import annotations

import argparse
import json

from nnunet_slem.commands.pretrain import add_pretext_arguments, pretext_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    parser.add_argument("--samples", type=int, default=1000, help="training samples (half as many tested)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the result to this file")
    add_pretext_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.pretrain.pretrainer import PretrainSettings, SLeMPretrainer

    settings = PretrainSettings(seed=args.seed, pretext=pretext_options(args))
    trainer = SLeMPretrainer(args.dataset, args.configuration, args.plans, "cpu", settings)
    result = trainer.audit(args.samples, max(1, args.samples // 2))
    print(result.summary())
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(result.to_dict() | {"pretext": trainer.pretext.state_dict()["config"]}, f, indent=2)
