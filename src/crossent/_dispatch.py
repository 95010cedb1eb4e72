"""Backend selection per call: one table ``(function, backend) → implementation``, one lazy loader.

Backends (each computes the :mod:`crossent.numpy` function of the same name; they differ in how):

* ``"torch"``: the eager backend (:mod:`crossent._backends.eager`), any device, every function; the
  universal fallback. It is not in the table: :func:`resolve` answers ``None`` for it.
* ``"triton"``: fused Triton kernels, CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``).
* ``"native"``: the compiled C++/OpenMP kernel, CPU tensors.
* ``"aten"``: PyTorch's own kernel of the same function (:mod:`crossent._backends.aten`), for the
  drop-ins PyTorch has, where a call uses only PyTorch's options in float32/float64.
* ``"auto"``: Triton for CUDA tensors when Triton is importable; PyTorch's kernel where it is the faster
  one (small inputs, few classes, the functions crossent has no kernel of its own for); the native kernel
  for CPU tensors when it was built; eager otherwise.

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

Backend = Literal["auto", "torch", "triton", "native", "aten"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "native", "aten")

# The kernel implementations: "module:attribute", imported on first use. The eager ("torch") backend
# computes every function and is not listed.
TABLE: dict[tuple[str, str], str] = {
    ("cross_entropy", "native"): "crossent._backends.native:native_ce",
    ("cross_entropy", "triton"): "crossent._backends.triton.ops:ce_impl",
    ("focal_loss", "triton"): "crossent._backends.triton.focal_ops:focal_impl",
    (
        "binary_cross_entropy_with_logits",
        "triton",
    ): "crossent._backends.triton.binary_ops:binary_impl",
    ("sigmoid_focal_loss", "triton"): "crossent._backends.triton.binary_ops:binary_impl",
    ("cross_entropy", "aten"): "crossent._backends.aten:cross_entropy",
    ("nll_loss", "aten"): "crossent._backends.aten:nll_loss",
    ("binary_cross_entropy", "aten"): "crossent._backends.aten:binary_cross_entropy",
    ("binary_cross_entropy_with_logits", "aten"): (
        "crossent._backends.aten:binary_cross_entropy_with_logits"
    ),
    ("kl_div", "aten"): "crossent._backends.aten:kl_div",
    ("binary_cross_entropy_with_logits", "native"): (
        "crossent._backends.native_binary:native_bce_with_logits"
    ),
    ("kl_div", "native"): "crossent._backends.native_binary:native_kl_div",
    # the fused linear CE picks its chunk kernel itself (crossent._backends.linear_ce.chunk_kernel);
    # these entries make backend= of linear_cross_entropy validated, and forced by crossent check, alike
    ("linear_cross_entropy", "native"): "crossent._backends.linear_ce:linear_cross_entropy",
    ("linear_cross_entropy", "triton"): "crossent._backends.linear_ce:linear_cross_entropy",
    # likewise the fused distillation (crossent._backends.linear_distill.row_kernel)
    ("linear_distillation_loss", "triton"): "crossent._backends.linear_distill:linear_distillation",
}

# cross_entropy on the CPU: PyTorch's kernel where the call is small (per-call overhead dominates: at
# (1024, 100) forward + backward PyTorch's 0.23 ms vs the native kernel's 0.28 ms, at (131072, 2) 108 ms vs
# 18 ms) and for (N, C, d…) images of few classes; the native kernel for larger (M, C) rows and for
# larger images of at least IMAGE_MIN_CLASSES classes, read where they lie (forward + backward,
# PyTorch's function vs the native kernel: (8, 21, 256, 256) 69 ms vs 22 ms, (4, 150, 128, 128) 59 vs
# 13 ms, (2, 1000, 16, 16) 0.89 vs 0.52 ms; but (8, 2, 512, 512) 21 vs 27 ms and (16, 10, 64, 64) 1.2 vs
# 1.5 ms). Measured on the 2-core EPYC, 2 threads, float32.
ATEN_MAX_ELEMENTS = 1 << 17
IMAGE_MIN_CLASSES = 16
# The element-wise losses the native kernel computes in one pass (loss and input gradient together):
# PyTorch's function on the CPU is a composite of several element-wise passes, so above the small-call
# size the native kernel is the faster one; small calls stay with PyTorch (per-call overhead). Forward +
# backward, float32, 2 threads, PyTorch's function vs the native kernel (AVX-512 copy): BCE with logits
# (4096, 1000) 9.1 vs 2.8 ms, with a (C,) pos_weight 19.8 vs 3.0 ms, (262144, 10) 5.0 vs 1.8 ms;
# kl_div batchmean (4096, 1000) 15.0 vs 2.9 ms; (32, 10) 0.046 vs 0.078 ms. The two cross near 2^14
# elements ((128, 128): BCE 0.091 vs 0.109 ms; (512, 128): 0.20 vs 0.14 ms; (1024, 128): 0.29 vs
# 0.17 ms): the native kernel above ELEMENTWISE_ATEN_MAX elements.
_ELEMENTWISE_NATIVE = ("binary_cross_entropy_with_logits", "kl_div")
ELEMENTWISE_ATEN_MAX = 1 << 15

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
    if backend == "triton" and not triton_available():
        return False
    if backend == "native" and not native_available():
        return False
    # every entry of this backend at once: under torch.compile the dict below is read after this
    # (constant) answer, and a later load inside the same traced region would not be seen
    for entry, path in TABLE.items():
        if entry[1] == backend:
            module, _, attribute = path.partition(":")
            _IMPLS[entry] = getattr(importlib.import_module(module), attribute)
    return True


# What ``torch.compiler.assume_constant_result`` does, without importing torch._dynamo at import time:
# dynamo calls the function at trace time and keeps its (constant) answer.
_ready._dynamo_marked_constant = True  # type: ignore[attr-defined]


def aten_preferred(function: str, x: torch.Tensor) -> bool:
    """Whether ``auto`` gives a call PyTorch's kernel computes identically to that kernel (CPU, or no
    Triton): small calls, images of few classes, the functions crossent has no kernel of its own for."""
    if x.device.type == "cpu" and function in _ELEMENTWISE_NATIVE:
        return x.numel() <= ELEMENTWISE_ATEN_MAX or not _ready(function, "native")
    if function != "cross_entropy" or not x.device.type == "cpu":
        return True  # crossent has no faster kernel of its own for these (Triton is asked first)
    if x.dim() > 2 and x.shape[1] < IMAGE_MIN_CLASSES:
        return True  # (N, C, d…) images of few classes (see ATEN_MAX_ELEMENTS)
    return x.numel() <= ATEN_MAX_ELEMENTS or not _ready(function, "native")


def auto_backend(function: str, x: torch.Tensor, *, aten: bool = False) -> str:
    """The backend ``backend="auto"`` picks for ``function`` on tensors like ``x`` (the one rule).

    ``aten``: the call uses only what PyTorch's kernel computes identically (the caller asks
    :mod:`crossent._backends.aten`).
    """
    if x.is_cuda and _ready(function, "triton"):
        return "triton"
    if aten and _ready(function, "aten") and aten_preferred(function, x):
        return "aten"
    if x.device.type == "cpu" and x.dtype in _NATIVE_DTYPES and _ready(function, "native"):
        return "native"
    return "torch"


def choose(
    function: str,
    backend: str,
    x: torch.Tensor,
    *,
    aten: bool = False,
) -> str:
    """The backend that computes this call of ``function`` (``aten``: see :func:`auto_backend`).

    Under a function transform (``torch.func``, forward AD) it is always the eager one, which runs them.

    Raises:
        ValueError: an unknown backend, one that has no kernel for ``function``, one that cannot run on
            this machine (Triton not installed, the native kernel not built), or ``"aten"`` for a call
            PyTorch's kernel does not compute identically.
    """
    chosen = check_backend(backend, function)
    if transforms_active():
        # kernels are built for plain autograd: PyTorch's kernel (where it computes the call) or the
        # eager backend runs transforms
        return "aten" if aten else "torch"
    if chosen == "auto":
        return auto_backend(function, x, aten=aten)
    if chosen == "aten" and not aten:
        raise CrossentValueError(
            "argument 'backend': 'aten' (PyTorch's own kernel) computes only calls with PyTorch's "
            "options (no z_loss, softcap or normalize_by) on float32/float64 tensors of one dtype"
        )
    if chosen != "torch" and not _ready(function, chosen):
        raise CrossentValueError(
            f"backend {chosen!r} is not available on this machine (argument 'backend')"
        )
    return chosen


def implementation(function: str, chosen: str) -> Callable[..., Any] | None:
    """The implementation of a backend :func:`choose` returned (None: the eager backend)."""
    return None if chosen == "torch" else _IMPLS[(function, chosen)]


def resolve(function: str, backend: str, x: torch.Tensor) -> Callable[..., Any] | None:
    """:func:`implementation` of :func:`choose` for a call PyTorch's kernel does not take."""
    return implementation(function, choose(function, backend, x))


__all__ = [
    "BACKENDS",
    "TABLE",
    "Backend",
    "aten_preferred",
    "auto_backend",
    "check_backend",
    "choose",
    "implementation",
    "kernels",
    "native_available",
    "resolve",
    "triton_available",
]
