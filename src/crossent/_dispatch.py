"""Backend selection per call, from the device, the dtype and an explicit ``backend=``.

No import-time magic: nothing here touches CUDA or imports Triton until a call asks for it.

Backends of the categorical cross-entropy (all compute ``crossent.numpy.cross_entropy``):

* ``"torch"``: the eager backend (:mod:`crossent._backends.eager`), any device, the universal fallback.
* ``"triton"``: the fused Triton kernel, CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``).
* ``"native"``: the compiled CPU kernel, CPU tensors.
* ``"auto"``: Triton for CUDA tensors when Triton is importable, the native kernel for CPU tensors when it
  was built, eager otherwise.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Literal

import torch

from ._contract import CrossentValueError

Backend = Literal["auto", "torch", "triton", "native"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "native")


@functools.cache
def triton_available() -> bool:
    """True when Triton can be imported (the kernel module itself is imported only when used)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def native_available() -> bool:
    """True when the compiled CPU kernel was built and loads."""
    try:
        from . import _native
    except ImportError:
        return False
    return bool(getattr(_native, "available", lambda: False)())


# The kernel backends of each function that takes ``backend=`` (the eager "torch" backend computes
# every function; "auto" picks among these and "torch").
KERNELS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("triton", "native"),
    "focal_loss": ("triton",),
    "binary_cross_entropy_with_logits": ("triton",),
    "sigmoid_focal_loss": ("triton",),
}


def check_backend(backend: object, function: str = "cross_entropy") -> str:
    """``backend`` validated for ``function``: one of :data:`BACKENDS` that ``function`` has."""
    if backend not in BACKENDS:
        raise CrossentValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    kernels = KERNELS.get(function, ())
    if backend not in ("auto", "torch") and backend not in kernels:
        usable = ", ".join(repr(b) for b in ("auto", "torch", *kernels))
        raise CrossentValueError(
            f"argument 'backend': there is no {backend} kernel for {function}; use {usable}, "
            f"got {backend!r}"
        )
    return backend  # type: ignore[return-value]


_BINARY_FUNCTIONS = ("binary_cross_entropy_with_logits", "sigmoid_focal_loss")


def auto_backend(function: str, x: torch.Tensor) -> str:
    """The backend ``backend="auto"`` picks for ``function`` on tensors like ``x`` (the one rule: the
    functions and ``crossent check`` all ask here)."""
    kernels = KERNELS.get(function, ())
    if "native" in kernels:
        return choose_ce_backend(x, "auto")
    if x.is_cuda and "triton" in kernels and triton_available():
        loaded = _binary_loaded() if function in _BINARY_FUNCTIONS else _triton_ce_registered()
        if loaded:
            return "triton"
    return "torch"


def choose_ce_backend(x: torch.Tensor, backend: str) -> str:
    """The backend that computes a categorical cross-entropy of ``x`` for the requested ``backend``."""
    backend = check_backend(backend)
    if backend != "auto":
        return backend
    if x.is_cuda and triton_available() and _triton_ce_registered():
        return "triton"
    # half-precision logits go to the kernel too: it runs on a float32 copy (see _backends/native.py)
    if (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
        and native_available()
        and _native_ce_registered()
    ):
        return "native"
    return "torch"


# Registration points: a kernel backend registers its implementation here when it is importable.
_CE_IMPLS: dict[str, object] = {}


def register_ce(name: str, impl: object) -> None:
    """Register ``impl(math, x, target, weight, denominator) -> loss`` as the CE implementation of ``name``."""
    _CE_IMPLS[name] = impl


def _triton_ce_registered() -> bool:
    return _loaded("triton")


def _native_ce_registered() -> bool:
    return _loaded("native")


@torch.compiler.assume_constant_result
def _loaded(name: str) -> bool:
    # torch.compile runs this at trace time (importing a module cannot be traced) and keeps the answer;
    # the implementation is then read from _CE_IMPLS, which dynamo can trace.
    return _load(name) is not None


@functools.cache
def _load(name: str) -> object | None:
    module = {"triton": "crossent._backends.triton", "native": "crossent._backends.native"}[name]
    if importlib.util.find_spec(module) is None:
        return None
    importlib.import_module(module)
    return _CE_IMPLS.get(name)


def ce_impl(name: str) -> object | None:
    """The registered implementation of backend ``name`` (None for the eager backend)."""
    if name == "torch":
        return None
    impl = _CE_IMPLS[name] if _loaded(name) else None
    if impl is None:
        raise CrossentValueError(
            f"backend {name!r} is not available on this machine (argument 'backend')"
        )
    return impl


# Binary losses (BCE with logits, sigmoid focal loss): the Triton kernel or the eager backend; there is
# no native kernel for them.
_BINARY_IMPLS: dict[str, object] = {}


def register_binary(name: str, impl: object) -> None:
    """Register ``impl(math, x, target, weight, pos_weight) -> loss`` for the binary losses of ``name``."""
    _BINARY_IMPLS[name] = impl


def binary_impl(x: torch.Tensor, backend: str, function: str) -> object | None:
    """The implementation of a binary loss of ``x`` for the requested ``backend`` (None: eager).

    ``"auto"``: Triton for CUDA tensors when Triton is importable, else eager; ``"triton"`` forces it
    (CPU tensors under ``TRITON_INTERPRET=1``); ``"native"`` raises (no native kernel for ``function``).
    """
    backend = check_backend(backend, function)
    if (auto_backend(function, x) if backend == "auto" else backend) == "torch":
        return None
    if _binary_loaded():
        return _BINARY_IMPLS["triton"]
    if backend == "triton":
        raise CrossentValueError(
            "backend 'triton' is not available on this machine (argument 'backend')"
        )
    return None


@torch.compiler.assume_constant_result
def _binary_loaded() -> bool:
    return _load_binary() is not None


@functools.cache
def _load_binary() -> object | None:
    module = "crossent._backends.triton.binary_ops"
    if not triton_available() or importlib.util.find_spec(module) is None:
        return None
    importlib.import_module(module)
    return _BINARY_IMPLS.get("triton")
