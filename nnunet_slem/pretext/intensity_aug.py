"""The random intensity augmentation shared by the SLeM pretext (per block and channel) and the supervoxel
pretext (per channel of the query): a gamma on min-max scaled values, then a contrast and a brightness change.

Why one implementation: both pretexts promise "the same augmentation", and two copies of the ranges and the
formula would drift apart. The callers differ only in how they draw the uniforms (SLeM: float32 on the
generator's device, one draw for the whole batch; supervoxel: float64 per sample on the CPU) and whether a
foreground mask restricts the range; :func:`intensity_params` and :func:`intensity_transform` compute in the
dtype they are given, so each caller keeps its numbers exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BRIGHTNESS_RANGE", "CONTRAST_RANGE", "GAMMA_RANGE", "intensity_params", "intensity_transform"]

#: gamma is drawn log-uniformly in this range: it perturbs histogram shape, which z-scoring leaves untouched
GAMMA_RANGE = (0.7, 1.5)
#: multiplicative contrast, uniform
CONTRAST_RANGE = (0.75, 1.25)
#: additive brightness, uniform, in units of the row's (foreground) intensity range
BRIGHTNESS_RANGE = (-0.1, 0.1)
_EPS = 1e-6


def intensity_params(u: Tensor) -> Tensor:
    """``(..., 3)`` gamma, contrast, brightness from ``(..., 3)`` uniforms in [0, 1), in ``u``'s dtype."""
    lg0, lg1 = math.log(GAMMA_RANGE[0]), math.log(GAMMA_RANGE[1])
    gamma = torch.exp(lg0 + u[..., 0] * (lg1 - lg0))
    contrast = CONTRAST_RANGE[0] + u[..., 1] * (CONTRAST_RANGE[1] - CONTRAST_RANGE[0])
    brightness = BRIGHTNESS_RANGE[0] + u[..., 2] * (BRIGHTNESS_RANGE[1] - BRIGHTNESS_RANGE[0])
    return torch.stack([gamma, contrast, brightness], dim=-1)


def intensity_transform(x: Tensor, params: Tensor, foreground: Tensor | None = None) -> Tensor:
    """Per-row gamma on min-max scaled values (back in the row's range), then contrast and brightness.

    ``x`` is ``(M, V)``; ``params`` is ``(M, 3)`` = gamma, contrast, brightness (brightness in units of the
    row's range, so the shift means the same for a modality stored in [0, 1] and one in [0, 4000]).
    ``foreground`` (bools broadcastable to ``x``): take the range over those values only (the caller zeroes
    the rest); all True gives the whole-row result.
    """
    if foreground is None:
        lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    else:
        lo = torch.where(foreground, x, torch.inf).amin(dim=1, keepdim=True)
        hi = torch.where(foreground, x, -torch.inf).amax(dim=1, keepdim=True)
        lo, hi = torch.where(hi >= lo, lo, 0), torch.where(hi >= lo, hi, 0)  # no foreground: no inf - inf
    span = hi - lo
    gamma, contrast, brightness = (params[:, i : i + 1] for i in range(3))
    scaled = ((x - lo) / span.clamp_min(_EPS)).clamp(0, 1)
    x = scaled.pow(gamma) * span + lo
    return x * contrast + brightness * span
