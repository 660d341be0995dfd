"""The pretraining run: nnU-Net's preprocessed data in, a checkpoint ``SLeMTrainer`` starts from out.

One epoch = ``iters_per_epoch`` steps of: a batch of random patches (background workers) -> the pretext
builds its inputs and targets on the training device (SLeM: block-recombined images and their class) ->
the pretext model (encoder + CFB + head, or the whole U-Net for dense pretexts) -> the pretext's loss.
After each epoch: the pretext's score on a fixed held-out set, a log line, ``progress.png`` and an atomically
written ``checkpoint_latest.pth``; at the end ``checkpoint_final.pth``. The pretext is SLeM unless
``PretrainSettings.pretext_name`` names a baseline (:mod:`nnunet_slem.pretext.registry`); with
``cfb=False`` the network has no CFB (the "SLeM without CFB" ablation).

Resuming is exact: sample ``i`` of step ``s`` of epoch ``e`` (its patch and its pretext label, layout and
augmentation) depends only on ``(seed, e, s, i)`` (see :mod:`nnunet_slem.pretrain.data`), so a run resumed
after epoch k replays epochs k+1.. exactly as an uninterrupted run would (on the CPU; GPU kernels may differ
in the last bits). The same keying makes a data-parallel run (:mod:`nnunet_slem.pretrain.distributed`) see
the same global batches as a single process: ``--batch-size`` is the global batch, process ``r`` of ``N``
takes its samples ``r * B/N .. (r + 1) * B/N - 1``, and DDP averages the gradients of these equal-size local
batches, which equals the gradient of the mean loss over the global batch.

Only rank 0 writes (checkpoints, log, ``progress.png``, config), runs the shortcut audit and the held-out
evaluation; the other ranks wait at a barrier. A kill at any moment leaves either the previous or the new
checkpoint (atomic writes); log lines of epochs the checkpoint does not contain are dropped on resume, and
stale temporary files are removed.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn
from tqdm import tqdm

import nnunet_slem
from nnunet_slem.atomic import write_json_atomic, write_text_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.network.slem_network import SLeMNetwork, feature_map_sizes
from nnunet_slem.pretext.audit import AuditResult, run_audit
from nnunet_slem.pretext.base import Pretext
from nnunet_slem.pretext.registry import PRETEXT_NAMES, build_pretext
from nnunet_slem.pretext.slem import SLeMPretext
from nnunet_slem.pretrain.checkpoint import (
    FORMAT_VERSION,
    data_metadata,
    load_checkpoint,
    pretrain_output_folder,
    save_atomic,
)
from nnunet_slem.pretrain.data import (
    AUDIT_STREAM,
    EVAL_STREAM,
    ImageSource,
    PatchStream,
    batch_loader,
    preprocess_unlabeled,
)
from nnunet_slem.pretrain.distributed import (
    DistContext,
    local_batch_size,
    process_device,
    trained_parameters,
    wrap_ddp,
)
from nnunet_slem.pretrain.feeder import DeviceFeeder
from nnunet_slem.pretrain.locate import PreprocessedDataset, dataset_id_of, locate_preprocessed
from nnunet_slem.pretrain.model import HEAD_SEED_OFFSET, PretextClassifier, PretextSegmenter, trained_prefixes
from nnunet_slem.pretrain.probes import ProbeResult, run_probes
from nnunet_slem.pretrain.progress import plot_progress

LOG_NAME = "pretrain_log.txt"
_EPOCH_LINE = re.compile(r"^\S+ \S+ epoch (\d+)/\d+ ")


@dataclass
class PretrainSettings:
    """Everything a pretraining run depends on besides the data (stored in the checkpoint)."""

    epochs: int = 100
    iters_per_epoch: int = 250
    batch_size: int | None = None  # the global batch (over all processes); None: the plans' batch size
    optimizer: str = "adamw"  # or "sgd" (nnU-Net's: momentum 0.99, nesterov)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # or "poly"
    warmup_iters: int = 0
    seed: int = 0
    num_workers: int | None = None  # per process; None: min(8, (cpus - 1) // processes) on CUDA, 0 on CPU
    compile: bool = False
    eval_batches: int = 4
    audit_samples: int = 600  # histogram-classifier training samples before pretraining; 0 skips the audit
    probe_samples: int = 128  # held-out samples per probe of the final network (SLeM pretext); 0 skips the probes
    pretext: dict = field(default_factory=dict)  # the pretext's options (its config fields)
    pretext_name: str = "slem"  # or a baseline: "taleb", "supervoxel", "mae"
    cfb: bool = True  # False: pretrain the plain nnU-Net network (no CFB)
    # dtype of the patches the loader hands over; "auto": float16 on CUDA (half the bytes through shared and
    # pinned memory and to the GPU; the network computes in float16 under AMP anyway), float32 otherwise and
    # whenever the pretext carries integer maps (supervoxel ids) along
    transfer_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise UserFacingError(f"Unknown --optimizer {self.optimizer!r}; use 'sgd' or 'adamw'.")
        if self.schedule not in ("cosine", "poly"):
            raise UserFacingError(f"Unknown --schedule {self.schedule!r}; use 'cosine' or 'poly'.")
        for name in ("epochs", "iters_per_epoch"):
            if getattr(self, name) < 1:
                raise UserFacingError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserFacingError("--batch-size must be at least 1.")
        if self.seed < 0:
            raise UserFacingError("--seed must be 0 or larger.")
        if self.probe_samples < 0:
            raise UserFacingError("--probe-samples must be 0 (no probes) or larger.")
        if self.transfer_dtype not in ("auto", "float16", "float32"):
            raise UserFacingError(f"Unknown transfer dtype {self.transfer_dtype!r}; use auto, float16 or float32.")
        if self.pretext_name not in PRETEXT_NAMES:
            raise UserFacingError(f"Unknown --pretext {self.pretext_name!r}; choose one of {', '.join(PRETEXT_NAMES)}.")


def lr_at(step: int, total: int, settings: PretrainSettings) -> float:
    """Learning rate at an optimizer step: optional linear warm-up, then cosine or nnU-Net's poly decay."""
    if step < settings.warmup_iters:
        return settings.lr * (step + 1) / settings.warmup_iters
    progress = min(1.0, (step - settings.warmup_iters) / max(1, total - settings.warmup_iters))
    if settings.schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return settings.lr * (1 - progress) ** 0.9


