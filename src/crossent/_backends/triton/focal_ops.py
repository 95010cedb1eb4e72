"""The Triton focal-loss kernel as ``torch.library`` custom ops, its autograd, and its entry point.

Same structure as :mod:`.ops` (read its docstring): the forward writes the gradient for upstream 1
(``sum``/``mean``), handed over in backward by :mod:`.handover` (scaled by ``triton_ce_scale_``, no
traffic when the upstream gradient is 1; a second backward and ``create_graph=True`` as for
cross-entropy); for ``none`` it saves lse and the per-row coefficient and the backward is one pass with
the per-row upstream gradient applied exactly. No host synchronisation.

(No ``from __future__ import annotations`` in this file: ``torch.library.custom_op`` reads the real
annotations.)

Ops (namespace ``crossent``):

* ``triton_focal(x, target, a, den, alpha, gamma, …) -> (loss, lse, coef, grad)``: forward.
* ``triton_focal_rows_backward(x, target, a, lse, coef, grad_rows, …) -> grad``: backward of ``"none"``.

``a`` is the per-class factor α_c·w_c (fp32) or None, ``alpha`` a scalar factor on top (1 when α is a
tensor or None).
"""

import torch

from ..._contract import CEOptions
from ..eager import FocalMath, row_loss
from ..ownership import HOLD_INPUT, HOLD_TARGET
from .focal import launch_focal
from .handover import Handover
from .rows import fake_outputs, falls_back, forward_buffers, reduced, scale_, upstream_mode

Tensor = torch.Tensor


@torch.library.custom_op("crossent::triton_focal", mutates_args=())
def triton_focal(
    x: Tensor,
    target: Tensor,
    a: Tensor | None,
    den: Tensor | None,
    alpha: float,
    gamma: float,
    ignore_index: int,
    prob_target: bool,
    held: int,
    reduction: str,
    compute_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(loss, lse, coef, grad)`` as :func:`.ops.triton_ce` does (``held`` too)."""
    rows, lse, coef, grad = forward_buffers(x, reduction, compute_grad)
    g_mode, g_scale = upstream_mode(reduction, den, x.shape[0])
    launch_focal(
        x, target, a, den, rows, lse, coef if coef.numel() else None,
        grad if grad.numel() else None, load_stats=False, g_mode=g_mode, g_scale=g_scale,
        alpha=alpha, gamma=gamma, ignore_index=ignore_index, prob_target=prob_target,
    )  # fmt: skip
    return reduced(rows, reduction, den), lse, coef, grad


@triton_focal.register_fake
def _(x, target, a, den, alpha, gamma, ignore_index, prob_target, held, reduction, compute_grad):
    return fake_outputs(x, reduction, compute_grad)


@torch.library.custom_op("crossent::triton_focal_rows_backward", mutates_args=())
def triton_focal_rows_backward(
    x: Tensor,
    target: Tensor,
    a: Tensor | None,
    lse: Tensor,
    coef: Tensor,
    grad_rows: Tensor,
    alpha: float,
    gamma: float,
    ignore_index: int,
    prob_target: bool,
) -> Tensor:
    """Backward of ``reduction="none"``: one pass from the forward's lse and per-row coefficient."""
    grad = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    launch_focal(
        x, target, a, grad_rows.to(torch.float32).contiguous(), lse, lse, coef, grad,
        load_stats=True, g_mode=2, g_scale=1.0, alpha=alpha, gamma=gamma,
        ignore_index=ignore_index, prob_target=prob_target,
    )  # fmt: skip
    return grad


@triton_focal_rows_backward.register_fake
def _(x, target, a, lse, coef, grad_rows, alpha, gamma, ignore_index, prob_target):
    return x.new_empty(x.shape)


def _eager_args(inputs: tuple) -> tuple[FocalMath, tuple]:
    """The eager backend's ``row_loss`` arguments for the inputs of :func:`triton_focal` (``a`` = α_c·w_c
    as the class weight, the scalar α as ``alpha_scalar``: the same product)."""
    x, target, a, den, alpha, gamma, ignore_index, prob_target, _, reduction, _ = inputs
    options = CEOptions(ignore_index, reduction=reduction)
    math = FocalMath(reduction, options, gamma, alpha, prob_target)
    return math, (x, target, a, None, den)


def _rows_backward(inputs: tuple, saved: tuple, grad_rows: Tensor) -> Tensor:
    x, target, a, _, *options, _, _, _ = inputs  # (options up to prob_target)
    lse, coef = saved
    return triton_focal_rows_backward(x, target, a, lse, coef, grad_rows, *options)


_HANDOVER = Handover(triton_focal, scale_, _rows_backward, _eager_args, lambda inputs: inputs[-3])
triton_focal.register_autograd(_HANDOVER.backward, setup_context=_HANDOVER.setup_context)


# ---------------------------------------------------------------------------------------------------
# Backend entry point
# ---------------------------------------------------------------------------------------------------


def _class_factor(alpha: Tensor | None, weight: Tensor | None) -> Tensor | None:
    """a_c = α_c·w_c in fp32 (a (C,) elementwise product on the device), or None when both are absent."""
    if alpha is None and weight is None:
        return None
    if alpha is None or weight is None:
        one = alpha if weight is None else weight
        assert one is not None
        a = one.to(torch.float32)
    else:
        a = alpha.to(torch.float32) * weight.to(torch.float32)
    return a.contiguous()


def focal_impl(
    math: FocalMath,
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    den: Tensor | None,
    *,
    aux: Tensor | None = None,
    held: int = 0,
) -> Tensor:
    """Softmax focal loss of (M, C) rows with the Triton kernel (``aux`` the (C,) α tensor or None;
    ``held`` as in :func:`.ops.ce_impl`).

    Returns the loss reduced per ``math.reduction`` ((M,) for ``"none"``), float32. As for
    cross-entropy, float64 math, empty inputs and gradients with respect to targets, weights or α go to
    the eager backend (the kernel covers both target kinds at every row length).
    """
    # gradients with respect to α, or α on another device (the eager backend raises torch's error)
    alpha_elsewhere = aux is not None and (aux.requires_grad or aux.device != x.device)
    if alpha_elsewhere or falls_back(math, x, target, weight):
        return row_loss(math, x, target, weight, aux, den)
    alpha = 1.0 if math.alpha_scalar is None else float(math.alpha_scalar)
    # copies made here are crossent's own: the handover holds them strongly (nobody else does)
    x_rows = x
    if x.stride(-1) != 1:
        x_rows, held = x.contiguous(), held | HOLD_INPUT
    if math.prob_target and target.stride(-1) != 1:
        target, held = target.contiguous(), held | HOLD_TARGET
    compute_grad = x.requires_grad and torch.is_grad_enabled()
    loss, _, _, _ = triton_focal(
        x_rows, target, _class_factor(aux, weight), den, alpha, float(math.gamma),
        int(math.options.ignore_index), bool(math.prob_target), held, math.reduction, compute_grad,
    )  # fmt: skip
    return loss
