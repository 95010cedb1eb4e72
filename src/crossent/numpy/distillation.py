r"""Knowledge distillation: a student's logits against a teacher's, with analytic gradients.

For one row (position) with student logits :math:`z^S \in \mathbb{R}^V`, teacher logits
:math:`z^T \in \mathbb{R}^V`, temperature :math:`\tau > 0`, let :math:`a = z^S/\tau`, :math:`b = z^T/\tau`,

.. math::

    \log p_S = a - \operatorname{lse}(a), \qquad \log p_T = b - \operatorname{lse}(b)

(log-probabilities straight from log-sum-exps, never ``log(softmax)``). The soft term :math:`D` is one of

* ``"forward_kl"``: :math:`\mathrm{KL}(p_T\,\|\,p_S) = \sum_c p_{T,c}(\log p_{T,c} - \log p_{S,c})`;
* ``"reverse_kl"``: :math:`\mathrm{KL}(p_S\,\|\,p_T) = \sum_c p_{S,c}(\log p_{S,c} - \log p_{T,c})`;
* ``"jsd"``: the generalised Jensen–Shannon divergence of GKD (Agarwal et al., 2024), with the teacher's
  share :math:`\beta` of the mixture :math:`m = \beta p_T + (1-\beta) p_S`:

  .. math::

      \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p_T\,\|\,m) + (1-\beta)\,\mathrm{KL}(p_S\,\|\,m), \qquad
      \log m = \operatorname{logaddexp}(\log\beta + \log p_T,\ \log(1-\beta) + \log p_S)

  (the mixture's log from the two log-probabilities, so a confident teacher or an extreme :math:`\tau`
  cannot underflow it to :math:`\log 0`).

  :math:`\beta \in \{0, 1\}`. Read literally the formula is 0 at both ends (:math:`m = p_S` at
  :math:`\beta = 0` and the surviving term is :math:`\mathrm{KL}(p_S\|p_S)`; likewise at 1), which would
  silently train nothing. crossent follows the convention of TRL's GKD trainer instead:
  :math:`\beta = 0` gives :math:`\mathrm{KL}(p_T\,\|\,p_S)` (``"forward_kl"``) and :math:`\beta = 1` gives
  :math:`\mathrm{KL}(p_S\,\|\,p_T)` (``"reverse_kl"``). These are the normalised limits:
  :math:`\mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p_T\|p_S) + O(\beta^2)` as :math:`\beta \to 0` (the
  second term is :math:`\mathrm{KL}(p_S\|p_S + \beta(p_T - p_S)) = O(\beta^2)`), so
  :math:`\mathrm{JSD}_\beta/\beta \to \mathrm{KL}(p_T\|p_S)`, and symmetrically
  :math:`\mathrm{JSD}_\beta/(1-\beta) \to \mathrm{KL}(p_S\|p_T)` as :math:`\beta \to 1`. The endpoints are
  therefore *not* continuous in :math:`\beta` (JSD itself tends to 0 there).

Convention :math:`0 \log 0 = 0`: a class with :math:`p = 0` exactly adds nothing to :math:`\sum p(\ldots)`.

The loss of a row, with hard weight :math:`h \in [0, 1]`, the factor :math:`s = \tau^2` when
``scale_by_temperature_squared`` is set (Hinton et al., 2015) and :math:`s = 1` otherwise, and the
cross-entropy of the *untempered* student logits against the index target :math:`y`:

.. math::

    \ell = (1-h)\,s\,D + h\,(\operatorname{lse}(z^S) - z^S_y)

A row whose target is ``ignore_index`` has :math:`\ell = 0` and gradient 0 (both terms). Without a target
(``target=None``, needs :math:`h = 0`) every row counts. ``reduction``: ``"none"`` (per row), ``"sum"``,
``"mean"`` (the sum divided by the number of non-ignored rows, or by the number of rows without a target;
0/0 = NaN when every row is ignored).

Gradients (the upstream factor :math:`g` of the row omitted; :math:`\partial/\partial z = \tau^{-1}
\partial/\partial a`):

.. math::

    \text{forward KL:}\quad \frac{\partial D}{\partial a} = p_S - p_T, \qquad
    \frac{\partial D}{\partial b} = p_T \odot (\log p_T - \log p_S - D)

    \text{reverse KL:}\quad \frac{\partial D}{\partial a} = p_S \odot (\log p_S - \log p_T - D), \qquad
    \frac{\partial D}{\partial b} = p_T - p_S

    \text{JSD}_\beta:\quad \frac{\partial D}{\partial a} = (1-\beta)\,p_S \odot (\log p_S - \log m - K_S),
    \qquad \frac{\partial D}{\partial b} = \beta\,p_T \odot (\log p_T - \log m - K_T)

with :math:`K_S = \mathrm{KL}(p_S\|m)`, :math:`K_T = \mathrm{KL}(p_T\|m)` (the JSD ones follow from
:math:`D = \beta\sum p_T\log p_T + (1-\beta)\sum p_S\log p_S - \sum m \log m` and the softmax's
vector-Jacobian product :math:`p \odot (u - \sum p u)`), and for the hard term
:math:`\partial/\partial z^S = h(\operatorname{softmax}(z^S) - e_y)`
(:func:`crossent.numpy.categorical.ce_rows_grad`).

The row functions (:func:`distill_rows`, :func:`distill_rows_grad`, :func:`distill_rows_value_and_grad`)
take (M, V) arrays and run on NumPy arrays and torch tensors alike; the PyTorch, fused-linear and
vocab-parallel paths call them.
"""

