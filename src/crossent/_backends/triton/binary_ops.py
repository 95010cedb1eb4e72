"""The binary-loss Triton kernels as ``torch.library`` custom ops, their autograd, and the entry point.

Same structure as :mod:`.ops` (the categorical CE): each launch is one opaque op with a fake
implementation, autograd is registered with ``register_autograd``, and nothing synchronises with the
host (the mean's 1/N is a host constant from the shape; the upstream gradient stays on the device).

(No ``from __future__ import annotations`` in this file: ``torch.library.custom_op`` reads the real
annotations.)

Ops (namespace ``crossent``), ``kind`` 0 = BCE with logits, 1 = sigmoid focal loss:

* ``triton_binary(x, target, weight, pos_weight, kind, alpha, gamma, reduction, compute_grad)
  -> (loss, grad)``: forward. ``loss`` is per element (``none``, x's shape) or reduced (``sum``/``mean``:
  per-program partial sums added by ``torch.sum``, deterministic), float32. For ``sum``/``mean`` with
  ``compute_grad`` the gradient for upstream 1 is written in the same launch (``grad``, x's dtype);
  otherwise ``grad`` is empty.
* ``triton_binary_backward(x, target, weight, pos_weight, g, kind, alpha, gamma, g_scale) -> grad``:
  one elementwise pass with the upstream gradient ``g`` (per element, or 0-d) times ``g_scale``.
* ``triton_binary_scale_(grad!, g)``: ``grad *= g`` in place, skipped on the device where g == 1.

Autograd of ``sum``/``mean``: the forward's gradient is handed over by :mod:`.handover` (as for
cross-entropy: a second backward through a retained graph, ``create_graph=True``; the logits and the
target, both of the input's size, are held weakly). ``none`` saves its inputs; its ``create_graph``
backward is the same eager recompute.

``weight`` and ``pos_weight`` arrive as ``expand``-ed views of the input's shape (the public function
broadcasts them like torch) and are read through their strides, never materialised (see
:mod:`.binary`).
"""

import torch

from ...numpy.reduce import reduce
from .. import eager
from .binary import KIND_BCE_LOGITS, KIND_SIGMOID_FOCAL, launch_binary, launch_scale, num_programs
from .handover import Handover

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------


