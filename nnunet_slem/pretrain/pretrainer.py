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

Only rank 0 writes (checkpoints, log, ``progress.png``, config), runs the shortcut checks
(:mod:`nnunet_slem.pretrain.shortcut_checks`) and the held-out evaluation; the other ranks wait at a barrier.
A kill at any moment leaves either the previous or the new checkpoint, and a resume makes the folder agree
with it (:mod:`nnunet_slem.pretrain.run_folder`). The settings, the optimizer and the learning-rate schedule
live in :mod:`nnunet_slem.pretrain.settings`.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn
from tqdm import tqdm

import nnunet_slem
from nnunet_slem.atomic import write_json_atomic
from nnunet_slem.checkpoint_format import FORMAT_VERSION, data_metadata, pretrain_output_folder
from nnunet_slem.errors import UserFacingError
from nnunet_slem.network.slem_network import SLeMNetwork, feature_map_sizes
from nnunet_slem.pretext.audit import AuditResult
from nnunet_slem.pretext.base import Pretext
from nnunet_slem.pretext.registry import build_pretext
from nnunet_slem.pretext.slem import SLeMPretext
from nnunet_slem.pretrain.data import EVAL_STREAM, ImageSource, PatchStream, batch_loader
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
from nnunet_slem.pretrain.probes import ProbeResult
from nnunet_slem.pretrain.progress import plot_progress
from nnunet_slem.pretrain.run_folder import RunFolder, read_resumable, restore_checkpoint, save_checkpoint
from nnunet_slem.pretrain.settings import PretrainSettings, build_optimizer, check_batch_fits, lr_at, resolve_device
from nnunet_slem.pretrain.shortcut_checks import audit_on_source, probe_on_source
from nnunet_slem.pretrain.unlabeled_pool import pool_cache_folder, pool_identity, preprocess_pool


