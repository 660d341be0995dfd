"""Shortcut audit: can the SLeM pretext be solved from simple per-block statistics alone?

The pretext is meant to teach cross-modal *anatomical* features. If the class could instead be read off
something simpler, the encoder would learn that shortcut and nothing useful. The audit draws pretext samples,
describes them by three groups of features, fits a multinomial logistic regression (scikit-learn, standardised
features, run to convergence) per group and on all of them together, and reports held-out accuracies next to
chance (``1/K``):

* ``histogram``: per block and channel a normalised intensity histogram over a fixed range plus mean and
  standard deviation. Catches intensity shortcuts (a FLAIR block is brighter than a T1 block, background
  ties at a modality-dependent quantile). Rank normalisation makes it chance by construction, which is why
  the other groups exist.
* ``seam``: for every pair of adjacent blocks (true layout) and every pair of channels ``(c, c')``, the
  correlation and the mean absolute difference of the two voxel planes on either side of the seam, channel
  ``c`` of the one block against ``c'`` of the other. Which channel continues which across a seam gives
  the relative permutation of neighbouring blocks; with smooth images that alone can tell the classes
  apart without any modality knowledge.
* ``texture``: per block and channel the mean gradient magnitude, the lag-1 autocorrelation along each
  axis and the Laplacian energy (all within the block). Catches modalities that differ in roughness or
  resolution rather than in intensity.

Reading the result: a group far above chance names a shortcut the network may take instead of learning
anatomy (it need not take it: :mod:`nnunet_slem.pretrain.probes` checks a trained network). With the guards
off, on data whose modalities differ in intensity, the histogram group is far above chance, which shows the
audit does catch such shortcuts. The features use the true block layouts (including the jittered seams), so
the auditor is given more than the network gets: a pass is conservative.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from nnunet_slem.pretext.blocks import BlockLayout
from nnunet_slem.pretext.slem import SLeMPretext

__all__ = [
    "FEATURE_GROUPS",
    "AuditConvergenceWarning",
    "AuditResult",
    "block_histogram_features",
    "run_audit",
    "seam_features",
    "texture_features",
]

DEFAULT_RANGE = (-3.0, 3.0)
#: the feature groups of the audit (module docstring), each fitted on its own and all together
FEATURE_GROUPS = ("histogram", "seam", "texture")
_EPS = 1e-6


@dataclass
class AuditResult:
    """Held-out accuracy of the block-statistics classifier, with chance ``1/num_classes`` beside it.

    ``accuracy`` uses all feature groups together; ``group_accuracies`` holds each group's own classifier's
    accuracy (e.g. ``{"histogram": .., "seam": .., "texture": ..}``), which says *which* shortcut it is.
    ``unconverged`` names the fits (groups or ``"all"``) that hit the iteration cap: their accuracies are lower
    bounds."""

    accuracy: float
    chance: float
    n_train: int
    n_test: int
    num_classes: int
    train_accuracy: float = float("nan")
    group_accuracies: dict[str, float] = field(default_factory=dict)
    unconverged: list[str] = field(default_factory=list)

    @property
    def ratio_to_chance(self) -> float:
        return self.accuracy / self.chance

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio_to_chance": self.ratio_to_chance}

    def summary(self) -> str:
        groups = ", ".join(f"{name} {acc:.3f}" for name, acc in self.group_accuracies.items())
        return (
            f"block-statistics classifier: test accuracy {self.accuracy:.3f}"
            + (f" ({groups})" if groups else "")
            + f" vs chance {self.chance:.3f} ({self.ratio_to_chance:.2f}x chance, {self.num_classes} classes, "
            f"{self.n_train} train / {self.n_test} test samples)"
            + (f"; not converged: {', '.join(self.unconverged)}" if self.unconverged else "")
        )


def block_histogram_features(
    images: Tensor,
    layouts: Sequence[BlockLayout],
    bins: int = 16,
    value_range: tuple[float, float] = DEFAULT_RANGE,
) -> Tensor:
    """Per block and channel: a normalised histogram over ``value_range`` plus mean and std.

    Values outside the range count in the edge bins, so every histogram sums to one. The default range
    ``[-3, 3]`` suits the pretext's renormalised blocks; unnormalised data mostly lands in the edge bins, but
    then the mean and std give it away, which is the point. Returns float32 ``(N, B*M*(bins+2))``, ordered
    ``(block, channel, [bins..., mean, std])``; one pass per block over all its channels (blocks are boxes,
    so slices need no per-voxel block map, which makes this cheaper than whole-batch ``bincount`` calls).
    """
    lo, hi = value_range
    feats = [_block_histogram(images[(i, slice(None), *sl)], bins, lo, hi)
             for i, layout in enumerate(layouts) for sl in layout.block_slices()]
    return torch.stack(feats).reshape(images.shape[0], -1) if feats else torch.zeros((images.shape[0], 0))


def _block_histogram(block: Tensor, bins: int, lo: float, hi: float) -> Tensor:
    """``(M, *block_shape)`` -> float32 ``(M, bins + 2)``: histogram, mean, std per channel (mean and std in
    float64: unnormalised inputs can be large)."""
    m = block.shape[0]
    x = block.reshape(m, -1).float()
    index = ((x.clamp(lo, hi) - lo) * (bins / (hi - lo))).long().clamp_(0, bins - 1)
    index += torch.arange(m, device=x.device)[:, None] * bins
    hist = torch.bincount(index.reshape(-1), minlength=m * bins).reshape(m, bins) / max(1, x.shape[1])
    wide = x.double()
    stats = torch.stack([wide.mean(1), wide.std(1, unbiased=False)], dim=1)
    return torch.cat([hist.to(stats.dtype), stats], dim=1).to(torch.float32)


# ------------------------------------------------------------------------------------------------- seams
def _adjacent_pairs(parts: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs ``(a, b)`` of face-adjacent blocks (C-order numbering over ``parts``), sorted: the feature order."""
    strides = [int(np.prod(parts[a + 1 :])) for a in range(len(parts))]
    pairs = []
    for index in np.ndindex(*parts):
        a = sum(i * s for i, s in zip(index, strides, strict=True))
        pairs += [(a, a + strides[ax]) for ax in range(len(parts)) if index[ax] + 1 < parts[ax]]
    return sorted(pairs)


