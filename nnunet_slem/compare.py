"""``nnunet-slem compare``: SLeM against the paper's baselines, fine-tuned the same way, at few labels.

For every method and seed: pretraining (if the method has one; finished checkpoints are reused) ->
``nnUNetv2_train -tr <method's trainer>`` on the fold's training cases, optionally only ``labeled`` of
them (picked per seed, the same subset for every method) -> nnU-Net's final validation on the fold's
validation cases (fixed across methods and seeds) -> Dice per region with :mod:`nnunet_slem.evaluation`.
Then ``results.csv`` (one row per method and seed), ``results.md`` (mean ± std over seeds) and
``results.png``.

Fairness: all methods fine-tune from the same plans with the same schedule (nnU-Net's, or the one given
here, passed to every trainer as ``SLEM_EPOCHS`` / ``SLEM_ITERS_PER_EPOCH`` / ``SLEM_VAL_ITERS``). The
methods differ only in the initialisation (and for JiGen, the auxiliary loss); the table records whether
each network has the CFB. Pretraining runs once per method (seed 0 of the pretraining), so the spread over
seeds is that of the labelled subset and the fine-tuning.

Every finished step leaves a file (checkpoint, validation summary, per-run JSON) and is skipped when the
command runs again, so an interrupted comparison continues where it stopped; a fine-tuning killed midway
continues (nnU-Net's ``--c``) from its last ``checkpoint_latest.pth``, written every ``save_every`` epochs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nnunet_slem.atomic import save_figure_atomic, write_json_atomic, write_text_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretrain.checkpoint import load_checkpoint, pretrain_output_folder
from nnunet_slem.pretrain.locate import dataset_id_of, locate_preprocessed
from nnunet_slem.workflow import run_command


@dataclass(frozen=True)
class Method:
    name: str
    trainer: str
    pretext: str | None  # the pretraining it starts from, None: random initialisation
    cfb: bool
    description: str


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("scratch", "SLeMTrainer_noCFB_noPretrain", None, False, "nnU-Net's network from random weights"),
    Method("cfb", "SLeMTrainer_noPretrain", None, True, "CFB without SLeM (ablation)"),
    Method("slem", "SLeMTrainer", "slem", True, "SLeM pretraining + CFB (the method)"),
    Method("slem_nocfb", "SLeMTrainer_noCFB", "slem", False, "SLeM pretraining without CFB (ablation)"),
    Method("taleb", "SLeMTrainer_fromTaleb", "taleb", True, "Taleb's multimodal puzzle pretraining"),
    Method("supervoxel", "SLeMTrainer_fromSupervoxel", "supervoxel", True, "supervoxel segmentation pretraining"),
    Method("jigen", "JiGenTrainer", None, True, "JiGen: jigsaw loss jointly with segmentation"),
)}
SMOKE_PRETRAIN = {"epochs": 1, "iters": 2, "batch": 2}
SMOKE_SCHEDULE = {"epochs": 1, "iters": 2, "val_iters": 1}


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise UserFacingError(f"Unknown method(s) {unknown or text!r} in --methods; choose from "
                              f"{','.join(METHODS)} (comma separated).")
    return list(dict.fromkeys(names))


@dataclass
class CompareSettings:
    dataset: str
    configuration: str
    fold: int
    plans: str = "nnUNetPlans"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    labeled: str | None = None  # count or fraction (SLEM_LABELED); None: every training case of the fold
    seeds: int = 1
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

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserFacingError("--seeds must be at least 1.")
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
        self.log = self.root / "compare_log.txt"
        self.regions, self.ignore_label = self._regions()

    # -------------------------------------------------------------------------------------------- setup
    def _regions(self):
        from nnunet_slem.evaluation.metrics import regions_from_labels

        return regions_from_labels(self.data.dataset_json["labels"])

    def env(self, results_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The user's environment with our trainers findable and ``nnUNet_results`` pointing at ``results_root``."""
        from nnunet_slem.commands.trainer_dir import trainer_dir

        env = dict(os.environ)
        env.setdefault("nnUNet_extTrainer", str(trainer_dir()))
        env.update({"nnUNet_results": str(results_root), "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
        for variable in ("SLEM_LABELED", "SLEM_LABELED_SEED", "SLEM_EPOCHS", "SLEM_ITERS_PER_EPOCH",
                         "SLEM_VAL_ITERS", "SLEM_SAVE_EVERY", "SLEM_PRETRAINED_WEIGHTS"):
            env.pop(variable, None)  # only what this comparison sets below may steer the runs
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------------------------------ running
    def run(self) -> list[dict]:
        start = time.perf_counter()
        methods = [METHODS[m] for m in self.s.methods]
        checkpoints = {}
        for pretext, cfb in dict.fromkeys((m.pretext, m.cfb) for m in methods if m.pretext):
            checkpoints[(pretext, cfb)] = self.pretrain(pretext, cfb)
        rows = []
        for seed in range(self.s.seeds):
            for method in methods:
                rows.append(self.finetune_and_evaluate(method, seed, checkpoints.get((method.pretext, method.cfb))))
        self.report(rows, checkpoints, time.perf_counter() - start)
        return rows

    def _say(self, message: str) -> None:
        print(message, flush=True)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")

    def pretrain(self, pretext: str, cfb: bool) -> Path:
        """The method's pretraining checkpoint: reused when final, resumed when partial, else trained."""
        folder = pretrain_output_folder(self.pretrain_root, self.data.dataset_name, self.s.plans,
                                        self.s.configuration, pretext, cfb)
        final = folder / "checkpoint_final.pth"
        if final.is_file():
            self._say(f"[pretrain {folder.name}] finished checkpoint found, reused: {final}")
            return final
        args = ["nnunet-slem", "pretrain", "-d", self.dataset_id, "-c", self.s.configuration, "-p", self.s.plans,
                "-device", self.s.device, "--pretext", pretext]
        for flag, value in (("--epochs", self.s.pretrain_epochs), ("--iters-per-epoch", self.s.pretrain_iters),
                            ("--batch-size", self.s.pretrain_batch)):
            if value is not None:
                args += [flag, value]
        if not cfb:
            args.append("--no-cfb")
        if self.s.smoke:
            args += ["--audit-samples", 0]
        if (folder / "checkpoint_latest.pth").is_file():
            args.append("--resume")
        self._say(f"[pretrain {folder.name}]")
        run_command(args, self.env(self.pretrain_root), self.log, echo=True)
        return final

    def validation_cases(self) -> list[str]:
        """The fold's validation cases from nnU-Net's ``splits_final.json`` (written by the first training)."""
        splits_file = Path(self.data.preprocessed_base) / "splits_final.json"
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
        if self.s.fold >= len(splits):
            raise UserFacingError(f"{splits_file} has {len(splits)} folds; -f {self.s.fold} does not exist. "
                                  f"Use a fold between 0 and {len(splits) - 1}.")
        return list(splits[self.s.fold]["val"])

    def run_folder(self, seed: int) -> Path:
        return self.root / "runs" / f"seed_{seed}"

    def finetune_and_evaluate(self, method: Method, seed: int, checkpoint: Path | None) -> dict:
        record = self.run_folder(seed) / f"{method.name}.json"
        if record.is_file():
            self._say(f"[{method.name} seed {seed}] done already, skipped")
            return json.loads(record.read_text(encoding="utf-8"))
        results_root = self.run_folder(seed) / "nnUNet_results"
        fold_dir = (results_root / self.data.dataset_name / f"{method.trainer}__{self.s.plans}__{self.s.configuration}"
                    / f"fold_{self.s.fold}")
        extra = {"SLEM_LABELED_SEED": str(seed), "SLEM_SAVE_EVERY": str(self.s.save_every)}
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
        if (fold_dir / "checkpoint_final.pth").is_file():
            args += [] if summary.is_file() else ["--val"]  # trained; only the final validation is missing
        elif (fold_dir / "checkpoint_latest.pth").is_file():
            args.append("--c")
        if not summary.is_file():
            self._say(f"[{method.name} seed {seed}] nnUNetv2_train -tr {method.trainer}")
            seconds = run_command(args, self.env(results_root, extra), self.log, echo=True)
        else:
            seconds = None  # trained by an earlier call
        row = self.evaluate(method, seed, fold_dir)
        row["train_seconds"] = seconds
        write_json_atomic(record, row)
        return row

    def evaluate(self, method: Method, seed: int, fold_dir: Path) -> dict:
        """Mean Dice per region over the fold's validation cases (nnU-Net's exported predictions)."""
        from nnunet_slem.evaluation.metrics import evaluate_case, summarize

        ending = self.data.dataset_json["file_ending"]
        references = Path(self.data.preprocessed_base) / "gt_segmentations"
        cases = []
        for case in self.validation_cases():
            prediction = fold_dir / "validation" / f"{case}{ending}"
            if not prediction.is_file():
                raise UserFacingError(f"nnU-Net's validation did not write {prediction}. Delete {fold_dir} and run "
                                      "the comparison again to retrain this method.")
            cases += evaluate_case(case, references / f"{case}{ending}", prediction, self.regions, self.ignore_label)
        summary = summarize(cases, self.regions)
        subset_file = fold_dir / "labeled_subset.json"
        subset = json.loads(subset_file.read_text(encoding="utf-8")) if subset_file.is_file() else None
        dice = {r.name: summary[r.name]["dice"]["mean"] for r in self.regions}
        return {"method": method.name, "trainer": method.trainer, "pretext": method.pretext or "", "cfb": method.cfb,
                "labeled": self.s.labeled or "all", "seed": seed,
                "train_cases": len(subset["train"]) if subset else None,
                "val_cases": summary[self.regions[0].name]["n"], "dice": dice}

    # ------------------------------------------------------------------------------------------ report
    def report(self, rows: list[dict], checkpoints: dict, seconds: float) -> None:
        regions = [r.name for r in self.regions]
        write_text_atomic(self.root / "results.csv", results_csv(rows, regions))
        table = results_markdown(rows, regions, self.s, self.data.dataset_name)
        table += "\n" + pretraining_notes(checkpoints) + f"\nWall time of this invocation: {seconds:.0f} s\n"
        write_text_atomic(self.root / "results.md", table)
        write_json_atomic(self.root / "results.json", {"settings": asdict(self.s), "rows": rows})
        plot_results(rows, regions, self.root / "results.png",
                     f"{self.data.dataset_name}, fold {self.s.fold}, labelled: {self.s.labeled or 'all'}")
        print("\n" + table)
        print(f"Results: {self.root}/results.csv, results.md, results.png")


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite))


