"""Multi-modal SLIC supervoxels of whole cases and their on-disk cache, for the supervoxel pretext.

Why a module of its own: the supervoxels are computed once per case before pretraining (numpy and
scikit-image, no torch), stored beside the preprocessed data and read back as memory maps; the pretext
(:mod:`~nnunet_slem.pretext.supervoxel`) only samples from the id maps the loader appends to the patches.

Ouyang et al. used Felzenszwalb's 2D superpixels per slice of one modality. We use 3D SLIC (scikit-image) on
all modalities jointly (``channel_axis=0``): the colour distance of SLIC is the Euclidean distance over the
channels, so a supervoxel boundary follows an edge visible in *any* modality (a lesion only seen in FLAIR, a
ventricle only seen in T1), which is the multi-modal information this plugin is about. SLIC measures distances
in the plans' spacing (:func:`plans_spacing`), so supervoxels on anisotropic data are compact in millimetres
rather than in voxels (without it they stretch along the coarse axis by its voxel size).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
from tqdm import tqdm

from nnunet_slem.atomic import write_atomic, write_json_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.assignments import PretextConfigError

__all__ = [
    "SUPERVOXEL_ALGORITHM_VERSION",
    "SupervoxelCache",
    "body_mask",
    "cache_folder_name",
    "compute_supervoxels",
    "plans_spacing",
]

#: bumped whenever :func:`compute_supervoxels` changes its output for the same settings (invalidates caches)
SUPERVOXEL_ALGORITHM_VERSION = 1
#: the body mask is used only if it excludes and keeps at least this fraction of the voxels
MASK_MIN_FRACTION = 0.05
#: per-channel robust intensity range (percentiles) mapped to [0, 1] before SLIC
ROBUST_PERCENTILES = (1.0, 99.0)
#: Gaussian pre-smoothing of SLIC (voxels): keeps noise from shattering supervoxels into fragments that the
#: connectivity step then merges into a few giant ones (seen on noisy synthetic volumes without it)
SLIC_SIGMA = 0.5


class SlicSettings(Protocol):
    """What the supervoxels depend on (:class:`~nnunet_slem.pretext.supervoxel.SupervoxelConfig` has it)."""

    n_segments: int
    compactness: float

    def supervoxel_params(self) -> dict: ...


def _as_numpy(image) -> np.ndarray:
    """A float32 numpy copy of a numpy, memory-mapped or blosc2 array (``[:]`` reads all of any of them)."""
    return np.asarray(image[:], dtype=np.float32)


def body_mask(image: np.ndarray) -> np.ndarray | None:
    """Voxels where any channel differs from that channel's most common value, or ``None`` (no mask).

    nnU-Net zeroes or constant-fills the background of skull-stripped data (BraTS-like), and SLIC would spend
    supervoxels on it; elsewhere (CT, MRI with real background signal) the most common value is an accident of
    noise. So the mask is used only if it is substantial both ways: it excludes and keeps at least 5 % each.
    """
    image = np.asarray(image)
    mask = np.zeros(image.shape[1:], dtype=bool)
    for channel in image:
        values, counts = np.unique(channel, return_counts=True)
        mask |= channel != values[np.argmax(counts)]
    kept = mask.mean() if mask.size else 0.0
    if kept < MASK_MIN_FRACTION or kept > 1.0 - MASK_MIN_FRACTION:
        return None
    return mask


def _robust_scale(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Each channel's 1st..99th percentile (inside ``mask``) mapped to [0, 1] and clipped.

    SLIC itself rescales the whole image by its global min and max, which makes ``compactness`` depend on the
    brightest outlier of the brightest modality (z-scored MRI has voxels at 10+ standard deviations) and lets
    the modality with the widest range dominate. Scaling each channel to its robust range gives every modality
    the same say and ``compactness`` a fixed meaning (see :class:`~nnunet_slem.pretext.supervoxel.SupervoxelConfig`).
    """
    out = np.empty_like(image, dtype=np.float32)
    for c, channel in enumerate(image):
        values = channel[mask] if mask is not None else channel
        lo, hi = np.percentile(values, ROBUST_PERCENTILES)
        span = hi - lo if hi > lo else 1.0
        out[c] = np.clip((channel - lo) / span, 0.0, 1.0)
    return out


