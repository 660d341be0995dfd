"""The package's import graph points one way, and its modules stay small.

Every module of ``nnunet_slem`` is parsed with :mod:`ast` (nothing is imported); every ``import x`` and
``from x import y`` counts, at module level or inside a function (a lazy import is still a dependency), with
relative imports resolved against the importing module. The rules (docs/architecture.md says the same in prose):

1. Layers, highest first: ``commands`` (with ``cli.py`` and ``__main__.py``, the entry points) -> ``experiments``
   -> ``trainers`` -> ``pretrain`` -> ``pretext`` -> ``network``. A module may import its own layer and the
   layers below it, never one above.
2. No library module imports the entry points: outside ``commands/``, ``cli.py`` and ``__main__.py`` nothing
   imports ``nnunet_slem.commands``, ``nnunet_slem.cli`` or ``nnunet_slem.__main__``; and nothing imports
   ``nnunet_slem.ext_trainers`` (nnU-Net's shim, found by nnU-Net through ``nnUNet_extTrainer`` only).
3. Side libraries (``evaluation``, ``data``, ``convert``) sit below ``experiments`` beside the training stack:
   they import none of ``commands``, ``experiments``, ``trainers``, ``pretrain``. They may use ``pretext`` and
   ``network``, each other, and the leaf modules.
4. Leaf modules (``atomic``, ``errors``, ``paths``, ``checkpoint_format``, the ``validation`` package and the
   package's ``__init__``, which holds only the version) import no other part of ``nnunet_slem`` than leaf modules.

``ext_trainers`` itself is nnU-Net's entry point into the trainers: it may import anything rule 1 allows the
``experiments`` layer (in practice only ``nnunet_slem.trainers``).

A second test keeps every module at :data:`MAX_MODULE_LINES` lines or fewer, and a third finds import cycles
between modules (the same imports, lazy and ``TYPE_CHECKING`` ones included): within a layer, too, modules
import one way, shared primitives at the bottom and composers on top, so a reader can tell which module is the
foundation.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "nnunet_slem"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
MAX_MODULE_LINES = 450

#: Rule 1, lowest first: a module in layer i may import layers 0..i.
LAYERS = ("network", "pretext", "pretrain", "trainers", "experiments", "commands")
ENTRY_POINTS = ("commands", "cli", "__main__")  # all of the top layer
SIDE_LIBRARIES = ("evaluation", "data", "convert")
LEAVES = ("atomic", "errors", "paths", "checkpoint_format", "validation", "")  # "" = the package's __init__
FORBIDDEN_FOR_SIDE_LIBRARIES = ("commands", "experiments", "trainers", "pretrain")


@dataclass(frozen=True)
class Import:
    line: int
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted, resolved to a module of the package where it names one
    text: str  # the statement as written


def module_name(path: Path, package_dir: Path, package: str) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _resolve(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    """The absolute module a ``from`` import reads from (``from ..x import y`` inside ``pkg.a.b`` -> ``pkg.x``)."""
    if node.level == 0:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, package_dir: Path, package: str) -> list[Import]:
    """Every import of the package made by the module at ``path``, at any depth of its syntax tree."""
    source = module_name(path, package_dir, package)
    code = path.read_text(encoding="utf-8")
    tree = ast.parse(code, filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, source, path.name == "__init__.py")
            # ``from pkg.sub import mod`` imports pkg.sub.mod when that is a module, else a name of pkg.sub
            targets = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}", package_dir, package) else base
                       for alias in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):  # once per module, however many names come from it
            if target == package or target.startswith(package + "."):
                text = " ".join((ast.get_source_segment(code, node) or ast.dump(node)).split())
                found.append(Import(node.lineno, source, target, text))
    return found


def _is_module(dotted: str, package_dir: Path, package: str) -> bool:
    parts = dotted.split(".")
    if parts[0] != package:
        return False
    rel = Path(*parts[1:]) if len(parts) > 1 else Path()
    return (package_dir / rel).with_suffix(".py").is_file() or (package_dir / rel / "__init__.py").is_file()


def part_of(dotted: str, package: str) -> str:
    """``nnunet_slem.pretrain.data`` -> ``pretrain``; ``nnunet_slem.paths`` -> ``paths``; the root -> ``""``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def violation(imp: Import, package: str) -> str | None:
    """Why ``imp`` breaks a rule of the module docstring, or ``None``."""
    source, target = part_of(imp.source, package), part_of(imp.target, package)
    if target == "ext_trainers" and source != "ext_trainers":
        return "imports nnU-Net's trainer shim ext_trainers (rule 2)"
    if target in ENTRY_POINTS and source not in ENTRY_POINTS:
        return f"library module imports the entry point {target} (rule 2)"
    if source in LEAVES and target not in LEAVES:
        return f"leaf module imports {target} (rule 4: leaves import only leaves)"
    if source in SIDE_LIBRARIES and target in FORBIDDEN_FOR_SIDE_LIBRARIES:
        return f"side library {source} imports {target} (rule 3)"
    source_rank = LAYERS.index("experiments") if source == "ext_trainers" else _rank(source)
    target_rank = _rank(target)
    if source_rank is not None and target_rank is not None and target_rank > source_rank:
        return f"upward import: {source} (layer {source_rank}) imports {target} (layer {target_rank}) (rule 1)"
    return None


