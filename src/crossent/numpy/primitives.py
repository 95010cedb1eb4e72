"""Stable primitives: log-sum-exp, log-softmax, softmax and logit soft-capping, with their gradients.

Conventions: the class axis is the last axis; ``exp(-inf) = 0``; a row whose maximum is ``-inf``
(every class impossible) has ``lse = -inf``; a ``+inf`` or NaN anywhere in a row makes the row NaN.
"""

from __future__ import annotations

from ._xp import Array, namespace


def logsumexp(x: Array, axis: int = -1) -> Array:
    r"""Log-sum-exp along ``axis``.

    .. math:: \operatorname{lse}(x) = m + \log \sum_c e^{x_c - m}, \qquad m = \max_c x_c

    Subtracting the maximum keeps every exponent ≤ 0, so nothing overflows; the largest term is exactly 1,
    so the logarithm never sees 0 for a finite row.

    Args:
        x: real array, any shape.
        axis: the axis to reduce.

    Returns:
        ``x`` reduced over ``axis``.

    Example:
        >>> import numpy as np
        >>> float(logsumexp(np.array([1000.0, 1000.0])))  # doctest: +ELLIPSIS
        1000.693147...
    """
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    # stability: a row of -inf (or one containing +inf) would give nan in x - m; use 0 as the shift there.
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    s = xp.sum(xp.exp(x - m), axis=axis, keepdims=True)
    return xp.squeeze(m + xp.log(s), axis=axis)


def logsumexp_grad(x: Array, grad_output: Array | float = 1.0, axis: int = -1) -> Array:
    r"""Gradient of :func:`logsumexp`: :math:`\partial\,\mathrm{lse}/\partial x_c = \mathrm{softmax}(x)_c`."""
    xp = namespace(x)
    g = (
        xp.expand_dims(xp.asarray(grad_output, dtype=x.dtype), axis=axis)
        if _is_array(grad_output)
        else grad_output
    )
    return softmax(x, axis=axis) * g


def log_softmax(x: Array, axis: int = -1) -> Array:
    r"""Log-softmax, computed directly as :math:`x_c - \operatorname{lse}(x)` (never ``log(softmax(x))``)."""
    xp = namespace(x)
    return x - xp.expand_dims(logsumexp(x, axis=axis), axis=axis)


def log_softmax_grad(x: Array, grad_output: Array, axis: int = -1) -> Array:
    r"""Vector-Jacobian product of :func:`log_softmax`: :math:`g - \mathrm{softmax}(x)\sum_c g_c`."""
    xp = namespace(x, grad_output)
    return grad_output - softmax(x, axis=axis) * xp.sum(grad_output, axis=axis, keepdims=True)


def softmax(x: Array, axis: int = -1) -> Array:
    r"""Softmax :math:`p_c = e^{x_c - \operatorname{lse}(x)}` (computed from the log-sum-exp, so it is stable)."""
    xp = namespace(x)
    return xp.exp(log_softmax(x, axis=axis))


def softmax_grad(x: Array, grad_output: Array, axis: int = -1) -> Array:
    r"""Vector-Jacobian product of :func:`softmax`: :math:`p \odot (g - \sum_c p_c g_c)`."""
    xp = namespace(x, grad_output)
    p = softmax(x, axis=axis)
    return p * (grad_output - xp.sum(p * grad_output, axis=axis, keepdims=True))


def softcap(x: Array, cap: float | None) -> Array:
    r"""Logit soft-capping (Gemma 2): :math:`s \tanh(x / s)`; identity when ``cap`` is None."""
    if cap is None:
        return x
    xp = namespace(x)
    return cap * xp.tanh(x / cap)


def softcap_grad_from_output(capped: Array, cap: float | None) -> Array:
    r"""Derivative of :func:`softcap` expressed through its output :math:`z = s\tanh(x/s)`: :math:`1 - (z/s)^2`."""
    if cap is None:
        return 1.0
    t = capped / cap
    return 1.0 - t * t


def _is_array(value: object) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")
