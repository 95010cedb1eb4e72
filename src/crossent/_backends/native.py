"""The compiled CPU kernel as a PyTorch backend of the categorical cross-entropy.

Computes ``crossent.numpy.cross_entropy`` (formulas there); :mod:`crossent._native` runs the kernel, this
module only connects it to autograd:

* scalar losses (``sum``/``mean``) with a gradient needed: one kernel call in the forward computes the
  per-row losses *and* the gradient for an upstream of 1 (``1/D`` folded in for ``mean``), written into a
  fresh buffer (or into the input with ``inplace=True``); the backward only scales it by ``grad_output``
  (skipped when that is exactly 1 — a CPU scalar, so reading it costs nothing).
* ``reduction="none"``: the forward computes the losses only; the backward calls the kernel once more with
  the per-row ``grad_output`` as the gradient scale, so it is applied exactly.

Half-precision logits (float16/bfloat16) run the same kernel on a copy widened once, inside the forward, to
the eager backend's compute dtype (float32, or float64 when a probability target promotes to it), with
targets and weights cast alike: the loss keeps that dtype, as on the eager path, and the gradient is rounded
once to the input dtype (by autograd). Between forward and backward the graph keeps the caller's logits and
the float32 gradient (4 bytes per logit beyond them; PyTorch keeps a half-precision one, 2); the widened copy
is not kept. ``inplace`` is ignored for them. Cases the kernel does not take
(float32/float64 logits with a probability target or weight of another dtype, gradients with respect to
targets or class weights) go to the eager backend. Under ``create_graph=True`` the backward is the
reference's gradient in torch ops, so double backward works as on the eager path.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _native
from .._native._memory import advise_huge_pages
from ..numpy.reduce import reduce, upstream
from . import eager

_HALF = (torch.float16, torch.bfloat16)


def _takes(math: eager.CrossEntropyMath, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None) -> bool:
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64, *_HALF)
        or x.numel() == 0
    ):
        return False
    if (math.prob_target and t.requires_grad) or (w is not None and w.requires_grad):
        return False
    if x.dtype in _HALF:
        return True  # widened together with the target and weight (see native_ce)
    return (not math.prob_target or t.dtype == x.dtype) and (w is None or w.dtype == x.dtype)


def _fresh_buffer(x: torch.Tensor) -> torch.Tensor:
    """An untouched gradient buffer like ``x``, backed by huge pages where the OS allows (see _memory)."""
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    advise_huge_pages(grad.data_ptr(), grad.numel() * grad.element_size())
    return grad


class NativeCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        math: eager.CrossEntropyMath,
        x: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        denominator: torch.Tensor | None,
        inplace: bool,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        options, prob = math.options, math.prob_target
        ctx.math, ctx.inplace, ctx.dtype = math, inplace, dtype
        ctx.precomputed = ctx.needs_input_grad[1] and math.reduction != "none"
        saved_x = x
        x = x.detach().to(dtype)  # half precision: the widened copy lives only during the forward
        grad = None
        if ctx.precomputed:
            scale = 1.0
            if math.reduction == "mean":
                den = float(x.shape[0]) if denominator is None else float(denominator)
                scale = 1.0 / den if den != 0 else float("inf")
            grad = x if inplace else _fresh_buffer(x)
            loss, _ = _native.ce_rows_native_torch(
                x,
                target,
                weight,
                options,
                prob,
                grad=grad,
                grad_scale=scale,
                inplace=inplace,
            )
            if inplace:
                ctx.mark_dirty(saved_x)
        else:
            loss, _ = _native.ce_rows_native_torch(x, target, weight, options, prob)
        # the caller's x (half precision: not the widened copy), widened again where backward needs it
        ctx.save_for_backward(grad, None if inplace else saved_x, target, weight, denominator)
        return reduce(loss, math.reduction, denominator)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        math = ctx.math
        grad, x, target, weight, denominator = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (double backward): the reference's gradient, made of differentiable torch ops.
            if x is None:
                raise RuntimeError("crossent: double backward is not available after inplace=True")
            x = x.to(ctx.dtype)  # differentiable: the graph reaches the caller's x through the cast
            like = torch.empty(x.shape[:1], dtype=x.dtype)
            g = upstream(like, math.reduction, grad_output.to(x.dtype), denominator)
            return None, math.grad(x, target, weight, None, g), None, None, None, None, None
        # (a float32 gradient of half-precision logits is rounded once, by autograd, to their dtype)
        if ctx.precomputed:
            scale = float(grad_output)  # a CPU scalar: no synchronisation involved
            return None, (grad if scale == 1.0 else grad * scale), None, None, None, None, None
        x = x.detach().to(ctx.dtype)
        like = torch.empty(x.shape[:1], dtype=x.dtype)
        g = upstream(like, math.reduction, grad_output.to(x.dtype), denominator).contiguous()
        grad = _fresh_buffer(x)
        _native.ce_rows_native_torch(
            x, target, weight, math.options, math.prob_target, grad=grad, grad_scale=g
        )
        return None, grad, None, None, None, None, None


def native_ce(
    math: eager.CrossEntropyMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    denominator: torch.Tensor | None,
    inplace: bool = False,
    held: int = 0,
) -> torch.Tensor:
    """The native backend's entry point (the ``native`` entry of ``crossent._dispatch.TABLE``).

    ``held`` (which inputs are crossent's own layout copies) needs no action here: this backend saves
    its inputs strongly.
    """
    if not _takes(math, x, target, weight):
        return eager.row_loss(math, x, target, weight, None, denominator)
    dtype = x.dtype
    if x.dtype in _HALF:
        # the kernel runs on a widened copy of x made inside the forward (not kept for backward); inplace
        # is ignored, as the kernel cannot write a float32 gradient into half-precision logits
        dtype = eager.compute_dtype(x, target, weight)
        weight = None if weight is None else weight.to(dtype)
        target = target.to(dtype) if target.is_floating_point() else target
        inplace = False
    return NativeCE.apply(math, x, target, weight, denominator, inplace and x.requires_grad, dtype)

