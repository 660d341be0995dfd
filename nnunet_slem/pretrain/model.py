"""The networks the pretexts train: encoder + CFB + classification head, or the whole U-Net for dense pretexts.

The network is the one fine-tuning builds from the same plans (``build_slem_network``, which
``SLeMTrainer.build_network_architecture`` calls too), so the saved state dict loads into fine-tuning key for
key. The classification head is ``network.grid_head`` (it must know where things are, so it keeps a coarse
grid of the bottleneck apart instead of pooling it globally).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_slem.network.grid_head import grid_head
from nnunet_slem.network.slem_network import SLeMNetwork

#: The pretext head is initialised from ``seed + HEAD_SEED_OFFSET``, after the network: the same head for the
#: CFB and no-CFB networks of one seed, whatever the CFB drew from the RNG.
HEAD_SEED_OFFSET = 1_000_003


class PretextClassifier(nn.Module):
    def __init__(self, network: SLeMNetwork, num_classes: int, bottleneck_size: Sequence[int],
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.network = network
        self.head = grid_head(network.bottleneck_channels, bottleneck_size, num_classes, dropout)

    def trained_modules(self) -> list[nn.Module]:
        """What the forward uses, hence what the optimiser trains (the decoder is not among them)."""
        return [self.network.encoder, self.network.cfb, self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.network.encode(x)[-1])


class PretextSegmenter(nn.Module):
    """The whole U-Net (built with ``num_classes`` output channels) for dense pretexts: full-resolution output.

    Its state dict is the fine-tuning network's except for the final 1x1 segmentation layers, which
    fine-tuning leaves out anyway (their channel count differs)."""

    def __init__(self, network: SLeMNetwork) -> None:
        super().__init__()
        self.network = network
        self.head = nn.Identity()  # no parameters; keeps the checkpoint layout of the classifier

    def trained_modules(self) -> list[nn.Module]:
        """What the forward uses, hence what the optimiser trains: the whole U-Net, decoder included, but of the
        segmentation layers only the full-resolution one (deep supervision is off here)."""
        decoder = self.network.decoder
        return [self.network.encoder, self.network.cfb, decoder.transpconvs, decoder.stages, decoder.seg_layers[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        return out[0] if isinstance(out, (list, tuple)) else out


def trained_prefixes(model: PretextClassifier | PretextSegmenter) -> list[str]:
    """State-dict prefixes (``encoder.``, ``cfb.``, ``decoder.stages.``, ...) of the network parts the pretext
    trains. Fine-tuning copies only these: every other tensor of the saved network is its seeded random
    initialisation, and copying it would pass an untrained part off as pretrained."""
    trained = {id(m) for m in model.trained_modules()}
    return [f"{name}." for name, module in model.network.named_modules() if name and id(module) in trained]
