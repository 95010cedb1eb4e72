r"""Categorical cross-entropy and negative log-likelihood, with analytic gradients.

For logits :math:`x \in \mathbb{R}^{C}` of one position, let :math:`z = s\tanh(x/s)` when a softcap
:math:`s` is given (else :math:`z = x`), :math:`\operatorname{lse} = \log\sum_c e^{z_c}`,
:math:`\log p_c = z_c - \operatorname{lse}` and :math:`p = \operatorname{softmax}(z)`. With label smoothing
:math:`\varepsilon`, class weights :math:`w` (1 when absent, :math:`W = \sum_c w_c`) and z-loss coefficient
:math:`\lambda`:

**Index target** :math:`y` (position ignored when :math:`y` = ``ignore_index``: loss 0, gradient 0):

.. math::

    \ell = (1-\varepsilon)\,w_y(-\log p_y) + \frac{\varepsilon}{C}\sum_c w_c(-\log p_c)
           + \lambda\, w_y \operatorname{lse}^2

    \frac{\partial \ell}{\partial z_c} = (1-\varepsilon)\,w_y(p_c - [c=y])
           + \frac{\varepsilon}{C}(W p_c - w_c) + 2\lambda\, w_y \operatorname{lse}\, p_c

**Probability target** :math:`q` (smoothed first: :math:`q' = (1-\varepsilon)q + \varepsilon/C`), with
:math:`\omega = \sum_c w_c q_c` the element's weight for the z-loss (:math:`= w_y` for a one-hot :math:`q`):

.. math::

    \ell = -\sum_c w_c q'_c \log p_c + \lambda\,\omega \operatorname{lse}^2, \qquad
    \frac{\partial \ell}{\partial z_c} = p_c\sum_k w_k q'_k - w_c q'_c + 2\lambda\,\omega\operatorname{lse}\,p_c

and :math:`\partial z/\partial x = 1 - (z/s)^2` for the softcap. Reductions and the mean's denominator are
those of :mod:`crossent.numpy.reduce` (PyTorch's). These are exactly PyTorch's formulas
(``torch.nn.functional.cross_entropy``) when :math:`\lambda = 0` and no softcap is given.
"""

from __future__ import annotations

from typing import Any

from .._contract import (
    CEOptions,
    CrossentTypeError,
    ce_layout,
    ce_options,
    check_class_weight,
    check_prob_target_ignore_index,
    check_reduction,
    check_target_bounds,
    check_target_dtypes,
)
from . import _layout
from ._xp import (
    Array,
    compute_dtype,
    namespace,
    one_hot,
    take_rows,
    writable,
)
from .primitives import softcap as _softcap
from .primitives import softcap_grad_from_output
from .reduce import reduce, upstream

# --------------------------------------------------------------------------------------------------
# Row-level math on (M, C) arrays. Backends call these directly (on NumPy arrays or torch tensors).
# --------------------------------------------------------------------------------------------------


def _shifted_exp(xp: Any, z: Array) -> tuple[Array, Array]:
    """(exp(z − m), m) with m the row max, (M, 1)."""
    # stability: subtract the row max so every exponent is <= 0. A row holding +inf or NaN, or only -inf,
    # gets NaN (inf - inf), exactly as torch.log_softmax does.
    m = xp.max(z, axis=-1, keepdims=True)
    return xp.exp(z - m), m


def row_lse(xp: Any, z: Array) -> Array:
    """Log-sum-exp of each row of (M, C) logits with torch.log_softmax's conventions (see below)."""
    e, m = _shifted_exp(xp, z)
    return m[:, 0] + xp.log(xp.sum(e, axis=-1))


def row_softmax_lse(xp: Any, z: Array) -> tuple[Array, Array]:
    """(softmax, lse (M, 1)) of each row of (M, C) logits from one pass of exponentials (as row_lse)."""
    e, m = _shifted_exp(xp, z)
    p = writable(e)  # normalised in place (a copy where autograd saved e)
    total = xp.sum(p, axis=-1, keepdims=True)
    p /= total
    return p, m + xp.log(total)


