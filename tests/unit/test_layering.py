"""Imports flow one way: gammabt -> feeds/strategies -> indicators -> plumbing (on the AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"gammabt", "feeds", "indicators", "strategies", "plumbing"}
ALLOWED = {
    "gammabt": {"gammabt", "feeds", "strategies", "indicators", "plumbing"},
    "feeds": {"feeds", "indicators", "plumbing"},
    "strategies": {"strategies", "indicators", "plumbing"},
    "indicators": {"indicators", "plumbing"},
    "plumbing": {"plumbing"},
}

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


FILES = sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_downward(path):
    package = path.relative_to(ROOT).parts[0]
    for name in _imports(path):
        top = name.split(".")[0]
        if top in OURS:
            assert top in ALLOWED[package], f"{path.name}: {package} must not import {name}"
        if package == "indicators" and path.name != "bt.py":
            assert top != "backtrader", f"{path.name}: only indicators/bt.py may import backtrader"
