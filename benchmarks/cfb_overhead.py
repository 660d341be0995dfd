"""Cost of the CFB: parameters and training-step time of SLeMTrainer's network vs nnUNetTrainer's, same plans.

    python benchmarks/cfb_overhead.py --plans $nnUNet_preprocessed/Dataset501_X/nnUNetPlans.json \
        [-c 3d_fullres] [-device cpu|cuda] [--batch-size 2] [--steps 10]

Both networks are built by the trainers' own ``build_network_architecture`` (deep supervision on, as in
training) and timed on one fixed random batch: forward, deep-supervised MSE-to-zero loss, backward, SGD
step. Prints a table and one ``RESULT {json}`` line (peak memory too on CUDA).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_slem.trainers import SLeMTrainer


def step_time(network: torch.nn.Module, x: torch.Tensor, steps: int, warmup: int = 2) -> tuple[float, float]:
    device = x.device
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.99)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            outputs = network(x)
            loss = sum(o.float().pow(2).mean() for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", required=True, help="an nnU-Net plans JSON file")
    parser.add_argument("-c", dest="configuration", default="3d_fullres")
    parser.add_argument("-device", dest="device", default="cpu")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    with open(args.plans, encoding="utf-8") as f:
        plans = PlansManager(json.load(f))
    cm = plans.get_configuration(args.configuration)
    device = torch.device(args.device)
    batch = args.batch_size or cm.batch_size
    x = torch.randn(batch, args.channels, *cm.patch_size, device=device)
    rows = {}
    for name, trainer in (("nnUNetTrainer", nnUNetTrainer), ("SLeMTrainer", SLeMTrainer)):
        torch.manual_seed(0)
        net = trainer.build_network_architecture(plans, cm, args.channels, args.classes, True).to(device)
        params = sum(p.numel() for p in net.parameters())
        seconds, peak = step_time(net, x, args.steps)
        rows[name] = {"params": params, "s_per_step": seconds, "peak_gib": peak}
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base, slem = rows["nnUNetTrainer"], rows["SLeMTrainer"]
    print(f"patch {cm.patch_size}, batch {batch}, device {device}")
    print(f"{'network':<15}{'params':>14}{'s/step':>10}{'peak GiB':>10}")
    for name, r in rows.items():
        print(f"{name:<15}{r['params']:>14,}{r['s_per_step']:>10.3f}{r['peak_gib']:>10.2f}")
    ratios = {"params": slem["params"] / base["params"], "step_time": slem["s_per_step"] / base["s_per_step"]}
    if device.type == "cuda":
        ratios["memory"] = slem["peak_gib"] / base["peak_gib"]
    print("ratios SLeM / nnU-Net: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print("RESULT " + json.dumps({"patch_size": list(cm.patch_size), "batch_size": batch, "device": str(device),
                                  "rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    main()
