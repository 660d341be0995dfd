"""Seeded fuzz of the bad-input contract (docs/bad_inputs.md): randomly corrupted inputs of every kind end in one
line ``nnunet-slem COMMAND: error: ...`` naming the file (or flag), exit code 2, no traceback, and every file that
existed before (the run folder being resumed, the preprocessed dataset, the corrupted input itself) byte for byte
as it was.

Input kinds and corruptions (:data:`CORRUPTIONS`): the checkpoint a ``pretrain --resume`` reads, ``dataset.json``,
the plans, a preprocessed case, a NIfTI image or label read by ``evaluate``, ``export brats`` and ``convert
brats`` (:data:`NIFTI_CORRUPTIONS`), command-line numbers and output places. Each case draws its details (offsets,
lengths, which field, which case) from a generator seeded with :data:`SEED` and the case's name, so a failure
reproduces. By default every (kind, corruption) pair runs once; ``SLEM_FUZZ_CASES=N`` runs N cases, cycling
through the pairs with fresh draws. The commands run in-process through ``nnunet_slem.cli.main`` (what the
console script calls), so that the suite stays fast; ``test_flipped_checkpoint_through_the_console_script`` runs
one case as a real process.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from nnunet_slem.checkpoint_format import save_checkpoint_file
from nnunet_slem.cli import main
from nnunet_slem.experiments.workflow import console_script
from nnunet_slem.pretrain.pretrainer import SLeMPretrainer
from nnunet_slem.pretrain.settings import PretrainSettings

SEED = 24
DATA = "nnUNetPlans_3d_fullres"
CHECKPOINT = "checkpoint_latest.pth"


@dataclass
class Setup:
    """One case's private copies: the preprocessed root and the results root holding a run stopped after epoch 1."""

    project: object
    root: Path
    results: Path
    tmp: Path

    @property
    def dataset(self) -> Path:
        return self.root / self.project.dataset_name

    @property
    def run_folder(self) -> Path:
        return next(self.results.rglob(CHECKPOINT)).parent

    def pretrain(self, *extra: str) -> list[str]:
        return ["pretrain", "-d", str(self.project.dataset_id), "-c", self.project.configuration, "-p",
                self.project.plans, "-device", "cpu", "--epochs", "2", "--iters-per-epoch", "1", "--batch-size", "2",
                "--audit-samples", "0", "--probe-samples", "0", "--num-workers", "0", "--resume", *extra]


# --------------------------------------------------------------------------------------------- corruptions
def truncate(path: Path, rng: np.random.Generator) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * rng.uniform(0.05, 0.95))])


def flip_text(path: Path, rng: np.random.Generator) -> None:
    """Set the high bit of 1-3 bytes of an ASCII JSON file: what a flaky disk or copy does to text."""
    raw = bytearray(path.read_bytes())
    for i in rng.choice(len(raw), size=int(rng.integers(1, 4)), replace=False):
        raw[i] ^= 0x80
    path.write_bytes(bytes(raw))


def empty(path: Path, rng: np.random.Generator) -> None:
    path.write_bytes(b"")


def directory(path: Path, rng: np.random.Generator) -> None:
    path.unlink()
    path.mkdir()
    (path / "stray.txt").write_text("not a file\n")


def symlink_loop(path: Path, rng: np.random.Generator) -> None:
    path.unlink()
    os.symlink(path.name, path)  # points at itself


