"""The SLeM pretraining run: nnU-Net's preprocessed data in, a checkpoint ``SLeMTrainer`` starts from out.

One epoch = ``iters_per_epoch`` steps of: a batch of random patches (background workers) -> the pretext
builds block-shuffled images and labels on the training device -> encoder + CFB + head -> cross-entropy.
After each epoch: pretext accuracy on a fixed held-out set of shuffled patches, a log line, ``progress.png``
and an atomically written ``checkpoint_latest.pth``; at the end ``checkpoint_final.pth``.

Resuming is exact: every epoch re-seeds its patch stream and pretext generator from ``(seed, epoch)``, so a
run resumed after epoch k replays epochs k+1.. exactly as an uninterrupted run would (on the CPU; GPU
kernels may differ in the last bits).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn
from tqdm import tqdm

import nnunet_slem
from nnunet_slem.atomic import write_json_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.network.slem_network import SLeMNetwork, feature_map_sizes
from nnunet_slem.pretext.audit import AuditResult, run_audit
from nnunet_slem.pretext.slem import SLeMPretext, SLeMPretextConfig, default_grid
from nnunet_slem.pretrain.checkpoint import (
    FORMAT_VERSION,
    data_metadata,
    load_checkpoint,
    pretrain_output_folder,
    save_atomic,
)
from nnunet_slem.pretrain.data import ImageSource, PatchStream, batch_loader, preprocess_unlabeled
from nnunet_slem.pretrain.locate import PreprocessedDataset, locate_preprocessed
from nnunet_slem.pretrain.model import PretextClassifier
from nnunet_slem.pretrain.progress import plot_progress


@dataclass
class PretrainSettings:
    """Everything a pretraining run depends on besides the data (stored in the checkpoint)."""

    epochs: int = 100
    iters_per_epoch: int = 250
    batch_size: int | None = None  # None: the plans' batch size
    optimizer: str = "adamw"  # or "sgd" (nnU-Net's: momentum 0.99, nesterov)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # or "poly"
    warmup_iters: int = 0
    seed: int = 0
    num_workers: int | None = None  # None: min(8, cpus - 1) on CUDA, 0 on CPU
    compile: bool = False
    eval_batches: int = 4
    audit_samples: int = 600  # histogram-classifier training samples before pretraining; 0 skips the audit
    pretext: dict = field(default_factory=dict)

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


def lr_at(step: int, total: int, settings: PretrainSettings) -> float:
    """Learning rate at an optimizer step: optional linear warm-up, then cosine or nnU-Net's poly decay."""
    if step < settings.warmup_iters:
        return settings.lr * (step + 1) / settings.warmup_iters
    progress = min(1.0, (step - settings.warmup_iters) / max(1, total - settings.warmup_iters))
    if settings.schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return settings.lr * (1 - progress) ** 0.9


