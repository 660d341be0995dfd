"""Driving nnU-Net's own commands: environment, subprocess calls, small plans and label splits.

Used by the demo and the integration tests, which must go through exactly the commands a user types.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nnunet_slem.atomic import write_json_atomic
from nnunet_slem.errors import UserFacingError
from nnunet_slem.paths import trainer_dir


def nnunet_env(root: str | os.PathLike, n_proc_da: int = 0, extra: dict | None = None) -> dict[str, str]:
    """Environment for nnU-Net's commands with raw/preprocessed/results under ``root`` and our trainers."""
    root = Path(root)
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_extTrainer": str(trainer_dir()),
        "nnUNet_compile": env.get("nnUNet_compile", "f"),
        "nnUNet_n_proc_DA": str(n_proc_da),
        # nnU-Net spawns this many export workers (default 8), each importing torch: on a small machine
        # that costs more than the tiny validation itself
        "nnUNet_def_n_proc": env.get("nnUNet_def_n_proc", "1"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",  # progress bars and tables print in any locale, even plain ASCII
    })
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    env.update(extra or {})
    return env


def console_script(name: str) -> str:
    """Path of a console script installed next to this Python (works inside a venv that is not activated)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run_command(args: Sequence[str], env: dict[str, str], log_file: str | os.PathLike | None = None,
                quiet: bool = False, echo: bool = False) -> float:
    """Run one command; on failure raise with the command and the end of its output. Returns seconds taken.

    Its output goes to ``log_file`` line by line as it comes (a run killed midway leaves what it printed);
    ``echo`` also prints it, indented, for long steps whose progress the user wants to follow."""
    args = [console_script(args[0]), *map(str, args[1:])]
    start = time.perf_counter()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    log = open(log_file, "a", encoding="utf-8") if log_file is not None else None  # noqa: SIM115
    try:
        if log is not None:
            log.write(f"\n$ {' '.join(args)}\n")
            log.flush()
        with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            for raw in proc.stdout:  # bytes up to each "\n"; progress bars redraw with "\r" inside a line
                line = raw.decode("utf-8", errors="replace")
                if log is not None:
                    log.write(line)
                    log.flush()
                shown = line.rstrip("\n").split("\r")[-1].rstrip()  # a bar's final state, or the plain line
                if shown:
                    tail.append(shown)
                    if echo:
                        print("    " + shown[-200:], flush=True)
        returncode = proc.returncode
    finally:
        if log is not None:
            log.close()
    elapsed = time.perf_counter() - start
    if not quiet:
        print(f"  $ {' '.join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args))}  ({elapsed:.0f} s)")
    if returncode != 0:
        raise RuntimeError(f"Command failed ({returncode}): {' '.join(args)}\n" + "\n".join(tail))
    return elapsed


def write_small_plans(preprocessed_base: str | os.PathLike, source: str, target: str,
                      features: Sequence[int], batch_size: int | None = None) -> Path:
    """A copy of ``source`` plans with fewer features per stage, reusing the same preprocessed data.

    For CPU runs: the auto-planned U-Net costs seconds per iteration on two cores. Stages keep their count
    and strides; features are taken from ``features`` (last value repeated for deeper stages).
    """
    base = Path(preprocessed_base)
    plans = json.loads((base / f"{source}.json").read_text(encoding="utf-8"))
    small = copy.deepcopy(plans)
    small["plans_name"] = target
    for cfg in small["configurations"].values():
        if "architecture" not in cfg:
            continue
        kwargs = cfg["architecture"]["arch_kwargs"]
        n = kwargs["n_stages"]
        kwargs["features_per_stage"] = [int(features[min(i, len(features) - 1)]) for i in range(n)]
        if batch_size is not None:
            cfg["batch_size"] = batch_size
        # data_identifier is copied unchanged: the small plans read the source plans' preprocessed data
    path = base / f"{target}.json"
    write_json_atomic(path, small)
    return path


def write_split(preprocessed_base: str | os.PathLike, train: Sequence[str], val: Sequence[str]) -> Path:
    """``splits_final.json`` with one fold (fold 0): the labelled cases to train on and fixed validation cases."""
    if set(train) & set(val):
        raise UserFacingError(f"Cases in both training and validation: {sorted(set(train) & set(val))}")
    path = Path(preprocessed_base) / "splits_final.json"
    write_json_atomic(path, [{"train": list(train), "val": list(val)}])
    return path