def results_csv(rows: list[dict], regions: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "trainer", "pretext", "cfb", "labeled", "seed", "train_cases", "val_cases",
                     *[f"dice_{r}" for r in regions], "dice_mean"])
    for row in rows:
        values = [row["dice"][r] for r in regions]
        writer.writerow([row["method"], row["trainer"], row["pretext"], row["cfb"], row["labeled"], row["seed"],
                         row["train_cases"] if row["train_cases"] is not None else "", row["val_cases"],
                         *[_fmt(v) for v in values], _fmt(_mean_std(values)[0])])
    return buffer.getvalue()


def _fmt(value: float | None) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.4f}"


def aggregate(rows: list[dict], regions: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Method -> region (and ``mean``) -> (mean, std) over seeds of the per-seed validation Dice."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {reg: _mean_std([r["dice"][reg] for r in mine]) for reg in regions}
        out[method]["mean"] = _mean_std([_mean_std([r["dice"][reg] for reg in regions])[0] for r in mine])
    return out


def results_markdown(rows: list[dict], regions: list[str], s: CompareSettings, dataset_name: str) -> str:
    stats = aggregate(rows, regions)
    n_seeds = len({r["seed"] for r in rows})
    lines = [f"# nnunet-slem compare: {dataset_name}, {s.configuration}, fold {s.fold}", "",
             f"Labelled training cases: {s.labeled or 'all of the fold'}; seeds: {n_seeds}; validation: the fold's "
             f"validation cases (same for every method). Dice: mean ± std over seeds of the mean over validation "
             "cases." + (" SMOKE RUN (tiny schedules, numbers meaningless)." if s.smoke else ""), "",
             "| method | CFB | pretraining | " + " | ".join(f"{r} Dice" for r in regions) + " | mean |",
             "|---" * (len(regions) + 4) + "|"]
    for method, values in stats.items():
        m = METHODS[method]
        cells = [f"{values[r][0]:.3f} ± {values[r][1]:.3f}" for r in [*regions, "mean"]]
        lines.append(f"| {method} | {'yes' if m.cfb else 'no'} | {m.pretext or '-'} | " + " | ".join(cells) + " |")
    if "slem" in stats:
        base = stats["slem"]["mean"][0]
        diffs = [f"{k} {100 * (base - v['mean'][0]):+.2f}" for k, v in stats.items() if k != "slem"]
        lines += ["", "SLeM minus each method, mean Dice in points: " + ", ".join(diffs)]
    return "\n".join(lines) + "\n"


def pretraining_notes(checkpoints: dict) -> str:
    lines = ["Pretraining checkpoints:"]
    for (pretext, cfb), path in checkpoints.items():
        try:
            ckpt = load_checkpoint(path)
            log = ckpt["logging"]
            score = f", final held-out pretext score {log['eval_acc'][-1]:.3f}" if log["eval_acc"] else ""
            lines.append(f"- {pretext}{'' if cfb else ' (no CFB)'}: {ckpt['epoch']} epochs{score} ({path})")
        except UserFacingError as e:
            lines.append(f"- {pretext}: unreadable ({e})")
    return "\n".join(lines) + "\n"


def plot_results(rows: list[dict], regions: list[str], path: Path, title: str) -> None:
    """Grouped bars: Dice per region and method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(rows, regions)
    x = np.arange(len(regions) + 1)
    width = 0.8 / max(1, len(stats))
    fig, ax = plt.subplots(figsize=(2.5 + 1.4 * len(x) + 0.3 * len(stats), 4.2))
    for i, (method, values) in enumerate(stats.items()):
        means = [values[r][0] for r in [*regions, "mean"]]
        stds = [values[r][1] for r in [*regions, "mean"]]
        ax.bar(x + (i - (len(stats) - 1) / 2) * width, np.nan_to_num(means), width, yerr=np.nan_to_num(stds),
               capsize=2, label=method + ("" if METHODS[method].cfb else " (no CFB)"))
    ax.set_xticks(x, [*regions, "mean"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("validation Dice")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
