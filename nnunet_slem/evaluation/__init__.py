"""Evaluation of predicted segmentations (``nnunet-slem evaluate``); conventions in ``metrics``."""

from nnunet_slem.evaluation.lesionwise import LesionScores, LesionSettings, lesion_wise_case
from nnunet_slem.evaluation.metrics import (
    DEFAULT_ONE_EMPTY_HD95,
    CaseMetrics,
    MetricOptions,
    Region,
    dice,
    evaluate_case,
    evaluate_folders,
    hd95_mm,
    image_diagonal_mm,
    regions_from_labels,
    summarize,
    write_outputs,
)

__all__ = [
    "DEFAULT_ONE_EMPTY_HD95",
    "CaseMetrics",
    "LesionScores",
    "LesionSettings",
    "MetricOptions",
    "Region",
    "dice",
    "evaluate_case",
    "evaluate_folders",
    "hd95_mm",
    "image_diagonal_mm",
    "lesion_wise_case",
    "regions_from_labels",
    "summarize",
    "write_outputs",
]
