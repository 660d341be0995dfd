"""The SLeM pretext's shortcut checks on a pretraining run's own images: the audit before training
(:mod:`nnunet_slem.pretext.audit`: could block statistics solve the task?) and the probes of the trained network
(:mod:`nnunet_slem.pretrain.probes`: does it use a shortcut?).

Each draws single patches from its own sample stream of the run's seed (``AUDIT_STREAM``, ``EVAL_STREAM``), so
neither sees the training samples nor changes them: a run with the checks trains exactly as one without.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_slem.pretext.audit import AuditResult, run_audit
from nnunet_slem.pretext.slem import SLeMPretext
from nnunet_slem.pretrain.data import AUDIT_STREAM, EVAL_STREAM, ImageSource, PatchStream
from nnunet_slem.pretrain.probes import ProbeResult, run_probes


def audit_on_source(pretext: SLeMPretext, source: ImageSource, patch_size: Sequence[int], seed: int,
                    n_train: int, n_test: int) -> AuditResult:
    """:func:`~nnunet_slem.pretext.audit.run_audit` on patches of ``source`` (the audit's own sample stream)."""
    stream = iter(PatchStream(source, patch_size, 1, seed, stream=AUDIT_STREAM))

    def sample_images(n: int) -> torch.Tensor:
        return torch.cat([next(stream) for _ in range(n)])

    return run_audit(pretext, sample_images, n_train=n_train, n_test=n_test, seed=seed, batch_size=8)


def probe_on_source(model: nn.Module, pretext: SLeMPretext, source: ImageSource, patch_size: Sequence[int],
                    seed: int, device: torch.device, n: int, batch_size: int) -> ProbeResult:
    """:func:`~nnunet_slem.pretrain.probes.run_probes` of the pretext classifier ``model`` on ``n`` held-out
    patches (the evaluation set's sample stream, never trained on), under autocast on CUDA as in training."""
    stream = iter(PatchStream(source, patch_size, 1, seed, stream=EVAL_STREAM))

    def sample_images(k: int) -> torch.Tensor:
        return torch.cat([next(stream) for _ in range(k)]).to(device)

    def classify(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            return model(x).float()

    model.eval()
    return run_probes(classify, pretext, sample_images, n, seed=seed, batch_size=max(batch_size, pretext.num_blocks))
