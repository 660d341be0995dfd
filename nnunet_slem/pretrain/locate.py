"""Find a dataset's preprocessed data, plans and configuration the way nnU-Net does, with clear errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.files import brief, read_json
from nnunet_slem.validation.nnunet_json import check_configuration, check_dataset_json, check_plans


@dataclass
class PreprocessedDataset:
    dataset_name: str
    preprocessed_base: Path  # $nnUNet_preprocessed/DatasetXXX_Name
    plans: dict
    dataset_json: dict
    data_folder: Path  # .../<data_identifier>


def dataset_name_from_id(dataset: str | int, preprocessed_root: Path) -> str:
    """``501``, ``"501"`` or ``"Dataset501_X"`` -> ``"Dataset501_X"``, looked up in ``preprocessed_root``.

    Not nnU-Net's ``maybe_convert_to_dataset_name``: that one reads only the environment (and also searches
    nnUNet_raw and nnUNet_results), while pretraining may be pointed at another preprocessed folder
    (``SLeMPretrainer(preprocessed_root=...)``), where only the data it will actually read counts."""
    text = str(dataset)
    if text.startswith("Dataset"):
        return text
    try:
        number = int(text)
    except ValueError as e:
        raise UserFacingError(f"-d {text!r} is neither a dataset id nor a DatasetXXX_Name.") from e
    matches = sorted(p.name for p in preprocessed_root.glob(f"Dataset{number:03d}_*") if p.is_dir())
    if not matches:
        raise UserFacingError(
            f"No preprocessed dataset with id {number} in {preprocessed_root}. Run "
            f"`nnUNetv2_plan_and_preprocess -d {number}` first."
        )
    if len(matches) > 1:
        raise UserFacingError(f"Several datasets with id {number} in {preprocessed_root}: {matches}. Pass the name.")
    return matches[0]


def dataset_id_of(dataset_name: str) -> int | str:
    """``"Dataset501_X"`` -> ``501`` (nnU-Net's preprocessing commands take the number, not the name);
    a name that does not follow nnU-Net's pattern comes back unchanged."""
    number = dataset_name[len("Dataset"):].split("_", 1)[0]
    return int(number) if dataset_name.startswith("Dataset") and number.isdigit() else dataset_name


def locate_preprocessed(dataset: str | int, configuration: str, plans_name: str = "nnUNetPlans",
                        preprocessed_root: str | os.PathLike | None = None) -> PreprocessedDataset:
    root = preprocessed_root or os.environ.get("nnUNet_preprocessed")
    if not root:
        raise UserFacingError("nnUNet_preprocessed is not set. export nnUNet_preprocessed=/path/to/preprocessed")
    root = Path(root)
    name = dataset_name_from_id(dataset, root)
    base = root / name
    plans_file = base / f"{plans_name}.json"
    if not os.path.lexists(plans_file):
        available = sorted(p.stem for p in base.glob("*.json")
                           if p.stem not in ("dataset", "dataset_fingerprint", "splits_final"))
        raise UserFacingError(
            f"Plans {plans_name!r} not found in {base} (available: {available or 'none'}). Pass -p with one of "
            f"them, or run `nnUNetv2_plan_and_preprocess -d {dataset_id_of(name)}`."
        )
    replan = (f"Restore it, or write it again with `nnUNetv2_plan_and_preprocess -d {dataset_id_of(name)}` (for "
              "custom plans: the planner or script that made them).")
    plans = check_plans(read_json(plans_file, "The plans file", replan), plans_file, replan)
    configurations = plans["configurations"]
    if configuration not in configurations:
        raise UserFacingError(
            f"Configuration {configuration!r} is not in plans {plans_name!r} (available: "
            f"{sorted(configurations)}). Pass -c with one of them."
        )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        resolved = PlansManager(plans).get_configuration(configuration).configuration
    except (ValueError, RuntimeError, KeyError, TypeError) as e:  # e.g. a loop or a gap in inherits_from
        raise UserFacingError(f"{plans_file}: configuration {configuration!r} cannot be resolved ({brief(e)}). "
                              f"{replan}") from e
    check_configuration(resolved, configuration, plans_file, replan)
    data_folder = base / resolved["data_identifier"]
    if not data_folder.is_dir() or not any(data_folder.iterdir()):
        raise UserFacingError(
            f"Configuration {configuration!r} of {name} is planned but not preprocessed ({data_folder} is missing "
            f"or empty). Run `nnUNetv2_preprocess -d {dataset_id_of(name)} -c {configuration} -plans_name "
            f"{plans_name}`."
        )
    dataset_json_file = base / "dataset.json"
    restore = (f"Restore it from $nnUNet_raw/{name}/dataset.json (nnUNetv2_plan_and_preprocess copies it here); if "
               "the channels changed, preprocess again.")
    dataset_json = check_dataset_json(read_json(dataset_json_file, "The dataset.json", restore), dataset_json_file,
                                      restore)
    return PreprocessedDataset(name, base, plans, dataset_json, data_folder)
