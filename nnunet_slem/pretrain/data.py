"""Images for pretraining: nnU-Net's preprocessed cases plus optional unlabeled images, as random patches.

Labels never reach pretraining: patch positions are drawn uniformly over each image (no foreground
oversampling, unlike nnU-Net's loader) and only the image array of a case is ever read. Unlabeled images
are preprocessed once with nnU-Net's own preprocessor and the same plans, and cached as ``.npy`` next to
the preprocessed dataset, so they are normalised and resampled exactly like the labelled ones.

**Every sample has its own seed.** Sample ``i`` of step ``s`` of epoch ``e`` is drawn from a numpy generator
seeded with ``(seed, stream, e, s, i)`` (case, position, mirroring), and the pretext's random draws for it
(label, block layout, intensity augmentation) come from a torch generator seeded from the same key
(:func:`pretext_seed`). Nothing depends on which process or loader worker produced the sample, so

- a run split over N processes (each taking a contiguous slice of the global batch's sample indices) sees
  exactly the global batch a single process sees;
- loader workers need no coordination: worker ``w`` of ``W`` produces steps ``w, w + W, ...`` (counted
  over all epochs of the stream), which the ``DataLoader`` hands out round-robin, i.e. in step order;
- a resumed run replays the remaining epochs exactly.

**Bad data is named, not dumped as a traceback.** A case that cannot be opened or read (a truncated or
corrupt ``.b2nd``/``.npy``) or a patch with NaN/Inf values raises :class:`UserFacingError` naming the case's
file and the fix. In loader workers the message travels back as a :class:`LoaderError` item and is raised
again in the training process, so the user sees the same one line either way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.base import ExtraInput

TRAIN_STREAM, EVAL_STREAM, AUDIT_STREAM = 0, 1, 2  # independent sample streams of one seed


def sample_rng(seed: int, stream: int, epoch: int, step: int, index: int) -> np.random.Generator:
    """The numpy generator of one sample (case, patch position, mirroring)."""
    return np.random.default_rng([seed, stream, epoch, step, index])


def pretext_seed(seed: int, stream: int, epoch: int, step: int, index: int) -> int:
    """Seed of the torch generator for one sample's pretext draws; independent of :func:`sample_rng`."""
    state = np.random.SeedSequence([seed, stream, epoch, step, index, 1]).generate_state(1, np.uint64)
    return int(state[0]) >> 1  # torch seeds are signed 64 bit


