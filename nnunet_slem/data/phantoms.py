"""Synthetic multi-modal MRI phantoms: the images and labels of one case, in memory.

Why synthetic: SLeM's claim is that pretraining teaches a network to *combine* modalities. The generated
cases are built so that no single channel is enough to get every label right (BraTS-like: edema needs
FLAIR/T2, enhancing tumour needs T1ce *compared with* T1; CHAOS-like: liver vs. spleen and fatty liver need
the out-of-phase echo), so the benefit of fusion is measurable in minutes on a CPU instead of after a
multi-gigabyte download. :mod:`nnunet_slem.data.synthetic` writes them as an nnU-Net raw dataset.

Everything is vectorised numpy: smooth random fields are sums of a few random plane waves, which are smooth
everywhere, cheap to evaluate on a grid and need no filtering. Each case ``k`` is drawn from its own child
seed ``SeedSequence(seed, spawn_key=(k,))`` (the k-th child of ``default_rng(seed)``, as ``.spawn`` gives it),
so a case depends only on ``(seed, k, shape)``: adding test cases does not change the training cases, and
:func:`generate_case` reproduces any written case in memory. The building blocks (:func:`smooth_field`,
:func:`ellipsoid_radius`, :func:`rician`, :func:`blur`, the BraTS tissue contrasts) are shared with the
template-based brains of :mod:`nnunet_slem.data.icbm_brain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_slem.errors import UserFacingError

MODALITIES: tuple[str, ...] = ("brats", "chaos")
# xyz, as SimpleITK wants it. CHAOS is coarse through-plane, i.e. along the first numpy axis.
_SPACING_XYZ = {"brats": (1.0, 1.0, 1.0), "chaos": (1.5, 1.5, 3.0)}


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case, before it is written.

    ``body`` (brain or abdomen mask) is not written to disk; it is kept so that checks of the contrasts
    can normalise by the tissue's median the way nnU-Net's z-scoring effectively does.
    """

    images: np.ndarray  # (C, Z, Y, X) float32, >= 0
    label: np.ndarray  # (Z, Y, X) uint8
    body: np.ndarray  # (Z, Y, X) bool
    spacing_xyz: tuple[float, float, float]


def check_modalities(modalities: str) -> str:
    """The modalities key in lower case, or a :class:`UserFacingError` listing the choices."""
    key = str(modalities).lower()
    if key not in MODALITIES:
        raise UserFacingError(f"unknown modalities {modalities!r}; choose one of {', '.join(MODALITIES)}.")
    return key


def generate_case(
    modalities: str, seed: int, index: int, shape: tuple[int, int, int] = (48, 48, 48)
) -> SyntheticCase:
    """Case ``index`` of the dataset generated with ``seed``: exactly what
    :func:`nnunet_slem.data.synthetic.make_dataset` writes."""
    modalities = check_modalities(modalities)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    shape = tuple(int(s) for s in shape)
    if modalities == "brats":
        return _brats_case(rng, shape)
    return _chaos_case(rng, shape)


# ----------------------------------------------------------------------------------------------------------
# Shared building blocks
# ----------------------------------------------------------------------------------------------------------

Grid = tuple[np.ndarray, np.ndarray, np.ndarray]


def voxel_grid(shape: tuple[int, int, int]) -> Grid:
    """Broadcastable voxel coordinates (z, y, x); open grids keep memory at O(Z + Y + X)."""
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _unit_grid(shape: tuple[int, int, int]) -> Grid:
    """Coordinates in [-1, 1] per axis, so anatomy scales with the volume."""
    z, y, x = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _full_shape(grid: Grid) -> tuple[int, int, int]:
    return (grid[0].shape[0], grid[1].shape[1], grid[2].shape[2])


