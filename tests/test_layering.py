"""The direction of dependency: reference math → backends → public API; the reference needs no torch."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "crossent"


def _crossent_imports(path: pathlib.Path) -> set[str]:
    """Absolute module names of every crossent import in a file (relative imports resolved)."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("crossent"):
                if node.module:  # "from crossent.x import y": the module x; "from .. import y": only y
                    out.add(name)
                else:
                    out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("crossent"))
    return out


def test_reference_imports_only_itself_and_the_contract():
    # the oracle never calls a kernel: no crossent._native, no backend, no torch API
    allowed_prefixes = ("crossent.numpy", "crossent._contract")
    for path in (SRC / "_native").rglob("*.py"):
        for name in _crossent_imports(path):
            assert name.startswith(("crossent._native", "crossent._contract")), f"{path.name} imports {name}"
    for path in (SRC / "numpy").rglob("*.py"):
        for name in _crossent_imports(path):
            assert name.startswith(allowed_prefixes), f"{path.name} imports {name}"


def test_backends_do_not_import_the_api_cli_or_bench():
    forbidden = (
        "crossent.functional",
        "crossent.nn",
        "crossent.cli",
        "crossent.bench",
        "crossent.diagnostics",
    )
    for path in (SRC / "_backends").rglob("*.py"):
        for name in _crossent_imports(path):
            assert not name.startswith(forbidden), f"{path} imports {name}"


def test_numpy_reference_imports_without_torch():
    code = "import sys, crossent.numpy as cn, numpy as np; cn.cross_entropy(np.zeros((2, 3)), np.array([0, 1])); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
