"""The grid classification head shared by the classification pretexts and JiGen's auxiliary task.

The head must know *where* things are (which modality fills which block, which tile sits where), so a
globally pooled feature vector (which only says what is present) cannot solve those tasks. The head pools
the bottleneck to a coarse grid (at most ``HEAD_GRID`` cells per axis), keeps the cells apart and classifies
their concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

HEAD_GRID = 4


def grid_head(channels: int, bottleneck_size: Sequence[int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Pool a bottleneck map to at most ``HEAD_GRID`` cells per axis, keep the cells apart, classify."""
    cells = [max(1, min(HEAD_GRID, int(s))) for s in bottleneck_size]
    pool = nn.AdaptiveAvgPool3d if len(cells) == 3 else nn.AdaptiveAvgPool2d
    n_features = channels * int(torch.tensor(cells).prod())
    return nn.Sequential(pool(tuple(cells)), nn.Flatten(), nn.Dropout(dropout), nn.Linear(n_features, num_classes))
