"""``nnunet-slem trainer-dir``: where nnU-Net should look for our trainers."""

from __future__ import annotations

import argparse

from nnunet_slem.paths import trainer_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the line must stay one line to copy it
    parser.epilog = ("Use as (keeps the trainer folders you had set; nnU-Net searches each):\n"
                     "  export nnUNet_extTrainer=$(nnunet-slem trainer-dir)${nnUNet_extTrainer:+:$nnUNet_extTrainer}")


def run(args: argparse.Namespace) -> None:
    print(trainer_dir())
