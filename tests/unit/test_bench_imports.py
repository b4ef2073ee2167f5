"""The benchmarks in bench/ are never run by the suite (they are not timed tests), so a
refactor that moves a name they import from ``limen`` broke them silently (bench_ha.py's
``pinned_proxy`` once). Every ``from limen... import name`` in bench/, including the ones
inside functions, must name something that exists."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _limen_imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            and node.module.split(".")[0] == "limen" for alias in node.names]


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_every_name_a_benchmark_imports_from_limen_exists(path: Path) -> None:
    missing = []
    for module, name in _limen_imports(path):
        imported = importlib.import_module(module)
        if not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert missing == [], f"{path.name} imports what limen no longer has"


def test_the_benchmarks_are_found() -> None:
    assert len(list(BENCH.glob("bench_*.py"))) >= 5
