"""Encoder + CFB + classification head: the network the pretext trains.

The encoder and CFB are those of the exact network ``SLeMTrainer`` builds from the same plans (built by
the trainer's own ``build_network_architecture``), so the saved state dict loads into fine-tuning key for
key.

The head must know *where* things are: the label says which modality fills which block, so a globally
pooled feature vector (which only says what is present) cannot solve the task. The head therefore pools
the bottleneck to a coarse grid (at most 4 cells per axis), keeps the cells apart and classifies their
concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_slem.network.slem_network import SLeMNetwork

HEAD_GRID = 4


class PretextClassifier(nn.Module):
    def __init__(self, network: SLeMNetwork, num_classes: int, bottleneck_size: Sequence[int],
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.network = network
        cells = [max(1, min(HEAD_GRID, int(s))) for s in bottleneck_size]
        pool = nn.AdaptiveAvgPool3d if len(cells) == 3 else nn.AdaptiveAvgPool2d
        n_features = network.bottleneck_channels * int(torch.tensor(cells).prod())
        self.head = nn.Sequential(pool(tuple(cells)), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(n_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.network.encode(x)[-1])
