"""The compiled CPU kernel as a PyTorch backend of the categorical cross-entropy.

Computes ``crossent.numpy.cross_entropy`` (formulas there); :mod:`crossent._native` runs the kernel, this
module only connects it to autograd. Two entry points: :func:`native_ce` for (M, C) rows and
:func:`native_ce_spatial` for (N, C, d1, …, dk) logits, computed in their own layout (the class axis
strided, the gradient written in the same layout: no transposed copy either way).

* scalar losses (``sum``/``mean``) with a gradient needed: one kernel call in the forward computes the
  per-row losses *and* the gradient for an upstream of 1 (``1/D`` folded in for ``mean``), written into a
  fresh buffer; the backward only scales it by ``grad_output`` (skipped when that is exactly 1 — a CPU
  scalar, so reading it costs nothing).
* ``inplace=True`` (any reduction; logits that own their memory or are a full view of it): the forward
  writes the gradient into the logits themselves (``ctx.mark_dirty``) and the backward scales it there, so
  no (M, C) buffer is allocated at all.
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
from .ownership import memory_owner

_HALF = (torch.float16, torch.bfloat16)


def _takes(
    math: eager.CrossEntropyMath,
    x: torch.Tensor,
    t: torch.Tensor,
    w: torch.Tensor | None,
    spatial: bool = False,
) -> bool:
    if (
        (spatial and x.dim() < 3)
        or x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64, *_HALF)
        or x.numel() == 0
    ):
        return False
    if (math.prob_target and t.requires_grad) or (w is not None and w.requires_grad):
        return False
    if x.dtype in _HALF:
        return True  # widened together with the target and weight (see native_ce)
    return (not math.prob_target or t.dtype == x.dtype) and (w is None or w.dtype == x.dtype)


def fresh_buffer(x: torch.Tensor) -> torch.Tensor:
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
        dtype: torch.dtype,
        spatial: bool,
    ) -> torch.Tensor:
        options, prob = math.options, math.prob_target
        ctx.math, ctx.dtype, ctx.spatial = math, dtype, spatial
        kernel = _native.ce_spatial_native_torch if spatial else _native.ce_rows_native_torch
        ctx.precomputed = ctx.needs_input_grad[1] and math.reduction != "none"
        saved_x = x
        x = x.detach().to(dtype)  # half precision: the widened copy lives only during the forward
        grad = None
        if ctx.precomputed:
            grad = fresh_buffer(x)
            scale = _forward_scale(math, x, denominator, spatial)
            loss, _ = kernel(x, target, weight, options, prob, grad=grad, grad_scale=scale)
        else:
            loss, _ = kernel(x, target, weight, options, prob)
        # the caller's x (half precision: not the widened copy), widened again where backward needs it
        ctx.save_for_backward(grad, saved_x, target, weight, denominator)
        return reduce(loss, math.reduction, denominator)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        math = ctx.math
        grad, x, target, weight, denominator = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (double backward): the reference's gradient, made of differentiable torch ops.
            x = x.to(ctx.dtype)  # differentiable: the graph reaches the caller's x through the cast
            if ctx.spatial:
                return (
                    None,
                    _spatial_double_grad(math, x, target, weight, denominator, grad_output),
                    *_NONES,
                )
            like = torch.empty(x.shape[:1], dtype=x.dtype)
            g = upstream(like, math.reduction, grad_output.to(x.dtype), denominator)
            return None, math.grad(x, target, weight, None, g), *_NONES
        # (a float32 gradient of half-precision logits is rounded once, by autograd, to their dtype)
        if ctx.precomputed:
            scale = float(grad_output)  # a CPU scalar: no synchronisation involved
            return None, (grad if scale == 1.0 else grad * scale), *_NONES
        x = x.detach().to(ctx.dtype)
        like = torch.empty(x.shape[:1] + x.shape[2:], dtype=x.dtype)
        g = upstream(like, math.reduction, grad_output.to(x.dtype), denominator).contiguous()
        grad = fresh_buffer(x)
        kernel = _native.ce_spatial_native_torch if ctx.spatial else _native.ce_rows_native_torch
        kernel(x, target, weight, math.options, math.prob_target, grad=grad, grad_scale=g)
        return None, grad, *_NONES


_NONES = (None, None, None, None, None)


def _forward_scale(
    math: eager.CrossEntropyMath, x: torch.Tensor, denominator: torch.Tensor | None, spatial: bool
) -> float:
    """The upstream factor folded into a gradient computed in the forward: 1/D for mean, else 1."""
    if math.reduction != "mean":
        return 1.0
    count = x.numel() // x.shape[1] if spatial else x.shape[0]
    den = float(count) if denominator is None else float(denominator)
    return 1.0 / den if den != 0 else float("inf")


class InplaceNativeCE(torch.autograd.Function):
    """Loss whose forward overwrites the logits with their gradient (``inplace=True``).

    ``root`` owns the memory of the logits (they are ``root.view(shape)``): autograd lets a function that
    modifies a view in place return only that view, so it takes the base and returns it beside the loss
    (``ctx.mark_dirty``). The gradient is computed for an upstream of 1 (``1/D`` folded in for mean) and
    scaled in place by the upstream gradient in the backward, which hands the buffer over: no (M, C)
    buffer is allocated at all. A second backward through the graph and ``create_graph`` raise.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        root: torch.Tensor,
        math: eager.CrossEntropyMath,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        denominator: torch.Tensor | None,
        spatial: bool,
        shape: tuple[int, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = root.view(shape)
        kernel = _native.ce_spatial_native_torch if spatial else _native.ce_rows_native_torch
        scale = _forward_scale(math, x, denominator, spatial)
        loss, _ = kernel(
            x,
            target,
            weight,
            math.options,
            math.prob_target,
            grad=x,
            grad_scale=scale,
            inplace=True,
        )
        ctx.mark_dirty(root)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(root)
        ctx.reduction, ctx.shape, ctx.consumed = math.reduction, shape, False
        return reduce(loss, math.reduction, denominator), root

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_loss: torch.Tensor | None, grad_root: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        if grad_root is not None:
            raise RuntimeError(
                "crossent: cross_entropy(..., inplace=True) overwrote its input with the gradient; that "
                "tensor cannot be used in the graph after the call"
            )
        if grad_loss is None:
            return (None,) * 7
        if torch.is_grad_enabled():
            raise RuntimeError(
                "crossent: cross_entropy(..., inplace=True) has no second derivative (its forward "
                "overwrote the logits with the gradient); call it without inplace=True to backward "
                "with create_graph=True"
            )
        if ctx.consumed:
            raise RuntimeError(
                "crossent: cross_entropy(..., inplace=True) hands its gradient over in the first "
                "backward; call it without inplace=True to backward twice through the same graph"
            )
        ctx.consumed = True
        (root,) = ctx.saved_tensors
        grad = root.view(ctx.shape)
        if ctx.reduction == "none":  # per-row (per-position) upstream: scale each row in place
            g = grad_loss.to(grad.dtype)
            grad.mul_(g.unsqueeze(1) if grad.dim() > 2 else g.reshape(-1, 1))
        else:
            scale = float(grad_loss)  # a CPU scalar: no synchronisation involved
            if scale != 1.0:
                grad.mul_(scale)
        return (root, *((None,) * 6))


def _spatial_double_grad(
    math: eager.CrossEntropyMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    denominator: torch.Tensor | None,
    grad_output: torch.Tensor,
) -> torch.Tensor:
    """The reference's gradient of (N, C, d1, …) logits in differentiable torch ops (through row views)."""
    classes = x.shape[1]
    rows = x.movedim(1, -1).reshape(-1, classes)
    t = target.movedim(1, -1).reshape(-1, classes) if math.prob_target else target.reshape(-1)
    like = torch.empty(rows.shape[:1], dtype=x.dtype)
    go = grad_output.to(x.dtype)
    g = upstream(
        like, math.reduction, go.reshape(-1) if math.reduction == "none" else go, denominator
    )
    grad = math.grad(rows, t, weight, None, g)
    return grad.reshape(x.shape[:1] + x.shape[2:] + (classes,)).movedim(-1, 1)


def native_ce(
    math: eager.CrossEntropyMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    denominator: torch.Tensor | None,
    inplace: bool = False,
    held: int = 0,
) -> torch.Tensor:
    """The native backend's entry point (the ``native`` entry of ``crossent._dispatch.TABLE``): (M, C)
    rows, or (N, C, d1, …) logits computed where they lie (:func:`native_ce_spatial`).

    ``held`` (which inputs are crossent's own layout copies) needs no action here: this backend saves
    its inputs strongly.
    """
    if x.dim() > 2:
        return native_ce_spatial(math, x, target, weight, denominator, inplace)
    if not _takes(math, x, target, weight):
        return eager.row_loss(math, x, target, weight, None, denominator)
    return _apply(math, x, target, weight, denominator, inplace, False)


def native_ce_spatial(
    math: eager.CrossEntropyMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    denominator: torch.Tensor | None,
    inplace: bool = False,
) -> torch.Tensor:
    """:func:`native_ce` for (N, C, d1, …, dk) logits (k >= 1), computed in their layout.

    ``target`` is (N, d1, …, dk) class indices or (N, C, d1, …, dk) probabilities; the result is the
    (N, d1, …, dk) per-position loss for ``reduction="none"``, else reduced over all positions (``mean``
    divides by ``denominator``, or by N·d1·…·dk when it is None), exactly as :func:`native_ce` on the rows
    ``x.movedim(1, -1).reshape(-1, C)``. The gradient is written in ``x``'s layout (into ``x`` itself with
    ``inplace=True``). Inputs the kernel does not take run the eager backend on those row views.
    """
    if not _takes(math, x, target, weight, spatial=True):
        classes = x.shape[1]
        rows = x.movedim(1, -1).reshape(-1, classes)
        t = target.movedim(1, -1).reshape(-1, classes) if math.prob_target else target.reshape(-1)
        loss = eager.row_loss(math, rows, t, weight, None, denominator)
        return loss.reshape(x.shape[:1] + x.shape[2:]) if math.reduction == "none" else loss
    return _apply(math, x, target, weight, denominator, inplace, True)


def _apply(
    math: eager.CrossEntropyMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    denominator: torch.Tensor | None,
    inplace: bool,
    spatial: bool,
) -> torch.Tensor:
    dtype = x.dtype
    if x.dtype in _HALF:
        # the kernel runs on a widened copy of x made inside the forward (not kept for backward); inplace
        # is ignored, as the kernel cannot write a float32 gradient into half-precision logits
        dtype = eager.compute_dtype(x, target, weight)
        weight = None if weight is None else weight.to(dtype)
        target = target.to(dtype) if target.is_floating_point() else target
        inplace = False
    root = memory_owner(x) if inplace and x.requires_grad else None
    if root is not None:
        loss, _ = InplaceNativeCE.apply(
            root, math, target, weight, denominator, spatial, tuple(x.shape)
        )
        return loss
    return NativeCE.apply(math, x, target, weight, denominator, dtype, spatial)
