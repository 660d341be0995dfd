"""Seeded augmentation workers: paired arms see the same patches and augmentations with ``nnUNet_n_proc_DA > 0``.

nnU-Net runs its data augmentation in background workers (``NonDetMultiThreadedAugmenter`` with
``seeds=None``): every worker starts from an unseeded numpy state, inherits the parent's torch state (so all
workers draw the same torch numbers), and batches arrive in whichever order the workers finish. Two runs at one
``SLEM_SEED`` therefore see different batches on a GPU machine, and pairing holds only with
``nnUNet_n_proc_DA=0``.

With ``SLEM_SEED`` set, :func:`seeded_augmenters` makes nnU-Net's own ``get_dataloaders`` build
batchgenerators' ``MultiThreadedAugmenter`` instead: the same workers and transforms, batches collected
round-robin (a deterministic order), and worker ``i`` of loader ``k`` (0 = training, 1 = validation, in the
order nnU-Net builds them) seeded with ``SeedSequence([SLEM_SEED, k]).generate_state(n)[i]`` for numpy (by
batchgenerators) and for torch (:class:`_TorchSeededThreadId`). The price is the non-deterministic augmenter's
slack: a slow batch holds back the next one instead of being overtaken.

Nothing of nnU-Net's code is copied: its ``get_dataloaders`` runs unchanged, only the augmenter class it looks
up is swapped for the duration of that call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter


def worker_seeds(seed: int, loader: int, n_workers: int) -> list[int]:
    """One 32-bit seed per worker of loader ``loader`` (0: training, 1: validation), derived from ``seed``."""
    return [int(s) for s in np.random.SeedSequence([seed, loader]).generate_state(n_workers)]


class _TorchSeededThreadId:
    """Replaces a data loader's ``set_thread_id``, which batchgenerators calls first thing in every worker:
    seeds torch with that worker's seed, then does what the loader's own method does. A class, not a closure, so
    it also pickles where workers are spawned."""

    def __init__(self, original, seeds: list[int]) -> None:
        self.original, self.seeds = original, seeds

    def __call__(self, thread_id: int) -> None:
        torch.manual_seed(self.seeds[thread_id])
        self.original(thread_id)


def seeded_augmenter(seed: int, loader: int, data_loader, transform, num_processes: int, num_cached: int = 2,
                     seeds=None, pin_memory: bool = False, wait_time: float = 0.02) -> MultiThreadedAugmenter:
    """What nnU-Net's ``NonDetMultiThreadedAugmenter(...)`` call gets instead: a deterministic, seeded one."""
    del seeds  # nnU-Net passes None; ours come from SLEM_SEED
    per_worker = worker_seeds(seed, loader, num_processes)
    data_loader.set_thread_id = _TorchSeededThreadId(data_loader.set_thread_id, per_worker)
    return MultiThreadedAugmenter(data_loader, transform, num_processes,
                                  num_cached_per_queue=max(1, num_cached // num_processes), seeds=per_worker,
                                  pin_memory=pin_memory, wait_time=wait_time)


@contextmanager
def seeded_augmenters(seed: int) -> Iterator[None]:
    """Within the block, nnU-Net's trainer module builds :func:`seeded_augmenter`s (training first, then
    validation) where it would build ``NonDetMultiThreadedAugmenter``s."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    original = trainer_module.NonDetMultiThreadedAugmenter
    built = iter(range(1 << 30))

    def factory(*args, **kwargs):
        return seeded_augmenter(seed, next(built), *args, **kwargs)

    trainer_module.NonDetMultiThreadedAugmenter = factory
    try:
        yield
    finally:
        trainer_module.NonDetMultiThreadedAugmenter = original
