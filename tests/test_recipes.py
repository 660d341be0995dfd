"""Fine-tuning recipes: learning-rate curves and warm-up lengths as fractions of the schedule."""

from __future__ import annotations

import pytest
import torch

from nnunet_slem.trainers.recipes import (
    NNUNET_RECIPE,
    SAWTOOTH_RECIPE,
    WARMUP_RECIPE,
    RecipeLRScheduler,
    lr_at,
    warmup_epochs,
)


def test_nnunet_recipe_is_nnunets_poly_schedule():
    for epoch in (0, 10, 500, 999):
        assert lr_at(epoch, NNUNET_RECIPE, 1000) == pytest.approx(1e-2 * (1 - epoch / 1000) ** 0.9)


def test_warmup_recipe_ramps_linearly_then_decays():
    lrs = [lr_at(e, WARMUP_RECIPE, 1000) for e in range(1000)]
    assert lrs[0] == pytest.approx(1e-3 / 50) and lrs[49] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:49], lrs[1:50]))
    assert lrs[50] == pytest.approx(1e-3) and all(b < a for a, b in zip(lrs[50:-1], lrs[51:]))
    assert lrs[-1] > 0


def test_sawtooth_warms_up_twice():
    lrs = [lr_at(e, SAWTOOTH_RECIPE, 100) for e in range(100)]
    assert SAWTOOTH_RECIPE.phases(100) == (5, 5)
    assert lrs[4] == pytest.approx(1e-3) and lrs[5] == pytest.approx(1e-3 / 5) and lrs[9] == pytest.approx(1e-3)


@pytest.mark.parametrize(("fraction", "epochs", "expected"), [(0.05, 1000, 50), (0.05, 20, 1), (0.05, 2, 1),
                                                               (0.5, 1, 0), (0.0, 100, 0)])
def test_warmup_is_a_fraction_never_the_whole_training(fraction, epochs, expected):
    assert warmup_epochs(fraction, epochs) == expected


def test_scheduler_sets_the_epochs_lr_like_nnunets():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = RecipeLRScheduler(opt, WARMUP_RECIPE, 100)
    scheduler.step(7)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(7, WARMUP_RECIPE, 100))


def test_environment_overrides_replace_single_fields_of_the_class_schedule(monkeypatch):
    from nnunet_slem.errors import UserFacingError
    from nnunet_slem.trainers.schedule import Schedule, schedule_overrides_from_env, schedule_record

    for variable in ("SLEM_EPOCHS", "SLEM_ITERS_PER_EPOCH", "SLEM_VAL_ITERS", "SLEM_SAVE_EVERY"):
        monkeypatch.delenv(variable, raising=False)
    smoke = Schedule(num_epochs=2, num_iterations_per_epoch=5, num_val_iterations_per_epoch=2)
    assert smoke.with_overrides(schedule_overrides_from_env()) == smoke
    monkeypatch.setenv("SLEM_EPOCHS", "40")
    monkeypatch.setenv("SLEM_SAVE_EVERY", " 5 ")
    overrides = schedule_overrides_from_env()
    assert overrides == {"SLEM_EPOCHS": 40, "SLEM_SAVE_EVERY": 5}
    assert smoke.with_overrides(overrides).set_fields() == {
        "num_epochs": 40, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 2, "save_every": 5}
    assert Schedule().set_fields() == {}  # nnU-Net's own values stay
    schedule = {"num_epochs": 40, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 2, "save_every": 5}
    record = schedule_record("T", schedule, overrides, WARMUP_RECIPE, 3)
    assert record["recipe"]["warmup_epochs"] == 2 and record["recipe"]["initial_lr"] == 1e-3 and record["seed"] == 3
    monkeypatch.setenv("SLEM_VAL_ITERS", "0")
    with pytest.raises(UserFacingError, match="SLEM_VAL_ITERS='0' must be a positive integer"):
        schedule_overrides_from_env()
