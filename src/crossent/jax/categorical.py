"""Categorical losses for JAX: ``cross_entropy``, ``nll_loss`` and ``focal_loss``.

Each computes the function of the same name in :mod:`crossent.numpy` (formulas there) with PyTorch's
conventions: the class axis is axis 1 of an (N, C, d1, …, dk) input (axis 0 of a (C,) input); integer
targets are class indices, targets of the input's shape are class probabilities; ``mean`` divides by
Σ w[y_i] over the positions not ignored (index targets) or by the number of positions (probabilities).

How: check the static options → lay the input out as (rows, classes) → the reference's row math with its
analytic derivative (:mod:`crossent.jax._rows`) → the reference's reduction. Pure functions: they work
under ``jax.jit``, ``jax.grad``, ``jax.vmap`` and ``jax.jvp``. Half-precision inputs compute in float32
and return a float32 loss; the gradient has the input's dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._contract import (
    CEOptions,
    ce_layout,
    check_class_weight,
    check_focal_alpha,
    check_gamma,
    check_prob_target_ignore_index,
)
from ..numpy import _layout
from ..numpy.categorical import ce_denominator
from ..numpy.reduce import reduce
from . import _args, _rows

Array = jax.Array


def _prepare(input: Any, target: Any, weight: Any, options: CEOptions) -> tuple:
    """(layout, x rows, target rows, weight) in the compute dtype, after every check."""
    x = _args.array("input", input)
    t = _args.array("target", target)
    w = _args.optional_array("weight", weight)
    layout = ce_layout(x, t)
    _args.check_floating("input", x)
    dtype = _args.compute_dtype(x)
    rows = _layout.to_rows(x.astype(dtype), layout)
    if layout.prob_target:
        check_prob_target_ignore_index(options.ignore_index)
        t_rows = _layout.to_rows(t, layout)
    else:
        t_rows = _layout.index_to_rows(t)
    _args.check_targets(x, t, layout, options.ignore_index)
    if layout.prob_target:
        t_rows = t_rows.astype(dtype)
    check_class_weight(w, layout.num_classes)
    if w is not None:
        _args.check_floating("weight", w)
        w = w.astype(dtype)
    return layout, rows, t_rows, w


def mean_denominator(
    t: Array, w: Array | None, options: CEOptions, prob_target: bool, like: Array
) -> Array:
    """D of the mean (:func:`crossent.numpy.categorical.ce_denominator`): Σ w[y_i] over the rows not
    ignored for index targets, the number of rows for probability targets; ``like``'s dtype."""
    with _rows.quiet_int64():
        den = ce_denominator(t, w, options, prob_target, like)
    return jnp.asarray(float(t.shape[0]) if den is None else den, like.dtype)


