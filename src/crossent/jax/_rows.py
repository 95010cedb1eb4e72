"""Differentiable row and element math for JAX: the reference's functions with their analytic derivatives.

Each loss of :mod:`crossent.numpy` comes as a pair: the per-row (or per-element) loss and the gradient
of ``Σ g·loss`` with respect to the logits. :func:`analytic` turns such a pair into one function of JAX
arrays with a ``jax.custom_jvp`` rule:

* the tangent of the loss along the logits is ``Σ_c G_c ẋ_c`` with ``G`` from the reference's gradient
  function (a per-element product for elementwise losses). It is linear in ``ẋ``, so JAX also gets
  reverse mode from it by transposition (``jax.grad`` gives ``g·G``, computed once in the forward), and
  higher derivatives by differentiating the gradient function itself;
* the tangents along the other floating inputs (probability targets, class weights, ``alpha``,
  ``pos_weight``) come from JAX's own differentiation of the reference's loss function, and only when
  one of them is differentiated (symbolic zeros otherwise: no extra work for the usual ``jax.grad`` of
  the logits).

``jax.jit``, ``jax.vmap`` (per-example gradients), ``jax.jvp`` and ``jax.grad`` therefore all work.
The reference functions are called on JAX arrays directly (they are written against the array API).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .._contract import CEOptions
from ..numpy import binary as _binary
from ..numpy import categorical as _categorical
from ..numpy import divergence as _divergence
from ..numpy import focal as _focal

Array = jax.Array


@contextmanager
def quiet_int64() -> Iterator[None]:
    """Silence JAX's notice that int64 indices become int32 without ``jax_enable_x64`` (expected here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Explicitly requested dtype int64")
        yield


@dataclass(frozen=True)
class RowMath:
    """A reference loss as a (loss, gradient) pair over ``(x, *arrays)`` with hashable static options.

    Attributes:
        loss: ``loss(x, arrays, static) -> (M,)`` per-row losses, or elementwise losses of ``x``'s shape.
        grad: ``grad(x, arrays, static, g) -> ∂(Σ g·loss)/∂x`` with ``g`` shaped like the loss.
        static: the options the two functions need (hashable).
        rowwise: True when each loss is a row of ``x`` (class axis last), False for elementwise losses.
    """

    loss: Callable[..., Array]
    grad: Callable[..., Array]
    static: Any
    rowwise: bool


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def analytic(math: RowMath, x: Array, *arrays: Array | None) -> Array:
    """The loss of ``math`` at ``x`` (and the other inputs ``arrays``), differentiable as the module says."""
    with quiet_int64():
        return math.loss(x, arrays, math.static)


def _is_zero(t: object) -> bool:
    return t is None or isinstance(t, SymbolicZero)


