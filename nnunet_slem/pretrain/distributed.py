"""Data-parallel pretraining on PyTorch's own engine (``torch.distributed`` + ``DistributedDataParallel``).

Two ways in, one code path:

- ``torchrun --nproc_per_node N $(which nnunet-slem) pretrain ...``: torchrun sets ``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`context_from_env` reads them.
- ``nnunet-slem pretrain ... -num_gpus N`` (as in ``nnUNetv2_train``): :func:`spawn` starts N processes
  with ``torch.multiprocessing`` on a free local port and sets the same variables in each. With
  ``-device cpu`` the N processes use gloo (for testing the distributed path without GPUs).

NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU.

What DDP wraps (:class:`TrainedPart`): a classification pretext's forward uses the encoder, the CFB and the
head, never the decoder (dense pretexts use the decoder too; the model's ``trained_modules()`` says which).
DDP expects a gradient for every parameter of the module it wraps, so wrapping the whole network would need
``find_unused_parameters=True`` (a graph traversal after every forward, and the decoder's parameters would
still be registered for reduction). Instead DDP wraps a module that *registers* exactly the trained
submodules and runs the unchanged model's forward; DDP's hooks sit on the parameters
themselves, so they fire whichever module path uses them.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from nnunet_slem.errors import UserFacingError

# rank 0 alone runs the audit, evaluation and checkpoint writing while the others wait at a barrier
BARRIER_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run; the default is a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def sum(self, values: list[float | torch.Tensor], device: torch.device) -> list[float]:
        """Sum numbers over all processes (one all-reduce on ``device``); plain floats for a single process."""
        if not self.is_distributed:
            return [float(v) for v in values]
        tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
        dist.all_reduce(tensor)
        return tensor.tolist()


def context_from_env(environ: dict[str, str] | None = None) -> DistContext:
    """The context torchrun (or :func:`spawn`) describes in the environment; single-process without it."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(env["RANK"])
    return DistContext(rank=rank, local_rank=int(env.get("LOCAL_RANK", rank)), world_size=world)


def process_device(device: str, ctx: DistContext) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` in a distributed CUDA run, else ``device`` as given."""
    if device == "cuda" and ctx.is_distributed:
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserFacingError(
                f"Process {ctx.rank} has local rank {ctx.local_rank} but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible. Start at most one process per GPU."
            )
        return torch.device("cuda", ctx.local_rank)
    return torch.device(device)


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo otherwise); a no-op for a single process."""
    if not ctx.is_distributed or dist.is_initialized():
        return
    if device.type == "mps":
        raise UserFacingError("Distributed pretraining runs on CUDA (NCCL) or the CPU (gloo), not on mps.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, timeout=BARRIER_TIMEOUT)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class TrainedPart(nn.Module):
    """Registers exactly the modules the pretext forward uses (the model's ``trained_modules()``: encoder, CFB
    and head, or encoder, CFB and decoder for dense pretexts) and runs ``forward``.

    ``forward`` is the model (or its ``torch.compile`` version); it is kept in a list so that it is not
    registered as a submodule, which would bring unused parameters (a classifier's decoder) back in.
    """

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.parts = nn.ModuleList(model.trained_modules())
        self._forward = [forward or model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward[0](x)


def trained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The optimiser's parameters: the model's trained modules, each parameter once, in module order
    (checkpoint-stable)."""
    return list(TrainedPart(model).parameters())


def wrap_ddp(model: nn.Module, step_model: Callable, ctx: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` over :class:`TrainedPart`; broadcasts rank 0's weights on construction."""
    part = TrainedPart(model, step_model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(part, device_ids=device_ids, broadcast_buffers=False)


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    """``--batch-size`` is the global batch; each process takes an equal share of it."""
    if global_batch % ctx.world_size:
        lower = global_batch - global_batch % ctx.world_size
        options = sorted({o for o in (lower, lower + ctx.world_size) if o > 0})
        raise UserFacingError(
            f"The global batch size {global_batch} does not split evenly over {ctx.world_size} processes. "
            f"Pass --batch-size {' or '.join(map(str, options))} (a multiple of the process count)."
        )
    return global_batch // ctx.world_size


def free_port() -> int:
    """A TCP port free right now on this host (for the rendezvous of :func:`spawn`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned_main(local_rank: int, world_size: int, port: int, threads: int, fn: Callable, args: tuple) -> None:
    """Entry point of one spawned process: the torchrun environment, then ``fn(*args)``."""
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        fn(*args)
    except UserFacingError as e:
        print(f"nnunet-slem pretrain (process {local_rank}): error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def spawn(fn: Callable[..., Any], args: tuple, nprocs: int, cpu: bool) -> None:
    """Run ``fn(*args)`` in ``nprocs`` processes on this host, as torchrun would; raises
    :class:`UserFacingError` if any of them fails (the others are stopped, its error is printed above)."""
    if not cpu and torch.cuda.device_count() < nprocs:
        raise UserFacingError(
            f"-num_gpus {nprocs} asks for {nprocs} GPUs but {torch.cuda.device_count()} are visible. "
            "Lower -num_gpus or set CUDA_VISIBLE_DEVICES."
        )
    # N CPU processes share the cores: one thread pool each of its own size, not N oversubscribed ones
    threads = max(1, (os.cpu_count() or 1) // nprocs) if cpu else 0
    try:
        torch.multiprocessing.spawn(_spawned_main, args=(nprocs, free_port(), threads, fn, args), nprocs=nprocs,
                                    join=True)
    except ProcessException as e:
        raise UserFacingError(
            f"Pretraining process {e.error_index} of {nprocs} failed ({e}); its own message is printed above. "
            "Checkpoints written so far are intact: fix the cause and rerun with --c."
        ) from e