def valid_targets(xp: Any, target: Array, ignore_index: int) -> tuple[Array, Array]:
    """(rows not ignored, int64 index targets with ignored rows sent to class 0: safe to gather)."""
    valid = target != ignore_index
    return valid, xp.where(
        valid, xp.astype(target, xp.int64), xp.zeros_like(target, dtype=xp.int64)
    )


def _weights(xp: Any, weight: Array | None, like: Array) -> Array | None:
    return None if weight is None else xp.astype(weight, like.dtype)


def ce_rows(
    x: Array, target: Array, weight: Array | None, options: CEOptions, prob_target: bool
) -> tuple[Array, Array]:
    """Per-row loss and log-sum-exp of (M, C) logits.

    Args:
        x: (M, C) logits, floating (the math runs in ``x``'s dtype).
        target: (M,) class indices, or (M, C) class probabilities when ``prob_target``.
        weight: (C,) class weights or None.
        options: validated options (``options.reduction`` is not used here).
        prob_target: which kind of target ``target`` is.

    Returns:
        ``(loss, lse)``, both (M,): the loss before reduction (0 at ignored rows) and the log-sum-exp of
        the (soft-capped) logits.
    """
    xp = namespace(x, target, weight)
    num_classes = x.shape[-1]
    w = _weights(xp, weight, x)
    z = _softcap(x, options.softcap)
    lse = row_lse(xp, z)
    eps = options.label_smoothing
    if prob_target or eps > 0:
        neg_logp = -(z - xp.reshape(lse, (-1, 1)))  # -log p, computed directly (never log(softmax))
    if prob_target:
        q = xp.astype(target, x.dtype)
        wq = q if w is None else q * w
        q_smooth = q * (1.0 - eps) + eps / num_classes if eps > 0 else q
        wq_smooth = q_smooth if w is None else q_smooth * w
        loss = xp.sum(wq_smooth * neg_logp, axis=-1)
        if options.z_loss:
            loss = loss + options.z_loss * xp.sum(wq, axis=-1) * lse * lse
        return loss, lse
    valid, safe = valid_targets(xp, target, options.ignore_index)
    w_y = 1.0 if w is None else take_rows(xp, xp.reshape(w, (1, -1)) * xp.ones_like(x[:, :1]), safe)
    nll = -(take_rows(xp, z, safe) - lse)  # -log p_y, the same rounding as the full -log p
    loss = (1.0 - eps) * w_y * nll if eps < 1 else 0.0 * nll
    if eps > 0:
        smooth = xp.sum(neg_logp if w is None else neg_logp * w, axis=-1)
        loss = loss + (eps / num_classes) * smooth
    if options.z_loss:
        loss = loss + options.z_loss * w_y * lse * lse
    return xp.where(valid, loss, xp.zeros_like(loss)), lse


