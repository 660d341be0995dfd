"""The pre-registered choice of the pretraining-at-scale sweep's best arm and the test that could make it
``SLeMTrainer``'s default (docs/baselines.md, "Choosing the best arm", fixed before most arms had run).

1. **Choice:** among the sweep's arms (:data:`nnunet_slem.experiments.methods.SCALE_METHODS`), the one with the
   largest mean difference to scratch on the final-Dice endpoint (mean of the regions, held-out test cases) over
   the selection seeds 0-5. No arm is chosen until every candidate has all six.
2. **Confirmation:** the chosen arm is fine-tuned at seeds 6-11 too. It replaces ``slem`` only if, over the 12
   paired seeds, ``arm − slem`` has a 95 % paired t-interval above 0 **and** its mean over seeds 6-11 alone is
   positive: seeds 0-5 chose the arm among several, so their half is biased in its favour; seeds 6-11 are the
   half the choice never saw.

Writing the rule as code keeps the report from applying it by hand, and makes "pending" a state the report can
print rather than a decision someone might take early.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnunet_slem.evaluation.paired import (
    CaseRecord,
    PairedDifference,
    dice_points,
    paired_differences,
    seed_differences,
)
from nnunet_slem.experiments.methods import SCALE_METHODS

#: the seeds whose results choose the arm, and the seeds the choice never saw
SELECTION_SEEDS: tuple[int, ...] = tuple(range(6))
CONFIRMATION_SEEDS: tuple[int, ...] = tuple(range(6, 12))


@dataclass(frozen=True)
class BestArmDecision:
    """Where the rule stands: the candidates' selection means, the chosen arm and its confirmation figures (in
    Dice fractions; ``None`` until they exist)."""

    selection: dict[str, float]  # candidate -> mean Δ vs scratch over SELECTION_SEEDS (complete candidates only)
    pending: dict[str, int]  # candidate -> how many SELECTION_SEEDS it has, when not all of them
    best: str | None = None
    confirmation_seeds: int = 0  # how many CONFIRMATION_SEEDS the best arm (and slem) have
    vs_slem: PairedDifference | None = None  # best − slem over every seed both have
    confirmation_mean: float | None = None  # mean of best − slem over the CONFIRMATION_SEEDS alone
    vs_scratch: PairedDifference | None = None  # best − scratch over every seed both have
    per_seed_vs_slem: dict[int, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``choice pending``, ``confirmation pending``, ``adopted`` or ``not adopted``."""
        if self.best is None:
            return "choice pending"
        if self.confirmation_seeds < len(CONFIRMATION_SEEDS) or self.vs_slem is None:
            return "confirmation pending"
        return "adopted" if self.adopted else "not adopted"

    @property
    def adopted(self) -> bool:
        """Both conditions of the rule hold (false while anything is pending)."""
        return (self.vs_slem is not None and self.confirmation_seeds == len(CONFIRMATION_SEEDS)
                and bool(self.vs_slem.ci_low > 0) and self.confirmation_mean is not None
                and self.confirmation_mean > 0)


def _mean_row(diffs: Iterable[PairedDifference], method: str) -> PairedDifference | None:
    return next((d for d in diffs if d.method == method and d.region == "mean" and d.n_seeds > 0), None)


def decide_best_arm(cases: Sequence[CaseRecord], regions: Sequence[str],
                    candidates: Iterable[str] = tuple(SCALE_METHODS)) -> BestArmDecision:
    """Apply the rule to the case records of the final-Dice comparison (``K4_e60``). Ties in the selection mean go
    to the first candidate in ``candidates``' order."""
    candidates = list(candidates)
    selection, pending = {}, {}
    for arm in candidates:
        per_seed = {s: v for s, v in seed_differences(cases, arm, "scratch", regions).items()
                    if s in SELECTION_SEEDS}
        if len(per_seed) == len(SELECTION_SEEDS):
            selection[arm] = float(np.mean(list(per_seed.values())))
        else:
            pending[arm] = len(per_seed)
    if pending or not selection:
        return BestArmDecision(selection, pending)
    best = max(candidates, key=lambda arm: (selection[arm], -candidates.index(arm)))
    mine = [c for c in cases if c.method in {best, "slem", "scratch"}]
    has_slem = any(c.method == "slem" for c in mine)
    per_seed = seed_differences(mine, best, "slem", regions) if has_slem else {}
    confirming = [v for s, v in per_seed.items() if s in CONFIRMATION_SEEDS]
    return BestArmDecision(
        selection, pending, best, len(confirming),
        _mean_row(paired_differences(mine, "slem", regions), best) if has_slem else None,
        float(np.mean(confirming)) if confirming else None,
        _mean_row(paired_differences(mine, "scratch", regions), best), per_seed)


