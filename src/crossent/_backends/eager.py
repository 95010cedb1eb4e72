"""The eager PyTorch backend: the NumPy reference's row functions, run on torch tensors.

``crossent.numpy`` is written against the Python array API, so its row-level functions (``ce_rows``,
``ce_rows_grad``, ``focal_rows``, …) run unchanged on torch tensors. This module wraps them in one
``torch.autograd.Function`` whose backward is the reference's *analytic* gradient (softmax − target,
scaled), not autograd through a softmax. Because that backward is made of differentiable torch ops,
double backward works too.

Every loss here is described by a frozen ``RowMath`` (its forward rows, its gradient, whether it is
per-row or per-element); static options travel inside it, so ``backward`` returns one gradient per tensor.
Math runs in float32 for half-precision inputs (float64 stays float64); the gradient comes back in the
input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._contract import CEOptions
from ..numpy import binary, categorical, divergence, focal
from ..numpy.reduce import reduce, upstream


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The promoted floating dtype of the tensors, at least float32."""
    dtype = torch.float32
    for t in tensors:
        if t is not None and t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


@dataclass(frozen=True)
class RowMath:
    """A loss as the reference computes it: ``loss(x, t, w, aux)`` and ``grad(x, t, w, aux, g)``.

    ``per_row``: the loss has one value per row of an (M, C) ``x`` (categorical losses); otherwise one per
    element (binary losses). ``reduction``: how the per-row values are reduced.
    """

    kind: str
    reduction: str
    options: Any = None
    prob_target: bool = False
    per_row: bool = True
    promote_target: bool = False

    # -- the math: one dispatch table onto the reference -----------------------------------------
    def loss(
        self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, aux: torch.Tensor | None
    ) -> torch.Tensor:
        o = self.options
        if self.kind == "ce":
            return categorical.ce_rows(x, t, w, o, self.prob_target)[0]
        if self.kind == "nll":
            return categorical.nll_rows(x, t, w, o.ignore_index)
        if self.kind == "focal":
            return focal.focal_rows(x, t, w, _alpha(aux, o), o.gamma, o.ce, self.prob_target)
        if self.kind == "bce":
            return binary.bce_elements(x, t, w)
        if self.kind == "bce_logits":
            return binary.bce_logits_elements(x, t, w, aux)
        if self.kind == "sigmoid_focal":
            return binary.sigmoid_focal_elements(x, t, o.alpha, o.gamma)
        if self.kind == "kl":
            return divergence.kl_div_elements(x, t, o.log_target)
        if self.kind == "entropy":
            return divergence.entropy_rows(x)
        raise AssertionError(self.kind)

    def grad(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        w: torch.Tensor | None,
        aux: torch.Tensor | None,
        g: torch.Tensor,
    ) -> torch.Tensor:
        o = self.options
        if self.kind == "ce":
            return categorical.ce_rows_grad(x, t, w, o, self.prob_target, g)
        if self.kind == "nll":
            return categorical.nll_rows_grad(x, t, w, o.ignore_index, g)
        if self.kind == "focal":
            return focal.focal_rows_grad(
                x, t, w, _alpha(aux, o), o.gamma, o.ce, self.prob_target, g
            )
        if self.kind == "bce":
            return binary.bce_elements_grad(x, t, w, g)
        if self.kind == "bce_logits":
            return binary.bce_logits_elements_grad(x, t, w, aux, g)
        if self.kind == "sigmoid_focal":
            return binary.sigmoid_focal_elements_grad(x, t, o.alpha, o.gamma, g)
        if self.kind == "kl":
            return divergence.kl_div_elements_grad(x, t, o.log_target, g)
        if self.kind == "entropy":
            return divergence.entropy_rows_grad(x, g)
        raise AssertionError(self.kind)


@dataclass(frozen=True)
class FocalOptions:
    ce: CEOptions
    gamma: float
    alpha_scalar: float | None


@dataclass(frozen=True)
class SigmoidFocalOptions:
    alpha: float
    gamma: float


@dataclass(frozen=True)
class KLOptions:
    log_target: bool


def _alpha(aux: torch.Tensor | None, o: FocalOptions) -> Any:
    return aux if aux is not None else o.alpha_scalar


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if t is None or not t.is_floating_point():
        return t
    return t.to(dtype)


class RowLoss(torch.autograd.Function):
    """Reference forward, reduced once; analytic reference backward (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        math: RowMath,
        x: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        aux: torch.Tensor | None,
        denominator: torch.Tensor | None,
    ) -> torch.Tensor:
        dtype = compute_dtype(
            x, target if math.promote_target else None, weight if math.promote_target else None
        )
        rows = math.loss(x.to(dtype), _cast(target, dtype), _cast(weight, dtype), _cast(aux, dtype))
        ctx.math, ctx.dtype = math, dtype
        ctx.save_for_backward(x, target, weight, aux, denominator)
        return reduce(rows, math.reduction, denominator)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        math, dtype = ctx.math, ctx.dtype
        x, target, weight, aux, denominator = ctx.saved_tensors
        need_x, need_t, need_w, need_aux = ctx.needs_input_grad[1:5]
        xd, td, wd, ad = x.to(dtype), _cast(target, dtype), _cast(weight, dtype), _cast(aux, dtype)
        grad_x = grad_t = grad_w = grad_aux = None
        if need_x:
            rows_shape = x.shape[:1] if math.per_row else x.shape
            like = torch.empty(rows_shape, dtype=dtype, device=x.device)
            g = upstream(like, math.reduction, grad_output.to(dtype), denominator)
            grad_x = math.grad(xd, td, wd, ad, g).to(x.dtype)
        if need_t or need_w or need_aux:
            if math.kind == "ce" and not math.prob_target and need_w:
                raise RuntimeError(
                    "The function 'nll_loss_forward' is not differentiable with respect to argument "
                    "'weight'. (crossent: class weights are constants on the class-index path, as in torch)"
                )
            # Gradients with respect to targets and weights (rare): autograd through the reference forward.
            with torch.enable_grad():
                leaves = [
                    None if v is None else (v.detach().requires_grad_(True) if need else v.detach())
                    for v, need in ((td, need_t), (wd, need_w), (ad, need_aux))
                ]
                out = reduce(math.loss(xd.detach(), *leaves), math.reduction, denominator)
                wanted = [v for v, need in zip(leaves, (need_t, need_w, need_aux)) if need]
                grads = iter(torch.autograd.grad(out, wanted, grad_output, allow_unused=True))
            grad_t = next(grads).to(target.dtype) if need_t else None
            grad_w = next(grads).to(weight.dtype) if need_w else None
            grad_aux = next(grads).to(aux.dtype) if need_aux else None
        return None, grad_x, grad_t, grad_w, grad_aux, None


def row_loss(
    math: RowMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    aux: torch.Tensor | None = None,
    denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply :class:`RowLoss` (the eager backend's single entry point)."""
    return RowLoss.apply(math, x, target, weight, aux, denominator)


__all__ = [
    "FocalOptions",
    "KLOptions",
    "RowLoss",
    "RowMath",
    "SigmoidFocalOptions",
    "compute_dtype",
    "row_loss",
]
