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


def check_backend(backend: object) -> str:
    if backend not in BACKENDS:
        raise CrossentValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    return backend  # type: ignore[return-value]


def choose_ce_backend(x: torch.Tensor, backend: str) -> str:
    """The backend that computes a categorical cross-entropy of ``x`` for the requested ``backend``."""
    backend = check_backend(backend)
    if backend != "auto":
        return backend
    if x.is_cuda and triton_available() and _triton_ce_registered():
        return "triton"
    if (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
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
