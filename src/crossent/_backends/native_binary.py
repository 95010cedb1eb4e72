"""The compiled element-wise kernel as a PyTorch backend of ``binary_cross_entropy_with_logits`` and ``kl_div``.

Computes ``crossent.numpy.binary_cross_entropy_with_logits`` and ``crossent.numpy.kl_div`` (formulas
there); :mod:`crossent._native._binary` runs the kernel, this module only connects it to autograd, as
:mod:`.native` does for the cross-entropy:

* scalar losses (``sum``/``mean``, and ``kl_div``'s ``batchmean`` as a mean over the batch) with a
  gradient needed: one kernel call in the forward computes the sum of the losses *and* the gradient for
  an upstream of 1 (``1/D`` folded in for a mean), in one pass over the data; the backward only scales it
  by ``grad_output`` (skipped when that is exactly 1 — a CPU scalar, so reading it costs nothing). The
  sum is accumulated in double, in fixed blocks: the same bits whatever the thread count.
* ``reduction="none"``: the forward computes the per-element losses only; the backward calls the kernel
  once more with the per-element ``grad_output`` as the gradient scale.
* under ``create_graph=True`` the backward is the reference's gradient in torch ops (double backward
  works as on the eager path).

Operands are computed in the eager backend's compute dtype (float32, or float64 when any operand is
float64): half-precision inputs and mixed dtypes run on widened copies, made inside the forward and not
kept; the loss keeps that dtype, as on the eager path, and the gradient is rounded once to the input's
dtype (by autograd). ``weight`` and ``pos_weight`` arrive broadcast to the input's shape (``expand``-ed
views); a full-size one or a (C,) vector repeated along the last axis is read as it is (the kernel reads
a weight with a period), any other broadcast is materialised once. Calls the kernel does not take
(gradients with respect to the target, ``weight`` or ``pos_weight``; non-CPU tensors; empty inputs) go
to the eager backend.
"""

from __future__ import annotations

from typing import Any

import torch

from .._native import binary_elements_torch
from ..numpy.reduce import upstream
from . import eager
from .native import fresh_buffer

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def takes(x: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """Whether the kernel computes this call (else the eager backend does)."""
    if x.device.type != "cpu" or x.dtype not in _DTYPES or x.numel() == 0:
        return False
    return all(
        o is None or (o.device.type == "cpu" and o.is_floating_point() and not o.requires_grad)
        for o in others
    )


def _kind(math: eager.RowMath) -> str:
    if isinstance(math, eager.KLDivMath):
        return "kl_div_log_target" if math.log_target else "kl_div"
    return "bce_with_logits"


def _periodic(w: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A weight broadcast to the input's shape as the kernel reads it: 1-D, element i uses w[i mod len].

    A (C,) vector expanded along the leading axes gives its row (read where it lies when its last axis
    is contiguous), a contiguous full-size weight itself; any other broadcast is materialised.
    """
    if w is None:
        return None
    w = w.to(dtype)
    if w.dim() > 1 and all(s == 0 or n == 1 for s, n in zip(w.stride()[:-1], w.shape[:-1])):
        return w[(0,) * (w.dim() - 1)].contiguous()
    return w.contiguous().reshape(-1)


class _Operands:
    """The kernel's operands of one call: contiguous, in the compute dtype (copies only where needed)."""

    def __init__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        w: torch.Tensor | None,
        pw: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> None:
        self.x = x.detach().to(dtype).contiguous()
        self.t = t.detach().to(dtype).contiguous()
        self.w = _periodic(w, dtype)
        self.pw = _periodic(pw, dtype)


class NativeBinary(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        math: eager.RowMath,
        x: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        pos_weight: torch.Tensor | None,
        denominator: float | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        ctx.math, ctx.dtype, ctx.denominator = math, dtype, denominator
        kind = _kind(math)
        ops = _Operands(x, target, weight, pos_weight, dtype)
        reduction = math.reduction
        ctx.precomputed = ctx.needs_input_grad[1] and reduction != "none"
        grad = None
        if reduction == "none":
            loss, _ = binary_elements_torch(kind, ops.x, ops.t, ops.w, ops.pw, loss=True)
            out = loss.view(x.shape)  # type: ignore[union-attr]
        else:
            den = float(x.numel()) if denominator is None else denominator
            if ctx.precomputed:
                grad = fresh_buffer(ops.x)
                scale = 1.0 / den if reduction == "mean" else 1.0
                _, total = binary_elements_torch(
                    kind, ops.x, ops.t, ops.w, ops.pw, total=True, grad=grad, grad_scale=scale
                )
            else:
                _, total = binary_elements_torch(kind, ops.x, ops.t, ops.w, ops.pw, total=True)
            assert total is not None
            out = torch.tensor(total / den if reduction == "mean" else total, dtype=dtype)
        # the caller's tensors (not the widened copies), widened again where backward needs them
        ctx.save_for_backward(grad, x, target, weight, pos_weight)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        math, dtype = ctx.math, ctx.dtype
        grad, x, target, weight, pos_weight = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (double backward): the reference's gradient in differentiable torch ops
            xd = x.to(dtype)  # differentiable: the graph reaches the caller's x through the cast
            like = torch.empty(x.shape, dtype=dtype)
            g = upstream(like, math.reduction, grad_output.to(dtype), ctx.denominator)
            cast = [None if v is None else v.to(dtype) for v in (target, weight, pos_weight)]
            return None, math.grad(xd, cast[0], cast[1], cast[2], g), *_NONES
        if ctx.precomputed:
            scale = float(grad_output)  # a CPU scalar: no synchronisation involved
            return None, (grad if scale == 1.0 else grad * scale), *_NONES
        ops = _Operands(x, target, weight, pos_weight, dtype)
        g = grad_output.detach().to(dtype).expand(x.shape).contiguous()
        grad = fresh_buffer(ops.x)
        binary_elements_torch(_kind(math), ops.x, ops.t, ops.w, ops.pw, grad=grad, grad_scale=g)
        return None, grad.view(x.shape), *_NONES


_NONES = (None, None, None, None, None)


def native_bce_with_logits(
    math: eager.BCEWithLogitsMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
) -> torch.Tensor:
    """The ``native`` entry of ``binary_cross_entropy_with_logits`` (``crossent._dispatch.TABLE``).

    ``weight`` and ``pos_weight`` are None or broadcast to the target's shape; returns the loss in the
    compute dtype (the caller casts it to torch's output dtype).
    """
    if not takes(x, target, weight, pos_weight):
        return eager.row_loss(math, x, target, weight, pos_weight)
    dtype = eager.compute_dtype(x, target, weight, pos_weight)
    return NativeBinary.apply(math, x, target, weight, pos_weight, None, dtype)


def native_kl_div(
    math: eager.KLDivMath,
    x: torch.Tensor,
    target: torch.Tensor,
    denominator: torch.Tensor | None,
) -> torch.Tensor:
    """The ``native`` entry of ``kl_div``: ``target`` of ``x``'s shape; ``denominator`` the mean's D
    (the batch size for ``batchmean``; None: the number of elements)."""
    if not takes(x, target):
        return eager.row_loss(math, x, target, None, None, denominator)
    dtype = eager.compute_dtype(x, target)
    den = None if denominator is None else float(denominator)
    return NativeBinary.apply(math, x, target, None, None, den, dtype)
