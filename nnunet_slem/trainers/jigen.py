"""``JiGenTrainer``: the JiGen baseline (Carlucci et al., CVPR 2019), a jigsaw loss trained *jointly* with
segmentation instead of a separate pretraining stage.

Every training step also builds a jigsaw copy of the batch: the patch is cut into a grid of tiles (2x2x2 in
3D, 3x3 in 2D as in JiGen), and with probability ``1 - ordered_fraction`` the tiles are shuffled by one of
``num_permutations`` permutations (a max-Hamming set, :func:`~nnunet_slem.pretext.tiles.build_permutation_set`;
class 0 is the unshuffled order). The encoder (with CFB, as every method of the comparison uses it) sees the
segmentation batch and the jigsaw batch in one pass; a grid-pooled linear head on the bottleneck classifies
the permutation, and the loss is ``segmentation + jigsaw_weight * cross-entropy``.

JiGen's own settings were alpha (jigsaw weight) 0.7 and beta (ordered fraction) 0.6 with 30 permutations of
3x3 tiles; we keep alpha, beta and 30 permutations and use 8 tiles in 3D. Deviations: the supervised loss is
computed on the unshuffled batch only (JiGen also feeds ordered images to the jigsaw head, which we do through
``ordered_fraction``); images are nnU-Net's augmented patches rather than whole images.

``SLEM_JIGEN_WEIGHT`` overrides ``jigsaw_weight`` for one run (written to the log). The jigsaw head is part
of the network, so ``nnUNetv2_predict`` rebuilds it (unused) and loads the checkpoint strictly.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_slem.errors import UserFacingError
from nnunet_slem.network.grid_head import grid_head
from nnunet_slem.network.slem_network import SLeMNetwork, build_slem_network, cfb_config_from_plans, feature_map_sizes
from nnunet_slem.pretext.tiles import build_permutation_set, capped_permutation_count, shuffle_tiles, tile_slices
from nnunet_slem.trainers.recipes import NNUNET_RECIPE
from nnunet_slem.trainers.slem_trainer import SLeMTrainer

WEIGHT_ENV = "SLEM_JIGEN_WEIGHT"


def default_jigsaw_grid(spatial_dims: int) -> tuple[int, ...]:
    return (2, 2, 2) if spatial_dims == 3 else (3, 3)


class JiGenNetwork(SLeMNetwork):
    """The CFB U-Net plus a jigsaw head on the bottleneck; ``forward(x)`` is plain segmentation."""

    def __init__(self, network: SLeMNetwork, num_permutations: int, bottleneck_size: list[int]) -> None:
        super().__init__(network, network.cfb, network.cfb_stage)
        self.base_class_name = network.base_class_name
        self.jigsaw_head = grid_head(network.bottleneck_channels, bottleneck_size, num_permutations)

    def forward(self, x: torch.Tensor, jigsaw: torch.Tensor | None = None):
        """Segmentation of ``x``; with ``jigsaw`` also the permutation logits of that batch (one encoder pass)."""
        if jigsaw is None:
            return self.decoder(self.encode(x))
        skips = self.encode(torch.cat([x, jigsaw]))
        n = x.shape[0]
        return self.decoder([s[:n] for s in skips]), self.jigsaw_head(skips[-1][n:])


class JiGenTrainer(SLeMTrainer):
    """CFB network from random weights, trained with segmentation + jigsaw loss (module docstring)."""

    use_slem_pretraining = False
    recipe = NNUNET_RECIPE  # randomly initialised: nnU-Net's own recipe, as for training from scratch
    jigsaw_weight: float = 0.7
    ordered_fraction: float = 0.6
    num_permutations: int = 30
    permutation_seed: int = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        text = os.environ.get(WEIGHT_ENV, "").strip()
        if text:
            try:
                self.jigsaw_weight = float(text)
            except ValueError as e:
                raise UserFacingError(f"{WEIGHT_ENV}={text!r} must be a number (the jigsaw loss weight).") from e
        patch = [int(p) for p in self.configuration_manager.patch_size]
        self.jigsaw_grid = default_jigsaw_grid(len(patch))
        tile_slices(patch, self.jigsaw_grid)  # clear error now if the patch cannot hold the tiles
        n_tiles = math.prod(self.jigsaw_grid)
        self.permutations = torch.as_tensor(build_permutation_set(
            n_tiles, capped_permutation_count(n_tiles, self.num_permutations), self.permutation_seed))

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        network = build_slem_network(configuration_manager, num_input_channels, num_output_channels,
                                     enable_deep_supervision,
                                     cfb_config_from_plans(configuration_manager, cls.cfb_defaults))
        patch = [int(p) for p in configuration_manager.patch_size]
        n_tiles = math.prod(default_jigsaw_grid(len(patch)))
        bottleneck = feature_map_sizes(patch, configuration_manager.network_arch_init_kwargs["strides"])[-1]
        return JiGenNetwork(network, capped_permutation_count(n_tiles, cls.num_permutations), bottleneck)

    def on_train_start(self) -> None:
        self.print_to_log_file(f"JiGen: jigsaw weight {self.jigsaw_weight}, ordered fraction {self.ordered_fraction}, "
                               f"{len(self.permutations)} permutations of {self.jigsaw_grid} tiles")
        super().on_train_start()

    def jigsaw_batch(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tile-shuffled copy of ``data`` and its permutation labels (0 = ordered, probability ``ordered_fraction``)."""
        n = data.shape[0]
        shuffled = torch.rand(n) >= self.ordered_fraction
        labels = torch.where(shuffled, torch.randint(1, len(self.permutations), (n,)), torch.zeros(n, dtype=torch.long))
        perms = self.permutations[labels].to(data.device)
        return shuffle_tiles(data, self.jigsaw_grid, perms), labels.to(data.device)

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step with the jigsaw term added (same AMP, clipping and optimizer handling)."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) else \
            target.to(self.device, non_blocking=True)
        jigsaw, labels = self.jigsaw_batch(data)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output, logits = self.network(data, jigsaw)
            seg_loss = self.loss(output, target)
        jig_loss = nn.functional.cross_entropy(logits.float(), labels)
        loss = seg_loss + self.jigsaw_weight * jig_loss
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": seg_loss.detach().cpu().numpy(), "jigsaw_loss": jig_loss.detach().cpu().numpy(),
                "jigsaw_acc": (logits.detach().argmax(1) == labels).float().mean().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        jig_loss = float(np.mean([o["jigsaw_loss"] for o in train_outputs]))
        jig_acc = float(np.mean([o["jigsaw_acc"] for o in train_outputs]))
        self.print_to_log_file(f"jigsaw loss {jig_loss:.4f}, jigsaw accuracy {jig_acc:.3f} "
                               f"(chance {1 / len(self.permutations):.3f})")