def _tensor_spans(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of the tensor storages in a torch zip checkpoint (stored uncompressed)."""
    raw = path.read_bytes()
    spans = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size > 0:
                name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
                start = info.header_offset + 30 + name_len + extra_len
                spans.append((start, start + info.file_size))
    return spans


def flip_tensor_bytes(path: Path, rng: np.random.Generator) -> None:
    """Flip 1-4 bits inside the stored tensors: the archive still opens and unpickles, the numbers differ."""
    raw = bytearray(path.read_bytes())
    spans = _tensor_spans(path)
    for _ in range(int(rng.integers(1, 5))):
        start, stop = spans[int(rng.integers(len(spans)))]
        raw[int(rng.integers(start, stop))] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(raw))


def zero_tensor_region(path: Path, rng: np.random.Generator) -> None:
    """Zero a stretch of one stored tensor that holds something else than zeros."""
    raw = bytearray(path.read_bytes())
    spans = [s for s in _tensor_spans(path) if any(raw[s[0]:s[1]])]
    start, stop = spans[int(rng.integers(len(spans)))]
    a = int(rng.integers(start, stop))
    b = min(stop, a + int(rng.integers(4, 4096)))
    if not any(raw[a:b]):
        a, b = start, stop
    raw[a:b] = bytes(b - a)
    path.write_bytes(bytes(raw))


def _edit_checkpoint(edit: Callable[[dict], None]) -> Callable[[Path, np.random.Generator], None]:
    """Load, edit and save with a fresh digest: a checkpoint that passes the integrity check but holds a wrong
    field (another program's writer, an older format, a diverged run)."""
    def apply(path: Path, rng: np.random.Generator) -> None:
        ckpt = torch.load(path, weights_only=True)
        edit(ckpt)
        if isinstance(ckpt["metadata"], dict):
            save_checkpoint_file(ckpt, path)
        else:  # no place for a digest
            torch.save(ckpt, path)
    return apply


def _first_weight(ckpt: dict) -> str:
    return next(k for k, v in ckpt["network_weights"].items() if v.is_floating_point() and v.numel() > 1)


def _set_weight(value: float) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt["network_weights"][_first_weight(ckpt)].view(-1)[0] = value
    return edit


def _reshape_weight(ckpt: dict) -> None:
    key = _first_weight(ckpt)
    ckpt["network_weights"][key] = torch.zeros(3, *ckpt["network_weights"][key].shape[1:])


CHECKPOINT_EDITS: dict[str, Callable[[dict], None]] = {
    "metadata_is_a_string": lambda c: c.__setitem__("metadata", str(c["metadata"])[:200]),
    "pretext_missing": lambda c: c["metadata"].pop("pretext"),
    "epoch_float": lambda c: c.__setitem__("epoch", 1.5),
    "epoch_negative": lambda c: c.__setitem__("epoch", -3),
    "epoch_1e12": lambda c: c.__setitem__("epoch", 10 ** 12),
    "weights_nan": _set_weight(float("nan")),
    "weights_inf": _set_weight(float("inf")),
    "tensor_wrong_shape": _reshape_weight,
    "head_weights_missing": lambda c: c.pop("head_weights"),
    "logging_a_list": lambda c: c.__setitem__("logging", [1, 2]),
    "channel_names_a_string": lambda c: c["metadata"].__setitem__("channel_names", "seqA,seqB"),
    "settings_a_list": lambda c: c["metadata"].__setitem__("settings", ["epochs", 2]),
}


def _edit_json(edit: Callable[[dict, np.random.Generator], None]) -> Callable[[Path, np.random.Generator], None]:
    def apply(path: Path, rng: np.random.Generator) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        edit(data, rng)
        path.write_text(json.dumps(data, indent=2))  # NaN/Infinity written as such, as Python's json does
    return apply


def _config(plans: dict) -> dict:
    return plans["configurations"]["3d_fullres"]


PLANS_EDITS: dict[str, Callable[[dict, np.random.Generator], None]] = {
    "configurations_a_list": lambda p, r: p.__setitem__("configurations", list(p["configurations"])),
    "patch_size_a_string": lambda p, r: _config(p).__setitem__("patch_size", "28x40x32"),
    "spacing_a_string": lambda p, r: _config(p).__setitem__("spacing", "1.4 1 1"),
    "batch_size_a_string": lambda p, r: _config(p).__setitem__("batch_size", "2"),
    "batch_size_zero": lambda p, r: _config(p).__setitem__("batch_size", int(r.choice([0, -1]))),
    "spacing_nan_or_inf": lambda p, r: _config(p)["spacing"].__setitem__(int(r.integers(3)),
                                                                         float(r.choice([math.nan, math.inf]))),
    "spacing_zero": lambda p, r: _config(p)["spacing"].__setitem__(int(r.integers(3)), 0.0),
    "unknown_normalization": lambda p, r: _config(p)["normalization_schemes"].__setitem__(
        int(r.integers(4)), "PercentileNormalization"),
    "unknown_network_class": lambda p, r: _config(p)["architecture"].__setitem__(
        "network_class_name", "dynamic_network_architectures.architectures.unet.NoSuchUNet"),
    "patch_size_missing": lambda p, r: _config(p).pop("patch_size"),
    "data_identifier_missing": lambda p, r: _config(p).pop("data_identifier"),
    "architecture_a_string": lambda p, r: _config(p).__setitem__("architecture", "PlainConvUNet"),
}

DATASET_JSON_EDITS: dict[str, Callable[[dict, np.random.Generator], None]] = {
    "channel_names_a_list": lambda d, r: d.__setitem__("channel_names", list(d["channel_names"].values())),
    "labels_a_string": lambda d, r: d.__setitem__("labels", "background,lesion"),
    "file_ending_a_number": lambda d, r: d.__setitem__("file_ending", 5),
    "channel_key_not_an_index": lambda d, r: d["channel_names"].__setitem__("T1", d["channel_names"].pop("3")),
    "channel_names_missing": lambda d, r: d.pop("channel_names"),
    "labels_missing": lambda d, r: d.pop("labels"),
    "label_value_nan": lambda d, r: d["labels"].__setitem__("lesion", math.nan),
}


def _rewrite_case(change: Callable[[np.ndarray, np.random.Generator], np.ndarray]):
    """Write the case back in nnU-Net's own blosc2 format with its image changed: a valid file, wrong content."""
    def apply(path: Path, rng: np.random.Generator) -> None:
        folder, case = path.parent, path.name[: -len(".b2nd")]
        data, seg, _, properties = nnUNetDatasetBlosc2(str(folder)).load_case(case)
        data, seg = change(np.asarray(data[:]).copy(), rng), np.asarray(seg[:])
        for suffix in (".b2nd", "_seg.b2nd"):
            (folder / f"{case}{suffix}").unlink()
        shape = data.shape[1:]
        nnUNetDatasetBlosc2.save_case(data, seg if seg.shape[1:] == shape else np.zeros((1, *shape), np.int16),
                                      properties, str(folder / case), chunks=(1, *shape), blocks=(1, *shape))
    return apply


def _poison(value: float):
    def change(data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c, z = int(rng.integers(data.shape[0])), int(rng.integers(data.shape[1]))
        data[c, z, : int(rng.integers(1, data.shape[2] + 1))] = value
        return data
    return change


def zero_case_chunks(path: Path, rng: np.random.Generator) -> None:
    """Headers intact, a stretch of the compressed chunks zeroed (fails on decompression)."""
    raw = bytearray(path.read_bytes())
    a = int(len(raw) * rng.uniform(0.1, 0.4))
    b = int(len(raw) * rng.uniform(0.6, 0.9))
    raw[a:b] = bytes(b - a)
    path.write_bytes(bytes(raw))


CASE_CHANGES = {
    "nan_values": _poison(math.nan),
    "inf_values": _poison(-math.inf),
    "huge_values": lambda d, r: d * np.float32(1e37),
    "all_zeros": lambda d, r: np.zeros_like(d),
    "integer_dtype": lambda d, r: d.astype(np.int16),
    "two_dimensional": lambda d, r: d[:, d.shape[1] // 2],
    "wrong_spatial_shape": lambda d, r: d[:, :, : d.shape[2] - int(r.integers(1, 5))],
}

FILE_CORRUPTIONS = {"truncate": truncate, "directory": directory, "symlink_loop": symlink_loop}

#: kind -> corruption -> function(path, rng); the path is the kind's file (see ``_target``)
CORRUPTIONS: dict[str, dict[str, Callable]] = {
    "checkpoint": {**FILE_CORRUPTIONS, "empty": empty, "flip_bytes": flip_tensor_bytes,
                   "zero_region": zero_tensor_region,
                   **{k: _edit_checkpoint(v) for k, v in CHECKPOINT_EDITS.items()}},
    "dataset_json": {**FILE_CORRUPTIONS, "empty": empty, "flip_bytes": flip_text,
                     **{k: _edit_json(v) for k, v in DATASET_JSON_EDITS.items()}},
    "plans": {**FILE_CORRUPTIONS, "empty": empty, "flip_bytes": flip_text,
              **{k: _edit_json(v) for k, v in PLANS_EDITS.items()}},
    "preprocessed_case": {**FILE_CORRUPTIONS, "zero_region": zero_case_chunks,
                          **{k: _rewrite_case(v) for k, v in CASE_CHANGES.items()}},
}


# ------------------------------------------------------------------------------------------------ NIfTI
NIFTI_SPACING = (1.0, 1.2, 1.5)


def write_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, ...] = NIFTI_SPACING) -> None:
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def flip_gzip_bytes(path: Path, rng: np.random.Generator) -> None:
    """Set the high bit of 1-3 bytes past the 10-byte gzip header (whose mtime and OS bytes carry no content)."""
    raw = bytearray(path.read_bytes())
    for i in rng.choice(np.arange(10, len(raw)), size=int(rng.integers(1, 4)), replace=False):
        raw[i] ^= 0x80
    path.write_bytes(bytes(raw))


def _set_pixdim(value: float) -> Callable[[Path, np.random.Generator], None]:
    """Set one spatial ``pixdim`` of the NIfTI-1 header (SimpleITK then takes its spacing from the sform; other
    readers use the header as it is)."""
    def apply(path: Path, rng: np.random.Generator) -> None:
        raw = bytearray(gzip.decompress(path.read_bytes()))
        axis = int(rng.integers(1, 4))
        raw[76 + 4 * axis: 80 + 4 * axis] = struct.pack("<f", value)
        path.write_bytes(gzip.compress(bytes(raw)))
    return apply


def _poison_labels(value: float) -> Callable[[Path, np.random.Generator], None]:
    """Rewrite the file as float32 with ``value`` in 1-20 voxels, on the same grid."""
    def apply(path: Path, rng: np.random.Generator) -> None:
        image = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        arr.reshape(-1)[rng.choice(arr.size, size=int(rng.integers(1, 21)), replace=False)] = value
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path), useCompression=True)
    return apply