from __future__ import annotations

import math
from typing import Any

from .._contract import (
    CEOptions,
    CrossentTypeError,
    DistillOptions,
    check_distill_shapes,
    distill_options,
)
from ._xp import Array, compute_dtype, device, is_floating, is_integer, namespace
from .categorical import ce_rows, ce_rows_grad, check_target_bounds, valid_targets
from .primitives import log_softmax
from .reduce import reduce, upstream

# --------------------------------------------------------------------------------------------------
# Row-level math on (M, V) arrays.
# --------------------------------------------------------------------------------------------------


def _plogratio(xp: Any, p: Array, logp: Array, logq: Array, shift: Array | None = None) -> Array:
    """``p · (log p − log q − shift)`` elementwise, 0 where ``p = 0`` (0·log 0 = 0)."""
    r = logp - logq if shift is None else logp - logq - shift
    return xp.where(p == 0, 0.0, p * r)


def effective_divergence(options: DistillOptions) -> str:
    """The divergence a call computes: JSD with β = 0 is forward KL, with β = 1 reverse KL (module doc)."""
    if options.divergence == "jsd" and options.beta == 0.0:
        return "forward_kl"
    if options.divergence == "jsd" and options.beta == 1.0:
        return "reverse_kl"
    return options.divergence


def soft_parts(
    log_ps: Array, log_pt: Array, options: DistillOptions
) -> tuple[Array, Array, Array | None]:
    r"""``(p_S, p_T, log m)`` of tempered log-probabilities (``log m`` only for the JSD with 0 < β < 1)."""
    xp = namespace(log_ps, log_pt)
    ps, pt = xp.exp(log_ps), xp.exp(log_pt)
    log_m = None
    if effective_divergence(options) == "jsd":
        beta = options.beta
        # stability: log m from the two log-probabilities (never log of a sum of probabilities)
        log_m = xp.logaddexp(log_pt + math.log(beta), log_ps + math.log1p(-beta))
    return ps, pt, log_m


def soft_sums(
    log_ps: Array, log_pt: Array, options: DistillOptions, parts: tuple | None = None
) -> list[Array]:
    r"""The row sums the divergence is made of: ``[D]`` for the KLs, ``[K_T, K_S]`` for the JSD (each (M,)).

    Each is a sum over classes, so over a shard of the vocabulary (with log-probabilities normalised by
    the *global* log-sum-exps) it is that shard's share, and the shares add up to the full row's value;
    :func:`soft_value` and :func:`soft_grads` take the totals. ``parts``: :func:`soft_parts`, if at hand.
    """
    xp = namespace(log_ps, log_pt)
    ps, pt, log_m = soft_parts(log_ps, log_pt, options) if parts is None else parts
    kind = effective_divergence(options)
    if kind == "forward_kl":
        return [xp.sum(_plogratio(xp, pt, log_pt, log_ps), axis=-1)]
    if kind == "reverse_kl":
        return [xp.sum(_plogratio(xp, ps, log_ps, log_pt), axis=-1)]
    k_t = xp.sum(_plogratio(xp, pt, log_pt, log_m), axis=-1)
    k_s = xp.sum(_plogratio(xp, ps, log_ps, log_m), axis=-1)
    return [k_t, k_s]


