"""The compiled element-wise kernel: binary cross-entropy with logits and the KL divergence.

Computes ``crossent.numpy.binary.bce_logits_elements`` / ``bce_logits_elements_grad`` and
``crossent.numpy.divergence.kl_div_elements`` / ``kl_div_elements_grad`` (formulas there) over n
contiguous elements in one pass: the per-element loss (or only its sum, accumulated in double in fixed
blocks, so the same bits whatever the thread count) and, when a gradient buffer is given, the gradient
with respect to the input. The C++ side is ``csrc/binary_kernels.inc`` (its header maps the pass).

Weights (``weight`` and ``pos_weight``, BCE only) are 1-D arrays whose length p divides n: element i
uses ``weight[i mod p]`` — a full-size weight (p = n) or a (C,) vector along the last axis of an
(…, C) input (p = C).
"""

from __future__ import annotations

import ctypes
from typing import Any

from .._contract import CrossentTypeError, CrossentValueError
from . import _lib
from ._core import isa_code, require_library, resolve_isa

KINDS = {
    "bce_with_logits": _lib.BIN_BCE_LOGITS,
    "kl_div": _lib.BIN_KL,
    "kl_div_log_target": _lib.BIN_KL_LOG_TARGET,
}


def _periodic(name: str, w: Any, x: Any) -> tuple[int | None, int]:
    """(address, period) of a weight applied with a period (see the module docstring)."""
    if w is None:
        return None, 1
    n = x.numel()
    if w.dim() != 1 or w.dtype != x.dtype or w.device.type != "cpu" or not w.is_contiguous():
        raise CrossentValueError(
            f"argument '{name}' must be a contiguous 1-D CPU tensor of dtype {x.dtype}, got "
            f"{w.dim()}-D {w.dtype} with strides {w.stride()}"
        )
    p = w.numel()
    if p == 0 or n % p:
        raise CrossentValueError(
            f"argument '{name}' must have a length that divides the input's {n} elements, got {p}"
        )
    return w.data_ptr(), p


def binary_elements_torch(
    kind: str,
    x: Any,
    target: Any,
    weight: Any | None = None,
    pos_weight: Any | None = None,
    *,
    loss: bool = False,
    total: bool = False,
    grad: Any | None = None,
    grad_scale: Any | float = 1.0,
    num_threads: int | None = None,
    isa: str = "auto",
) -> tuple[Any | None, float | None]:
    """Per-element loss and/or its sum and/or the gradient of one element-wise loss, in one pass.

    Args:
        kind: ``"bce_with_logits"``, ``"kl_div"`` or ``"kl_div_log_target"``.
        x: the input (logits, or log-probabilities for KL): a contiguous float32/float64 CPU tensor.
        target: the target, same shape, dtype and layout as ``x``.
        weight, pos_weight: None or 1-D tensors of ``x``'s dtype whose length divides ``x.numel()``
            (element i uses ``weight[i mod len]``); BCE only.
        loss: return the per-element loss (a new tensor of ``x``'s shape).
        total: return the sum of the per-element losses (a Python float, accumulated in double).
        grad: a contiguous buffer of ``x``'s dtype and shape, overwritten with ``grad_scale · ∂ℓ/∂x``.
        grad_scale: the upstream factor: a number, or a contiguous tensor of ``x``'s shape and dtype.
        num_threads: OpenMP threads; None means ``torch.get_num_threads()``.
        isa: ``"auto"``, or ``"avx512"``, ``"avx2"``, ``"generic"`` for tests and benchmarks.

    Returns:
        ``(loss, total)``: the per-element loss (None unless ``loss``) and the sum (None unless ``total``).

    Raises:
        TypeError: a dtype other than float32/float64, or operands of different dtypes.
        ValueError: an unknown kind, shapes or layouts that do not fit, weights for KL, nothing asked.
    """
    import torch

    if kind not in KINDS:
        raise CrossentValueError(f"argument 'kind' must be one of {sorted(KINDS)}, got {kind!r}")
    if x.dtype not in (torch.float32, torch.float64) or x.device.type != "cpu":
        raise CrossentTypeError(
            f"argument 'x' must be a float32 or float64 CPU tensor, got {x.dtype} on {x.device}"
        )
    for name, t in (("target", target), ("grad", grad)):
        if t is not None and (t.dtype != x.dtype or t.shape != x.shape or not t.is_contiguous()):
            raise CrossentValueError(
                f"argument '{name}' must be a contiguous tensor of x's shape {tuple(x.shape)} and "
                f"dtype {x.dtype}, got {tuple(t.shape)} {t.dtype}"
            )
    if not x.is_contiguous():
        raise CrossentValueError("argument 'x' must be contiguous")
    if kind != "bce_with_logits" and (weight is not None or pos_weight is not None):
        raise CrossentValueError(
            f"arguments 'weight' and 'pos_weight' are for BCE only, not {kind}"
        )
    if not (loss or total or grad is not None):
        raise CrossentValueError("nothing to compute: ask for loss, total or grad")
    a = _lib.BinArgs()
    a.x, a.target, a.n = x.data_ptr(), target.data_ptr(), x.numel()
    a.weight, a.w_period = _periodic("weight", weight, x)
    a.pos_weight, a.pw_period = _periodic("pos_weight", pos_weight, x)
    if isinstance(grad_scale, torch.Tensor):
        if (
            grad_scale.dtype != x.dtype
            or grad_scale.shape != x.shape
            or not grad_scale.is_contiguous()
        ):
            raise CrossentValueError(
                "argument 'grad_scale' must be a number or a contiguous tensor of x's shape and dtype"
            )
        a.grad_scale, a.grad_scale_value = grad_scale.data_ptr(), 0.0
    else:
        a.grad_scale, a.grad_scale_value = None, float(grad_scale)
    out = torch.empty_like(x) if loss else None
    a.loss = None if out is None else out.data_ptr()
    a.grad = None if grad is None else grad.data_ptr()
    acc = ctypes.c_double(0.0)
    a.sum = ctypes.addressof(acc) if total else None
    a.kind = KINDS[kind]
    a.num_threads = int(torch.get_num_threads() if num_threads is None else num_threads)
    a.isa = isa_code(resolve_isa(isa))
    a.flags = 0
    lib = require_library()
    code = (lib.crossent_binary_f64 if x.dtype == torch.float64 else lib.crossent_binary_f32)(
        ctypes.byref(a)
    )
    if code == -1:
        raise CrossentValueError(
            "crossent._native: malformed kernel arguments (a bug in the caller)"
        )
    if code == -2:
        raise MemoryError("crossent._native: could not allocate a scratch buffer")
    return out, (acc.value if total else None)