#: corruption -> (function(path, rng), whether it needs a label file)
NIFTI_CORRUPTIONS: dict[str, tuple[Callable[[Path, np.random.Generator], None], bool]] = {
    "truncate": (truncate, False), "flip_bytes": (flip_gzip_bytes, False),
    "nan_label": (_poison_labels(math.nan), True), "fractional_label": (_poison_labels(0.5), True),
    "spacing_zero": (_set_pixdim(0.0), False), "spacing_nan": (_set_pixdim(math.nan), False),
    "spacing_negative": (_set_pixdim(-1.0), False),
    "directory": (directory, False), "symlink_loop": (symlink_loop, False),
}
NIFTI_COMMANDS = ("evaluate", "export", "convert")
NIFTI_SHAPE = (6, 8, 7)  # numpy (z, y, x)


def _nifti_argv(case: Case, s: Setup, rng: np.random.Generator) -> tuple[str, list[str], str]:
    """Write the command's inputs under ``s.tmp/nifti``, corrupt one file, and return (command, argv, the file)."""
    corrupt, label_only = NIFTI_CORRUPTIONS[case.corruption]
    work = s.tmp / "nifti"
    command = case.kind[len("nifti_"):]
    labels = [np.random.default_rng(i).choice(np.arange(4, dtype=np.uint8), NIFTI_SHAPE) for i in range(3)]
    if command == "evaluate":
        for folder in ("ref", "pred"):
            shutil.copytree(s.project.raw / "labelsTr", work / folder)
        target = sorted((work / str(rng.choice(["ref", "pred"]))).glob("*.nii.gz"))[int(rng.integers(2))]
        argv = ["evaluate", "-ref", str(work / "ref"), "-pred", str(work / "pred"), "-dj",
                str(s.project.raw / "dataset.json"), "-o", str(work / "metrics"), "-np", "1"]
    elif command == "export":
        for i, arr in enumerate(labels):
            write_nifti(work / "pred" / f"case_{i}.nii.gz", arr)
        (work / "out").mkdir()
        (work / "out" / "earlier.nii.gz").write_bytes(b"an earlier export\n")
        target = work / "pred" / f"case_{int(rng.integers(3))}.nii.gz"
        argv = ["export", "brats", str(work / "pred"), str(work / "out"), "--year", "2023", "-np", "1"]
    else:
        for i, arr in enumerate(labels[:2]):
            case_name = f"BraTS-GLI-{i:05d}-000"
            for channel, seq in enumerate(("t2f", "t1n", "t1c", "t2w")):
                write_nifti(work / "src" / case_name / f"{case_name}-{seq}.nii.gz",
                            100 * channel + arr.astype(np.int16))
            write_nifti(work / "src" / case_name / f"{case_name}-seg.nii.gz", arr)
        seq = "seg" if label_only else str(rng.choice(["t2f", "t1n", "t1c", "t2w", "seg"]))
        case_name = f"BraTS-GLI-{int(rng.integers(2)):05d}-000"
        target = work / "src" / case_name / f"{case_name}-{seq}.nii.gz"
        (work / "raw").mkdir()
        os.environ["nnUNet_raw"] = str(work / "raw")  # monkeypatch restores it
        argv = ["convert", "brats", str(work / "src"), "-d", "901"]
    corrupt(target, rng)
    return command, argv, str(target)


