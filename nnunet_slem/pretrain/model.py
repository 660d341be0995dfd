"""Encoder + CFB + classification head: the network the pretext trains.

The encoder and CFB are those of the exact network ``SLeMTrainer`` builds from the same plans (built by
the trainer's own ``build_network_architecture``), so the saved state dict loads into fine-tuning key for
key. The head reads the bottleneck: global average pooling, then a linear layer over the assignment set.
"""

from __future__ import annotations

import torch
from torch import nn

from nnunet_slem.network.slem_network import SLeMNetwork


class PretextClassifier(nn.Module):
    def __init__(self, network: SLeMNetwork, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.network = network
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(network.bottleneck_channels,
                                                                                num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottleneck = self.network.encode(x)[-1]
        pooled = bottleneck.mean(dim=tuple(range(2, bottleneck.ndim)))
        return self.head(pooled)