def smooth_field(rng: np.random.Generator, grid: Grid, wavelength: float, n_waves: int = 8) -> np.ndarray:
    """A smooth random field with roughly unit standard deviation and the given feature size.

    A sum of random plane waves: smooth at every scale below ``wavelength`` and, unlike filtered white noise,
    its cost does not grow with the feature size.
    """
    directions = rng.standard_normal((n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = rng.uniform(0.6, 1.4, n_waves) * (2.0 * np.pi / wavelength)
    phases = rng.uniform(0.0, 2.0 * np.pi, n_waves)
    z, y, x = grid
    field = np.zeros(_full_shape(grid), dtype=np.float32)
    for direction, frequency, phase in zip(directions, frequencies, phases, strict=True):
        kz, ky, kx = (np.float32(frequency * d) for d in direction)
        field += np.cos(kz * z + ky * y + (kx * x + np.float32(phase)))
    field *= np.float32(np.sqrt(2.0 / n_waves))
    return field


def ellipsoid_radius(grid: Grid, center: Sequence[float], semi_axes: Sequence[float]) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipsoid."""
    squared = sum(((g - np.float32(c)) / np.float32(s)) ** 2 for g, c, s in zip(grid, center, semi_axes,
                                                                                 strict=True))
    return np.sqrt(squared)


def rician(rng: np.random.Generator, clean: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise: non-negative, Rayleigh in the background."""
    real = clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)


def blur(image: np.ndarray, sigma: float | Sequence[float]) -> np.ndarray:
    """Partial-volume blur, so that boundaries are not single-voxel intensity steps."""
    return ndimage.gaussian_filter(image, sigma=sigma, mode="nearest", truncate=3.0)


# ----------------------------------------------------------------------------------------------------------
# BraTS-like brain
# ----------------------------------------------------------------------------------------------------------

BG, CSF, GM, WM, SPOT = 0, 1, 2, 3, 4
# Relative intensities per tissue, columns FLAIR, T1, T1ce, T2. WM is brighter than GM on T1 and darker on
# T2/FLAIR; CSF is bright on T2 but suppressed on FLAIR; "spots" (vessels, fat, blood products) are bright on
# T1 *and* T1ce, so a bright T1ce voxel alone does not mean enhancing tumour.
BRATS_TISSUE = np.array(
    [
        [0.00, 0.00, 0.00, 0.00],  # background
        [0.10, 0.15, 0.15, 1.30],  # CSF
        [0.60, 0.55, 0.55, 0.70],  # grey matter
        [0.45, 0.80, 0.80, 0.45],  # white matter
        [0.50, 1.25, 1.35, 0.35],  # T1-bright spots
    ],
    dtype=np.float32,
)
BRATS_EDEMA_FLAIR, BRATS_EDEMA_T2 = 1.05, 1.05
BRATS_EDEMA_T1_FACTOR = 0.92  # edema is only slightly hypointense on T1/T1ce: "nearly invisible"
BRATS_NECROSIS = np.array([0.65, 0.30, 0.30, 1.15], dtype=np.float32)
# The enhancing rim has the same T1 as the core: only T1ce - T1 reveals it.
BRATS_ENHANCING = np.array([0.80, 0.30, 1.30, 0.75], dtype=np.float32)
BRATS_SCALE = np.array([350.0, 900.0, 1100.0, 1600.0])  # arbitrary units differ between sequences
_NO_ENHANCEMENT_PROBABILITY = 1.0 / 6.0


def _brats_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> SyntheticCase:
    grid = voxel_grid(shape)
    brain, rho, tissue = _brats_anatomy(rng, grid, shape)
    label = _brats_tumour(rng, grid, shape, brain, rho)
    _add_spots(rng, grid, tissue, brain & (rho < 0.85) & (label == 0))
    images = _brats_images(rng, grid, shape, tissue, label)
    return SyntheticCase(images=images, label=label, body=brain, spacing_xyz=_SPACING_XYZ["brats"])


def _brats_anatomy(
    rng: np.random.Generator, grid: Grid, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ellipsoidal brain: WM mostly central, GM outside, CSF rim and two lateral ventricles."""
    dims = np.asarray(shape, dtype=np.float64)
    center = (dims - 1.0) / 2.0 + rng.uniform(-2.0, 2.0, 3)
    semi = dims / 2.0 * rng.uniform(0.76, 0.88, 3)
    rho = ellipsoid_radius(grid, center, semi) + 0.04 * smooth_field(rng, grid, min(shape) / 2.0)
    brain = rho < 1.0

    wm_score = 0.7 * smooth_field(rng, grid, min(shape) / 3.0) + 3.0 * (0.72 - rho)
    tissue = np.where(wm_score > 0, WM, GM).astype(np.uint8)
    tissue[rho > 0.95] = CSF
    size = rng.uniform(0.7, 1.3)
    for side in (-1.0, 1.0):
        offset = np.array([-0.05, 0.0, side * 0.14]) * semi
        ventricle = ellipsoid_radius(grid, center + offset, np.array([0.14, 0.35, 0.09]) * semi * size) < 1
        tissue[ventricle] = CSF
    tissue[~brain] = BG
    return brain, rho, tissue


def _brats_tumour(
    rng: np.random.Generator, grid: Grid, shape: tuple[int, int, int], brain: np.ndarray, rho: np.ndarray
) -> np.ndarray:
    """Necrotic core, enhancing rim, edema around it; irregular boundaries, size varying ~10-fold."""
    r_min, r_max = 3.0, max(3.0, 0.3 * min(shape))
    no_enhancement = bool(rng.random() < _NO_ENHANCEMENT_PROBABILITY)
    if no_enhancement:
        radius = rng.uniform(r_min, max(r_min, min(r_max, 6.0)))
    else:
        radius = float(np.exp(rng.uniform(np.log(r_min), np.log(r_max))))

    candidates = np.flatnonzero(brain & (rho < 0.6))
    center = np.array(np.unravel_index(rng.choice(candidates), shape), dtype=np.float64)
    aspect = np.exp(rng.uniform(-0.25, 0.25, 3))
    aspect /= np.prod(aspect) ** (1.0 / 3.0)
    distance = ellipsoid_radius(grid, center, aspect)  # in voxels

    wavelength = max(1.3 * radius, 4.0)
    d_whole = distance * np.clip(1.0 + 0.28 * smooth_field(rng, grid, wavelength), 0.3, None)
    d_core = distance * np.clip(1.0 + 0.15 * smooth_field(rng, grid, wavelength), 0.3, None)
    core_radius = max(radius * rng.uniform(0.45, 0.7), 1.5)

    label = np.zeros(shape, dtype=np.uint8)
    label[d_whole < radius] = 1
    if no_enhancement:
        label[d_core < core_radius] = 2
    else:
        rim = rng.uniform(1.5, 2.5)
        label[d_core < core_radius] = 3
        label[d_core < core_radius - rim] = 2
    label[~brain] = 0
    return label


def _add_spots(rng: np.random.Generator, grid: Grid, tissue: np.ndarray, allowed: np.ndarray) -> None:
    """A few small T1-bright structures, the decoys that make T1ce alone ambiguous."""
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        return
    n_spots = int(rng.integers(2, 6))
    for flat in rng.choice(candidates, size=n_spots):
        center = np.unravel_index(flat, tissue.shape)
        radius = rng.uniform(1.0, 2.0)
        spot = ellipsoid_radius(grid, center, (radius, radius, radius)) < 1.0
        tissue[spot & allowed] = SPOT


def _brats_images(
    rng: np.random.Generator, grid: Grid, shape: tuple[int, int, int], tissue: np.ndarray, label: np.ndarray
) -> np.ndarray:
    clean = BRATS_TISSUE[tissue]  # (Z, Y, X, 4)
    edema = label == 1
    clean[edema, 0] = BRATS_EDEMA_FLAIR
    clean[edema, 3] = BRATS_EDEMA_T2
    clean[edema, 1:3] *= BRATS_EDEMA_T1_FACTOR
    clean[label == 2] = BRATS_NECROSIS
    clean[label == 3] = BRATS_ENHANCING
    clean *= (1.0 + 0.05 * smooth_field(rng, grid, 4.0))[..., None]  # tissue texture, shared

    images = np.empty((4, *shape), dtype=np.float32)
    for channel in range(4):
        image = blur(clean[..., channel], 0.6)
        image *= np.exp(0.12 * smooth_field(rng, grid, 1.5 * max(shape), n_waves=4))  # coil bias field
        scale = float(BRATS_SCALE[channel] * np.exp(rng.normal(0.0, 0.15)))
        images[channel] = rician(rng, image * np.float32(scale), 0.025 * scale)
    return images


# ----------------------------------------------------------------------------------------------------------
# CHAOS-like abdomen (T1 dual echo)
# ----------------------------------------------------------------------------------------------------------

_T_AIR, _T_FAT, _T_MUSCLE, _T_BOWEL, _T_BONE, _T_LIVER, _T_SPLEEN, _T_CORTEX, _T_MEDULLA = range(9)
# (water, fat) signal per tissue. In phase = water + fat, out of phase = |water - fat|: pure fat stays bright,
# voxels mixing fat and water (interfaces, fatty liver) cancel.
_CHAOS_WATER_FAT = np.array(
    [
        [0.00, 0.00],  # air
        [0.08, 0.92],  # fat
        [0.38, 0.02],  # muscle
        [0.32, 0.08],  # bowel / other
        [0.22, 0.18],  # vertebra (marrow)
        [0.47, 0.08],  # liver (overwritten per voxel from its fat fraction)
        [0.55, 0.00],  # spleen: in phase like liver, out of phase brighter
        [0.46, 0.00],  # kidney cortex
        [0.30, 0.00],  # kidney medulla
    ],
    dtype=np.float32,
)
_L_LIVER, _L_RIGHT_KIDNEY, _L_LEFT_KIDNEY, _L_SPLEEN = 1, 2, 3, 4


def _chaos_case(rng: np.random.Generator, shape: tuple[int, int, int]) -> SyntheticCase:
    grid = _unit_grid(shape)
    tissue, label, body, fat_fraction = _chaos_anatomy(rng, grid)
    images = _chaos_images(rng, grid, tissue, fat_fraction)
    return SyntheticCase(images=images, label=label, body=body, spacing_xyz=_SPACING_XYZ["chaos"])


def _organ(
    rng: np.random.Generator,
    grid: Grid,
    center: Sequence[float],
    semi: Sequence[float],
    bumpiness: float = 0.08,
) -> np.ndarray:
    """Normalised radius of a perturbed ellipsoid (coordinates in [-1, 1]); < 1 inside."""
    return ellipsoid_radius(grid, center, semi) * (1.0 + bumpiness * smooth_field(rng, grid, 0.6))


def _chaos_anatomy(
    rng: np.random.Generator, grid: Grid
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Axial slices are (y, x); y grows posteriorly, x towards the patient's left (radiological view)."""
    shape = _full_shape(grid)
    _, y, x = grid
    a_y, a_x = rng.uniform(0.72, 0.85), rng.uniform(0.88, 0.96)
    r_body = np.sqrt((y / a_y) ** 2 + (x / a_x) ** 2) + 0.03 * smooth_field(rng, grid, 0.8)
    body = r_body < 1.0
    fat_thickness = rng.uniform(0.06, 0.16)
    cavity = r_body < 1.0 - fat_thickness - 0.07

    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[body] = _T_FAT  # subcutaneous fat
    tissue[r_body < 1.0 - fat_thickness] = _T_MUSCLE  # abdominal wall
    tissue[cavity] = _T_BOWEL
    tissue[cavity & (smooth_field(rng, grid, 0.35) > 0.8)] = _T_FAT  # visceral fat
    spine_y = 0.62 * a_y
    paraspinal = np.zeros(shape, dtype=bool)  # z semi-axis 9.0: columns through the whole volume
    for side in (-1.0, 1.0):
        paraspinal |= ellipsoid_radius(grid, (0.0, spine_y + 0.03, side * 0.15), (9.0, 0.12, 0.09)) < 1
    spine = ellipsoid_radius(grid, (0.0, spine_y - 0.04, 0.0), (9.0, 0.11, 0.08)) < 1
    tissue[paraspinal & body] = _T_MUSCLE
    tissue[spine] = _T_BONE
    free = cavity & ~paraspinal & ~spine

    label = np.zeros(shape, dtype=np.uint8)
    liver = _organ(rng, grid, (rng.uniform(0.0, 0.3), rng.uniform(-0.15, 0.05), rng.uniform(-0.5, -0.35)),
                   (rng.uniform(0.7, 0.9), rng.uniform(0.45, 0.55), rng.uniform(0.32, 0.42))) < 1
    _paint(tissue, label, liver & free, _T_LIVER, _L_LIVER)
    spleen = _organ(rng, grid, (rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.3), rng.uniform(0.5, 0.6)),
                    (rng.uniform(0.3, 0.4), rng.uniform(0.22, 0.3), rng.uniform(0.14, 0.19))) < 1
    _paint(tissue, label, spleen & free, _T_SPLEEN, _L_SPLEEN)
    for side, value, z_range in ((-1.0, _L_RIGHT_KIDNEY, (-0.4, -0.2)), (1.0, _L_LEFT_KIDNEY, (-0.3, -0.1))):
        _add_kidney(rng, grid, tissue, label, free, side, value, z_range)

    fat_fraction = _liver_fat_fraction(rng, grid, label == _L_LIVER)
    return tissue, label, body, fat_fraction


def _paint(
    tissue: np.ndarray, label: np.ndarray, mask: np.ndarray, tissue_value: int, label_value: int
) -> None:
    """Later organs win over earlier ones, and the label always follows the tissue."""
    tissue[mask] = tissue_value
    label[mask] = label_value


def _add_kidney(
    rng: np.random.Generator,
    grid: Grid,
    tissue: np.ndarray,
    label: np.ndarray,
    free: np.ndarray,
    side: float,
    value: int,
    z_range: tuple[float, float],
) -> None:
    """A bean: ellipsoid with a medial fat-filled hilum, cortex around medulla, in perirenal fat."""
    center = np.array([rng.uniform(*z_range), rng.uniform(0.3, 0.4), side * rng.uniform(0.32, 0.4)])
    semi = np.array([rng.uniform(0.3, 0.4), rng.uniform(0.17, 0.21), rng.uniform(0.12, 0.15)])
    radius = _organ(rng, grid, center, semi, bumpiness=0.05)
    hilum_center = center + np.array([0.0, -0.3 * semi[1], -side * 0.85 * semi[2]])
    hilum = ellipsoid_radius(grid, hilum_center, semi * np.array([0.4, 0.45, 0.45])) < 1
    perirenal = (radius < 1.4) & free
    tissue[perirenal] = _T_FAT
    label[perirenal] = 0
    kidney = (radius < 1.0) & ~hilum & free
    medulla = kidney & (radius < 0.6 + 0.08 * smooth_field(rng, grid, 0.3))
    tissue[kidney] = _T_CORTEX
    tissue[medulla] = _T_MEDULLA
    label[kidney] = value


def _liver_fat_fraction(rng: np.random.Generator, grid: Grid, liver: np.ndarray) -> np.ndarray:
    """Mild diffuse steatosis plus, in half the cases, fatty patches: darker out of phase than in phase."""
    fraction = np.zeros(liver.shape, dtype=np.float32)
    fraction[liver] = rng.uniform(0.04, 0.12)
    if rng.random() < 0.5:
        patches = liver & (smooth_field(rng, grid, 0.5) > 1.0)
        fraction[patches] += rng.uniform(0.15, 0.3)
    return fraction


def _chaos_images(
    rng: np.random.Generator, grid: Grid, tissue: np.ndarray, fat_fraction: np.ndarray
) -> np.ndarray:
    water = _CHAOS_WATER_FAT[tissue, 0]
    fat = _CHAOS_WATER_FAT[tissue, 1]
    liver = tissue == _T_LIVER
    water[liver] = 0.52 * (1.0 - fat_fraction[liver])
    fat[liver] = 0.9 * fat_fraction[liver]
    water *= 1.0 + 0.04 * smooth_field(rng, grid, 0.15)  # texture

    # Blur water and fat separately: the cancellation happens within a voxel, after partial volume.
    sigma = (0.5, 0.7, 0.7)
    water, fat = blur(water, sigma), blur(fat, sigma)
    bias = np.exp(0.08 * smooth_field(rng, grid, 3.0, n_waves=4))
    scale = 600.0 * float(np.exp(rng.normal(0.0, 0.15)))
    images = np.empty((2, *tissue.shape), dtype=np.float32)
    for channel, (clean, gain) in enumerate(((water + fat, 1.0), (np.abs(water - fat), 0.95))):
        channel_bias = bias * np.exp(0.03 * smooth_field(rng, grid, 3.0, n_waves=4))
        signal = clean * channel_bias * np.float32(scale * gain)
        images[channel] = rician(rng, signal, 0.02 * scale)
    return images
