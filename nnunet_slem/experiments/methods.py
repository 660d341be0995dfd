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

    @property
    def pretraining(self) -> tuple[str | None, bool, tuple[str, ...]]:
        """What identifies the pretraining this arm starts from: arms sharing it share the checkpoints."""
        return self.pretext, self.cfb, self.pretext_args


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
#: baselines beyond the paper's table (opt-in: ``--methods scratch,slem,mae``), kept out of the default list
BASELINE_EXTRA: dict[str, Method] = {m.name: m for m in (
    Method("mae", "SLeMTrainer_fromMAE", "mae", True,
           "masked-image-modelling (MAE) pretraining, Wald et al. 2025"),
)}
ALL_METHODS: dict[str, Method] = {**METHODS, **RECIPE_METHODS, **PRETEXT_VARIANTS, **BASELINE_EXTRA}


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown or not names:
        raise UserFacingError(f"Unknown method(s) {unknown or text!r} in --methods; choose from "
                              f"{','.join(ALL_METHODS)} (comma separated).")
    return list(dict.fromkeys(names))
