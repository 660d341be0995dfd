"""Shortcut audit: can the SLeM pretext be solved from per-block intensity statistics alone?

The pretext is meant to teach cross-modal *anatomical* features. If the class could instead be read off the
intensity statistics of each block (a FLAIR block is brighter than a T1 block, a CT block has a different
range than an MR block), the encoder would learn that shortcut and nothing useful. The audit makes this
checkable: it draws pretext samples, describes every block and channel by a normalised intensity histogram
over a fixed range plus its mean and standard deviation, trains a multinomial logistic regression on those
features and reports held-out accuracy next to chance (``1/K``).

Reading the result: with the guards on (renormalisation, intensity augmentation) the accuracy should be near
chance; with them off, on data whose modalities differ in intensity, it is far above chance, which shows the
audit does catch such shortcuts. The features use the true block layouts (including the jittered seams), so
the auditor is given more than the network gets: a pass is conservative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from nnunet_slem.pretext.slem import BlockLayout, SLeMPretext

__all__ = ["AuditResult", "block_histogram_features", "run_audit"]

DEFAULT_RANGE = (-3.0, 3.0)


@dataclass
class AuditResult:
    """Held-out accuracy of the intensity-statistics classifier, with chance ``1/num_classes`` beside it."""

    accuracy: float
    chance: float
    n_train: int
    n_test: int
    num_classes: int
    train_accuracy: float = float("nan")

    @property
    def ratio_to_chance(self) -> float:
        return self.accuracy / self.chance

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio_to_chance": self.ratio_to_chance}

    def summary(self) -> str:
        return (
            f"block-statistics classifier: test accuracy {self.accuracy:.3f} vs chance {self.chance:.3f} "
            f"({self.ratio_to_chance:.2f}x chance, {self.num_classes} classes, "
            f"{self.n_train} train / {self.n_test} test samples)"
        )


def _block_ids(layouts: Sequence[BlockLayout], device: torch.device) -> Tensor:
    """``(N, V)`` block number of every voxel of every sample."""
    maps = np.stack([layout.block_index_map().reshape(-1) for layout in layouts])
    return torch.from_numpy(maps).to(device)


def block_histogram_features(
    images: Tensor,
    layouts: Sequence[BlockLayout],
    bins: int = 16,
    value_range: tuple[float, float] = DEFAULT_RANGE,
) -> Tensor:
    """Per block and channel: a normalised histogram over ``value_range`` plus mean and std.

    Values outside the range count in the edge bins, so every histogram sums to one. The default range
    ``[-3, 3]`` suits the pretext's renormalised blocks; unnormalised data mostly lands in the edge bins, but
    then the mean and std give it away, which is the point. Returns float32 ``(N, B*M*(bins+2))``, ordered
    ``(block, channel, [bins..., mean, std])``; computed with a few ``bincount`` calls over the whole batch.
    """
    n, m = images.shape[:2]
    num_blocks = layouts[0].num_blocks if layouts else 0
    device = images.device
    bid = _block_ids(layouts, device)  # (N, V)
    seg = (torch.arange(n, device=device)[:, None, None] * num_blocks + bid[:, None, :]) * m
    seg = (seg + torch.arange(m, device=device)[None, :, None]).reshape(-1)  # (N*M*V,) = (n, block, c)
    size = n * num_blocks * m
    x = images.reshape(-1).float()
    wide = x.double()  # sums in float64: unnormalised inputs can be large
    count = torch.bincount(seg, minlength=size).double().clamp_min(1)
    mean = torch.bincount(seg, weights=wide, minlength=size) / count
    var = torch.bincount(seg, weights=wide * wide, minlength=size) / count - mean * mean
    lo, hi = value_range
    bin_idx = ((x.clamp(lo, hi) - lo) * (bins / (hi - lo))).long().clamp_(0, bins - 1)
    hist = torch.bincount(seg * bins + bin_idx, minlength=size * bins).reshape(size, bins) / count[:, None]
    feats = torch.cat([hist, mean[:, None], var.clamp_min(0).sqrt()[:, None]], dim=1)
    return feats.reshape(n, num_blocks * m * (bins + 2)).to(torch.float32)


def _draw_features(
    pretext: SLeMPretext,
    sample_images: Callable[[int], Tensor],
    n: int,
    generator: torch.Generator,
    bins: int,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """Features and labels of ``n`` pretext samples, drawn in batches so big volumes fit in memory."""
    feats, labels = [], []
    for start in range(0, n, batch_size):
        images = sample_images(min(batch_size, n - start))
        shuffled, y, layouts = pretext.sample(images, generator)
        feats.append(block_histogram_features(shuffled, layouts, bins=bins).cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-mean unit-variance features from training statistics; constant features stay at zero."""
    mu, sd = train.mean(0), train.std(0)
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))
    return (train - mu) / sd, (test - mu) / sd


def _fit_logistic_regression(
    x: Tensor, y: Tensor, num_classes: int, steps: int, lr: float, weight_decay: float
) -> torch.nn.Linear:
    """Full-batch Adam on cross-entropy + L2; zero init and no dropout, so it is deterministic."""
    model = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + weight_decay * model.weight.square().sum()
        loss.backward()
        opt.step()
    return model


def _accuracy(model: torch.nn.Linear, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run_audit(
    pretext: SLeMPretext,
    sample_images: Callable[[int], Tensor],
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
    steps: int = 300,
    *,
    bins: int = 16,
    batch_size: int = 256,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
) -> AuditResult:
    """Train a logistic regression on block intensity statistics of pretext samples; report test accuracy.

    Args:
        pretext: the task to audit, with its guards set as they will be used in pretraining.
        sample_images: ``n -> (n, M, *spatial)`` tensor of (unshuffled) training patches.
        n_train, n_test: pretext samples to fit on and to evaluate on.
        seed: seeds the pretext draws (labels, layouts, augmentation); ``sample_images`` has its own.
        steps: full-batch optimisation steps.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x_train, y_train = _draw_features(pretext, sample_images, n_train, generator, bins, batch_size)
        x_test, y_test = _draw_features(pretext, sample_images, n_test, generator, bins, batch_size)
    x_train, x_test = _standardise(x_train, x_test)
    with torch.enable_grad():
        model = _fit_logistic_regression(x_train, y_train, pretext.num_classes, steps, lr, weight_decay)
    return AuditResult(
        accuracy=_accuracy(model, x_test, y_test),
        chance=1.0 / pretext.num_classes,
        n_train=n_train,
        n_test=n_test,
        num_classes=pretext.num_classes,
        train_accuracy=_accuracy(model, x_train, y_train),
    )
