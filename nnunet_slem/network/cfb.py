"""The contextual fusion block (CFB): multi-scale context fused back into a feature map.

Tumours in one dataset range from a few voxels to a third of the brain. A single receptive field cannot
cover that range, so the CFB runs parallel branches with different receptive fields over the same feature
map, concatenates them, fuses them with a 1x1 convolution and adds the result back residually:

    y = x + fuse(concat(branch_1(x), ..., branch_k(x), image_pool(x)))

- ``branch_i``: 3^d convolution with dilation ``d_i`` (per axis), norm, nonlinearity, to ``C // reduction``
  channels. A dilation is only kept where the feature map is large enough for it to see real features:
  along an axis of extent ``s`` the dilation is capped at ``(s - 1) // 2``, the largest at which some
  position still reads real features through both off-centre taps, and branches that become identical
  after capping are dropped. See :func:`usable_dilations`.
- ``image_pool``: global average pooling, 1x1 convolution, nonlinearity, broadcast back: image-level context
  that no dilation can reach on small maps.
- ``fuse``: 1x1 convolution initialised to zero, so a fresh block is exactly the identity and inserting it
  into a (pretrained or random) U-Net does not change what the network computes until it learns to.

Convolution, norm and nonlinearity are those of the U-Net the block sits in (:class:`CFBLayers`, read from the
plans' ``arch_kwargs`` by :mod:`nnunet_slem.network.slem_network`; nnU-Net's defaults, InstanceNorm and
LeakyReLU, otherwise), and its convolutions start from nnU-Net's ``InitWeights_He(1e-2)``, as the U-Net's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from dynamic_network_architectures.building_blocks.helper import (
    convert_conv_op_to_dim,
    convert_dim_to_conv_op,
    get_matching_instancenorm,
    get_matching_pool_op,
)
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn


@dataclass
class CFBConfig:
    """Research knobs of the CFB; stored in checkpoints and readable from the plans (key ``slem_cfb``)."""

    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    reduction: int = 4
    image_pooling: bool = True
    min_extent: int = 8
    stage: int | None = None
    #: False builds the plain nnU-Net network (an identity in the CFB's place, no ``cfb.*`` keys): the
    #: "without CFB" arms of the comparison
    enabled: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> CFBConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Unknown CFB option(s) {sorted(unknown)}; valid options are "
                f"{sorted(cls.__dataclass_fields__)}. Fix the 'slem_cfb' entry of your plans."
            )
        return cls(**d)


#: The CFB the paper describes: what ``SLeMTrainer`` and ``nnunet-slem pretrain`` build unless the plans' ``slem_cfb``
#: (or a trainer variant) says otherwise. Module-level so pretraining and fine-tuning read one definition.
DEFAULT_CFB = CFBConfig()

def usable_dilations(dilations: Sequence[int], feature_map_size: Sequence[int]) -> list[tuple[int, ...]]:
    """Per-axis dilations that see real features on a map of ``feature_map_size``, duplicates removed.

    Along an axis of extent ``s``, a 3-tap kernel with dilation ``d`` reads positions ``x - d, x, x + d``.
    Both off-centre taps are inside the map for some ``x`` only while ``d <= (s - 1) // 2``; from
    ``d = s / 2`` on, every position reads padding through at least one tap, so the branch no longer relates
    a position to both of its neighbours. We cap per axis at ``(s - 1) // 2`` (anisotropic maps keep large
    dilations in-plane) and drop duplicates. An axis of extent 1 or 2 gets dilation 1 (its off-centre taps
    see padding whatever the dilation).
    """
    result: list[tuple[int, ...]] = []
    for d in dilations:
        if d < 1:
            raise ValueError(f"CFB dilations must be >= 1, got {d}")
        per_axis = tuple(max(1, min(d, (s - 1) // 2)) for s in feature_map_size)
        if per_axis not in result:
            result.append(per_axis)
    return result


@dataclass(frozen=True)
class CFBLayers:
    """The layer types of the CFB, with the meaning (and names) of nnU-Net's ``arch_kwargs``: ``None`` for
    ``norm_op`` or ``nonlin`` leaves that layer out, as in nnU-Net's U-Net."""

    conv_op: type[nn.Module]
    norm_op: type[nn.Module] | None
    norm_op_kwargs: dict
    nonlin: type[nn.Module] | None
    nonlin_kwargs: dict

    @classmethod
    def nnunet_default(cls, dim: int) -> CFBLayers:
        """What nnU-Net's planner puts into the plans: InstanceNorm (affine, eps 1e-5), LeakyReLU (slope 1e-2)."""
        if dim not in (2, 3):
            raise ValueError(f"The CFB supports 2D and 3D feature maps, got {dim} spatial dimensions")
        conv_op = convert_dim_to_conv_op(dim)
        return cls(conv_op, get_matching_instancenorm(conv_op), {"eps": 1e-5, "affine": True},
                   nn.LeakyReLU, {"inplace": True})

    def norm(self, channels: int) -> nn.Module:
        return self.norm_op(channels, **(self.norm_op_kwargs or {})) if self.norm_op is not None else nn.Identity()

    def activation(self) -> nn.Module:
        return self.nonlin(**(self.nonlin_kwargs or {})) if self.nonlin is not None else nn.Identity()


class ContextualFusionBlock(nn.Module):
    """Parallel dilated branches plus image pooling, fused by a zero-initialised 1x1 conv (identity at init)."""

    def __init__(
        self,
        channels: int,
        feature_map_size: Sequence[int],
        dilations: Sequence[int] = (1, 2, 4, 8),
        reduction: int = 4,
        image_pooling: bool = True,
        layers: CFBLayers | None = None,
    ) -> None:
        super().__init__()
        dim = len(feature_map_size)
        layers = layers or CFBLayers.nnunet_default(dim)
        if convert_conv_op_to_dim(layers.conv_op) != dim:
            raise ValueError(f"The CFB's conv_op {layers.conv_op.__name__} does not fit a {dim}D feature map")
        conv, pool = layers.conv_op, get_matching_pool_op(layers.conv_op, adaptive=True, pool_type="avg")
        branch_channels = max(channels // reduction, 8)
        self.dilations = usable_dilations(dilations, feature_map_size)
        self.feature_map_size = tuple(int(s) for s in feature_map_size)
        # module positions (branch: 0 conv, 1 norm, 2 nonlin; image_pool: 1 conv) are checkpoint keys: keep them
        self.branches = nn.ModuleList(
            nn.Sequential(
                conv(channels, branch_channels, 3, padding=d, dilation=d, bias=False),
                layers.norm(branch_channels),
                layers.activation(),
            )
            for d in self.dilations
        )
        self.image_pool = (
            nn.Sequential(pool(1), conv(channels, branch_channels, 1), layers.activation())
            if image_pooling
            else None
        )
        n_paths = len(self.branches) + (1 if image_pooling else 0)
        self.fuse = conv(n_paths * branch_channels, channels, 1)
        self.apply(InitWeights_He(1e-2))  # as nnU-Net initialises the U-Net's convolutions
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = [branch(x) for branch in self.branches]
        if self.image_pool is not None:
            paths.append(self.image_pool(x).expand(-1, -1, *x.shape[2:]))
        return x + self.fuse(torch.cat(paths, dim=1))
