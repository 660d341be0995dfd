"""The pre-registered best-arm rule (nnunet_slem.experiments.best_arm) on constructed case records."""

from __future__ import annotations

import pytest

from nnunet_slem.evaluation.paired import CaseRecord
from nnunet_slem.experiments.best_arm import best_arm_markdown, decide_best_arm

REGIONS = ("WT", "TC", "ET")
CANDIDATES = ("slem_pool", "slem_x8", "slem_x8_pool", "mae_x8_pool", "slem_recon_x8_pool")


def _cases(method: str, seeds, dice_of) -> list[CaseRecord]:
    """Three test cases per seed, each region at ``dice_of(seed)`` plus a small per-case offset (shared by every
    method, so it cancels in the paired differences)."""
    return [CaseRecord(method, s, f"c{c}", dict.fromkeys(REGIONS, dice_of(s) + 0.01 * c), dict.fromkeys(REGIONS, 9),
                       dict.fromkeys(REGIONS, 9)) for s in seeds for c in range(3)]


def _base(seeds=range(12)) -> list[CaseRecord]:
    jitter = [0.01, -0.02, 0.015, 0.0, -0.01, 0.02, -0.015, 0.005, 0.01, -0.005, 0.0, 0.01]
    return (_cases("scratch", seeds, lambda s: 0.60)
            + _cases("slem", seeds, lambda s: 0.62 + jitter[s]))


def _sweep(gains: dict[str, float], seeds=range(6)) -> list[CaseRecord]:
    return [c for arm, g in gains.items() for c in _cases(arm, seeds, lambda s, g=g: 0.60 + g)]


def test_no_choice_until_every_candidate_has_the_selection_seeds():
    gains = dict.fromkeys(CANDIDATES, 0.01)
    cases = _base() + _sweep({k: v for k, v in gains.items() if k != "mae_x8_pool"}) \
        + _cases("mae_x8_pool", range(4), lambda s: 0.70)
    decision = decide_best_arm(cases, REGIONS, CANDIDATES)
    assert decision.best is None and decision.pending == {"mae_x8_pool": 4}
    assert decision.status == "choice pending" and not decision.adopted
    text = best_arm_markdown(decision, "K4_e60")
    assert "| mae_x8_pool | 4 of 6 seeds run |" in text and "**Choice pending:**" in text


def test_the_largest_selection_mean_is_chosen_and_confirmation_is_asked_for():
    gains = {"slem_pool": 0.00, "slem_x8": 0.03, "slem_x8_pool": -0.05, "mae_x8_pool": 0.01,
             "slem_recon_x8_pool": 0.03}  # a tie goes to the first candidate
    # seeds 6-11 of a candidate must not enter the choice: slem_recon_x8_pool would win on them
    cases = _base() + _sweep(gains) + _cases("slem_recon_x8_pool", range(6, 12), lambda s: 0.90)
    decision = decide_best_arm(cases, REGIONS, CANDIDATES)
    assert decision.best == "slem_x8" and decision.selection["slem_x8"] == pytest.approx(0.03)
    assert decision.status == "confirmation pending" and decision.confirmation_seeds == 0
    assert decision.vs_slem.n_seeds == 6 and decision.vs_scratch.mean_diff == pytest.approx(0.03)
    text = best_arm_markdown(decision, "K4_e60")
    assert "| slem_x8 (chosen) | +3.00 |" in text
    assert "`run --methods slem_x8 --first-seed 6 --seeds 6 --pretrain-seeds 3`" in text
    pooled = decide_best_arm(_base() + _sweep({**gains, "slem_x8_pool": 0.08}), REGIONS, CANDIDATES)
    assert "`run --methods slem_x8_pool --unlabeled --first-seed 6" in best_arm_markdown(pooled, "K4_e60")


def test_adopted_only_when_the_12_seed_interval_and_the_unseen_half_are_both_positive():
    gains = {"slem_pool": 0.00, "slem_x8": 0.0, "slem_x8_pool": 0.0, "mae_x8_pool": 0.0, "slem_recon_x8_pool": 0.1}
    clear = _base() + _sweep(gains) + _cases("slem_recon_x8_pool", range(6, 12), lambda s: 0.70)
    decision = decide_best_arm(clear, REGIONS, CANDIDATES)
    assert decision.status == "adopted" and decision.adopted
    assert decision.vs_slem.n_seeds == 12 and decision.vs_slem.ci_low > 0 and decision.confirmation_mean > 0
    assert "**Adopted:**" in best_arm_markdown(decision, "K4_e60")
    # the same large seeds 0-5, but the half the choice never saw is slightly worse than slem: the 12-seed interval
    # still excludes 0, the second condition refuses
    biased = _base() + _sweep(gains) + _cases("slem_recon_x8_pool", range(6, 12), lambda s: 0.615)
    decision = decide_best_arm(biased, REGIONS, CANDIDATES)
    assert decision.vs_slem.ci_low > 0 and decision.confirmation_mean < 0
    assert decision.status == "not adopted" and not decision.adopted
    assert "**Not adopted:**" in best_arm_markdown(decision, "K4_e60")
