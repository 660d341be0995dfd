"""Trainers nnU-Net finds through ``nnUNet_extTrainer`` (see ``nnunet-slem trainer-dir``)."""

from nnunet_slem.trainers.slem_trainer import SLeMTrainer
from nnunet_slem.trainers.variants import (
    SLeMTrainer_decoderWarmup,
    SLeMTrainer_demo,
    SLeMTrainer_noPretrain,
    SLeMTrainer_noPretrain_demo,
    SLeMTrainer_noPretrain_smoke,
    SLeMTrainer_smoke,
)

__all__ = [
    "SLeMTrainer",
    "SLeMTrainer_decoderWarmup",
    "SLeMTrainer_demo",
    "SLeMTrainer_noPretrain",
    "SLeMTrainer_noPretrain_demo",
    "SLeMTrainer_noPretrain_smoke",
    "SLeMTrainer_smoke",
]
