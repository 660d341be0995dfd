"""``nnunet-slem audit``: is the SLeM pretext solvable from simple block statistics on this data? With
``--checkpoint``: does a pretrained network use such a shortcut?

Without ``--checkpoint``, trains logistic regressions on per-block statistics of pretext samples drawn from the
preprocessed images (intensity histograms, continuity across seams, texture; see
:mod:`nnunet_slem.pretext.audit`) and prints their held-out accuracies next to chance. Near chance means the
network has to learn spatial, cross-modal features; far above chance means it can cheat (the group says how).

With ``--checkpoint PATH`` (a SLeM pretraining checkpoint), rebuilds its network as the pretrainer does, loads
the weights and runs the shortcut probes (:mod:`nnunet_slem.pretrain.probes`) on held-out patches of the
dataset: accuracy on plain samples, with the seams zeroed, on composites of several cases and with noise in the
background. The pretext is the checkpoint's own (the task the network learnt), so pretext options are refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from nnunet_slem.atomic import write_json_atomic
from nnunet_slem.commands.pretrain import SLEM_ONLY_FLAGS, add_pretext_arguments, pretext_options
from nnunet_slem.errors import UserFacingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    parser.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    parser.add_argument("--samples", type=int, default=1000, help="training samples (half as many tested)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the result to this file")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="probe this SLeM pretraining checkpoint's network for shortcuts instead of auditing "
                        "the task (held-out patches of -d/-c/-p, the checkpoint's pretext and seed)")
    parser.add_argument("--probe-samples", type=int, default=256, help="samples per probe with --checkpoint [256]")
    parser.add_argument("-device", dest="device", default="cpu", choices=["cuda", "cpu", "mps"],
                        help="device for the probes' forward passes [cpu]")
    add_pretext_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from nnunet_slem.validation.numbers import check_number
    from nnunet_slem.validation.places import check_output_file

    check_number(args.samples, "--samples", integer=True, minimum=1, hint="Training samples of the audit.")
    if args.json_out:
        check_output_file(args.json_out, "--json file", "pass another path with --json")
    if args.checkpoint is not None:
        run_probes_on_checkpoint(args)
        return
    from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
    from nnunet_slem.pretrain.settings import PretrainSettings

    settings = PretrainSettings(seed=args.seed, pretext=pretext_options(args))
    trainer = SLeMPretrainer(args.dataset, args.configuration, args.plans, "cpu", settings)
    result = trainer.audit(args.samples, max(1, args.samples // 2))
    print(result.summary())
    if args.json_out:
        write_json_atomic(args.json_out, result.to_dict() | {"pretext": trainer.pretext.state_dict()["config"]})


def run_probes_on_checkpoint(args: argparse.Namespace) -> None:
    """Rebuild the checkpoint's pretext classifier (``SLeMPretrainer.build_model`` with the stored settings and
    pretext), load its weights and print the probes."""
    from nnunet_slem.checkpoint_format import check_architecture, load_checkpoint
    from nnunet_slem.pretext.slem import SLeMPretext
    from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
    from nnunet_slem.pretrain.settings import PretrainSettings
    from nnunet_slem.validation.checkpoint import CheckpointError, require_fields
    from nnunet_slem.validation.files import brief

    given = [f for f in SLEM_ONLY_FLAGS if getattr(args, f) not in (None, False)] + (
        ["pretext_option"] if args.pretext_option else [])
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise UserFacingError(f"{flags} cannot be combined with --checkpoint: the checkpoint fixes the pretext; "
                              "drop them.")
    if args.probe_samples < 1:
        raise UserFacingError("--probe-samples must be at least 1 with --checkpoint.")
    ckpt = load_checkpoint(args.checkpoint)
    require_fields(ckpt, Path(args.checkpoint), metadata=("pretext",), top=("head_weights",), purpose="the probes")
    meta = ckpt["metadata"]
    if meta.get("pretext_name", "slem") != "slem":
        raise UserFacingError(f"{args.checkpoint} was pretrained with the {meta['pretext_name']!r} pretext; the "
                              "probes are for SLeM checkpoints only.")
    known = {f.name for f in dataclasses.fields(PretrainSettings)}
    settings = PretrainSettings(**{k: v for k, v in meta.get("settings", {}).items() if k in known})
    trainer = SLeMPretrainer(args.dataset, args.configuration, args.plans, args.device, settings)
    try:
        trainer.pretext = SLeMPretext.from_state_dict(meta["pretext"])  # the task it learnt, not today's defaults
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(args.checkpoint, f"has a metadata 'pretext' that is not a SLeM pretext's state "
                                               f"({brief(e)})") from e
    model = trainer.build_model()
    check_architecture(ckpt["network_weights"], model.network.state_dict(), str(args.checkpoint), skip=())
    model.network.load_state_dict(ckpt["network_weights"])
    model.head.load_state_dict(ckpt["head_weights"])
    result = trainer.probe(model.to(trainer.device), args.probe_samples)
    print(result.summary())
    for line in result.findings():
        print("  " + line)
    if args.json_out:
        write_json_atomic(args.json_out, result.to_dict() | {"checkpoint": str(args.checkpoint)})