def _reduce(
    loss: Array, layout: Any, t: Array, w: Array | None, options: CEOptions, normalize_by: Any
) -> Array:
    den = _args.denominator(normalize_by, options.reduction, loss)  # raises unless "mean"
    if options.reduction != "mean":
        return reduce(_layout.loss_from_rows(loss, layout), options.reduction)
    if den is None:
        den = mean_denominator(t, w, options, layout.prob_target, loss)
    return _rows.divide_mean(jnp.sum(loss), den)


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: Any = None,
) -> Array:
    r"""Cross-entropy of logits against class indices or class probabilities (``torch``'s contract).

    Computes :func:`crossent.numpy.cross_entropy` (formula there):
    :math:`\ell = (1-\varepsilon) w_y(-\log p_y) + \frac{\varepsilon}{C}\sum_c w_c(-\log p_c)
    + \lambda w_y \operatorname{lse}^2` for an index target, with :math:`p = \operatorname{softmax}(z)`,
    :math:`z = s\tanh(x/s)` under a softcap.

    Args:
        input: logits (C), (N, C) or (N, C, d1, …, dk); float16/bfloat16/float32/float64.
        target: class indices (integers) of shape (), (N) or (N, d1, …, dk), or class probabilities of
            the input's shape.
        weight: (C,) class weights, or None.
        ignore_index: index targets equal to it add 0 to the loss, the gradient and the mean's
            denominator (a Python int).
        reduction: "none", "sum" or "mean" (a Python str).
        label_smoothing: ε in [0, 1] (a Python float).
        z_loss: λ ≥ 0, adds λ·lse² per position, weighted like the CE term.
        softcap: s > 0 or None; logits become s·tanh(x/s) first.
        normalize_by: replaces the mean's denominator (a number or a 0-d array, e.g. a global token
            count); ``reduction="mean"`` only.

    Returns:
        The loss: shape () for "sum"/"mean", the input's shape without the class axis for "none";
        float32 for half-precision inputs, else the input's dtype.

    Raises:
        ValueError: shapes that do not fit, an unknown reduction, an option out of range.
        TypeError: non-floating logits, non-integer index targets, an option that is a traced array.
        IndexError: an index target outside [0, C) that is not ``ignore_index`` (when the targets are
            concrete; under ``jax.jit`` such a row's loss is NaN).

    Example:
        >>> import jax.numpy as jnp
        >>> float(cross_entropy(jnp.zeros((1, 2)), jnp.array([1])))  # log 2
        0.6931471...
    """
    opts = _args.options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    layout, x, t, w = _prepare(input, target, weight, opts)
    loss = _rows.ce_rows(x, t, w, opts, layout.prob_target)
    return _reduce(loss, layout, t, w, opts, normalize_by)


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Array:
    r"""Negative log-likelihood :math:`\ell_i = -w_{y_i}\,\texttt{input}[i, y_i]` of log-probabilities.

    Computes :func:`crossent.numpy.nll_loss`; shapes, ``ignore_index`` and the mean's denominator are
    those of the index path of :func:`cross_entropy`.

    Example:
        >>> import jax.numpy as jnp
        >>> float(nll_loss(jnp.log(jnp.array([[0.25, 0.75]])), jnp.array([1])))  # -log 0.75
        0.2876820...
    """
    opts = _args.options(ignore_index, 0.0, 0.0, None, reduction)
    x = _args.array("input", input)
    t = _args.array("target", target)
    if x.shape == t.shape:
        from .._contract import CrossentTypeError

        raise CrossentTypeError(
            "argument 'target' must hold class indices for nll_loss (got the input's shape "
            f"{tuple(x.shape)}: probability targets are cross_entropy's)"
        )
    layout, rows, t_rows, w = _prepare(x, t, weight, opts)
    loss = _rows.nll_rows(rows, t_rows, w, opts.ignore_index)
    return _reduce(loss, layout, t_rows, w, opts, None)


def focal_loss(
    input: Any,
    target: Any,
    alpha: Any = None,
    gamma: float = 2.0,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Array:
    r"""Softmax focal loss :math:`\ell = -\sum_c \alpha_c w_c q_c (1 - p_c)^\gamma \log p_c`.

    Computes :func:`crossent.numpy.focal_loss` (formula and gradient there); targets, ``weight``,
    ``ignore_index`` and ``reduction`` as in :func:`cross_entropy` (γ = 0 with α = None is the
    cross-entropy).

    Args:
        alpha: per-class balance: a (C,) array (differentiable), a Python number, or None (1).
        gamma: focusing parameter γ ≥ 0 (a Python float).

    Example:
        >>> import jax.numpy as jnp
        >>> x, y = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([0])
        >>> bool(jnp.isclose(focal_loss(x, y, gamma=0.0), cross_entropy(x, y)))
        True
    """
    gamma = check_gamma(_args.static("gamma", gamma))
    opts = _args.options(ignore_index, 0.0, 0.0, None, reduction)
    layout, x, t, w = _prepare(input, target, weight, opts)
    if alpha is not None and hasattr(alpha, "shape") and tuple(alpha.shape) != ():
        alpha = _args.array("alpha", alpha)
        check_focal_alpha(alpha, layout.num_classes)
        alpha = alpha.astype(x.dtype)
    else:
        alpha = _args.static("alpha", alpha)
        check_focal_alpha(alpha, layout.num_classes)
    loss = _rows.focal_rows(x, t, w, alpha, gamma, opts, layout.prob_target)
    return _reduce(loss, layout, t, w, opts, None)
