"""Compiling Triton kernels for an H100 (sm_90a) on a machine without a GPU, for the kernel test files.

The interpreter runs a kernel's Python and lets through what the compiler rejects (types of loop-carried
values, constexpr misuse); compiling for sm_90a with Triton's bundled ``ptxas`` catches that and reports
register spills. The compile runs in a fresh interpreter without ``TRITON_INTERPRET``: :func:`run` puts
:data:`PRELUDE` (``build`` and ``spills``) before a test file's script and returns what it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PRELUDE = r"""
import itertools, os, re, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def build(kernel, types, consts, warps):
    fn = kernel if isinstance(kernel, triton.runtime.JITFunction) else kernel.fn
    sig = dict(types)
    sig.update({k: "constexpr" for k in consts})
    idx = {(fn.arg_names.index(k),): v for k, v in consts.items()}
    return triton.compile(ASTSource(fn, sig, idx), target=TARGET, options={"num_warps": warps})


def spills(k):
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(k.asm["ptx"])
    out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", os.devnull],
                         capture_output=True, text=True).stderr
    return sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", out))
"""


def run(script: str) -> str:
    """Run ``PRELUDE + script`` in a fresh interpreter (compiled mode); its stdout. Skips the calling
    test where Triton's NVIDIA backend (the bundled ptxas) is not installed; fails if the script does."""
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("Triton's bundled ptxas is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout
