"""The arms ``nnunet-slem compare`` can run: which trainer fine-tunes, from which pretraining, with or without CFB.

A pretext *variant* arm (``PRETEXT_VARIANTS``) pretrains the SLeM pretext with other options (``pretext_args``,
passed to ``nnunet-slem pretrain``) into its own folder, then fine-tunes exactly like ``slem``: the variants are
judged by what they do to held-out Dice, paired with every other arm of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_slem.errors import UserFacingError


@dataclass(frozen=True)
class Method:
    name: str
    trainer: str
    pretext: str | None  # the pretraining it starts from, None: random initialisation
    cfb: bool
    description: str
    pretext_args: tuple[str, ...] = ()  # extra `nnunet-slem pretrain` options of a pretext variant
    pool: bool = False  # pretrains on the training images plus compare's --unlabeled pool
    pretrain_scale: int = 1  # pretraining epochs x this (8: eight times the comparison's pretraining samples)

    @property
    def pretraining(self) -> tuple[str | None, bool, tuple[str, ...]]:
        """What identifies the pretraining this arm starts from: arms sharing it share the checkpoints. The pool
        and the scale travel as the placeholders :data:`POOL_OPTION` and :data:`SCALE_OPTION`, which the
        comparison turns into ``--unlabeled DIR`` and ``--epochs N`` (and the pool's identity in the folder)."""
        return (self.pretext, self.cfb, self.pretext_args + ((POOL_OPTION,) if self.pool else ())
                + ((SCALE_OPTION, str(self.pretrain_scale)) if self.pretrain_scale != 1 else ()))


#: placeholders in :attr:`Method.pretraining`'s options (never passed to ``nnunet-slem pretrain`` as they are)
POOL_OPTION, SCALE_OPTION = "@unlabeled-pool", "@epochs-x"


def describe_options(options: tuple[str, ...]) -> str:
    """``options`` as a reader wants them: the placeholders as "with the --unlabeled pool" and "8x the epochs"."""
    words, i = [], 0
    while i < len(options):
        if options[i] == SCALE_OPTION:
            words.append(f"{options[i + 1]}x the epochs")
            i += 1
        else:
            words.append("with the --unlabeled pool" if options[i] == POOL_OPTION else options[i])
        i += 1
    return " ".join(words)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("scratch", "SLeMTrainer_noCFB_noPretrain", None, False, "nnU-Net's network from random weights"),
    Method("cfb", "SLeMTrainer_noPretrain", None, True, "CFB without SLeM (ablation)"),
    Method("slem", "SLeMTrainer", "slem", True, "SLeM pretraining + CFB (the method)"),
    Method("slem_nocfb", "SLeMTrainer_noCFB", "slem", False, "SLeM pretraining without CFB (ablation)"),
    Method("taleb", "SLeMTrainer_fromTaleb", "taleb", True, "Taleb's multimodal puzzle pretraining"),
    Method("supervoxel", "SLeMTrainer_fromSupervoxel", "supervoxel", True, "supervoxel segmentation pretraining"),
    Method("jigen", "JiGenTrainer", None, True, "JiGen: jigsaw loss jointly with segmentation"),
)}
#: fine-tuning recipe variants of the SLeM arm (opt-in: ``--methods slem,slem_warmup,...``)
RECIPE_METHODS: dict[str, Method] = {m.name: m for m in (
    Method("slem_warmup", "SLeMTrainer_warmupRecipe", "slem", True,
           "SLeM fine-tuned with upstream nnU-Net's self-supervised recipe (lr 1e-3, 5 % warm-up)"),
    Method("slem_sawtooth", "SLeMTrainer_sawtooth", "slem", True,
           "SLeM fine-tuned with the sawtooth recipe (decoder warm-up, then whole-network warm-up)"),
)}
#: SLeM pretext variants, fine-tuned like ``slem`` (opt-in: ``--methods scratch,slem,slem_grid222``)
PRETEXT_VARIANTS: dict[str, Method] = {m.name: m for m in (
    Method("slem_grid222", "SLeMTrainer", "slem", True, "SLeM pretext with 2x2x2 = 8 blocks instead of 4",
           ("--grid", "2x2x2")),
    Method("slem_assign100", "SLeMTrainer", "slem", True, "SLeM pretext with 100 assignments instead of 24",
           ("--num-assignments", "100")),
    Method("slem_crosscase", "SLeMTrainer", "slem", True,
           "SLeM pretext whose blocks come from different patches (no anatomy across seams)",
           ("--pretext-option", "cross_case=true")),
    Method("slem_mdrop", "SLeMTrainer", "slem", True,
           "SLeM pretext with per-block modality dropout (each channel of a block zeroed with p = 0.25)",
           ("--pretext-option", "modality_dropout=0.25")),
)}
#: baselines beyond the paper's table and the reconstructive SLeM (opt-in: ``--methods scratch,slem,mae``), kept
#: out of the default list
BASELINE_EXTRA: dict[str, Method] = {m.name: m for m in (
    Method("mae", "SLeMTrainer_fromMAE", "mae", True,
           "masked-image-modelling (MAE) pretraining, Wald et al. 2025"),
    Method("slem_recon", "SLeMTrainer_fromSLeMRecon", "slem_recon", True,
           "reconstructive SLeM: recombined, partly masked blocks in, the original sequences out (whole U-Net)"),
)}
#: pretraining at scale (opt-in): the --unlabeled pool and/or 8x the comparison's pretraining epochs
SCALE_METHODS: dict[str, Method] = {m.name: m for m in (
    Method("slem_pool", "SLeMTrainer", "slem", True, "SLeM pretrained on the training images + the --unlabeled pool",
           pool=True),
    Method("slem_x8", "SLeMTrainer", "slem", True, "SLeM pretrained for 8x the samples", pretrain_scale=8),
    Method("slem_x8_pool", "SLeMTrainer", "slem", True, "SLeM, 8x the samples, with the --unlabeled pool",
           pool=True, pretrain_scale=8),
    Method("mae_x8_pool", "SLeMTrainer_fromMAE", "mae", True, "MAE, 8x the samples, with the --unlabeled pool",
           pool=True, pretrain_scale=8),
    Method("slem_recon_x8_pool", "SLeMTrainer_fromSLeMRecon", "slem_recon", True,
           "reconstructive SLeM, 8x the samples, with the --unlabeled pool", pool=True, pretrain_scale=8),
)}
ALL_METHODS: dict[str, Method] = {**METHODS, **RECIPE_METHODS, **PRETEXT_VARIANTS, **BASELINE_EXTRA, **SCALE_METHODS}


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown or not names:
        raise UserFacingError(f"Unknown method(s) {unknown or text!r} in --methods; choose from "
                              f"{','.join(ALL_METHODS)} (comma separated).")
    return list(dict.fromkeys(names))
