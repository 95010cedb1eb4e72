r"""Softmax (multi-class) focal loss, with its analytic gradient.

Lin et al. (2017), generalised to C classes as in kornia and Keras: with :math:`p = \operatorname{softmax}(x)`,
:math:`\log p` computed directly, focusing parameter :math:`\gamma \ge 0`, per-class balance
:math:`\alpha_c` (a scalar applies to every class; None means 1) and class weights :math:`w_c`,

.. math::

    \ell = -\sum_c a_c\, q_c\, (1 - p_c)^{\gamma} \log p_c, \qquad a_c = \alpha_c w_c

with :math:`q` the one-hot of the index target (ignored positions give 0) or a probability target.
With :math:`u_c = 1 - p_c = -\operatorname{expm1}(\log p_c)` (accurate as :math:`p_c \to 1`),
:math:`A_c = u_c^{\gamma} - \gamma\, u_c^{\gamma}\, p_c \log p_c / u_c` and :math:`B_c = a_c q_c A_c`:

.. math:: \frac{\partial \ell}{\partial x_j} = p_j \sum_c B_c - B_j

(:math:`\log p_c / u_c \to -1` as :math:`u_c \to 0`). :math:`\gamma = 0, \alpha = 1` gives cross-entropy.
Reductions mirror :func:`crossent.numpy.cross_entropy`: ``mean`` divides by :math:`\sum w_{y_i}` over
non-ignored positions for index targets (α is part of the loss, not of the denominator) and by the
number of positions for probability targets.
"""

from __future__ import annotations

from typing import Any

from .._contract import CEOptions, ce_options, check_focal_alpha, check_gamma
from . import _layout
from ._xp import Array, namespace, one_hot, take_rows, writable
from .categorical import (
    ce_denominator,
    cross_entropy,  # noqa: F401  (the doctest compares with it)
    prepare_rows,
    row_lse,
    row_softmax_lse,
    valid_targets,
)
from .reduce import reduce, upstream


def _class_factor(
    xp: Any, alpha: Array | float | None, weight: Array | None, like: Array
) -> Array | float:
    a: Array | float = 1.0
    if alpha is not None:
        a = (
            xp.reshape(xp.astype(alpha, like.dtype), (1, -1))
            if hasattr(alpha, "shape")
            else float(alpha)
        )
    if weight is not None:
        a = a * xp.reshape(xp.astype(weight, like.dtype), (1, -1))
    return a


def _target_mass(
    xp: Any, target: Array, options: CEOptions, prob_target: bool, like: Array
) -> Array:
    """q: the probability target, or the one-hot of the index target with ignored rows all zero."""
    if prob_target:
        return xp.astype(target, like.dtype, copy=False)
    valid, safe = valid_targets(xp, target, options.ignore_index)
    hot = one_hot(xp, safe, like.shape[-1]) & xp.reshape(valid, (-1, 1))
    return xp.astype(hot, like.dtype)


def _class_factor_at(xp: Any, a: Array | float, safe: Array) -> Array | float:
    """a_y: the class factor of each row's target class."""
    if isinstance(a, float):
        return a
    a = xp.reshape(a, (-1,))
    return (
        a if a.shape[0] == 1 else xp.take(a, safe)
    )  # a 0-d alpha array: one factor for every class


def _logp(xp: Any, x: Array) -> Array:
    return x - xp.reshape(row_lse(xp, x), (-1, 1))  # log p directly, the stable lse of categorical


def _modulated_grad_factor(xp: Any, logp: Array, p: Array, gamma: float) -> Array:
    r""":math:`A = u^{\gamma}(1 - \gamma\, p \log p / u)`, :math:`u = 1 - p` (1 for γ = 0)."""
    if gamma == 0:
        return xp.ones_like(logp)
    u = -xp.expm1(logp)  # 1 - p, accurate as p -> 1
    positive = u > 0
    big_a = xp.where(positive, logp / xp.where(positive, u, 1.0), -1.0)  # log p / u -> -1 as u -> 0
    big_a *= p
    big_a *= -gamma
    big_a += 1.0
    big_a *= u**gamma
    return big_a


def focal_rows(
    x: Array,
    target: Array,
    weight: Array | None,
    alpha: Array | float | None,
    gamma: float,
    options: CEOptions,
    prob_target: bool,
) -> Array:
    """Per-row focal loss of (M, C) logits (formula: module doc)."""
    xp = namespace(x, target, weight)
    a = _class_factor(xp, alpha, weight, x)
    if not prob_target:
        # q is one-hot: ℓ = -a_y (1 - p_y)^γ log p_y, from the target logit and the row's lse
        valid, safe = valid_targets(xp, target, options.ignore_index)
        logp_y = take_rows(xp, x, safe) - row_lse(xp, x)
        mod = (-xp.expm1(logp_y)) ** gamma if gamma != 0 else 1.0
        return xp.where(valid, -(_class_factor_at(xp, a, safe) * mod * logp_y), 0.0)
    q = _target_mass(xp, target, options, prob_target, x)
    logp = _logp(xp, x)
    # 0·log p is 0 where q = 0, also for log p = -inf; log p itself stays wherever it is finite, so the
    # derivative with respect to q is -a (1 - p)^γ log p at q = 0 too
    terms = xp.where((q != 0) | xp.isfinite(logp), logp, 0.0)
    terms *= q
    if gamma != 0:
        terms *= (-xp.expm1(logp)) ** gamma  # (1 - p)^γ, accurate as p -> 1
    terms *= a
    return -xp.sum(terms, axis=-1)


