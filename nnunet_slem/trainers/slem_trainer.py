"""``SLeMTrainer``: nnU-Net's trainer with the CFB network, starting from SLeM-pretrained weights.

Usage (after ``export nnUNet_extTrainer=$(nnunet-slem trainer-dir)``)::

    nnunet-slem pretrain -d 501 -c 3d_fullres
    nnUNetv2_train 501 3d_fullres 0 -tr SLeMTrainer
    nnUNetv2_predict -i IN -o OUT -d 501 -c 3d_fullres -f 0 -tr SLeMTrainer

Which checkpoint: ``$SLEM_PRETRAINED_WEIGHTS`` if set, else the pretraining command's output for the same
dataset, plans and configuration:
``$nnUNet_results/<Dataset>/SLeMPretrain__<plans>__<configuration>/checkpoint_final.pth``.

When: once, at the start of a new training (epoch 0). Not on ``--c`` with a checkpoint (the fine-tuned
weights win), not on ``--val`` and not at prediction (neither runs ``run_training``). If nnU-Net's own
``-pretrained_weights`` already replaced the weights, those are kept and the default is not loaded.

Environment variables every nnunet-slem trainer honours, for experiments such as ``nnunet-slem compare``
(all are written to the training log):

- ``SLEM_LABELED`` (+ ``SLEM_LABELED_SEED``, ``SLEM_PATIENT_REGEX``): fine-tune on a subset of the fold's
  training cases (:mod:`nnunet_slem.trainers.labeled_subset`);
- ``SLEM_EPOCHS``, ``SLEM_ITERS_PER_EPOCH``, ``SLEM_VAL_ITERS``: override the trainer class's schedule
  (nnU-Net's 1000 x 250 x 50 unless the class declares another), so all methods of a comparison share one;
  ``SLEM_SAVE_EVERY``: write ``checkpoint_latest.pth`` every N epochs instead of nnU-Net's 50, so a killed run
  loses less (:mod:`nnunet_slem.trainers.schedule`; the effective schedule goes to ``schedule.json``);
- ``SLEM_SEED``: seeds torch, numpy and Python's RNG before the network is built and again before the data
  loaders start, so every method of a comparison fine-tunes with the same decoder initialisation (where the
  architectures agree) and the same patch and augmentation draws; with ``nnUNet_n_proc_DA > 0`` nnU-Net's
  augmentation workers are seeded from it too and their batches collected in a fixed order
  (:mod:`nnunet_slem.trainers.seeded_workers`).

Fine-tuning recipe (:mod:`nnunet_slem.trainers.recipes`): every trainer, pretrained or not, fine-tunes with
nnU-Net's own recipe (SGD lr 1e-2, no warm-up, poly decay). On the label-efficiency benchmark the lr-1e-3 recipes
scored lower with the same SLeM checkpoints: upstream nnU-Net's warm-up recipe by 6.0 Dice points on the mean
of WT/TC/ET in an earlier run whose records were not kept (so it cannot be re-tested with the current
inference), the sawtooth recipe in all 6 paired seeds of the kept records (docs/baselines.md). Variants change
only the recipe (``SLeMTrainer_warmupRecipe``, ``SLeMTrainer_sawtooth``, ``SLeMTrainer_decoderWarmup``).

Only what the pretext trained is copied (the checkpoint's ``trained_prefixes``): a classification pretext
never trains the decoder, so the decoder keeps this run's seeded random initialisation, as in training
from scratch.

Every checkpoint is written atomically (a temporary sibling, then a rename): nnU-Net writes in place, and a
kill during that write would leave a ``checkpoint_latest.pth`` that ``--c`` cannot load.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule

from nnunet_slem.atomic import write_atomic_named, write_json_atomic
from nnunet_slem.checkpoint_format import (
    WEIGHTS_ENV,
    check_architecture,
    check_metadata,
    data_metadata,
    load_checkpoint,
    pretrain_output_folder,
    pretrained_prefixes,
)
from nnunet_slem.errors import UserFacingError
from nnunet_slem.network.cfb import DEFAULT_CFB, CFBConfig
from nnunet_slem.network.slem_network import SLeMNetwork, build_slem_network, cfb_config_from_plans
from nnunet_slem.trainers.labeled_subset import LABELED_ENV, subset_from_env
from nnunet_slem.trainers.recipes import NNUNET_RECIPE, Recipe, RecipeLRScheduler
from nnunet_slem.trainers.schedule import (
    SCHEDULE_FILE,
    Schedule,
    describe_schedule,
    schedule_overrides_from_env,
    schedule_record,
)
from nnunet_slem.trainers.seeded_workers import seeded_augmenters
from nnunet_slem.validation.checkpoint import require_fields

SEED_ENV = "SLEM_SEED"


def seed_everything(seed: int) -> None:
    """torch (every device), numpy's and Python's global RNGs: what nnU-Net's network init, patch sampling and
    augmentation draw from."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class SLeMTrainer(nnUNetTrainer):
    """CFB network + SLeM-pretrained initialisation; everything else is nnU-Net's default training."""

    #: CFB defaults; a configuration's ``slem_cfb`` entry in the plans overrides single fields.
    cfb_defaults: CFBConfig = DEFAULT_CFB
    #: Load the SLeM checkpoint at the start of training (False for the random-init ablation).
    use_slem_pretraining: bool = True
    #: Learning rate, warm-ups and decay (see :mod:`nnunet_slem.trainers.recipes`).
    recipe: Recipe = NNUNET_RECIPE
    #: Which pretraining the default checkpoint comes from (``nnunet-slem pretrain --pretext``).
    pretext_name: str = "slem"
    #: Epochs and iterations; ``None`` fields keep nnU-Net's, ``SLEM_EPOCHS`` etc. override any field.
    schedule: Schedule = Schedule()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._weights_at_init: torch.Tensor | None = None
        self._schedule_overrides = schedule_overrides_from_env()
        for attribute, value in self.schedule.with_overrides(self._schedule_overrides).set_fields().items():
            setattr(self, attribute, value)
        self.initial_lr = self.recipe.initial_lr
        self.seed = self._seed_from_env()

    @staticmethod
    def _seed_from_env() -> int | None:
        text = os.environ.get(SEED_ENV, "").strip()
        if not text:
            return None
        if not text.isdigit():
            raise UserFacingError(f"{SEED_ENV}={text!r} must be a non-negative integer (or unset).")
        return int(text)

    @property
    def decoder_warmup_epochs(self) -> int:
        """Epochs during which encoder and CFB stay frozen so the random decoder adapts first (0 = off)."""
        return self.recipe.phases(self.num_epochs)[0]

    def configure_optimizers(self):
        """nnU-Net's SGD with this trainer's recipe: its learning rate, warm-ups and poly decay."""
        optimizer, _ = super().configure_optimizers()
        return optimizer, RecipeLRScheduler(optimizer, self.recipe, self.num_epochs)

    @property
    def effective_schedule(self) -> dict[str, int]:
        """The schedule this run trains on (nnU-Net's values, the class's, the environment's)."""
        return {attribute: int(getattr(self, attribute)) for attribute in Schedule.__dataclass_fields__}

    def record_schedule(self) -> None:
        """Log the effective schedule and write it, with recipe and seed, to ``schedule.json`` in the fold folder."""
        schedule = self.effective_schedule
        self.print_to_log_file(f"Schedule ({type(self).__name__}): {describe_schedule(schedule)}")
        if self._schedule_overrides:
            self.print_to_log_file(f"Schedule from the environment: {self._schedule_overrides}")
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(self.output_folder) / SCHEDULE_FILE, schedule_record(
            type(self).__name__, schedule, self._schedule_overrides, self.recipe, self.seed))

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a hidden sibling, flushed to disk and renamed over ``filename``:
        a kill at any moment leaves either the previous checkpoint or the new one, never half of one."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return  # nnU-Net writes nothing then either
        write_atomic_named(filename, super().save_checkpoint)

    @property
    def cfb_config(self) -> CFBConfig:
        return cfb_config_from_plans(self.configuration_manager, self.cfb_defaults)

    # ----------------------------------------------------------------------------------------- data split
    def do_split(self) -> tuple[list[str], list[str]]:
        """nnU-Net's split, then the labelled subset ``SLEM_LABELED`` asks for (validation cases unchanged)."""
        tr_keys, val_keys = super().do_split()
        subset = subset_from_env(tr_keys)
        if subset is None:
            return tr_keys, val_keys
        self.print_to_log_file(f"{LABELED_ENV}: fine-tuning on {len(subset)} of {len(tr_keys)} training cases "
                               f"of fold {self.fold}: {subset}")
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(self.output_folder) / "labeled_subset.json", {
            "labeled": os.environ[LABELED_ENV], "seed": os.environ.get("SLEM_LABELED_SEED", "0"),
            "train": subset, "val": list(val_keys), "fold_train_cases": len(tr_keys)})
        return subset, val_keys

    def get_dataloaders(self):
        """nnU-Net's loaders; with ``SLEM_SEED`` and augmentation workers, seeded ones in a fixed order."""
        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

        if self.seed is None or get_allowed_n_proc_DA() == 0:
            return super().get_dataloaders()
        self.print_to_log_file(f"{SEED_ENV}={self.seed}: augmentation workers seeded, batches in a fixed order")
        with seeded_augmenters(self.seed):
            return super().get_dataloaders()

    def initialize(self) -> None:
        if self.seed is not None:
            seed_everything(self.seed)  # before the network is built: the same initialisation for every method
        super().initialize()
        # remember one tensor so on_train_start can tell whether -pretrained_weights replaced the weights
        self._weights_at_init = self._first_encoder_weight().clone()

    def on_train_start(self) -> None:
        self.record_schedule()
        self.print_to_log_file(f"Fine-tuning recipe ({type(self).__name__}): {self.recipe.describe(self.num_epochs)}")
        if self.seed is not None:
            self.print_to_log_file(f"{SEED_ENV}={self.seed}: torch, numpy and random seeded")
            seed_everything(self.seed + 1)  # the data loaders' draws no longer depend on the network's size
        self._load_pretrained_on_start()

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager,
                                   configuration_manager: ConfigurationManager,
                                   num_input_channels: int,
                                   num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """Also used by ``nnUNetv2_predict``: the CFB config comes only from class defaults and plans."""
        return build_slem_network(configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision,
                                  cfb_config_from_plans(configuration_manager, cls.cfb_defaults))

    # ----------------------------------------------------------------------------------------- hand-off
    @property
    def plain_network(self) -> SLeMNetwork:
        """The network without DDP / torch.compile wrappers."""
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def pretrained_weights_path(self) -> Path:
        """``$SLEM_PRETRAINED_WEIGHTS`` or the pretraining command's default output for these plans."""
        if os.environ.get(WEIGHTS_ENV):
            return Path(os.environ[WEIGHTS_ENV])
        results = os.environ.get("nnUNet_results")
        if not results:
            raise UserFacingError(
                "nnUNet_results is not set, so SLeMTrainer cannot find the SLeM pretraining checkpoint. "
                f"Set nnUNet_results, or point {WEIGHTS_ENV} at the checkpoint."
            )
        folder = pretrain_output_folder(results, self.plans_manager.dataset_name, self.plans_manager.plans_name,
                                        self.configuration_name, self.pretext_name, self.cfb_config.enabled)
        return folder / "checkpoint_final.pth"

    def _first_encoder_weight(self) -> torch.Tensor:
        return next(self.plain_network.encoder.parameters()).detach()

    def _weights_replaced_since_init(self) -> bool:
        return self._weights_at_init is not None and not torch.equal(
            self._weights_at_init, self._first_encoder_weight())

    def _check_pretrained_file(self) -> Path:
        path = self.pretrained_weights_path()
        if not path.is_file():
            options = (f" --pretext {self.pretext_name}" if self.pretext_name != "slem" else "") + (
                "" if self.cfb_config.enabled else " --no-cfb")
            raise UserFacingError(
                f"{type(self).__name__} looked for pretrained weights at {path} and found no file. Produce it with "
                f"`nnunet-slem pretrain -d {self.plans_manager.dataset_name} -c {self.configuration_name} "
                f"-p {self.plans_manager.plans_name}{options}`, point {WEIGHTS_ENV} at an existing checkpoint, or "
                "train without pretraining with -tr "
                f"{'SLeMTrainer_noPretrain' if self.cfb_config.enabled else 'SLeMTrainer_noCFB_noPretrain'}."
            )
        return path

    def _load_pretrained_on_start(self) -> None:
        load = self.use_slem_pretraining and self.current_epoch == 0
        if load and self._weights_replaced_since_init():
            self.print_to_log_file("Weights were set by -pretrained_weights; not loading the SLeM default.")
            load = False
        path = self._check_pretrained_file() if load else None  # fail before the data loaders start
        super().on_train_start()
        if path is not None:
            self.load_slem_pretrained_weights(path)

    def load_slem_pretrained_weights(self, path: Path) -> None:
        """Copy the tensors of the parts the pretext trained (never the segmentation layers), after checking
        compatibility; log how many tensors of each part were loaded and kept."""
        ckpt = load_checkpoint(path, map_location="cpu")  # digest, field types, finite weights
        require_fields(ckpt, path, metadata=("num_input_channels", "channel_names"), purpose="fine-tuning")
        meta = ckpt["metadata"]
        for msg in check_metadata(meta, data_metadata(self.plans_manager, self.configuration_manager,
                                                      self.dataset_json), str(path)):
            self.print_to_log_file("WARNING:", msg)
        saved_cfb = (meta.get("cfb_config") or {}).get("enabled", True)
        if saved_cfb != self.cfb_config.enabled:
            raise UserFacingError(self._cfb_mismatch_message(path, meta.get("pretext_name", "slem"), saved_cfb))
        network = self.plain_network
        state = network.state_dict()
        check_architecture(ckpt["network_weights"], state, str(path))
        prefixes = pretrained_prefixes(meta)
        own = unaliased_keys(state)  # nnU-Net's decoder keeps a reference to the encoder: its keys alias encoder.*
        loaded = [k for k in own if ".seg_layers." not in k and k.startswith(prefixes)]
        state.update({k: ckpt["network_weights"][k] for k in loaded})
        network.load_state_dict(state)
        per_part = tensors_per_part(own, set(loaded))
        counts = ", ".join(f"{part} {n_loaded}/{n_all}" for part, (n_loaded, n_all) in per_part.items())
        self.print_to_log_file(f"Loaded SLeM-pretrained weights from {path}; tensors loaded per part: {counts}")
        record = {"checkpoint": str(path.resolve()), "tensors_loaded": len(loaded),
                  "tensors_per_part": {part: {"loaded": n_loaded, "total": n_all}
                                       for part, (n_loaded, n_all) in per_part.items()},
                  "trained_prefixes": list(prefixes),
                  "pretrain_epochs": ckpt.get("epoch"), "metadata": {k: v for k, v in meta.items()
                                                                     if k != "pretext"}}
        write_json_atomic(Path(self.output_folder) / "slem_pretrained_from.json", record, default=str)

    def _cfb_mismatch_message(self, path: Path, pretext: str, saved_cfb: bool) -> str:
        """Name the trainer that fine-tunes this checkpoint (its pretext, with or without CFB) and the
        pretraining that would suit this trainer."""
        fix = trainer_for_checkpoint(pretext, saved_cfb, self.recipe)
        fine_tune = (f"Fine-tune it with -tr {fix}" if fix else
                     f"No nnunet-slem trainer fine-tunes a {pretext} checkpoint {'with' if saved_cfb else 'without'} "
                     "the CFB; use another checkpoint")
        pretext_option = f" --pretext {self.pretext_name}" if self.pretext_name != "slem" else ""
        return (f"{path} was pretrained {'with' if saved_cfb else 'without'} the CFB but {type(self).__name__} "
                f"builds a network {'with' if self.cfb_config.enabled else 'without'} it. {fine_tune}, or pretrain"
                f"{pretext_option} {'without' if self.cfb_config.enabled else 'with'} --no-cfb.")

    # ------------------------------------------------------------------------------------ decoder warm-up
    def on_train_epoch_start(self) -> None:
        if self.decoder_warmup_epochs > 0:
            frozen = self.current_epoch < self.decoder_warmup_epochs
            for module in (self.plain_network.encoder, self.plain_network.cfb):
                for p in module.parameters():
                    p.requires_grad_(not frozen)
            if self.current_epoch in (0, self.decoder_warmup_epochs):
                self.print_to_log_file("Encoder and CFB " + ("frozen (decoder warm-up)" if frozen else "unfrozen"))
        super().on_train_epoch_start()


