"""The SLeM network: the U-Net nnU-Net builds from the plans, with a CFB inside its encoder.

We do not fork dynamic-network-architectures. :class:`SLeMNetwork` takes the encoder and decoder of the
network nnU-Net builds and runs the encoder's stages itself, passing the output of one stage through the
CFB. That output feeds both the deeper encoder stages and the skip connection, so everything after the
CFB (the deeper encoder, the pretext head, the decoder) sees multi-scale context. State-dict keys stay
those of the plain network (``encoder.*``, ``decoder.*``) plus ``cfb.*``.

Placement rule (:func:`choose_cfb_stage`): the bottleneck if its feature map is large enough, otherwise
the deepest stage that is. "Large enough" means at least ``min_extent`` voxels along every axis (default
8: room for dilations 1, 2 and 3), except along axes where the patch itself is smaller than that. A 128^3
patch with five poolings has a 4^3 bottleneck, where no dilation above 1 reads real features on both sides, so the CFB
goes to the 8^3 stage before it.

The CFB's convolution, norm and nonlinearity are the U-Net's own, read from the same plans entries
(``architecture.arch_kwargs``: ``conv_op``, ``norm_op``, ``norm_op_kwargs``, ``nonlin``, ``nonlin_kwargs``) the
way nnU-Net's ``get_network_from_plans`` reads them (:func:`cfb_layers_from_plans`).
"""

from __future__ import annotations

import pydoc
from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn

from nnunet_slem.network.cfb import CFBConfig, CFBLayers, ContextualFusionBlock


def feature_map_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int] | int]) -> list[list[int]]:
    """Spatial size of every encoder stage's output for a patch (strides as in nnU-Net's plans)."""
    dim = len(patch_size)
    sizes, current = [], np.array(patch_size, dtype=int)
    for stride in strides:
        stride = np.array([stride] * dim if isinstance(stride, int) else stride, dtype=int)
        current = current // stride
        sizes.append([int(s) for s in current])
    return sizes


def choose_cfb_stage(sizes: Sequence[Sequence[int]], patch_size: Sequence[int], min_extent: int = 8) -> int:
    """Deepest stage whose map is at least ``min_extent`` along every axis the patch allows (see module doc)."""
    required = [min_extent if p >= min_extent else 1 for p in patch_size]
    for stage in range(len(sizes) - 1, -1, -1):
        if all(s >= r for s, r in zip(sizes[stage], required)):
            return stage
    return 0


class SLeMNetwork(nn.Module):
    """Encoder -> CFB at one stage -> rest of encoder -> decoder, with the plain network's key names."""

    def __init__(self, base: nn.Module, cfb: ContextualFusionBlock | nn.Identity, cfb_stage: int) -> None:
        super().__init__()
        for attr in ("encoder", "decoder"):
            if not hasattr(base, attr):
                raise TypeError(
                    f"{type(base).__name__} has no '{attr}'; the CFB needs an nnU-Net encoder-decoder U-Net "
                    "(PlainConvUNet or ResidualEncoderUNet plans)."
                )
        if not hasattr(base.encoder, "stages"):
            raise TypeError(f"{type(base.encoder).__name__} has no 'stages'; cannot place the CFB in it.")
        if not 0 <= cfb_stage < len(base.encoder.stages):
            raise ValueError(f"CFB stage {cfb_stage} outside the encoder's 0..{len(base.encoder.stages) - 1}")
        self.encoder = base.encoder
        self.decoder = base.decoder
        self.cfb = cfb
        self.cfb_stage = cfb_stage
        self.base_class_name = type(base).__name__

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All stage outputs (the skips), with the CFB applied after stage ``cfb_stage``."""
        stem = getattr(self.encoder, "stem", None)
        if stem is not None:
            x = stem(x)
        skips = []
        for i, stage in enumerate(self.encoder.stages):
            x = stage(x)
            if i == self.cfb_stage:
                x = self.cfb(x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encode(x))

    @property
    def has_cfb(self) -> bool:
        return isinstance(self.cfb, ContextualFusionBlock)

    @property
    def bottleneck_channels(self) -> int:
        return int(self.encoder.output_channels[-1])


def cfb_config_from_plans(configuration_manager: ConfigurationManager, default: CFBConfig) -> CFBConfig:
    """The trainer's CFB defaults, overridden by the configuration's optional ``slem_cfb`` plans entry.

    Reading the knobs from the plans (which nnU-Net copies into the results folder) means training and
    ``nnUNetv2_predict`` build the same network without any extra arguments.
    """
    merged = default.to_dict()
    merged.update(configuration_manager.configuration.get("slem_cfb", {}) or {})
    return CFBConfig.from_dict(merged)


def cfb_layers_from_plans(configuration_manager: ConfigurationManager) -> CFBLayers:
    """The plans' layer types for the CFB, imported as ``get_network_from_plans`` imports them; an entry the
    architecture does not have keeps nnU-Net's default (:meth:`CFBLayers.nnunet_default`)."""
    arch_kwargs = configuration_manager.network_arch_init_kwargs
    to_import = set(configuration_manager.network_arch_init_kwargs_req_import)
    default = CFBLayers.nnunet_default(len(configuration_manager.patch_size))
    chosen = {}
    for name in (f.name for f in fields(CFBLayers)):
        if name not in arch_kwargs:
            chosen[name] = getattr(default, name)
            continue
        value = arch_kwargs[name]
        if name in to_import and isinstance(value, str):
            located = pydoc.locate(value)
            if located is None:
                raise ValueError(f"The plans' {name} {value!r} cannot be imported; fix the plans' arch_kwargs.")
            value = located
        chosen[name] = value
    return CFBLayers(**chosen)


def build_slem_network(
    configuration_manager: ConfigurationManager,
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool,
    cfb_config: CFBConfig,
) -> SLeMNetwork:
    """Build nnU-Net's network from the plans and insert the CFB where :func:`choose_cfb_stage` says."""
    base = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=enable_deep_supervision,
    )
    patch_size = list(configuration_manager.patch_size)
    strides = configuration_manager.network_arch_init_kwargs["strides"]
    sizes = feature_map_sizes(patch_size, strides)
    stage = cfb_config.stage if cfb_config.stage is not None else choose_cfb_stage(
        sizes, patch_size, cfb_config.min_extent
    )
    if not 0 <= stage < len(sizes):
        raise ValueError(f"slem_cfb.stage={stage} is outside the encoder's stages 0..{len(sizes) - 1}")
    if not cfb_config.enabled:
        return SLeMNetwork(base, nn.Identity(), stage)
    cfb = ContextualFusionBlock(
        channels=int(base.encoder.output_channels[stage]),
        feature_map_size=sizes[stage],
        dilations=cfb_config.dilations,
        reduction=cfb_config.reduction,
        image_pooling=cfb_config.image_pooling,
        layers=cfb_layers_from_plans(configuration_manager),
    )
    return SLeMNetwork(base, cfb, stage)