#: command-line numbers: name -> (argv tail after the pretrain flags, or a whole argv; text the message names)
NUMBERS: dict[str, tuple[list[str], str]] = {
    "lr_nan": (["--lr", "nan"], "--lr"), "lr_inf": (["--lr", "inf"], "--lr"), "lr_negative": (["--lr", "-1"], "--lr"),
    "lr_zero": (["--lr", "0"], "--lr"), "weight_decay_nan": (["--weight-decay", "nan"], "--weight-decay"),
    "workers_negative": (["--num-workers", "-1"], "--num-workers"),
    "warmup_negative": (["--warmup-iters", "-5"], "--warmup-iters"),
    "epochs_zero": (["--epochs", "0"], "--epochs"), "audit_samples_negative": (["--audit-samples", "-1"],
                                                                              "--audit-samples"),
    "processes_zero": (["-num_gpus", "0"], "-num_gpus"),
    "batch_too_large_for_memory": (["--batch-size", str(10 ** 9)], "--batch-size"),
}
#: numbers of the other commands: name -> (command, argv with {tmp}/{raw} placeholders, text the message names)
OTHER_NUMBERS: dict[str, tuple[str, list[str], str]] = {
    "audit_samples_zero": ("audit", ["audit", "-d", "777", "-c", "3d_fullres", "-p", "nnUNetPlans_tiny", "--samples",
                                     "0"], "--samples"),
    "evaluate_np_zero": ("evaluate", ["evaluate", "-ref", "{raw}/labelsTr", "-pred", "{raw}/labelsTr", "-dj",
                                      "{raw}/dataset.json", "-o", "{tmp}/m", "-np", "0"], "-np"),
    "one_empty_hd95_inf": ("evaluate", ["evaluate", "-ref", "{raw}/labelsTr", "-pred", "{raw}/labelsTr", "-dj",
                                        "{raw}/dataset.json", "-o", "{tmp}/m", "--one-empty-hd95", "inf"],
                           "--one-empty-hd95"),
    "make_dataset_shape_too_large": ("make-dataset", ["make-dataset", "-d", "990", "--raw", "{tmp}/raw", "--shape",
                                                      "100000", "100000", "100000"], "--shape"),
}