def seam_features(images: Tensor, layouts: Sequence[BlockLayout]) -> Tensor:
    """Per pair of adjacent blocks ``(a, b)`` and channel pair ``(c, c')``: the correlation and the mean
    absolute difference between the voxel plane of block ``a``, channel ``c`` on its side of the seam and
    that of block ``b``, channel ``c'`` on the other side.

    The number of adjacent pairs depends on the grid only (not on its axis placement), so every sample has the
    same features. Returns float32 ``(N, P*M*M*2)`` ordered ``(pair, c, c', [corr, mad])``, pairs as
    :func:`_adjacent_pairs` sorts them. The planes of the whole batch are gathered into one list and reduced
    with a few ``index_add_`` calls (sums in float64: unnormalised inputs can be large).
    """
    n, m = images.shape[:2]
    if not layouts:
        return torch.zeros((0, 0))
    device = images.device
    pairs = _adjacent_pairs(layouts[0].parts)
    num_pairs = len(pairs)
    num_blocks = layouts[0].num_blocks
    lefts, rights, segs = [], [], []
    for i, layout in enumerate(layouts):
        if len(_adjacent_pairs(layout.parts)) != num_pairs:
            raise ValueError("all layouts of a batch must come from the same block grid.")
        table = torch.full((num_blocks, num_blocks), -1, dtype=torch.long)
        for slot, (a, b) in enumerate(_adjacent_pairs(layout.parts)):
            table[a, b] = slot
        ids = torch.from_numpy(layout.block_index_map())
        for axis, bounds in enumerate(layout.boundaries):
            for cut in bounds[1:-1]:
                slot = table[ids.select(axis, cut - 1), ids.select(axis, cut)].reshape(-1)
                lefts.append(images[i].select(axis + 1, cut - 1).reshape(m, -1))
                rights.append(images[i].select(axis + 1, cut).reshape(m, -1))
                segs.append(slot + i * num_pairs)
    left = torch.cat(lefts, dim=1).double().T  # (T, M)
    right = torch.cat(rights, dim=1).double().T
    seg = torch.cat(segs).to(device)
    size = n * num_pairs

    def sums(values: Tensor) -> Tensor:
        return torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=device).index_add_(0, seg, values)

    count = sums(torch.ones_like(left[:, :1])).clamp_min(1)[:, :, None]  # (S, 1, 1)
    mean_l, mean_r = sums(left)[:, :, None] / count, sums(right)[:, None, :] / count
    var_l = (sums(left * left)[:, :, None] / count - mean_l**2).clamp_min(0)
    var_r = (sums(right * right)[:, None, :] / count - mean_r**2).clamp_min(0)
    cross = sums(left[:, :, None] * right[:, None, :]) / count - mean_l * mean_r  # (S, M, M)
    corr = cross / (var_l * var_r).sqrt().clamp_min(_EPS)
    mad = sums((left[:, :, None] - right[:, None, :]).abs()) / count
    feats = torch.stack([corr, mad], dim=-1)  # (S, M, M, 2)
    return feats.reshape(n, num_pairs * m * m * 2).to(torch.float32)


