"""nnU-Net's ``dataset.json`` and plans, checked field by field before anything is built from them.

nnU-Net reads these files trusting their types: ``channel_names`` as a list, ``patch_size`` as a string or an
unknown network class end in a ``TypeError``/``AttributeError`` far from the file, and a plans' ``batch_size`` 0,
NaN spacing or an unknown normalisation scheme are used as they are. Each check here names the file, the field
(as a JSON path) and the fix.
"""

from __future__ import annotations

import pydoc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation.files import is_finite_number, is_int, type_name


def _fail(path: Path, field: str, value: Any, must: str, fix: str) -> UserFacingError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return UserFacingError(f"{path}: {field} is {type_name(value)} {shown}; it must be {must}. {fix}")


def _require(obj: dict, key: str, path: Path, where: str, fix: str) -> Any:
    if key not in obj:
        raise UserFacingError(f"{path}: {where}{key!r} is missing. {fix}")
    return obj[key]


def _check(ok: bool, path: Path, field: str, value: Any, must: str, fix: str) -> None:
    if not ok:
        raise _fail(path, field, value, must, fix)


def _int_list(value: Any, length: int | None = None) -> bool:
    return (isinstance(value, (list, tuple)) and (length is None or len(value) == length) and len(value) > 0
            and all(is_int(v) and v > 0 for v in value))


def check_dataset_json(meta: Any, path: Path, fix: str) -> dict:
    """nnU-Net's dataset.json fields that pretraining and fine-tuning read: ``channel_names`` (or the legacy
    ``modality``) as ``{"0": name, ...}``, ``labels`` as ``{name: int or [ints]}``, ``file_ending`` a string."""
    _check(isinstance(meta, dict), path, "the file", meta, "a JSON object", fix)
    key = "channel_names" if "channel_names" in meta or "modality" not in meta else "modality"
    channels = _require(meta, key, path, "", fix)
    _check(isinstance(channels, dict) and len(channels) > 0, path, key, channels,
           'an object like {"0": "T1", "1": "T2"}', fix)
    indices = sorted(channels)
    _check(all(isinstance(k, str) and k.isdigit() for k in indices)
           and sorted(int(k) for k in indices) == list(range(len(channels))), path, f"{key} (its keys)",
           list(channels), 'the channel indices "0", "1", ... without gaps', fix)
    for k, name in channels.items():
        _check(isinstance(name, str), path, f"{key}[{k!r}]", name, "a string (the channel's name)", fix)
    labels = _require(meta, "labels", path, "", fix)
    _check(isinstance(labels, dict) and len(labels) > 0, path, "labels", labels,
           'an object like {"background": 0, "tumour": 1}', fix)
    for name, value in labels.items():
        ok = is_int(value) or (isinstance(value, (list, tuple)) and len(value) > 0 and all(is_int(v) for v in value))
        _check(ok, path, f"labels[{name!r}]", value, "an integer label value or a list of them (a region)", fix)
    ending = _require(meta, "file_ending", path, "", fix)
    _check(isinstance(ending, str) and ending.startswith("."), path, "file_ending", ending,
           'a file ending such as ".nii.gz"', fix)
    return meta


def known_normalization(name: str) -> bool:
    """Whether nnU-Net's preprocessor finds a normalisation class of this name (as it looks it up)."""
    import nnunetv2
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as defaults

    if isinstance(getattr(defaults, name, None), type):
        return True
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    folder = str(Path(nnunetv2.__path__[0]) / "preprocessing" / "normalization")
    try:
        return recursive_find_python_class(folder, name, "nnunetv2.preprocessing.normalization") is not None
    except Exception:  # nnU-Net raises when nothing matches
        return False


def check_plans(plans: Any, path: Path, fix: str) -> dict:
    """The top level of an nnU-Net plans file: an object with ``configurations`` (an object of objects)."""
    _check(isinstance(plans, dict), path, "the file", plans, "a JSON object (nnU-Net plans)", fix)
    configurations = _require(plans, "configurations", path, "", fix)
    _check(isinstance(configurations, dict), path, "configurations", configurations,
           "an object of configurations", fix)
    for name, entry in configurations.items():
        _check(isinstance(entry, dict), path, f"configurations[{name!r}]", entry, "an object", fix)
    for key in ("dataset_name", "plans_name"):
        if key in plans:
            _check(isinstance(plans[key], str), path, key, plans[key], "a string", fix)
    return plans


def check_configuration(config: Any, name: str, path: Path, fix: str) -> None:
    """A configuration after nnU-Net resolved its ``inherits_from``: the fields pretraining and fine-tuning use."""
    where = f"configurations[{name!r}]"
    fields: list[tuple[str, Callable[[Any], bool], str]] = [
        ("data_identifier", lambda v: isinstance(v, str) and bool(v), "a folder name"),
        ("patch_size", lambda v: _int_list(v) and len(v) in (2, 3), "a list of 2 or 3 positive integers"),
        ("spacing", lambda v: isinstance(v, (list, tuple)) and len(v) in (2, 3)
         and all(is_finite_number(s) and s > 0 for s in v), "a list of 2 or 3 finite positive numbers (mm)"),
        ("batch_size", lambda v: is_int(v) and v > 0, "a positive integer"),
        ("normalization_schemes", lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(s, str) for s in v),
         "a list of nnU-Net normalisation class names, one per channel"),
        ("architecture", lambda v: isinstance(v, dict), "an object with network_class_name and arch_kwargs"),
    ]
    for key, ok, must in fields:
        value = _require(config, key, path, f"{where}: ", fix)
        _check(ok(value), path, f"{where}.{key}", value, must, fix)
    if len(config["spacing"]) != len(config["patch_size"]):
        raise _fail(path, f"{where}.spacing", config["spacing"],
                    f"as long as patch_size {config['patch_size']}", fix)
    for i, scheme in enumerate(config["normalization_schemes"]):
        if not known_normalization(scheme):
            raise _fail(path, f"{where}.normalization_schemes[{i}]", scheme,
                        "one of nnU-Net's normalisation schemes (e.g. ZScoreNormalization, CTNormalization, "
                        "NoNormalization)", fix)
    arch = config["architecture"]
    cls = _require(arch, "network_class_name", path, f"{where}.architecture: ", fix)
    _check(isinstance(cls, str) and pydoc.locate(cls) is not None, path, f"{where}.architecture.network_class_name",
           cls, "an importable network class such as dynamic_network_architectures.architectures.unet.PlainConvUNet",
           fix)
    kwargs = _require(arch, "arch_kwargs", path, f"{where}.architecture: ", fix)
    _check(isinstance(kwargs, dict), path, f"{where}.architecture.arch_kwargs", kwargs, "an object", fix)
    stages = kwargs.get("n_stages")
    if stages is not None:
        _check(is_int(stages) and stages > 0, path, f"{where}.architecture.arch_kwargs.n_stages", stages,
               "a positive integer", fix)
        dims = len(config["patch_size"])
        for key in ("features_per_stage", "kernel_sizes", "strides"):
            if key not in kwargs:
                continue
            value = kwargs[key]
            per_stage = (lambda v: _int_list([v])) if key == "features_per_stage" else (lambda v: _int_list(v, dims))
            ok = isinstance(value, list) and len(value) == stages and all(per_stage(v) for v in value)
            each = "a positive integer" if key == "features_per_stage" else f"{dims} positive integers"
            _check(ok, path, f"{where}.architecture.arch_kwargs.{key}", value,
                   f"a list of {stages} entries (n_stages), each {each}", fix)
