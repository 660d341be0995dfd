"""The training schedule of every nnunet-slem trainer: epochs, iterations, validation iterations, checkpoints.

One mechanism sets it, in one order:

1. nnU-Net's own values (1000 epochs x 250 iterations, 50 validation iterations, ``checkpoint_latest.pth``
   every 50 epochs);
2. the trainer class's :class:`Schedule` (class attribute ``schedule``; ``None`` fields keep nnU-Net's), e.g.
   ``SLeMTrainer_smoke``'s 2 x 5 with 2 validation iterations;
3. the environment, for one run: ``SLEM_EPOCHS``, ``SLEM_ITERS_PER_EPOCH``, ``SLEM_VAL_ITERS`` and
   ``SLEM_SAVE_EVERY`` override single fields, so every method of a comparison (or the demo) trains on one
   schedule whatever its class says.

``SLeMTrainer.__init__`` applies 2 and 3; at the start of training the trainer logs the effective schedule and
writes it, with the fine-tuning recipe and the seed, to ``schedule.json`` in the fold folder
(:func:`schedule_record`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from nnunet_slem.errors import UserFacingError
from nnunet_slem.trainers.recipes import Recipe

#: environment variable -> the nnU-Net trainer attribute (and :class:`Schedule` field) it overrides
SCHEDULE_ENV = {"SLEM_EPOCHS": "num_epochs", "SLEM_ITERS_PER_EPOCH": "num_iterations_per_epoch",
                "SLEM_VAL_ITERS": "num_val_iterations_per_epoch", "SLEM_SAVE_EVERY": "save_every"}
#: the file in the fold folder that records the effective schedule
SCHEDULE_FILE = "schedule.json"


@dataclass(frozen=True)
class Schedule:
    """A trainer class's schedule defaults; every field has the meaning of nnU-Net's trainer attribute of the
    same name, and ``None`` keeps nnU-Net's value."""

    num_epochs: int | None = None
    num_iterations_per_epoch: int | None = None
    num_val_iterations_per_epoch: int | None = None
    #: epochs between two writes of ``checkpoint_latest.pth``
    save_every: int | None = None

    def with_overrides(self, overrides: dict[str, int]) -> Schedule:
        """This schedule with the environment's values (``variable -> value``) in place of the class's."""
        return replace(self, **{SCHEDULE_ENV[variable]: value for variable, value in overrides.items()})

    def set_fields(self) -> dict[str, int]:
        """``attribute -> value`` for the fields that replace nnU-Net's values."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def schedule_overrides_from_env() -> dict[str, int]:
    """``variable -> value`` for every schedule variable set in the environment; an error names a bad value."""
    overrides = {}
    for variable in SCHEDULE_ENV:
        text = os.environ.get(variable, "").strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise UserFacingError(f"{variable}={text!r} must be a positive integer (or unset).")
        overrides[variable] = int(text)
    return overrides


def describe_schedule(schedule: dict[str, int]) -> str:
    """One log line for the effective ``attribute -> value`` schedule."""
    return (f"{schedule['num_epochs']} epochs x {schedule['num_iterations_per_epoch']} iterations, "
            f"{schedule['num_val_iterations_per_epoch']} validation iterations per epoch, "
            f"checkpoint_latest.pth every {schedule['save_every']} epochs")


def schedule_record(trainer: str, schedule: dict[str, int], overrides: dict[str, int], recipe: Recipe,
                    seed: int | None) -> dict:
    """What ``schedule.json`` holds: the effective schedule, where it came from, the recipe and the seed."""
    decoder_warmup, warmup = recipe.phases(schedule["num_epochs"])
    return {
        "trainer": trainer,
        **schedule,
        "from_environment": overrides,
        "recipe": {**asdict(recipe), "decoder_warmup_epochs": decoder_warmup, "warmup_epochs": warmup,
                   "description": recipe.describe(schedule["num_epochs"])},
        "seed": seed,
    }
