"""``nnunet-slem trainer-dir``: where nnU-Net should look for our trainers."""

from __future__ import annotations

import argparse
from pathlib import Path


def trainer_dir() -> Path:
    """The shim folder for ``nnUNet_extTrainer``.

    nnU-Net imports every module of that folder under bare names and evicts them afterwards, so the folder
    holds only a module that re-exports the installed package's classes: the class nnU-Net finds is then
    ``nnunet_slem.trainers...`` itself, not a second copy.
    """
    return Path(__file__).resolve().parent.parent / "ext_trainers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Use as: export nnUNet_extTrainer=$(nnunet-slem trainer-dir)"


def run(args: argparse.Namespace) -> None:
    print(trainer_dir())
