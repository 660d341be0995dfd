"""An unlabelled image pool for pretraining: checked, identified, and preprocessed once with nnU-Net's own code.

``nnunet-slem pretrain --unlabeled DIR`` (and ``compare --unlabeled DIR``, which passes it to every pretraining)
adds the images of ``DIR`` (nnU-Net's ``imagesTr`` naming, ``CASE_XXXX<file_ending>``, every channel, no labels)
to the preprocessed training images.

- **Identity.** A pool is its resolved folder and its case count (:class:`PoolIdentity`); the key
  ``<folder name>-<N>cases-<hash>`` names its preprocessed cache and, in ``compare``, the pretraining folders
  trained on it, and ``pretrain_config.json`` records it. Two pools never share a cache or a checkpoint, and a
  pool that gained cases is a new pool.
- **Preprocessing.** nnU-Net's preprocessor of the plans (``run_case_save``) writes every case in nnU-Net's
  compressed format (``.b2nd`` + ``.pkl``, read back like any preprocessed case), ``num_processes`` cases at a
  time, into ``<preprocessed>/slem_unlabeled__<data identifier>__<key>/``. Each case goes to a staging folder
  and is moved into place with its ``.pkl`` last, so an interrupted run leaves no half case, and a finished
  case is never preprocessed again: the pool is reused by every later pretraining.
- **Bad input** (one line each, before anything is written): a missing or empty folder, a folder holding label
  files (``CASE<file_ending>``: a pool has no labels, and a labelled case belongs in ``imagesTr``), and cases
  whose channels differ from the dataset's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from nnunet_slem.errors import UserFacingError
from nnunet_slem.pretrain.data import find_unlabeled_cases


@dataclass(frozen=True)
class PoolIdentity:
    """What makes two pools the same: the resolved folder and its case count."""

    folder: str
    num_cases: int

    @property
    def key(self) -> str:
        """``<folder name>-<N>cases-<8 hex of the resolved path>``: readable and unique per folder."""
        digest = hashlib.sha256(self.folder.encode("utf-8")).hexdigest()[:8]
        return f"{Path(self.folder).name}-{self.num_cases}cases-{digest}"

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def pool_cases(images_dir: str | os.PathLike, dataset_json: dict) -> dict[str, list[str]]:
    """Case -> its channel files, after the checks of the module docstring (one-line errors naming the fix)."""
    folder = Path(images_dir)
    ending = dataset_json["file_ending"]
    if not folder.is_dir():
        raise UserFacingError(f"--unlabeled {folder} is not a folder. Point it at a folder of images named like "
                              f"nnU-Net's imagesTr (CASE_0000{ending}, one file per channel).")
    stems = [p.name[: -len(ending)] for p in folder.iterdir() if p.name.endswith(ending)]
    labels = sorted(stem + ending for stem in stems if not re.fullmatch(r".+_\d{4}", stem))
    if labels:
        raise UserFacingError(
            f"--unlabeled {folder} holds label files ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''}): "
            "an unlabelled pool has images only. Move labelled cases to imagesTr/labelsTr, or the label files out "
            "of the folder.")
    if not any(p.name.endswith(ending) for p in folder.iterdir()):
        raise UserFacingError(f"--unlabeled {folder} holds no {ending} images. Put the pool's images there "
                              f"(CASE_0000{ending}, one file per channel), or leave --unlabeled out.")
    return find_unlabeled_cases(folder, ending, len(dataset_json["channel_names"]))


def pool_identity(images_dir: str | os.PathLike, dataset_json: dict) -> PoolIdentity:
    """The checked pool's identity (:class:`PoolIdentity`)."""
    return PoolIdentity(str(Path(images_dir).resolve()), len(pool_cases(images_dir, dataset_json)))


def pool_cache_folder(preprocessed_base: str | os.PathLike, data_identifier: str, identity: PoolIdentity) -> Path:
    return Path(preprocessed_base) / f"slem_unlabeled__{data_identifier}__{identity.key}"


def _preprocess_case(job: tuple) -> str:
    """One case into nnU-Net's format, staged then moved into place (``.pkl`` last: the completion marker)."""
    case, files, target, plans_manager, configuration_manager, dataset_json = job
    target = Path(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{case}.partial-", dir=target))
    try:
        preprocessor = configuration_manager.preprocessor_class(verbose=False)
        preprocessor.run_case_save(str(staging / case), files, None, plans_manager, configuration_manager,
                                   dataset_json)
        produced = sorted(staging.iterdir(), key=lambda p: p.suffix == ".pkl")
        for path in produced:
            os.replace(path, target / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return case


def preprocess_pool(images_dir: str | os.PathLike, preprocessed_base: str | os.PathLike, plans_manager,
                    configuration_manager, dataset_json: dict, num_processes: int = 1) -> Path:
    """The pool preprocessed into its cache folder (cases already there are skipped); returns the folder."""
    if num_processes < 1:
        raise UserFacingError(f"-np {num_processes}: the number of preprocessing processes must be at least 1.")
    cases = pool_cases(images_dir, dataset_json)
    identity = PoolIdentity(str(Path(images_dir).resolve()), len(cases))
    target = pool_cache_folder(preprocessed_base, configuration_manager.data_identifier, identity)
    target.mkdir(parents=True, exist_ok=True)
    todo = [c for c in sorted(cases) if not (target / f"{c}.pkl").is_file()]
    jobs = [(c, cases[c], str(target), plans_manager, configuration_manager, dataset_json) for c in todo]
    progress = tqdm(total=len(jobs), desc=f"preprocessing the unlabelled pool ({num_processes} processes)",
                    disable=not jobs)
    with progress:
        if num_processes == 1:
            for job in jobs:
                _preprocess_case(job)
                progress.update()
        else:
            with ProcessPoolExecutor(max_workers=num_processes) as pool:
                for _ in pool.map(_preprocess_case, jobs):
                    progress.update()
    return target
