"""The report of ``nnunet-slem robustness``: summary per condition and region, CSV tables, Markdown, heatmap.

Kept apart from :mod:`nnunet_slem.evaluation.robustness` (which runs nnU-Net and scores every case) so the
summary and the output formats can be read, changed and tested without a model: everything here works on the
per-case rows and on a finished :class:`RobustnessResult`. Every file is written atomically, so an interrupted
run never leaves a half-written table next to complete ones. The result's types (:class:`Condition`,
:class:`RobustnessResult`) are defined here, below the module that runs nnU-Net and fills them, so imports point
one way: ``robustness`` -> ``robustness_report``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_slem.atomic import write_bytes_atomic
from nnunet_slem.evaluation.lesionwise import LesionSettings
from nnunet_slem.evaluation.overlap import Region

SUMMARY_COLUMNS = ("condition", "removed_channels", "region", "n_cases", "mean_dice", "std_dice", "dice_drop")
PER_CASE_COLUMNS = ("condition", "removed_channels", "case", "region", "dice")
#: Appended to the tables when the run computed BraTS 2023 lesion-wise Dice (``RobustnessResult.lesion``).
LESION_SUMMARY_COLUMNS = ("mean_lesion_dice", "std_lesion_dice", "lesion_dice_drop")
LESION_PER_CASE_COLUMNS = ("lesion_dice",)


@dataclass(frozen=True)
class Condition:
    """Which channels (indices into dataset.json ``channel_names``) are removed; empty = all channels."""

    name: str
    removed: tuple[int, ...]


@dataclass
class RobustnessResult:
    """Everything written to the output folder."""

    conditions: list[Condition]
    regions: list[Region]
    channel_names: list[str]
    per_case: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    out_dir: Path
    meta: dict[str, Any] = field(default_factory=dict)
    lesion: LesionSettings | None = None  # set when per_case and summary hold lesion-wise Dice


def summary_columns(result: RobustnessResult) -> tuple[str, ...]:
    """Columns of ``robustness.csv``: the lesion-wise ones only when computed, so other datasets' files keep
    exactly their former layout."""
    return SUMMARY_COLUMNS + (LESION_SUMMARY_COLUMNS if result.lesion is not None else ())


def per_case_columns(result: RobustnessResult) -> tuple[str, ...]:
    """Columns of ``robustness_per_case.csv`` (as :func:`summary_columns`)."""
    return PER_CASE_COLUMNS + (LESION_PER_CASE_COLUMNS if result.lesion is not None else ())


def summarize_robustness(
    per_case: Sequence[dict[str, Any]],
    conditions: Sequence[Condition],
    regions: Sequence[Region],
    channel_names: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per (condition, region): mean and population std of Dice, and the drop vs all channels.

    When the rows carry ``lesion_dice``, the same three numbers for it (``mean_lesion_dice``,
    ``std_lesion_dice``, ``lesion_dice_drop``).
    """
    metrics = ["dice"] + (["lesion_dice"] if per_case and "lesion_dice" in per_case[0] else [])
    by_key: dict[tuple[str, str, str], list[float]] = {}
    for row in per_case:
        for m in metrics:
            by_key.setdefault((m, row["condition"], row["region"]), []).append(float(row[m]))
    summary = []
    for region in regions:
        baseline = {m: float(np.mean(by_key[(m, conditions[0].name, region.name)])) for m in metrics}
        for cond in conditions:
            row = {
                "condition": cond.name,
                "removed_channels": ";".join(channel_names[c] for c in cond.removed),
                "region": region.name,
                "n_cases": len(by_key[("dice", cond.name, region.name)]),
            }
            for m in metrics:
                values = np.array(by_key[(m, cond.name, region.name)], dtype=float)
                mean = float(values.mean())
                row.update({f"mean_{m}": mean, f"std_{m}": float(values.std()),
                            f"{m}_drop": 0.0 if not cond.removed else baseline[m] - mean})
            summary.append(row)
    order = {c.name: i for i, c in enumerate(conditions)}
    summary.sort(key=lambda r: order[r["condition"]])  # stable: condition-major, regions in dataset order
    return summary


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([repr(float(row[c])) if isinstance(row[c], float) else row[c] for c in columns])
    return buf.getvalue()


def _no_negative_zero(value: float, digits: int) -> float:
    """``value`` rounded, with -0.0 turned into 0.0 so a table never shows "-0.000" for no change."""
    return round(value, digits) + 0.0


