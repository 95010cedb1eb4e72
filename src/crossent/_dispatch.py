"""Backend selection per call: one table ``(function, backend) → implementation``, one lazy loader.

Backends (each computes the :mod:`crossent.numpy` function of the same name; they differ in how):

* ``"torch"``: the eager backend (:mod:`crossent._backends.eager`), any device, every function; the
  universal fallback. It is not in the table: :func:`resolve` answers ``None`` for it.
* ``"triton"``: fused Triton kernels, CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``).
* ``"native"``: the compiled C++/OpenMP kernel, CPU tensors.
* ``"auto"``: Triton for CUDA tensors when Triton is importable, the native kernel for CPU tensors when it
  was built, eager otherwise.

Nothing here touches CUDA or imports Triton, the kernel or ``torch._dynamo`` until a call needs it. Under
``torch.compile`` the answer of :func:`_ready` is taken as a constant at trace time (importing a module
cannot be traced); the implementation itself is then read from a plain dict, which dynamo traces.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, Literal

import torch

from ._contract import CrossentValueError
from ._transforms import transforms_active

Backend = Literal["auto", "torch", "triton", "native"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "native")

# The kernel implementations: "module:attribute", imported on first use. The eager ("torch") backend
# computes every function and is not listed.
TABLE: dict[tuple[str, str], str] = {
    ("cross_entropy", "native"): "crossent._backends.native:native_ce",
    ("cross_entropy", "triton"): "crossent._backends.triton.ops:ce_impl",
    ("focal_loss", "triton"): "crossent._backends.triton.focal_ops:focal_impl",
    ("binary_cross_entropy_with_logits", "triton"): "crossent._backends.triton.binary_ops:binary_impl",
    ("sigmoid_focal_loss", "triton"): "crossent._backends.triton.binary_ops:binary_impl",
}

# dtypes the native kernel takes (half precision runs on a float32 copy, see _backends/native.py)
_NATIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def kernels(function: str) -> tuple[str, ...]:
    """The kernel backends that compute ``function`` (besides the eager one)."""
    return tuple(b for (f, b) in TABLE if f == function)


def check_backend(backend: object, function: str) -> str:
    """``backend`` validated for ``function``: one of :data:`BACKENDS` that ``function`` has."""
    if backend not in BACKENDS:
        raise CrossentValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    if backend not in ("auto", "torch") and (function, backend) not in TABLE:
        usable = ", ".join(repr(b) for b in ("auto", "torch", *kernels(function)))
        raise CrossentValueError(
            f"argument 'backend': there is no {backend} kernel for {function}; use {usable}, "
            f"got {backend!r}"
        )
    return str(backend)


@functools.cache
def triton_available() -> bool:
    """True when Triton can be imported (the kernel modules are imported only when used)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def native_available() -> bool:
    """True when the compiled CPU kernel was built and loads."""
    try:
        from . import _native
    except ImportError:
        return False
    return bool(_native.available())


_IMPLS: dict[tuple[str, str], Callable[..., Any]] = {}


def _ready(function: str, backend: str) -> bool:
    """Whether ``backend``'s implementation of ``function`` can run here; loads it on first use."""
    key = (function, backend)
    if key in _IMPLS:
        return True
    if key not in TABLE:
        return False
    if not (triton_available() if backend == "triton" else native_available()):
        return False
    module, _, attribute = TABLE[key].partition(":")
    _IMPLS[key] = getattr(importlib.import_module(module), attribute)
    return True


# What ``torch.compiler.assume_constant_result`` does, without importing torch._dynamo at import time:
# dynamo calls the function at trace time and keeps its (constant) answer.
_ready._dynamo_marked_constant = True  # type: ignore[attr-defined]


def auto_backend(function: str, x: torch.Tensor) -> str:
    """The backend ``backend="auto"`` picks for ``function`` on tensors like ``x`` (the one rule)."""
    if x.is_cuda and _ready(function, "triton"):
        return "triton"
    if x.device.type == "cpu" and x.dtype in _NATIVE_DTYPES and _ready(function, "native"):
        return "native"
    return "torch"


def resolve(function: str, backend: str, x: torch.Tensor) -> Callable[..., Any] | None:
    """The implementation of ``function`` for ``backend`` on tensors like ``x`` (None: the eager one).

    Under a function transform (``torch.func``, forward AD) it is always the eager one, which runs them.

    Raises:
        ValueError: an unknown backend, one that has no kernel for ``function``, or one that cannot run
            on this machine (Triton not installed, the native kernel not built).
    """
    chosen = check_backend(backend, function)
    if transforms_active():
        return None  # kernels are built for plain autograd: the eager backend runs transforms
    if chosen == "auto":
        chosen = auto_backend(function, x)
    if chosen == "torch":
        return None
    if not _ready(function, chosen):
        raise CrossentValueError(
            f"backend {chosen!r} is not available on this machine (argument 'backend')"
        )
    return _IMPLS[(function, chosen)]


__all__ = [
    "BACKENDS",
    "TABLE",
    "Backend",
    "auto_backend",
    "check_backend",
    "kernels",
    "native_available",
    "resolve",
    "triton_available",
]
