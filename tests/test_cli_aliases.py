"""nnU-Net's flag spellings as aliases (``pretrain --c``, ``compare --disable_tta``): both spellings parse to the
same setting, and ``--help`` shows one spelling per concept (nnU-Net's)."""

from __future__ import annotations

import argparse

import pytest

from nnunet_slem.commands import compare, pretrain


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=module.__name__)
    module.add_arguments(parser)
    return parser


@pytest.mark.parametrize(("extra", "resume"), [([], False), (["--c"], True), (["--resume"], True)])
def test_pretrain_continues_with_c_or_resume(extra: list[str], resume: bool) -> None:
    args = _parser(pretrain).parse_args(["-d", "1", "-c", "3d_fullres", *extra])
    assert args.resume is resume and args.compile is False  # --c is not an abbreviation of --compile


def test_pretrain_help_shows_c_only() -> None:
    text = _parser(pretrain).format_help()
    assert "--c " in text and "checkpoint_latest.pth" in text and "--resume" not in text
    assert _parser(pretrain).parse_args(["-d", "1", "-c", "x", "--compile"]).compile is True


@pytest.mark.parametrize(("extra", "tta"), [([], True), (["--disable_tta"], False), (["--no-tta"], False)])
def test_compare_disables_tta_with_either_spelling(extra: list[str], tta: bool) -> None:
    assert _parser(compare).parse_args(["-d", "1", "-c", "3d_fullres", "-f", "0", *extra]).tta is tta


def test_compare_help_shows_disable_tta_only() -> None:
    text = _parser(compare).format_help()
    assert "--disable_tta" in text and "--no-tta" not in text