# ----------------------------------------------------------------------------------------------- texture
def _window(t: Tensor, starts: Sequence[int], shrink: int) -> Tensor:
    """``t`` ``(M, *spatial)`` cut to ``length - shrink`` voxels from ``starts[a]`` along every spatial axis
    ``a``: shifted views for finite differences without padding (empty where the block is too short)."""
    for axis, start in enumerate(starts):
        size = t.shape[axis + 1]
        t = t.narrow(axis + 1, min(start, size), max(0, size - shrink))
    return t


def _block_texture(block: Tensor) -> Tensor:
    """``(M, *block_shape)`` -> float32 ``(M, D+2)``: gradient magnitude, autocorrelation per axis, Laplacian
    energy (see :func:`texture_features`). Differences are taken inside the block only."""
    m, dims = block.shape[0], block.ndim - 1
    axes = tuple(range(1, dims + 1))

    def mean(t: Tensor) -> Tensor:
        return t.sum(axes) / max(1, t[0].numel())

    x = block.float()
    x = x - mean(x).reshape(m, *(1,) * dims)  # centred: level must not pass for texture
    var = mean(x * x).clamp_min(_EPS)
    autocorr = []
    for axis in range(dims):
        length = x.shape[axis + 1] - 1
        autocorr.append(mean(x.narrow(axis + 1, 0, max(0, length)) * x.narrow(axis + 1, 1, max(0, length))) / var)
    base = _window(x, [0] * dims, 1)
    squared = torch.zeros_like(base)
    for axis in range(dims):
        squared += (_window(x, [int(a == axis) for a in range(dims)], 1) - base) ** 2
    centre = _window(x, [1] * dims, 2)
    laplacian = -2 * dims * centre
    for axis in range(dims):
        for shift in (0, 2):
            laplacian += _window(x, [shift if a == axis else 1 for a in range(dims)], 2)
    return torch.stack([mean(squared.sqrt()), *autocorr, mean(laplacian * laplacian)], dim=1)


def texture_features(images: Tensor, layouts: Sequence[BlockLayout]) -> Tensor:
    """Per block and channel: mean gradient magnitude, lag-1 autocorrelation along each spatial axis and
    Laplacian energy, from differences inside the block (nothing reaches across a seam, that is the seam
    group's business).

    Values are centred on their block's mean first; the autocorrelation is relative to the block's variance.
    Returns float32 ``(N, B*M*(D+2))`` ordered ``(block, channel, [gradient, autocorr per axis..., laplacian])``.
    One pass per block over all its channels at once: blocks are boxes, so slicing needs no masks, which
    makes this cheaper than whole-batch masked reductions.
    """
    n = images.shape[0]
    feats = [_block_texture(images[(i, slice(None), *sl)]) for i, layout in enumerate(layouts)
             for sl in layout.block_slices()]
    return torch.stack(feats).reshape(n, -1) if feats else torch.zeros((n, 0))


_FEATURES: dict[str, Callable[..., Tensor]] = {
    "histogram": block_histogram_features,
    "seam": seam_features,
    "texture": texture_features,
}


