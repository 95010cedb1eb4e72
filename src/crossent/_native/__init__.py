"""The compiled CPU kernel: computes ``crossent.numpy.categorical.ce_rows`` and ``ce_rows_grad`` in one call.

The math (formulas, conventions for ignored rows and non-finite logits) is that of
:mod:`crossent.numpy.categorical`; this module only says how it runs. The C++ source is
``csrc/ce_cpu.cpp`` (its header comment maps the passes and the bytes moved). One call reads each row of
logits once from memory, evaluates one ``exp`` per element and, when a gradient buffer is given, writes
the gradient once into that buffer.

Binding: a plain C ABI library opened with :mod:`ctypes`. Arrays are handed over as raw data pointers —
``ndarray.ctypes.data`` for NumPy (the buffer protocol's pointer) and ``Tensor.data_ptr()`` for PyTorch
CPU tensors — plus a row stride, so neither NumPy arrays nor torch tensors are copied when their class
axis is contiguous. Nothing is compiled against PyTorch's C++ API, and torch is imported only inside
:func:`ce_rows_native_torch`.

Layouts: (M, C) rows with a contiguous class axis (:func:`ce_rows_native`, :func:`ce_rows_native_torch`;
rows of fewer than 16 classes are computed 8–16 rows at a time through small transposed tiles), and
spatial (N, C, d1, …, dk) logits with a strided class axis (:func:`ce_spatial_native_torch`), computed
where they lie with the gradient written in the same layout.

Element-wise losses: :func:`binary_elements_torch` computes binary cross-entropy with logits and the KL
divergence (``crossent.numpy.binary`` / ``crossent.numpy.divergence``) — the per-element loss or its sum
and the input gradient — in one pass over contiguous tensors (``csrc/binary_kernels.inc``).

Instruction set: the kernel carries AVX-512, AVX2+FMA and baseline (SSE2, or the target's own) copies and
runs the best one the CPU supports. To force one — e.g. to measure the AVX2 copy on an AVX-512 machine —
pass ``isa="avx2"`` (or ``"avx512"``, ``"generic"``) to the entry points, or set the environment variable
``CROSSENT_ISA`` to one of those names for every call that leaves ``isa="auto"``; a request above what the
CPU supports runs the best copy below it. :func:`active_isa` says which copy ``"auto"`` calls use.

This package is a leaf: it imports NumPy, ctypes and :mod:`crossent._contract` only.

Example:
    >>> import numpy as np
    >>> from crossent._contract import CEOptions
    >>> x = np.array([[0.0, 0.0]])
    >>> if available():
    ...     loss, lse = ce_rows_native(x, np.array([1]), None, CEOptions(), False)
    ...     print(round(float(loss[0]), 6))  # log 2
    ... else:
    ...     print(0.693147)
    0.693147
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._contract import CEOptions, CrossentTypeError, CrossentValueError, out_of_bounds
from ._binary import binary_elements_torch
from ._core import (
    active_isa,
    available,
    best_isa,
    call,
    check_options,
    default_num_threads,
    isa_code,
    require_library,
    resolve_isa,
    unavailable_reason,
)
from ._spatial import ce_spatial_native_torch

__all__ = [
    "active_isa",
    "available",
    "best_isa",
    "binary_elements_torch",
    "ce_rows_native",
    "ce_rows_native_torch",
    "ce_spatial_native_torch",
    "default_num_threads",
    "unavailable_reason",
    "vexp",
    "vlog",
    "vtanh",
]


def _np_rows(a: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """A 2-D array whose class axis is contiguous (copied only if it is not), and its row stride."""
    item = a.itemsize
    if a.size == 0:
        return a, max(1, a.shape[1])
    if a.strides[1] != item or a.strides[0] % item or a.strides[0] < 0 or a.ctypes.data % item:
        a = np.ascontiguousarray(a)
    ld = a.strides[0] // item if a.shape[0] > 1 else a.shape[1]
    if a.shape[0] > 1 and ld < a.shape[1]:  # overlapping rows (e.g. a broadcast view)
        a = np.ascontiguousarray(a)
        ld = a.shape[1]
    return a, max(ld, a.shape[1])


def ce_rows_native(
    x: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    options: CEOptions,
    prob_target: bool,
    *,
    grad: np.ndarray | None = None,
    grad_scale: np.ndarray | float | None = None,
    inplace: bool = False,
    num_threads: int | None = None,
    isa: str = "auto",
    flags: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss and log-sum-exp of (M, C) logits — computes ``crossent.numpy.categorical.ce_rows`` —
    and, when ``grad`` is given, ``ce_rows_grad`` written into ``grad``, in one pass over the logits.

    Args:
        x: (M, C) float32 or float64 logits. Used in place when its class axis is contiguous (any row
            stride); copied otherwise.
        target: (M,) integer class indices (int64 used as is; uint8 and other integers are upcast, M
            elements), or (M, C) probabilities when ``prob_target`` (cast to ``x``'s dtype if needed).
        weight: (C,) class weights or None (cast to ``x``'s dtype if needed).
        options: the validated options; ``options.reduction`` is not used (the caller reduces and
            passes the per-row gradient factor as ``grad_scale``).
        prob_target: whether ``target`` holds probabilities.
        grad: (M, C) buffer of ``x``'s dtype with a contiguous class axis, overwritten with
            ``grad_scale[i] · ∂loss_i/∂x_i``. It may be ``x`` itself only with ``inplace=True``.
        grad_scale: the per-row upstream factor: a scalar (``g/D`` for mean, ``g`` for sum) or an (M,)
            array (``g_i`` for none); None means 1. Ignored rows always get 0.
        inplace: allow ``grad`` to be ``x`` (the logits are then overwritten by their gradient).
        num_threads: OpenMP threads; None means :func:`default_num_threads`.
        isa: ``"auto"`` or, for tests and benchmarks, ``"avx512"``, ``"avx2"``, ``"generic"`` (an ISA the
            CPU lacks falls back to the best one below it).
        flags: benchmark switches (``_lib.FLAG_NO_STREAM``, ``_lib.FLAG_NO_PREFETCH``); 0 for normal use.

    Returns:
        ``(loss, lse)``, two new (M,) arrays of ``x``'s dtype.

    Raises:
        TypeError: ``x`` not float32/float64, an index target that is not integral, a ``grad`` of
            another dtype.
        ValueError: shapes that do not fit, a ``grad`` that overlaps ``x`` without ``inplace=True``.
        IndexError: a class index outside [0, C) that is not ``options.ignore_index``.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64) or x.ndim != 2:
        raise CrossentTypeError(
            f"argument 'x' must be a 2-D float32 or float64 array, got {x.ndim}-D {x.dtype}"
        )
    rows, classes = x.shape
    options = check_options(options, classes)
    dtype = x.dtype
    x_in = x
    x, ldx = _np_rows(x, "x")
    target = np.asarray(target)
    if prob_target:
        if target.shape != x.shape:
            raise CrossentValueError(
                f"argument 'target' must have the logits' shape {x.shape} for probability targets, "
                f"got {target.shape}"
            )
        if not np.issubdtype(target.dtype, np.floating):
            raise CrossentTypeError(
                f"argument 'target' must hold floating probabilities, got {target.dtype}"
            )
        target, ldt = _np_rows(target.astype(dtype, copy=False), "target")
    else:
        if target.shape != (rows,):
            raise CrossentValueError(
                f"argument 'target' must have shape ({rows},), got {target.shape}"
            )
        if not np.issubdtype(target.dtype, np.integer):
            raise CrossentTypeError(
                f"argument 'target' must hold integer class indices, got {target.dtype}"
            )
        target, ldt = np.ascontiguousarray(target, dtype=np.int64), 1
    if weight is not None:
        weight = np.ascontiguousarray(weight, dtype=dtype)
        if weight.shape != (classes,):
            raise CrossentValueError(
                f"argument 'weight' must have shape ({classes},), got {weight.shape}"
            )
    gs = _np_grad_scale(grad_scale, rows, dtype) if grad is not None else 1.0
    grad_arg = None
    if grad is not None:
        grad_arg = _np_grad(grad, x_in, x, dtype, inplace)
    loss = np.empty(rows, dtype=dtype)
    lse = np.empty(rows, dtype=dtype)
    bad = call(
        dtype == np.float64,
        rows,
        classes,
        (x.ctypes.data, ldx),
        (target.ctypes.data, ldt),
        None if weight is None else weight.ctypes.data,
        gs if isinstance(gs, float) else gs.ctypes.data,
        loss.ctypes.data,
        lse.ctypes.data,
        grad_arg,
        options,
        prob_target,
        default_num_threads() if num_threads is None else num_threads,
        isa,
        flags,
    )
    if bad >= 0:
        raise out_of_bounds(int(target[bad]))
    return loss, lse


def _np_grad_scale(grad_scale: Any, rows: int, dtype: np.dtype) -> float | np.ndarray:
    if grad_scale is None:
        return 1.0
    gs = np.asarray(grad_scale)
    if gs.ndim == 0 or gs.size == 1 and gs.ndim == 1 and rows != 1:
        return float(gs.reshape(()))
    if gs.shape != (rows,):
        raise CrossentValueError(
            f"argument 'grad_scale' must be a scalar or have shape ({rows},), got {gs.shape}"
        )
    if gs.strides == (0,) and rows > 0:  # a broadcast scalar (what reduce.upstream returns)
        return float(gs[0])
    return np.ascontiguousarray(gs, dtype=dtype)


def _np_grad(
    grad: Any, x_in: np.ndarray, x: np.ndarray, dtype: np.dtype, inplace: bool
) -> tuple[int, int]:
    if not isinstance(grad, np.ndarray):
        raise CrossentTypeError(f"argument 'grad' must be a NumPy array, got {type(grad).__name__}")
    if grad.dtype != dtype:
        raise CrossentTypeError(
            f"argument 'grad' must have the logits' dtype {dtype}, got {grad.dtype}"
        )
    if grad.shape != x.shape:
        raise CrossentValueError(f"argument 'grad' must have shape {x.shape}, got {grad.shape}")
    if not grad.flags.writeable:
        raise CrossentValueError("argument 'grad' must be writeable")
    item = grad.itemsize
    rows = grad.shape[0]
    if grad.size == 0:
        return grad.ctypes.data, max(1, grad.shape[1])
    ldg = grad.strides[0] // item if rows > 1 else grad.shape[1]
    if (
        grad.strides[1] != item
        or grad.strides[0] % item
        or ldg < grad.shape[1]
        or grad.ctypes.data % item
    ):
        raise CrossentValueError(
            "argument 'grad' must have a contiguous class axis and non-overlapping rows "
            f"(strides {grad.strides})"
        )
    if np.may_share_memory(grad, x_in) or np.may_share_memory(grad, x):
        same = grad.ctypes.data == x.ctypes.data and (rows <= 1 or grad.strides == x.strides)
        if not (inplace and same):
            raise CrossentValueError(
                "argument 'grad' overlaps the logits 'x': pass inplace=True to overwrite the logits "
                "with their gradient (grad must then be x itself)"
            )
    return grad.ctypes.data, ldg


# --------------------------------------------------------------------------------------------------
# PyTorch entry (CPU tensors; torch imported here only).
# --------------------------------------------------------------------------------------------------


def ce_rows_native_torch(
    x: Any,
    target: Any,
    weight: Any | None,
    options: CEOptions,
    prob_target: bool,
    *,
    grad: Any | None = None,
    grad_scale: Any | float | None = None,
    inplace: bool = False,
    num_threads: int | None = None,
    isa: str = "auto",
    flags: int = 0,
) -> tuple[Any, Any]:
    """:func:`ce_rows_native` for CPU ``torch.Tensor``\\ s: same arguments and results, as tensors.

    Tensors are passed by ``data_ptr()`` without copies when the class axis is contiguous (the others
    are made contiguous). ``num_threads=None`` uses ``torch.get_num_threads()``. ``grad`` must be a
    float32/float64 CPU tensor of the logits' dtype and shape with a contiguous class axis (e.g. from
    ``torch.empty_like(x)``); it may be ``x`` only with ``inplace=True``. Autograd is not involved:
    call it under ``torch.no_grad()`` or on detached tensors.
    """
    import torch

    if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
        raise CrossentTypeError(f"argument 'x' must be a CPU torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64) or x.dim() != 2:
        raise CrossentTypeError(
            f"argument 'x' must be a 2-D float32 or float64 tensor, got {x.dim()}-D {x.dtype}"
        )
    rows, classes = x.shape
    options = check_options(options, classes)
    dtype = x.dtype
    x_in = x
    x, ldx = _torch_rows(x)
    if prob_target:
        if tuple(target.shape) != (rows, classes):
            raise CrossentValueError(
                f"argument 'target' must have the logits' shape {tuple(x.shape)} for probability targets, "
                f"got {tuple(target.shape)}"
            )
        if not target.dtype.is_floating_point:
            raise CrossentTypeError(
                f"argument 'target' must hold floating probabilities, got {target.dtype}"
            )
        target, ldt = _torch_rows(target.to(device="cpu", dtype=dtype))
    else:
        if tuple(target.shape) != (rows,):
            raise CrossentValueError(
                f"argument 'target' must have shape ({rows},), got {tuple(target.shape)}"
            )
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise CrossentTypeError(
                f"argument 'target' must hold integer class indices, got {target.dtype}"
            )
        target, ldt = target.to(device="cpu", dtype=torch.int64).contiguous(), 1
    if weight is not None:
        weight = weight.to(device="cpu", dtype=dtype).contiguous()
        if tuple(weight.shape) != (classes,):
            raise CrossentValueError(
                f"argument 'weight' must have shape ({classes},), got {tuple(weight.shape)}"
            )
    gs: Any = 1.0
    grad_arg = None
    if grad is not None:
        gs = _torch_grad_scale(grad_scale, rows, dtype)
        grad_arg = _torch_grad(grad, x_in, x, dtype, inplace)
    loss = torch.empty(rows, dtype=dtype)
    lse = torch.empty(rows, dtype=dtype)
    bad = call(
        dtype == torch.float64,
        rows,
        classes,
        (x.data_ptr(), ldx),
        (target.data_ptr(), ldt),
        None if weight is None else weight.data_ptr(),
        gs if isinstance(gs, float) else gs.data_ptr(),
        loss.data_ptr(),
        lse.data_ptr(),
        grad_arg,
        options,
        prob_target,
        torch.get_num_threads() if num_threads is None else num_threads,
        isa,
        flags,
    )
    if bad >= 0:
        raise out_of_bounds(int(target[bad]))
    return loss, lse


def _torch_rows(t: Any) -> tuple[Any, int]:
    rows, classes = t.shape
    if t.stride(1) != 1 or (rows > 1 and t.stride(0) < classes):
        t = t.contiguous()
    return t, (t.stride(0) if rows > 1 else classes)


def _torch_grad_scale(grad_scale: Any, rows: int, dtype: Any) -> Any:
    import torch

    if grad_scale is None:
        return 1.0
    if not isinstance(grad_scale, torch.Tensor):
        return float(grad_scale)
    if grad_scale.dim() == 0:
        return float(grad_scale)
    if tuple(grad_scale.shape) != (rows,):
        raise CrossentValueError(
            f"argument 'grad_scale' must be a scalar or have shape ({rows},), got {tuple(grad_scale.shape)}"
        )
    if rows > 0 and grad_scale.stride(0) == 0:  # an expanded scalar
        return float(grad_scale[0])
    return grad_scale.to(device="cpu", dtype=dtype).contiguous()


def _torch_grad(grad: Any, x_in: Any, x: Any, dtype: Any, inplace: bool) -> tuple[int, int]:
    import torch

    if not isinstance(grad, torch.Tensor) or grad.device.type != "cpu" or grad.dtype != dtype:
        raise CrossentTypeError(f"argument 'grad' must be a CPU tensor of dtype {dtype}")
    if tuple(grad.shape) != tuple(x.shape):
        raise CrossentValueError(
            f"argument 'grad' must have shape {tuple(x.shape)}, got {tuple(grad.shape)}"
        )
    rows, classes = grad.shape
    ldg = grad.stride(0) if rows > 1 else classes
    if grad.stride(1) != 1 or ldg < classes:
        raise CrossentValueError(
            f"argument 'grad' must have a contiguous class axis and non-overlapping rows (strides {grad.stride()})"
        )
    n = grad.element_size() * ((rows - 1) * ldg + classes) if rows else 0
    g0 = grad.data_ptr()
    for other in (x_in, x):
        o0 = other.data_ptr()
        m = other.element_size() * ((rows - 1) * max(other.stride(0), 0) + classes) if rows else 0
        if n and m and g0 < o0 + m and o0 < g0 + n:
            same = g0 == x.data_ptr() and (rows <= 1 or grad.stride() == x.stride())
            if not (inplace and same):
                raise CrossentValueError(
                    "argument 'grad' overlaps the logits 'x': pass inplace=True to overwrite the logits "
                    "with their gradient (grad must then be x itself)"
                )
    return g0, ldg


def vexp(x: np.ndarray, *, isa: str = "auto") -> np.ndarray:
    """The kernel's vectorised ``exp`` (float32 or float64) on a 1-D array — exposed for tests."""
    return _unary(x, "exp", isa)


def vlog(x: np.ndarray, *, isa: str = "auto") -> np.ndarray:
    """The kernel's vectorised ``log`` (float32 only) on a 1-D array — exposed for tests."""
    return _unary(x, "log", isa)


def vtanh(x: np.ndarray, *, isa: str = "auto") -> np.ndarray:
    """The kernel's vectorised ``tanh`` (float32 or float64; the softcap's) on a 1-D array — exposed for tests."""
    return _unary(x, "tanh", isa)


def _unary(x: Any, op: str, isa: str) -> np.ndarray:
    lib = require_library()
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64) or (op == "log" and x.dtype != np.float32):
        raise CrossentTypeError(
            f"argument 'x' has unsupported dtype {x.dtype} for the vectorised {op}"
        )
    out = np.empty_like(x)
    name = f"crossent_v{op}_f{'64' if x.dtype == np.float64 else '32'}"
    getattr(lib, name)(x.ctypes.data, out.ctypes.data, x.size, isa_code(resolve_isa(isa)))
    return out
