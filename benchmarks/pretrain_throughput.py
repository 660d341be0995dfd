"""Pretraining throughput: compute-bound step rate vs end-to-end rate with the real loader, in one run.

    python benchmarks/pretrain_throughput.py -d 501 -c 3d_fullres [-p PLANS] [-device cuda] [--steps 50]

(a) compute bound: one batch of real patches kept on the device; every step still builds a fresh pretext
    sample from it on the device, then forward/backward/step.
(b) end to end: the real patch stream (worker processes, pinned memory, the pretraining's device feeder
    thread) feeding the same step, timed once every worker has delivered its first batch: a run starts its
    loader workers once, not per epoch, so their start-up is not part of the steady-state rate. Also reports
    the share of that time the training thread waited for a batch (near 0: the loader keeps up; the rest
    of a shortfall against (a) is contention, e.g. for CPU cores or memory bandwidth).
(c) the loader alone (a fresh loader, same start-up exclusion): what the workers can deliver.
Prints them in samples/s and the ratio (b)/(a) (goal on a GPU: end-to-end >= 0.9 x compute bound), and one
``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from nnunet_slem.pretrain.feeder import DeviceFeeder
from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
from nnunet_slem.pretrain.settings import PretrainSettings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(trainer: SLeMPretrainer, model, optimizer, scaler, batches, steps: int,
                warmup: int) -> tuple[float, float]:
    """Samples per second over ``steps`` steps after ``warmup``, and the share of that time spent waiting for
    a batch (a :class:`DeviceFeeder`'s ``wait_s``; 0 for a plain iterator)."""
    for i in range(warmup + steps):
        if i == warmup:
            _sync(trainer.device)
            start, waited = time.perf_counter(), getattr(batches, "wait_s", 0.0)
        images = next(batches)  # float32 on the device, as the pretraining loop gets them
        seeds = [i * images.shape[0] + j for j in range(images.shape[0])]  # one pretext generator per sample
        trainer.train_step(model, optimizer, scaler, images, seeds)
    _sync(trainer.device)
    elapsed = time.perf_counter() - start
    return steps * trainer.batch_size / elapsed, (getattr(batches, "wait_s", 0.0) - waited) / elapsed


def loader_rate(batches, steps: int, warmup: int) -> float:
    """Samples per second the loader delivers when nothing else consumes time."""
    for _ in range(warmup):
        next(batches)
    start, n = time.perf_counter(), 0
    for _ in range(steps):
        n += next(batches).shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-device", dest="device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--transfer-dtype", default="auto", choices=["auto", "float16", "float32"],
                        help="dtype of the batches the loader hands over [auto: float16 on CUDA]")
    args = parser.parse_args()

    settings = PretrainSettings(batch_size=args.batch_size, num_workers=args.num_workers, compile=args.compile,
                                transfer_dtype=args.transfer_dtype)
    trainer = SLeMPretrainer(args.dataset, args.configuration, args.plans, args.device, settings,
                             results_root="/tmp/slem_benchmark_results")
    model = trainer.build_model().to(trainer.device)
    optimizer = trainer._optimizer(list(model.parameters()))
    scaler = torch.amp.GradScaler("cuda") if trainer.device.type == "cuda" else None
    step_model = torch.compile(model) if args.compile else model
    source = trainer._image_source()

    first = trainer._loader(source, 0)
    fixed = next(first).to(trainer.device).float()
    first.close()  # its workers would otherwise idle on through the timed runs

    def fixed_batches():
        while True:
            yield fixed

    compute, _ = timed_steps(trainer, step_model, optimizer, scaler, fixed_batches(), args.steps, args.warmup)
    loader_warmup = args.warmup + 2 * trainer.loader_workers()  # every worker past its start-up
    with DeviceFeeder(trainer._loader(source, 1), trainer.device) as feeder:
        end_to_end, data_wait_share = timed_steps(trainer, step_model, optimizer, scaler, feeder, args.steps,
                                                  loader_warmup)
    loader_only = loader_rate(trainer._loader(source, 2), args.steps, loader_warmup)
    result = {
        "device": torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu",
        "patch_size": trainer.patch_size, "batch_size": trainer.batch_size, "channels": trainer.num_channels,
        "compute_bound_samples_per_s": round(compute, 2), "end_to_end_samples_per_s": round(end_to_end, 2),
        "loader_only_samples_per_s": round(loader_only, 2), "loader_workers": trainer.loader_workers(),
        "transfer_dtype": trainer.transfer_dtype(), "data_wait_share": round(data_wait_share, 3),
        "ratio": round(end_to_end / compute, 3),
    }
    if trainer.device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(f"compute bound : {compute:8.2f} samples/s")
    print(f"end to end    : {end_to_end:8.2f} samples/s")
    print(f"loader alone  : {loader_only:8.2f} samples/s ({trainer.loader_workers()} workers)")
    print(f"data wait     : {data_wait_share:8.1%} of the end-to-end time")
    print(f"ratio         : {end_to_end / compute:8.3f}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
