"""The Triton kernels as ``torch.library`` custom ops, their autograd, and the backend's entry point.

``torch.compile(fullgraph=True)`` sees each launch as one opaque op with a fake (meta) implementation;
autograd is registered with ``register_autograd``. Nothing here synchronises with the host: the mean's
denominator and the upstream gradient stay on the device, and the backward of a reduced loss is one
``_scale_kernel`` launch that does no memory traffic when the upstream gradient is 1.

(No ``from __future__ import annotations`` in this file: ``torch.library.custom_op`` reads the real
annotations.)

Ops (namespace ``crossent``):

* ``triton_ce(x, target, weight, den, …) -> (loss, lse, coef, grad)``: forward. For ``sum``/``mean``
  with ``compute_grad`` the gradient (upstream factor 1) is written into a fresh buffer ``grad``; for
  ``none`` the per-row coefficient of p in the gradient is kept instead (``coef``). The loss is reduced
  here by a deterministic ``torch.sum`` of the per-row losses.
* ``triton_ce_rows_backward(x, target, weight, lse, coef, grad_rows, …) -> grad``: backward of
  ``reduction="none"``: one pass over the logits, the per-row upstream gradient applied exactly.
* ``triton_ce_scale_(grad!, g, per_row)``: ``grad *= g`` in place, skipped on the device where g == 1.
* ``triton_ce_inplace_(x!, target, weight, den, …) -> (loss, lse)``: forward that writes the gradient into
  the logits (``inplace=True``); wrapped in an ``autograd.Function`` that calls ``ctx.mark_dirty``.
"""

from typing import Any

import torch

from ...numpy.reduce import reduce
from ..eager import RowMath, compute_dtype, row_loss
from .ce import (
    G_INV_DEN,
    G_PER_ROW,
    G_SCALAR,
    STATS_COMPUTE,
    STATS_LOAD,
    STATS_SAVE,
    launch_ce,
    launch_scale,
)

Tensor = torch.Tensor


def _upstream_mode(reduction: str, den: Tensor | None, rows: int) -> tuple[int, float]:
    """(G_MODE, g_scale) of the forward gradient: 1 for sum/none, 1/D for mean (D on device or M)."""
    if reduction != "mean":
        return G_SCALAR, 1.0
    if den is not None:
        return G_INV_DEN, 1.0
    return G_SCALAR, 1.0 / rows


def _reduced(rows: Tensor, reduction: str, den: Tensor | None) -> Tensor:
    # the one definition of the reductions (crossent.numpy.reduce); torch.sum is deterministic
    return reduce(rows, reduction, den)


def _row_buffer(x: Tensor, wanted: bool = True) -> Tensor:
    return torch.empty(x.shape[0] if wanted else 0, dtype=torch.float32, device=x.device)


# ---------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------