def soft_value(sums: list[Array], options: DistillOptions) -> Array:
    r"""The divergence :math:`D` from the totals of :func:`soft_sums`: :math:`\beta K_T + (1-\beta) K_S`
    for the JSD, the sum itself for the KLs."""
    if len(sums) == 1:
        return sums[0]
    beta = options.beta
    return beta * sums[0] + (1.0 - beta) * sums[1]


def soft_grads(
    log_ps: Array,
    log_pt: Array,
    options: DistillOptions,
    sums: list[Array],
    *,
    teacher: bool = True,
    parts: tuple | None = None,
) -> tuple[Array, Array | None]:
    r""":math:`(\partial D/\partial a, \partial D/\partial b)` (formulas: module doc) of the rows at hand,
    given the row totals ``sums`` of :func:`soft_sums` (totals over the full vocabulary). The teacher's
    is None unless ``teacher``."""
    xp = namespace(log_ps, log_pt)
    ps, pt, log_m = soft_parts(log_ps, log_pt, options) if parts is None else parts
    kind = effective_divergence(options)
    gb = None
    if kind == "forward_kl":
        if teacher:
            gb = _plogratio(xp, pt, log_pt, log_ps, xp.reshape(sums[0], (-1, 1)))
        return ps - pt, gb
    if kind == "reverse_kl":
        if teacher:
            gb = pt - ps
        return _plogratio(xp, ps, log_ps, log_pt, xp.reshape(sums[0], (-1, 1))), gb
    beta = options.beta
    ga = (1.0 - beta) * _plogratio(xp, ps, log_ps, log_m, xp.reshape(sums[1], (-1, 1)))
    if teacher:
        gb = beta * _plogratio(xp, pt, log_pt, log_m, xp.reshape(sums[0], (-1, 1)))
    return ga, gb


def soft_rows(
    log_ps: Array,
    log_pt: Array,
    options: DistillOptions,
    *,
    grad: bool = False,
    teacher: bool = True,
) -> tuple[Array, Array | None, Array | None]:
    r"""The divergence :math:`D` of each row of tempered log-probabilities, and optionally its gradients.

    Args:
        log_ps, log_pt: (M, V) log-probabilities :math:`\log p_S`, :math:`\log p_T` (already tempered).
        options: validated options (``divergence`` and ``beta`` are used).
        grad: also return :math:`\partial D/\partial a` (student) and, with ``teacher``,
            :math:`\partial D/\partial b` (formulas: module doc).
        teacher: compute the teacher's gradient (otherwise None).

    Returns:
        ``(D (M,), dD/da or None, dD/db or None)``.
    """
    parts = soft_parts(log_ps, log_pt, options)
    sums = soft_sums(log_ps, log_pt, options, parts)
    d = soft_value(sums, options)
    if not grad:
        return d, None, None
    ga, gb = soft_grads(log_ps, log_pt, options, sums, teacher=teacher, parts=parts)
    return d, ga, gb


def _ce_options(options: DistillOptions) -> CEOptions:
    return CEOptions(ignore_index=options.ignore_index, reduction="none")


