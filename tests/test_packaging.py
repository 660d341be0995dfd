"""pyproject.toml declares what the code needs: every third-party package the code imports (optional ones in
an extra), with lower bounds the code supports."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _requirements(extra: str | None = None) -> dict[str, Requirement]:
    project = _project()
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {_name(r.name): r for r in map(Requirement, lines)}


def _imported_top_level_modules() -> set[str]:
    """Absolute imports anywhere in the package (lazy ones inside functions included)."""
    found = set()
    for path in (ROOT / "nnunet_slem").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"nnunet_slem"}


def test_every_imported_package_is_declared() -> None:
    declared = set(_requirements()) | set(_requirements("realistic"))
    dists = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        names = {_name(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not in pyproject.toml: {missing}"


def test_torch_lower_bound_has_the_amp_grad_scaler() -> None:
    spec = _requirements()["torch"].specifier
    assert Version("2.2.2") not in spec and Version("2.3.0") in spec  # torch.amp.GradScaler("cuda") is 2.3+


def test_dynamic_network_architectures_has_nnunets_bound() -> None:
    spec = _requirements()["dynamic-network-architectures"].specifier
    assert Version("0.4.4") in spec and Version("0.5") not in spec and Version("0.4.3") not in spec


def test_ruff_is_a_dev_tool_not_a_test_requirement() -> None:
    assert "ruff" in _requirements("dev") and "ruff" not in _requirements("test")
    assert "'.[dev]'" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