def ce_rows_grad(
    x: Array,
    target: Array,
    weight: Array | None,
    options: CEOptions,
    prob_target: bool,
    grad_rows: Array,
) -> Array:
    """Gradient of ``Σ_i grad_rows[i] · ce_rows(x)[0][i]`` with respect to the (M, C) logits ``x``.

    ``grad_rows`` is the per-row upstream factor (g, g/D or g_i, see :func:`crossent.numpy.reduce.upstream`).
    Ignored rows get ``0 · (p − …)``: exact zeros for finite logits (and NaN for a row holding NaN/+inf,
    as in PyTorch).
    """
    xp = namespace(x, target, weight, grad_rows)
    num_classes = x.shape[-1]
    w = _weights(xp, weight, x)
    z = _softcap(x, options.softcap)
    lse = row_lse(xp, z)
    p = xp.exp(z - xp.reshape(lse, (-1, 1)))
    eps = options.label_smoothing
    g = xp.reshape(xp.astype(grad_rows, x.dtype), (-1, 1))
    if prob_target:
        q = xp.astype(target, x.dtype)
        q_smooth = q * (1.0 - eps) + eps / num_classes if eps > 0 else q
        wq_smooth = q_smooth if w is None else q_smooth * w
        coef = xp.sum(wq_smooth, axis=-1, keepdims=True)
        if options.z_loss:
            omega = xp.sum(q if w is None else q * w, axis=-1, keepdims=True)
            coef = coef + 2.0 * options.z_loss * omega * xp.reshape(lse, (-1, 1))
        dz = (coef * p - wq_smooth) * g
    else:
        valid, safe = valid_targets(xp, target, options.ignore_index)
        if w is None:
            w_y = xp.ones_like(lse)
            total_w = float(num_classes)
        else:
            w_y = take_rows(xp, xp.reshape(w, (1, -1)) * xp.ones_like(x[:, :1]), safe)
            total_w = xp.reshape(xp.sum(w), (1, 1))
        # ignored rows carry 0 (not 0·g: with everything ignored, g = 1/0 = inf for the mean)
        g = xp.where(xp.reshape(valid, (-1, 1)), g, xp.zeros_like(g))
        w_y = xp.reshape(w_y, (-1, 1))
        # (1-ε)·w_y·p + (ε/C)·W·p + 2λ·w_y·lse·p, then subtract the target part (1-ε)·w_y·[c=y] + (ε/C)·w_c
        coef = (1.0 - eps) * w_y
        if eps > 0:
            coef = coef + (eps / num_classes) * total_w
        if options.z_loss:
            coef = coef + 2.0 * options.z_loss * w_y * xp.reshape(lse, (-1, 1))
        dz = coef * p
        hot = one_hot(xp, safe, num_classes)
        dz = xp.where(hot, dz - (1.0 - eps) * w_y, dz)
        if eps > 0:
            dz = dz - (eps / num_classes) * (1.0 if w is None else xp.reshape(w, (1, -1)))
        dz = dz * g
    if options.softcap is not None:
        dz = dz * softcap_grad_from_output(z, options.softcap)
    return dz


def index_row_terms(
    lse: Array,
    z_y: Array,
    sum_wz: Array | None,
    w_y: Array | float,
    total_w: Array | float,
    label_smoothing: float,
    z_loss: float,
    num_classes: Any,
    shift: Array | float = 0.0,
) -> tuple[Array, Array]:
    r"""Per-row loss :math:`\ell` and gradient coefficient :math:`\kappa` of index-target rows from
    their row statistics (the form fused and sharded backends use; :func:`ce_rows` keeps the full rows).

    .. math::

        \ell = (1-\varepsilon)\,w_y(\operatorname{lse} - z_y)
               + \frac{\varepsilon}{C}\Big(W \operatorname{lse} - \sum_c w_c z_c\Big)
               + \lambda\, w_y \operatorname{lse}^2, \qquad
        \kappa = (1-\varepsilon)\,w_y + \frac{\varepsilon}{C} W + 2\lambda\, w_y \operatorname{lse}

    so that :math:`\partial\ell/\partial z_c = \kappa\,p_c - (1-\varepsilon) w_y [c=y]
    - \tfrac{\varepsilon}{C} w_c` (the module's gradient, regrouped).

    Args:
        lse, z_y, sum_wz: (M,) log-sum-exp, target logit and :math:`\sum_c w_c z_c` of each row, all three
            relative to a common per-row ``shift`` :math:`m` (:math:`\hat z = z - m`; the differences
            above do not depend on it). ``sum_wz`` is needed only when :math:`\varepsilon > 0`.
        w_y: (M,) class weight of each row's target (1.0 without weights).
        total_w: :math:`W = \sum_c w_c` (:math:`C` without weights).
        label_smoothing, z_loss: :math:`\varepsilon` and :math:`\lambda`.
        num_classes: :math:`C`.
        shift: the per-row :math:`m` (0 when ``lse`` is absolute); the z-loss uses
            :math:`\operatorname{lse} = \widehat{\operatorname{lse}} + m`.

    Returns:
        ``(loss, kappa)``, both (M,); ignored rows are the caller's to mask.

    Example:
        >>> import numpy as np
        >>> index_row_terms(np.array([np.log(2.0)]), np.array([0.0]), None, 1.0, 2.0, 0.0, 0.0, 2)
        (array([0.69314718]), array([1.]))
    """
    xp = namespace(lse)
    eps = label_smoothing
    loss = (1.0 - eps) * w_y * (lse - z_y)
    kappa = (1.0 - eps) * w_y * xp.ones_like(lse)
    if eps > 0:
        loss = loss + (eps / num_classes) * (total_w * lse - sum_wz)
        kappa = kappa + (eps / num_classes) * total_w
    if z_loss:
        full = lse + shift
        loss = loss + z_loss * w_y * full * full
        kappa = kappa + 2.0 * z_loss * w_y * full
    return loss, kappa