def _draw_features(
    pretext: SLeMPretext,
    sample_images: Callable[[int], Tensor],
    n: int,
    generator: torch.Generator,
    bins: int,
    batch_size: int,
    groups: Sequence[str] = FEATURE_GROUPS,
    bar: tqdm | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Features (one tensor per group) and labels of ``n`` pretext samples, drawn in batches so big volumes
    fit in memory; ``bar`` advances by each batch's samples."""
    feats: dict[str, list[Tensor]] = {g: [] for g in groups}
    labels = []
    for start in range(0, n, batch_size):
        k = min(batch_size, n - start)
        # cross_case mixes the patches of a batch, so it never gets a batch of one
        images = sample_images(max(k, 2) if pretext.config.cross_case else k)
        shuffled, y, layouts = pretext.sample(images, generator)
        shuffled, y, layouts = shuffled[:k], y[:k], layouts[:k]
        for g in groups:
            kwargs = {"bins": bins} if g == "histogram" else {}
            feats[g].append(_FEATURES[g](shuffled, layouts, **kwargs).cpu())
        labels.append(y.cpu())
        if bar is not None:
            bar.update(k)
    return {g: torch.cat(f) for g, f in feats.items()}, torch.cat(labels)


class AuditConvergenceWarning(UserWarning):
    """A group's classifier stopped at ``max_iter`` before converging: its accuracy may under-report a shortcut."""


def _fit_and_score(name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                   C: float, max_iter: int) -> tuple[float, float, bool]:
    """Standardise (training statistics) and fit a multinomial L2 logistic regression to convergence (lbfgs);
    returns test accuracy, training accuracy and whether it converged.

    Why scikit-learn rather than a fixed number of gradient steps: a classifier stopped early *under*-reports a
    shortcut, so "near chance" would be weak evidence. lbfgs runs until its tolerance is met and says when it is
    not (``ConvergenceWarning``), which becomes an :class:`AuditConvergenceWarning` naming the group."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    xs_train, xs_test = x_train.double().numpy(), x_test.double().numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(xs_train, y_train.numpy())
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not converged:
        warnings.warn(f"shortcut audit: the {name} classifier did not converge in {max_iter} iterations, so its "
                      "accuracy may under-report a shortcut (raise run_audit's max_iter).",
                      AuditConvergenceWarning, stacklevel=3)
    # plain floats: numpy scalars would not load from a checkpoint with torch.load(weights_only=True)
    return float(model.score(xs_test, y_test.numpy())), float(model.score(xs_train, y_train.numpy())), converged


def run_audit(
    pretext: SLeMPretext,
    sample_images: Callable[[int], Tensor],
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
    *,
    bins: int = 16,
    batch_size: int = 256,
    C: float = 1.0,
    max_iter: int = 10_000,
    groups: Sequence[str] = FEATURE_GROUPS,
    progress: bool | None = None,
) -> AuditResult:
    """Train logistic regressions on block statistics of pretext samples (one per feature group and one on
    all groups together); report their test accuracies.

    Args:
        pretext: the task to audit, with its guards set as they will be used in pretraining.
        sample_images: ``n -> (n, M, *spatial)`` tensor of (unshuffled) training patches.
        n_train, n_test: pretext samples to fit on and to evaluate on.
        seed: seeds the pretext draws (labels, layouts, augmentation); ``sample_images`` has its own.
        C: inverse L2 strength of scikit-learn's ``LogisticRegression`` on standardised features (its default;
            it keeps perfectly separable groups well-posed).
        max_iter: lbfgs iteration cap, far above what the audits need; reaching it warns
            (:class:`AuditConvergenceWarning`) and lists the group in ``AuditResult.unconverged``.
        groups: feature groups to use (a subset of :data:`FEATURE_GROUPS`).
        progress: a tqdm bar over the drawn samples; ``None`` shows it on a terminal only (tqdm's rule), so
            logs and pipes stay clean.
    """
    unknown = sorted(set(groups) - set(FEATURE_GROUPS))
    if unknown or not groups:
        raise ValueError(f"audit feature groups must be a non-empty subset of {FEATURE_GROUPS}, got {list(groups)}.")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), tqdm(total=n_train + n_test, desc="audit: drawing pretext samples", unit="sample",
                               disable=None if progress is None else not progress) as bar:
        train, y_train = _draw_features(pretext, sample_images, n_train, generator, bins, batch_size, groups, bar)
        test, y_test = _draw_features(pretext, sample_images, n_test, generator, bins, batch_size, groups, bar)
    sets = {g: (train[g], test[g]) for g in groups}
    sets["all"] = (torch.cat([train[g] for g in groups], 1), torch.cat([test[g] for g in groups], 1))
    accuracies, train_accuracy, unconverged = {}, float("nan"), []
    for name, (x_train, x_test) in sets.items():
        if name == "all" and len(groups) == 1:
            accuracies["all"] = accuracies[groups[0]]
            continue
        accuracies[name], train_acc, converged = _fit_and_score(name, x_train, y_train, x_test, y_test, C=C,
                                                                max_iter=max_iter)
        if not converged:
            unconverged.append(name)
        if name == "all" or len(groups) == 1:
            train_accuracy = train_acc
    return AuditResult(
        accuracy=accuracies.pop("all"),
        chance=1.0 / pretext.num_classes,
        n_train=n_train,
        n_test=n_test,
        num_classes=pretext.num_classes,
        train_accuracy=train_accuracy,
        group_accuracies=accuracies,
        unconverged=unconverged,
    )
