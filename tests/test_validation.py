"""Unit tests of ``nnunet_slem.validation``: the checkpoint digest, output places and number checks, without the
nnU-Net project fixture (the end-to-end cases are tests/test_fuzz_inputs.py)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from nnunet_slem.checkpoint_format import FORMAT_VERSION, load_checkpoint, save_atomic, save_checkpoint_file
from nnunet_slem.errors import UserFacingError
from nnunet_slem.validation import checkpoint as checkpoint_validation
from nnunet_slem.validation.numbers import check_number
from nnunet_slem.validation.places import check_output_dir, check_output_file


def _checkpoint() -> dict:
    return {"network_weights": {"b.w": torch.arange(6.0).reshape(2, 3), "a.w": torch.ones(4)},
            "head_weights": {"fc.weight": torch.zeros(2, 2)}, "epoch": 1, "logging": {"loss": [0.5]},
            "optimizer_state": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]},
            "metadata": {"format_version": FORMAT_VERSION, "pretext": {"config": {}}, "settings": {"epochs": 2}}}


def test_digest_survives_save_and_load_and_catches_any_changed_value(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint_file(_checkpoint(), path)
    ckpt = load_checkpoint(path)  # verifies
    assert len(ckpt["metadata"]["sha256"]) == 64
    for edit in (lambda c: c["network_weights"]["a.w"].__setitem__(2, 1.0000001),
                 lambda c: c["optimizer_state"]["state"][0].__setitem__("step", torch.tensor(4.0)),
                 lambda c: c["logging"]["loss"].append(0.4),
                 lambda c: c["metadata"].__setitem__("pretext", {"config": {"grid": [2, 2, 1]}})):
        changed = load_checkpoint(path)
        edit(changed)
        save_atomic(changed, tmp_path / "x.pth")  # written without a new digest: the old one no longer fits
        with pytest.raises(UserFacingError, match=r"x\.pth fails its integrity check"):
            load_checkpoint(tmp_path / "x.pth")


def test_checkpoint_without_digest_loads_with_one_warning(tmp_path):
    path = tmp_path / "old.pth"
    save_atomic(_checkpoint(), path)
    checkpoint_validation._warned_without_digest.discard(str(path))
    with pytest.warns(UserWarning, match=r"old\.pth has no sha256 digest"):
        load_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(path)  # once per file and process


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.__setitem__("metadata", "text"), "'metadata' of type a string, not a dict"),
    (lambda c: c.__setitem__("epoch", -1), "'epoch' = an integer \\(-1\\)"),
    (lambda c: c.__setitem__("epoch", 3), "'epoch' = 3, beyond the 2 epochs"),
    (lambda c: c["network_weights"]["a.w"].__setitem__(0, float("nan")), "NaN or Inf values in tensor 'a.w'"),
    (lambda c: c["metadata"].__setitem__("patch_size", "64"), "metadata field 'patch_size'"),
])
def test_fields_of_the_wrong_type_are_named(tmp_path, edit, message):
    ckpt = _checkpoint()
    edit(ckpt)
    path = tmp_path / "c.pth"
    if isinstance(ckpt["metadata"], dict):
        save_checkpoint_file(ckpt, path)
    else:
        torch.save(ckpt, path)
    with pytest.raises(UserFacingError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_checkpoint_that_is_a_folder_or_a_loop_is_named(tmp_path):
    (tmp_path / "dir.pth").mkdir()
    os.symlink("loop.pth", tmp_path / "loop.pth")
    with pytest.raises(UserFacingError, match="dir.pth is a directory"):
        load_checkpoint(tmp_path / "dir.pth")
    with pytest.raises(UserFacingError, match="loop.pth is a symbolic link that leads nowhere"):
        load_checkpoint(tmp_path / "loop.pth")


def test_output_places(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserFacingError, match=r"its parent .*file exists as a file"):
        check_output_dir(tmp_path / "file" / "sub", "output folder")
    with pytest.raises(UserFacingError, match="exists as a folder"):
        check_output_file(tmp_path, "table")
    with pytest.raises(UserFacingError, match="its folder .*absent does not exist"):
        check_output_file(tmp_path / "absent" / "t.csv", "table")
    assert check_output_file(tmp_path / "absent" / "t.csv", "table", create_parents=True).name == "t.csv"
    assert check_output_dir(tmp_path / "new" / "deeper", "output folder") == tmp_path / "new" / "deeper"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserFacingError, match="read-only"):
            check_output_file(folder / "t.csv", "table")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("value,kwargs,message", [
    (float("nan"), {}, "must be a finite number"), (float("inf"), {"positive": True}, "must be a finite number"),
    (-1.0, {"positive": True}, "must be greater than 0"), (-1, {"integer": True, "minimum": 0}, "must be at least 0"),
    (1.5, {"integer": True}, "must be an integer"), (True, {"integer": True}, "must be an integer"),
])
def test_numbers_are_finite_and_in_range(value, kwargs, message):
    with pytest.raises(UserFacingError, match=f"--flag {message}"):
        check_number(value, "--flag", **kwargs)
    check_number(1, "--flag", **kwargs)  # a sane value passes
