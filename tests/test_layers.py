"""The import contract of STYLE.md §1, checked with ``ast``: imports point down, parsers stay pure."""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).parents[1]
SIDE_EFFECTS = {"asyncio", "uvloop", "socket", "ssl", "selectors", "threading", "aiosqlite", "time"}
CONTRACTS = {
    "parsers": {"gateway", "storage", "benchmarks"} | SIDE_EFFECTS,
    "storage": {"gateway", "benchmarks"},
}


def imported_modules(root: pathlib.Path, path: pathlib.Path) -> Iterator[tuple[str, int]]:
    """Every module a file imports, anywhere in it, with relative imports resolved, and its line."""
    module_parts = list(path.relative_to(root).with_suffix("").parts)
    module_parts.pop()  # a file's relative imports start from its package (an __init__ is its package)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = module_parts[: len(module_parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module, node.lineno
            for alias in node.names:  # `from . import time` or `from .. import gateway`
                yield f"{module}.{alias.name}", node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def violations(root: pathlib.Path, package: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for module, line in imported_modules(root, path):
            if module.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(found)


@pytest.mark.parametrize(("package", "forbidden"), sorted(CONTRACTS.items()))
def test_imports_point_down(package: str, forbidden: set[str]) -> None:
    assert len(list((ROOT / package).rglob("*.py"))) >= 2
    assert violations(ROOT, package, forbidden) == []


def test_checker_sees_every_form_of_import(tmp_path: pathlib.Path) -> None:
    package = tmp_path / "parsers"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text(
        "import os, asyncio.tasks\n"
        "from time import monotonic\n"
        "from ...gateway import cli\n"
        "from .. import storage\n"
        "def f():\n"
        "    import socket\n"
        "    importlib.import_module('threading')\n"
        "    return __import__('ssl')\n"
    )
    assert violations(tmp_path, "parsers", CONTRACTS["parsers"]) == [
        "parsers/sub/mod.py:1 imports asyncio.tasks",
        "parsers/sub/mod.py:2 imports time",
        "parsers/sub/mod.py:2 imports time.monotonic",
        "parsers/sub/mod.py:3 imports gateway",
        "parsers/sub/mod.py:3 imports gateway.cli",
        "parsers/sub/mod.py:6 imports socket",
        "parsers/sub/mod.py:7 imports threading",
        "parsers/sub/mod.py:8 imports ssl",
    ]
