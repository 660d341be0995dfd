"""``nnunet-slem trainer-dir``: where nnU-Net should look for our trainers."""

from __future__ import annotations

import argparse

from nnunet_slem.paths import trainer_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Use as: export nnUNet_extTrainer=$(nnunet-slem trainer-dir)"


def run(args: argparse.Namespace) -> None:
    print(trainer_dir())
