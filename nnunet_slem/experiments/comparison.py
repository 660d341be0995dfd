"""``nnunet-slem compare``: SLeM against the paper's baselines, fine-tuned the same way, at few labels.

For every method and seed: pretraining (if the method has one; finished checkpoints are reused) ->
``nnUNetv2_train -tr <method's trainer>`` on the fold's training cases, optionally only ``labeled`` of
them -> nnU-Net's final validation on the fold's validation cases (monitoring only) -> ``nnUNetv2_predict``
of the held-out test cases (the dataset's ``imagesTs``/``labelsTs`` unless ``--test-images``/``--test-labels``
say otherwise; pretraining reads only ``imagesTr``, and no checkpoint is selected on them: the final one is
used) -> Dice per region and case with :mod:`nnunet_slem.evaluation`. Then ``results.csv`` (one row per
method, seed and split), ``results.md``, ``results.png`` and, on the test split, the paired statistics
``paired.csv``/``paired.png`` (each method minus ``--reference``, with a paired t 95 % CI over seeds and
Holm-adjusted p values, :mod:`nnunet_slem.evaluation.paired`).

Pairing: seed ``s`` fixes the labelled subset (``SLEM_LABELED_SEED``) and the fine-tuning RNG
(``SLEM_SEED``: network initialisation, patch sampling, augmentation) identically for every method. With
``pretrain_seeds = P``, every pretext is pretrained ``P`` times (``--seed p``) and fine-tuning seed ``s``
starts from pretraining ``s mod P``; the interval then reflects pretraining variation only as far as P
pretrainings sample it. Every run's record names its labelled cases (``labeled_cases``) and the pretraining
it started from (``pretrained_from``: seed, path, sha256), and keeps nnU-Net's validation curve.
``first_seed`` shifts the seeds (``--first-seed 6 --seeds 6``: seeds 6-11), to add seeds to stored runs.

Fairness: all methods fine-tune from the same plans with the same schedule (nnU-Net's, or the one given
here, passed to every trainer as ``SLEM_EPOCHS`` / ``SLEM_ITERS_PER_EPOCH`` / ``SLEM_VAL_ITERS``). The
methods differ only in the initialisation and its recipe (pretrained arms share one, random arms keep
nnU-Net's) and, for JiGen, the auxiliary loss; the table records whether each network has the CFB.

Every finished step leaves a file (checkpoint, validation summary, per-run JSON) and is skipped when the
command runs again, so an interrupted comparison continues where it stopped; a fine-tuning killed midway
continues (nnU-Net's ``--c``) from its last ``checkpoint_latest.pth``, written every ``save_every`` epochs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunet_slem.atomic import write_json_atomic
from nnunet_slem.checkpoint_format import pretrain_output_folder
from nnunet_slem.errors import UserFacingError
from nnunet_slem.experiments.comparison_report import write_comparison_report
from nnunet_slem.experiments.methods import ALL_METHODS, METHODS, POOL_OPTION, Method, describe_options
from nnunet_slem.experiments.pretrain_options import pretrain_cli, scaled_epochs, variant_folder
from nnunet_slem.experiments.run_records import (
    check_pretraining_matches,
    check_same_pretraining,
    checkpoint_identity,
    validation_curve,
)
from nnunet_slem.experiments.workflow import run_command
from nnunet_slem.paths import nnunet_raw_dir
from nnunet_slem.pretrain.locate import dataset_id_of, locate_preprocessed
from nnunet_slem.trainers.labeled_subset import check_seed_count

#: bump when a run record's layout changes: older records are re-evaluated (their training is reused)
RECORD_VERSION = 2


#: written into a fine-tuning's fold folder when it continues from ``checkpoint_latest.pth`` (``--c``)
RESUMED_MARKER = "slem_resumed"
SMOKE_PRETRAIN = {"epochs": 1, "iters": 2, "batch": 2}
SMOKE_SCHEDULE = {"epochs": 1, "iters": 2, "val_iters": 1}


@dataclass
class CompareSettings:
    dataset: str
    configuration: str
    fold: int
    plans: str = "nnUNetPlans"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    labeled: str | None = None  # count or fraction (SLEM_LABELED); None: every training case of the fold
    seeds: int = 1
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1 (to add seeds to stored runs in a new folder)
    pretrain_seeds: int = 1
    reference: str = "scratch"
    test_images: str | None = None  # None: the raw dataset's imagesTs
    test_labels: str | None = None  # None: the raw dataset's labelsTs
    device: str = "cuda"
    smoke: bool = False
    out: str | None = None
    pretrain_epochs: int | None = None  # None: pretrain's default (smoke: 1)
    pretrain_iters: int | None = None
    pretrain_batch: int | None = None
    epochs: int | None = None  # fine-tuning schedule; None: nnU-Net's (smoke: 1 x 2 x 1)
    iters_per_epoch: int | None = None
    val_iters: int | None = None
    save_every: int = 5  # fine-tuning checkpoint_latest.pth every N epochs (SLEM_SAVE_EVERY)
    tta: bool = True  # nnU-Net's test-time mirroring when predicting the test cases (the same for every method)
    unlabeled: str | None = None  # the unlabelled pool of the pool arms (``--unlabeled``)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserFacingError("--seeds must be at least 1.")
        if self.first_seed < 0:
            raise UserFacingError(f"--first-seed {self.first_seed} is negative; seeds start at 0.")
        if self.pretrain_seeds < 1:
            raise UserFacingError("--pretrain-seeds must be at least 1.")
        if self.reference not in ALL_METHODS:
            raise UserFacingError(f"--reference {self.reference!r} is not a method; choose from "
                                  f"{','.join(ALL_METHODS)}.")
        if (self.test_images is None) != (self.test_labels is None):
            raise UserFacingError("--test-images and --test-labels go together: give both, or neither to use the "
                                  "dataset's imagesTs/labelsTs.")
        pool_arms = [m for m in self.methods if m in ALL_METHODS and ALL_METHODS[m].pool]
        if pool_arms and self.unlabeled is None:
            raise UserFacingError(f"--methods {','.join(pool_arms)} pretrain(s) on an unlabelled pool: pass it with "
                                  "--unlabeled DIR (images named like imagesTr, no labels), or drop those arms.")
        if self.unlabeled is not None and not pool_arms:
            print(f"WARNING: --unlabeled {self.unlabeled} is used by the pool arms only "
                  f"({', '.join(m for m in ALL_METHODS if ALL_METHODS[m].pool)}), and none is in --methods.",
                  flush=True)
        if self.save_every < 1:
            raise UserFacingError("--save-every must be at least 1 (epochs between checkpoints).")
        if self.labeled is not None:
            from nnunet_slem.trainers.labeled_subset import parse_labeled

            parse_labeled(self.labeled)
        if self.smoke:
            self.pretrain_epochs = self.pretrain_epochs or SMOKE_PRETRAIN["epochs"]
            self.pretrain_iters = self.pretrain_iters or SMOKE_PRETRAIN["iters"]
            self.pretrain_batch = self.pretrain_batch or SMOKE_PRETRAIN["batch"]
            self.epochs = self.epochs or SMOKE_SCHEDULE["epochs"]
            self.iters_per_epoch = self.iters_per_epoch or SMOKE_SCHEDULE["iters"]
            self.val_iters = self.val_iters or SMOKE_SCHEDULE["val_iters"]


class Comparison:
    def __init__(self, settings: CompareSettings) -> None:
        self.s = settings
        self.data = locate_preprocessed(settings.dataset, settings.configuration, settings.plans)
        self.dataset_id = dataset_id_of(self.data.dataset_name)
        results = os.environ.get("nnUNet_results")
        if not results:
            raise UserFacingError("nnUNet_results is not set. export nnUNet_results=/path/to/nnUNet_results")
        tag = f"fold_{settings.fold}__labeled_{settings.labeled or 'all'}" + ("__smoke" if settings.smoke else "")
        default_out = (Path(results) / self.data.dataset_name
                       / f"SLeMCompare__{settings.plans}__{settings.configuration}")
        self.root = Path(settings.out) if settings.out else default_out / tag
        self.root.mkdir(parents=True, exist_ok=True)
        # smoke runs pretrain into their own folder: a 2-step checkpoint must never stand in for a real one
        self.pretrain_root = self.root / "pretrain_results" if settings.smoke else Path(results)
        # further pretraining seeds beside it, shared by the comparisons of one dataset/plans (e.g. K = 4 and 8)
        self.extra_pretrain_root = (self.root if settings.smoke or settings.out else default_out) / "pretrain_seeds"
        self.log = self.root / "compare_log.txt"
        self.regions, self.ignore_label = self._regions()
        self.lesion_settings = self._lesion_settings()
        self.test_set = self._test_set()

    # -------------------------------------------------------------------------------------------- setup
    def _regions(self):
        from nnunet_slem.evaluation.metrics import regions_from_labels

        return regions_from_labels(self.data.dataset_json["labels"])

    def _lesion_settings(self):
        """BraTS 2023 lesion-wise scoring on BraTS-region datasets (WT/TC/ET, as ``robustness`` decides), else
        ``None``.

        BraTS leaves out reference lesions of 50 mm³ or less; on coarser grids that is fewer voxels, so the
        threshold is converted with the configuration's voxel volume."""
        from nnunet_slem.evaluation.lesionwise import DEFAULT_MIN_LESION_VOXELS, LesionSettings, has_brats_regions

        if not has_brats_regions(self.regions):
            return None
        spacing = self.data.plans["configurations"][self.s.configuration]["spacing"]
        voxel_mm3 = float(spacing[0] * spacing[1] * spacing[2]) if len(spacing) == 3 else 1.0
        return LesionSettings(min_lesion_voxels=max(1, round(DEFAULT_MIN_LESION_VOXELS / voxel_mm3)))

    def _test_set(self) -> tuple[Path, Path] | None:
        """``(images, labels)`` of the held-out test cases, or ``None`` (validation only, no claim possible)."""
        if self.s.test_images is not None:
            images, labels = Path(self.s.test_images), Path(self.s.test_labels)
            for flag, folder in (("--test-images", images), ("--test-labels", labels)):
                if not folder.is_dir():
                    raise UserFacingError(f"{flag} {folder} is not a folder. Point it at the held-out test "
                                          "images/labels (nnU-Net's imagesTs/labelsTs layout).")
        else:
            raw = nnunet_raw_dir() / self.data.dataset_name
            images, labels = raw / "imagesTs", raw / "labelsTs"
            if not (images.is_dir() and labels.is_dir()):
                print(f"WARNING: {raw} has no imagesTs + labelsTs, so the comparison evaluates on the fold's "
                      "validation cases only (split 'val'): no held-out claim can be made from it. Add held-out "
                      "cases there or pass --test-images/--test-labels.", flush=True)
                return None
        if not list(labels.glob("*" + self.data.dataset_json["file_ending"])):
            raise UserFacingError(f"{labels} holds no {self.data.dataset_json['file_ending']} label files. Put the "
                                  "test cases' labels there (case.nii.gz for images case_0000.nii.gz, ...).")
        return images, labels

    def env(self, results_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The user's environment with our trainers findable and ``nnUNet_results`` pointing at ``results_root``."""
        from nnunet_slem.paths import trainer_dir

        env = dict(os.environ)
        env.setdefault("nnUNet_extTrainer", str(trainer_dir()))
        env.update({"nnUNet_results": str(results_root), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
        for variable in ("SLEM_LABELED", "SLEM_LABELED_SEED", "SLEM_SEED", "SLEM_EPOCHS", "SLEM_ITERS_PER_EPOCH",
                         "SLEM_VAL_ITERS", "SLEM_SAVE_EVERY", "SLEM_PRETRAINED_WEIGHTS"):
            env.pop(variable, None)  # only what this comparison sets below may steer the runs
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------------------------------ running
    def run(self) -> list[dict]:
        start = time.perf_counter()
        methods = [ALL_METHODS[m] for m in self.s.methods]
        seeds = self.seeds
        self.check_distinct_subsets(len(seeds))
        checkpoints = {}
        for pretrain_seed in sorted({seed % self.s.pretrain_seeds for seed in seeds}):
            for pretext, cfb, options in dict.fromkeys(m.pretraining for m in methods if m.pretext):
                checkpoints[(pretext, cfb, options, pretrain_seed)] = self.pretrain(pretext, cfb, pretrain_seed,
                                                                                   options)
        rows = []
        for seed in seeds:
            pretrain_seed = seed % self.s.pretrain_seeds
            for method in methods:
                checkpoint = checkpoints.get((*method.pretraining, pretrain_seed))
                rows.append(self.finetune_and_evaluate(method, seed, checkpoint,
                                                       pretrain_seed if method.pretext else None))
        self.report(rows, checkpoints, time.perf_counter() - start)
        return rows

    @property
    def seeds(self) -> list[int]:
        return list(range(self.s.first_seed, self.s.first_seed + self.s.seeds))

    def check_distinct_subsets(self, n_seeds: int) -> None:
        """More paired seeds than the fold has distinct labelled subsets would repeat a subset as if it were new
        evidence: refused, naming both numbers (checked once nnU-Net's ``splits_final.json`` exists)."""
        splits_file = Path(self.data.preprocessed_base) / "splits_final.json"
        if self.s.labeled is None or not splits_file.is_file():
            return
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
        if self.s.fold < len(splits):  # else validation_cases() names the problem
            check_seed_count(n_seeds, len(splits[self.s.fold]["train"]), self.s.labeled, self.s.fold)

    def _say(self, message: str) -> None:
        print(message, flush=True)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")

    def _pool_key(self) -> str:
        from nnunet_slem.pretrain.unlabeled_pool import pool_identity

        return "pool-" + pool_identity(self.s.unlabeled, self.data.dataset_json).key

    def _requested_pretraining(self, options: tuple[str, ...]) -> dict[str, int | None]:
        """The pretraining schedule this comparison asks for (``None``: whatever the pretraining's default was), to
        check a finished checkpoint against before reusing it."""
        return {"epochs": scaled_epochs(options, self.s.pretrain_epochs), "iters_per_epoch": self.s.pretrain_iters,
                "batch_size": self.s.pretrain_batch}

    def pretrain_results_root(self, pretrain_seed: int, options: tuple[str, ...] = ()) -> Path:
        """Seed 0: the usual place (``$nnUNet_results``, which ``SLeMTrainer`` also finds); others their own, and
        pretext variants (``options``, the pool's identity, the scale) a folder per variant beside them, so none
        stands in for another."""
        if options:
            pool_key = self._pool_key() if POOL_OPTION in options else None
            return (self.extra_pretrain_root.parent / "pretrain_variants" / variant_folder(options, pool_key)
                    / f"seed_{pretrain_seed}")
        return self.pretrain_root if pretrain_seed == 0 else self.extra_pretrain_root / f"seed_{pretrain_seed}"

    def pretrain(self, pretext: str, cfb: bool, pretrain_seed: int = 0, options: tuple[str, ...] = ()) -> Path:
        """The method's pretraining checkpoint: reused when final, resumed when partial, else trained."""
        results_root = self.pretrain_results_root(pretrain_seed, options)
        folder = pretrain_output_folder(results_root, self.data.dataset_name, self.s.plans,
                                        self.s.configuration, pretext, cfb)
        final = folder / "checkpoint_final.pth"
        if final.is_file():
            check_pretraining_matches(final, self._requested_pretraining(options))
            self._say(f"[pretrain {folder.name}] finished checkpoint found, reused: {final}")
            return final
        args = ["nnunet-slem", "pretrain", "-d", self.dataset_id, "-c", self.s.configuration, "-p", self.s.plans,
                "-device", self.s.device, "--pretext", pretext, "--seed", pretrain_seed]
        for flag, value in (("--epochs", self.s.pretrain_epochs), ("--iters-per-epoch", self.s.pretrain_iters),
                            ("--batch-size", self.s.pretrain_batch)):
            if value is not None:
                args += [flag, value]
        args += pretrain_cli(options, self.s.unlabeled, self.s.pretrain_epochs)
        if not cfb:
            args.append("--no-cfb")
        if self.s.smoke:
            args += ["--audit-samples", 0, "--probe-samples", 0]
        if (folder / "checkpoint_latest.pth").is_file():
            args.append("--resume")
        variant = describe_options(options)
        self._say(f"[pretrain {folder.name} seed {pretrain_seed}{' ' + variant if variant else ''}]")
        run_command(args, self.env(results_root), self.log, echo=True)
        return final

    def training_cases(self) -> list[str]:
        """The fold's training cases (every one is labelled when ``--labeled`` is not given)."""
        splits = json.loads((Path(self.data.preprocessed_base) / "splits_final.json").read_text(encoding="utf-8"))
        return sorted(splits[self.s.fold]["train"])

    def validation_cases(self) -> list[str]:
        """The fold's validation cases from nnU-Net's ``splits_final.json`` (written by the first training)."""
        splits_file = Path(self.data.preprocessed_base) / "splits_final.json"
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
        if self.s.fold >= len(splits):
            raise UserFacingError(f"{splits_file} has {len(splits)} folds; -f {self.s.fold} does not exist. "
                                  f"Use a fold between 0 and {len(splits) - 1}.")
        return list(splits[self.s.fold]["val"])

    @property
    def schedule(self) -> dict:
        """What must be equal for runs to be compared: the fine-tuning and pretraining schedules (None: the
        trainer's or pretraining's default) and the test-time augmentation."""
        return {k: getattr(self.s, k) for k in ("epochs", "iters_per_epoch", "val_iters", "pretrain_epochs",
                                                "pretrain_iters", "pretrain_batch", "pretrain_seeds", "tta",
                                                "labeled")}

    def run_folder(self, seed: int) -> Path:
        return self.root / "runs" / f"seed_{seed}"

    def finetune_results_root(self, method: Method, seed: int) -> Path:
        """``nnUNet_results`` of the method's fine-tuning at ``seed``. A pretext variant fine-tunes with the same
        trainer as ``slem``, so it gets a folder of its own: in the shared one it would find slem's model."""
        suffix = f"__{method.name}" if method.pretext_args or method.pool or method.pretrain_scale != 1 else ""
        return self.run_folder(seed) / f"nnUNet_results{suffix}"

    def finetune_and_evaluate(self, method: Method, seed: int, checkpoint: Path | None,
                              pretrain_seed: int | None = None) -> dict:
        record = self.run_folder(seed) / f"{method.name}.json"
        if record.is_file():
            done = json.loads(record.read_text(encoding="utf-8"))
            if done.get("record_version") == RECORD_VERSION:
                if done["schedule"] != self.schedule:
                    raise UserFacingError(
                        f"{record} was fine-tuned with schedule {done['schedule']}, this comparison asks for "
                        f"{self.schedule}. Give this comparison another --out folder (runs with different schedules "
                        "must not be compared), or delete that folder to start it over.")
                check_same_pretraining(done, checkpoint, record)
                self._say(f"[{method.name} seed {seed}] done already, skipped")
                return done
        results_root = self.finetune_results_root(method, seed)
        model = convert_trainer_plans_config_to_identifier(method.trainer, self.s.plans, self.s.configuration)
        fold_dir = results_root / self.data.dataset_name / model / f"fold_{self.s.fold}"
        extra = {"SLEM_LABELED_SEED": str(seed), "SLEM_SEED": str(seed), "SLEM_SAVE_EVERY": str(self.s.save_every)}
        if self.s.labeled is not None:
            extra["SLEM_LABELED"] = str(self.s.labeled)
        for variable, value in (("SLEM_EPOCHS", self.s.epochs), ("SLEM_ITERS_PER_EPOCH", self.s.iters_per_epoch),
                                ("SLEM_VAL_ITERS", self.s.val_iters)):
            if value is not None:
                extra[variable] = str(value)
        if checkpoint is not None:
            extra["SLEM_PRETRAINED_WEIGHTS"] = str(checkpoint)
        args = ["nnUNetv2_train", self.dataset_id, self.s.configuration, self.s.fold, "-tr", method.trainer,
                "-p", self.s.plans, "-device", self.s.device]
        summary = fold_dir / "validation" / "summary.json"
        started_from = fold_dir / "slem_pretrained_from.json"  # written by the trainer when it loaded weights
        if checkpoint is not None and started_from.is_file():
            check_same_pretraining({"pretrained_from": {"path": json.loads(started_from.read_text(
                encoding="utf-8"))["checkpoint"]}}, checkpoint, fold_dir)
        if (fold_dir / "checkpoint_final.pth").is_file():
            args += [] if summary.is_file() else ["--val"]  # trained; only the final validation is missing
        elif (fold_dir / "checkpoint_latest.pth").is_file():
            args.append("--c")
            (fold_dir / RESUMED_MARKER).touch()  # the record says so: see "resumed" below
        if not summary.is_file():
            self._say(f"[{method.name} seed {seed}] nnUNetv2_train -tr {method.trainer}")
            seconds = run_command(args, self.env(results_root, extra), self.log, echo=True)
        else:
            seconds = None  # trained by an earlier call
        ending = self.data.dataset_json["file_ending"]
        references = Path(self.data.preprocessed_base) / "gt_segmentations"
        splits = {"val": self.evaluate(fold_dir / "validation",
                                       [references / f"{case}{ending}" for case in self.validation_cases()], fold_dir)}
        if self.test_set is not None:
            predictions = self.predict_test(method, seed, fold_dir, results_root)
            splits["test"] = self.evaluate(predictions, sorted(self.test_set[1].glob(f"*{ending}")), fold_dir)
        subset_file = fold_dir / "labeled_subset.json"
        subset = json.loads(subset_file.read_text(encoding="utf-8")) if subset_file.is_file() else None
        row = {"record_version": RECORD_VERSION, "method": method.name, "trainer": method.trainer,
               "pretext": method.pretext or "", "cfb": method.cfb, "labeled": self.s.labeled or "all", "seed": seed,
               "pretrain_seed": pretrain_seed, "train_cases": len(subset["train"]) if subset else None,
               "labeled_cases": sorted(subset["train"]) if subset else self.training_cases(),
               "pretrained_from": checkpoint_identity(checkpoint, pretrain_seed) if checkpoint else None,
               "validation_curve": validation_curve(fold_dir),
               # a resumed run reseeds at the resume point, so its batches after it are not the ones its paired
               # runs saw (the report names such runs); a run restarted without a checkpoint is not resumed
               "resumed": (fold_dir / RESUMED_MARKER).is_file(),
               "train_seconds": seconds, "schedule": self.schedule, "splits": splits}
        write_json_atomic(record, row)
        return row

    def predict_test(self, method: Method, seed: int, fold_dir: Path, results_root: Path) -> Path:
        """``nnUNetv2_predict`` of the test images with the final checkpoint (never one selected on any cases);
        an interrupted prediction continues where it stopped."""
        out = fold_dir / "test_predictions"
        ending = self.data.dataset_json["file_ending"]
        if out.is_dir() and all((out / p.name).is_file() for p in self.test_set[1].glob(f"*{ending}")):
            return out
        self._say(f"[{method.name} seed {seed}] nnUNetv2_predict on the held-out test cases")
        run_command(["nnUNetv2_predict", "-i", self.test_set[0], "-o", out, "-d", self.dataset_id, "-c",
                     self.s.configuration, "-p", self.s.plans, "-tr", method.trainer, "-f", self.s.fold, "-chk",
                     "checkpoint_final.pth", "-device", self.s.device, "-npp", 1, "-nps", 1, "--continue_prediction",
                     "--disable_progress_bar", *([] if self.s.tta else ["--disable_tta"])],
                    self.env(results_root), self.log)
        return out

    def evaluate(self, predictions: Path, references: list[Path], fold_dir: Path) -> dict:
        """Mean Dice per region over ``references`` and every case's Dice and region volumes (and BraTS 2023
        lesion-wise Dice on lesion datasets, see :meth:`_lesion_settings`)."""
        from nnunet_slem.evaluation.metrics import MetricOptions, evaluate_case, summarize
        from nnunet_slem.evaluation.segmentation_io import reader_writer_for

        options = MetricOptions(lesion=self.lesion_settings) if self.lesion_settings is not None else None
        reader = reader_writer_for(self.data.dataset_json, references[0]) if references else None  # nnU-Net's

        ending = self.data.dataset_json["file_ending"]
        metrics, cases = [], []
        for reference in references:
            case = reference.name[: -len(ending)]
            prediction = predictions / reference.name
            if not prediction.is_file():
                raise UserFacingError(f"{prediction} is missing (nnU-Net's validation or prediction did not write it). "
                                      f"Delete {fold_dir} and run the comparison again to retrain this method.")
            rows = evaluate_case(case, reference, prediction, self.regions, self.ignore_label, options=options,
                                 reader=reader)
            metrics += rows
            cases.append({"case": case, "dice": {r.region: r.dice for r in rows},
                          "ref_ml": {r.region: r.ref_ml for r in rows}, "pred_ml": {r.region: r.pred_ml for r in rows}})
            if options is not None:
                cases[-1]["lesion_dice"] = {r.region: r.lesion_dice for r in rows}
        summary = summarize(metrics, self.regions)
        result = {"dice": {r.name: summary[r.name]["dice"]["mean"] for r in self.regions}, "cases": cases}
        if options is not None:
            result["lesion_dice"] = {r.name: float(np.mean([c["lesion_dice"][r.name] for c in cases]))
                                     for r in self.regions}
        return result

    # ------------------------------------------------------------------------------------------ report
    def report(self, records: list[dict], checkpoints: dict, seconds: float) -> None:
        write_comparison_report(self, records, checkpoints, seconds)
