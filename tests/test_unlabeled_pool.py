"""The unlabelled pool: checks, identity, parallel preprocessing into nnU-Net's format, reuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretrain.unlabeled_pool import PoolIdentity, pool_cases, pool_identity, preprocess_pool

DATASET_JSON = {"file_ending": ".nii.gz", "channel_names": {"0": "a", "1": "b"}}


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_pool_checks_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(UserFacingError, match=r"--unlabeled .*missing is not a folder"):
        pool_cases(tmp_path / "missing", DATASET_JSON)
    with pytest.raises(UserFacingError, match=r"--unlabeled .*empty holds no \.nii\.gz images"):
        pool_cases(_touch(tmp_path / "empty", "notes.txt"), DATASET_JSON)
    labelled = _touch(tmp_path / "labelled", "a_0000.nii.gz", "a_0001.nii.gz", "a.nii.gz")
    with pytest.raises(UserFacingError, match=r"labelled holds label files \(a\.nii\.gz\).*images only"):
        pool_cases(labelled, DATASET_JSON)
    with pytest.raises(UserFacingError, match=r"Unlabeled case b has channels \[0\], the dataset has 2"):
        pool_cases(_touch(tmp_path / "channels", "b_0000.nii.gz"), DATASET_JSON)
    good = _touch(tmp_path / "good", "a_0000.nii.gz", "a_0001.nii.gz", "c_0000.nii.gz", "c_0001.nii.gz")
    assert sorted(pool_cases(good, DATASET_JSON)) == ["a", "c"]


def test_identity_is_folder_and_case_count(tmp_path):
    pool = _touch(tmp_path / "pool", "a_0000.nii.gz", "a_0001.nii.gz")
    identity = pool_identity(pool, DATASET_JSON)
    assert identity == PoolIdentity(str(pool.resolve()), 1) and identity.key.startswith("pool-1cases-")
    _touch(pool, "b_0000.nii.gz", "b_0001.nii.gz")
    assert pool_identity(pool, DATASET_JSON).key != identity.key  # more cases: another pool
    other = _touch(tmp_path / "other" / "pool", "a_0000.nii.gz", "a_0001.nii.gz")
    assert pool_identity(other, DATASET_JSON).key != identity.key  # same name elsewhere: another pool
    assert json.loads(json.dumps(identity.to_dict()))["num_cases"] == 1


def test_parallel_preprocessing_equals_serial_and_is_reused(project, tmp_path):
    from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
    from nnunet_slem.pretrain.settings import PretrainSettings

    pool = tmp_path / "pool"
    pool.mkdir()
    for case in ("pat00", "pat01", "pat02"):
        for f in (project.raw / "imagesTr").glob(f"{case}_*.nii.gz"):
            shutil.copy(f, pool / f.name.replace("pat", "extra"))
    trainer = SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", PretrainSettings(),
                             results_root=tmp_path, preprocessed_root=project.env["nnUNet_preprocessed"])
    args = (trainer.plans_manager, trainer.configuration_manager, trainer.data.dataset_json)
    serial = preprocess_pool(pool, tmp_path / "serial", *args, num_processes=1)
    parallel = preprocess_pool(pool, tmp_path / "parallel", *args, num_processes=2)
    assert sorted(p.name for p in serial.iterdir()) == sorted(p.name for p in parallel.iterdir())
    assert {p.suffix for p in serial.iterdir()} == {".b2nd", ".pkl"} and not list(serial.glob(".*"))
    from nnunet_slem.pretrain.data import ImageSource

    a, b = ImageSource(None, serial), ImageSource(None, parallel)
    assert len(a) == 3 and all(np.array_equal(np.asarray(a.image(i)), np.asarray(b.image(i))) for i in range(3))
    stamps = {p.name: p.stat().st_mtime_ns for p in serial.iterdir()}
    assert preprocess_pool(pool, tmp_path / "serial", *args, num_processes=2) == serial
    assert {p.name: p.stat().st_mtime_ns for p in serial.iterdir()} == stamps  # nothing preprocessed again
    with pytest.raises(UserFacingError, match="-np 0"):
        preprocess_pool(pool, tmp_path / "serial", *args, num_processes=0)