def trainer_for_checkpoint(pretext: str, cfb: bool, recipe: Recipe) -> str | None:
    """The nnunet-slem trainer that fine-tunes a ``pretext`` checkpoint with (or without) the CFB: among those
    that load it, one keeping ``recipe`` if any, then the shortest name (the variant changing least), e.g.
    ``SLeMTrainer_noCFB_fromMAE`` for ``--pretext mae --no-cfb``. ``None`` when no trainer fits.

    The variants are found as subclasses, without importing ``variants`` (which imports this module): importing
    this module runs the package's ``__init__`` first, and that defines every variant before any trainer runs."""
    found, pending = [], [SLeMTrainer]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if (cls.__module__.startswith("nnunet_slem.trainers") and cls.use_slem_pretraining
                and cls.pretext_name == pretext and cls.cfb_defaults.enabled == cfb):
            found.append(cls)
    if not found:
        return None
    return min(found, key=lambda cls: (cls.recipe != recipe, len(cls.__name__), cls.__name__)).__name__


def unaliased_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The state dict's keys without those whose tensor is one an earlier key already holds (nnU-Net's decoder
    stores its encoder, so ``decoder.encoder.*`` repeats ``encoder.*``)."""
    seen, keys = set(), []
    for key, tensor in state.items():
        identity = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() == 0 or identity not in seen:
            keys.append(key)
            seen.add(identity)
    return keys


def tensors_per_part(keys: list[str], loaded: set[str]) -> dict[str, tuple[int, int]]:
    """``part -> (tensors loaded, tensors in total)`` for the network's parts: encoder, cfb, decoder (stages
    and transposed convolutions) and the segmentation layers."""
    def part(key: str) -> str:
        return "seg_layers" if ".seg_layers." in key else key.split(".", 1)[0]

    total = Counter(part(k) for k in keys)
    hits = Counter(part(k) for k in loaded)
    return {p: (hits[p], total[p]) for p in total}