@torch.library.custom_op("crossent::triton_ce", mutates_args=())
def triton_ce(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    den: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    prob_target: bool,
    reduction: str,
    compute_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(loss, lse, coef, grad)``: ``coef`` (M,) for the backward of ``"none"``, ``grad`` (the
    gradient for upstream 1) for ``sum``/``mean``; each empty when not needed."""
    rows, lse = _row_buffer(x), _row_buffer(x)
    per_row = reduction == "none"
    coef = _row_buffer(x, compute_grad and per_row)
    grad_wanted = compute_grad and not per_row
    grad = torch.empty(x.shape if grad_wanted else (0,), dtype=x.dtype, device=x.device)
    g_mode, g_scale = _upstream_mode(reduction, den, x.shape[0])
    launch_ce(
        x, target, weight, den, rows, lse, coef if coef.numel() else None,
        grad if grad_wanted else None,
        row_stats=STATS_SAVE if coef.numel() else STATS_COMPUTE, g_mode=g_mode, g_scale=g_scale,
        ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        prob_target=prob_target,
    )  # fmt: skip
    return _reduced(rows, reduction, den), lse, coef, grad


@triton_ce.register_fake
def _(x, target, weight, den, ignore_index, label_smoothing, z_loss, softcap, prob_target,
      reduction, compute_grad):  # fmt: skip
    M = x.shape[0]
    per_row = reduction == "none"
    loss = x.new_empty((M,) if per_row else (), dtype=torch.float32)
    lse = x.new_empty((M,), dtype=torch.float32)
    coef = x.new_empty((M if compute_grad and per_row else 0,), dtype=torch.float32)
    grad = x.new_empty(x.shape if compute_grad and not per_row else (0,))
    return loss, lse, coef, grad


# ---------------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------------


@torch.library.custom_op("crossent::triton_ce_rows_backward", mutates_args=())
def triton_ce_rows_backward(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    lse: Tensor,
    coef: Tensor,
    grad_rows: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    prob_target: bool,
) -> Tensor:
    """Backward of ``reduction="none"``: one pass (read x, write the gradient) from the forward's lse and
    per-row coefficient, with the per-row upstream gradient applied exactly."""
    grad = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    launch_ce(
        x, target, weight, grad_rows.to(torch.float32).contiguous(), lse, lse, coef, grad,
        row_stats=STATS_LOAD, g_mode=G_PER_ROW, g_scale=1.0, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, prob_target=prob_target,
    )  # fmt: skip
    return grad


@triton_ce_rows_backward.register_fake
def _(x, target, weight, lse, coef, grad_rows, ignore_index, label_smoothing, z_loss, softcap,
      prob_target):  # fmt: skip
    return x.new_empty(x.shape)


@torch.library.custom_op("crossent::triton_ce_scale_", mutates_args=("grad",))
def triton_ce_scale_(grad: Tensor, g: Tensor, per_row: bool) -> None:
    launch_scale(grad, g.to(torch.float32).contiguous(), per_row=per_row)


@triton_ce_scale_.register_fake
def _(grad, g, per_row):
    return None


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, target, weight, den, *options, reduction, _ = inputs
    ctx.options = tuple(options)
    ctx.reduction = reduction
    _, lse, coef, grad = output
    if reduction == "none":
        # the gradient is computed in backward (g_i applied exactly), in one pass from lse and coef
        ctx.save_for_backward(x, target, weight, lse, coef)
    else:
        # the gradient was computed in forward (g = 1): keep only it
        ctx.save_for_backward(grad)


def _backward(ctx: Any, grad_loss: Tensor, *_unused: Tensor | None) -> tuple:
    if ctx.reduction == "none":
        x, target, weight, lse, coef = ctx.saved_tensors
        grad_x = triton_ce_rows_backward(x, target, weight, lse, coef, grad_loss, *ctx.options)
    else:
        (grad_x,) = ctx.saved_tensors
        triton_ce_scale_(grad_x, grad_loss, False)
    return (grad_x,) + (None,) * 10


triton_ce.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------
# In place (inplace=True): the gradient overwrites the logits
# ---------------------------------------------------------------------------------------------------


@torch.library.custom_op("crossent::triton_ce_inplace_", mutates_args=("x",))
def triton_ce_inplace_(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    den: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    prob_target: bool,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    M = x.shape[0]
    rows, lse = _row_buffer(x), _row_buffer(x)
    # "none": g_i is unknown until backward; the gradient of row i is g_i·∇ℓ_i, so write ∇ℓ_i (g = 1)
    # now and scale each row in backward.
    g_mode, g_scale = _upstream_mode(reduction, den, M)
    launch_ce(
        x, target, weight, den, rows, lse, None, x,
        row_stats=STATS_COMPUTE, g_mode=g_mode, g_scale=g_scale, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, prob_target=prob_target,
    )  # fmt: skip
    return _reduced(rows, reduction, den), lse


@triton_ce_inplace_.register_fake
def _(
    x, target, weight, den, ignore_index, label_smoothing, z_loss, softcap, prob_target, reduction
):
    M = x.shape[0]
    return x.new_empty((M,) if reduction == "none" else (), dtype=torch.float32), x.new_empty(
        (M,), dtype=torch.float32
    )


class InplaceCE(torch.autograd.Function):
    """Loss whose forward overwrites the logits with the gradient (``ctx.mark_dirty``).

    ``root`` is the tensor that owns the memory of the (M, C) rows (the caller's logits, or the base they
    are a flat view of): autograd lets a function that modifies a *view* in place return only that view,
    so the function takes the base and returns it beside the loss.
    """

    @staticmethod
    def forward(
        ctx: Any,
        root: Tensor,
        target: Tensor,
        weight: Tensor | None,
        den: Tensor | None,
        spec: tuple,
    ) -> tuple[Tensor, Tensor]:
        *options, reduction = spec
        rows = root.view(target.shape[0], -1)
        loss, _ = triton_ce_inplace_(rows, target, weight, den, *options, reduction)
        ctx.mark_dirty(root)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(root)
        ctx.per_row = reduction == "none"
        ctx.rows_shape = rows.shape
        return loss, root

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None, grad_root: Tensor | None):
        if grad_root is not None:
            raise RuntimeError(
                "crossent: cross_entropy(..., inplace=True) overwrote its input with the gradient; that "
                "tensor cannot be used in the graph after the call"
            )
        if grad_loss is None:
            return None, None, None, None, None
        (grad,) = ctx.saved_tensors
        triton_ce_scale_(grad.view(ctx.rows_shape), grad_loss, ctx.per_row)
        return grad, None, None, None, None


def _memory_owner(x: Tensor) -> Tensor | None:
    """The tensor whose memory is exactly the contiguous (M, C) rows ``x`` (``x`` or its base), or None."""
    root = x._base if x._base is not None else x
    same = (
        x.is_contiguous()
        and root.is_contiguous()
        and root.numel() == x.numel()
        and root.data_ptr() == x.data_ptr()
        and root.dtype == x.dtype
    )
    return root if same else None


# ---------------------------------------------------------------------------------------------------
# Backend entry point
# ---------------------------------------------------------------------------------------------------


def _falls_back(math: RowMath, x: Tensor, target: Tensor, weight: Tensor | None) -> bool:
    """Cases the kernel does not cover; the eager backend computes them (same values, same errors)."""
    floats = (target, weight) if math.prob_target else ()
    if compute_dtype(x, *floats) == torch.float64:
        return True  # float64 math: the eager backend
    if x.shape[0] == 0 or x.shape[1] == 0:
        return True  # empty: nothing to launch
    if target.requires_grad or (weight is not None and weight.requires_grad):
        return True  # gradients with respect to targets or class weights
    return False


def ce_impl(
    math: RowMath,
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    den: Tensor | None,
    *,
    inplace: bool = False,
) -> Tensor:
    """Categorical cross-entropy of (M, C) rows with the Triton kernel (``_dispatch.register_ce``).

    Returns the loss reduced per ``math.reduction`` ((M,) for ``"none"``), float32. float64 inputs,
    empty inputs and gradients with respect to targets/weights go to the eager backend. ``inplace=True``
    lets the forward write the gradient into ``x`` (when one is needed) instead of a new buffer.
    """
    if math.kind != "ce" or _falls_back(math, x, target, weight):
        return row_loss(math, x, target, weight, None, den)
    o = math.options
    softcap = float(o.softcap) if o.softcap is not None else 0.0
    options = (
        int(o.ignore_index),
        float(o.label_smoothing),
        float(o.z_loss),
        softcap,
        bool(math.prob_target),
    )
    x_rows = x if x.stride(-1) == 1 else x.contiguous()
    if math.prob_target and target.stride(-1) != 1:
        target = target.contiguous()
    if weight is not None and not weight.is_contiguous():
        weight = weight.contiguous()
    compute_grad = x.requires_grad and torch.is_grad_enabled()
    # in place only where the rows own their memory (a slice of a larger tensor gets a new buffer)
    root = _memory_owner(x_rows) if inplace and compute_grad else None
    if root is not None:
        loss, _ = InplaceCE.apply(root, target, weight, den, options + (math.reduction,))
        return loss
    loss, _, _, _ = triton_ce(x_rows, target, weight, den, *options, math.reduction, compute_grad)
    return loss