def prob_target_grads(
    x: Array,
    target: Array,
    weight: Array | None,
    options: CEOptions,
    grad_rows: Array,
    need_weight: bool = True,
) -> tuple[Array, Array | None]:
    r"""Gradients of ``Σ_i grad_rows[i] · ce_rows(x)[0][i]`` with respect to the class probabilities and
    the class weights (probability targets; PyTorch differentiates both).

    With :math:`-\log p_c = \operatorname{lse} - z_c` and :math:`q' = (1-\varepsilon)q + \varepsilon/C`:

    .. math::

        \frac{\partial \ell}{\partial q_c} = w_c\big((1-\varepsilon)(-\log p_c)
            + \lambda \operatorname{lse}^2\big), \qquad
        \frac{\partial \ell}{\partial w_c} = q'_c(-\log p_c) + \lambda\, q_c \operatorname{lse}^2

    Returns:
        ``(d_target (M, C), d_weight (C,) summed over rows, or None without weights or need_weight)``.
    """
    xp = namespace(x, target, weight, grad_rows)
    num_classes = x.shape[-1]
    w = _weights(xp, weight, x)
    z = _softcap(x, options.softcap)
    lse = xp.reshape(row_lse(xp, z), (-1, 1))
    neg_logp = lse - z
    eps, lam = options.label_smoothing, options.z_loss
    g = xp.reshape(xp.astype(grad_rows, x.dtype), (-1, 1))
    q = xp.astype(target, x.dtype)
    dq = (1.0 - eps) * neg_logp
    if lam:
        dq = dq + lam * lse * lse
    d_weight = None
    if w is not None and need_weight:
        q_smooth = q * (1.0 - eps) + eps / num_classes if eps > 0 else q
        dw_rows = q_smooth * neg_logp
        if lam:
            dw_rows = dw_rows + lam * q * lse * lse
        d_weight = xp.sum(g * dw_rows, axis=0)
    if w is not None:
        dq = dq * xp.reshape(w, (1, -1))
    return g * dq, d_weight


def ce_denominator(
    target: Array, weight: Array | None, options: CEOptions, prob_target: bool, like: Array
) -> Array | None:
    """D of the mean: Σ_{not ignored} w[y_i] for index targets; None (= number of rows) for probabilities."""
    if prob_target:
        return None
    xp = namespace(target, like)
    valid, safe = valid_targets(xp, target, options.ignore_index)
    if weight is None or weight.shape[0] == 0:  # (no classes: every row is ignored, D = 0)
        return xp.sum(xp.astype(valid, like.dtype))
    w_y = xp.take(xp.astype(weight, like.dtype), safe)
    return xp.sum(xp.where(valid, w_y, xp.zeros_like(w_y)))


def nll_rows(logp: Array, target: Array, weight: Array | None, ignore_index: int) -> Array:
    r"""Per-row NLL :math:`-w_y \cdot \texttt{logp}[y]` of (M, C) log-probabilities (0 at ignored rows)."""
    xp = namespace(logp, target, weight)
    valid, safe = valid_targets(xp, target, ignore_index)
    picked = take_rows(xp, logp, safe)
    if weight is not None:
        picked = picked * xp.take(xp.astype(weight, logp.dtype), safe)
    return xp.where(valid, -picked, xp.zeros_like(picked))


