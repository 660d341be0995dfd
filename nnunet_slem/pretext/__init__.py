"""Pretext tasks: SLeM (block-wise modality recombination, classified) and the paper's baselines.

* :mod:`~nnunet_slem.pretext.base`: what every pretext offers the pretraining loop;
  :mod:`~nnunet_slem.pretext.registry` builds one from ``--pretext NAME``;
* :mod:`~nnunet_slem.pretext.taleb` (multimodal puzzle) and :mod:`~nnunet_slem.pretext.supervoxel`
  (supervoxel segmentation, on the cached supervoxels of :mod:`~nnunet_slem.pretext.supervoxel_cache`) are
  the baselines; :mod:`~nnunet_slem.pretext.tiles` holds the tile shuffling
  they share with ``JiGenTrainer``;
* :mod:`~nnunet_slem.pretext.assignments` builds the fixed, maximally spread set of block-to-modality
  assignments whose indices are the class labels (with :mod:`~nnunet_slem.pretext.max_min_hamming`, which
  also builds the jigsaw permutation sets);
* :mod:`~nnunet_slem.pretext.slem` samples block layouts (:mod:`~nnunet_slem.pretext.blocks`) and produces
  the shuffled images with shortcut guards (:mod:`~nnunet_slem.pretext.block_norm`,
  :mod:`~nnunet_slem.pretext.intensity_aug`) on the images' device;
* :mod:`~nnunet_slem.pretext.audit` checks that the task cannot be solved from per-block intensity statistics.
"""

from nnunet_slem.pretext.assignments import (
    PretextConfigError,
    build_assignment_set,
    default_num_assignments,
    hamming_distances,
    min_pairwise_hamming,
)
from nnunet_slem.pretext.audit import AuditResult, block_histogram_features, run_audit
from nnunet_slem.pretext.blocks import BlockLayout
from nnunet_slem.pretext.slem import SLeMPretext, SLeMPretextConfig, default_grid

__all__ = [
    "AuditResult",
    "BlockLayout",
    "PretextConfigError",
    "SLeMPretext",
    "SLeMPretextConfig",
    "block_histogram_features",
    "build_assignment_set",
    "default_grid",
    "default_num_assignments",
    "hamming_distances",
    "min_pairwise_hamming",
    "run_audit",
]