@partial(analytic.defjvp, symbolic_zeros=True)
def _analytic_jvp(math: RowMath, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, *arrays = primals
    dx, *darrays = tangents
    with quiet_int64():
        out = math.loss(x, tuple(arrays), math.static)
        tangent = jnp.zeros_like(out)
        if not _is_zero(dx):
            grad = math.grad(x, tuple(arrays), math.static, jnp.ones_like(out))
            tangent = tangent + (jnp.sum(grad * dx, axis=-1) if math.rowwise else grad * dx)
        moving = [i for i, d in enumerate(darrays) if not _is_zero(d)]
        if moving:

            def along(*values: Array) -> Array:
                full = list(arrays)
                for i, v in zip(moving, values):
                    full[i] = v
                return math.loss(x, tuple(full), math.static)

            _, extra = jax.jvp(along, [arrays[i] for i in moving], [darrays[i] for i in moving])
            tangent = tangent + extra
    return out, tangent


# --------------------------------------------------------------------------------------------------
# The reference's losses as RowMath pairs (static: options the reference functions take as Python values)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CEStatic:
    options: CEOptions
    prob_target: bool


def _ce_loss(x: Array, arrays: tuple, s: CEStatic) -> Array:
    target, weight = arrays
    return _categorical.ce_rows(x, target, weight, s.options, s.prob_target)[0]


def _ce_grad(x: Array, arrays: tuple, s: CEStatic, g: Array) -> Array:
    target, weight = arrays
    return _categorical.ce_rows_grad(x, target, weight, s.options, s.prob_target, g)


def ce_rows(x: Array, target: Array, weight: Array | None, options: CEOptions, prob: bool) -> Array:
    """Per-row cross-entropy of (M, C) logits: :func:`crossent.numpy.categorical.ce_rows`."""
    return analytic(RowMath(_ce_loss, _ce_grad, CEStatic(options, prob), True), x, target, weight)


def _nll_loss(x: Array, arrays: tuple, ignore_index: int) -> Array:
    target, weight = arrays
    return _categorical.nll_rows(x, target, weight, ignore_index)


def _nll_grad(x: Array, arrays: tuple, ignore_index: int, g: Array) -> Array:
    target, weight = arrays
    return _categorical.nll_rows_grad(x, target, weight, ignore_index, g)


def nll_rows(logp: Array, target: Array, weight: Array | None, ignore_index: int) -> Array:
    """Per-row NLL of (M, C) log-probabilities: :func:`crossent.numpy.categorical.nll_rows`."""
    return analytic(RowMath(_nll_loss, _nll_grad, ignore_index, True), logp, target, weight)


@dataclass(frozen=True)
class FocalStatic:
    gamma: float
    alpha: float | None  # a scalar alpha; an array alpha travels with the arrays
    options: CEOptions
    prob_target: bool


def _focal_alpha(arrays: tuple, s: FocalStatic) -> Any:
    return s.alpha if arrays[2] is None else arrays[2]


def _focal_loss(x: Array, arrays: tuple, s: FocalStatic) -> Array:
    target, weight, _ = arrays
    alpha = _focal_alpha(arrays, s)
    return _focal.focal_rows(x, target, weight, alpha, s.gamma, s.options, s.prob_target)


def _focal_grad(x: Array, arrays: tuple, s: FocalStatic, g: Array) -> Array:
    target, weight, _ = arrays
    alpha = _focal_alpha(arrays, s)
    return _focal.focal_rows_grad(x, target, weight, alpha, s.gamma, s.options, s.prob_target, g)


def focal_rows(
    x: Array,
    target: Array,
    weight: Array | None,
    alpha: Array | float | None,
    gamma: float,
    options: CEOptions,
    prob: bool,
) -> Array:
    """Per-row softmax focal loss of (M, C) logits: :func:`crossent.numpy.focal.focal_rows`."""
    alpha_array = alpha if isinstance(alpha, jax.Array) else None
    alpha_static = None if alpha_array is not None or alpha is None else float(alpha)
    static = FocalStatic(gamma, alpha_static, options, prob)
    math = RowMath(_focal_loss, _focal_grad, static, True)
    return analytic(math, x, target, weight, alpha_array)


def _bce_loss(x: Array, arrays: tuple, _: None) -> Array:
    target, weight, pos_weight = arrays
    return _binary.bce_logits_elements(x, target, weight, pos_weight)


def _bce_grad(x: Array, arrays: tuple, _: None, g: Array) -> Array:
    target, weight, pos_weight = arrays
    return _binary.bce_logits_elements_grad(x, target, weight, pos_weight, g)


def bce_logits_elements(
    x: Array, target: Array, weight: Array | None, pos_weight: Array | None
) -> Array:
    """Elementwise BCE of logits: :func:`crossent.numpy.binary.bce_logits_elements`."""
    return analytic(RowMath(_bce_loss, _bce_grad, None, False), x, target, weight, pos_weight)


def _sfocal_loss(x: Array, arrays: tuple, s: tuple[float, float]) -> Array:
    return _binary.sigmoid_focal_elements(x, arrays[0], *s)


def _sfocal_grad(x: Array, arrays: tuple, s: tuple[float, float], g: Array) -> Array:
    return _binary.sigmoid_focal_elements_grad(x, arrays[0], *s, g)


def sigmoid_focal_elements(x: Array, target: Array, alpha: float, gamma: float) -> Array:
    """Elementwise sigmoid focal loss: :func:`crossent.numpy.binary.sigmoid_focal_elements`."""
    return analytic(RowMath(_sfocal_loss, _sfocal_grad, (alpha, gamma), False), x, target)


def _kl_loss(x: Array, arrays: tuple, log_target: bool) -> Array:
    return _divergence.kl_div_elements(x, arrays[0], log_target)


def _kl_grad(x: Array, arrays: tuple, log_target: bool, g: Array) -> Array:
    return _divergence.kl_div_elements_grad(x, arrays[0], log_target, g)


def kl_elements(input: Array, target: Array, log_target: bool) -> Array:
    """Elementwise KL divergence terms: :func:`crossent.numpy.divergence.kl_div_elements`."""
    return analytic(RowMath(_kl_loss, _kl_grad, log_target, False), input, target)


# --------------------------------------------------------------------------------------------------
# The mean's division: Σℓ / D, with the reference's gradient when D = 0
# --------------------------------------------------------------------------------------------------


@jax.custom_jvp
def divide_mean(total: Array, denominator: Array) -> Array:
    """``total / denominator`` (0/0 = NaN, x/0 = ±inf, as :func:`crossent.numpy.reduce.reduce`).

    Its derivative with respect to ``total`` is ``1/D``, and 0 when ``D = 0``: with every position
    ignored the mean is NaN but the gradient is all zeros (PyTorch's and the reference's convention),
    where plain JAX differentiation would give ``inf · 0 = NaN``.
    """
    return total / denominator


@divide_mean.defjvp
def _divide_mean_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    total, den = primals
    d_total, d_den = tangents
    out = total / den
    nonzero = den != 0
    inv = jnp.where(nonzero, 1.0 / jnp.where(nonzero, den, 1.0), 0.0)
    return out, d_total * inv - jnp.where(nonzero, out * inv, 0.0) * d_den
