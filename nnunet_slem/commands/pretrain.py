"""``nnunet-slem pretrain``: self-supervised pretraining (SLeM, or a baseline pretext) on a dataset nnU-Net has
planned and preprocessed.

One process by default; data-parallel with ``-num_gpus N`` (spawns N processes itself, like
``nnUNetv2_train -num_gpus``; with ``-device cpu`` N gloo processes) or under
``torchrun --nproc_per_node N $(which nnunet-slem) pretrain ...`` (see ``docs/distributed.md``).
"""

from __future__ import annotations

import argparse

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretext.registry import PRETEXT_NAMES


def parse_grid(text: str) -> list[int]:
    try:
        grid = [int(p) for p in text.lower().split("x")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--grid {text!r}: expected parts per axis like 2x2x1") from e
    if any(g < 1 for g in grid):
        raise argparse.ArgumentTypeError(f"--grid {text!r}: every axis needs at least one part")
    return grid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name (as for nnUNetv2_train)")
    parser.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier [nnUNetPlans]")
    parser.add_argument("-device", dest="device", default="cuda", choices=["cuda", "cpu", "mps"],
                        help="training device [cuda]")
    parser.add_argument("--epochs", type=int, default=100, help="epochs [100]")
    parser.add_argument("--iters-per-epoch", type=int, default=250, help="optimizer steps per epoch [250]")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="patches per step over all processes (the global batch; must divide by the process "
                        "count) [the plans' batch size]")
    parser.add_argument("-num_gpus", "--num-procs", dest="num_procs", type=int, default=1,
                        help="data-parallel processes started here, one per GPU (with -device cpu: N gloo "
                        "processes, for testing); under torchrun leave it at 1 [1]")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw",
                        help="adamw, or sgd as in nnU-Net (momentum 0.99, nesterov) [adamw]")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate [1e-3]")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay [1e-4]")
    parser.add_argument("--schedule", choices=["cosine", "poly"], default="cosine", help="LR decay [cosine]")
    parser.add_argument("--warmup-iters", type=int, default=0, help="linear LR warm-up steps [0]")
    parser.add_argument("--unlabeled", metavar="IMAGES_DIR", default=None,
                        help="an unlabelled pool: extra images (imagesTr naming, no labels), preprocessed once with "
                        "the same plans into nnU-Net's compressed format and reused by later runs")
    parser.add_argument("-np", dest="unlabeled_processes", type=int, default=2,
                        help="processes preprocessing the --unlabeled pool [2]")
    parser.add_argument("--c", dest="resume", action="store_true",
                        help="continue from checkpoint_latest.pth (nnU-Net's spelling)")
    parser.add_argument("--resume", dest="resume", action="store_true", help=argparse.SUPPRESS)  # the old spelling
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data loading processes per training process [min(8, (cpus-1)/processes) on CUDA, "
                        "0 on CPU]")
    parser.add_argument("--audit-samples", type=int, default=600,
                        help="samples for the shortcut audit run before training (0 skips it) [600]")
    parser.add_argument("--probe-samples", type=int, default=128,
                        help="held-out samples per shortcut probe of the final network, written to probes.json "
                        "(SLeM pretext; 0 skips the probes) [128]")
    parser.add_argument("--seed", type=int, default=0, help="seed of data sampling and the assignment set [0]")
    parser.add_argument("--pretext", choices=PRETEXT_NAMES, default="slem",
                        help="slem (the method), or a baseline: taleb (multimodal puzzle), supervoxel (supervoxel "
                        "segmentation), mae (masked image modelling); output folder <Prefix>Pretrain__PLANS__CONFIG "
                        "[slem]")
    parser.add_argument("--no-cfb", action="store_true",
                        help="pretrain the plain nnU-Net network without CFB (folder suffix _noCFB; fine-tune it "
                        "with -tr SLeMTrainer_noCFB)")
    add_pretext_arguments(parser)


