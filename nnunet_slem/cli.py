"""The ``nnunet-slem`` command.

Every subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``. Modules are
imported only when their subcommand runs, so ``nnunet-slem trainer-dir`` (used inside ``export`` lines)
answers without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_slem.errors import UserFacingError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "trainer-dir": ("nnunet_slem.commands.trainer_dir", "print the folder to put in nnUNet_extTrainer"),
    "make-dataset": ("nnunet_slem.commands.make_dataset", "write the bundled synthetic multi-modal dataset"),
    "pretrain": ("nnunet_slem.commands.pretrain",
                 "self-supervised pretraining on preprocessed data (SLeM, or a baseline pretext)"),
    "audit": ("nnunet_slem.commands.audit", "check the pretext is not solvable from block intensity statistics"),
    "evaluate": ("nnunet_slem.commands.evaluate",
                 "Dice, HD95, NSD and volumes per case and region; BraTS lesion-wise, CHAOS metrics"),
    "convert": ("nnunet_slem.commands.convert", "import BraTS / CHAOS MR as an nnU-Net raw dataset"),
    "export": ("nnunet_slem.commands.export", "nnU-Net predictions back to BraTS 2021 / 2023 native labels"),
    "robustness": ("nnunet_slem.commands.robustness",
                   "Dice drop per region with each modality (or pair) removed after nnU-Net's normalisation"),
    "figure": ("nnunet_slem.commands.figure",
               "PNG + PDF figure: modality slices, ground truth and predictions as region overlays, per case"),
    "demo": ("nnunet_slem.commands.demo", "the whole story on generated data: pretrain, fine-tune, compare"),
    "compare": ("nnunet_slem.commands.compare",
                "SLeM vs. baselines (scratch, CFB, JiGen, Taleb, supervoxel) fine-tuned alike, at few labels"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-slem",
        description="SLeM self-supervised multi-modal pretraining for nnU-Net v2. "
        "Training and prediction go through nnU-Net's own commands with -tr SLeMTrainer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    for stream in (sys.stdout, sys.stderr):  # tables use "±": never crash on an ASCII terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints usage / help / the error for an unknown command
        return
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"nnunet-slem {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        module.run(args)
    except UserFacingError as e:
        print(f"nnunet-slem {name}: error: {e}", file=sys.stderr)
        sys.exit(2)
