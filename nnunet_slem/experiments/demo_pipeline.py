"""The whole SLeM story on generated data, through nnU-Net's own commands.

make dataset -> ``nnUNetv2_plan_and_preprocess`` -> small plans for the CPU -> ``nnunet-slem pretrain`` on
every training image -> ``nnUNetv2_train -tr SLeMTrainer_demo`` and ``-tr SLeMTrainer_noPretrain_demo`` on
only ``labeled`` labelled cases (same split, same schedule) -> ``nnUNetv2_predict`` on held-out cases ->
Dice per region -> ``results.md``, ``results.json`` and ``dice.png``.

Every step skips itself when its output exists, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nnunet_slem.atomic import save_figure_atomic, write_json_atomic, write_text_atomic
from nnunet_slem.checkpoint_format import pretrain_output_folder
from nnunet_slem.errors import UserFacingError
from nnunet_slem.experiments.workflow import nnunet_env, run_command, write_small_plans, write_split

METHODS = {  # label in the table -> trainer
    "SLeM (pretrained + CFB)": "SLeMTrainer_demo",
    "scratch (CFB, random init)": "SLeMTrainer_noPretrain_demo",
}
SMALL_PLANS = "nnUNetPlans_slemDemo"


@dataclass
class DemoSettings:
    """One field per ``nnunet-slem demo`` option (same name, same default; this order is the order of
    ``results.json``'s ``settings``); the defaults fit 2 CPU cores."""

    out: str = "slem_demo"
    device: str = "cpu"
    # the generated dataset: ``cases`` training images (all pretrained on; fine-tuning trains on ``labeled`` of
    # them and validates on ``val_cases`` others) and ``test_cases`` held-out test cases
    dataset_id: int = 990
    modalities: str = "brats"
    cases: int = 16
    test_cases: int = 8
    labeled: int = 4
    val_cases: int = 2
    shape: tuple[int, int, int] = (40, 40, 40)
    features: tuple[int, ...] = (8, 16, 32, 64)  # U-Net features per stage of the demo's small plans
    # nnunet-slem pretrain: --epochs, --iters-per-epoch, --batch-size, --audit-samples, --probe-samples
    pretrain_epochs: int = 18
    pretrain_iters: int = 25
    pretrain_batch: int = 8
    audit_samples: int = 300
    probe_samples: int = 64
    # both fine-tuning arms: SLEM_EPOCHS and SLEM_ITERS_PER_EPOCH of the trainers
    finetune_epochs: int = 10
    finetune_iters: int = 20
    seed: int = 0  # of the generated data and of the pretraining (--seed)

    def __post_init__(self) -> None:
        if self.labeled < 1 or self.val_cases < 1 or self.labeled + self.val_cases > self.cases:
            raise UserFacingError(
                f"--labeled {self.labeled} + {self.val_cases} validation cases must fit in --cases {self.cases}."
            )


class Demo:
    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        self.root = Path(settings.out).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "demo_log.txt"
        self.env = nnunet_env(self.root, extra={"SLEM_EPOCHS": str(settings.finetune_epochs),
                                                "SLEM_ITERS_PER_EPOCH": str(settings.finetune_iters)})
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------- steps
    def run(self) -> dict:
        start = time.perf_counter()
        raw = self.make_dataset()
        self.plan_and_preprocess()
        self.small_plans_and_split(raw)
        self.pretrain()
        rows = {}
        for label, trainer in METHODS.items():
            self.finetune(trainer)
            pred = self.predict(trainer, raw)
            rows[label] = self.evaluate(pred, raw)
        self.timings["total"] = time.perf_counter() - start
        return self.report(rows)

    @property
    def dataset_name(self) -> str:
        from nnunet_slem.data.synthetic import dataset_name

        return dataset_name(self.s.dataset_id, self.s.modalities)

    def _step(self, name: str, done: bool, action) -> None:
        if done:
            print(f"[{name}] done already, skipped")
            return
        print(f"[{name}]")
        t = time.perf_counter()
        action()
        self.timings[name] = time.perf_counter() - t

    def make_dataset(self) -> Path:
        from nnunet_slem.data.synthetic import make_dataset

        raw = Path(self.env["nnUNet_raw"]) / self.dataset_name
        self._step("make dataset", (raw / "dataset.json").is_file(), lambda: make_dataset(
            self.s.dataset_id, self.env["nnUNet_raw"], n_cases=self.s.cases, n_test=self.s.test_cases,
            modalities=self.s.modalities, seed=self.s.seed, shape=self.s.shape))
        return raw

    @property
    def preprocessed(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"]) / self.dataset_name

    def plan_and_preprocess(self) -> None:
        done = (self.preprocessed / "nnUNetPlans_3d_fullres").is_dir() and (
            self.preprocessed / "nnUNetPlans.json").is_file()
        env = {**self.env, "nnUNet_n_proc_DA": "2"}  # planning must not see 0 (torch.set_num_threads)
        self._step("nnUNetv2_plan_and_preprocess", done, lambda: run_command(
            ["nnUNetv2_plan_and_preprocess", "-d", self.s.dataset_id, "-c", "3d_fullres", "-np", "2",
             "--verify_dataset_integrity"], env, self.log))

    def small_plans_and_split(self, raw: Path) -> None:
        write_small_plans(self.preprocessed, "nnUNetPlans", SMALL_PLANS, self.s.features)
        cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
        write_split(self.preprocessed, cases[: self.s.labeled], cases[-self.s.val_cases:])

    @property
    def pretrain_checkpoint(self) -> Path:
        return pretrain_output_folder(self.env["nnUNet_results"], self.dataset_name, SMALL_PLANS,
                                      "3d_fullres") / "checkpoint_final.pth"

    def pretrain(self) -> None:
        latest = self.pretrain_checkpoint.with_name("checkpoint_latest.pth")
        self._step("nnunet-slem pretrain", self.pretrain_checkpoint.is_file(), lambda: run_command(
            ["nnunet-slem", "pretrain", "-d", self.s.dataset_id, "-c", "3d_fullres", "-p", SMALL_PLANS,
             "-device", self.s.device, "--epochs", self.s.pretrain_epochs, "--iters-per-epoch",
             self.s.pretrain_iters, "--batch-size", self.s.pretrain_batch, "--audit-samples",
             self.s.audit_samples, "--probe-samples", self.s.probe_samples, "--seed", self.s.seed,
             *(["--resume"] if latest.is_file() else [])],
            self.env, self.log))

    def trainer_folder(self, trainer: str) -> Path:
        """nnU-Net's model folder of ``trainer`` in the demo's results, named as nnU-Net names it."""
        from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

        identifier = convert_trainer_plans_config_to_identifier(trainer, SMALL_PLANS, "3d_fullres")
        return Path(self.env["nnUNet_results"]) / self.dataset_name / identifier

    def finetune(self, trainer: str) -> None:
        fold = self.trainer_folder(trainer) / "fold_0"
        self._step(f"nnUNetv2_train -tr {trainer}", (fold / "checkpoint_final.pth").is_file(), lambda: run_command(
            ["nnUNetv2_train", self.s.dataset_id, "3d_fullres", "0", "-tr", trainer, "-p", SMALL_PLANS,
             "-device", self.s.device], self.env, self.log))

    def predict(self, trainer: str, raw: Path) -> Path:
        out = self.root / "predictions" / trainer
        expected = len(list((raw / "labelsTs").glob("*.nii.gz")))
        done = out.is_dir() and len(list(out.glob("*.nii.gz"))) == expected
        if not done and out.is_dir():
            shutil.rmtree(out)
        self._step(f"nnUNetv2_predict -tr {trainer}", done, lambda: run_command(
            ["nnUNetv2_predict", "-i", raw / "imagesTs", "-o", out, "-d", self.s.dataset_id, "-c", "3d_fullres",
             "-f", "0", "-tr", trainer, "-p", SMALL_PLANS, "-device", self.s.device, "--disable_tta",
             "-npp", "1", "-nps", "1"], self.env, self.log))
        return out

    def evaluate(self, pred: Path, raw: Path) -> dict:
        from nnunet_slem.evaluation.metrics import evaluate_folders, regions_from_labels, summarize

        dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
        regions, ignore = regions_from_labels(dataset_json["labels"])
        rows = evaluate_folders(raw / "labelsTs", pred, regions, ignore_label=ignore)
        return summarize(rows, regions)

    # ------------------------------------------------------------------------------------------ report
    def report(self, rows: dict[str, dict]) -> dict:
        from nnunet_slem.checkpoint_format import load_checkpoint

        meta = load_checkpoint(self.pretrain_checkpoint)
        log = meta["logging"]
        audit = meta["metadata"].get("audit") or {}
        probes_file = self.pretrain_checkpoint.parent / "probes.json"
        probes = json.loads(probes_file.read_text(encoding="utf-8")) if probes_file.is_file() else None
        regions = list(next(iter(rows.values())))
        lines = [
            "# nnunet-slem demo",
            "",
            f"{self.s.cases} training images ({self.s.labeled} labelled for fine-tuning, {self.s.val_cases} fixed "
            f"validation), {self.s.test_cases} held-out test cases, {self.s.modalities} modalities, "
            f"shape {self.s.shape}.",
            "",
            "| method | " + " | ".join(f"{r} Dice" for r in regions) + " | mean |",
            "|---" * (len(regions) + 2) + "|",
        ]
        for method, summary in rows.items():
            means = [summary[r]["dice"]["mean"] for r in regions]
            cells = [f"{m:.3f} ± {summary[r]['dice']['std']:.3f}" for m, r in zip(means, regions)]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {sum(means) / len(means):.3f} |")
        lines += [
            "",
            SINGLE_RUN_NOTE,
            "",
            f"Pretext: final held-out accuracy {log['eval_acc'][-1]:.3f}, train accuracy {log['train_acc'][-1]:.3f}"
            f" (chance {audit.get('chance', float('nan')):.3f}).",
            "",
            *shortcut_summary(audit, probes),
            "",
            "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items()),
        ]
        text = "\n".join(lines) + "\n"
        write_text_atomic(self.root / "results.md", text)
        result = {"settings": asdict(self.s), "dice": rows, "pretext": {
            "eval_acc": log["eval_acc"], "train_acc": log["train_acc"], "audit": audit, "probes": probes},
            "timings": self.timings}
        write_json_atomic(self.root / "results.json", result)
        plot_dice(rows, regions, self.root / "dice.png")
        print("\n" + text)
        print(f"Figures and tables: {self.root}/results.md, dice.png; pretraining curves: "
              f"{self.pretrain_checkpoint.parent / 'progress.png'}")
        return result


SINGLE_RUN_NOTE = (
    "One fine-tuning run per arm (± is the spread over test cases, not over runs): this shows the pipeline, not "
    "the size of the benefit. Two runs of the same arm differ by more than the arms do at this size; the paired, "
    "multi-seed benchmark with confidence intervals is in docs/baselines.md (benchmarks/label_efficiency.py)."
)


def shortcut_summary(audit: dict, probes: dict | None) -> list[str]:
    """The demo's shortcut lines: each audit group's accuracy, the probes' verdict, and what a high seam or
    texture figure means.

    Why spelled out: the all-groups figure alone (often near 1 on smooth synthetic data) reads as "the pretext
    is solved by a shortcut", while the audit only says what *could* solve it; whether this network does is the
    probes' answer. ``audit`` is the checkpoint's ``AuditResult.to_dict()`` (empty: no audit), ``probes`` the
    run's ``probes.json`` (``None``: not run)."""
    from nnunet_slem.pretrain.probes import STRONG_DROP, ProbeResult

    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    groups = audit.get("group_accuracies") or {}
    figures = ", ".join(f"{g} {figure(groups.get(g))}" for g in ("histogram", "seam", "texture"))
    lines = [f"Shortcut audit (held-out accuracy of linear classifiers on block statistics, chance "
             f"{figure(audit.get('chance'))}): {figures}, all groups {figure(audit.get('accuracy'))}."
             + (f" Not converged: {', '.join(audit['unconverged'])}." if audit.get("unconverged") else "")
             if audit else "Shortcut audit: not run (--audit-samples 0)."]
    meaning = ("A high seam or texture figure means that continuity across seams or each block's texture *could* "
               "solve the pretext, not that the network does")
    if probes is None:
        return [*lines, "Probes: not run (--probe-samples 0), so no verdict on the trained network.",
                meaning + "; the probes (--probe-samples) say whether it does."]
    result = ProbeResult(**{k: probes[k] for k in ProbeResult.__dataclass_fields__})
    findings = result.findings()
    verdict = "; ".join(findings) if findings else (
        f"no shortcut found (no probe loses {STRONG_DROP:.0%} or more of the accuracy above chance)")
    lines.append(f"Probes of the pretrained network ({result.n} held-out samples): plain {result.plain:.3f}, seams "
                 f"zeroed {result.seam_zeroed:.3f}, cross-case blocks {result.cross_case:.3f}, background noise "
                 f"{figure(result.background_noise)}. Verdict: {verdict}.")
    drop = result.relative_drop("seam_zeroed")
    if drop is None:
        seams = "the seam probe cannot tell here, as the network is not above chance"
    elif drop >= STRONG_DROP:
        seams = (f"here the seam probe says it does read the seams (zeroing them costs {drop:.0%} of its accuracy "
                 "above chance; --pretext-option seam_band=N is the counter-measure)")
    else:
        seams = (f"here the seam probe says it does not rely on them (zeroing the seams costs {max(drop, 0.0):.0%} "
                 f"of its accuracy above chance, under {STRONG_DROP:.0%})")
    return [*lines, f"{meaning}: {seams}; texture is how each sequence shows the anatomy, the content the "
            "pretext is meant to teach, so no probe removes it."]


def plot_dice(rows: dict[str, dict], regions: list[str], path: Path) -> None:
    """Grouped bars of mean Dice per region (error bars: std over test cases), titled as what it is: a single
    run per arm, which does not measure the benefit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(regions))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(regions), 4))
    for i, (method, summary) in enumerate(rows.items()):
        means = [summary[r]["dice"]["mean"] for r in regions]
        stds = [summary[r]["dice"]["std"] for r in regions]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=method)
    ax.set_xticks(x, regions)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice (held-out cases)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ONE run per arm: shows the pipeline, not the benefit\n(paired multi-seed benchmark: "
                 "docs/baselines.md)", fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
