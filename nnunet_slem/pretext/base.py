"""What every pretext offers the pretraining loop, so SLeM and its baselines share one data pipeline,
checkpoint format and fine-tuning path.

A pretext turns a batch of image patches ``(N, M, *spatial)`` into network inputs and targets, says how to
score the network's output, and serialises itself into the checkpoint. Two kinds exist:

* ``"classification"`` (SLeM, Taleb's puzzle): the pretraining model is encoder + CFB + a grid-pooled
  linear head (:class:`~nnunet_slem.pretrain.model.PretextClassifier`), the output is ``(N, num_classes)``
  logits and the score is accuracy;
* ``"dense"`` (supervoxels): the pretraining model is the whole U-Net with ``num_classes`` output channels
  used as a per-voxel embedding (:class:`~nnunet_slem.pretrain.model.PretextSegmenter`); the pretext's own
  ``loss`` and ``score`` interpret it. The decoder is pretrained too, except its final 1x1 segmentation
  layers, which fine-tuning replaces.

Randomness: a call takes a ``torch.Generator`` (on the CPU) for every random draw, so the pretraining loop can
give each sample its own seeded generator (see :mod:`nnunet_slem.pretrain.data`).

Extra inputs: a pretext that needs more than the images (the supervoxel pretext: each case's supervoxel map)
declares it with ``extra_channels`` and :meth:`Pretext.extra_input`, an :class:`ExtraInput` that computes the
per-case arrays once before pretraining and loads them; the loop calls it the same way for every pretext and
the loader appends the array's window to each patch, so the loop knows nothing of what the channel means.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn


class CaseImages(Protocol):
    """What an :class:`ExtraInput` needs of the pretraining images (:class:`~nnunet_slem.pretrain.data.ImageSource`)."""

    def __len__(self) -> int: ...

    def image(self, index: int):
        """The ``(C, *spatial)`` image array of case ``index``."""

    def case_name(self, index: int) -> str:
        """A stable key of the case for per-case caches."""


@runtime_checkable
class ExtraInput(Protocol):
    """One extra input channel of a pretext: a ``(*spatial)`` array per case (e.g. its supervoxel ids), aligned with
    the case's image. The loader crops the same window from it as from the image and appends it after the
    image channels, so mirroring and zero padding treat it like an image channel."""

    def ensure(self, source: CaseImages) -> object:
        """Compute (and cache) whatever is missing for ``source``'s cases. One process calls it before
        pretraining while the others wait; afterwards every process and loader worker only calls :meth:`load`."""

    def load(self, source: CaseImages, index: int) -> np.ndarray:
        """The ``(*spatial)`` array of case ``index``."""


@runtime_checkable
class Pretext(Protocol):
    #: the ``--pretext`` name and the pretraining folder's prefix (``<Prefix>Pretrain__<plans>__<config>``)
    name: ClassVar[str]
    #: ``"classification"`` or ``"dense"`` (module docstring)
    kind: ClassVar[str]
    #: name of the score in logs and plots
    metric_name: ClassVar[str]
    #: extra input channels the pretext needs after the images (e.g. 1: the supervoxel map); 0 for most
    extra_channels: ClassVar[int]

    @property
    def num_classes(self) -> int:
        """Classes (classification) or output channels (dense)."""

    @property
    def chance(self) -> float | None:
        """The score of guessing, drawn as a reference line; ``None`` when there is no meaningful one."""

    def check_patch(self, patch_size: tuple[int, ...]) -> None:
        """Raise :class:`~nnunet_slem.pretext.assignments.PretextConfigError` if the patch cannot hold the task."""

    def extra_input(self, preprocessed_base: Path, data_identifier: str) -> ExtraInput | None:
        """Where the extra channel comes from (``None`` iff ``extra_channels == 0``): cached under the dataset's
        preprocessed folder ``preprocessed_base``, keyed by the configuration's ``data_identifier``."""

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)`` from ``(N, M + extra_channels, *spatial)`` patches, on the patches' device."""

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        """Scalar loss of the model's output."""

    def score(self, output: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        """``(sum, count)`` so that the score over many batches is ``sum / count``."""

    def state_dict(self) -> dict:
        """Plain lists/numbers/strings: stored in the checkpoint and compared on ``--resume``."""


class ClassificationPretext:
    """Loss, score and chance level shared by the classification pretexts."""

    kind: ClassVar[str] = "classification"
    metric_name: ClassVar[str] = "accuracy"
    extra_channels: ClassVar[int] = 0

    @property
    def num_classes(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    def extra_input(self, preprocessed_base: Path, data_identifier: str) -> None:
        """Classification pretexts need the images only."""
        return None

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(output, targets)

    def score(self, output: Tensor, targets: Tensor) -> tuple[Tensor, int]:
        return (output.detach().argmax(1) == targets).sum(), int(targets.numel())


def config_kwargs(config_class: type, d: dict, what: str) -> dict:
    """``d`` as keyword arguments of the dataclass ``config_class``; unknown keys are an error naming the known
    ones (a misspelt option would otherwise change the task silently, or be ignored)."""
    from nnunet_slem.pretext.assignments import PretextConfigError

    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise PretextConfigError(f"unknown {what} setting(s) {unknown}; known settings are {sorted(known)}.")
    return dict(d)


class StoredConfig:
    """``to_dict``/``from_dict`` of the pretexts' config dataclasses, which checkpoints store: tuples (grids)
    become lists, so the dict is JSON- and ``torch.load(weights_only=True)``-safe, and come back as tuples;
    unknown keys are an error (:func:`config_kwargs`). A subclass names itself for messages in ``stored_as``."""

    stored_as: ClassVar[str] = "pretext"

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        kwargs = config_kwargs(cls, d, cls.stored_as)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def grid_for(spatial_dims: int, grids: dict[int, tuple[int, ...]], task: str) -> tuple[int, ...]:
    """The default grid of ``task`` for ``spatial_dims``-D patches; an error for dimensions it has none for."""
    from nnunet_slem.pretext.assignments import PretextConfigError

    if spatial_dims not in grids:
        raise PretextConfigError(f"{task} supports 2D and 3D patches, got {spatial_dims} spatial dimensions.")
    return grids[spatial_dims]
