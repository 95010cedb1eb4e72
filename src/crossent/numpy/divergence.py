r"""Information measures: KL divergence (PyTorch's ``kl_div`` contract) and the entropy of a softmax.

* :func:`kl_div` takes log-probabilities ``input`` (:math:`\log q`) and a target :math:`p` (or
  :math:`\log p` with ``log_target=True``); pointwise :math:`p(\log p - \log q)` with the convention
  :math:`0 \log 0 = 0`; ``batchmean`` divides the sum by the batch size (``input.shape[0]``), ``mean`` by
  the number of elements. :math:`\partial/\partial\,\texttt{input} = -p`.
* :func:`entropy` of logits :math:`x`: :math:`H = \operatorname{lse}(x) - \sum_c p_c x_c`,
  :math:`\partial H/\partial x_j = -p_j(\log p_j + H)`.

Together with :func:`crossent.numpy.cross_entropy`: :math:`\mathrm{CE}(q, x) = H(q) + \mathrm{KL}(q\,\|\,\operatorname{softmax} x)`.
"""

from __future__ import annotations

from typing import Any

from .._contract import KL_REDUCTIONS, check_reduction, entropy_layout
from . import _layout
from ._xp import Array, compute_dtype, namespace
from .primitives import log_softmax
from .reduce import reduce, upstream


def xlogy(x: Array, y: Array) -> Array:
    """``x · log y`` with ``0 · log y = 0`` (also for y = 0)."""
    xp = namespace(x, y)
    return x * _log_where_nonzero(xp, x, y)


def _log_where_nonzero(xp: Any, x: Array, y: Array) -> Array:
    """``log y`` where ``x ≠ 0``, and ``log 1 = 0`` where ``x = 0`` (so ``x · log y`` is 0 there)."""
    return xp.log(xp.where(x == 0, 1.0, y))


def kl_div_elements(input: Array, target: Array, log_target: bool) -> Array:
    xp = namespace(input, target)
    if log_target:
        loss = target - input
        loss *= xp.exp(target)
        return loss
    # p·(log p − log q) with 0·log 0 = 0 (and 0·(−log q) = NaN for log q = −inf, as in torch)
    loss = _log_where_nonzero(xp, target, target)
    loss -= input
    loss *= target
    return loss


def kl_div_elements_grad(input: Array, target: Array, log_target: bool, g: Array) -> Array:
    xp = namespace(input, target, g)
    grad = (xp.exp(target) if log_target else target) * g
    grad *= -1.0  # ∂/∂input = −p·g
    return grad


def _kl_denominator(input: Array, reduction: str) -> float | None:
    if reduction == "batchmean":
        return float(input.shape[0]) if len(input.shape) > 0 else 1.0
    return None


def _prepare_kl(input: Array, target: Array):
    xp = namespace(input, target)
    input, target = xp.asarray(input), xp.asarray(target)
    dtype = compute_dtype(xp, input)
    x = xp.astype(input, dtype)
    t = xp.astype(xp.broadcast_to(target, x.shape), dtype)
    return xp, x, t


def kl_div(input: Array, target: Array, reduction: str = "mean", log_target: bool = False) -> Array:
    """KL divergence with PyTorch's ``kl_div`` conventions (module doc); reductions incl. ``batchmean``.

    Example:
        >>> import numpy as np
        >>> float(kl_div(np.log(np.array([0.5, 0.5])), np.array([1.0, 0.0]), reduction="sum"))  # log 2
        0.6931471805599453
    """
    check_reduction(reduction, KL_REDUCTIONS)
    xp, x, t = _prepare_kl(input, target)
    loss = kl_div_elements(x, t, log_target)
    if reduction == "batchmean":
        return reduce(loss, "mean", _kl_denominator(x, reduction))
    return reduce(loss, reduction)


def kl_div_grad(
    input: Array,
    target: Array,
    reduction: str = "mean",
    log_target: bool = False,
    *,
    grad_output: Array | float = 1.0,
) -> Array:
    """∂(grad_output · :func:`kl_div`)/∂input = −p (scaled by the reduction)."""
    check_reduction(reduction, KL_REDUCTIONS)
    xp, x, t = _prepare_kl(input, target)
    if reduction == "batchmean":
        g = upstream(x, "mean", grad_output, _kl_denominator(x, reduction))
    else:
        g = upstream(x, reduction, grad_output)
    return kl_div_elements_grad(x, t, log_target, g)


def entropy_rows(x: Array) -> Array:
    """Entropy of softmax over the last axis of (M, C) logits, in nats (0·log 0 = 0)."""
    xp = namespace(x)
    logp = log_softmax(x)
    p = xp.exp(logp)
    return -xp.sum(xp.where(p == 0, xp.zeros_like(p), p * logp), axis=-1)


def entropy_rows_grad(x: Array, g: Array) -> Array:
    xp = namespace(x, g)
    logp = log_softmax(x)
    p = xp.exp(logp)
    h = -xp.sum(xp.where(p == 0, xp.zeros_like(p), p * logp), axis=-1, keepdims=True)
    safe_logp = xp.where(p == 0, xp.zeros_like(logp), logp)
    return -p * (safe_logp + h) * xp.reshape(g, (-1, 1))


def entropy(input: Array, reduction: str = "none") -> Array:
    r"""Entropy :math:`H(\operatorname{softmax}(x))` in nats per position; class axis as in cross_entropy.

    Example:
        >>> import numpy as np
        >>> float(entropy(np.zeros(4)))  # log 4
        1.3862943611198906
    """
    check_reduction(reduction)
    xp = namespace(input)
    layout = entropy_layout(input)
    x = xp.astype(_layout.to_rows(xp.asarray(input), layout), compute_dtype(xp, input))
    return reduce(_layout.loss_from_rows(entropy_rows(x), layout), reduction)


def entropy_grad(
    input: Array, reduction: str = "none", *, grad_output: Array | float = 1.0
) -> Array:
    r"""∂(grad_output · :func:`entropy`)/∂input: :math:`-p_j(\log p_j + H)`."""
    check_reduction(reduction)
    xp = namespace(input)
    layout = entropy_layout(input)
    x = xp.astype(_layout.to_rows(xp.asarray(input), layout), compute_dtype(xp, input))
    like = xp.zeros(x.shape[:1], dtype=x.dtype)
    g = upstream(_layout.loss_from_rows(like, layout), reduction, grad_output)
    return _layout.from_rows(entropy_rows_grad(x, xp.reshape(g, (-1,))), layout)
