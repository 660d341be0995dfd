"""The demo's shortcut lines (``shortcut_summary``): every audit group named with its figure, the probes'
verdict beside them, and what a high seam or texture figure means; formatting only, no demo run."""

from __future__ import annotations

from nnunet_slem.experiments.demo_pipeline import shortcut_summary

AUDIT = {"accuracy": 0.993, "chance": 1 / 24, "group_accuracies": {"histogram": 0.041, "seam": 0.987,
                                                                   "texture": 0.423}, "unconverged": []}
PROBES = {"plain": 0.31, "seam_zeroed": 0.29, "cross_case": 0.30, "background_noise": None, "chance": 1 / 24,
          "n": 64, "band": 4, "seed": 0, "findings": []}


def test_each_audit_group_is_named_with_its_own_figure() -> None:
    audit_line, probe_line, meaning = shortcut_summary(AUDIT, PROBES)
    assert "histogram 0.041, seam 0.987, texture 0.423, all groups 0.993" in audit_line
    assert "chance 0.042" in audit_line and "histogram classifier" not in audit_line
    assert "plain 0.310, seams zeroed 0.290, cross-case blocks 0.300, background noise n/a" in probe_line
    assert "Verdict: no shortcut found" in probe_line
    assert meaning.startswith("A high seam or texture figure means")
    assert "does not rely on them" in meaning and "costs 7%" in meaning  # (0.31 - 0.29) / (0.31 - 1/24)


def test_a_seam_shortcut_is_the_verdict_when_zeroing_seams_costs_the_accuracy() -> None:
    _, probe_line, meaning = shortcut_summary(AUDIT, {**PROBES, "seam_zeroed": 0.05})
    assert "Verdict: seam_zeroed drops 0.310 -> 0.050: the network reads continuity across seams" in probe_line
    assert "does read the seams" in meaning and "seam_band" in meaning


def test_missing_probes_audit_or_groups_say_so() -> None:
    audit_line, probe_line, meaning = shortcut_summary({"accuracy": 0.5, "chance": 0.25}, None)
    assert "histogram n/a, seam n/a, texture n/a, all groups 0.500" in audit_line
    assert probe_line.startswith("Probes: not run") and "Verdict" not in probe_line
    assert shortcut_summary({}, None)[0] == "Shortcut audit: not run (--audit-samples 0)."
    assert "Not converged: seam." in shortcut_summary({**AUDIT, "unconverged": ["seam"]}, PROBES)[0]
