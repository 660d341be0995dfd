"""Shim found by nnU-Net through ``nnUNet_extTrainer``: re-exports the installed package's trainers.

Keep this file free of logic; nnU-Net imports it under a bare module name and evicts it after the lookup.
"""

from nnunet_slem.trainers import *  # noqa: F401,F403
from nnunet_slem.trainers import __all__  # noqa: F401