def _relative_spacing(spacing: Sequence[float] | None, ndim: int | None = None) -> tuple[float, ...] | None:
    """``spacing`` divided by its finest axis (``None`` stays ``None``).

    Why relative: SLIC weighs spatial distance in units of its seed step, counted in voxels; absolute
    millimetres would rescale ``compactness`` with the voxel size (5 mm voxels: 25x the spatial weight). With
    the finest axis at 1, ``compactness`` keeps its meaning and isotropic data segments exactly as without
    spacing."""
    if spacing is None:
        return None
    values = tuple(float(v) for v in spacing)
    if not values or min(values) <= 0 or not all(np.isfinite(values)) or (ndim is not None and len(values) != ndim):
        raise ValueError(f"spacing must be {ndim or 'one'} positive finite value(s) per spatial axis, got {spacing}.")
    return tuple(v / min(values) for v in values)


def compute_supervoxels(image: np.ndarray, config: SlicSettings,
                        spacing: Sequence[float] | None = None) -> np.ndarray:
    """Multi-modal SLIC supervoxels of one case: int32 ids of shape ``image.shape[1:]``, 1.. inside, 0 outside.

    ``image`` is ``(C, X, Y, Z)`` (3D) or ``(C, X, Y)`` (2D), float; ``spacing`` its voxel size per spatial
    axis (the plans'; ``None``: isotropic). All channels are segmented jointly (``channel_axis=0``) after
    per-channel robust scaling (:func:`_robust_scale`) and a light Gaussian smoothing (``SLIC_SIGMA`` voxels
    along the finest axis, proportionally less along coarser ones); distances use the spacing relative to the
    finest axis (:func:`_relative_spacing`). Voxels outside the :func:`body_mask` (if it applies) get 0.
    Deterministic: SLIC's seeds are a grid, or for masked SLIC a k-means on a fixed-seed subsample of the mask,
    so the same image always gives the same ids.
    """
    from skimage.segmentation import slic  # imported here: only the supervoxel pretext needs scikit-image

    image = _as_numpy(image)
    if image.ndim not in (3, 4):
        raise ValueError(
            f"expected a (C, X, Y) or (C, X, Y, Z) image, got shape {image.shape}; add a channel axis first."
        )
    if not np.isfinite(image).all():
        raise ValueError("the image contains NaN or Inf values; SLIC cannot segment it.")
    relative = _relative_spacing(spacing, image.ndim - 1)
    mask = body_mask(image)
    scaled = _robust_scale(image, mask)
    labels = slic(
        scaled,
        n_segments=config.n_segments,
        compactness=config.compactness,
        channel_axis=0,
        convert2lab=False,  # else skimage treats exactly three modalities as RGB and converts them to Lab
        start_label=1,
        mask=mask,
        enforce_connectivity=True,
        sigma=SLIC_SIGMA,  # skimage divides a scalar sigma by the spacing per axis
        spacing=relative,
    )
    return labels.astype(np.int32, copy=False)


# --------------------------------------------------------------------------------------------------- cache


def cache_folder_name(data_identifier: str) -> str:
    """Folder name of a configuration's supervoxel cache (the caller puts it next to the preprocessed data)."""
    return f"slem_supervoxels__{data_identifier}"


def plans_spacing(preprocessed_base: str | os.PathLike, data_identifier: str) -> tuple[float, ...] | None:
    """The target spacing of the configuration whose preprocessed data is ``data_identifier``, read from the
    plans files in ``preprocessed_base`` with nnU-Net's ``PlansManager`` (which resolves ``inherits_from``).

    Why by data identifier: that is what the cache is named after, and every configuration sharing preprocessed
    data shares its spacing. ``None`` when no plans name it (data prepared by hand: isotropic SLIC); two
    different spacings for one identifier are a broken set of plans and an error."""
    found: dict[tuple[float, ...], str] = {}
    for path in sorted(Path(preprocessed_base).glob("*.json")):
        try:
            plans = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not plans (nnU-Net keeps other json files here); broken plans fail where they are used
        if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
            continue
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        manager = PlansManager(plans)
        for name in manager.available_configurations:
            configuration = manager.get_configuration(name)
            if configuration.data_identifier == data_identifier:
                found.setdefault(tuple(float(v) for v in configuration.spacing), f"{path.name} ({name})")
    if len(found) > 1:
        raise UserFacingError(f"Plans in {preprocessed_base} give the preprocessed data {data_identifier} different "
                              f"spacings: {found}; make those configurations agree (or use another data_identifier).")
    return next(iter(found), None)


class _Source(Protocol):
    """What the cache needs of :class:`~nnunet_slem.pretrain.data.ImageSource`."""

    def __len__(self) -> int: ...

    def image(self, index: int): ...

    def case_name(self, index: int) -> str: ...


