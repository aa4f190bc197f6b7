"""The tests' own layout: folders that mirror the package (modulation/, models/, cli/, data/,
invariants/, and benchmarks/ for the scripts of benchmarks/), shared code in helpers/, and no test
module importing another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_module_imports_another():
    offenders = {
        str(path.relative_to(TESTS)): sorted(m for m in _imported_modules(path) if m.split(".")[-1].startswith("test_"))
        for path in TESTS.rglob("*.py")
    }
    assert {p: m for p, m in offenders.items() if m} == {}


def test_helpers_hold_no_tests_and_every_test_file_has_a_unique_name():
    assert not list((TESTS / "helpers").glob("test_*.py"))
    names = [path.name for path in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names))  # pytest's rootdir-relative imports need unique basenames
    assert {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))} >= {
        "modulation", "models", "cli", "data", "invariants", "benchmarks", "helpers",
    }  # fmt: skip
