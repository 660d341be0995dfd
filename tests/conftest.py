"""Shared fixtures: one small nnU-Net project, planned and preprocessed once by nnU-Net's real CLI.

The dataset is deliberately *not* made by our generator: four channels with other names, region labels
with other names, anisotropic spacing and odd shapes, written here with SimpleITK like any user dataset.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_slem.checkpoint_format import pretrain_output_folder
from nnunet_slem.experiments.workflow import console_script, nnunet_env, write_small_plans

FOREIGN_ID = 777
FOREIGN_NAME = "Dataset777_ForeignMultiModal"
SMALL_PLANS = "nnUNetPlans_tiny"


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    dataset_id: int
    dataset_name: str
    plans: str
    configuration: str = "3d_fullres"

    @property
    def preprocessed(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"]) / self.dataset_name

    @property
    def raw(self) -> Path:
        return Path(self.env["nnUNet_raw"]) / self.dataset_name

    @property
    def results(self) -> Path:
        return Path(self.env["nnUNet_results"]) / self.dataset_name

    def run(self, *args: str | int, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a console command the way a user would; on failure show its output."""
        cmd = [console_script(str(args[0])), *map(str, args[1:])]
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, encoding="utf-8",
                              errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-5000:]}")
        return proc


def write_foreign_dataset(raw_root: Path, n_cases: int = 6, seed: int = 3) -> Path:
    """Four channels of smooth noise with a two-part lesion: 'lesion' = 1|2 (seen on a, b), 'core' = 2 (c vs d)."""
    rng = np.random.default_rng(seed)
    folder = raw_root / FOREIGN_NAME
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    shape = (28, 34, 30)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for i in range(n_cases):
        center = rng.uniform(8, np.array(shape) - 8)
        radius = rng.uniform(4, 8)
        dist = np.sqrt(((np.stack([zz, yy, xx], -1) - center) ** 2).sum(-1))
        label = np.zeros(shape, np.uint8)
        label[dist < radius] = 1
        label[dist < radius / 2] = 2
        base = rng.normal(0, 1, shape)
        channels = [base + 2.0 * (label > 0), base * 0.5 + 1.5 * (label > 0), base + 2.5 * (label == 2),
                    base - 1.0 * (label == 2)]
        for c, image in enumerate(channels):
            img = sitk.GetImageFromArray((image * 40 + 300 + 10 * c).astype(np.float32))
            img.SetSpacing((1.0, 1.0, 1.4))
            sitk.WriteImage(img, str(folder / "imagesTr" / f"pat{i:02d}_{c:04d}.nii.gz"))
        seg = sitk.GetImageFromArray(label)
        seg.SetSpacing((1.0, 1.0, 1.4))
        sitk.WriteImage(seg, str(folder / "labelsTr" / f"pat{i:02d}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "seqA", "1": "seqB", "2": "seqC", "3": "seqD"},
        "labels": {"background": 0, "lesion": [1, 2], "core": [2]},
        "regions_class_order": [1, 2],
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }))
    return folder


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Project:
    """A foreign 4-channel region dataset, planned and preprocessed by ``nnUNetv2_plan_and_preprocess``."""
    root = tmp_path_factory.mktemp("nnunet_project")
    env = nnunet_env(root, n_proc_da=0)
    write_foreign_dataset(Path(env["nnUNet_raw"]))
    proj = Project(root, env, FOREIGN_ID, FOREIGN_NAME, SMALL_PLANS)
    # planning calls torch.set_num_threads(nnUNet_n_proc_DA): never 0 there
    proj.run("nnUNetv2_plan_and_preprocess", "-d", FOREIGN_ID, "-c", "3d_fullres", "-np", "2",
             "--verify_dataset_integrity", env={"nnUNet_n_proc_DA": "2"})
    write_small_plans(proj.preprocessed, "nnUNetPlans", SMALL_PLANS, (8, 16, 24, 32))
    return proj


@pytest.fixture(scope="session")
def pretrained_checkpoint(project: Project) -> Path:
    """A tiny real pretraining run through the CLI (2 epochs x 3 steps)."""
    project.run("nnunet-slem", "pretrain", "-d", project.dataset_id, "-c", project.configuration, "-p",
                project.plans, "-device", "cpu", "--epochs", 2, "--iters-per-epoch", 3, "--batch-size", 2,
                "--audit-samples", 24, "--probe-samples", 16)
    path = project.results / f"SLeMPretrain__{project.plans}__{project.configuration}" / "checkpoint_final.pth"
    assert path.is_file()
    return path


@pytest.fixture()
def one_thread():
    """One intra-op thread, as in the pretraining subprocesses: same kernels, same bits, and no thread
    oversubscription on a 2-core machine shared with the subprocesses."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pretrain_folder(project: Project, results: Path) -> Path:
    """Where ``nnunet-slem pretrain`` writes for ``project`` under the results root ``results``."""
    return pretrain_output_folder(results, project.dataset_name, project.plans, project.configuration)


@pytest.fixture()
def nnunet_paths(project: Project, monkeypatch):
    """Point this process at the project (for in-process trainer tests)."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, project.env[key])
    monkeypatch.delenv("SLEM_PRETRAINED_WEIGHTS", raising=False)
    return project


@pytest.fixture(scope="session")
def reduced_demo(tmp_path_factory) -> tuple[Path, list[str], subprocess.CompletedProcess]:
    """``nnunet-slem demo`` at a tiny size: the bundled data generated, planned and preprocessed by nnU-Net,
    pretrained and fine-tuned. Returns its folder, its command and the finished process."""
    out = tmp_path_factory.mktemp("reduced_demo") / "demo"
    args = [console_script("nnunet-slem"), "demo", "--out", str(out), "-d", "991", "--cases", "5", "--test-cases",
            "2", "--labeled", "2", "--val-cases", "1", "--shape", "32", "32", "32", "--features", "4", "8", "16",
            "--pretrain-epochs", "1", "--pretrain-iters", "2", "--pretrain-batch", "2", "--audit-samples", "16",
            "--probe-samples", "8",
            "--finetune-epochs", "1", "--finetune-iters", "2"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(args, capture_output=True, encoding="utf-8", errors="replace", env=env)
    return out, args, proc


os.environ.setdefault("nnUNet_compile", "f")
