"""Fine-tuning on only some labelled cases: where self-supervised pretraining is meant to pay off.

``SLEM_LABELED`` (a count ``N >= 1`` or a fraction ``0 < f < 1`` of the fold's training cases) makes every
nnunet-slem trainer drop all but that many of the fold's *training* cases; the fold's validation cases stay
as they are, so methods compared on one fold are validated on the same cases. Pretraining is unaffected: it
reads every preprocessed image.

The pick is at patient level, without replacement, and reproducible: patients are shuffled by a numpy
generator seeded with ``SLEM_LABELED_SEED`` (default 0) and taken in that order until ``N`` patients (a
fraction: ``round(f * patients)``, at least one) are in. Every case of a picked patient is kept. Patients are
the case identifiers themselves unless ``SLEM_PATIENT_REGEX`` is set: its first group is the patient, e.g.
``^(.+)_t\\d+$`` puts ``pat01_t0`` and ``pat01_t1`` together. Nested subsets: with one seed, the subset for
``N`` contains the subset for every smaller ``N`` (the shuffled order is the same), so label-count curves
compare like with like.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from nnunet_slem.errors import UserFacingError

LABELED_ENV, SEED_ENV, PATIENT_ENV = "SLEM_LABELED", "SLEM_LABELED_SEED", "SLEM_PATIENT_REGEX"


def parse_labeled(text: str) -> float:
    """``"4"`` -> 4 cases, ``"0.25"`` -> a quarter; anything else is an error naming the variable."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and (value < 1 or value == int(value))):
        raise UserFacingError(
            f"{LABELED_ENV}={text!r} is neither a case count (1, 2, ...) nor a fraction between 0 and 1. "
            f"Set e.g. {LABELED_ENV}=4 or {LABELED_ENV}=0.25, or unset it to train on every case of the fold."
        )
    return value


def patient_groups(case_ids: Sequence[str], pattern: str | None) -> dict[str, list[str]]:
    """Patient -> its cases (in the given order); without a pattern every case is its own patient."""
    regex = re.compile(pattern) if pattern else None
    groups: dict[str, list[str]] = {}
    for case in case_ids:
        match = regex.search(case) if regex else None
        if regex and (match is None or not match.groups()):
            raise UserFacingError(
                f"{PATIENT_ENV}={pattern!r} does not match case {case!r} with a group. Give a regex whose first "
                "group is the patient id, e.g. '^(.+)_t\\d+$', or unset it (one case per patient)."
            )
        groups.setdefault(match.group(1) if match else case, []).append(case)
    return groups


def pick_labeled_subset(train_cases: Sequence[str], labeled: float, seed: int = 0,
                        patient_pattern: str | None = None) -> list[str]:
    """The training cases kept for ``labeled`` patients (count or fraction), reproducible by ``seed``."""
    groups = patient_groups(sorted(train_cases), patient_pattern)
    patients = sorted(groups)
    n = int(labeled) if labeled >= 1 else max(1, round(labeled * len(patients)))
    if n > len(patients):
        raise UserFacingError(
            f"{LABELED_ENV} asks for {n} labelled patients but the fold has only {len(patients)} training "
            f"patients. Use at most {len(patients)}."
        )
    order = np.random.default_rng(seed).permutation(len(patients))
    picked = {patients[i] for i in order[:n]}
    return [c for c in sorted(train_cases) if any(c in groups[p] for p in picked)]


def subset_from_env(train_cases: Sequence[str]) -> list[str] | None:
    """The subset the environment asks for, or ``None`` when ``SLEM_LABELED`` is unset."""
    text = os.environ.get(LABELED_ENV, "").strip()
    if not text:
        return None
    seed_text = os.environ.get(SEED_ENV, "0")
    if not seed_text.isdigit():
        raise UserFacingError(f"{SEED_ENV}={seed_text!r} must be a non-negative integer.")
    return pick_labeled_subset(train_cases, parse_labeled(text), int(seed_text), os.environ.get(PATIENT_ENV))


def check_seed_count(n_seeds: int, n_train: int, labeled: str | float, fold: int) -> None:
    """Refuse more paired seeds than the fold's ``n_train`` training cases have distinct labelled subsets: a
    repeated subset would count twice as if it were independent evidence."""
    from math import comb

    value = parse_labeled(str(labeled))
    k = int(value) if value >= 1 else max(1, round(value * n_train))
    subsets = comb(n_train, k) if k <= n_train else 0
    if n_seeds > subsets:
        raise UserFacingError(
            f"--seeds {n_seeds} asks for more paired seeds than fold {fold} has distinct labelled subsets "
            f"({subsets}: {k} of {n_train} training cases). Use at most {subsets} seeds, or more labelled cases.")
