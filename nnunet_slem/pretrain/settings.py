"""What a pretraining run is asked to do besides the data: its settings, the optimizer and the learning-rate
schedule they choose.

The settings are stored in the checkpoint (as a plain dict) and in ``pretrain_config.json``; the learning rate
is a pure function of the optimizer step, so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.registry import PRETEXT_NAMES
from nnunet_slem.validation.numbers import check_fits, check_number, physical_memory_bytes


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
            check_number(getattr(self, name), f"--{name.replace('_', '-')}", integer=True, minimum=1)
        if self.batch_size is not None:
            check_number(self.batch_size, "--batch-size", integer=True, minimum=1)
        check_number(self.seed, "--seed", integer=True, minimum=0)
        check_number(self.lr, "--lr", positive=True, hint="The peak learning rate, e.g. 1e-3.")
        check_number(self.weight_decay, "--weight-decay", minimum=0)
        check_number(self.warmup_iters, "--warmup-iters", integer=True, minimum=0, hint="0 means no warm-up.")
        if self.num_workers is not None:
            check_number(self.num_workers, "--num-workers", integer=True, minimum=0,
                         hint="0 loads in the training process.")
        check_number(self.eval_batches, "eval_batches", integer=True, minimum=0)
        check_number(self.audit_samples, "--audit-samples", integer=True, minimum=0, hint="0 skips the audit.")
        check_number(self.probe_samples, "--probe-samples", integer=True, minimum=0, hint="0 skips the probes.")
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


def build_optimizer(params: list[nn.Parameter], settings: PretrainSettings) -> torch.optim.Optimizer:
    """AdamW, or nnU-Net's SGD (momentum 0.99, Nesterov), at the settings' base learning rate."""
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=0.99, nesterov=True,
                           weight_decay=settings.weight_decay)


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("-device cuda requested but CUDA is not available here. Use -device cpu.")
    if device not in ("cuda", "cpu", "mps"):
        raise UserFacingError(f"Unknown -device {device!r}; use cuda, cpu or mps.")
    return torch.device(device)


def check_batch_fits(batch: int, patch_size: list[int], channels: int, configuration_manager,
                     device: torch.device) -> None:
    """Refuse a (per-process) batch that cannot fit, before the loader allocates it: a lower bound on one step's
    memory is the input batch plus two activations of the first stage's width at full resolution (the first
    convolution's output and its normalisation), 4 bytes a value. A real step needs several times more, so
    nothing that could fit is refused."""
    try:
        width = int(configuration_manager.network_arch_init_kwargs["features_per_stage"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        width = 0
    per_sample = 4 * math.prod(patch_size) * (channels + 2 * width)
    if device.type == "cuda":
        available, where = torch.cuda.get_device_properties(device).total_memory, f"the GPU ({device})"
    else:
        available, where = physical_memory_bytes(), "this machine's RAM"
    fits = max(1, (available or 0) // max(1, per_sample))
    check_fits(batch * per_sample, available, f"A batch of {batch} patches of {list(patch_size)} voxels",
               where, f"Pass a smaller --batch-size (at most about {fits} per process; fewer in practice).")
