"""Classification pretexts whose classes are the rows of a fixed table: SLeM (block-to-modality assignments) and
Taleb's puzzle (tile permutations).

Both store the table itself in the checkpoint (a rebuilt one could differ if the builder ever changed), keep one
copy of it per device, draw ``(images, labels, draws)`` in ``sample`` and return the first two from a call.
This base holds that common part so the two pretexts only say what their table means.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from nnunet_slem.pretext.base import ClassificationPretext

__all__ = ["ClassTablePretext"]


class ClassTablePretext(ClassificationPretext):
    """Class ``k`` is ``table[k]``; subclasses set :attr:`table_key`, call this ``__init__`` and then
    :meth:`_set_table` in theirs."""

    #: the table's key in :meth:`state_dict` and its keyword argument in ``__init__``
    table_key: ClassVar[str]
    state_format_version: ClassVar[int] = 1
    config: Any
    num_modalities: int
    spatial_dims: int

    def __init__(self, config: Any, num_modalities: int, spatial_dims: int) -> None:
        self.config = config
        self.num_modalities = int(num_modalities)
        self.spatial_dims = int(spatial_dims)

    def _set_table(self, table: Tensor) -> None:
        self.table = table
        self._on_device: dict[torch.device, Tensor] = {}

    @property
    def num_classes(self) -> int:
        return int(self.table.shape[0])

    def table_on(self, device: torch.device) -> Tensor:
        """The table on ``device``, copied there once."""
        if device not in self._on_device:
            self._on_device[device] = self.table.to(device)
        return self._on_device[device]

    def sample(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Any]:
        raise NotImplementedError  # pragma: no cover - every subclass draws its own extras

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Uniformly random labels in ``[0, K)`` (and the subclass's other draws); returns ``(inputs, labels)``."""
        out, labels, _ = self.sample(images, generator)
        return out, labels

    def state_dict(self) -> dict:
        """JSON- and ``weights_only``-safe: config dict, the table as nested int lists, M and dims."""
        return {
            "format_version": self.state_format_version,
            "config": self.config.to_dict(),
            self.table_key: self.table.tolist(),
            "num_modalities": self.num_modalities,
            "spatial_dims": self.spatial_dims,
        }

    @classmethod
    def _stored_kwargs(cls, state: dict) -> dict:
        """``__init__`` keyword arguments (all but the config) that rebuild the stored task, table included."""
        return {
            "num_modalities": int(state["num_modalities"]),
            "spatial_dims": int(state["spatial_dims"]),
            cls.table_key: np.asarray(state[cls.table_key], dtype=np.int64),
        }
