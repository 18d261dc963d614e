"""The library is Prefect-free: nothing under pipeline/ imports prefect or flows, directly or through
another module, so it runs in any worker, notebook or other orchestrator."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("prefect", "flows")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_library_module_imports_the_orchestration() -> None:
    offenders = {str(path.relative_to(REPO)): sorted(_imported_roots(path) & set(FORBIDDEN))
                 for path in sorted((REPO / "pipeline").rglob("*.py"))}
    assert {path: roots for path, roots in offenders.items() if roots} == {}


def test_importing_every_library_module_loads_no_orchestration() -> None:
    modules = [".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
               for path in sorted((REPO / "pipeline").rglob("*.py"))]
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n    importlib.import_module(name)\n"
              f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    loaded = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
