"""Bad inputs to pretraining end in one clear error naming the problem and the fix, and leave existing output
alone. The whole catalogue (with the tests elsewhere that back the other rows) is docs/bad_inputs.md.

Every test works on a private copy of the fixture's preprocessed dataset (``preprocessed_root=``) and, where
a run exists already, on a copy of a run stopped after epoch 1 whose files must be byte-identical afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnunet_slem.errors import UserFacingError
from nnunet_slem.experiments.workflow import console_script
from nnunet_slem.pretrain.data import TRAIN_STREAM, ImageSource, sample_rng
from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
from nnunet_slem.pretrain.settings import PretrainSettings
from nnunet_slem.pretrain.unlabeled_pool import preprocess_pool

# one loader worker: errors met while reading must cross the process boundary as clearly as in-process ones
SETTINGS = dict(epochs=2, iters_per_epoch=1, batch_size=2, audit_samples=0, probe_samples=0, eval_batches=0,
                num_workers=1)
DATA = "nnUNetPlans_3d_fullres"
FIX = "nnUNetv2_preprocess -d 777 -c 3d_fullres -plans_name nnUNetPlans_tiny"


@pytest.fixture(scope="module")
def stopped_run(project, tmp_path_factory) -> Path:
    """A results root holding a run stopped after epoch 1 of 2: the output a failing resume must not touch."""
    results = tmp_path_factory.mktemp("stopped_run")
    SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", PretrainSettings(**SETTINGS),
                   results_root=results, preprocessed_root=project.env["nnUNet_preprocessed"]).run(stop_after=1)
    return results


@pytest.fixture()
def root(project, tmp_path) -> Path:
    """A private nnUNet_preprocessed with a copy of the fixture's dataset (plans, dataset.json, cases)."""
    root = tmp_path / "preprocessed"
    shutil.copytree(project.preprocessed, root / project.dataset_name,
                    ignore=shutil.ignore_patterns("gt_segmentations", "slem_unlabeled__*"))
    return root


@pytest.fixture()
def results(stopped_run, tmp_path) -> Path:
    shutil.copytree(stopped_run, tmp_path / "results")
    return tmp_path / "results"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _trainer(project, root: Path, results: Path, **settings) -> SLeMPretrainer:
    return SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu",
                          PretrainSettings(**(SETTINGS | settings)), results_root=results, preprocessed_root=root)


def _resume_fails(project, root: Path, results: Path, match: str) -> UserFacingError:
    """Resume the stopped run on the broken copy: the error matches and the run's files are unchanged."""
    before = _snapshot(results)
    with pytest.raises(UserFacingError, match=match) as info:
        _trainer(project, root, results).run(resume=True)
    assert _snapshot(results) == before
    return info.value


def _first_case(root: Path, project) -> str:
    """The case the resumed run reads first: sample 0 of step 0 of epoch 1 (every sample has its own key,
    see nnunet_slem.pretrain.data)."""
    source = ImageSource(root / project.dataset_name / DATA, None)
    return source.items[int(sample_rng(0, TRAIN_STREAM, 1, 0, 0).integers(len(source)))][1]


def _rewrite_case(folder: Path, case: str, change) -> None:
    """Write a case back in nnU-Net's own blosc2 format with its image changed by ``change``."""
    dataset = nnUNetDatasetBlosc2(str(folder))
    data, seg, _, properties = dataset.load_case(case)
    data, seg = change(np.asarray(data[:]).copy()), np.asarray(seg[:])
    for suffix in (".b2nd", "_seg.b2nd"):
        (folder / f"{case}{suffix}").unlink()
    shape = data.shape[1:]
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(folder / case), chunks=(1, *shape),
                                  blocks=(1, *shape))


def test_planned_but_not_preprocessed(project, root, tmp_path):
    shutil.rmtree(root / project.dataset_name / DATA)
    with pytest.raises(UserFacingError, match=f"planned but not preprocessed.*Run `{FIX}`"):
        _trainer(project, root, tmp_path / "results")