def distill_rows_value_and_grad(
    zs: Array,
    zt: Array,
    target: Array | None,
    options: DistillOptions,
    grad_rows: Array | None = None,
    *,
    teacher: bool = False,
) -> tuple[Array, Array | None, Array | None]:
    """Per-row loss of (M, V) student/teacher logits and, if ``grad_rows`` is given, the gradients of
    ``Σ_i grad_rows[i]·ℓ_i`` with respect to the student's and (with ``teacher``) the teacher's logits.

    Args:
        zs, zt: (M, V) floating logits of the student and the teacher (same dtype; the math runs in it).
        target: (M,) integer class indices or None.
        options: validated options (``reduction`` is not used here).
        grad_rows: (M,) per-row upstream factors (see :func:`crossent.numpy.reduce.upstream`), or None
            for the loss only.
        teacher: also return the teacher's gradient.

    Returns:
        ``(loss (M,), d_student (M, V) or None, d_teacher (M, V) or None)``; ignored rows have loss 0
        and zero gradients.
    """
    xp = namespace(zs, zt, target)
    tau = options.temperature
    c = options.soft_scale
    h = options.hard_weight
    want = grad_rows is not None
    valid = None
    if target is not None:
        valid, _ = valid_targets(xp, target, options.ignore_index)
    loss = xp.zeros(zs.shape[:1], dtype=zs.dtype, device=device(zs))
    ga = gb = None
    if c > 0:
        # τ = 1: no division (two fewer passes over the rows)
        log_ps = log_softmax(zs / tau if tau != 1.0 else zs)
        log_pt = log_softmax(zt / tau if tau != 1.0 else zt)
        d, ga, gb = soft_rows(log_ps, log_pt, options, grad=want, teacher=teacher)
        loss = c * d
    if h > 0:
        loss = loss + h * ce_rows(zs, target, None, _ce_options(options), False)[0]
    if valid is not None:
        loss = xp.where(valid, loss, xp.zeros_like(loss))
    if not want:
        return loss, None, None
    g = xp.astype(grad_rows, zs.dtype)
    if valid is not None:
        # ignored rows carry 0 (not 0·g: with every row ignored, the mean's g = 1/0 = inf)
        g = xp.where(valid, g, xp.zeros_like(g))
    g2 = xp.reshape(g, (-1, 1)) * (c / tau)
    d_student = ga * g2 if ga is not None else xp.zeros_like(zs)
    if h > 0:
        d_student = d_student + h * ce_rows_grad(zs, target, None, _ce_options(options), False, g)
    d_teacher = None
    if teacher:
        d_teacher = gb * g2 if gb is not None else xp.zeros_like(zt)
    return loss, d_student, d_teacher


def distill_rows(zs: Array, zt: Array, target: Array | None, options: DistillOptions) -> Array:
    """Per-row loss (M,) of (M, V) logits (:func:`distill_rows_value_and_grad` without gradients)."""
    return distill_rows_value_and_grad(zs, zt, target, options)[0]


def distill_rows_grad(
    zs: Array,
    zt: Array,
    target: Array | None,
    options: DistillOptions,
    grad_rows: Array,
    *,
    teacher: bool = True,
) -> tuple[Array, Array | None]:
    """``(d_student, d_teacher)`` of ``Σ_i grad_rows[i]·ℓ_i`` (d_teacher None unless ``teacher``)."""
    _, ds, dt = distill_rows_value_and_grad(zs, zt, target, options, grad_rows, teacher=teacher)
    return ds, dt


def distill_denominator(target: Array | None, options: DistillOptions, like: Array) -> Array | None:
    """D of the mean: the number of non-ignored rows; None (= the number of rows) without a target."""
    if target is None:
        return None
    xp = namespace(target, like)
    valid, _ = valid_targets(xp, target, options.ignore_index)
    return xp.sum(xp.astype(valid, like.dtype))


# --------------------------------------------------------------------------------------------------
# Public functions.
# --------------------------------------------------------------------------------------------------


def _prepare(student_logits: Array, teacher_logits: Array, target: Array | None, options):
    xp = namespace(student_logits, teacher_logits, target)
    check_distill_shapes(student_logits, teacher_logits, target, options.hard_weight)
    for name, z in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not is_floating(xp, z):
            raise CrossentTypeError(
                f"argument '{name}' must be a floating-point array of logits, got dtype {z.dtype}"
            )
    if target is not None and not is_integer(xp, target):
        raise CrossentTypeError(
            f"argument 'target' must hold integer class indices, got dtype {target.dtype}"
        )
    dtype = compute_dtype(xp, student_logits)
    if compute_dtype(xp, teacher_logits) == xp.float64:
        dtype = xp.float64
    num_classes = student_logits.shape[-1]
    zs = xp.reshape(xp.astype(student_logits, dtype), (-1, num_classes))
    zt = xp.reshape(xp.astype(teacher_logits, dtype), (-1, num_classes))
    y = None
    if target is not None:
        y = xp.reshape(target, (-1,))
        check_target_bounds(xp, y, num_classes, options.ignore_index)
    return xp, zs, zt, y, tuple(student_logits.shape[:-1])


