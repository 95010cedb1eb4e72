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

Autograd of ``sum``/``mean``: the forward keeps only the gradient buffer and backward hands it over
(:mod:`.handover`, shared with the focal and binary losses: a second backward through a retained graph,
``create_graph=True``, and why the logits are held weakly). ``reduction="none"`` saves the logits (its
backward reads them); its ``create_graph`` backward is the same eager recompute. ``inplace=True``
overwrote the logits: it supports ``retain_graph`` (a scaled copy) but raises for ``create_graph``.
"""

from typing import Any

import torch

from ..._contract import CEOptions
from ..eager import CrossEntropyMath, row_loss
from ..ownership import HOLD_INPUT, HOLD_TARGET, memory_owner
from .ce import (
    G_PER_ROW,
    STATS_COMPUTE,
    STATS_LOAD,
    STATS_SAVE,
    launch_ce,
)
from .chunk import launch_over_logits
from .handover import Handover, builds_graph, has_keep_graph_probe, scaled
from .rows import (
    fake_outputs,
    falls_back,
    forward_buffers,
    reduced,
    row_buffer,
    scale_,
    triton_ce_scale_,
    upstream_mode,
)

Tensor = torch.Tensor


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
    held: int,
    reduction: str,
    compute_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(loss, lse, coef, grad)``: ``coef`` (M,) for the backward of ``"none"``, ``grad`` (the
    gradient for upstream 1) for ``sum``/``mean``; each empty when not needed. ``held``: which of x,
    target are crossent's own copies (autograd holds them strongly, see :mod:`.handover`)."""
    rows, lse, coef, grad = forward_buffers(x, reduction, compute_grad)
    g_mode, g_scale = upstream_mode(reduction, den, x.shape[0])
    launch_ce(
        x, target, weight, den, rows, lse, coef if coef.numel() else None,
        grad if grad.numel() else None,
        row_stats=STATS_SAVE if coef.numel() else STATS_COMPUTE, g_mode=g_mode, g_scale=g_scale,
        ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        prob_target=prob_target,
    )  # fmt: skip
    return reduced(rows, reduction, den), lse, coef, grad


@triton_ce.register_fake
def _(x, target, weight, den, ignore_index, label_smoothing, z_loss, softcap, prob_target,
      held, reduction, compute_grad):  # fmt: skip
    return fake_outputs(x, reduction, compute_grad)


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


def _eager_args(inputs: tuple) -> tuple[CrossEntropyMath, tuple]:
    """The eager backend's ``row_loss`` arguments for the inputs of :func:`triton_ce`."""
    x, target, weight, den, ignore_index, smoothing, z_loss, softcap, prob_target, _, red, _ = (
        inputs
    )
    options = CEOptions(ignore_index, smoothing, z_loss, softcap if softcap > 0 else None, red)
    math = CrossEntropyMath(red, options, prob_target)
    return math, (x, target, weight, None, den)


def _rows_backward(inputs: tuple, saved: tuple, grad_rows: Tensor) -> Tensor:
    x, target, weight, _, *options, _, _, _ = inputs  # (options up to prob_target)
    lse, coef = saved
    return triton_ce_rows_backward(x, target, weight, lse, coef, grad_rows, *options)


_HANDOVER = Handover(triton_ce, scale_, _rows_backward, _eager_args, lambda inputs: inputs[-3])
triton_ce.register_autograd(_HANDOVER.backward, setup_context=_HANDOVER.setup_context)


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
    rows, lse = row_buffer(x), row_buffer(x)
    # "none": g_i is unknown until backward; the gradient of row i is g_i·∇ℓ_i, so write ∇ℓ_i (g = 1)
    # now and scale each row in backward.
    g_mode, g_scale = upstream_mode(reduction, den, M)
    # (split rows take two launches there: the loss reads z_y, which another program overwrites)
    launch_over_logits(
        x, target, weight, den, rows, lse, g_mode=g_mode, g_scale=g_scale, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap, prob_target=prob_target,
    )  # fmt: skip
    return reduced(rows, reduction, den), lse


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
        ctx.consumed = False
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
        # the logits hold the gradient now: nothing to recompute it (or differentiate it) from
        if builds_graph():
            raise RuntimeError(
                "crossent: cross_entropy(..., inplace=True) has no second derivative (its forward "
                "overwrote the logits with the gradient); call it without inplace=True to backward "
                "with create_graph=True"
            )
        if ctx.consumed:
            if has_keep_graph_probe():
                ctx.saved_tensors  # noqa: B018  (freed graph: torch's "backward a second time" error)
            raise RuntimeError(
                "crossent: cross_entropy(..., inplace=True) hands its gradient over in the first "
                "backward and overwrote the logits it would be recomputed from; call it without "
                "inplace=True to backward twice through the same graph (retain_graph=True)"
            )
        (grad,) = ctx.saved_tensors
        per_row = ctx.per_row
        g = grad_loss.view(-1, 1) if per_row else grad_loss
        rows = scaled(
            ctx, grad.view(ctx.rows_shape), g, lambda rows, g: triton_ce_scale_(rows, g, per_row)
        )
        return rows.view(grad.shape), None, None, None, None


# ---------------------------------------------------------------------------------------------------
# Backend entry point
# ---------------------------------------------------------------------------------------------------


def ce_impl(
    math: CrossEntropyMath,
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    den: Tensor | None,
    *,
    inplace: bool = False,
    held: int = 0,
) -> Tensor:
    """Categorical cross-entropy of (M, C) rows with the Triton kernel (the ``triton`` entry of
    ``crossent._dispatch.TABLE``).

    Returns the loss reduced per ``math.reduction`` ((M,) for ``"none"``), float32. float64 inputs,
    empty inputs and gradients with respect to targets/weights go to the eager backend. ``inplace=True``
    lets the forward write the gradient into ``x`` (when one is needed) instead of a new buffer.
    ``held``: which of x, target are crossent's own layout copies (:mod:`crossent._backends.ownership`).
    """
    if falls_back(math, x, target, weight):
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
    # copies made here are crossent's own: the handover holds them strongly (nobody else does)
    x_rows = x
    if x.stride(-1) != 1:
        x_rows, held = x.contiguous(), held | HOLD_INPUT
    if math.prob_target and target.stride(-1) != 1:
        target, held = target.contiguous(), held | HOLD_TARGET
    if weight is not None and not weight.is_contiguous():
        weight = weight.contiguous()
    compute_grad = x.requires_grad and torch.is_grad_enabled()
    # in place only where the rows own their memory (a slice of a larger tensor gets a new buffer)
    root = memory_owner(x_rows) if inplace and compute_grad else None
    if root is not None:
        loss, _ = InplaceCE.apply(root, target, weight, den, options + (math.reduction,))
        return loss
    loss, _, _, _ = triton_ce(
        x_rows, target, weight, den, *options, held, math.reduction, compute_grad
    )
    return loss
