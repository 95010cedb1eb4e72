"""Pieces the categorical Triton ops share (cross-entropy in :mod:`.ops`, focal loss in :mod:`.focal_ops`).

Buffers and fakes of a categorical forward, the upstream-gradient mode of the forward's gradient, the one
reduction, the in-place scaling op of a handed-over gradient, and the rule for what falls back to the
eager backend. (No ``from __future__ import annotations``: ``torch.library.custom_op`` reads the real
annotations.)
"""

from typing import Any

import torch

from ...numpy.reduce import reduce
from ..eager import compute_dtype
from .ce import G_INV_DEN, G_SCALAR, launch_scale

Tensor = torch.Tensor


def upstream_mode(reduction: str, den: Tensor | None, rows: int) -> tuple[int, float]:
    """(G_MODE, g_scale) of the forward gradient: 1 for sum/none, 1/D for mean (D on device or M)."""
    if reduction != "mean":
        return G_SCALAR, 1.0
    if den is not None:
        return G_INV_DEN, 1.0
    return G_SCALAR, 1.0 / rows


def reduced(rows: Tensor, reduction: str, den: Tensor | None) -> Tensor:
    # the one definition of the reductions (crossent.numpy.reduce); torch.sum is deterministic
    return reduce(rows, reduction, den)


def row_buffer(x: Tensor, wanted: bool = True) -> Tensor:
    return torch.empty(x.shape[0] if wanted else 0, dtype=torch.float32, device=x.device)


def forward_buffers(x: Tensor, reduction: str, compute_grad: bool) -> tuple[Tensor, ...]:
    """``(rows, lse, coef, grad)`` of a categorical forward (:func:`triton_ce`, the focal loss's):
    ``coef`` for the backward of ``"none"``, ``grad`` for ``sum``/``mean``, each empty when not needed."""
    per_row = reduction == "none"
    coef = row_buffer(x, compute_grad and per_row)
    grad_shape = x.shape if compute_grad and not per_row else (0,)
    grad = torch.empty(grad_shape, dtype=x.dtype, device=x.device)
    return row_buffer(x), row_buffer(x), coef, grad


def fake_outputs(x: Tensor, reduction: str, compute_grad: bool) -> tuple[Tensor, ...]:
    """The outputs ``(loss, lse, coef, grad)`` of a categorical forward, for its fake."""
    M = x.shape[0]
    per_row = reduction == "none"
    loss = x.new_empty((M,) if per_row else (), dtype=torch.float32)
    lse = x.new_empty((M,), dtype=torch.float32)
    coef = x.new_empty((M if compute_grad and per_row else 0,), dtype=torch.float32)
    grad = x.new_empty(x.shape if compute_grad and not per_row else (0,))
    return loss, lse, coef, grad


@torch.library.custom_op("crossent::triton_ce_scale_", mutates_args=("grad",))
def triton_ce_scale_(grad: Tensor, g: Tensor, per_row: bool) -> None:
    launch_scale(grad, g.to(torch.float32).contiguous(), per_row=per_row)


@triton_ce_scale_.register_fake
def _(grad, g, per_row):
    return None


def scale_(grad: Tensor, g: Tensor) -> None:
    triton_ce_scale_(grad, g, False)


def falls_back(math: Any, x: Tensor, target: Tensor, weight: Tensor | None) -> bool:
    """Cases the kernel does not cover; the eager backend computes them (same values, same errors)."""
    floats = (target, weight) if math.prob_target else ()
    if compute_dtype(x, *floats) == torch.float64:
        return True  # float64 math: the eager backend
    if x.shape[0] == 0 or x.shape[1] == 0:
        return True  # empty: nothing to launch
    if target.requires_grad or (weight is not None and weight.requires_grad):
        return True  # gradients with respect to targets or class weights
    return False