def _points(v: float | None) -> str:
    """:func:`dice_points`, with ``?`` for a figure that does not exist yet (or is undefined)."""
    return "?" if v is None or math.isnan(v) else dice_points(v)


def _ci(d: PairedDifference) -> str:
    return f"{_points(d.mean_diff)} [{_points(d.ci_low)}, {_points(d.ci_high)}] (p {d.p_value:.3g})"


def best_arm_markdown(decision: BestArmDecision, comparison: str) -> str:
    """The rule's state as a report section: the selection means, the chosen arm, its confirmation figures and the
    verdict, with what is still to run."""
    lines = [f"## Best arm of the sweep ({comparison})", "",
             "Rule fixed in docs/baselines.md before most arms ran: the largest mean Δ vs scratch over seeds "
             f"{SELECTION_SEEDS[0]}-{SELECTION_SEEDS[-1]} chooses; it replaces `slem` only if, at 12 paired seeds, "
             "arm − slem has a 95 % paired t-interval above 0 and a positive mean over seeds "
             f"{CONFIRMATION_SEEDS[0]}-{CONFIRMATION_SEEDS[-1]} alone. Dice points, mean of the regions.", "",
             "| candidate | mean Δ vs scratch, seeds 0-5 |", "|---|---|"]
    for arm, mean in sorted(decision.selection.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {arm}{' (chosen)' if arm == decision.best else ''} | {_points(mean)} |")
    lines += [f"| {arm} | {n} of {len(SELECTION_SEEDS)} seeds run |" for arm, n in decision.pending.items()]
    lines.append("")
    if decision.best is None:
        lines.append("**Choice pending:** every candidate needs seeds 0-5 first.")
        return "\n".join(lines) + "\n"
    d = decision
    if d.vs_slem is not None:
        lines.append(f"- {d.best} − slem over {d.vs_slem.n_seeds} paired seeds, {d.vs_slem.n_cases} cases: "
                     f"{_ci(d.vs_slem)}; per seed "
                     + ", ".join(f"{s}: {100 * v:+.1f}" for s, v in d.per_seed_vs_slem.items()) + ".")
    lines.append(f"- Mean of {d.best} − slem over seeds {CONFIRMATION_SEEDS[0]}-{CONFIRMATION_SEEDS[-1]} alone: "
                 f"{_points(d.confirmation_mean)} ({d.confirmation_seeds} of {len(CONFIRMATION_SEEDS)} seeds).")
    if d.vs_scratch is not None:
        lines.append(f"- {d.best} − scratch over {d.vs_scratch.n_seeds} paired seeds, {d.vs_scratch.n_cases} cases: "
                     f"{_ci(d.vs_scratch)}.")
    pool = " --unlabeled" if d.best in SCALE_METHODS and SCALE_METHODS[d.best].pool else ""
    verdict = {
        "confirmation pending": f"**Confirmation pending:** run `{d.best}` at seeds "
                                f"{CONFIRMATION_SEEDS[0]}-{CONFIRMATION_SEEDS[-1]} "
                                f"(`run --methods {d.best}{pool} --first-seed {CONFIRMATION_SEEDS[0]} --seeds "
                                f"{len(CONFIRMATION_SEEDS)} --pretrain-seeds 3`).",
        "adopted": f"**Adopted:** `{d.best}` is better than `slem` by the rule and becomes `SLeMTrainer`'s "
                   "default pretraining.",
        "not adopted": f"**Not adopted:** `{d.best}` is not established as better than `slem`; the paper's "
                       "pretext stays `SLeMTrainer`'s default.",
    }[d.status]
    return "\n".join([*lines, "", verdict]) + "\n"
