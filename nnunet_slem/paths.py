"""nnU-Net's data folders as this package resolves them: one place, read when called (not at import), so
callers and tests can set the variables late."""

from __future__ import annotations

import os
from pathlib import Path

from nnunet_slem.errors import UserFacingError


def nnunet_raw_dir(override: str | os.PathLike | None = None, override_flag: str | None = None) -> Path:
    """``override`` if given, else ``$nnUNet_raw`` (nnU-Net only finds datasets under the latter).

    ``override_flag`` names the command-line option that sets ``override``, for the error message."""
    if override is not None and str(override) != "":
        return Path(override).expanduser().resolve()
    raw = os.environ.get("nnUNet_raw", "")
    if not raw:
        raise UserFacingError(
            "nnUNet_raw is not set, so there is no nnU-Net raw data folder to write the dataset into. "
            "export nnUNet_raw=/path/to/nnUNet_raw (nnU-Net's own commands need it too; see nnU-Net's "
            "documentation/setting_up_paths.md)" + (f", or pass {override_flag} DIR" if override_flag else "")
            + " and run again."
        )
    return Path(raw).expanduser().resolve()


def trainer_dir() -> Path:
    """The shim folder for ``nnUNet_extTrainer``.

    nnU-Net imports every module of that folder under bare names and evicts them afterwards, so the folder
    holds only a module that re-exports the installed package's classes: the class nnU-Net finds is then
    ``nnunet_slem.trainers...`` itself, not a second copy.
    """
    return Path(__file__).resolve().parent / "ext_trainers"
