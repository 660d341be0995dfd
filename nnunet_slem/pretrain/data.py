"""Images for pretraining: nnU-Net's preprocessed cases plus optional unlabeled images, as random patches.

Labels never reach pretraining: patch positions are drawn uniformly over each image (no foreground
oversampling, unlike nnU-Net's loader) and only the image array of a case is ever read. Unlabeled images
are preprocessed once with nnU-Net's own preprocessor and the same plans, and cached as ``.npy`` next to
the preprocessed dataset, so they are normalised and resampled exactly like the labelled ones.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_slem.errors import UserFacingError


class ImageSource:
    """Uniform access to the image arrays (C, *spatial) of preprocessed and cached unlabeled cases."""

    def __init__(self, preprocessed_folder: str | os.PathLike | None, unlabeled_folder: str | os.PathLike | None):
        self.items: list[tuple[str, str]] = []  # (kind, identifier or path)
        self._dataset = None
        if preprocessed_folder is not None:
            folder = str(preprocessed_folder)
            dataset_class = infer_dataset_class(folder)
            self._dataset = dataset_class(folder)
            self.items += [("nnunet", i) for i in self._dataset.identifiers]
        if unlabeled_folder is not None:
            self.items += [("npy", str(p)) for p in sorted(Path(unlabeled_folder).glob("*.npy"))]
        if not self.items:
            raise UserFacingError(
                f"No images to pretrain on in {preprocessed_folder} or {unlabeled_folder}. Run "
                "nnUNetv2_plan_and_preprocess for this dataset and configuration first."
            )

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int):
        """The image array of one case (memory-mapped where the format allows); never its segmentation."""
        kind, ref = self.items[index]
        if kind == "npy":
            return np.load(ref, mmap_mode="r")
        data, _seg_unread, _prev, _props = self._dataset.load_case(ref)
        return data


def random_patch(image, patch_size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed patch, zero-padded where the image is smaller than the patch."""
    spatial = image.shape[1:]
    starts = [int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(spatial, patch_size)]
    src = tuple(slice(max(0, st), min(s, st + p)) for st, s, p in zip(starts, spatial, patch_size))
    out = np.zeros((image.shape[0], *patch_size), dtype=np.float32)
    dst = tuple(slice(sl.start - st, sl.stop - st) for sl, st in zip(src, starts))
    out[(slice(None), *dst)] = np.asarray(image[(slice(None), *src)], dtype=np.float32)
    return out


def random_mirror(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip each spatial axis with probability 1/2 (nnU-Net's cheapest augmentation, label-free)."""
    axes = [a + 1 for a in range(patch.ndim - 1) if rng.random() < 0.5]
    return np.ascontiguousarray(np.flip(patch, axis=axes)) if axes else patch


class PatchStream(torch.utils.data.IterableDataset):
    """Endless batches of random patches; seeded per (seed, epoch, worker) so resumed runs replay exactly."""

    def __init__(self, source: ImageSource, patch_size: Sequence[int], batch_size: int, seed: int,
                 epoch: int = 0, mirror: bool = True) -> None:
        super().__init__()
        self.source, self.patch_size, self.batch_size = source, tuple(int(p) for p in patch_size), batch_size
        self.seed, self.epoch, self.mirror = seed, epoch, mirror

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        while True:
            batch = []
            for _ in range(self.batch_size):
                patch = random_patch(self.source.image(int(rng.integers(len(self.source)))), self.patch_size, rng)
                batch.append(random_mirror(patch, rng) if self.mirror else patch)
            yield torch.from_numpy(np.stack(batch))


def batch_loader(stream: PatchStream, num_workers: int, pin_memory: bool) -> Iterator[torch.Tensor]:
    """Background workers keep the accelerator fed; ``num_workers=0`` loads in the training process."""
    return iter(torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None,
    ))


_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\..+)$")


def find_unlabeled_cases(images_dir: str | os.PathLike, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """Group ``CASE_XXXX<ending>`` files by case; every case must have all channels."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserFacingError(f"--unlabeled folder {images_dir} does not exist.")
    cases: dict[str, dict[int, str]] = {}
    for f in sorted(images_dir.iterdir()):
        m = _CHANNEL_FILE.match(f.name)
        if m and m["ending"] == file_ending:
            cases.setdefault(m["case"], {})[int(m["channel"])] = str(f)
    if not cases:
        raise UserFacingError(
            f"No images named CASE_0000{file_ending} in {images_dir}. Unlabeled images must follow nnU-Net's "
            "imagesTr naming, one file per channel."
        )
    for case, channels in cases.items():
        if sorted(channels) != list(range(num_channels)):
            raise UserFacingError(
                f"Unlabeled case {case} has channels {sorted(channels)}, the dataset has {num_channels} "
                f"(0..{num_channels - 1}). Provide every channel as {case}_XXXX{file_ending}."
            )
    return {case: [channels[c] for c in range(num_channels)] for case, channels in cases.items()}


def preprocess_unlabeled(images_dir: str | os.PathLike, cache_folder: str | os.PathLike,
                         plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                         dataset_json: dict) -> Path:
    """Run nnU-Net's preprocessor (same plans) on unlabeled images once; cached cases are skipped."""
    num_channels = len(dataset_json["channel_names"])
    cases = find_unlabeled_cases(images_dir, dataset_json["file_ending"], num_channels)
    cache_folder = Path(cache_folder)
    cache_folder.mkdir(parents=True, exist_ok=True)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    todo = [c for c in cases if not (cache_folder / f"{c}.npy").is_file()]
    for case in tqdm(todo, desc="preprocessing unlabeled images", disable=not todo):
        data, _, _ = preprocessor.run_case(cases[case], None, plans_manager, configuration_manager, dataset_json)
        fd, tmp = tempfile.mkstemp(prefix=f".{case}.", suffix=".tmp", dir=cache_folder)
        with os.fdopen(fd, "wb") as f:
            np.save(f, data.astype(np.float32, copy=False))
        os.replace(tmp, cache_folder / f"{case}.npy")
    return cache_folder