class ImageSource:
    """Uniform access to the image arrays (C, *spatial) of preprocessed and cached unlabeled cases.

    ``repair_hint`` is the command that rewrites the preprocessed data (shown when a case is unreadable).
    ``extra``: the pretext's extra input (:meth:`~nnunet_slem.pretext.base.Pretext.extra_input`), whose array of
    a case is appended to each of its patches as one more channel; its ``ensure`` must have run before the
    first patch is drawn.
    """

    def __init__(self, preprocessed_folder: str | os.PathLike | None, unlabeled_folder: str | os.PathLike | None,
                 repair_hint: str | None = None, extra: ExtraInput | None = None):
        self.items: list[tuple[str, str]] = []  # (kind, identifier or path)
        self.extra = extra
        self._dataset = None
        self._folder = Path(preprocessed_folder) if preprocessed_folder is not None else None
        self.repair_hint = repair_hint or "nnUNetv2_preprocess -d DATASET -c CONFIGURATION -plans_name PLANS"
        if preprocessed_folder is not None:
            folder = str(preprocessed_folder)
            self._refuse_dangling_links(Path(folder))
            dataset_class = infer_dataset_class(folder)
            self._dataset = dataset_class(folder)
            self.items += [("nnunet", i) for i in self._dataset.identifiers]
        self._pool = None
        if unlabeled_folder is not None:
            pool = Path(unlabeled_folder)
            if any(pool.glob("*.pkl")):  # nnU-Net's format (unlabeled_pool.preprocess_pool)
                self._pool = infer_dataset_class(str(pool))(str(pool))
                self.items += [("pool", i) for i in self._pool.identifiers]
            else:  # an older cache of float32 .npy files
                self.items += [("npy", str(p)) for p in sorted(pool.glob("*.npy"))]
        if not self.items:
            raise UserFacingError(
                f"No images to pretrain on in {preprocessed_folder} or {unlabeled_folder}. Run "
                "nnUNetv2_plan_and_preprocess for this dataset and configuration first."
            )

    def _refuse_dangling_links(self, folder: Path) -> None:
        """nnU-Net lists the folder with ``is_file()``, which raises on a symlink loop: name it instead."""
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink() and not os.path.exists(entry):
                raise UserFacingError(
                    f"Preprocessed case {entry} is a symbolic link that leads nowhere (a loop, or its target is "
                    f"missing). Remove it, or rewrite the preprocessed data with `{self.repair_hint}`.")

    def __len__(self) -> int:
        return len(self.items)

    def case_file(self, index: int) -> str:
        """The file holding a case's image array (for messages)."""
        kind, ref = self.items[index]
        if kind == "npy":
            return ref
        folder = Path(self._pool.source_folder) if kind == "pool" else self._folder
        candidates = sorted(folder.glob(f"{ref}.*"))
        data_files = [c for c in candidates if c.suffix in (".b2nd", ".npz", ".npy")]
        return str(data_files[0] if data_files else folder / ref)

    def _fix(self, index: int) -> str:
        if self.items[index][0] in ("npy", "pool"):
            also = " and its .pkl" if self.items[index][0] == "pool" else ""
            return (f"Delete it{also}; the next `nnunet-slem pretrain --unlabeled ...` preprocesses that image again "
                    "(or remove the image from the --unlabeled folder).")
        return f"Rewrite the preprocessed data with `{self.repair_hint}` (or remove the case from it)."

    def image(self, index: int):
        """The image array of one case (memory-mapped where the format allows); never its segmentation."""
        kind, ref = self.items[index]
        try:
            if kind == "npy":
                return np.load(ref, mmap_mode="r")
            data, _seg_unread, _prev, _props = (self._pool if kind == "pool" else self._dataset).load_case(ref)
            return data
        except Exception as e:  # blosc2 / numpy / pickle raise many types for truncated or corrupt files
            raise UserFacingError(self._unreadable(index, e)) from e

    def _unreadable(self, index: int, error: Exception) -> str:
        return (f"Cannot read preprocessed case {self.case_file(index)} ({type(error).__name__}: {error}); the "
                f"file is truncated or corrupt. {self._fix(index)}")

    def check(self, num_channels: int, target_spacing: Sequence[float] | None = None) -> None:
        """Every case once, before any output is written, so that a bad case fails at the start, not hours into
        a run: it opens (a truncated file fails here), is ``(channels, z, y, x)`` (nnU-Net writes 2d
        configurations' cases in 3D too) with dataset.json's channel count and a float dtype, has the shape its
        ``.pkl`` says nnU-Net resampled it to (``target_spacing``: the configuration's), and holds finite values
        of a plausible size that are not all constant. Values are read one channel of one case at a time."""
        for index in range(len(self)):
            image, properties = self._open(index)
            shape = tuple(int(n) for n in image.shape)
            if len(shape) != 4:
                raise UserFacingError(
                    f"Preprocessed case {self.case_file(index)} has shape {shape}, {len(shape)}-D; nnU-Net writes "
                    f"every case as (channels, z, y, x), 2d configurations included. {self._fix(index)}")
            if shape[0] != num_channels:
                raise UserFacingError(
                    f"Preprocessed case {self.case_file(index)} has shape {shape}, i.e. "
                    f"{shape[0]} channels, but dataset.json lists {num_channels}. {self._fix(index)}"
                )
            if np.dtype(image.dtype).kind != "f":
                raise UserFacingError(
                    f"Preprocessed case {self.case_file(index)} holds {np.dtype(image.dtype)} values; nnU-Net writes "
                    f"float32 images. {self._fix(index)}")
            expected = expected_shape(properties, target_spacing)
            if expected is not None and expected != shape[1:]:
                raise UserFacingError(
                    f"Preprocessed case {self.case_file(index)} has the spatial shape {shape[1:]}, but its .pkl "
                    f"(shape {tuple(properties['shape_after_cropping_and_before_resampling'])} at spacing "
                    f"{[round(float(v), 4) for v in properties['spacing']]}, resampled to {list(target_spacing)}) "
                    f"says {expected}. {self._fix(index)}")
            self._check_values(index, image)

    def _open(self, index: int) -> tuple[Any, dict | None]:
        """The image array and, for nnU-Net's cases, the properties from its ``.pkl``."""
        kind, ref = self.items[index]
        if kind == "npy":
            return self.image(index), None
        try:
            data, _seg_unread, _prev, properties = (self._pool if kind == "pool" else self._dataset).load_case(ref)
        except Exception as e:  # blosc2 / numpy / pickle raise many types for truncated or corrupt files
            raise UserFacingError(self._unreadable(index, e)) from e
        return data, properties if isinstance(properties, dict) else None

    def _non_finite(self, index: int, where: str) -> str:
        return (f"Preprocessed case {self.case_file(index)} contains NaN or Inf values ({where}). Fix the raw images "
                f"of this case (e.g. replace NaN/Inf with a background value) and preprocess again with "
                f"`{self.repair_hint}`, or remove the case.")

    def _check_values(self, index: int, image) -> None:
        """Finite, at most :data:`MAX_ABS_VALUE` in size, not every channel constant (e.g. all zeros)."""
        constant = 0
        for channel in range(image.shape[0]):
            try:
                values = np.asarray(image[channel])
            except Exception as e:
                raise UserFacingError(self._unreadable(index, e)) from e
            if not np.isfinite(values).all():
                raise UserFacingError(self._non_finite(index, f"channel {channel}, found when checking every case "
                                                          "at the start"))
            largest = float(np.abs(values).max()) if values.size else 0.0
            if largest > MAX_ABS_VALUE:
                raise UserFacingError(
                    f"Preprocessed case {self.case_file(index)} holds values up to {largest:.3g} in channel "
                    f"{channel}, far beyond what nnU-Net's normalisation gives (the file is damaged, or its raw "
                    f"image overflowed). {self._fix(index)}")
            constant += bool(values.size) and bool(values.min() == values.max())
        if constant == image.shape[0]:
            raise UserFacingError(
                f"Preprocessed case {self.case_file(index)} is blank: every channel is constant (e.g. all zeros), "
                f"nothing to learn from. {self._fix(index)}")

    def case_name(self, index: int) -> str:
        """The case identifier (preprocessed) or ``unlabeled__<file stem>``: a stable key for per-case caches."""
        kind, ref = self.items[index]
        return f"unlabeled__{Path(ref).stem}" if kind in ("npy", "pool") else ref

    def patch(self, index: int, patch_size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """A random patch of one case (see :func:`random_patch`), read errors and NaN/Inf named.

        With ``extra`` set, the same window of the case's extra array (e.g. its supervoxel map) is appended as
        one more channel."""
        image = self.image(index)
        try:
            window = patch_window(image.shape[1:], patch_size, rng)
            patch = crop(image, window, patch_size)
        except Exception as e:
            raise UserFacingError(self._unreadable(index, e)) from e
        if not np.isfinite(patch).all():
            raise UserFacingError(self._non_finite(index, "found in a sampled patch"))
        if self.extra is not None:
            patch = np.concatenate([patch, crop(self.extra.load(self, index)[None], window, patch_size)])
        return patch


#: Larger absolute values in a preprocessed case mean damage: nnU-Net's normalisations give values of order 1
#: (z-score), and even unnormalised 16-bit or float images stay far below this.
MAX_ABS_VALUE = 1e10


def expected_shape(properties: dict | None, target_spacing: Sequence[float] | None) -> tuple[int, ...] | None:
    """The spatial shape nnU-Net's preprocessor gives a case with these ``.pkl`` properties at
    ``target_spacing`` (the configuration's; the first axis keeps its spacing for 2d configurations), or ``None``
    where the properties do not say."""
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    try:
        old_shape = [int(n) for n in properties["shape_after_cropping_and_before_resampling"]]
        old_spacing = [float(v) for v in properties["spacing"]]
        target = [float(v) for v in target_spacing]
        if len(target) < len(old_spacing):
            target = old_spacing[: len(old_spacing) - len(target)] + target
        return tuple(int(n) for n in compute_new_shape(old_shape, old_spacing, target))
    except Exception:  # no .pkl properties, or not nnU-Net's: nothing to compare with
        return None


def patch_window(spatial: Sequence[int], patch_size: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Uniform start per axis; negative (the patch sticks out on both sides) where the image is smaller."""
    return [int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(spatial, patch_size)]


def crop(image, starts: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """The window at ``starts`` of a ``(C, *spatial)`` array as float32, zero where it leaves the image."""
    spatial = image.shape[1:]
    src = tuple(slice(max(0, st), min(s, st + p)) for st, s, p in zip(starts, spatial, patch_size))
    out = np.zeros((image.shape[0], *patch_size), dtype=np.float32)
    dst = tuple(slice(sl.start - st, sl.stop - st) for sl, st in zip(src, starts))
    out[(slice(None), *dst)] = np.asarray(image[(slice(None), *src)], dtype=np.float32)
    return out


def random_patch(image, patch_size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed patch, zero-padded where the image is smaller than the patch."""
    return crop(image, patch_window(image.shape[1:], patch_size, rng), patch_size)


def random_mirror(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip each spatial axis with probability 1/2 (nnU-Net's cheapest augmentation, label-free)."""
    axes = [a + 1 for a in range(patch.ndim - 1) if rng.random() < 0.5]
    return np.ascontiguousarray(np.flip(patch, axis=axes)) if axes else patch


@dataclass
class LoaderError:
    """A :class:`UserFacingError` raised in a loader worker, carried to the training process as an item."""

    message: str


class PatchStream(torch.utils.data.IterableDataset):
    """Batches of random patches: ``steps`` steps of each of ``epochs`` epochs from ``epoch`` on (``steps=None``:
    endless, one epoch). The batch of a step holds samples ``first_index .. first_index + batch_size - 1`` of
    that step, each seeded by its own key (module docstring).

    One stream for all remaining epochs of a run, not one per epoch: the loader workers start once and keep
    prefetching across epoch ends (while rank 0 evaluates and writes the checkpoint)."""

    def __init__(self, source: ImageSource, patch_size: Sequence[int], batch_size: int, seed: int,
                 epoch: int = 0, mirror: bool = True, *, stream: int = TRAIN_STREAM, first_index: int = 0,
                 steps: int | None = None, epochs: int = 1, dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        self.source, self.patch_size, self.batch_size = source, tuple(int(p) for p in patch_size), batch_size
        self.seed, self.epoch, self.mirror = seed, epoch, mirror
        self.stream, self.first_index, self.steps, self.epochs = stream, first_index, steps, epochs
        self.dtype = np.dtype(dtype)  # of the batches handed over (float16 halves the bytes moved to the GPU)

    def indices(self) -> range:
        """The sample indices (within the global batch) this stream produces at every step."""
        return range(self.first_index, self.first_index + self.batch_size)

    def sample(self, step: int, index: int, epoch: int | None = None) -> np.ndarray:
        rng = sample_rng(self.seed, self.stream, self.epoch if epoch is None else epoch, step, index)
        patch = self.source.patch(int(rng.integers(len(self.source))), self.patch_size, rng)
        return random_mirror(patch, rng) if self.mirror else patch

    def batch(self, step: int, epoch: int | None = None) -> torch.Tensor:
        """The batch of ``step`` of ``epoch`` (default: the stream's first epoch), in the stream's ``dtype``."""
        batch = None
        for j, i in enumerate(self.indices()):
            sample = self.sample(step, i, epoch)
            if batch is None:
                batch = np.empty((self.batch_size, *sample.shape), dtype=self.dtype)
            batch[j] = sample  # one conversion copy, no intermediate stack
        return torch.from_numpy(batch)

    def pretext_seeds(self, step: int, epoch: int | None = None) -> list[int]:
        """Seeds of the per-sample pretext generators for the batch of ``step`` (see :func:`pretext_seed`)."""
        epoch = self.epoch if epoch is None else epoch
        return [pretext_seed(self.seed, self.stream, epoch, step, i) for i in self.indices()]

    def __iter__(self) -> Iterator[torch.Tensor | LoaderError]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        total = None if self.steps is None else self.steps * self.epochs
        k = worker  # running step index over all epochs of the stream
        while total is None or k < total:
            epoch, step = (self.epoch, k) if self.steps is None else (self.epoch + k // self.steps, k % self.steps)
            try:
                yield self.batch(step, epoch)
            except UserFacingError as e:
                yield LoaderError(str(e))
                return
            k += num_workers


def batch_loader(stream: PatchStream, num_workers: int, pin_memory: bool) -> Iterator[torch.Tensor]:
    """Background workers keep the accelerator fed; ``num_workers=0`` loads in the training process.

    The workers start here, in the calling thread, not at the first batch: the batches may be consumed by
    another thread (:class:`~nnunet_slem.pretrain.feeder.DeviceFeeder`), and forking worker processes from
    a thread while the main thread runs torch code can deadlock the children on a lock held mid-fork.
    Batches arrive in step order (workers are read round-robin); a worker's :class:`LoaderError` is raised
    as the :class:`UserFacingError` it was.
    """
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None,
    )
    return _raise_loader_errors(iter(loader))


def _raise_loader_errors(items: Iterator[torch.Tensor | LoaderError]) -> Iterator[torch.Tensor]:
    for item in items:
        if isinstance(item, LoaderError):
            raise UserFacingError(item.message)
        yield item


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
