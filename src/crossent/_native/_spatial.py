"""The compiled kernel on spatial (N, C, d1, …, dk) logits, computed where they lie.

Same math as :func:`crossent._native.ce_rows_native` (``crossent.numpy.categorical.ce_rows`` and
``ce_rows_grad``, one "row" per position), but the class axis is strided: position ``(n, s)`` of the
flattened spatial grid has its C logits ``S = d1·…·dk`` elements apart. The kernel vectorises across
adjacent positions (csrc/ce_tiles.inc), reads the logits once and writes the gradient once, in the
logits' own layout: no transposed copy of the logits or of the gradient is made.
"""

from __future__ import annotations

import math
from typing import Any

from .._contract import CEOptions, CrossentTypeError, CrossentValueError, out_of_bounds


def ce_spatial_native_torch(
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
) -> tuple[Any, Any]:
    """Per-position loss and log-sum-exp of (N, C, d1, …, dk) logits, and optionally the gradient.

    Args:
        x: (N, C, d1, …, dk) float32 or float64 CPU tensor, k >= 1 (used in place when contiguous,
            copied otherwise).
        target: (N, d1, …, dk) integer class indices, or (N, C, d1, …, dk) probabilities when
            ``prob_target``.
        weight: (C,) class weights or None.
        options: the validated options (``options.reduction`` is not used).
        prob_target: whether ``target`` holds probabilities.
        grad: a contiguous tensor of ``x``'s dtype and shape, overwritten with
            ``grad_scale · ∂loss/∂x`` in ``x``'s layout; it may be ``x`` only with ``inplace=True``.
        grad_scale: a scalar (``g/D`` for mean, ``g`` for sum) or an (N, d1, …, dk) tensor of per-position
            factors (reduction none); None means 1. Ignored positions always get 0.
        inplace: allow ``grad`` to be ``x`` (the logits are then overwritten by their gradient).
        num_threads: OpenMP threads; None means ``torch.get_num_threads()``.
        isa: ``"auto"`` (or ``CROSSENT_ISA``), ``"avx512"``, ``"avx2"`` or ``"generic"``.

    Returns:
        ``(loss, lse)``, two new (N, d1, …, dk) tensors of ``x``'s dtype.

    Raises:
        TypeError: ``x`` not a float32/float64 CPU tensor, a target of the wrong kind, a bad ``grad``.
        ValueError: shapes that do not fit, a ``grad`` that overlaps ``x`` without ``inplace=True``.
        IndexError: a class index outside [0, C) that is not ``options.ignore_index``.
    """
    import torch

    from ._core import call, check_options

    if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
        raise CrossentTypeError(f"argument 'x' must be a CPU torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64) or x.dim() < 3:
        raise CrossentTypeError(
            f"argument 'x' must be an (N, C, d1, ...) float32 or float64 tensor, got {x.dim()}-D {x.dtype}"
        )
    batch, classes = x.shape[0], x.shape[1]
    space = tuple(x.shape[2:])
    positions = math.prod(space)
    options = check_options(options, classes)
    dtype = x.dtype
    x = x.detach().contiguous()
    out_shape = (batch, *space)
    if prob_target:
        if tuple(target.shape) != tuple(x.shape):
            raise CrossentValueError(
                f"argument 'target' must have the logits' shape {tuple(x.shape)} for probability targets, "
                f"got {tuple(target.shape)}"
            )
        if not target.dtype.is_floating_point:
            raise CrossentTypeError(
                f"argument 'target' must hold floating probabilities, got {target.dtype}"
            )
        target = target.detach().to(device="cpu", dtype=dtype).contiguous()
    else:
        if tuple(target.shape) != out_shape:
            raise CrossentValueError(
                f"argument 'target' must have shape {out_shape}, got {tuple(target.shape)}"
            )
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise CrossentTypeError(
                f"argument 'target' must hold integer class indices, got {target.dtype}"
            )
        target = target.detach().to(device="cpu", dtype=torch.int64).contiguous()
    if weight is not None:
        weight = weight.detach().to(device="cpu", dtype=dtype).contiguous()
        if tuple(weight.shape) != (classes,):
            raise CrossentValueError(
                f"argument 'weight' must have shape ({classes},), got {tuple(weight.shape)}"
            )
    gs: Any = 1.0
    grad_arg = None
    if grad is not None:
        gs = _grad_scale(grad_scale, out_shape, dtype)
        grad_arg = (_grad_ptr(grad, x, dtype, inplace), classes * positions)
    loss = torch.empty(out_shape, dtype=dtype)
    lse = torch.empty(out_shape, dtype=dtype)
    if x.numel() == 0:
        return loss, lse
    bad = call(
        dtype == torch.float64,
        batch,
        classes,
        (x.data_ptr(), classes * positions),
        (target.data_ptr(), classes * positions if prob_target else positions),
        None if weight is None else weight.data_ptr(),
        gs if isinstance(gs, float) else gs.data_ptr(),
        loss.data_ptr(),
        lse.data_ptr(),
        grad_arg,
        options,
        prob_target,
        torch.get_num_threads() if num_threads is None else num_threads,
        isa,
        0,
        spatial=positions,
    )
    if bad >= 0:
        raise out_of_bounds(int(target.reshape(-1)[bad]))
    return loss, lse


def _grad_scale(grad_scale: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    import torch

    if grad_scale is None:
        return 1.0
    if not isinstance(grad_scale, torch.Tensor) or grad_scale.dim() == 0:
        return float(grad_scale)
    if tuple(grad_scale.shape) != shape:
        raise CrossentValueError(
            f"argument 'grad_scale' must be a scalar or have shape {shape}, got {tuple(grad_scale.shape)}"
        )
    if grad_scale.numel() > 0 and all(s == 0 for s in grad_scale.stride()):  # an expanded scalar
        return float(grad_scale.reshape(-1)[0])
    return grad_scale.detach().to(device="cpu", dtype=dtype).contiguous()


def _grad_ptr(grad: Any, x: Any, dtype: Any, inplace: bool) -> int:
    import torch

    if not isinstance(grad, torch.Tensor) or grad.device.type != "cpu" or grad.dtype != dtype:
        raise CrossentTypeError(f"argument 'grad' must be a CPU tensor of dtype {dtype}")
    if tuple(grad.shape) != tuple(x.shape):
        raise CrossentValueError(
            f"argument 'grad' must have shape {tuple(x.shape)}, got {tuple(grad.shape)}"
        )
    if not grad.is_contiguous():
        raise CrossentValueError(f"argument 'grad' must be contiguous (strides {grad.stride()})")
    n = grad.numel() * grad.element_size()
    g0, x0 = grad.data_ptr(), x.data_ptr()
    if n and g0 < x0 + n and x0 < g0 + n and not (inplace and g0 == x0):
        raise CrossentValueError(
            "argument 'grad' overlaps the logits 'x': pass inplace=True to overwrite the logits "
            "with their gradient (grad must then be x itself)"
        )
    return g0
