"""Why does the CFB slow the SLeM pretext? Pretext accuracy with and without the CFB over seeds, plus variants.

Every arm is pretrained with ``nnunet-slem pretrain`` on the label-efficiency benchmark's data and plans
(``benchmarks/label_efficiency.py prepare`` first), at several seeds; the pretext head starts identical for
the CFB and no-CFB networks of a seed (its own seed, drawn after the network). CFB variants are copies of the
plans with a ``slem_cfb`` entry, e.g. the hypotheses of docs/method.md:

    python benchmarks/cfb_pretext.py --root /tmp/bench --seeds 3 \\
        --variant nocfb=off --variant cfb='{}' --variant d12_nopool='{"dilations": [1, 2], "image_pooling": false}'

Writes ``<root>/cfb_pretext/summary.md`` (final and best held-out accuracy per arm: mean, min, max over seeds;
the first epoch that reaches twice chance) and ``curves.png``. Finished pretrainings are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATASET_ID = 940
BASE_PLANS = "nnUNetPlans_bench"
CONFIG = "3d_fullres"


def _variant(text: str) -> tuple[str, dict | None]:
    name, _, spec = text.partition("=")
    return name, None if spec == "off" else json.loads(spec or "{}")


def _plans_for(preprocessed: Path, name: str, cfb: dict | None) -> str:
    """The plans identifier of a variant: the benchmark plans, with the variant's ``slem_cfb`` entry."""
    if not cfb:
        return BASE_PLANS
    plans = json.loads((preprocessed / f"{BASE_PLANS}.json").read_text(encoding="utf-8"))
    target = f"{BASE_PLANS}_cfb_{name}"
    plans["plans_name"] = target
    plans["configurations"][CONFIG]["slem_cfb"] = cfb
    (preprocessed / f"{target}.json").write_text(json.dumps(plans, indent=1), encoding="utf-8")
    return target


def main() -> None:
    from nnunet_slem.checkpoint_format import load_checkpoint, pretrain_output_folder
    from nnunet_slem.experiments.workflow import nnunet_env, run_command

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variant", action="append", type=_variant, default=None,
                        help="NAME=off (no CFB) or NAME=JSON (slem_cfb options; {} = the defaults)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iters", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    variants = args.variant or [("nocfb", None), ("cfb", {})]
    env = nnunet_env(args.root)
    preprocessed = next((args.root / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID:03d}_*"))
    out = args.root / "cfb_pretext"
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[list[float]]] = {}
    for name, cfb in variants:
        plans = _plans_for(preprocessed, name, cfb)
        for seed in range(args.seeds):
            results = out / name / f"seed_{seed}"
            folder = pretrain_output_folder(results, preprocessed.name, plans, CONFIG, "slem", cfb is not None)
            if not (folder / "checkpoint_final.pth").is_file():
                cmd = ["nnunet-slem", "pretrain", "-d", DATASET_ID, "-c", CONFIG, "-p", plans, "-device", "cpu",
                       "--epochs", args.epochs, "--iters-per-epoch", args.iters, "--batch-size", args.batch,
                       "--seed", seed, "--audit-samples", 0, "--probe-samples", 0]
                if cfb is None:
                    cmd.append("--no-cfb")
                if (folder / "checkpoint_latest.pth").is_file():
                    cmd.append("--resume")
                run_command(cmd, {**env, "nnUNet_results": str(results)}, out / "log.txt", echo=True)
            log = load_checkpoint(folder / "checkpoint_final.pth")["logging"]
            curves.setdefault(name, []).append([float(a) for a in log["eval_acc"]])
    chance = 1 / 24
    lines = ["| arm | seeds | final acc mean [min, max] | best acc mean | first epoch > 2x chance (per seed) |",
             "|---|---|---|---|---|"]
    for name, runs in curves.items():
        final = [r[-1] for r in runs]
        best = [max(r) for r in runs]
        first = [next((i + 1 for i, a in enumerate(r) if a > 2 * chance), None) for r in runs]
        lines.append(f"| {name} | {len(runs)} | {np.mean(final):.3f} [{min(final):.3f}, {max(final):.3f}] | "
                     f"{np.mean(best):.3f} | {first} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, runs) in enumerate(curves.items()):
        for j, run in enumerate(runs):
            ax.plot(np.arange(1, len(run) + 1), run, color=f"C{i}", lw=1, label=name if j == 0 else None)
    ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("held-out pretext accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    print(f"Wrote {out}/summary.md, curves.png")


if __name__ == "__main__":
    main()