def nll_rows_grad(
    logp: Array, target: Array, weight: Array | None, ignore_index: int, grad_rows: Array
) -> Array:
    r""":math:`\partial/\partial\,\texttt{logp}_{ic} = -g_i w_{y_i} [c = y_i]` (0 at ignored rows)."""
    xp = namespace(logp, target, weight, grad_rows)
    valid, safe = valid_targets(xp, target, ignore_index)
    g = xp.where(
        valid, xp.astype(grad_rows, logp.dtype), xp.zeros_like(grad_rows, dtype=logp.dtype)
    )
    if weight is not None:
        g = g * xp.take(xp.astype(weight, logp.dtype), safe)
    return xp.where(one_hot(xp, safe, logp.shape[-1]), -xp.reshape(g, (-1, 1)), 0.0)


def prepare_rows(input: Array, target: Array, weight: Array | None, options: CEOptions):
    """Validate a categorical call and lay it out as rows: ``(xp, layout, x, t, w)``.

    ``x`` is (M, C) in the compute dtype, ``t`` the (M,) indices or (M, C) probabilities, ``w`` the (C,)
    weights or None (the categorical losses of this package and :mod:`crossent.native` share it).
    """
    xp = namespace(input, target, weight)
    input, target = xp.asarray(input), xp.asarray(target)
    layout = ce_layout(input, target)
    check_target_dtypes(xp, input, target, layout, strict_index_dtype=False)
    check_class_weight(weight, layout.num_classes)
    dtype = compute_dtype(xp, input)
    x = xp.astype(_layout.to_rows(input, layout), dtype)
    if layout.prob_target:
        check_prob_target_ignore_index(options.ignore_index)
        t = xp.astype(_layout.to_rows(target, layout), dtype)
    else:
        t = _layout.index_to_rows(target)
        check_target_bounds(xp, t, layout.num_classes, options.ignore_index)
    w = None if weight is None else xp.astype(xp.asarray(weight), dtype)
    return xp, layout, x, t, w


# --------------------------------------------------------------------------------------------------
# Public NumPy API.
# --------------------------------------------------------------------------------------------------


