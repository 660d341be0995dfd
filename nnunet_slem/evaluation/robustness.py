"""Missing-modality robustness of a trained nnU-Net model: Dice per region with channels removed.

A multi-modal model may lean on one sequence; this measures how much. Every case is predicted with all
channels, then with each channel (and, optionally, each pair of channels) removed, and the Dice drop per region
is reported relative to all channels.

How nnU-Net is reused
---------------------
Each case goes through nnU-Net's own inference path, split where the channels must be replaced:

1. ``configuration_manager.preprocessor_class().run_case(files, None, ...)``: the plans' image reader
   (``image_reader_writer`` in plans.json), transpose, crop to non-zero, **normalisation**, resampling;
   exactly what ``nnUNetPredictor``'s data iterators call. Done once per case and cached on disk.
2. :func:`remove_channels` on the preprocessed array: removal happens **after** normalisation.
3. ``nnUNetPredictor.predict_logits_from_preprocessed_data``: sliding window, Gaussian weighting, TTA
   mirroring (unless disabled), all folds' parameters; the model comes from
   ``initialize_from_trained_model_folder``.
4. ``convert_predicted_logits_to_segmentation_with_correct_shape``: back to the original image grid (the
   function ``nnUNetv2_predict`` exports with), so Dice is measured against the reference as given.

Why not ``predict_from_list_of_npy_arrays``: it normalises inside worker processes and has no hook between
normalisation and the network, and it would re-preprocess every case once per condition.

Fill conventions
----------------
* ``zero`` (default): the channel is set to 0 everywhere. After nnU-Net's z-score normalisation
  (``ZScoreNormalization``, the default for MR; ``CTNormalization`` is a z-score with dataset statistics)
  0 is the channel's mean intensity, so the network sees a flat, average image: "no information", not an
  outlier. For other schemes (``RescaleTo01Normalization``, ``NoNormalization``...) 0 is not the mean; the
  scheme of each channel is written to the report and a warning is printed.
* ``noise``: standard normal noise (mean 0, std 1 = the normalised channel's own statistics), placed where
  nnU-Net normalised the channel: inside the non-zero mask when the plans normalise within it
  (``use_mask_for_norm``, e.g. skull-stripped BraTS), else everywhere; outside that mask the channel stays
  0, as nnU-Net leaves it. The noise is reproducible (``seed``, case name and channel index), and a channel
  gets the same noise in every condition that removes it.

Dice per case and region follows :mod:`nnunet_slem.evaluation.metrics` (regions from dataset.json, both empty =
1, ignore label left out). The **drop** of a condition is ``mean Dice(all channels) - mean Dice(condition)``
over the same cases: positive = worse without those channels, 0 for the all-channels row by construction.

On BraTS-region datasets (regions WT, TC and ET, see ``lesionwise.has_brats_regions``) the same is reported
for BraTS 2023 lesion-wise Dice (:mod:`nnunet_slem.evaluation.lesionwise`), since global Dice hides a model that
loses the small lesions when a sequence is missing; ``lesion_wise`` turns it on or off for any dataset. The
report (CSV, Markdown, heatmap) is written by :mod:`nnunet_slem.evaluation.robustness_report`, which also defines
the result's types (:class:`Condition`, :class:`RobustnessResult`; importable from here too).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnunet_slem.errors import UserFacingError
from nnunet_slem.evaluation.lesionwise import LesionSettings, has_brats_regions, lesion_dice_per_region
from nnunet_slem.evaluation.overlap import dice_per_region, regions_from_labels
from nnunet_slem.evaluation.robustness_report import (
    Condition,
    RobustnessResult,
    summarize_robustness,
    write_robustness,
)

if TYPE_CHECKING:  # torch and nnU-Net are imported where needed, so this module's helpers import fast
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

FILLS = ("zero", "noise")
ALL_CHANNELS = "all channels"
#: Normalisation schemes after which 0 is the channel's mean intensity (the premise of ``fill="zero"``).
ZERO_MEAN_SCHEMES = ("ZScoreNormalization", "CTNormalization")


# ------------------------------------------------------------------------------------------ conditions


def make_conditions(channel_names: Sequence[str], pairs: bool = False) -> list[Condition]:
    """All channels, each channel removed, and with ``pairs`` each unordered pair removed (in index order)."""
    n = len(channel_names)
    if n < 2:
        raise UserFacingError(
            f"the model has {n} input channel(s); removing one leaves nothing to measure. "
            "Robustness needs a multi-modal dataset (two or more channel_names)."
        )
    conditions = [Condition(ALL_CHANNELS, ())]
    conditions += [Condition(f"no {channel_names[c]}", (c,)) for c in range(n)]
    if pairs:
        conditions += [
            Condition(f"no {channel_names[a]}+{channel_names[b]}", (a, b))
            for a, b in itertools.combinations(range(n), 2)
        ]
    return conditions


def noise_rng(seed: int, case: str, channel: int) -> np.random.Generator:
    """Generator for one case and channel: the same noise whichever condition removes that channel."""
    return np.random.default_rng([seed, zlib.crc32(case.encode("utf-8")), channel])


def remove_channels(
    data: np.ndarray,
    removed: Sequence[int],
    fill: str = "zero",
    nonzero_mask: np.ndarray | None = None,
    use_mask_for_norm: Sequence[bool] | None = None,
    rngs: dict[int, np.random.Generator] | None = None,
) -> np.ndarray:
    """A copy of normalised ``data`` (C, *spatial) with the ``removed`` channels replaced; others untouched.

    ``fill="zero"`` writes 0 (the mean after z-score normalisation). ``fill="noise"`` writes N(0, 1) where the
    channel was normalised: inside ``nonzero_mask`` (spatial shape, True = inside) if ``use_mask_for_norm[c]``,
    else everywhere; 0 elsewhere. ``rngs`` maps a channel to its generator (default: a fresh unseeded one).
    """
    if fill not in FILLS:
        raise UserFacingError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")
    out = np.array(data, dtype=np.float32, copy=True)
    for c in removed:
        if not 0 <= c < out.shape[0]:
            raise ValueError(f"channel {c} out of range for data with {out.shape[0]} channels")
        if fill == "zero":
            out[c] = 0.0
            continue
        rng = (rngs or {}).get(c) or np.random.default_rng()
        noise = rng.standard_normal(out.shape[1:], dtype=np.float32)
        if use_mask_for_norm is not None and use_mask_for_norm[c]:
            if nonzero_mask is None:
                raise ValueError("fill='noise' with use_mask_for_norm needs the nonzero mask")
            noise[~nonzero_mask] = 0.0
        out[c] = noise
    return out


# --------------------------------------------------------------------------------------------- inputs


def list_image_cases(images_dir: Path, file_ending: str, channel_names: Sequence[str]) -> dict[str, list[Path]]:
    """``case -> [CASE_0000<ending>, ...]`` for an nnU-Net images folder; every case needs every channel."""
    if not images_dir.is_dir():
        raise UserFacingError(f"images folder {images_dir} does not exist")
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        m = pattern.match(p.name)
        if p.is_file() and m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = p
    n = len(channel_names)
    expected = ", ".join(f"_{c:04d} ({name})" for c, name in enumerate(channel_names))
    if not found:
        raise UserFacingError(
            f"no images named CASE_XXXX{file_ending} in {images_dir}; nnU-Net expects one file per channel: "
            f"{expected}. Point -i at an imagesTr/imagesTs-like folder."
        )
    problems = []
    for case, channels in found.items():
        missing = [c for c in range(n) if c not in channels]
        extra = sorted(c for c in channels if c >= n)
        if missing:
            problems.append(f"{case} lacks " + ", ".join(f"_{c:04d} ({channel_names[c]})" for c in missing))
        if extra:
            problems.append(f"{case} has extra channel(s) " + ", ".join(f"_{c:04d}" for c in extra))
    if problems:
        shown = "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise UserFacingError(
            f"images in {images_dir} do not have the model's {n} channels ({expected}): {shown}. "
            "Give every case all channels, in dataset.json's channel_names order."
        )
    return {case: [channels[c] for c in range(n)] for case, channels in found.items()}


def match_references(cases: Sequence[str], labels_dir: Path, file_ending: str) -> dict[str, Path]:
    """``case -> labels_dir/CASE<ending>``; every image case needs its reference."""
    if not labels_dir.is_dir():
        raise UserFacingError(f"reference folder {labels_dir} does not exist")
    refs = {case: labels_dir / f"{case}{file_ending}" for case in cases}
    missing = [case for case, p in refs.items() if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:30]) + (" ..." if len(missing) > 30 else "")
        raise UserFacingError(
            f"{len(missing)} of {len(refs)} image cases have no reference CASE{file_ending} in {labels_dir}: "
            f"{shown}. Add them, or point -i at a folder holding only the labelled cases."
        )
    return refs


# ----------------------------------------------------------------------------------------------- model


def training_command(model_folder: Path, fold: str | int) -> str:
    """The nnUNetv2_train line that creates ``model_folder/fold_<fold>`` (from the folder's name)."""
    parts = model_folder.name.split("__")
    if len(parts) != 3:
        return f"nnUNetv2_train DATASET CONFIGURATION {fold} -tr TRAINER -p PLANS"
    trainer, plans, configuration = parts
    return f"nnUNetv2_train {model_folder.parent.name} {configuration} {fold} -tr {trainer} -p {plans}"


def check_model_folder(model_folder: Path, fold: str | int, checkpoint_name: str = "checkpoint_final.pth") -> Path:
    """The checkpoint file of ``fold``, or an error that names what is missing and how to make it."""
    if not model_folder.is_dir():
        siblings = sorted(p.name for p in model_folder.parent.iterdir() if p.is_dir()) \
            if model_folder.parent.is_dir() else []
        hint = f" Trained models of this dataset: {', '.join(siblings)}." if siblings else ""
        raise UserFacingError(
            f"no trained model folder {model_folder}. Train it first: {training_command(model_folder, fold)} "
            f"(or check -d, -c, -tr and -p).{hint}"
        )
    for name in ("plans.json", "dataset.json"):
        if not (model_folder / name).is_file():
            raise UserFacingError(
                f"{model_folder / name} is missing; {model_folder} is not a complete nnU-Net training output "
                f"folder. Rerun {training_command(model_folder, fold)}."
            )
    checkpoint = model_folder / f"fold_{fold}" / checkpoint_name
    if not checkpoint.is_file():
        have = sorted(p.parent.name for p in model_folder.glob(f"fold_*/{checkpoint_name}"))
        which = f"folds with {checkpoint_name}: {', '.join(have)}" if have else f"no fold has {checkpoint_name} yet"
        raise UserFacingError(
            f"{checkpoint} does not exist ({which}). Train the fold with {training_command(model_folder, fold)}, "
            "let it finish (checkpoint_final.pth is written at the end), or choose another -f / -chk."
        )
    return checkpoint


def make_predictor(
    model_folder: Path,
    fold: str | int,
    device: str = "cuda",
    use_mirroring: bool = True,
    checkpoint_name: str = "checkpoint_final.pth",
) -> nnUNetPredictor:
    """nnU-Net's predictor for one fold, initialised as ``nnUNetv2_predict`` does (defaults: step 0.5, Gaussian)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    check_model_folder(model_folder, fold, checkpoint_name)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("-device cuda, but CUDA is not available on this machine; use -device cpu")
    torch_device = torch.device(device)
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=use_mirroring,
        perform_everything_on_device=torch_device.type == "cuda",
        device=torch_device,
        verbose=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(model_folder), (fold if fold == "all" else int(fold),), checkpoint_name
    )
    if predictor.configuration_manager.previous_stage_name is not None:
        raise UserFacingError(
            f"{model_folder.name} is a cascade stage (needs the previous stage's segmentation as input); "
            "robustness supports single-stage configurations such as 3d_fullres or 2d."
        )
    return predictor


def preprocess_case(predictor: nnUNetPredictor, files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, dict]:
    """nnU-Net's preprocessing of one case: (normalised data (C, ...), nonzero mask, properties for export)."""
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case(
        [str(f) for f in files], None, predictor.plans_manager, predictor.configuration_manager,
        predictor.dataset_json,
    )
    # without a label file, run_case's seg is crop_to_nonzero's map: -1 outside the non-zero region
    return np.ascontiguousarray(data, dtype=np.float32), seg[0] >= 0, properties


def predict_segmentation(predictor: nnUNetPredictor, data: np.ndarray, properties: dict) -> np.ndarray:
    """Segmentation on the original image grid (reader axis order), exactly as nnUNetv2_predict exports it."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    tensor = torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format)
    logits = predictor.predict_logits_from_preprocessed_data(tensor).cpu()
    return np.asarray(convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager, properties,
        return_probabilities=False, num_threads_torch=torch.get_num_threads(),
    ))


# ------------------------------------------------------------------------------------------------ run


def run_robustness(
    model_folder: str | os.PathLike,
    fold: str | int,
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    device: str = "cuda",
    pairs: bool = False,
    fill: str = "zero",
    use_mirroring: bool = True,
    checkpoint_name: str = "checkpoint_final.pth",
    seed: int = 0,
    cases: Sequence[str] | None = None,
    save_predictions: bool = False,
    progress: bool = True,
    lesion_wise: bool | None = None,
    lesion_settings: LesionSettings | None = None,
) -> RobustnessResult:
    """Predict every case under every condition, write the report to ``out_dir`` and return it.

    ``out_dir`` defaults to ``model_folder/fold_<fold>/robustness``. ``cases`` restricts the run to those case
    names (all cases in ``images_dir`` otherwise). With ``save_predictions`` the segmentations of every
    condition are exported to ``out_dir/predictions/<condition>/`` (usable by ``nnunet-slem figure``).
    ``lesion_wise`` adds BraTS 2023 lesion-wise Dice with ``lesion_settings`` (default: BraTS glioma's); None =
    on exactly for datasets with the regions WT, TC and ET.
    """
    from tqdm import tqdm

    if fill not in FILLS:
        raise UserFacingError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")
    if seed < 0:
        raise UserFacingError(f"--seed {seed}: use a non-negative integer")
    model_folder = Path(model_folder)
    check_model_folder(model_folder, fold, checkpoint_name)
    dataset_json = json.loads((model_folder / "dataset.json").read_text(encoding="utf-8"))
    channel_names = [dataset_json["channel_names"][k] for k in sorted(dataset_json["channel_names"], key=int)]
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    conditions = make_conditions(channel_names, pairs)
    regions, ignore_label = regions_from_labels(dataset_json["labels"])
    if lesion_wise is None:
        lesion_wise = has_brats_regions(regions)
    lesion = (lesion_settings or LesionSettings()) if lesion_wise else None

    image_cases = list_image_cases(Path(images_dir), file_ending, channel_names)
    if cases is not None:
        unknown = [c for c in cases if c not in image_cases]
        if unknown:
            raise UserFacingError(f"cases not in {images_dir}: {', '.join(unknown)}")
        image_cases = {c: image_cases[c] for c in cases}
    refs = match_references(list(image_cases), Path(labels_dir), file_ending)

    predictor = make_predictor(model_folder, fold, device, use_mirroring, checkpoint_name)
    out = Path(out_dir) if out_dir is not None else model_folder / f"fold_{fold}" / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    schemes = list(predictor.configuration_manager.normalization_schemes)
    use_mask_for_norm = [bool(v) for v in predictor.configuration_manager.use_mask_for_norm]
    if fill == "zero":
        odd = [f"{channel_names[c]} ({s})" for c, s in enumerate(schemes) if s not in ZERO_MEAN_SCHEMES]
        if odd:
            warnings.warn(
                f"fill 'zero' assumes z-score normalisation (0 = mean intensity), but these channels use "
                f"another scheme, so 0 is not their mean: {', '.join(odd)}.",
                stacklevel=2,
            )
    reader = predictor.plans_manager.image_reader_writer_class()

    per_case: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=".robustness-cache-", dir=out) as cache_dir:
        cache = Path(cache_dir)
        properties: dict[str, dict] = {}
        ref_spacing: dict[str, list[float]] = {}  # per array axis (nnU-Net readers' order), for lesion HD95s
        for i, (case, files) in enumerate(tqdm(list(image_cases.items()), desc="preprocessing",
                                               disable=not progress)):
            data, mask, properties[case] = preprocess_case(predictor, files)
            ref, ref_properties = reader.read_seg(str(refs[case]))
            ref_spacing[case] = [float(s) for s in ref_properties["spacing"]]
            np.save(cache / f"{i}_data.npy", data)
            np.save(cache / f"{i}_mask.npy", mask)
            np.save(cache / f"{i}_ref.npy", np.asarray(ref[0]))

        bar = tqdm(conditions, desc="conditions", disable=not progress)
        for cond in bar:
            bar.set_postfix_str(cond.name)
            for i, case in enumerate(image_cases):
                data = np.load(cache / f"{i}_data.npy")
                if cond.removed:
                    rngs = {c: noise_rng(seed, case, c) for c in cond.removed}
                    mask = np.load(cache / f"{i}_mask.npy") if fill == "noise" else None
                    data = remove_channels(data, cond.removed, fill, mask, use_mask_for_norm, rngs)
                seg = predict_segmentation(predictor, data, properties[case])
                ref = np.load(cache / f"{i}_ref.npy")
                if ref.shape != seg.shape:
                    raise UserFacingError(
                        f"case {case}: reference {refs[case]} has shape {ref.shape} but the images give "
                        f"{seg.shape}; the reference must be on the images' grid."
                    )
                if save_predictions:
                    pred_dir = out / "predictions" / _folder_name(cond)
                    pred_dir.mkdir(parents=True, exist_ok=True)
                    reader.write_seg(seg, str(pred_dir / f"{case}{file_ending}"), properties[case])
                removed = ";".join(channel_names[c] for c in cond.removed)
                scores = {"dice": dice_per_region(ref, seg, regions, ignore_label)}
                if lesion is not None:
                    scores["lesion_dice"] = lesion_dice_per_region(ref, seg, regions, ignore_label,
                                                                   ref_spacing[case], lesion)
                for k, region in enumerate(regions):
                    per_case.append({"condition": cond.name, "removed_channels": removed, "case": case,
                                     "region": region.name, **{m: v[k] for m, v in scores.items()}})

    summary = summarize_robustness(per_case, conditions, regions, channel_names)
    meta = {
        "model_folder": str(model_folder.resolve()),
        "fold": str(fold),
        "checkpoint": checkpoint_name,
        "images": str(Path(images_dir).resolve()),
        "references": str(Path(labels_dir).resolve()),
        "n_cases": len(image_cases),
        "fill": fill,
        "seed": seed,
        "tta_mirroring": use_mirroring,
        "normalization": {name: s for name, s in zip(channel_names, schemes)},
        "use_mask_for_norm": {name: m for name, m in zip(channel_names, use_mask_for_norm)},
    }
    result = RobustnessResult(conditions, regions, channel_names, per_case, summary, out, meta, lesion)
    write_robustness(result)
    return result


def _folder_name(cond: Condition) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", cond.name)
