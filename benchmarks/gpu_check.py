"""Helper of ``benchmarks/gpu_check.sh``: time nnU-Net trainers, shrink plans for CPU smoke runs, print the table.

    python benchmarks/gpu_check.py trainer -d ID -tr NAME [-p PLANS] [-c CONFIG] [-device cuda] \
        [--iters 40] [--warmup 8] --out result.json
    python benchmarks/gpu_check.py tiny-plans -d ID -p SOURCE -o TARGET
    python benchmarks/gpu_check.py report WORKDIR

``trainer`` builds the trainer class itself (``nnUNetTrainer`` from nnU-Net, ``SLeM*`` from this package, so
no ``nnUNet_extTrainer`` is needed), runs nnU-Net's own ``on_train_start`` (real data loaders with
``nnUNet_n_proc_DA`` augmentation workers) and times ``train_step``:

- end to end: ``train_step(next(dataloader_train))``, the loader included, as in ``nnUNetv2_train``;
- fixed batch: one batch moved to the device once, then ``train_step`` on it (compute bound); the peak
  allocated GPU memory is taken over this phase.

Every phase starts after ``--warmup`` steps (cuDNN autotuning, loader queues filling). ``report`` reads the
trainer JSON files and the ``RESULT`` lines that ``cfb_overhead.py`` and ``pretrain_throughput.py`` wrote
into WORKDIR and prints the ratios next to their goals. Everything runs on the CPU too (tiny sizes; the
memory column is then empty).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

GOALS = {  # ratio SLeM / baseline (pretraining: end-to-end / compute-bound) and its bound
    "step time, end to end": ("<=", 1.05),
    "step time, fixed batch": ("<=", 1.05),
    "peak memory, fixed batch": ("<=", 1.10),
    "pretraining, end to end / compute bound": (">=", 0.90),
}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _trainer_class(name: str):
    if name.startswith("SLeM"):
        import nnunet_slem.trainers as ours

        return getattr(ours, name)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def _timed(trainer, batches, steps: int) -> float:
    """Seconds per ``train_step`` over ``steps`` steps (``train_step`` returns the loss on the CPU, so every
    step ends synchronised anyway)."""
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    _sync(trainer.device)
    return (time.perf_counter() - start) / steps


def _on_device(batch: dict, device) -> dict:
    target = batch["target"]
    moved = [t.to(device) for t in target] if isinstance(target, list) else target.to(device)
    return {**batch, "data": batch["data"].to(device), "target": moved}


def _repeat(batch: dict):
    while True:
        yield batch


def _stop_loaders(trainer) -> None:
    """nnU-Net's augmentation workers are not daemons: finish them, or the process never exits."""
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        if hasattr(loader, "_finish"):
            loader._finish()