def cross_entropy(
    input: Array,
    target: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Array:
    r"""Cross-entropy between logits and class-index or class-probability targets (formulas: module doc).

    Args:
        input: logits of shape (C), (N, C) or (N, C, d1, …, dk); float16/32/64 (float16 computed in float32).
        target: class indices of shape (), (N) or (N, d1, …, dk) (integers), or class probabilities of the
            input's shape (floats).
        weight: (C,) class weights.
        ignore_index: index targets equal to it contribute nothing (index targets only).
        reduction: "none" (per-element loss, the input's shape without the class axis), "sum", or "mean"
            (divided by Σ w[y_i] over non-ignored positions for index targets, by the number of positions
            for probability targets).
        label_smoothing: ε in [0, 1].
        z_loss: λ ≥ 0, adds λ·lse² per element, weighted like the CE term.
        softcap: s > 0, logits → s·tanh(x/s) first.

    Returns:
        The loss, in the input's dtype (float32 for float16 input).

    Raises:
        ValueError: shapes that do not fit, an unknown reduction, ε outside [0, 1], a weight of the wrong
            shape, ``ignore_index >= 0`` with probability targets.
        TypeError: non-floating logits, non-integer index targets, non-floating probability targets.
        IndexError: an index target outside [0, C) that is not ``ignore_index``.

    Example:
        >>> import numpy as np
        >>> float(cross_entropy(np.array([[0.0, 0.0]]), np.array([1])))  # log 2
        0.6931471805599453
    """
    options = ce_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    xp, layout, x, t, w = prepare_rows(input, target, weight, options)
    loss, _ = ce_rows(x, t, w, options, layout.prob_target)
    denominator = ce_denominator(t, w, options, layout.prob_target, loss)
    return reduce(_layout.loss_from_rows(loss, layout), options.reduction, denominator)


def cross_entropy_grad(
    input: Array,
    target: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    grad_output: Array | float = 1.0,
) -> Array:
    r"""∂(grad_output · :func:`cross_entropy`)/∂input, analytic (formula: module doc).

    ``grad_output`` has the loss's shape: a scalar for ``mean``/``sum``, per-element for ``none``.
    Returns an array of the input's shape (float32 for float16 input).

    Example:
        >>> import numpy as np
        >>> cross_entropy_grad(np.array([[0.0, 0.0]]), np.array([1]))  # p - onehot
        array([[ 0.5, -0.5]])
    """
    options = ce_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    xp, layout, x, t, w = prepare_rows(input, target, weight, options)
    like = xp.zeros(x.shape[:1], dtype=x.dtype)
    denominator = ce_denominator(t, w, options, layout.prob_target, like)
    g = upstream(_layout.loss_from_rows(like, layout), options.reduction, grad_output, denominator)
    g = xp.reshape(g, (-1,))
    grad = ce_rows_grad(x, t, w, options, layout.prob_target, g)
    return _layout.from_rows(grad, layout)


def _prepare_nll(
    input: Array, target: Array, weight: Array | None, ignore_index: int, reduction: str
):
    check_reduction(reduction)
    xp = namespace(input, target, weight)
    input, target = xp.asarray(input), xp.asarray(target)
    layout = ce_layout(input, target, min_dim=1)
    if layout.prob_target:
        raise CrossentTypeError(
            "0D or 1D target tensor expected, multi-target not supported "
            "(argument 'target' must hold class indices for nll_loss)"
        )
    check_target_dtypes(xp, input, target, layout, strict_index_dtype=False)
    check_class_weight(weight, layout.num_classes)
    dtype = compute_dtype(xp, input)
    lp = xp.astype(_layout.to_rows(input, layout), dtype)
    t = _layout.index_to_rows(target)
    check_target_bounds(xp, t, layout.num_classes, ignore_index)
    w = None if weight is None else xp.astype(xp.asarray(weight), dtype)
    return xp, layout, lp, t, w


def nll_loss(
    input: Array,
    target: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Array:
    r"""Negative log-likelihood :math:`\ell_i = -w_{y_i}\,\texttt{input}[i, y_i]` of log-probabilities.

    ``input`` is taken as it is (no check that it is a log-probability). Shapes, ``ignore_index`` and the
    ``mean`` denominator Σ w[y_i] are those of the index path of :func:`cross_entropy`.

    Example:
        >>> import numpy as np
        >>> float(nll_loss(np.log(np.array([[0.25, 0.75]])), np.array([1])))  # -log 0.75
        0.2876820724517809
    """
    xp, layout, lp, t, w = _prepare_nll(input, target, weight, ignore_index, reduction)
    options = CEOptions(ignore_index=ignore_index)
    loss = nll_rows(lp, t, w, ignore_index)
    denominator = ce_denominator(t, w, options, False, loss)
    return reduce(_layout.loss_from_rows(loss, layout), reduction, denominator)


def nll_loss_grad(
    input: Array,
    target: Array,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    grad_output: Array | float = 1.0,
) -> Array:
    r"""∂(grad_output · :func:`nll_loss`)/∂input: :math:`-g\,w_{y_i}` at the target class, 0 elsewhere."""
    xp, layout, lp, t, w = _prepare_nll(input, target, weight, ignore_index, reduction)
    options = CEOptions(ignore_index=ignore_index)
    like = xp.zeros(lp.shape[:1], dtype=lp.dtype)
    denominator = ce_denominator(t, w, options, False, like)
    g = upstream(_layout.loss_from_rows(like, layout), reduction, grad_output, denominator)
    return _layout.from_rows(nll_rows_grad(lp, t, w, ignore_index, xp.reshape(g, (-1,))), layout)
