"""SLeM against the baselines at a CPU-feasible size on the bundled synthetic BraTS-like data.

    python benchmarks/compare_baselines.py [--out bench_compare] [--seeds 3] [--labeled 4] [-device cpu]

Generates the data (``nnunet-slem make-dataset``), plans and preprocesses it with nnU-Net, writes a copy of
the plans with fewer features (features 8-64, as the demo) and a one-fold split (``val_cases`` fixed
validation cases, the rest the fold's training pool), then runs ``nnunet-slem compare`` with every method:
each pretraining once, and ``seeds`` fine-tunings per method on ``labeled`` cases drawn per seed from the
training pool. Prints the comparison's table; ``<out>/compare/results.{csv,md,png}`` hold the results.
Every step is skipped when its output exists, so rerunning continues. On 2 CPU cores the defaults take
roughly 45-60 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nnunet_slem.data.synthetic import dataset_name, make_dataset
from nnunet_slem.experiments.workflow import nnunet_env, run_command, write_small_plans, write_split

PLANS = "nnUNetPlans_benchCompare"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_compare")
    parser.add_argument("-d", dest="dataset_id", type=int, default=992)
    parser.add_argument("-device", dest="device", default="cpu")
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--val-cases", type=int, default=4)
    parser.add_argument("--labeled", default="4")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=[40, 40, 40])
    parser.add_argument("--features", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--methods", default="scratch,cfb,slem,slem_nocfb,taleb,supervoxel,jigen")
    parser.add_argument("--pretrain-epochs", type=int, default=18)
    parser.add_argument("--pretrain-iters", type=int, default=25)
    parser.add_argument("--pretrain-batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iters-per-epoch", type=int, default=20)
    parser.add_argument("--val-iters", type=int, default=2)
    args = parser.parse_args()

    start = time.perf_counter()
    root = Path(args.out).resolve()
    env = nnunet_env(root)
    log = root / "bench_log.txt"
    name = dataset_name(args.dataset_id, "brats")
    raw = Path(env["nnUNet_raw"]) / name
    if not (raw / "dataset.json").is_file():
        make_dataset(args.dataset_id, env["nnUNet_raw"], n_cases=args.cases, n_test=0, modalities="brats",
                     seed=0, shape=tuple(args.shape))
    preprocessed = Path(env["nnUNet_preprocessed"]) / name
    if not (preprocessed / "nnUNetPlans.json").is_file():
        run_command(["nnUNetv2_plan_and_preprocess", "-d", args.dataset_id, "-c", "3d_fullres", "-np", "2"],
                    {**env, "nnUNet_n_proc_DA": "2"}, log)
    write_small_plans(preprocessed, "nnUNetPlans", PLANS, args.features)
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    write_split(preprocessed, cases[: -args.val_cases], cases[-args.val_cases:])
    run_command(["nnunet-slem", "compare", "-d", args.dataset_id, "-c", "3d_fullres", "-f", "0", "-p", PLANS,
                 "-device", args.device, "--methods", args.methods, "--labeled", args.labeled, "--seeds", args.seeds,
                 "--out", root / "compare", "--pretrain-epochs", args.pretrain_epochs, "--pretrain-iters",
                 args.pretrain_iters, "--pretrain-batch", args.pretrain_batch, "--epochs", args.epochs,
                 "--iters-per-epoch", args.iters_per_epoch, "--val-iters", args.val_iters], env, log)
    print((root / "compare" / "results.md").read_text(encoding="utf-8"))
    print(f"benchmark wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