class SLeMPretrainer:
    """Owns one pretraining run in ``$nnUNet_results/<Dataset>/SLeMPretrain__<plans>__<configuration>`` (another
    prefix for a baseline pretext, ``_noCFB`` without CFB; see ``checkpoint_format.pretrain_folder_name``).

    ``distributed``: this process's place in a data-parallel run (the process group must be initialised by
    the caller, see :mod:`nnunet_slem.pretrain.distributed`); default: a single process.
    """

    def __init__(self, dataset: str | int, configuration: str, plans: str = "nnUNetPlans",
                 device: str = "cuda", settings: PretrainSettings | None = None,
                 unlabeled_dir: str | None = None, results_root: str | None = None,
                 preprocessed_root: str | None = None, distributed: DistContext | None = None,
                 unlabeled_processes: int = 1) -> None:
        self.settings = settings or PretrainSettings()
        self.dist = distributed or DistContext()
        self.device = process_device(resolve_device(device).type, self.dist)
        self.data: PreprocessedDataset = locate_preprocessed(dataset, configuration, plans, preprocessed_root)
        results_root = results_root or os.environ.get("nnUNet_results")
        if not results_root:
            raise UserFacingError("nnUNet_results is not set. export nnUNet_results=/path/to/nnUNet_results")
        self.output_folder = pretrain_output_folder(results_root, self.data.dataset_name, plans, configuration,
                                                    self.settings.pretext_name, self.settings.cfb)
        self.run_folder = RunFolder(self.output_folder)
        self.plans_manager = PlansManager(self.data.plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.configuration = configuration
        self.unlabeled_dir = unlabeled_dir
        self.unlabeled_processes = unlabeled_processes
        self.pool = None  # the --unlabeled pool's identity, once _image_source has checked it
        self.num_channels = len(self.data.dataset_json["channel_names"])
        self.patch_size = [int(p) for p in self.configuration_manager.patch_size]
        self.batch_size = self.settings.batch_size or int(self.configuration_manager.batch_size)  # global
        self.local_batch_size = local_batch_size(self.batch_size, self.dist)
        check_batch_fits(self.local_batch_size, self.patch_size, self.num_channels, self.configuration_manager,
                         self.device)
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
            if isinstance(pretext, SLeMPretext):
                pretext.check_cross_case_batch(self.local_batch_size)
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
            "global_batch_size": self.batch_size,  # the settings' None resolved (the plans' batch size)
            "num_images": None,
        }

    # ------------------------------------------------------------------------------------------ running
    def run(self, resume: bool = False, stop_after: int | None = None) -> Path:
        """Train, or continue with ``resume``; returns the final checkpoint's path.

        ``stop_after``: leave (resumably, with ``checkpoint_latest.pth``) once this many epochs are done, e.g.
        to fit a run into a time-boxed cluster job; returns the latest checkpoint's path then.
        """
        final, latest = self.run_folder.final, self.run_folder.latest
        existing = self.existing_checkpoint(resume)
        model = self.build_model().to(self.device)
        optimizer = self._optimizer(trained_parameters(model))
        scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        if existing is not None:  # the whole checkpoint is validated before anything is changed
            self._restore(existing, model, optimizer, scaler)  # every rank: same weights, optimizer, epoch
            if self.start_epoch >= self.settings.epochs:
                self._print(f"Pretraining already finished ({self.start_epoch} epochs): {final}")
                return final
        source = self._image_source()
        meta = self.metadata(model.network)
        meta["num_images"] = len(source)
        meta["unlabeled_pool"] = self.pool.to_dict() if self.pool is not None else None
        meta["trained_prefixes"] = trained_prefixes(model)
        if self.dist.is_main:
            self.run_folder.prepare(self.start_epoch, self._config_file(meta))
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
                    save_checkpoint(latest, model, optimizer, scaler, epoch + 1, self.log, meta)
                self.dist.barrier()
                if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < self.settings.epochs:
                    self._print(f"Stopping after epoch {epoch + 1} as asked; continue with --c")
                    return latest
        if self.dist.is_main:
            save_checkpoint(final, model, optimizer, scaler, self.settings.epochs, self.log, meta)
            if latest.is_file():
                latest.unlink()
            print(f"Pretrained weights: {final}")
            if self.settings.probe_samples > 0 and isinstance(self.pretext, SLeMPretext):
                self._run_probes(model, source)
        self.dist.barrier()
        return final

    def existing_checkpoint(self, resume: bool) -> Path | None:
        """See :meth:`RunFolder.existing_checkpoint` (the ``-num_gpus`` launcher calls it before any process)."""
        return self.run_folder.existing_checkpoint(resume)

    def _print(self, message: str) -> None:
        if self.dist.is_main:
            print(message)

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return build_optimizer(params, self.settings)

    def _image_source(self) -> ImageSource:
        """All images, every case opened once (a truncated file fails here, before any output is written), with
        the pretext's extra input (:meth:`~nnunet_slem.pretext.base.Pretext.extra_input`) if it has one.

        Unlabeled images and extra inputs are prepared by rank 0 alone; the other ranks then read its caches."""
        unlabeled = None
        if self.unlabeled_dir is not None:
            self.pool = identity = pool_identity(self.unlabeled_dir, self.data.dataset_json)  # checked: one-line errors
            if self.dist.is_main:
                preprocess_pool(self.unlabeled_dir, self.data.preprocessed_base, self.plans_manager,
                                self.configuration_manager, self.data.dataset_json, self.unlabeled_processes)
            self.dist.barrier()
            unlabeled = pool_cache_folder(self.data.preprocessed_base, self.configuration_manager.data_identifier,
                                          identity)
        repair = (f"nnUNetv2_preprocess -d {dataset_id_of(self.data.dataset_name)} -c {self.configuration} "
                  f"-plans_name {self.plans_manager.plans_name}")
        extra = self.pretext.extra_input(Path(self.data.preprocessed_base),
                                         self.configuration_manager.data_identifier)
        source = ImageSource(self.data.data_folder, unlabeled, repair_hint=repair, extra=extra)
        source.check(self.num_channels, self.configuration_manager.spacing)
        if extra is not None:
            if self.dist.is_main:
                extra.ensure(source)
            self.dist.barrier()
        return source

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
        on how many samples precede it in this process's batch (data-parallel runs split the global batch).
        SLeM's ``cross_case`` option is the exception by design: its blocks come from the other patches of the
        process's batch (:meth:`~nnunet_slem.pretext.slem.SLeMPretext.sample_each`)."""
        if len(seeds) != images.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {images.shape[0]} images")
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        if isinstance(self.pretext, SLeMPretext):  # its cross_case option mixes the patches of the batch
            inputs, labels, _ = self.pretext.sample_each(images, generators)
            return inputs, labels
        pairs = [self.pretext(images[j:j + 1], g) for j, g in enumerate(generators)]
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
        """The probes (:func:`~nnunet_slem.pretrain.shortcut_checks.probe_on_source`) of the SLeM pretext's
        classifier ``model`` on ``n`` held-out patches."""
        if not isinstance(self.pretext, SLeMPretext):
            raise UserFacingError(f"The probes are for the SLeM pretext only, not {self.pretext.name!r}; "
                                  "use a SLeM pretraining checkpoint.")
        return probe_on_source(model, self.pretext, source or self._image_source(), self.patch_size,
                               self.settings.seed, self.device, n, self.local_batch_size)

    def audit(self, n_train: int = 1000, n_test: int = 300, source: ImageSource | None = None) -> AuditResult:
        """Can a classifier solve the pretext from per-block statistics (histograms, seams, texture)? (It should
        not; :func:`~nnunet_slem.pretrain.shortcut_checks.audit_on_source`.)"""
        return audit_on_source(self.pretext, source or self._image_source(), self.patch_size, self.settings.seed,
                               n_train, n_test)

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
        self.run_folder.append_log_line(line)

    def _config_file(self, meta: dict) -> dict:
        """``pretrain_config.json``: the metadata, with the pretext's config instead of its full state."""
        return {k: v for k, v in meta.items() if k != "pretext"} | {
            "pretext_config": self.pretext.state_dict()["config"], "num_classes": self.pretext.num_classes}

    def _restore(self, path: Path, model: PretextClassifier | PretextSegmenter, optimizer, scaler) -> None:
        """Weights, optimizer moments, grad scaler (in place), log, epoch and audit of the checkpoint."""
        channels = data_metadata(self.plans_manager, self.configuration_manager,
                                 self.data.dataset_json)["channel_names"]
        ckpt = read_resumable(path, model, self.pretext, self.device, self.settings.epochs, channels,
                              Path(self.data.preprocessed_base) / "dataset.json")
        state = restore_checkpoint(ckpt, model, optimizer, scaler)
        self.log, self.start_epoch, self.audit_result = state.log, state.epoch, state.audit
        self._print(f"Resuming from {path} after epoch {self.start_epoch}")

