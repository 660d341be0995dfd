"""Fine-tuning recipes: learning rate, warm-ups and their schedule, as fractions of the training length.

nnU-Net's from-scratch recipe (SGD, lr 1e-2, momentum 0.99, poly decay, no warm-up) is known to wash out a
pretrained encoder in the first epochs, while the random decoder still sends large gradients through it.
The recipe upstream nnU-Net uses for self-supervised checkpoints (Wald et al., CVPR 2025; nnssl) starts
lower and warms up:

- ``lr 1e-3`` with a linear warm-up of the whole network, then poly decay (50 of 1000 epochs upstream);
- "sawtooth": the decoder alone warms up first (encoder frozen), then the whole network warms up again.

Warm-ups are fractions of ``num_epochs`` so that a short schedule (a CPU benchmark, a smoke test) warms up
for the same share of its training as the 1000-epoch default, never for longer than it trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POLY_EXPONENT = 0.9


def warmup_epochs(fraction: float, num_epochs: int) -> int:
    """``fraction`` of ``num_epochs``, at least one epoch when the fraction is positive, never all of them."""
    if fraction <= 0:
        return 0
    return min(max(1, round(fraction * num_epochs)), max(num_epochs - 1, 0))


@dataclass(frozen=True)
class Recipe:
    """What a trainer variant changes about fine-tuning; every field has nnU-Net's meaning."""

    initial_lr: float
    #: share of the epochs during which only the decoder trains (encoder and CFB frozen), lr rising linearly
    decoder_warmup_fraction: float = 0.0
    #: share of the epochs, after the decoder warm-up, during which the whole network's lr rises linearly
    warmup_fraction: float = 0.0

    def phases(self, num_epochs: int) -> tuple[int, int]:
        """``(decoder warm-up epochs, whole-network warm-up epochs)`` for a schedule of ``num_epochs``."""
        decoder = warmup_epochs(self.decoder_warmup_fraction, num_epochs)
        whole = warmup_epochs(self.warmup_fraction, num_epochs - decoder) if num_epochs - decoder > 1 else 0
        return decoder, whole

    def describe(self, num_epochs: int) -> str:
        decoder, whole = self.phases(num_epochs)
        parts = [f"lr {self.initial_lr:g}"]
        if decoder:
            parts.append(f"decoder-only warm-up {decoder} epochs")
        if whole:
            parts.append(f"whole-network warm-up {whole} epochs")
        parts.append(f"poly decay over the remaining {num_epochs - decoder - whole} of {num_epochs} epochs")
        return ", ".join(parts)


#: nnU-Net's own: what training from scratch uses
NNUNET_RECIPE = Recipe(initial_lr=1e-2)
#: upstream nnU-Net's recipe for self-supervised checkpoints (50 of 1000 epochs of whole-network warm-up)
WARMUP_RECIPE = Recipe(initial_lr=1e-3, warmup_fraction=0.05)
#: the sawtooth variant: the decoder warms up alone first, then the whole network
SAWTOOTH_RECIPE = Recipe(initial_lr=1e-3, decoder_warmup_fraction=0.05, warmup_fraction=0.05)


def lr_at(epoch: int, recipe: Recipe, num_epochs: int) -> float:
    """The learning rate of ``epoch`` (0-based): linear ramps to ``initial_lr`` ending at each warm-up's last
    epoch, then nnU-Net's poly decay over the epochs after the warm-ups."""
    decoder, whole = recipe.phases(num_epochs)
    if epoch < decoder:
        return recipe.initial_lr * (epoch + 1) / decoder
    if epoch < decoder + whole:
        return recipe.initial_lr * (epoch - decoder + 1) / whole
    done = decoder + whole
    progress = min(max((epoch - done) / max(num_epochs - done, 1), 0.0), 1.0)
    return recipe.initial_lr * (1 - progress) ** POLY_EXPONENT


class RecipeLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Sets :func:`lr_at` for the epoch nnU-Net passes to ``step(current_epoch)``, like its PolyLRScheduler."""

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: Recipe, num_epochs: int) -> None:
        self.recipe = recipe
        self.num_epochs = num_epochs
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None) -> None:  # noqa: D401 - nnU-Net's signature
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = lr_at(current_step, self.recipe, self.num_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
