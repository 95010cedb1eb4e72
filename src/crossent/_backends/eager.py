"""The eager PyTorch backend: the NumPy reference's row functions, run on torch tensors.

``crossent.numpy`` is written against the Python array API, so its row-level functions (``ce_rows``,
``ce_rows_grad``, ``focal_rows``, …) run unchanged on torch tensors. This module wraps them in one
``torch.autograd.Function`` whose backward is the reference's *analytic* gradient (softmax − target,
scaled), not autograd through a softmax. Because that backward is made of differentiable torch ops,
double backward works too.

Every loss here is described by a frozen ``RowMath`` subclass (its forward rows, its gradient, whether it
is per-row or per-element); static options travel inside it, so ``backward`` returns one gradient per
tensor.
Math runs in float32 for half-precision inputs (float64 stays float64); the gradient comes back in the
input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._contract import CEOptions
from .._transforms import transforms_active
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

    One subclass per loss, each calling its reference row functions (no switch on a loss name). Class
    attributes say how the eager backend treats it: ``per_row`` (one value per row of an (M, C) ``x``, the
    categorical losses; otherwise one per element), ``promote_target`` (float targets and weights take
    part in the compute dtype), ``constant_weight`` (the class weight gets no gradient, as in torch's
    index-target path). ``reduction``: how the per-row values are reduced.
    """

    reduction: str
    name: ClassVar[str] = ""  # the public function's name (for messages)
    per_row: ClassVar[bool] = True
    promote_target: ClassVar[bool] = True
    constant_weight: ClassVar[bool] = False

    def loss(
        self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, aux: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def grad(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        w: torch.Tensor | None,
        aux: torch.Tensor | None,
        g: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class CrossEntropyMath(RowMath):
    """:func:`crossent.numpy.cross_entropy` rows (``options`` carries ε, λ, softcap, ignore_index)."""

    name: ClassVar[str] = "cross_entropy"
    options: CEOptions = CEOptions()
    prob_target: bool = False

    @property
    def constant_weight(self) -> bool:  # type: ignore[override]
        return not self.prob_target

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return categorical.ce_rows(x, t, w, self.options, self.prob_target)[0]

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return categorical.ce_rows_grad(x, t, w, self.options, self.prob_target, g)


@dataclass(frozen=True)
class NLLMath(RowMath):
    """:func:`crossent.numpy.nll_loss` rows."""

    name: ClassVar[str] = "nll_loss"
    ignore_index: int = -100
    promote_target: ClassVar[bool] = False

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return categorical.nll_rows(x, t, w, self.ignore_index)

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return categorical.nll_rows_grad(x, t, w, self.ignore_index, g)


@dataclass(frozen=True)
class FocalMath(RowMath):
    """:func:`crossent.numpy.focal_loss` rows; ``aux`` is the (C,) α tensor, else ``alpha_scalar``."""

    name: ClassVar[str] = "focal_loss"
    options: CEOptions = CEOptions()
    gamma: float = 2.0
    alpha_scalar: float | None = None
    prob_target: bool = False

    def _alpha(self, aux: torch.Tensor | None) -> Any:
        return aux if aux is not None else self.alpha_scalar

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return focal.focal_rows(
            x, t, w, self._alpha(aux), self.gamma, self.options, self.prob_target
        )

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return focal.focal_rows_grad(
            x, t, w, self._alpha(aux), self.gamma, self.options, self.prob_target, g
        )


@dataclass(frozen=True)
class BCEMath(RowMath):
    """:func:`crossent.numpy.binary_cross_entropy` elements."""

    name: ClassVar[str] = "binary_cross_entropy"
    per_row: ClassVar[bool] = False

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return binary.bce_elements(x, t, w)

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return binary.bce_elements_grad(x, t, w, g)


@dataclass(frozen=True)
class BCEWithLogitsMath(RowMath):
    """:func:`crossent.numpy.binary_cross_entropy_with_logits` elements (``aux``: pos_weight)."""

    name: ClassVar[str] = "binary_cross_entropy_with_logits"
    per_row: ClassVar[bool] = False

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return binary.bce_logits_elements(x, t, w, aux)

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return binary.bce_logits_elements_grad(x, t, w, aux, g)


@dataclass(frozen=True)
class SigmoidFocalMath(RowMath):
    """:func:`crossent.numpy.sigmoid_focal_loss` elements."""

    name: ClassVar[str] = "sigmoid_focal_loss"
    alpha: float = 0.25
    gamma: float = 2.0
    per_row: ClassVar[bool] = False

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return binary.sigmoid_focal_elements(x, t, self.alpha, self.gamma)

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return binary.sigmoid_focal_elements_grad(x, t, self.alpha, self.gamma, g)


@dataclass(frozen=True)
class KLDivMath(RowMath):
    """:func:`crossent.numpy.kl_div` elements."""

    name: ClassVar[str] = "kl_div"
    log_target: bool = False
    per_row: ClassVar[bool] = False

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return divergence.kl_div_elements(x, t, self.log_target)

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return divergence.kl_div_elements_grad(x, t, self.log_target, g)


@dataclass(frozen=True)
class EntropyMath(RowMath):
    """:func:`crossent.numpy.entropy` rows (no target)."""

    name: ClassVar[str] = "entropy"
    promote_target: ClassVar[bool] = False

    def loss(self, x, t, w, aux):  # type: ignore[no-untyped-def]
        return divergence.entropy_rows(x)

    def grad(self, x, t, w, aux, g):  # type: ignore[no-untyped-def]
        return divergence.entropy_rows_grad(x, g)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if t is None or not t.is_floating_point():
        return t
    return t.to(dtype)


def _reference_forward(
    math: RowMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    aux: torch.Tensor | None,
    denominator: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.dtype]:
    """The reduced loss in the compute dtype (float32 for half inputs), and that dtype."""
    dtype = compute_dtype(
        x, target if math.promote_target else None, weight if math.promote_target else None
    )
    t = _cast(target, dtype)
    assert t is not None  # (target is a tensor; _cast passes None through)
    rows = math.loss(x.to(dtype), t, _cast(weight, dtype), _cast(aux, dtype))
    return reduce(rows, math.reduction, denominator), dtype


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
        loss, dtype = _reference_forward(math, x, target, weight, aux, denominator)
        ctx.math, ctx.dtype = math, dtype
        ctx.save_for_backward(x, target, weight, aux, denominator)
        return loss

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
            if math.constant_weight and need_w:
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
                out = reduce(math.loss(xd.detach(), *leaves), math.reduction, denominator)  # type: ignore[arg-type]
                wanted = [
                    v
                    for v, need in zip(leaves, (need_t, need_w, need_aux))
                    if need and v is not None
                ]
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
    """Apply :class:`RowLoss` (the eager backend's single entry point).

    Under a function transform (``torch.func``, forward AD) the loss is :func:`composite_loss` instead.
    """
    if transforms_active():
        return composite_loss(math, x, target, weight, aux, denominator)
    return RowLoss.apply(math, x, target, weight, aux, denominator)


def composite_loss(
    math: RowMath,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    aux: torch.Tensor | None = None,
    denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """:class:`RowLoss`'s forward as plain torch ops: every transform differentiates it itself.

    Forward-mode AD, ``torch.func.grad``/``vmap``/``jacfwd``/``jacrev`` need no rule of crossent's here:
    the reference's forward is made of differentiable, batchable torch ops. Same dtypes as
    :class:`RowLoss`; class weights of the class-index path stay constants (detached), as in torch.
    """
    if weight is not None and math.constant_weight:
        weight = weight.detach()
    return _reference_forward(math, x, target, weight, aux, denominator)[0]


__all__ = [
    "BCEMath",
    "BCEWithLogitsMath",
    "CrossEntropyMath",
    "EntropyMath",
    "FocalMath",
    "KLDivMath",
    "NLLMath",
    "RowLoss",
    "RowMath",
    "SigmoidFocalMath",
    "composite_loss",
    "compute_dtype",
    "row_loss",
]