@torch.library.custom_op("crossent::triton_binary", mutates_args=())
def triton_binary(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    kind: int,
    alpha: float,
    gamma: float,
    reduction: str,
    compute_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Returns ``(loss, grad)``; ``grad`` (upstream 1, or 1/N for ``mean``) only for a reduced loss."""
    n = x.numel()
    per_element = reduction == "none"
    loss = torch.empty(
        x.shape if per_element else (num_programs(n),), dtype=torch.float32, device=x.device
    )
    grad_wanted = compute_grad and not per_element
    grad = torch.empty(x.shape if grad_wanted else (0,), dtype=x.dtype, device=x.device)
    launch_binary(
        x, target, weight, pos_weight, None,
        loss if per_element else None, None if per_element else loss, grad if grad_wanted else None,
        kind=kind, alpha=alpha, gamma=gamma, g_scale=1.0 / n if reduction == "mean" else 1.0,
    )  # fmt: skip
    if per_element:
        return loss, grad
    # Σ of the partials in a fixed order (torch.sum); the mean divides by N, a host number (the
    # reference's denominator for binary losses: crossent.numpy.reduce), so no host→device copy
    total = reduce(loss, "sum")
    return (total / n if reduction == "mean" else total), grad


@triton_binary.register_fake
def _(x, target, weight, pos_weight, kind, alpha, gamma, reduction, compute_grad):
    per_element = reduction == "none"
    loss = x.new_empty(x.shape if per_element else (), dtype=torch.float32)
    grad = x.new_empty(x.shape if compute_grad and not per_element else (0,))
    return loss, grad


# ---------------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------------


@torch.library.custom_op("crossent::triton_binary_backward", mutates_args=())
def triton_binary_backward(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    g: Tensor,
    kind: int,
    alpha: float,
    gamma: float,
    g_scale: float,
) -> Tensor:
    """∂ℓ/∂x · g · g_scale in one pass (``g`` per element or 0-d, read through its strides)."""
    grad = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    launch_binary(
        x, target, weight, pos_weight, g, None, None, grad,
        kind=kind, alpha=alpha, gamma=gamma, g_scale=g_scale,
    )  # fmt: skip
    return grad


@triton_binary_backward.register_fake
def _(x, target, weight, pos_weight, g, kind, alpha, gamma, g_scale):
    return x.new_empty(x.shape)


@torch.library.custom_op("crossent::triton_binary_scale_", mutates_args=("grad",))
def triton_binary_scale_(grad: Tensor, g: Tensor) -> None:
    launch_scale(grad, g.to(torch.float32).reshape(()).contiguous())


@triton_binary_scale_.register_fake
def _(grad, g):
    return None


def _eager_args(inputs: tuple) -> tuple[eager.RowMath, tuple]:
    """The eager backend's ``row_loss`` arguments for the inputs of :func:`triton_binary`."""
    x, target, weight, pos_weight, kind, alpha, gamma, reduction, _ = inputs
    math: eager.RowMath
    if kind == KIND_SIGMOID_FOCAL:
        math = eager.SigmoidFocalMath(reduction, alpha, gamma)
    else:
        math = eager.BCEWithLogitsMath(reduction)
    return math, (x, target, weight, pos_weight, None)


def _rows_backward(inputs: tuple, saved: tuple, grad_loss: Tensor) -> Tensor:
    x, target, weight, pos_weight, kind, alpha, gamma, _, _ = inputs
    return triton_binary_backward(x, target, weight, pos_weight, grad_loss, kind, alpha, gamma, 1.0)


_HANDOVER = Handover(triton_binary, triton_binary_scale_, _rows_backward, _eager_args)
triton_binary.register_autograd(_HANDOVER.backward, setup_context=_HANDOVER.setup_context)


# ---------------------------------------------------------------------------------------------------
# Backend entry point
# ---------------------------------------------------------------------------------------------------


def _falls_back(math: eager.RowMath, x: Tensor, target: Tensor, *others: Tensor | None) -> bool:
    """Cases the kernel does not cover; the eager backend computes them (same values, same errors)."""
    if not isinstance(math, (eager.BCEWithLogitsMath, eager.SigmoidFocalMath)):
        return True
    if not (x.is_floating_point() and target.is_floating_point()):
        return True  # integer logits or targets: the eager backend's promotion rules
    weight = others[0] if others else None
    if eager.compute_dtype(x, target, weight) == torch.float64:
        return True  # float64 math: the eager backend
    if x.numel() == 0:
        return True  # empty: nothing to launch (mean → NaN, sum → 0 from the eager backend)
    for v in (target, *others):
        if v is not None and (v.device != x.device or v.requires_grad):
            return True  # other devices (the eager backend reports them); gradients w.r.t. v
    if any(v is not None and v.is_complex() for v in others):
        return True
    return False


def binary_impl(
    math: eager.RowMath,
    x: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
) -> Tensor:
    """BCE with logits or sigmoid focal loss (by the type of ``math``) with the Triton kernel.

    ``weight`` and ``pos_weight`` are already broadcast to the target's shape (views). Returns the loss
    reduced per ``math.reduction`` (x's shape for ``"none"``), float32. float64 math, empty inputs,
    non-floating inputs, operands on other devices and gradients with respect to the target, weight or
    pos_weight go to the eager backend.
    """
    if _falls_back(math, x, target, weight, pos_weight):
        return eager.row_loss(math, x, target, weight, pos_weight)
    if isinstance(math, eager.SigmoidFocalMath):
        alpha, gamma, kind = float(math.alpha), float(math.gamma), KIND_SIGMOID_FOCAL
    else:
        alpha, gamma, kind = -1.0, 0.0, KIND_BCE_LOGITS
    compute_grad = x.requires_grad and torch.is_grad_enabled()
    loss, _ = triton_binary(
        x, target, weight, pos_weight, kind, alpha, gamma, math.reduction, compute_grad
    )
    return loss
