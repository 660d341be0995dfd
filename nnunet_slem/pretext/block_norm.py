"""SLeM's renormalisation of a block's channels (the histogram guard of :mod:`~nnunet_slem.pretext.slem`).

Every block and channel is renormalised the same way whatever modality fills it, so that intensity statistics
alone cannot tell the modalities apart (the pretext's module docstring says why each option exists):
``"rank"`` maps values to standard normal quantiles of their ranks, ``"zscore"`` removes mean and spread,
``"none"`` leaves them. A ``foreground`` mask restricts all statistics to the voxels it marks and zeroes the
rest; the masked formulas are written so that an all-True mask gives the whole-row result bit for bit and no
step waits for the GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MIN_FOREGROUND", "NORMALIZATIONS", "gaussian_rank", "normalize_rows"]

NORMALIZATIONS = ("rank", "zscore", "none")
#: with a foreground mask, a block whose foreground is below this fraction of its voxels stays all 0: the ranks
#: of a handful of voxels are noise, and the network should see such a block as the background it is
MIN_FOREGROUND = 0.01
_EPS = 1e-6


def normalize_rows(x: Tensor, normalization: str, mask: Tensor | None = None) -> Tensor:
    """Renormalise every row of ``x`` ``(M, V)`` (one block's channels) by ``normalization``.

    ``mask`` (``(1, V)`` bools, or ``None`` for the whole row): the voxels the statistics use; the others come
    out exactly 0, and with ``"rank"``/``"zscore"`` a row whose mask covers less than ``MIN_FOREGROUND`` of it
    comes out all 0. Masked statistics equal the whole-row ones for an all-True mask (``torch.where`` with a
    full mask is the identity and the count corrections ``n / count`` are exactly 1)."""
    if normalization == "rank":
        x = gaussian_rank(x, mask)
    if normalization != "none":
        if mask is None:
            mean = x.mean(dim=1, keepdim=True)
            std = x.std(dim=1, unbiased=False, keepdim=True)
        else:
            n = x.shape[1]
            count = mask.sum(dtype=x.dtype).clamp_min(1)
            mean = torch.where(mask, x, 0).mean(dim=1, keepdim=True) * (n / count)
            # background filled with the foreground mean adds nothing to the squared deviations
            std = torch.where(mask, x, mean).std(dim=1, unbiased=False, keepdim=True) * (n / count).sqrt()
            mask = mask & (count >= MIN_FOREGROUND * n)  # (almost) no foreground: the block stays 0
        x = (x - mean) / std.clamp_min(_EPS)
    if mask is not None:
        x = torch.where(mask, x, 0)
    return x


def gaussian_rank(x: Tensor, foreground: Tensor | None = None) -> Tensor:
    """Per row: mean rank of each value (ties share it), mapped to standard normal quantiles.

    The result depends only on the order of the values, so every row with the same tie pattern gets the
    same histogram, whatever the original intensity distribution.

    ``foreground`` (bools broadcastable to ``x``): rank only those values, among themselves; the others
    come out 0. They are sorted last as ``+inf`` and the quantiles are taken over the foreground count,
    as ``(rank + 0.5) / n * (n / count)``, which is exactly the whole-row formula when everything is
    foreground.

    Computed for all rows at once from one sort, with fixed-size operations only: a tie group's mean rank is
    the mean of its first and last position in sorted order, found with running max/min over the group
    boundaries. Unlike ``torch.unique`` this never waits for the GPU (no data-dependent output size), so the
    CPU can queue the next samples' work while the GPU computes.
    """
    n = x.shape[1]
    if foreground is not None:
        foreground = foreground.expand_as(x)
        x = torch.where(foreground, x, torch.inf)
    sorted_x, order = torch.sort(x, dim=1)
    pos = torch.arange(n, device=x.device).expand_as(sorted_x)
    starts = torch.ones_like(sorted_x, dtype=torch.bool)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.cummax(torch.where(starts, pos, 0), dim=1).values
    last = torch.cummin(torch.where(ends, pos, n - 1).flip(1), dim=1).values.flip(1)
    mean_rank = (first + last).to(x.dtype) / 2
    quantile = (mean_rank + 0.5) / n
    if foreground is not None:
        count = foreground.sum(dim=1, keepdim=True, dtype=x.dtype).clamp_min(1)
        quantile = quantile * (n / count)
    z = torch.empty_like(x).scatter_(1, order, torch.special.ndtri(quantile.clamp(1e-6, 1 - 1e-6)))
    return z if foreground is None else torch.where(foreground, z, 0)