@dataclass(frozen=True)
class Case:
    kind: str
    corruption: str
    round: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.corruption}" + (f"-{self.round}" if self.round else "")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([SEED, zlib.crc32(self.name.encode())])


def default_cases() -> list[Case]:
    """Every (kind, corruption) pair once."""
    pairs = [Case(kind, c) for kind, table in CORRUPTIONS.items() for c in table]
    pairs += [Case(f"nifti_{command}", c) for command in NIFTI_COMMANDS for c in NIFTI_CORRUPTIONS]
    pairs += [Case("cli_number", n) for n in NUMBERS]
    pairs += [Case("cli_number", n) for n in OTHER_NUMBERS]
    return pairs + [Case("output_place", p) for p in ("results_root_is_a_file", "audit_json_is_a_folder",
                                                       "audit_json_parent_missing", "evaluate_out_is_a_file")]


def all_cases() -> list[Case]:
    """The default pairs, or ``SLEM_FUZZ_CASES`` cases cycling through them with fresh draws."""
    pairs = default_cases()
    wanted = int(os.environ.get("SLEM_FUZZ_CASES", "0") or 0) or len(pairs)
    return [Case(p.kind, p.corruption, i // len(pairs)) for i, p in
            ((i, pairs[i % len(pairs)]) for i in range(wanted))]


# --------------------------------------------------------------------------------------------- the harness
@pytest.fixture(scope="module")
def stopped(project, tmp_path_factory) -> Path:
    """A results root with a run stopped after epoch 1 of 2 (the files a failing resume must leave alone)."""
    results = tmp_path_factory.mktemp("fuzz_stopped")
    settings = PretrainSettings(epochs=2, iters_per_epoch=1, batch_size=2, audit_samples=0, probe_samples=0,
                                eval_batches=0, num_workers=0)
    SLeMPretrainer(project.dataset_id, project.configuration, project.plans, "cpu", settings,
                   results_root=results, preprocessed_root=project.env["nnUNet_preprocessed"]).run(stop_after=1)
    return results


@pytest.fixture()
def setup(project, stopped, tmp_path, monkeypatch) -> Setup:
    root = tmp_path / "preprocessed"
    shutil.copytree(project.preprocessed, root / project.dataset_name,
                    ignore=shutil.ignore_patterns("gt_segmentations", "slem_*", "nnUNetPlans.json"))
    shutil.copytree(stopped, tmp_path / "results")
    for key, value in project.env.items():
        if key.startswith("nnUNet"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_preprocessed", str(root))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return Setup(project, root, tmp_path / "results", tmp_path)


def tree(folder: Path) -> dict[str, object]:
    """Every entry under ``folder`` without following links: file bytes, link targets, folders."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = path.read_bytes()
    return found


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``nnunet-slem ARGV`` in this process: its exit code and stderr (an exception other than the CLI's own
    exit propagates and fails the test, as a traceback would)."""
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def assert_contract(code: int, stderr: str, command: str, named: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit {code}, stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith(f"nnunet-slem {command}: error: "), stderr[-2000:]
    assert named in lines[0], f"{named!r} not named in: {lines[0]}"
    return lines[0]


def _target(kind: str, s: Setup, rng: np.random.Generator) -> Path:
    if kind == "checkpoint":
        return s.run_folder / CHECKPOINT
    if kind == "dataset_json":
        return s.dataset / "dataset.json"
    if kind == "plans":
        return s.dataset / f"{s.project.plans}.json"
    cases = sorted((s.dataset / DATA).glob("pat*[0-9].b2nd"))
    return cases[int(rng.integers(len(cases)))]


def _argv(case: Case, s: Setup, rng: np.random.Generator) -> tuple[str, list[str], str]:
    """(command, argv, what the message must name) for the non-file kinds, preparing what they need."""
    if case.corruption in OTHER_NUMBERS:
        command, argv, named = OTHER_NUMBERS[case.corruption]
        return command, [a.format(tmp=s.tmp, raw=s.project.raw) for a in argv], named
    if case.kind == "cli_number":
        extra, named = NUMBERS[case.corruption]
        return "pretrain", s.pretrain(*extra), named
    if case.corruption == "results_root_is_a_file":
        blocker = s.tmp / "results_file"
        blocker.write_text("a file where the results folder should be\n")
        os.environ["nnUNet_results"] = str(blocker)  # monkeypatch restores it
        return "pretrain", s.pretrain(), str(blocker)
    audit = ["audit", "-d", str(s.project.dataset_id), "-c", s.project.configuration, "-p", s.project.plans,
             "--samples", "4"]
    if case.corruption == "audit_json_is_a_folder":
        (s.tmp / "out.json").mkdir()
        return "audit", [*audit, "--json", str(s.tmp / "out.json")], str(s.tmp / "out.json")
    if case.corruption == "audit_json_parent_missing":
        return "audit", [*audit, "--json", str(s.tmp / "absent" / "out.json")], str(s.tmp / "absent")
    blocker = s.tmp / "metrics"
    blocker.write_text("a file where the metrics folder should be\n")
    labels = s.project.raw / "labelsTr"
    return "evaluate", ["evaluate", "-ref", str(labels), "-pred", str(labels), "-dj",
                        str(s.project.raw / "dataset.json"), "-o", str(blocker)], str(blocker)


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
def test_corrupted_input_is_one_line_naming_it_and_nothing_changes(case, setup, capsys):
    rng = case.rng()
    if case.kind in CORRUPTIONS:
        target = _target(case.kind, setup, rng)
        CORRUPTIONS[case.kind][case.corruption](target, rng)
        command, argv, named = "pretrain", setup.pretrain(), str(target)
    elif case.kind.startswith("nifti_"):
        command, argv, named = _nifti_argv(case, setup, rng)
    else:
        command, argv, named = _argv(case, setup, rng)
    before = tree(setup.tmp)
    code, stderr = run_cli(argv, capsys)
    assert_contract(code, stderr, command, named)
    assert tree(setup.tmp) == before


def test_default_cases_cover_every_kind_and_corruption():
    """The default run covers every kind the issue lists, each with several corruptions."""
    cases = default_cases()
    kinds = {c.kind for c in cases}
    assert {"checkpoint", "dataset_json", "plans", "preprocessed_case", "cli_number", "output_place",
            *(f"nifti_{command}" for command in NIFTI_COMMANDS)} <= kinds
    assert all(sum(c.kind == k for c in cases) >= 3 for k in kinds)
    assert len({c.name for c in cases}) == len(cases) >= 60


def test_flipped_checkpoint_through_the_console_script(setup):
    """The headline case as a user meets it: bits flipped in a tensor of the checkpoint, the real command."""
    latest = setup.run_folder / CHECKPOINT
    flip_tensor_bytes(latest, np.random.default_rng(SEED))
    before = tree(setup.tmp)
    proc = subprocess.run([console_script("nnunet-slem"), *setup.pretrain()], env={**os.environ},
                          capture_output=True, encoding="utf-8", errors="replace")
    line = assert_contract(proc.returncode, proc.stderr, "pretrain", str(latest))
    assert "integrity check" in line and "Move it away" in line
    assert tree(setup.tmp) == before


def test_channel_names_edited_after_the_run_started_name_dataset_json(setup, capsys):
    """Renamed channels (same count): the message names dataset.json, not "a different pretext"."""
    dataset_json = setup.dataset / "dataset.json"
    meta = json.loads(dataset_json.read_text(encoding="utf-8"))
    meta["channel_names"]["0"] = "T1_renamed"
    dataset_json.write_text(json.dumps(meta))
    before = tree(setup.tmp)
    line = assert_contract(*run_cli(setup.pretrain(), capsys), "pretrain", str(dataset_json))
    assert "Restore channel_names in dataset.json" in line and "different pretext" not in line
    assert tree(setup.tmp) == before
