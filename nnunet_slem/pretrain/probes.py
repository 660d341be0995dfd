"""Probes of a trained SLeM pretext network: does it solve the task from anatomy, or from a shortcut?

The audit (:mod:`nnunet_slem.pretext.audit`) asks what *could* solve the task; the probes ask what a trained
network *does* use. Each probe changes the inputs in one way that leaves the modality content of every block
intact but removes one candidate shortcut, and scores held-out accuracy on the same labels and layouts:

* ``plain``: ordinary pretext samples (the reference);
* ``seam_zeroed``: after the pretext, a band of ``band`` voxels centred on every seam is set to 0. A strong
  drop means the network reads continuity across seams (which channel of a block continues which channel of
  its neighbour) rather than recognising each block's modalities;
* ``cross_case``: composites whose blocks come from different patches (other random cases; block ``b`` of
  sample ``i`` from patch ``i + b``), assembled before the pretext with the same layout. A strong drop means
  it uses cross-block continuity or case consistency;
* ``background_noise``: voxels where every channel is exactly 0 get N(0, 1) noise per channel before the
  pretext (``None``, shown as ``n/a``, when the data has no exact-zero background). A strong drop means it
  uses the background (its ties, its extent) rather than the tissue.

"Strong" is :data:`STRONG_DROP` of the accuracy above chance lost; :meth:`ProbeResult.findings` words it.
Every probe sees the same patches, labels, layouts and augmentation draws, so the differences are paired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from nnunet_slem.pretext.blocks import cross_case_composite, zero_seams
from nnunet_slem.pretext.slem import SLeMPretext

__all__ = ["PROBES", "STRONG_DROP", "ProbeResult", "run_probes"]

PROBES = ("plain", "seam_zeroed", "cross_case", "background_noise")
#: a probe counts as a strong drop when it loses at least this fraction of the plain accuracy above chance
STRONG_DROP = 0.5
_MEANING = {
    "seam_zeroed": "the network reads continuity across seams",
    "cross_case": "the network uses cross-block continuity or case consistency",
    "background_noise": "the network uses the exactly-zero background",
}


@dataclass
class ProbeResult:
    """Held-out accuracies of a pretext network under each probe; ``background_noise`` is ``None`` (n/a) when
    the probed patches have no voxel that is 0 in every channel."""

    plain: float
    seam_zeroed: float
    cross_case: float
    background_noise: float | None
    chance: float
    n: int
    band: int
    seed: int

    def to_dict(self) -> dict:
        return {**asdict(self), "findings": self.findings()}

    def relative_drop(self, probe: str) -> float | None:
        """Fraction of the plain accuracy above chance that ``probe`` loses (``None`` when n/a or no margin)."""
        value = getattr(self, probe)
        margin = self.plain - self.chance
        return None if value is None or margin <= 0 else (self.plain - value) / margin

    def findings(self) -> list[str]:
        """One sentence per probe with a strong drop (empty: no shortcut found by the probes)."""
        out = []
        for probe, meaning in _MEANING.items():
            drop = self.relative_drop(probe)
            if drop is not None and drop >= STRONG_DROP:
                out.append(f"{probe} drops {self.plain:.3f} -> {getattr(self, probe):.3f}: {meaning}")
        return out

    def summary(self) -> str:
        noise = "n/a" if self.background_noise is None else f"{self.background_noise:.3f}"
        return (f"probes ({self.n} samples, chance {self.chance:.3f}): plain {self.plain:.3f}, seams zeroed "
                f"({self.band} voxels) {self.seam_zeroed:.3f}, cross-case blocks {self.cross_case:.3f}, "
                f"background noise {noise}")


@torch.no_grad()
def run_probes(
    classifier: Callable[[Tensor], Tensor],
    pretext: SLeMPretext,
    sample_images: Callable[[int], Tensor],
    n: int = 256,
    *,
    band: int = 4,
    seed: int = 0,
    batch_size: int = 8,
) -> ProbeResult:
    """Score ``classifier`` (images -> logits) on ``n`` held-out pretext samples under each probe.

    Args:
        classifier: the trained network in eval mode, e.g. ``PretextClassifier`` (called under ``no_grad``).
        pretext: the task it was trained on (its guards as in training).
        sample_images: ``k -> (k, M, *spatial)`` unshuffled held-out patches, on the classifier's device.
        n: samples per probe; ``band``: seam band width in voxels; ``seed``: labels, layouts, augmentation
            and background noise (``sample_images`` has its own).
        batch_size: patches per forward pass; at least the block count, so composites draw every block
            from another patch of the batch.
    """
    if n < 1 or band < 1:
        raise ValueError(f"run_probes needs n >= 1 and band >= 1, got n={n}, band={band}.")
    batch_size = max(batch_size, pretext.num_blocks)
    generator = torch.Generator().manual_seed(seed)
    correct = dict.fromkeys(PROBES, 0)
    background_voxels = 0
    done = 0
    while done < n:
        images = sample_images(batch_size)
        count = min(batch_size, n - done)
        labels = torch.randint(pretext.num_classes, (batch_size,), generator=generator)
        layouts = pretext.sample_layouts(images.shape[2:], batch_size, generator)
        aug_seed = int(torch.randint(2**62, (1,), generator=generator))
        noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
        background = (images == 0).all(dim=1, keepdim=True)
        background_voxels += int(background[:count].sum())
        sources = {"plain": images, "cross_case": cross_case_composite(images, layouts),
                   "background_noise": torch.where(background, noise, images)}
        # the same augmentation draws for every probe: a fresh generator with one seed each time
        inputs = {name: pretext.apply(x, labels, layouts, torch.Generator().manual_seed(aug_seed))
                  for name, x in sources.items()}
        inputs["seam_zeroed"] = zero_seams(inputs["plain"].clone(), layouts, band)
        target = labels[:count].to(images.device)
        for probe, x in inputs.items():
            predicted = classifier(x[:count]).float().argmax(1)
            correct[probe] += int((predicted == target).sum())
        done += count
    acc = {probe: correct[probe] / n for probe in PROBES}
    return ProbeResult(plain=acc["plain"], seam_zeroed=acc["seam_zeroed"], cross_case=acc["cross_case"],
                       background_noise=acc["background_noise"] if background_voxels else None,
                       chance=pretext.chance, n=n, band=band, seed=seed)