class SLeMPretrainer:
    """Owns one pretraining run in ``$nnUNet_results/<Dataset>/SLeMPretrain__<plans>__<configuration>`` (another
    prefix for a baseline pretext, ``_noCFB`` without CFB; see ``checkpoint.pretrain_folder_name``).

    ``distributed``: this process's place in a data-parallel run (the process group must be initialised by
    the caller, see :mod:`nnunet_slem.pretrain.distributed`); default: a single process.
    """

    def __init__(self, dataset: str | int, configuration: str, plans: str = "nnUNetPlans",
                 device: str = "cuda", settings: PretrainSettings | None = None,
                 unlabeled_dir: str | None = None, results_root: str | None = None,
                 preprocessed_root: str | None = None, distributed: DistContext | None = None) -> None:
        self.settings = settings or PretrainSettings()
        self.dist = distributed or DistContext()
        self.device = process_device(_resolve_device(device).type, self.dist)
        self.data: PreprocessedDataset = locate_preprocessed(dataset, configuration, plans, preprocessed_root)
        results_root = results_root or os.environ.get("nnUNet_results")
        if not results_root:
            raise UserFacingError("nnUNet_results is not set. export nnUNet_results=/path/to/nnUNet_results")
        self.output_folder = pretrain_output_folder(results_root, self.data.dataset_name, plans, configuration,
                                                    self.settings.pretext_name, self.settings.cfb)
        self.plans_manager = PlansManager(self.data.plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.configuration = configuration
        self.unlabeled_dir = unlabeled_dir
        self.num_channels = len(self.data.dataset_json["channel_names"])
        self.patch_size = [int(p) for p in self.configuration_manager.patch_size]
        self.batch_size = self.settings.batch_size or int(self.configuration_manager.batch_size)  # global
        self.local_batch_size = local_batch_size(self.batch_size, self.dist)
        self.pretext = self._build_pretext()
        self.log: dict[str, list] = {k: [] for k in ("epoch", "loss", "train_acc", "eval_acc", "lr",
                                                        "epoch_time_s", "samples_per_s")}
        self.start_epoch = 0
        self.audit_result: dict | None = None

    # ---------------------------------------------------------------------------------------- building
    def _build_pretext(self) -> Pretext:
        try:
            pretext = build_pretext(self.settings.pretext_name, self.settings.pretext, self.num_channels,
                                    len(self.patch_size), self.settings.seed)
            pretext.check_patch(tuple(self.patch_size))
        except (ValueError, TypeError) as e:
            raise UserFacingError(f"{e} (dataset {self.data.dataset_name}, configuration {self.configuration})") from e
        return pretext

    def cfb_config(self):
        """The fine-tuning trainer's CFB settings (plans' ``slem_cfb`` included), switched off for ``cfb=False``."""
        import dataclasses

        from nnunet_slem.network.cfb import DEFAULT_CFB
        from nnunet_slem.network.slem_network import cfb_config_from_plans

        config = cfb_config_from_plans(self.configuration_manager, DEFAULT_CFB)
        return config if self.settings.cfb else dataclasses.replace(config, enabled=False)

    def build_model(self) -> PretextClassifier | PretextSegmenter:
        """The network fine-tuning builds from these plans (``build_slem_network``, as ``SLeMTrainer`` does), with
        the pretext's head; dense pretexts use the U-Net's own output layers with ``num_classes`` channels."""
        from nnunet_slem.network.slem_network import build_slem_network

        torch.manual_seed(self.settings.seed)
        if self.pretext.kind == "dense":
            network = build_slem_network(self.configuration_manager, self.num_channels, self.pretext.num_classes,
                                         False, self.cfb_config())
            return PretextSegmenter(network)
        label_manager = self.plans_manager.get_label_manager(self.data.dataset_json)
        network = build_slem_network(self.configuration_manager, self.num_channels,
                                     label_manager.num_segmentation_heads, True, self.cfb_config())
        strides = self.configuration_manager.network_arch_init_kwargs["strides"]
        bottleneck = feature_map_sizes(self.patch_size, strides)[-1]
        # the head's own seed: the CFB draws from the RNG before it, and the CFB and no-CFB arms of a comparison
        # must start from the same head
        torch.manual_seed(self.settings.seed + HEAD_SEED_OFFSET)
        return PretextClassifier(network, self.pretext.num_classes, bottleneck)

    def metadata(self, network: SLeMNetwork) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "nnunet_slem_version": nnunet_slem.__version__,
            "nnunetv2_version": importlib.metadata.version("nnunetv2"),
            "torch_version": str(torch.__version__),
            "plans_name": self.plans_manager.plans_name,
            "configuration": self.configuration,
            **data_metadata(self.plans_manager, self.configuration_manager, self.data.dataset_json),
            "architecture": self.configuration_manager.network_arch_class_name,
            "cfb_config": self.cfb_config().to_dict(),
            "cfb_stage": network.cfb_stage,
            "pretext_name": self.pretext.name,
            "pretext": self.pretext.state_dict(),
            "settings": asdict(self.settings),
            "num_images": None,
        }

    # ------------------------------------------------------------------------------------------ running
    def run(self, resume: bool = False, stop_after: int | None = None) -> Path:
        """Train, or continue with ``resume``; returns the final checkpoint's path.

        ``stop_after``: leave (resumably, with ``checkpoint_latest.pth``) once this many epochs are done, e.g.
        to fit a run into a time-boxed cluster job; returns the latest checkpoint's path then.
        """
        final = self.output_folder / "checkpoint_final.pth"
        latest = self.output_folder / "checkpoint_latest.pth"
        existing = self.existing_checkpoint(resume)
        model = self.build_model().to(self.device)
        optimizer = self._optimizer(trained_parameters(model))
        scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        if existing is not None:
            self._restore(existing, model, optimizer, scaler)  # every rank: same weights, optimizer, epoch
            if self.start_epoch >= self.settings.epochs:
                self._print(f"Pretraining already finished ({self.start_epoch} epochs): {final}")
                return final
        source = self._image_source()
        meta = self.metadata(model.network)
        meta["num_images"] = len(source)
        meta["trained_prefixes"] = trained_prefixes(model)
        if self.dist.is_main:
            self._prepare_output_folder(meta)
            if self.settings.audit_samples > 0 and self.audit_result is None and isinstance(self.pretext,
                                                                                             SLeMPretext):
                self.audit_result = self._run_audit(source)
        meta["audit"] = self.audit_result
        step_model = torch.compile(model) if self.settings.compile else model
        train_model = wrap_ddp(model, step_model, self.dist, self.device) if self.dist.is_distributed else step_model
        eval_set = self._eval_set(source) if self.dist.is_main else []
        stream = self._stream(source, self.start_epoch)
        total_steps = self.settings.epochs * self.settings.iters_per_epoch
        # the loader's workers start once for all epochs; the feeder keeps the next batch on its way to the device
        with DeviceFeeder(self._loader(source, self.start_epoch, stream), self.device) as batches:
            self.dist.barrier()
            for epoch in range(self.start_epoch, self.settings.epochs):
                stats = self._train_epoch(epoch, train_model, optimizer, scaler, stream, batches, total_steps)
                if self.dist.is_main:
                    stats["eval_acc"] = self.evaluate(step_model, eval_set)
                    self._log_epoch(epoch, stats)  # before the checkpoint: a resume drops lines it does not cover
                    self._save(latest, model, optimizer, scaler, epoch + 1, meta)
                self.dist.barrier()
                if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < self.settings.epochs:
                    self._print(f"Stopping after epoch {epoch + 1} as asked; continue with --resume")
                    return latest
        if self.dist.is_main:
            self._save(final, model, optimizer, scaler, self.settings.epochs, meta)
            if latest.is_file():
                latest.unlink()
            print(f"Pretrained weights: {final}")
            if self.settings.probe_samples > 0 and isinstance(self.pretext, SLeMPretext):
                self._run_probes(model, source)
        self.dist.barrier()
        return final

    def existing_checkpoint(self, resume: bool) -> Path | None:
        """The checkpoint to resume from (latest, else final), or ``None``; refuses to overwrite without
        ``resume``. Cheap: the ``-num_gpus`` launcher calls it before starting any process."""
        final = self.output_folder / "checkpoint_final.pth"
        latest = self.output_folder / "checkpoint_latest.pth"
        existing = latest if latest.is_file() else final if final.is_file() else None
        if existing is not None and not resume:
            raise UserFacingError(
                f"{existing} exists already. Add --resume to continue that run, or move the folder "
                f"{self.output_folder} away to start over."
            )
        return existing

    def _print(self, message: str) -> None:
        if self.dist.is_main:
            print(message)

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.settings.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        return torch.optim.SGD(params, lr=self.settings.lr, momentum=0.99, nesterov=True,
                               weight_decay=self.settings.weight_decay)

    def _image_source(self) -> ImageSource:
        """All images, every case opened once (a truncated file fails here, before any output is written).

        Unlabeled images are preprocessed by rank 0 alone; the other ranks then read its cache."""
        unlabeled = None
        if self.unlabeled_dir is not None:
            cache = Path(self.data.preprocessed_base) / f"slem_unlabeled__{self.configuration_manager.data_identifier}"
            if self.dist.is_main:
                preprocess_unlabeled(self.unlabeled_dir, cache, self.plans_manager, self.configuration_manager,
                                     self.data.dataset_json)
            self.dist.barrier()
            unlabeled = cache
        repair = (f"nnUNetv2_preprocess -d {dataset_id_of(self.data.dataset_name)} -c {self.configuration} "
                  f"-plans_name {self.plans_manager.plans_name}")
        source = ImageSource(self.data.data_folder, unlabeled, repair_hint=repair)
        source.check(self.num_channels)
        if self.pretext.extra_channels:
            self._attach_supervoxels(source)
        return source

    def _attach_supervoxels(self, source: ImageSource) -> None:
        """Supervoxels of every case, computed once (rank 0) and cached beside the preprocessed data; patches
        then carry the supervoxel map as one more channel."""
        import functools

        from nnunet_slem.pretext.supervoxel import SupervoxelCache, cache_folder_name

        folder = Path(self.data.preprocessed_base) / cache_folder_name(self.configuration_manager.data_identifier)
        cache = SupervoxelCache(folder, self.pretext.config)
        if self.dist.is_main:
            cache.ensure(source)
        self.dist.barrier()
        source.extra = functools.partial(cache.load, source)

    def _stream(self, source: ImageSource, first_epoch: int) -> PatchStream:
        """This process's share (samples ``rank * b .. (rank + 1) * b - 1``) of every global batch of the epochs
        ``first_epoch ..`` to the end of the run."""
        return PatchStream(source, self.patch_size, self.local_batch_size, self.settings.seed, first_epoch,
                           first_index=self.dist.rank * self.local_batch_size, steps=self.settings.iters_per_epoch,
                           epochs=self.settings.epochs - first_epoch, dtype=self.transfer_dtype())

    def transfer_dtype(self) -> str:
        """What the loader hands over (see ``PretrainSettings.transfer_dtype``); cast to float32 on the device."""
        if self.settings.transfer_dtype != "auto":
            return self.settings.transfer_dtype
        return "float16" if self.device.type == "cuda" and not self.pretext.extra_channels else "float32"

    def loader_workers(self) -> int:
        """Loader processes per training process: ``--num-workers``, else the cores left over per GPU (max 8)."""
        if self.settings.num_workers is not None:
            return self.settings.num_workers
        cpus = os.cpu_count() or 1
        return min(8, max(0, (cpus - 1) // self.dist.world_size)) if self.device.type == "cuda" else 0

    def _loader(self, source: ImageSource, epoch: int, stream: PatchStream | None = None) -> Iterator[torch.Tensor]:
        stream = stream or self._stream(source, epoch)
        return batch_loader(stream, self.loader_workers(), pin_memory=self.device.type == "cuda")

    def pretext_batch(self, images: torch.Tensor, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pretext inputs and targets, sample ``j`` drawn with its own generator seeded ``seeds[j]``.

        One generator per sample, not one per batch: a sample's label, layout and augmentation must not depend
        on how many samples precede it in this process's batch (data-parallel runs split the global batch)."""
        if len(seeds) != images.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {images.shape[0]} images")
        pairs = [self.pretext(images[j:j + 1], torch.Generator().manual_seed(int(seed)))
                 for j, seed in enumerate(seeds)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    def _train_epoch(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, scaler,
                     stream: PatchStream, batches: DeviceFeeder, total_steps: int) -> dict:
        model.train()
        waited_before = batches.wait_s
        torch.manual_seed(self.settings.seed + epoch)
        loss_sum, correct, seen = torch.zeros((), device=self.device), torch.zeros((), device=self.device), 0
        n_images = 0
        start = time.perf_counter()
        bar = tqdm(range(self.settings.iters_per_epoch), desc=f"epoch {epoch + 1}/{self.settings.epochs}",
                   leave=False, dynamic_ncols=True, disable=not self.dist.is_main)
        for i in bar:
            step = epoch * self.settings.iters_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, self.settings)
            images = next(batches)
            loss, score_sum, count = self.train_step(model, optimizer, scaler, images,
                                                     stream.pretext_seeds(i, epoch))
            loss_sum += loss
            correct += score_sum
            seen += count
            n_images += images.shape[0]
            if self.dist.is_main and (i % 10 == 0 or i == self.settings.iters_per_epoch - 1):
                bar.set_postfix(loss=f"{loss.item():.3f}", score=f"{(correct / max(1, seen)).item():.3f}")
        loss_sum, correct, seen, n_images = self.dist.sum([loss_sum, correct, seen, n_images], self.device)
        elapsed = time.perf_counter() - start
        return {"loss": loss_sum / (self.settings.iters_per_epoch * self.dist.world_size),
                "train_acc": correct / max(1, seen), "lr": optimizer.param_groups[0]["lr"],
                "epoch_time_s": elapsed, "samples_per_s": n_images / elapsed,
                "data_wait_s": batches.wait_s - waited_before}

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler, images: torch.Tensor,
                   seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step on a (local) batch; ``seeds``: one pretext seed per sample
        (:meth:`pretext_batch`). Returns the local mean loss and the pretext score's sum and count."""
        inputs, targets = self.pretext_batch(images, seeds)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=scaler is not None):
            output = model(inputs)
        loss = self.pretext.loss(output.float(), targets)
        # with DDP, backward() averages the gradients over the processes before clipping sees them
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 12)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 12)
            optimizer.step()
        score_sum, count = self.pretext.score(output.detach().float(), targets)
        return loss.detach(), score_sum, count

    def _eval_set(self, source: ImageSource) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed shuffled batches (own sample stream, never trained on as such) for a comparable accuracy per
        epoch: ``eval_batches`` global batches, the same whatever the process count, held as chunks of the
        local batch size so that evaluating costs no more memory than a training step."""
        stream = PatchStream(source, self.patch_size, self.batch_size, self.settings.seed, stream=EVAL_STREAM)
        chunks = []
        for step in range(self.settings.eval_batches):
            images = stream.batch(step).to(self.device)
            inputs, targets = self.pretext_batch(images, stream.pretext_seeds(step))
            chunk = self.local_batch_size * (len(inputs) // len(images))  # dense pretexts: (support, query) pairs
            chunks += list(zip(inputs.split(chunk), targets.split(chunk)))
        return chunks

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_set: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """The pretext's score (accuracy for classification pretexts) over the fixed held-out set."""
        model.eval()
        total, count = 0.0, 0
        for inputs, targets in eval_set:
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                output = model(inputs)
            score_sum, n = self.pretext.score(output.float(), targets)
            total += float(score_sum)
            count += n
        return total / max(1, count)

    def _run_audit(self, source: ImageSource) -> dict:
        print("Shortcut audit: can block statistics (histograms, seams, texture) alone solve the pretext?")
        result = self.audit(self.settings.audit_samples, max(1, self.settings.audit_samples // 2), source)
        print("  " + result.summary())
        self._append_log_line("audit: " + result.summary())
        return result.to_dict()

    def _run_probes(self, model: nn.Module, source: ImageSource) -> ProbeResult:
        """Probe the final network for shortcuts (seams, other cases' blocks, background) and write
        ``probes.json``; the findings go to the log too."""
        print("Probes: does the pretrained network solve the pretext from seams, case consistency or background?")
        result = self.probe(model, self.settings.probe_samples, source)
        write_json_atomic(self.output_folder / "probes.json", result.to_dict())
        for line in [result.summary(), *result.findings()]:
            print("  " + line)
            self._append_log_line("probes: " + line)
        return result

    def probe(self, model: nn.Module, n: int, source: ImageSource | None = None) -> ProbeResult:
        """:func:`~nnunet_slem.pretrain.probes.run_probes` on ``n`` held-out patches (the evaluation set's sample
        stream, never trained on) of the SLeM pretext; ``model`` is the pretext classifier."""
        if not isinstance(self.pretext, SLeMPretext):
            raise UserFacingError(f"The probes are for the SLeM pretext only, not {self.pretext.name!r}; "
                                  "use a SLeM pretraining checkpoint.")
        stream = iter(PatchStream(source or self._image_source(), self.patch_size, 1, self.settings.seed,
                                  stream=EVAL_STREAM))

        def sample_images(k: int) -> torch.Tensor:
            return torch.cat([next(stream) for _ in range(k)]).to(self.device)

        def classify(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                return model(x).float()

        model.eval()
        return run_probes(classify, self.pretext, sample_images, n, seed=self.settings.seed,
                          batch_size=max(self.local_batch_size, self.pretext.num_blocks))

    def audit(self, n_train: int = 1000, n_test: int = 300, source: ImageSource | None = None) -> AuditResult:
        """Can a histogram classifier solve the pretext from per-block intensity statistics? (It should not.)"""
        stream = iter(PatchStream(source or self._image_source(), self.patch_size, 1, self.settings.seed,
                                  stream=AUDIT_STREAM))

        def sample_images(n: int) -> torch.Tensor:
            return torch.cat([next(stream) for _ in range(n)])

        return run_audit(self.pretext, sample_images, n_train=n_train, n_test=n_test, seed=self.settings.seed,
                         batch_size=8)

    # ---------------------------------------------------------------------------------- logging, saving
    def _log_epoch(self, epoch: int, stats: dict) -> None:
        self.log["epoch"].append(epoch)
        for key in ("loss", "train_acc", "eval_acc", "lr", "epoch_time_s", "samples_per_s"):
            self.log[key].append(float(stats[key]))
        chance = self.pretext.chance
        metric = "acc" if self.pretext.metric_name == "accuracy" else self.pretext.metric_name
        line = (f"epoch {epoch + 1}/{self.settings.epochs}  loss {stats['loss']:.4f}  train {metric} "
                f"{stats['train_acc']:.3f}  eval {metric} {stats['eval_acc']:.3f}"
                + (f" (chance {chance:.3f})" if chance is not None else "")
                + f"  lr {stats['lr']:.2e}  {stats['epoch_time_s']:.1f} s  {stats['samples_per_s']:.1f} samples/s"
                + f"  data wait {stats['data_wait_s'] / stats['epoch_time_s']:.0%}")
        print(line)
        self._append_log_line(line)
        plot_progress(self.log, chance, self.output_folder / "progress.png",
                      audit_accuracy=self.audit_result["accuracy"] if self.audit_result else None,
                      metric=self.pretext.metric_name, title=f"{self.output_folder.name.split('__')[0]}")

    def _append_log_line(self, line: str) -> None:
        with open(self.output_folder / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

    def _prepare_output_folder(self, meta: dict) -> None:
        """Rank 0, before training: the folder, no stale temporaries, a log matching the checkpoint, config."""
        self.output_folder.mkdir(parents=True, exist_ok=True)
        for stale in self.output_folder.glob(".*.tmp"):  # left by a kill during an atomic write
            stale.unlink(missing_ok=True)
        self._trim_log()
        self._write_settings(meta)

    def _trim_log(self) -> None:
        """Make the text log agree with the checkpoint being resumed (``self.start_epoch`` epochs).

        An epoch's line is written just before its checkpoint, so a kill in between leaves a line for an epoch
        the checkpoint lacks: drop lines of epochs after ``start_epoch``. Without a checkpoint everything in
        the log belongs to an attempt that saved nothing (the audit reruns too): start it afresh. The file is
        rewritten only when something is dropped."""
        path = self.output_folder / LOG_NAME
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [] if self.start_epoch == 0 else [
            line for line in lines if not ((m := _EPOCH_LINE.match(line)) and int(m[1]) > self.start_epoch)]
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(kept))

    def _write_settings(self, meta: dict) -> None:
        write_json_atomic(self.output_folder / "pretrain_config.json", {
            k: v for k, v in meta.items() if k != "pretext"} | {
            "pretext_config": self.pretext.state_dict()["config"], "num_classes": self.pretext.num_classes},
            default=str)

    def _save(self, path: Path, model: PretextClassifier, optimizer, scaler, epoch: int, meta: dict) -> None:
        save_atomic({
            "network_weights": model.network.state_dict(),
            "head_weights": model.head.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "logging": self.log,
            "metadata": meta,
        }, path)

    def _restore(self, path: Path, model: PretextClassifier, optimizer, scaler) -> None:
        """Weights, optimizer moments, grad scaler, log and epoch. No RNG state is needed: every sample is
        seeded by its own (seed, epoch, step, index) key."""
        try:
            ckpt = load_checkpoint(path, map_location=self.device)
        except UserFacingError as e:
            cause = e.__cause__ or e
            raise UserFacingError(
                f"Cannot resume from {path} ({type(cause).__name__}: {cause}). Checkpoints are written atomically, "
                "so the file was damaged or replaced afterwards. Move it away and run the same command again "
                "(--resume continues from the other checkpoint if one is left, else the run starts over)."
            ) from e
        saved = ckpt["metadata"]["pretext"]
        if saved != self.pretext.state_dict() or ckpt["metadata"].get("pretext_name", "slem") != self.pretext.name:
            raise UserFacingError(
                f"{path} was written with a different pretext or pretext configuration (e.g. grid, set or seed) than "
                "this command asks for. Resume with the original pretext options, or start a new run in "
                "another results folder."
            )
        model.network.load_state_dict(ckpt["network_weights"])
        model.head.load_state_dict(ckpt["head_weights"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        if scaler is not None and ckpt.get("grad_scaler_state"):
            scaler.load_state_dict(ckpt["grad_scaler_state"])
        self.log = {k: list(v) for k, v in ckpt["logging"].items()}
        self.start_epoch = int(ckpt["epoch"])
        self.audit_result = ckpt["metadata"].get("audit")
        self._print(f"Resuming from {path} after epoch {self.start_epoch}")


def _resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("-device cuda requested but CUDA is not available here. Use -device cpu.")
    if device not in ("cuda", "cpu", "mps"):
        raise UserFacingError(f"Unknown -device {device!r}; use cuda, cpu or mps.")
    return torch.device(device)