def test_truncated_case_is_named_with_the_fix_by_the_cli(project, root, results):
    """Half a ``.b2nd`` (a preprocessing run killed mid-write): one line naming the file, no blosc2 traceback."""
    case = root / project.dataset_name / DATA / "pat03.b2nd"
    case.write_bytes(case.read_bytes()[: case.stat().st_size // 2])
    before = _snapshot(results)
    proc = subprocess.run(
        [console_script("nnunet-slem"), "pretrain", "-d", str(project.dataset_id), "-c", project.configuration,
         "-p", project.plans, "-device", "cpu", "--epochs", "2", "--iters-per-epoch", "1", "--batch-size", "2",
         "--audit-samples", "0", "--probe-samples", "0", "--resume"],
        env={**project.env, "nnUNet_preprocessed": str(root), "nnUNet_results": str(results)},
        capture_output=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"Cannot read preprocessed case {case}" in proc.stderr and "truncated or corrupt" in proc.stderr
    assert FIX in proc.stderr and "Traceback" not in proc.stderr
    assert _snapshot(results) == before


def test_corrupt_case_read_in_a_loader_worker_is_named(project, root, results):
    """Headers intact, compressed chunks zeroed: opening works, reading fails, inside a loader worker."""
    case = _first_case(root, project)
    path = root / project.dataset_name / DATA / f"{case}.b2nd"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 10: len(raw) * 9 // 10] = bytes(len(raw) * 9 // 10 - len(raw) // 10)
    path.write_bytes(bytes(raw))
    error = _resume_fails(project, root, results, f"Cannot read preprocessed case {path}.*{FIX}")
    assert "DataLoader worker" not in str(error)  # the worker's message, not torch's wrapper around it


def test_nan_in_a_case_is_named(project, root, results):
    case = _first_case(root, project)

    def add_nan(data: np.ndarray) -> np.ndarray:
        data[1] = np.nan  # one modality exported as NaN
        return data

    _rewrite_case(root / project.dataset_name / DATA, case, add_nan)
    path = root / project.dataset_name / DATA / f"{case}.b2nd"
    _resume_fails(project, root, results, f"case {path} contains NaN or Inf values.*preprocess again with `{FIX}`")


def test_inf_in_a_case_is_named(project, root, results):
    case = _first_case(root, project)

    def add_inf(data: np.ndarray) -> np.ndarray:
        data[:, data.shape[1] // 2] = np.inf  # a slice of overflowed values: any patch covering it
        return data

    _rewrite_case(root / project.dataset_name / DATA, case, add_inf)
    _resume_fails(project, root, results, f"{case}.b2nd contains NaN or Inf values")


def test_single_modality_dataset(project, root, tmp_path):
    dataset_json = root / project.dataset_name / "dataset.json"
    meta = json.loads(dataset_json.read_text(encoding="utf-8"))
    meta["channel_names"] = {"0": "seqA"}
    dataset_json.write_text(json.dumps(meta))
    with pytest.raises(UserFacingError, match=r"at least two modalities/channels.*the data has 1.*Dataset777"):
        _trainer(project, root, tmp_path / "results")


def test_cases_with_other_channel_count_than_dataset_json(project, root, tmp_path):
    dataset_json = root / project.dataset_name / "dataset.json"
    meta = json.loads(dataset_json.read_text(encoding="utf-8"))
    meta["channel_names"] = {"0": "seqA", "1": "seqB", "2": "seqC"}  # edited after preprocessing
    dataset_json.write_text(json.dumps(meta))
    with pytest.raises(UserFacingError, match=r"pat00\.b2nd has shape \(4, .*4 channels, but dataset.json lists 3"):
        _trainer(project, root, tmp_path / "results").run()
    assert not list((tmp_path / "results").rglob("checkpoint_*"))


def test_damaged_checkpoint_on_resume(project, root, results):
    latest = next(results.rglob("checkpoint_latest.pth"))
    latest.write_bytes(latest.read_bytes()[:1000])
    _resume_fails(project, root, results, f"Cannot resume from {latest}.*Move it away")


def test_truncated_unlabeled_cache_file(project, root, results, tmp_path):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for f in (project.raw / "imagesTr").glob("pat00_*.nii.gz"):
        shutil.copy(f, unlabeled / f.name.replace("pat00", "extra"))
    trainer = _trainer(project, root, results)
    trainer.unlabeled_dir = str(unlabeled)
    cache = preprocess_pool(unlabeled, root / project.dataset_name, trainer.plans_manager,
                            trainer.configuration_manager, trainer.data.dataset_json)
    (cache / "extra.b2nd").write_bytes((cache / "extra.b2nd").read_bytes()[:5000])
    before = _snapshot(results)
    with pytest.raises(UserFacingError, match=r"extra\.b2nd .*truncated or corrupt\. Delete it and its \.pkl"):
        trainer.run(resume=True)
    assert _snapshot(results) == before


def test_unset_ext_trainer_gives_nnunets_error_naming_the_variable(monkeypatch):
    """nnU-Net's own message (we cannot change it) names the variable; README/doc give the value to export."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    with pytest.raises(RuntimeError, match=r"Could not find requested nnunet trainer SLeMTrainer .*nnUNet_extTrainer"):
        recursive_find_trainer_class_by_name("SLeMTrainer")
