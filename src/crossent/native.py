"""The compiled CPU kernel on NumPy arrays: a fast twin of :func:`crossent.numpy.cross_entropy`.

:mod:`crossent.numpy` is the pure reference (array-API code, the oracle of the tests) and never calls a
kernel. Users of NumPy who want speed call this module instead: the same arguments, validation, values
(to rounding) and gradients as the reference, computed by the C++/OpenMP kernel (``csrc/``) in one pass
that writes the loss and, for :func:`cross_entropy_grad`, the gradient into a fresh buffer. float32 and
float64 arrays run on the kernel; it needs the kernel to have been built at install time
(:func:`available`), and raises a clear error otherwise.

Example:
    >>> import numpy as np
    >>> import crossent.native as cnat
    >>> x, y = np.array([[2.0, 0.5, -1.0]]), np.array([0])
    >>> round(float(cnat.cross_entropy(x, y)), 6) if cnat.available() else 0.241277
    0.241277
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _native
from ._contract import CrossentTypeError, CrossentValueError, ce_options
from ._native._memory import advise_huge_pages
from .numpy import _layout
from .numpy.categorical import ce_denominator, prepare_rows
from .numpy.reduce import reduce, upstream

Array = Any

__all__ = ["available", "cross_entropy", "cross_entropy_grad"]


def available() -> bool:
    """True when the compiled kernel was built and loads on this machine."""
    return _native.available()


def _rows(input: Array, target: Array, weight: Array | None, options: Any):
    if not isinstance(input, np.ndarray):
        raise CrossentTypeError(
            f"argument 'input' must be a NumPy array, got {type(input).__name__} "
            "(crossent.numpy computes any array library)"
        )
    if input.dtype not in (np.float32, np.float64):
        raise CrossentTypeError(
            f"argument 'input' must be float32 or float64 for the native kernel, got {input.dtype}"
        )
    if not _native.available():
        raise CrossentValueError(
            "the native CPU kernel is not available on this machine "
            f"({_native.unavailable_reason()}); use crossent.numpy"
        )
    return prepare_rows(input, target, weight, options)


def cross_entropy(
    input: Array,
    target: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Array:
    """:func:`crossent.numpy.cross_entropy` (same arguments and value) on the compiled kernel."""
    options = ce_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    _, layout, x, t, w = _rows(input, target, weight, options)
    loss = np.zeros(x.shape[:1], dtype=x.dtype)
    if x.shape[0]:
        loss, _ = _native.ce_rows_native(x, t, w, options, layout.prob_target)
    denominator = ce_denominator(t, w, options, layout.prob_target, loss)
    return reduce(_layout.loss_from_rows(loss, layout), options.reduction, denominator)


def cross_entropy_grad(
    input: Array,
    target: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    grad_output: Array | float = 1.0,
) -> Array:
    """:func:`crossent.numpy.cross_entropy_grad` (same arguments and value) on the compiled kernel.

    The gradient buffer is fresh (advised to huge pages where the OS allows); the input is never written.
    """
    options = ce_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    xp, layout, x, t, w = _rows(input, target, weight, options)
    like = np.zeros(x.shape[:1], dtype=x.dtype)
    denominator = ce_denominator(t, w, options, layout.prob_target, like)
    g = upstream(_layout.loss_from_rows(like, layout), options.reduction, grad_output, denominator)
    g = np.ascontiguousarray(np.reshape(g, (-1,)))
    grad = np.empty_like(x)
    if x.shape[0]:
        advise_huge_pages(grad.ctypes.data, grad.nbytes)
        _native.ce_rows_native(x, t, w, options, layout.prob_target, grad=grad, grad_scale=g)
    return _layout.from_rows(grad, layout)