def _rank(part: str) -> int | None:
    if part in ENTRY_POINTS:
        return LAYERS.index("commands")
    return LAYERS.index(part) if part in LAYERS else None


def find_violations(package_dir: Path, package: str = PACKAGE) -> list[str]:
    """``file:line: statement -- reason`` for every import of the package that breaks a rule."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        for imp in imports_of(path, package_dir, package):
            reason = violation(imp, package)
            if reason:
                where = path.relative_to(package_dir.parent)
                problems.append(f"{where}:{imp.line}: {imp.text} -- {reason}")
    return problems


def import_graph(package_dir: Path, package: str = PACKAGE) -> dict[str, dict[str, Import]]:
    """``module -> {imported module -> the first import of it}`` over the package's own modules (self-imports,
    such as a package ``__init__`` reading its own names, are left out)."""
    graph: dict[str, dict[str, Import]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        source = module_name(path, package_dir, package)
        edges = graph.setdefault(source, {})
        for imp in imports_of(path, package_dir, package):
            if imp.target != source and _is_module(imp.target, package_dir, package):
                edges.setdefault(imp.target, imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _cycle_through(graph: dict[str, dict[str, Import]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it, staying inside the component."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt in members and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")  # pragma: no cover


def find_cycles(package_dir: Path, package: str = PACKAGE) -> list[str]:
    """One line per group of modules that import each other: a cycle through them, each step with the file,
    line and statement that makes it."""
    graph = import_graph(package_dir, package)
    problems = []
    for component in _strongly_connected(graph):
        cycle = _cycle_through(graph, component)
        steps = []
        for source, target in zip(cycle, cycle[1:]):
            imp = graph[source][target]
            steps.append(f"{source} -> {target} ({imp.text}, line {imp.line})")
        problems.append(f"cycle among {', '.join(component)}: " + "; ".join(steps))
    return problems


def long_modules(package_dir: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    counts = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in sorted(package_dir.rglob("*.py"))}
    return [f"{path.relative_to(package_dir.parent)}: {n} lines" for path, n in counts.items() if n > limit]


# ------------------------------------------------------------------------------------------------ the package


def test_imports_point_downward():
    problems = find_violations(PACKAGE_DIR)
    assert not problems, "imports against the package's layering:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = find_cycles(PACKAGE_DIR)
    assert not cycles, "modules that import each other (move what they share to a lower module):\n" + "\n".join(cycles)


def test_every_module_is_small():
    too_long = long_modules(PACKAGE_DIR)
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them):\n" + "\n".join(too_long)


# ------------------------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / "pkg"
    for name, text in files.items():
        path = package_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in [package_dir, *(p for p in package_dir.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return package_dir


def test_checker_accepts_downward_imports(tmp_path):
    package_dir = _write(tmp_path, {
        "commands/run.py": "from pkg.experiments import demo\nimport pkg.trainers.t\n",
        "experiments/demo.py": "from ..trainers.t import T\nfrom pkg.evaluation import metrics\n",
        "trainers/t.py": "from pkg.checkpoint_format import load\nfrom pkg.pretrain import loop\nT = 1\n",
        "pretrain/loop.py": "from . import data\nfrom pkg.pretext.p import P\n",
        "pretrain/data.py": "",
        "pretext/p.py": "from pkg.network.n import N\nP = 1\n",
        "network/n.py": "import torch\nfrom pkg.errors import E\nN = 1\n",
        "evaluation/metrics.py": "from pkg.network.n import N\nfrom pkg.data import synth\n",
        "data/synth.py": "from pkg.paths import raw\n",
        "checkpoint_format.py": "from pkg.atomic import write\nfrom pkg.errors import E\n",
        "errors.py": "E = 1\n", "atomic.py": "", "paths.py": "from pkg import errors\n",
        "cli.py": "import importlib\nfrom pkg.errors import E\n",
        "ext_trainers/shim.py": "from pkg.trainers import *\n",
    })
    assert find_violations(package_dir, "pkg") == []


#: one empty module in every part of the synthetic package, so that every import below names a real module
_EVERY_PART = ("commands/run.py", "cli.py", "experiments/demo.py", "trainers/t.py", "pretrain/loop.py",
               "pretext/p.py", "network/n.py", "evaluation/metrics.py", "data/synth.py", "convert/c.py",
               "ext_trainers/shim.py", "checkpoint_format.py", "paths.py", "errors.py", "atomic.py")


@pytest.mark.parametrize("name,text,reason", [
    ("trainers/t.py", "from pkg.experiments.demo import x\n", "upward import: trainers (layer 3) imports experiments"),
    ("network/n.py", "def f():\n    from ..pretext import p\n", "upward import: network (layer 0) imports pretext"),
    ("pretrain/loop.py", "import pkg.trainers.t as t\n", "upward import: pretrain (layer 2) imports trainers"),
    ("pretext/__init__.py", "from ..pretrain import loop\n", "upward import: pretext (layer 1) imports pretrain"),
    ("experiments/demo.py", "from pkg.commands.run import helper\n", "imports the entry point commands"),
    ("evaluation/metrics.py", "from pkg import cli\n", "imports the entry point cli"),
    ("data/synth.py", "from pkg.pretrain.loop import x\n", "side library data imports pretrain"),
    ("convert/c.py", "from ..trainers import t\n", "side library convert imports trainers"),
    ("checkpoint_format.py", "from pkg.network.n import N\n", "leaf module imports network"),
    ("paths.py", "from . import evaluation\n", "leaf module imports evaluation"),
    ("pretext/p.py", "from pkg.ext_trainers import shim\n", "imports nnU-Net's trainer shim"),
])
def test_checker_names_file_line_and_import(tmp_path, name, text, reason):
    package_dir = _write(tmp_path, {**dict.fromkeys(_EVERY_PART, ""), name: text})
    problems = find_violations(package_dir, "pkg")
    assert len(problems) == 1, problems
    line = 2 if text.startswith("def ") else 1
    statement = " ".join(text.strip().splitlines()[line - 1].split())
    assert problems[0].startswith(f"pkg/{name}:{line}: {statement} -- ")
    assert reason in problems[0]


def test_checker_reports_a_constructed_cycle(tmp_path):
    """a -> b -> c -> a (one import lazy, one under TYPE_CHECKING) is one cycle; d, importing into it, is not."""
    package_dir = _write(tmp_path, {
        "evaluation/a.py": "from pkg.evaluation.b import x\n",
        "evaluation/b.py": "def f():\n    from . import c\n",
        "evaluation/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n",
        "evaluation/d.py": "from pkg.evaluation import a\n",
        "evaluation/__init__.py": "from .d import z\n",
    })
    assert find_violations(package_dir, "pkg") == []  # the layering allows all of it; only the cycle is wrong
    (cycle,) = find_cycles(package_dir, "pkg")
    assert cycle.startswith("cycle among pkg.evaluation.a, pkg.evaluation.b, pkg.evaluation.c: ")
    assert "pkg.evaluation.a -> pkg.evaluation.b (from pkg.evaluation.b import x, line 1)" in cycle
    assert "pkg.evaluation.b -> pkg.evaluation.c (from . import c, line 2)" in cycle
    assert "pkg.evaluation.c -> pkg.evaluation.a (from .a import y, line 3)" in cycle
    (package_dir / "evaluation" / "c.py").write_text("", encoding="utf-8")
    assert find_cycles(package_dir, "pkg") == []


def test_checker_reports_a_two_module_cycle(tmp_path):
    package_dir = _write(tmp_path, {"trainers/base.py": "def f():\n    import pkg.trainers.variants\n",
                                    "trainers/variants.py": "from pkg.trainers.base import Base\n"})
    assert find_cycles(package_dir, "pkg") == [
        "cycle among pkg.trainers.base, pkg.trainers.variants: "
        "pkg.trainers.base -> pkg.trainers.variants (import pkg.trainers.variants, line 2); "
        "pkg.trainers.variants -> pkg.trainers.base (from pkg.trainers.base import Base, line 1)"
    ]


def test_checker_counts_long_modules(tmp_path):
    package_dir = _write(tmp_path, {"ok.py": "x = 1\n" * 450, "long.py": "x = 1\n" * 451})
    assert long_modules(package_dir) == ["pkg/long.py: 451 lines"]