def time_trainer(args: argparse.Namespace) -> dict:
    import torch
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    device = torch.device(args.device)
    name = maybe_convert_to_dataset_name(int(args.dataset))
    base = Path(os.environ["nnUNet_preprocessed"]) / name
    plans = json.loads((base / f"{args.plans}.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False
    dataset_json = json.loads((base / "dataset.json").read_text(encoding="utf-8"))
    trainer = _trainer_class(args.trainer)(plans=plans, configuration=args.configuration, fold=0,
                                           dataset_json=dataset_json, device=device)
    trainer.on_train_start()
    trainer.network.train()
    try:
        _timed(trainer, trainer.dataloader_train, args.warmup)
        end_to_end = _timed(trainer, trainer.dataloader_train, args.iters)
        fixed = _repeat(_on_device(next(trainer.dataloader_train), device))
        _timed(trainer, fixed, max(2, args.warmup // 2))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fixed_batch = _timed(trainer, fixed, args.iters)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    finally:
        _stop_loaders(trainer)
    return {
        "trainer": args.trainer, "plans": args.plans, "configuration": args.configuration,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "compile": os.environ.get("nnUNet_compile"),
        "n_proc_DA": os.environ.get("nnUNet_n_proc_DA"),
        "patch_size": [int(p) for p in trainer.configuration_manager.patch_size],
        "batch_size": int(trainer.batch_size),
        "params_M": sum(p.numel() for p in trainer.network.parameters()) / 1e6,
        "iters": args.iters, "end_to_end_s_per_iter": end_to_end, "fixed_batch_s_per_iter": fixed_batch,
        "peak_gib": peak,
    }


def tiny_plans(args: argparse.Namespace) -> None:
    """CPU smoke runs: the same plans with 8..32 features per stage (same preprocessed data)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_slem.experiments.workflow import write_small_plans

    base = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(int(args.dataset))
    print(write_small_plans(base, args.plans, args.output, (8, 16, 24, 32)))


def _result_line(path: Path) -> dict | None:
    if not path.is_file():
        return None
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def ratios(work: Path) -> dict[str, float | None]:
    """SLeM / nnU-Net ratios from the files the shell script wrote (``None`` where a part is missing)."""
    base, slem = _load_json(work / "trainer_nnUNetTrainer.json"), _load_json(work / "trainer_SLeM.json")
    pretrain = _result_line(work / "pretrain_throughput.txt")

    def ratio(key: str) -> float | None:
        if not base or not slem or base.get(key) in (None, 0) or slem.get(key) is None:
            return None
        return slem[key] / base[key]

    return {
        "step time, end to end": ratio("end_to_end_s_per_iter"),
        "step time, fixed batch": ratio("fixed_batch_s_per_iter"),
        "peak memory, fixed batch": ratio("peak_gib"),
        "pretraining, end to end / compute bound": pretrain.get("ratio") if pretrain else None,
    }


def report(args: argparse.Namespace) -> int:
    work = Path(args.work)
    rows = ratios(work)
    for name in ("nnUNetTrainer", "SLeM"):
        r = _load_json(work / f"trainer_{name}.json")
        if r:
            peak = f"{r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else "n/a"
            print(f"{r['trainer']:<24} {r['params_M']:6.1f} M params  end-to-end {r['end_to_end_s_per_iter']:.3f} "
                  f"s/it  fixed batch {r['fixed_batch_s_per_iter']:.3f} s/it  peak {peak}  "
                  f"(patch {r['patch_size']}, batch {r['batch_size']}, {r['device']})")
    pretrain = _result_line(work / "pretrain_throughput.txt")
    if pretrain:
        print(f"pretraining: compute bound {pretrain['compute_bound_samples_per_s']} samples/s, end to end "
              f"{pretrain['end_to_end_samples_per_s']} samples/s (patch {pretrain['patch_size']}, batch "
              f"{pretrain['batch_size']}), loader alone {pretrain['loader_only_samples_per_s']} samples/s, "
              f"training thread waiting for data {pretrain.get('data_wait_share', float('nan')):.1%} of the time")
    print()
    print(f"{'measure':<42}{'ratio':>8}  {'goal':<8}{'verdict':>8}")
    failed = 0
    for name, value in rows.items():
        op, bound = GOALS[name]
        if value is None or math.isnan(value):
            verdict, shown = "n/a", "n/a"
        else:
            ok = value <= bound if op == "<=" else value >= bound
            verdict, shown = ("ok" if ok else "MISSED"), f"{value:.3f}"
            failed += not ok
        print(f"{name:<42}{shown:>8}  {op} {bound:<5}{verdict:>8}")
    print("RESULT " + json.dumps({"ratios": rows, "goals": {k: list(v) for k, v in GOALS.items()}}))
    return 1 if failed and args.strict else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trainer", help="time one trainer (end to end and fixed batch)")
    t.add_argument("-d", dest="dataset", required=True)
    t.add_argument("-tr", dest="trainer", required=True)
    t.add_argument("-p", dest="plans", default="nnUNetPlans")
    t.add_argument("-c", dest="configuration", default="3d_fullres")
    t.add_argument("-device", dest="device", default="cuda")
    t.add_argument("--iters", type=int, default=40)
    t.add_argument("--warmup", type=int, default=8)
    t.add_argument("--out", required=True)
    p = sub.add_parser("tiny-plans", help="plans with few features, for CPU smoke runs")
    p.add_argument("-d", dest="dataset", required=True)
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("-o", dest="output", default="nnUNetPlans_gpucheck_tiny")
    r = sub.add_parser("report", help="the ratio table")
    r.add_argument("work")
    r.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if args.command == "trainer":
        result = time_trainer(args)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print("RESULT " + json.dumps(result))
    elif args.command == "tiny-plans":
        tiny_plans(args)
    else:
        sys.exit(report(args))


if __name__ == "__main__":
    main()
