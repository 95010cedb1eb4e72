r"""Binary and multi-label losses: BCE on probabilities, BCE with logits, sigmoid focal loss.

Every loss here is elementwise (one independent binary problem per element; a multi-label problem is an
(N, C) array of them) and ``mean`` averages over all elements (PyTorch's and torchvision's convention;
weights are part of the loss, never of the denominator).

* :func:`binary_cross_entropy` (PyTorch's clamp): :math:`\ell = -w\,[t \max(\log p, -100)
  + (1-t)\max(\log(1-p), -100)]`; :math:`\partial\ell/\partial p = w (p - t)/\max(p(1-p), \epsilon)`,
  :math:`\epsilon = 10^{-12}` rounded to float32 (as in ATen).
* :func:`binary_cross_entropy_with_logits`: with :math:`\log\sigma(x) = -\log(1 + e^{-x})` computed as
  ``-logaddexp(0, -x)`` (stable for any x), :math:`\ell = w\,[(1-t)x - (1 + (\text{pw} - 1)t)\log\sigma(x)]`;
  :math:`\partial\ell/\partial x = w\,[(\text{pw}\,t + 1 - t)\sigma(x) - \text{pw}\,t]`.
* :func:`sigmoid_focal_loss` (torchvision's definition and defaults): :math:`m = p + t - 2pt`
  (:math:`= 1 - p_t`), :math:`\ell = \alpha_t\,\mathrm{BCE}(x, t)\, m^{\gamma}` with
  :math:`\alpha_t = \alpha t + (1-\alpha)(1-t)` (skipped for α = −1);
  :math:`\partial\ell/\partial x = \alpha_t[(p - t)m^\gamma + \gamma\,\mathrm{BCE}\,m^{\gamma-1}(1-2t)p(1-p)]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._contract import (
    BCE_SIZE_MESSAGE,
    LOGITS_SIZE_MESSAGE,
    CrossentValueError,
    check_focal_reduction,
    check_gamma,
    check_reduction,
    check_sigmoid_focal_alpha,
)
from ._xp import Array, compute_dtype, device, namespace, writable
from .reduce import reduce, upstream

# ATen's EPSILON for the BCE gradient is the C float 1e-12, i.e. 9.999999960041972e-13 in double.
BCE_GRAD_EPS = float(np.float32(1e-12))
BCE_LOG_CLAMP = -100.0


def log_sigmoid(x: Array) -> Array:
    r""":math:`\log\sigma(x) = -\log(1 + e^{-x})`, as ``-logaddexp(0, -x)`` (never overflows)."""
    xp = namespace(x)
    out = xp.logaddexp(xp.zeros((), dtype=x.dtype, device=device(x)), -x)
    out *= -1.0
    return out


def sigmoid(x: Array) -> Array:
    r""":math:`\sigma(x) = e^{\log\sigma(x)}` (stable for large |x|)."""
    xp = namespace(x)
    return xp.exp(log_sigmoid(x))


# --- elementwise math (backends call these) -------------------------------------------------------
# In-place operators (``a *= b``) only ever update an array the function itself just created, and the
# output of exp only through ``writable`` (autograd saves it): the eager backend differentiates these
# functions again (double backward, gradients with respect to targets and weights).


def bce_elements(p: Array, t: Array, w: Array | None) -> Array:
    xp = namespace(p, t, w)
    log_p = xp.clip(xp.log(p), min=BCE_LOG_CLAMP)
    log_1mp = xp.clip(xp.log1p(-p), min=BCE_LOG_CLAMP)
    loss = -(t * log_p + (1.0 - t) * log_1mp)
    return loss if w is None else loss * w


def bce_elements_grad(p: Array, t: Array, w: Array | None, g: Array) -> Array:
    xp = namespace(p, t, w, g)
    denom = xp.clip(p * (1.0 - p), min=BCE_GRAD_EPS)
    grad = g * (p - t) / denom
    return grad if w is None else grad * w


def _bce_logits(x: Array, t: Array, log_sig: Array) -> Array:
    r""":math:`(1 - t)\,x - \log\sigma(x)`, the BCE of logits, given :math:`\log\sigma(x)`."""
    loss = 1.0 - t
    loss *= x
    loss -= log_sig
    return loss


def bce_logits_elements(x: Array, t: Array, w: Array | None, pos_weight: Array | None) -> Array:
    ls = log_sigmoid(x)
    if pos_weight is not None:
        ls *= (pos_weight - 1.0) * t + 1.0  # (1 + (pw − 1)·t)·logσ(x)
    loss = _bce_logits(x, t, ls)
    if w is not None:
        loss *= w
    return loss


def bce_logits_elements_grad(
    x: Array, t: Array, w: Array | None, pos_weight: Array | None, g: Array
) -> Array:
    s = sigmoid(x)
    if pos_weight is None:
        grad = writable(s)
        grad -= t
    else:
        pw_t = pos_weight * t
        grad = pw_t + 1.0  # (pw·t + 1 − t)·σ − pw·t
        grad -= t
        grad *= s
        grad -= pw_t
    grad *= g
    if w is not None:
        grad *= w
    return grad


def _alpha_t(t: Array, alpha: float) -> Array | float:
    r""":math:`\alpha_t = \alpha t + (1-\alpha)(1-t)` (exactly α at t = 1, 1 − α at t = 0); 1 for α < 0."""
    if alpha < 0:
        return 1.0
    a_t = alpha * t
    a_t += (1.0 - alpha) * (1.0 - t)
    return a_t


def _sigmoid_pair(x: Array, ls: Array) -> tuple[Array, Array]:
    r"""(p, q) = (σ(x), σ(−x)) from :math:`\log\sigma(\pm x)`, each accurate to its own size (1 − p would
    lose q's digits when p → 1)."""
    xp = namespace(x)
    return xp.exp(ls), xp.exp(log_sigmoid(-x))


def _one_minus_p_t(p: Array, q: Array, t: Array) -> Array:
    r""":math:`m = 1 - p_t = p(1-t) + qt` (:math:`q = 1 - p`, both exact-sized: no cancellation at
    confident predictions)."""
    m = p * (1.0 - t)
    m += q * t
    return m


def sigmoid_focal_elements(x: Array, t: Array, alpha: float, gamma: float) -> Array:
    ls = log_sigmoid(x)
    loss = _bce_logits(x, t, ls)
    if gamma != 0:
        mod = _one_minus_p_t(*_sigmoid_pair(x, ls), t)
        mod **= gamma
        loss *= mod
    if alpha >= 0:
        loss *= _alpha_t(t, alpha)
    return loss


def sigmoid_focal_elements_grad(x: Array, t: Array, alpha: float, gamma: float, g: Array) -> Array:
    xp = namespace(x, t, g)
    ls = log_sigmoid(x)
    p, q = _sigmoid_pair(x, ls)
    grad = p * (1.0 - t)
    grad -= q * t  # p − t, without the cancellation of p − 1 at t = 1
    if gamma != 0:
        m = _one_minus_p_t(p, q, t)
        # m^(γ-1), and 0 where m = 0: m^(γ-1)·p(1-p) → 0 as m → 0 (p → t ∈ {0, 1}), guarding the 0·inf
        # of γ < 1
        positive = m > 0
        m_pow = xp.where(positive, m, 1.0)
        m_pow **= gamma - 1.0
        m_pow = xp.where(positive, m_pow, 0.0)
        grad *= m_pow
        grad *= m  # (p - t)·m^γ
        second = _bce_logits(x, t, ls)  # γ·BCE·m^(γ-1)·(1-2t)·p(1-p)
        second *= m_pow
        one_minus_2t = t * -2.0
        one_minus_2t += 1.0
        second *= one_minus_2t
        second *= gamma
        second *= p
        second *= q  # p(1 − p)
        grad += second
    if alpha >= 0:
        grad *= _alpha_t(t, alpha)
    grad *= g
    return grad


# --- validation ----------------------------------------------------------------------------------


def broadcast_weight(
    xp: Any, weight: Array | None, target: Array, name: str = "weight"
) -> Array | None:
    """Broadcast an elementwise weight to the target's shape; it must not enlarge the target."""
    if weight is None:
        return None
    try:
        shape = np.broadcast_shapes(tuple(weight.shape), tuple(target.shape))
    except ValueError:
        raise CrossentValueError(
            f"argument '{name}' of shape {tuple(weight.shape)} does not broadcast to the target's shape "
            f"{tuple(target.shape)}"
        ) from None
    if shape != tuple(target.shape):
        raise CrossentValueError(
            f"output with shape {list(target.shape)} doesn't match the broadcast shape {list(shape)} "
            f"(argument '{name}' of shape {tuple(weight.shape)} would enlarge the target)"
        )
    return xp.broadcast_to(weight, target.shape)


def _prepare(input: Array, target: Array, weight: Array | None, reduction: str, *, message: str):
    check_reduction(reduction)
    xp = namespace(input, target, weight)
    input, target = xp.asarray(input), xp.asarray(target)
    if tuple(input.shape) != tuple(target.shape):
        raise CrossentValueError(message.format(t=tuple(target.shape), i=tuple(input.shape)))
    dtype = compute_dtype(xp, input)
    x, t = xp.astype(input, dtype), xp.astype(target, dtype)
    w = broadcast_weight(xp, weight, target)
    return xp, x, t, (None if w is None else xp.astype(w, dtype))


def _check_unit_interval(xp: Any, x: Array, name: str) -> None:
    if x.size == 0 if hasattr(x, "size") and not callable(x.size) else x.numel() == 0:
        return
    if not bool(xp.all((x >= 0) & (x <= 1))):
        raise CrossentValueError(
            f"all elements of {name} should be between 0 and 1 (argument '{name}')"
        )


# --- public API -----------------------------------------------------------------------------------


def binary_cross_entropy(
    input: Array, target: Array, weight: Array | None = None, reduction: str = "mean"
) -> Array:
    """Binary cross-entropy of probabilities ``input`` against targets in [0, 1] (formula: module doc).

    Example:
        >>> import numpy as np
        >>> float(binary_cross_entropy(np.array([0.5]), np.array([1.0])))  # log 2
        0.6931471805599453
    """
    xp, p, t, w = _prepare(input, target, weight, reduction, message=BCE_SIZE_MESSAGE)
    _check_unit_interval(xp, p, "input")
    _check_unit_interval(xp, t, "target")
    return reduce(bce_elements(p, t, w), reduction)


def binary_cross_entropy_grad(
    input: Array,
    target: Array,
    weight: Array | None = None,
    reduction: str = "mean",
    *,
    grad_output: Array | float = 1.0,
) -> Array:
    """∂(grad_output · :func:`binary_cross_entropy`)/∂input."""
    xp, p, t, w = _prepare(input, target, weight, reduction, message=BCE_SIZE_MESSAGE)
    _check_unit_interval(xp, p, "input")
    return bce_elements_grad(p, t, w, upstream(p, reduction, grad_output))


def _pos_weight(xp: Any, pos_weight: Array | None, target: Array, dtype: Any) -> Array | None:
    pw = broadcast_weight(xp, pos_weight, target, "pos_weight")
    return None if pw is None else xp.astype(pw, dtype)


def binary_cross_entropy_with_logits(
    input: Array,
    target: Array,
    weight: Array | None = None,
    reduction: str = "mean",
    pos_weight: Array | None = None,
) -> Array:
    """Binary cross-entropy of logits, with ``pos_weight`` for the positive term (formula: module doc).

    Example:
        >>> import numpy as np
        >>> float(binary_cross_entropy_with_logits(np.array([0.0]), np.array([1.0])))  # log 2
        0.6931471805599453
    """
    xp, x, t, w = _prepare(input, target, weight, reduction, message=LOGITS_SIZE_MESSAGE)
    pw = _pos_weight(xp, pos_weight, t, x.dtype)
    return reduce(bce_logits_elements(x, t, w, pw), reduction)


def binary_cross_entropy_with_logits_grad(
    input: Array,
    target: Array,
    weight: Array | None = None,
    reduction: str = "mean",
    pos_weight: Array | None = None,
    *,
    grad_output: Array | float = 1.0,
) -> Array:
    """∂(grad_output · :func:`binary_cross_entropy_with_logits`)/∂input."""
    xp, x, t, w = _prepare(input, target, weight, reduction, message=LOGITS_SIZE_MESSAGE)
    pw = _pos_weight(xp, pos_weight, t, x.dtype)
    return bce_logits_elements_grad(x, t, w, pw, upstream(x, reduction, grad_output))


def sigmoid_focal_loss(
    inputs: Array, targets: Array, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
) -> Array:
    """torchvision's sigmoid focal loss (RetinaNet): defaults α = 0.25, γ = 2, reduction ``none``.

    Example:
        >>> import numpy as np
        >>> sigmoid_focal_loss(np.array([-3.0, 0.0]), np.array([1.0, 0.5]))  # torchvision's values
        array([0.69157011, 0.0866434 ])
    """
    alpha, gamma = check_sigmoid_focal_alpha(alpha), check_gamma(gamma)
    check_focal_reduction(reduction)
    xp, x, t, _ = _prepare(inputs, targets, None, "none", message=LOGITS_SIZE_MESSAGE)
    return reduce(sigmoid_focal_elements(x, t, alpha, gamma), reduction)


def sigmoid_focal_loss_grad(
    inputs: Array,
    targets: Array,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
    *,
    grad_output: Array | float = 1.0,
) -> Array:
    """∂(grad_output · :func:`sigmoid_focal_loss`)/∂inputs."""
    alpha, gamma = check_sigmoid_focal_alpha(alpha), check_gamma(gamma)
    check_focal_reduction(reduction)
    xp, x, t, _ = _prepare(inputs, targets, None, "none", message=LOGITS_SIZE_MESSAGE)
    return sigmoid_focal_elements_grad(x, t, alpha, gamma, upstream(x, reduction, grad_output))
