"""Trainers nnU-Net finds through ``nnUNet_extTrainer`` (see ``nnunet-slem trainer-dir``)."""

from nnunet_slem.trainers.jigen import JiGenTrainer
from nnunet_slem.trainers.slem_trainer import SLeMTrainer
from nnunet_slem.trainers.variants import (
    SLeMTrainer_decoderWarmup,
    SLeMTrainer_demo,
    SLeMTrainer_fromMAE,
    SLeMTrainer_fromSLeMRecon,
    SLeMTrainer_fromSupervoxel,
    SLeMTrainer_fromTaleb,
    SLeMTrainer_noCFB,
    SLeMTrainer_noCFB_fromMAE,
    SLeMTrainer_noCFB_noPretrain,
    SLeMTrainer_noPretrain,
    SLeMTrainer_noPretrain_demo,
    SLeMTrainer_noPretrain_smoke,
    SLeMTrainer_sawtooth,
    SLeMTrainer_smoke,
    SLeMTrainer_warmupRecipe,
)

__all__ = [
    "JiGenTrainer",
    "SLeMTrainer",
    "SLeMTrainer_decoderWarmup",
    "SLeMTrainer_demo",
    "SLeMTrainer_fromMAE",
    "SLeMTrainer_fromSLeMRecon",
    "SLeMTrainer_fromSupervoxel",
    "SLeMTrainer_fromTaleb",
    "SLeMTrainer_noCFB",
    "SLeMTrainer_noCFB_fromMAE",
    "SLeMTrainer_noCFB_noPretrain",
    "SLeMTrainer_noPretrain",
    "SLeMTrainer_noPretrain_demo",
    "SLeMTrainer_noPretrain_smoke",
    "SLeMTrainer_sawtooth",
    "SLeMTrainer_smoke",
    "SLeMTrainer_warmupRecipe",
]