def _markdown_table(result: RobustnessResult, metric: str, label: str) -> list[str]:
    """Rows = conditions; per region the mean of ``metric`` ("dice" or "lesion_dice") and its drop."""
    names = [r.name for r in result.regions]
    cell = {(r["condition"], r["region"]): r for r in result.summary}
    lines = [
        "| condition | removed | " + " | ".join(f"{n} {label} | {n} drop" for n in names) + " |",
        "|---|---|" + "---:|---:|" * len(names),
    ]
    for cond in result.conditions:
        removed = ", ".join(result.channel_names[c] for c in cond.removed) or "-"
        values = " | ".join(
            f"{cell[(cond.name, n)][f'mean_{metric}']:.4f} | "
            f"{_no_negative_zero(cell[(cond.name, n)][f'{metric}_drop'], 4):+.4f}"
            for n in names
        )
        lines.append(f"| {cond.name} | {removed} | {values} |")
    return lines


def format_markdown(result: RobustnessResult) -> str:
    """A table per condition: mean Dice and drop for each region, plus the settings that produced it; with
    lesion-wise Dice a second table of the same shape, since BraTS ranks by it."""
    lines = [
        "# Missing-modality robustness",
        "",
        f"Model `{result.meta.get('model_folder', '')}`, fold {result.meta.get('fold', '')}; "
        f"{result.meta.get('n_cases', '')} cases; fill `{result.meta.get('fill', '')}` after nnU-Net's "
        f"normalisation; TTA mirroring {'on' if result.meta.get('tta_mirroring') else 'off'}.",
        "Drop = mean Dice with all channels - mean Dice of the condition (positive = worse).",
    ]
    norm = result.meta.get("normalization", {})
    if norm:
        masks = result.meta.get("use_mask_for_norm", {})
        lines.append("Normalisation: " + ", ".join(
            f"{name} {scheme}{' (in non-zero mask)' if masks.get(name) else ''}" for name, scheme in norm.items()
        ) + ".")
    lines += ["", *_markdown_table(result, "dice", "Dice")]
    if result.lesion is not None:
        lines += [
            "",
            "## Lesion-wise Dice (BraTS 2023)",
            "",
            f"Per case and region as `nnunet-slem evaluate --lesion-wise`: {result.lesion.dilation_iters} "
            f"dilation(s) merge and match lesions, reference lesions of {result.lesion.min_lesion_voxels} voxels "
            "or fewer are left out, every missed lesion and false-positive component scores 0. Drop as above.",
            "",
            *_markdown_table(result, "lesion_dice", "lesion-wise Dice"),
        ]
    return "\n".join(lines) + "\n"


def drop_matrix(result: RobustnessResult) -> np.ndarray:
    """Dice drop as (conditions, regions)."""
    cell = {(r["condition"], r["region"]): r["dice_drop"] for r in result.summary}
    return np.array([[cell[(c.name, r.name)] for r in result.regions] for c in result.conditions], dtype=float)


def plot_heatmap(result: RobustnessResult, path: Path) -> None:
    """Heatmap of (global) Dice drops: diverging colormap centred at 0 (red = worse), every cell annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    values = drop_matrix(result)
    finite = values[np.isfinite(values)]
    limit = max(float(np.abs(finite).max()) if finite.size else 0.0, 0.01)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * cols, 0.9 + 0.42 * rows), constrained_layout=True)
    image = ax.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit),
                      aspect="auto")
    for i in range(rows):
        for j in range(cols):
            v = values[i, j]
            text = "nan" if math.isnan(v) else f"{_no_negative_zero(v, 3):+.3f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(v) > 0.6 * limit else "black")
    ax.set_xticks(range(cols), [r.name for r in result.regions])
    ax.set_yticks(range(rows), [c.name for c in result.conditions])
    ax.set_xlabel("region")
    ax.set_title(f"Dice drop vs all channels (fill: {result.meta.get('fill', '?')})", fontsize=10)
    fig.colorbar(image, ax=ax, label="Dice drop (positive = worse)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def write_robustness(result: RobustnessResult) -> None:
    """``robustness.csv``, ``robustness_per_case.csv``, ``robustness.md``, ``robustness.png`` (atomic each)."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "robustness.csv", _csv_text(result.summary, summary_columns(result)).encode())
    write_bytes_atomic(out / "robustness_per_case.csv",
                       _csv_text(result.per_case, per_case_columns(result)).encode())
    write_bytes_atomic(out / "robustness.md", format_markdown(result).encode())
    plot_heatmap(result, out / "robustness.png")