class SupervoxelCache:
    """Supervoxel id maps of every case, computed once and stored as ``<folder>/<case_name>.npy`` (int32).

    The folder's ``config.json`` records the settings the maps depend on; a folder made with other settings is
    an error rather than silently reused; the plans' ``spacing`` (see :func:`compute_supervoxels`) is one of
    them. Every file is written atomically, so a killed run leaves no half file, and several processes
    (data-parallel ranks) may fill the cache at once: they write identical files.
    """

    CONFIG_FILE: ClassVar[str] = "config.json"

    def __init__(self, folder: str | os.PathLike, config: SlicSettings,
                 spacing: Sequence[float] | None = None) -> None:
        self.folder = Path(folder)
        self.config = config
        _relative_spacing(spacing)  # a bad spacing fails here, not in the middle of filling the cache
        self.spacing = None if spacing is None else tuple(float(v) for v in spacing)
        self._check_config_file()

    def params(self) -> dict:
        """The cache key: the SLIC settings and the spacing (``config.json``)."""
        return {**self.config.supervoxel_params(),
                "spacing": None if self.spacing is None else list(self.spacing)}

    def _check_config_file(self) -> None:
        path = self.folder / self.CONFIG_FILE
        if not path.is_file():
            return
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PretextConfigError(
                f"the supervoxel cache {self.folder} has an unreadable {self.CONFIG_FILE} ({e}); delete the "
                "folder, the next run computes the supervoxels again."
            ) from e
        wanted = self.params()
        relative = _relative_spacing(self.spacing)
        if isinstance(stored, dict) and "spacing" not in stored and (relative is None or set(relative) == {1.0}):
            # written before the spacing was recorded, by isotropic SLIC: what this (isotropic) run computes too
            stored = {**stored, "spacing": wanted["spacing"]}
        if stored != wanted:
            raise PretextConfigError(
                f"the supervoxel cache {self.folder} was computed with {stored}, but this run asks for {wanted}. "
                "Delete that folder to compute supervoxels with the new settings, or use the same settings."
            )

    def path(self, source: _Source, index: int) -> Path:
        return self.folder / f"{source.case_name(index)}.npy"

    def _valid(self, path: Path, spatial_shape: tuple[int, ...]) -> bool:
        """A cached map is reused only if its header reads and matches the image (shape and int32)."""
        try:
            ids = np.load(path, mmap_mode="r")
        except Exception:  # numpy raises many types for truncated or foreign files
            return False
        return ids.dtype == np.int32 and tuple(ids.shape) == tuple(spatial_shape)

    def ensure(self, source: _Source) -> int:
        """Compute the missing (or unreadable) maps of ``source``'s cases; returns how many were computed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_config_file()  # another process may have created the folder meanwhile
        if not (self.folder / self.CONFIG_FILE).is_file():
            write_json_atomic(self.folder / self.CONFIG_FILE, self.params())
        todo = []
        for index in range(len(source)):
            path = self.path(source, index)
            if not path.is_file() or not self._valid(path, tuple(source.image(index).shape[1:])):
                todo.append(index)
        for index in tqdm(todo, desc="computing supervoxels", disable=not todo):
            try:
                ids = compute_supervoxels(source.image(index), self.config, self.spacing)
            except ValueError as e:
                raise UserFacingError(f"Cannot compute supervoxels of case {_case_file(source, index)}: {e}") from e
            write_atomic(self.path(source, index), lambda f, ids=ids: np.save(f, ids))
        return len(todo)

    def load(self, source: _Source, index: int) -> np.ndarray:
        """The memory-mapped int32 id map of one case, or a :class:`UserFacingError` naming the file and fix."""
        path = self.path(source, index)
        if not path.is_file():
            raise UserFacingError(
                f"No supervoxels for case {source.case_name(index)} in {self.folder} (expected {path.name}). "
                "Compute them first (SupervoxelCache.ensure; the supervoxel pretraining does this at its start)."
            )
        try:
            ids = np.load(path, mmap_mode="r")
        except Exception as e:  # numpy raises many types for truncated or foreign files
            raise UserFacingError(
                f"Cannot read supervoxel file {path} ({type(e).__name__}: {e}); it is truncated or corrupt. "
                "Delete it; the next supervoxel pretraining computes it again."
            ) from e
        if ids.dtype != np.int32 or ids.ndim not in (2, 3):
            raise UserFacingError(
                f"Supervoxel file {path} holds a {ids.dtype} array of shape {ids.shape}, not a 2D/3D int32 id "
                "map. Delete it; the next supervoxel pretraining computes it again."
            )
        return ids


def _case_file(source: _Source, index: int) -> str:
    case_file = getattr(source, "case_file", None)
    return case_file(index) if callable(case_file) else source.case_name(index)
