"""Trainer variants: each a small class changing one thing, named for what it changes (nnU-Net style)."""

from __future__ import annotations

from nnunet_slem.network.cfb import CFBConfig
from nnunet_slem.trainers.recipes import NNUNET_RECIPE, SAWTOOTH_RECIPE, WARMUP_RECIPE, Recipe
from nnunet_slem.trainers.schedule import Schedule
from nnunet_slem.trainers.slem_trainer import SLeMTrainer


class SLeMTrainer_noPretrain(SLeMTrainer):
    """Same CFB network, random initialisation: the "CFB without SLeM" ablation. Trains with nnU-Net's own
    recipe (lr 1e-2, no warm-up), like every randomly initialised arm."""

    use_slem_pretraining = False
    recipe = NNUNET_RECIPE


class SLeMTrainer_noCFB(SLeMTrainer):
    """nnU-Net's plain network, from ``nnunet-slem pretrain --no-cfb``: the "SLeM without CFB" ablation."""

    cfb_defaults = CFBConfig(enabled=False)


class SLeMTrainer_noCFB_noPretrain(SLeMTrainer_noCFB):
    """nnU-Net's plain network from random weights with nnU-Net's recipe: training from scratch, with
    nnunet-slem's subset, schedule and seed options (otherwise the same as ``nnUNetTrainer``)."""

    use_slem_pretraining = False
    recipe = NNUNET_RECIPE


class SLeMTrainer_fromTaleb(SLeMTrainer):
    """The CFB network initialised from ``nnunet-slem pretrain --pretext taleb`` (multimodal puzzle baseline)."""

    pretext_name = "taleb"


class SLeMTrainer_fromSupervoxel(SLeMTrainer):
    """The CFB network initialised from ``nnunet-slem pretrain --pretext supervoxel`` (supervoxel baseline)."""

    pretext_name = "supervoxel"


class SLeMTrainer_fromMAE(SLeMTrainer):
    """The CFB network initialised from ``nnunet-slem pretrain --pretext mae`` (masked-image-modelling baseline,
    decoder included: the pretext trains the whole U-Net)."""

    pretext_name = "mae"


class SLeMTrainer_noCFB_fromMAE(SLeMTrainer_noCFB):
    """nnU-Net's plain network initialised from ``nnunet-slem pretrain --pretext mae --no-cfb``: MAE as published
    (no CFB), for comparing the pretexts on the plain network."""

    pretext_name = "mae"


class SLeMTrainer_fromSLeMRecon(SLeMTrainer):
    """The CFB network initialised from ``nnunet-slem pretrain --pretext slem_recon`` (reconstructive SLeM: the
    whole U-Net, decoder included, as the pretext trained it)."""

    pretext_name = "slem_recon"


class SLeMTrainer_warmupRecipe(SLeMTrainer):
    """SLeM weights fine-tuned with upstream nnU-Net's recipe for self-supervised checkpoints (lr 1e-3, linear
    warm-up of the whole network over 5 % of the epochs, then poly decay): the recipe ablation. It lost to
    nnU-Net's own recipe on the label-efficiency benchmark (docs/baselines.md)."""

    recipe = WARMUP_RECIPE


class SLeMTrainer_sawtooth(SLeMTrainer):
    """The "sawtooth" recipe: the decoder warms up alone for 5 % of the epochs (encoder and CFB frozen), then
    the whole network warms up for 5 %, then poly decay; lr 1e-3."""

    recipe = SAWTOOTH_RECIPE


class SLeMTrainer_decoderWarmup(SLeMTrainer):
    """Freeze the pretrained encoder and CFB for the first 5 % of the epochs (50 of nnU-Net's 1000) so the random
    decoder adapts first; lr 1e-3 rising over that phase, then poly decay."""

    recipe = Recipe(initial_lr=1e-3, decoder_warmup_fraction=0.05)


class SLeMTrainer_smoke(SLeMTrainer):
    """2 epochs x 5 training x 2 validation iterations: checks the pipeline end to end on a CPU."""

    schedule = Schedule(num_epochs=2, num_iterations_per_epoch=5, num_val_iterations_per_epoch=2)


class SLeMTrainer_noPretrain_smoke(SLeMTrainer_smoke):
    """The smoke schedule with random initialisation."""

    use_slem_pretraining = False
    recipe = NNUNET_RECIPE


class SLeMTrainer_demo(SLeMTrainer):
    """The demo's short schedule: 10 epochs x 20 iterations, 2 validation iterations (``nnunet-slem demo`` sets
    its own epochs and iterations through ``SLEM_EPOCHS`` and ``SLEM_ITERS_PER_EPOCH``)."""

    schedule = Schedule(num_epochs=10, num_iterations_per_epoch=20, num_val_iterations_per_epoch=2)


class SLeMTrainer_noPretrain_demo(SLeMTrainer_demo):
    """The demo's schedule with random initialisation (the demo's baseline)."""

    use_slem_pretraining = False
    recipe = NNUNET_RECIPE
