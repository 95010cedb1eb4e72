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
                if (
                    node.module
                ):  # "from crossent.x import y": the module x; "from .. import y": only y
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
            assert name.startswith(("crossent._native", "crossent._contract")), (
                f"{path.name} imports {name}"
            )
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


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """crossent module → the crossent modules it imports (a package import counts as its __init__)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for imported in _crossent_imports(path):
            # "from crossent.x import y": y may be a submodule of x or a name in x
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in modules and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def test_the_import_graph_has_no_cycles():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_backends_never_import_the_dispatcher():
    # the dispatcher imports backends lazily from its table; a backend registering itself would be a cycle
    for path in (SRC / "_backends").rglob("*.py"):
        for name in _crossent_imports(path):
            assert name != "crossent._dispatch", f"{path} imports the dispatcher"


_IMPORT_COST = """
import resource, sys, time
import torch
t0, m0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import crossent
crossent.cross_entropy(torch.randn(8, 5), torch.randint(0, 5, (8,)))
t1, m1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
heavy = [m for m in ("torch._dynamo", "triton", "sympy") if m in sys.modules]
print(t1 - t0, (m1 - m0) / 1024, ",".join(heavy) or "-")
"""


def test_import_and_first_call_are_cheap():
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_COST], capture_output=True, text=True, check=True
    )
    seconds, megabytes, heavy = out.stdout.split()
    assert heavy == "-", f"import crossent + one CPU call imported {heavy}"
    # generous bounds (a shared 2-core machine); the measured cost is ~0.1 s and ~20 MB
    assert float(seconds) < 1.0, seconds
    assert float(megabytes) < 60, megabytes


def test_compile_fullgraph_still_traces_the_dispatch():
    import torch

    import crossent

    x = torch.randn(6, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, -100])
    fn = torch.compile(
        lambda x: crossent.cross_entropy(x, y, backend="torch", label_smoothing=0.1),
        fullgraph=True,
        backend="eager",
    )
    want = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1)
    torch.testing.assert_close(fn(x), want)