def focal_rows_grad(
    x: Array,
    target: Array,
    weight: Array | None,
    alpha: Array | float | None,
    gamma: float,
    options: CEOptions,
    prob_target: bool,
    grad_rows: Array,
) -> Array:
    """Gradient of ``Σ_i grad_rows[i] · focal_rows(x)[i]`` with respect to ``x``."""
    xp = namespace(x, target, weight, grad_rows)
    a = _class_factor(xp, alpha, weight, x)
    g = xp.reshape(xp.astype(grad_rows, x.dtype, copy=False), (-1, 1))
    p, lse = row_softmax_lse(xp, x)
    if not prob_target:
        # B is nonzero at the target class only: ∂ℓ/∂x_j = B_y (p_j - [j = y]), B_y = a_y A_y
        valid, safe = valid_targets(xp, target, options.ignore_index)
        logp_y = take_rows(xp, x, safe) - lse[:, 0]
        big_a = _modulated_grad_factor(xp, logp_y, xp.exp(logp_y), gamma)
        b_y = xp.where(valid, _class_factor_at(xp, a, safe) * big_a, 0.0)
        grad = writable(p)
        grad -= xp.astype(one_hot(xp, safe, x.shape[-1]), x.dtype)  # p - onehot(y)
        grad *= xp.reshape(b_y, (-1, 1)) * g
        return grad
    q = _target_mass(xp, target, options, prob_target, x)
    logp = x - lse
    b = q * a
    if gamma != 0:  # A where q ≠ 0 (A is NaN where log p = -inf)
        b *= xp.where(q != 0, _modulated_grad_factor(xp, logp, p, gamma), 0.0)
    grad = p * xp.sum(b, axis=-1, keepdims=True)
    grad -= b
    grad *= g
    return grad


def focal_loss(
    input: Array,
    target: Array,
    alpha: Array | float | None = None,
    gamma: float = 2.0,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Array:
    r"""Softmax focal loss of logits against class-index or class-probability targets (module doc).

    Args:
        input: logits (C), (N, C) or (N, C, d1, …, dk).
        target: class indices (integers) or class probabilities (input's shape), as in
            :func:`crossent.numpy.cross_entropy`.
        alpha: per-class balance, a (C,) array or a scalar; None means 1.
        gamma: focusing parameter γ ≥ 0 (γ = 0, α = None is cross-entropy).
        weight, ignore_index, reduction: as in :func:`crossent.numpy.cross_entropy`.

    Example:
        >>> import numpy as np
        >>> x, y = np.array([[2.0, 0.0, -1.0]]), np.array([0])
        >>> bool(np.isclose(focal_loss(x, y, gamma=0.0), cross_entropy(x, y)))
        True
    """
    gamma = check_gamma(gamma)
    options = ce_options(ignore_index, 0.0, 0.0, None, reduction)
    xp, layout, x, t, w = prepare_rows(input, target, weight, options)
    check_focal_alpha(alpha, layout.num_classes)
    loss = focal_rows(x, t, w, alpha, gamma, options, layout.prob_target)
    denominator = ce_denominator(t, w, options, layout.prob_target, loss)
    return reduce(_layout.loss_from_rows(loss, layout), options.reduction, denominator)


def focal_loss_grad(
    input: Array,
    target: Array,
    alpha: Array | float | None = None,
    gamma: float = 2.0,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    grad_output: Array | float = 1.0,
) -> Array:
    """∂(grad_output · :func:`focal_loss`)/∂input, analytic (module doc)."""
    gamma = check_gamma(gamma)
    options = ce_options(ignore_index, 0.0, 0.0, None, reduction)
    xp, layout, x, t, w = prepare_rows(input, target, weight, options)
    check_focal_alpha(alpha, layout.num_classes)
    like = xp.zeros(x.shape[:1], dtype=x.dtype)
    denominator = ce_denominator(t, w, options, layout.prob_target, like)
    g = upstream(_layout.loss_from_rows(like, layout), options.reduction, grad_output, denominator)
    grad = focal_rows_grad(x, t, w, alpha, gamma, options, layout.prob_target, xp.reshape(g, (-1,)))
    return _layout.from_rows(grad, layout)
