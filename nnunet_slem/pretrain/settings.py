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


def build_optimizer(params: list[nn.Parameter], settings: PretrainSettings) -> torch.optim.Optimizer:
    """AdamW, or nnU-Net's SGD (momentum 0.99, Nesterov), at the settings' base learning rate."""
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=0.99, nesterov=True,
                           weight_decay=settings.weight_decay)
