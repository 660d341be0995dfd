"""Reconstructive SLeM (``--pretext slem_recon``): SLeM's block recombination with a dense target.

SLeM's classification pretext trains the encoder and the CFB; the decoder starts fine-tuning at random. This
variant keeps the recombination and asks the whole U-Net to undo it, in the spirit of BrainMVP (Rui et al.,
CVPR 2025) and M3AE (Liu et al., AAAI 2023): masked regions of one sequence are synthesised from the others.
What one call does to a batch ``images`` of shape ``(N, M, *spatial)``:

1. **Recombine** exactly as SLeM does (:class:`~nnunet_slem.pretext.slem.SLeMPretext`: a block grid with
   jittered cuts, an assignment ``A[y]`` of shape ``(B, M)`` per sample, ``out[c, block b] = in[A[y][b, c],
   block b]``), with the input guard ``normalization`` (below).
2. **Mask block-channels**: each (block, input channel) pair is zeroed with probability ``mask_ratio``, never
   all channels of a block (the largest draw survives), drawn independently of the label.
3. **Targets**: the original patch in the original channel order, in nnU-Net's intensity space (what
   fine-tuning sees), plus which original channel of which block was masked, the foreground and the label,
   packed along channels (the pretraining loop splits targets along the batch axis only).

The network is the whole U-Net (pretext kind ``"dense"``) with ``M + K`` output channels: ``M`` reconstruct
the sequences, ``K`` (the assignments) are per-voxel logits whose mean over the patch classifies the
assignment, the auxiliary head (weight ``aux_weight``). The loss is the mean squared error over the foreground
voxels (where any channel of the original patch is non-zero: skull-stripped background is exactly 0 and
carries nothing to learn) of all ``M`` channels, plus ``aux_weight`` times the assignment cross-entropy. The
score is the R2 on the masked foreground block-channels: the cross-modal synthesis, the part no copying solves.

**Input guard and target space, chosen together.** The target is in nnU-Net's z-score space, so the absolute
contrast between sequences (enhancing tumour is bright in T1ce and not in T1) is what the decoder must
produce. The default ``normalization="none"`` feeds the recombined blocks in that same space: the visible
block-channels then only have to be routed back to their sequence (easy, and the block histograms give the
assignment away: the auxiliary head's shortcut is admitted, since the assignment is not what this pretext is
for), and the masked ones must be synthesised from the other sequences of the block, which show the same
anatomy: neither copying nor impossible. SLeM's per-block rank normalisation (``"rank"``) would remove each
block's level and spread from the inputs while the target keeps them: part of the target would be
unpredictable from the inputs, and the encoder would learn to be invariant to the very contrast the target
asks for. ``"rank"`` and ``"zscore"`` stay available as knobs.

**Shortcut audit and probes.** ``nnunet-slem audit`` and the pretraining probes test whether block statistics or
seams solve SLeM's *classification*; here that classification is auxiliary and knowingly solvable from
histograms (above), so they do not apply and the pretraining skips them. The synthesis target has no such
shortcut by construction: a masked block-channel is 0 in the input, whatever its sequence.

Randomness: labels, layouts and masks come from the ``torch.Generator`` passed in (one per sample in the
pretraining loop), so a resumed run replays the samples of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import StoredConfig
from nnunet_slem.pretext.checks import check_image_batch, check_state_version
from nnunet_slem.pretext.mae import masked_r2
from nnunet_slem.pretext.slem import SLeMPretext, SLeMPretextConfig, default_grid

__all__ = ["SLeMReconConfig", "SLeMReconPretext"]

STATE_FORMAT_VERSION = 1


@dataclass
class SLeMReconConfig(StoredConfig):
    """The task: SLeM's recombination settings, the masking and the auxiliary weight; stored in checkpoints.

    Attributes:
        grid, random_unsplit_axis, num_assignments, jitter, min_block, foreground_only: as SLeM's
            (:class:`~nnunet_slem.pretext.slem.SLeMPretextConfig`); ``grid`` empty: SLeM's default for the
            patch's dimensionality.
        normalization: the input guard per block and channel: ``"none"`` (default, module docstring),
            ``"zscore"`` or ``"rank"``.
        mask_ratio: probability that a (block, channel) pair is zeroed in the input (a research knob).
        aux_weight: weight of the assignment cross-entropy next to the reconstruction loss (0: off).
        seed: seeds the assignment set, as SLeM's.
    """

    stored_as = "reconstructive SLeM pretext"

    grid: tuple[int, ...] = ()
    random_unsplit_axis: bool = True
    num_assignments: int | None = None
    jitter: float = 0.1
    min_block: int = 4
    foreground_only: bool = True
    normalization: str = "none"
    mask_ratio: float = 0.5
    aux_weight: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, (int, float)) \
                or not 0.0 <= self.mask_ratio < 1.0:
            raise PretextConfigError(f"mask_ratio must be a probability in [0, 1), got {self.mask_ratio!r} "
                                     "(default 0.5).")
        if isinstance(self.aux_weight, bool) or not isinstance(self.aux_weight, (int, float)) \
                or not 0.0 <= self.aux_weight < float("inf"):
            raise PretextConfigError(f"aux_weight must be a finite number >= 0, got {self.aux_weight!r} "
                                     "(default 0.1; 0 switches the auxiliary head off).")
        self.mask_ratio, self.aux_weight = float(self.mask_ratio), float(self.aux_weight)

    def slem_config(self, spatial_dims: int) -> SLeMPretextConfig:
        """SLeM's recombination with this task's guard; SLeM's other guards and variants off (the target, not a
        classifier, decides what is learnt)."""
        return SLeMPretextConfig(grid=self.grid or default_grid(spatial_dims),
                                 random_unsplit_axis=self.random_unsplit_axis, num_assignments=self.num_assignments,
                                 seed=self.seed, jitter=self.jitter, min_block=self.min_block,
                                 normalization=self.normalization, intensity_aug=False,
                                 foreground_only=self.foreground_only)


class SLeMReconPretext:
    """Recombined, partly masked blocks in; the original sequences (and the assignment) out."""

    name: ClassVar[str] = "slem_recon"
    kind: ClassVar[str] = "dense"
    metric_name: ClassVar[str] = "masked R2"
    extra_channels: ClassVar[int] = 0

    def __init__(self, config: SLeMReconConfig, num_modalities: int, spatial_dims: int,
                 slem: SLeMPretext | None = None) -> None:
        self.config = config
        self.num_modalities, self.spatial_dims = int(num_modalities), int(spatial_dims)
        self.slem = slem or SLeMPretext(config.slem_config(spatial_dims), num_modalities=num_modalities,
                                        spatial_dims=spatial_dims)

    @property
    def num_assignments(self) -> int:
        return self.slem.num_classes

    @property
    def num_classes(self) -> int:
        """Output channels: one reconstruction per modality, then one logit per assignment."""
        return self.num_modalities + self.num_assignments

    @property
    def chance(self) -> float:
        """The R2 of predicting each masked channel's mean."""
        return 0.0

    def check_patch(self, patch_size: tuple[int, ...]) -> None:
        self.slem.check_patch(patch_size)

    def extra_input(self, preprocessed_base: Path, data_identifier: str) -> None:
        """The images are all it needs."""
        return None

    # ------------------------------------------------------------------------------------------ sampling
    def _masks(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``(N, B, M)`` bools over (block, input channel): zeroed with probability ``mask_ratio``, never all
        channels of a block."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, self.slem.num_blocks, self.num_modalities), generator=generator, device=gen_device)
        drop = (u < self.config.mask_ratio) & (u != u.max(dim=-1, keepdim=True).values)
        return drop.to(device)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(inputs (N, M, *S), targets (N, 2M + 2, *S))``: targets are the original images, the mask in the
        original channel order (1 = that sequence of that block was hidden), the foreground and the label (a
        constant channel)."""
        check_image_batch(images, self.num_modalities, self.spatial_dims)
        n, m = images.shape[0], self.num_modalities
        labels, layouts = self.slem._draw(images, n, generator)
        inputs = self.slem.apply(images, labels, layouts, generator)
        drop = self._masks(n, generator, images.device)
        perms = self.slem.table_on(images.device).index_select(0, labels)  # (N, B, M): input c <- original
        hidden = torch.zeros((n, m, *images.shape[2:]), dtype=images.dtype, device=images.device)
        for i, layout in enumerate(layouts):
            for b, slices in enumerate(layout.block_slices()):
                shape = (m, *(1,) * len(slices))
                inputs[(i, slice(None), *slices)] = inputs[(i, slice(None), *slices)].masked_fill(
                    drop[i, b].view(shape), 0)
                original = torch.zeros(m, dtype=torch.bool, device=images.device)
                original[perms[i, b]] = drop[i, b]  # input channel c shows original channel perms[i, b, c]
                hidden[(i, slice(None), *slices)] = original.view(shape).to(images.dtype)
        foreground = (images != 0).any(dim=1, keepdim=True).to(images.dtype)
        label_channel = labels.to(images.dtype).view(n, 1, *(1,) * (images.ndim - 2)).expand_as(foreground)
        return inputs, torch.cat([images, hidden, foreground, label_channel], dim=1)

    # ------------------------------------------------------------------------------------ loss and score
    def _split(self, output: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        m, k = self.num_modalities, self.num_assignments
        if (output.ndim != targets.ndim or output.shape[1] != m + k or targets.shape[1] != 2 * m + 2
                or output.shape[0] != targets.shape[0] or output.shape[2:] != targets.shape[2:]):
            raise ValueError(f"expected an (N, {m + k}, *S) output and (N, {2 * m + 2}, *S) targets, got "
                             f"{tuple(output.shape)} and {tuple(targets.shape)}.")
        output, targets = output.float(), targets.float()
        logits = output[:, m:].flatten(2).mean(dim=2)
        labels = targets[:, -1].flatten(1)[:, 0].round().long()
        return output[:, :m], logits, targets[:, :m], targets[:, m:2 * m], targets[:, 2 * m:2 * m + 1], labels

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        """MSE over the foreground voxels of every channel + ``aux_weight`` x the assignment cross-entropy."""
        recon, logits, images, _, foreground, labels = self._split(output, targets)
        weight = foreground.expand_as(images)
        mse = ((recon - images) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)
        if not self.config.aux_weight:
            return mse
        return mse + self.config.aux_weight * nn.functional.cross_entropy(logits, labels)

    def score(self, output: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``(sum of the samples' R2 on masked foreground block-channels, samples with such voxels that vary)``."""
        with torch.no_grad():
            recon, _, images, hidden, foreground, _ = self._split(output.detach(), targets)
            return masked_r2(recon, images, hidden * foreground)

    # --------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """The format version, the config, and SLeM's state (its assignment table itself, not a rebuilt one)."""
        return {"format_version": STATE_FORMAT_VERSION, "config": self.config.to_dict(),
                "num_modalities": self.num_modalities, "spatial_dims": self.spatial_dims,
                "slem": self.slem.state_dict()}

    @classmethod
    def from_state_dict(cls, d: dict) -> SLeMReconPretext:
        check_state_version(d, STATE_FORMAT_VERSION, "reconstructive SLeM pretext")
        return cls(SLeMReconConfig.from_dict(d["config"]), int(d["num_modalities"]), int(d["spatial_dims"]),
                   slem=SLeMPretext.from_state_dict(d["slem"]))


def assignment_of(pretext: SLeMReconPretext, labels: Sequence[int]) -> Tensor:
    """The ``(len(labels), B, M)`` assignments of ``labels`` (input channel ``c`` of block ``b`` shows original
    channel ``A[b, c]``), for tests and figures."""
    return pretext.slem.table.index_select(0, torch.as_tensor(list(labels), dtype=torch.long))