class SLeMPretrainer:
    """Owns one pretraining run in ``$nnUNet_results/<Dataset>/SLeMPretrain__<plans>__<configuration>``."""

    def __init__(self, dataset: str | int, configuration: str, plans: str = "nnUNetPlans",
                 device: str = "cuda", settings: PretrainSettings | None = None,
                 unlabeled_dir: str | None = None, results_root: str | None = None,
                 preprocessed_root: str | None = None) -> None:
        self.settings = settings or PretrainSettings()
        self.device = _resolve_device(device)
        self.data: PreprocessedDataset = locate_preprocessed(dataset, configuration, plans, preprocessed_root)
        results_root = results_root or os.environ.get("nnUNet_results")
        if not results_root:
            raise UserFacingError("nnUNet_results is not set. export nnUNet_results=/path/to/nnUNet_results")
        self.output_folder = pretrain_output_folder(results_root, self.data.dataset_name, plans, configuration)
        self.plans_manager = PlansManager(self.data.plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.configuration = configuration
        self.unlabeled_dir = unlabeled_dir
        self.num_channels = len(self.data.dataset_json["channel_names"])
        self.patch_size = [int(p) for p in self.configuration_manager.patch_size]
        self.batch_size = self.settings.batch_size or int(self.configuration_manager.batch_size)
        self.pretext = self._build_pretext()
        self.log: dict[str, list] = {k: [] for k in ("epoch", "loss", "train_acc", "eval_acc", "lr",
                                                        "epoch_time_s", "samples_per_s")}
        self.start_epoch = 0
        self.audit_result: dict | None = None

    # ---------------------------------------------------------------------------------------- building
    def _build_pretext(self) -> SLeMPretext:
        defaults = {"seed": self.settings.seed, "grid": list(default_grid(len(self.patch_size)))}
        config = SLeMPretextConfig.from_dict({**defaults, **self.settings.pretext})
        try:
            pretext = SLeMPretext(config, num_modalities=self.num_channels, spatial_dims=len(self.patch_size))
            pretext.sample_layouts(self.patch_size, 1, torch.Generator().manual_seed(0))  # patch fits the grid?
        except ValueError as e:
            raise UserFacingError(f"{e} (dataset {self.data.dataset_name}, configuration {self.configuration})") from e
        return pretext

    def build_model(self) -> PretextClassifier:
        from nnunet_slem.trainers.slem_trainer import SLeMTrainer  # the network fine-tuning will build

        label_manager = self.plans_manager.get_label_manager(self.data.dataset_json)
        torch.manual_seed(self.settings.seed)
        network = SLeMTrainer.build_network_architecture(
            self.plans_manager, self.configuration_manager, self.num_channels,
            label_manager.num_segmentation_heads, True)
        strides = self.configuration_manager.network_arch_init_kwargs["strides"]
        bottleneck = feature_map_sizes(self.patch_size, strides)[-1]
        return PretextClassifier(network, self.pretext.num_classes, bottleneck)

    def metadata(self, network: SLeMNetwork) -> dict:
        from nnunet_slem.network.slem_network import cfb_config_from_plans
        from nnunet_slem.trainers.slem_trainer import SLeMTrainer

        return {
            "format_version": FORMAT_VERSION,
            "nnunet_slem_version": nnunet_slem.__version__,
            "nnunetv2_version": importlib.metadata.version("nnunetv2"),
            "torch_version": str(torch.__version__),
            "plans_name": self.plans_manager.plans_name,
            "configuration": self.configuration,
            **data_metadata(self.plans_manager, self.configuration_manager, self.data.dataset_json),
            "architecture": self.configuration_manager.network_arch_class_name,
            "cfb_config": cfb_config_from_plans(self.configuration_manager, SLeMTrainer.cfb_defaults).to_dict(),
            "cfb_stage": network.cfb_stage,
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
        existing = latest if latest.is_file() else final if final.is_file() else None
        if existing is not None and not resume:
            raise UserFacingError(
                f"{existing} exists already. Add --resume to continue that run, or move the folder "
                f"{self.output_folder} away to start over."
            )
        model = self.build_model().to(self.device)
        trainable = [p for m in (model.network.encoder, model.network.cfb, model.head) for p in m.parameters()]
        trainable = list({id(p): p for p in trainable}.values())
        optimizer = self._optimizer(trainable)
        scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        if existing is not None:
            self._restore(existing, model, optimizer, scaler)
            if self.start_epoch >= self.settings.epochs:
                print(f"Pretraining already finished ({self.start_epoch} epochs): {final}")
                return final
        self.output_folder.mkdir(parents=True, exist_ok=True)
        source = self._image_source()
        meta = self.metadata(model.network)
        meta["num_images"] = len(source)
        self._write_settings(meta)
        if self.settings.audit_samples > 0 and self.audit_result is None:
            self.audit_result = self._run_audit(source)
        meta["audit"] = self.audit_result
        step_model = torch.compile(model) if self.settings.compile else model
        eval_set = self._eval_set(source)
        total_steps = self.settings.epochs * self.settings.iters_per_epoch
        for epoch in range(self.start_epoch, self.settings.epochs):
            stats = self._train_epoch(epoch, step_model, optimizer, scaler, source, total_steps)
            stats["eval_acc"] = self.evaluate(step_model, eval_set)
            self._log_epoch(epoch, stats)
            self._save(latest, model, optimizer, scaler, epoch + 1, meta)
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < self.settings.epochs:
                print(f"Stopping after epoch {epoch + 1} as asked; continue with --resume")
                return latest
        self._save(final, model, optimizer, scaler, self.settings.epochs, meta)
        if latest.is_file():
            latest.unlink()
        print(f"Pretrained weights: {final}")
        return final

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.settings.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        return torch.optim.SGD(params, lr=self.settings.lr, momentum=0.99, nesterov=True,
                               weight_decay=self.settings.weight_decay)

    def _image_source(self) -> ImageSource:
        unlabeled = None
        if self.unlabeled_dir is not None:
            cache = Path(self.data.preprocessed_base) / f"slem_unlabeled__{self.configuration_manager.data_identifier}"
            unlabeled = preprocess_unlabeled(self.unlabeled_dir, cache, self.plans_manager,
                                             self.configuration_manager, self.data.dataset_json)
        return ImageSource(self.data.data_folder, unlabeled)

    def _loader(self, source: ImageSource, epoch: int):
        workers = self.settings.num_workers
        if workers is None:
            workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if self.device.type == "cuda" else 0
        stream = PatchStream(source, self.patch_size, self.batch_size, self.settings.seed, epoch)
        return batch_loader(stream, workers, pin_memory=self.device.type == "cuda")

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.settings.seed * 1_000_003 + epoch)

    def _train_epoch(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, scaler,
                     source: ImageSource, total_steps: int) -> dict:
        model.train()
        loader, generator = self._loader(source, epoch), self._generator(epoch)
        torch.manual_seed(self.settings.seed + epoch)
        loss_sum, correct, seen = torch.zeros((), device=self.device), torch.zeros((), device=self.device), 0
        start = time.perf_counter()
        bar = tqdm(range(self.settings.iters_per_epoch), desc=f"epoch {epoch + 1}/{self.settings.epochs}",
                   leave=False, dynamic_ncols=True)
        for i in bar:
            step = epoch * self.settings.iters_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, self.settings)
            images = next(loader).to(self.device, non_blocking=True)
            loss, n_correct = self.train_step(model, optimizer, scaler, images, generator)
            loss_sum += loss
            correct += n_correct
            seen += images.shape[0]
            if i % 10 == 0 or i == self.settings.iters_per_epoch - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{(correct / seen).item():.3f}")
        elapsed = time.perf_counter() - start
        return {"loss": (loss_sum / self.settings.iters_per_epoch).item(), "train_acc": (correct / seen).item(),
                "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": elapsed, "samples_per_s": seen / elapsed}

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler, images: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; returns the loss and the number of correct predictions (on device)."""
        shuffled, labels = self.pretext(images, generator)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=scaler is not None):
            logits = model(shuffled)
            loss = nn.functional.cross_entropy(logits, labels)
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
        return loss.detach(), (logits.detach().argmax(1) == labels).sum()

    def _eval_set(self, source: ImageSource) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed shuffled batches (own seed, never trained on as such) for a comparable accuracy per epoch."""
        stream = PatchStream(source, self.patch_size, self.batch_size, self.settings.seed + 7919, epoch=0)
        batches, generator = iter(stream), torch.Generator().manual_seed(self.settings.seed + 7919)
        return [self.pretext(next(batches).to(self.device), generator) for _ in range(self.settings.eval_batches)]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_set: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        model.eval()
        correct = total = 0
        for images, labels in eval_set:
            with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.numel()
        return correct / max(1, total)

    def _run_audit(self, source: ImageSource) -> dict:
        print("Shortcut audit: can block intensity statistics alone solve the pretext?")
        result = self.audit(self.settings.audit_samples, max(1, self.settings.audit_samples // 2), source)
        print("  " + result.summary())
        self._append_log_line("audit: " + result.summary())
        return result.to_dict()

    def audit(self, n_train: int = 1000, n_test: int = 300, source: ImageSource | None = None) -> AuditResult:
        """Can a histogram classifier solve the pretext from per-block intensity statistics? (It should not.)"""
        stream = iter(PatchStream(source or self._image_source(), self.patch_size, 1, self.settings.seed + 104729))

        def sample_images(n: int) -> torch.Tensor:
            return torch.cat([next(stream) for _ in range(n)])

        return run_audit(self.pretext, sample_images, n_train=n_train, n_test=n_test, seed=self.settings.seed,
                         batch_size=8)

    # ---------------------------------------------------------------------------------- logging, saving
    def _log_epoch(self, epoch: int, stats: dict) -> None:
        self.log["epoch"].append(epoch)
        for key in ("loss", "train_acc", "eval_acc", "lr", "epoch_time_s", "samples_per_s"):
            self.log[key].append(float(stats[key]))
        line = (f"epoch {epoch + 1}/{self.settings.epochs}  loss {stats['loss']:.4f}  train acc "
                f"{stats['train_acc']:.3f}  eval acc {stats['eval_acc']:.3f} (chance "
                f"{1 / self.pretext.num_classes:.3f})  lr {stats['lr']:.2e}  {stats['epoch_time_s']:.1f} s  "
                f"{stats['samples_per_s']:.1f} samples/s")
        print(line)
        self._append_log_line(line)
        plot_progress(self.log, 1 / self.pretext.num_classes, self.output_folder / "progress.png",
                      audit_accuracy=self.audit_result["accuracy"] if self.audit_result else None)

    def _append_log_line(self, line: str) -> None:
        with open(self.output_folder / "pretrain_log.txt", "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

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
        ckpt = load_checkpoint(path, map_location=self.device)
        saved = ckpt["metadata"]["pretext"]
        if saved != self.pretext.state_dict():
            raise UserFacingError(
                f"{path} was written with a different pretext configuration (grid, assignment set or seed) than "
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
        print(f"Resuming from {path} after epoch {self.start_epoch}")


def _resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("-device cuda requested but CUDA is not available here. Use -device cpu.")
    if device not in ("cuda", "cpu", "mps"):
        raise UserFacingError(f"Unknown -device {device!r}; use cuda, cpu or mps.")
    return torch.device(device)
