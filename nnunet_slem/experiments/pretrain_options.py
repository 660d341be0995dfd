"""An arm's pretraining options (:attr:`nnunet_slem.experiments.methods.Method.pretraining`) turned into what
``compare`` needs: ``nnunet-slem pretrain`` arguments, the variant's folder name, and the epochs a reused
checkpoint must have. The placeholders :data:`~nnunet_slem.experiments.methods.POOL_OPTION` (the ``--unlabeled``
pool) and :data:`~nnunet_slem.experiments.methods.SCALE_OPTION` (k x the comparison's pretraining epochs) are
resolved here and nowhere else.
"""

from __future__ import annotations

import re

from nnunet_slem.experiments.methods import POOL_OPTION, SCALE_OPTION


def scaled_epochs(options: tuple[str, ...], epochs: int | None) -> int | None:
    """The pretraining epochs of an arm: ``epochs`` (the comparison's; ``None``: pretrain's default), times the
    scale where ``options`` carry one."""
    scale = next((int(options[i + 1]) for i, o in enumerate(options) if o == SCALE_OPTION), None)
    if scale is None:
        return epochs
    from nnunet_slem.pretrain.settings import PretrainSettings

    return scale * (epochs or PretrainSettings().epochs)


def pretrain_cli(options: tuple[str, ...], unlabeled: str | None, epochs: int | None) -> list[str | int]:
    """``nnunet-slem pretrain`` arguments for ``options``: the pool placeholder becomes ``--unlabeled DIR``, the
    scale ``--epochs`` (k x ``epochs``; placed after the schedule flags, so it wins)."""
    args: list[str | int] = []
    i = 0
    while i < len(options):
        if options[i] == POOL_OPTION:
            args += ["--unlabeled", unlabeled, "-np", 2]
        elif options[i] == SCALE_OPTION:
            i += 1
        else:
            args.append(options[i])
        i += 1
    scaled = scaled_epochs(options, epochs)
    return args + (["--epochs", scaled] if scaled != epochs else [])


def variant_folder(options: tuple[str, ...], pool_key: str | None) -> str:
    """The variant's folder name: the options as written, the pool placeholder as the pool's identity
    (``pool_key``), e.g. ``grid_2x2x2`` or ``pool-imagesUnlabeled-384cases-1a2b3c4d_x_8``."""
    tokens = [pool_key if o == POOL_OPTION else "x" if o == SCALE_OPTION else o for o in options]
    return "_".join(re.sub(r"[^\w.-]+", "-", str(o).lstrip("-")) for o in tokens)