def add_pretext_arguments(parser: argparse.ArgumentParser) -> None:
    pretext = parser.add_argument_group("pretext (stored in the checkpoint)")
    pretext.add_argument("--grid", type=parse_grid, default=None,
                         help="blocks per axis, e.g. 2x2x1 (4 blocks, default 3D) or 2x2x2; 2x2 for 2D")
    pretext.add_argument("--fixed-unsplit-axis", action="store_true",
                         help="keep the grid's axes as given instead of permuting them per sample")
    pretext.add_argument("--num-assignments", type=int, default=None,
                         help="classes = assignments in the set [min((M!)^blocks, 24)]")
    pretext.add_argument("--jitter", type=float, default=None, help="cut position jitter, fraction of the axis")
    pretext.add_argument("--normalization", choices=["rank", "zscore", "none"], default=None,
                         help="per-block renormalisation: rank (default; identical histograms in every block), "
                         "zscore, or none (ablations only: opens an intensity shortcut)")
    pretext.add_argument("--no-intensity-aug", action="store_true",
                         help="disable random per-block intensity transforms")
    pretext.add_argument("--pretext-option", action="append", default=[], metavar="KEY=VALUE",
                         help="any field of the chosen pretext's config, e.g. num_permutations=100 (taleb) or "
                         "n_segments=300 (supervoxel); repeatable (see docs/baselines.md)")


SLEM_ONLY_FLAGS = ("grid", "fixed_unsplit_axis", "num_assignments", "jitter", "normalization", "no_intensity_aug")


def pretext_options(args: argparse.Namespace) -> dict:
    """Only the options the user gave; the rest take the pretext's defaults for the patch's dimensionality."""
    from nnunet_slem.pretext.registry import parse_pretext_option

    pretext = getattr(args, "pretext", "slem")
    given = [f for f in SLEM_ONLY_FLAGS if getattr(args, f) not in (None, False)]
    if pretext != "slem" and given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise UserFacingError(f"{flags} configure the SLeM pretext only; for --pretext {pretext} use "
                              "--pretext-option KEY=VALUE.")
    options: dict = dict(parse_pretext_option(o) for o in args.pretext_option)
    if args.grid is not None:
        options["grid"] = list(args.grid)
    if args.fixed_unsplit_axis:
        options["random_unsplit_axis"] = False
    if args.num_assignments is not None:
        options["num_assignments"] = args.num_assignments
    if args.jitter is not None:
        options["jitter"] = args.jitter
    if args.normalization is not None:
        options["normalization"] = args.normalization
    if args.no_intensity_aug:
        options["intensity_aug"] = False
    return options


def settings_from(args: argparse.Namespace):
    from nnunet_slem.pretrain.settings import PretrainSettings

    return PretrainSettings(
        epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_iters=args.warmup_iters, seed=args.seed, num_workers=args.num_workers,
        compile=args.compile, audit_samples=args.audit_samples, probe_samples=args.probe_samples,
        pretext=pretext_options(args),
        pretext_name=getattr(args, "pretext", "slem"), cfb=not getattr(args, "no_cfb", False),
    )


def run_process(args: argparse.Namespace) -> None:
    """One training process: single, a torchrun rank or a ``-num_gpus`` child (the environment says which)."""
    from nnunet_slem.pretrain import distributed
    from nnunet_slem.pretrain.pretrainer import SLeMPretrainer

    ctx = distributed.context_from_env()
    # join the group (and select this rank's GPU) before anything touches CUDA
    distributed.init_process_group(ctx, distributed.process_device(args.device, ctx))
    try:
        SLeMPretrainer(args.dataset, args.configuration, args.plans, args.device, settings_from(args),
                       unlabeled_dir=args.unlabeled, distributed=ctx,
                       unlabeled_processes=args.unlabeled_processes).run(resume=args.resume)
    finally:
        distributed.shutdown()


def run(args: argparse.Namespace) -> None:
    if args.num_procs < 1:
        raise UserFacingError("-num_gpus must be at least 1.")
    if getattr(args, "unlabeled_processes", 1) < 1:
        raise UserFacingError("-np must be at least 1 (processes preprocessing the --unlabeled pool).")
    settings_from(args)  # every number checked (finite, in range) before a process starts or a file is read
    if args.num_procs == 1:
        run_process(args)
        return
    from nnunet_slem.pretrain import distributed
    from nnunet_slem.pretrain.pretrainer import SLeMPretrainer

    if distributed.context_from_env().is_distributed:
        raise UserFacingError("Use either torchrun or -num_gpus, not both (torchrun already starts the processes).")
    # the user's mistakes (paths, plans, batch split, existing run without --resume) as one line, before spawning
    ctx = distributed.DistContext(world_size=args.num_procs)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserFacingError("-device cuda requested but CUDA is not available here. Use -device cpu.")
    SLeMPretrainer(args.dataset, args.configuration, args.plans, "cpu", settings_from(args),
                   unlabeled_dir=args.unlabeled, distributed=ctx).existing_checkpoint(args.resume)
    distributed.spawn(run_process, (args,), args.num_procs, cpu=args.device != "cuda")