def distillation_loss(
    student_logits: Array,
    teacher_logits: Array,
    target: Array | None = None,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    scale_by_temperature_squared: bool = False,
) -> Array:
    r"""Distillation loss :math:`(1-h)\,s\,D(p_T, p_S) + h\,\mathrm{CE}(z^S, y)` (module doc).

    Args:
        student_logits: (..., V) floating logits of the student.
        teacher_logits: (..., V) floating logits of the teacher (the same shape).
        target: (...) integer class indices for the hard term and for ``ignore_index``, or None.
        divergence: "forward_kl", "reverse_kl" or "jsd".
        beta: the teacher's share β ∈ [0, 1] of the JSD mixture (β ∈ {0, 1}: module doc).
        temperature: τ > 0.
        hard_weight: h ∈ [0, 1]; h > 0 needs a target.
        ignore_index: target value whose rows contribute nothing.
        reduction: "none" (shape (...)), "sum" or "mean" (over the non-ignored rows).
        scale_by_temperature_squared: multiply the soft term by τ².

    Returns:
        The loss in the compute dtype (float32 for half-precision inputs).

    Raises:
        ValueError: mismatched shapes or vocabularies, a bad option (the message names the argument).
        TypeError: non-floating logits, non-integer target.
        IndexError: a target outside [0, V) that is not ``ignore_index``.

    Example:
        >>> import numpy as np
        >>> zs, zt = np.array([[0.0, 0.0]]), np.array([[0.0, np.log(3.0)]])
        >>> round(float(distillation_loss(zs, zt)), 6)  # KL((1/4, 3/4) || (1/2, 1/2))
        0.130812
    """
    options = distill_options(
        divergence,
        beta,
        temperature,
        hard_weight,
        ignore_index,
        reduction,
        scale_by_temperature_squared,
    )
    xp, zs, zt, y, shape = _prepare(student_logits, teacher_logits, target, options)
    loss = distill_rows(zs, zt, y, options)
    den = distill_denominator(y, options, loss)
    return reduce(xp.reshape(loss, shape), options.reduction, den)


def distillation_loss_grad(
    student_logits: Array,
    teacher_logits: Array,
    target: Array | None = None,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    scale_by_temperature_squared: bool = False,
    grad_output: Array | float = 1.0,
) -> tuple[Array, Array]:
    """Gradients of ``grad_output ·`` :func:`distillation_loss` with respect to the student's and the
    teacher's logits (formulas: module doc).

    ``grad_output`` has the loss's shape (a scalar for "sum"/"mean").

    Returns:
        ``(d_student, d_teacher)``, each of the logits' shape, in the compute dtype.

    Example:
        >>> import numpy as np
        >>> ds, dt = distillation_loss_grad(np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]))
        >>> ds.tolist(), dt.tolist()  # equal distributions: a minimum
        ([[0.0, 0.0]], [[0.0, 0.0]])
    """
    options = distill_options(
        divergence,
        beta,
        temperature,
        hard_weight,
        ignore_index,
        reduction,
        scale_by_temperature_squared,
    )
    xp, zs, zt, y, shape = _prepare(student_logits, teacher_logits, target, options)
    like = xp.zeros(zs.shape[:1], dtype=zs.dtype, device=device(zs))
    den = distill_denominator(y, options, like)
    g = upstream(xp.reshape(like, shape), options.reduction, grad_output, den)
    ds, dt = distill_rows_grad(zs, zt, y, options, xp.reshape(g, (-1,)), teacher=True)
    full = tuple(student_logits.shape)
    return xp.reshape(ds, full), xp.reshape(dt, full)


__all__ = [
    "distill_denominator",
    "distill_rows",
    "distill_rows_grad",
    "distill_rows_value_and_grad",
    "distillation_loss",
    "distillation_loss_grad",
    "effective_divergence",
    "soft_grads",
    "soft_parts",
    "soft_rows",
    "soft_sums",
    "soft_value",
]
