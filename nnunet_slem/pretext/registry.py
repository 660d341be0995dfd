"""The pretexts ``nnunet-slem pretrain --pretext NAME`` can train, built from a name and options.

``slem`` is the method; ``slem_recon`` its reconstructive variant (:mod:`nnunet_slem.pretext.slem_recon`);
``taleb`` and ``supervoxel`` are the paper's self-supervised baselines, ``mae`` the
masked-image-modelling baseline of Wald et al. (JiGen is a fine-tuning trainer,
:class:`~nnunet_slem.trainers.jigen.JiGenTrainer`, since it trains jointly with the segmentation task). All
of them share the pretraining loop, checkpoint format and fine-tuning path.
"""

from __future__ import annotations

from nnunet_slem.pretext.assignments import PretextConfigError
from nnunet_slem.pretext.base import Pretext

PRETEXT_NAMES = ("slem", "taleb", "supervoxel", "mae", "slem_recon")


def build_pretext(name: str, options: dict, num_modalities: int, spatial_dims: int, seed: int) -> Pretext:
    """A pretext from its name and the user's options (``seed`` unless the options set one)."""
    options = {"seed": seed, **options}
    if name == "slem":
        from nnunet_slem.pretext.slem import SLeMPretext, SLeMPretextConfig, default_grid

        config = SLeMPretextConfig.from_dict({"grid": list(default_grid(spatial_dims)), **options})
        return SLeMPretext(config, num_modalities=num_modalities, spatial_dims=spatial_dims)
    if name == "taleb":
        from nnunet_slem.pretext.taleb import TalebPuzzleConfig, TalebPuzzlePretext

        return TalebPuzzlePretext(TalebPuzzleConfig.from_dict(options), num_modalities=num_modalities,
                                  spatial_dims=spatial_dims)
    if name == "supervoxel":
        from nnunet_slem.pretext.supervoxel import SupervoxelConfig, SupervoxelPretext

        return SupervoxelPretext(SupervoxelConfig.from_dict(options))
    if name == "mae":
        from nnunet_slem.pretext.mae import MAEConfig, MAEPretext

        return MAEPretext(MAEConfig.from_dict(options), num_modalities=num_modalities, spatial_dims=spatial_dims)
    if name == "slem_recon":
        from nnunet_slem.pretext.slem_recon import SLeMReconConfig, SLeMReconPretext

        return SLeMReconPretext(SLeMReconConfig.from_dict(options), num_modalities=num_modalities,
                                spatial_dims=spatial_dims)
    raise PretextConfigError(f"Unknown pretext {name!r}; choose one of {', '.join(PRETEXT_NAMES)}.")


def parse_pretext_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, booleans, lists), else as a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise PretextConfigError(f"--pretext-option {text!r}: expected KEY=VALUE, e.g. num_permutations=100.")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value
