"""Reductions: the only definition of the mean's denominator.

Conventions (PyTorch's; the full table is in docs/semantics.md):

* index targets: ``mean = Σ_i ℓ_i / D`` with ``D = Σ_{i not ignored} w[y_i]`` (the count of non-ignored
  positions without class weights). Ignored positions add 0 to the sum and to D.
* probability targets, binary losses: ``D`` = number of positions.
* ``D = 0`` (everything ignored, empty batch) gives ``0/0 = NaN`` for ``mean``, ``0`` for ``sum``.

A caller-supplied denominator (``normalize_by``) replaces D, e.g. the global token count of a
data-parallel step with gradient accumulation.
"""

from __future__ import annotations

import math

import numpy as np

from .._contract import check_reduction
from ._xp import Array, device, namespace


def divide(a: Array, b: Array) -> Array:
    """``a / b`` with IEEE semantics (0/0 = NaN, x/0 = ±inf) and no warnings, for NumPy and torch alike."""
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.true_divide(a, b)
    return a / b


def as_denominator(like: Array, denominator: Array | float | None) -> Array:
    """D as a 0-d array of ``like``'s dtype; None means the number of elements of ``like``."""
    xp = namespace(like)
    if denominator is None:
        denominator = float(math.prod(like.shape))
    if hasattr(denominator, "dtype"):
        return xp.astype(denominator, like.dtype)
    return xp.asarray(denominator, dtype=like.dtype, device=device(like))


def reduce(loss: Array, reduction: str, denominator: Array | float | None = None) -> Array:
    """Reduce per-element losses: ``none`` → ℓ, ``sum`` → Σℓ, ``mean`` → Σℓ / D.

    Args:
        loss: per-element losses.
        reduction: "none", "sum" or "mean".
        denominator: D for ``mean``; None means the number of elements.
    """
    check_reduction(reduction)
    if reduction == "none":
        return loss
    xp = namespace(loss)
    total = xp.sum(loss)
    if reduction == "sum":
        return total
    return divide(total, as_denominator(loss, denominator))


def upstream(
    like: Array,
    reduction: str,
    grad_output: Array | float,
    denominator: Array | float | None = None,
) -> Array:
    """The factor each element's gradient carries: ``g`` (sum), ``g / D`` (mean) or ``g_i`` (none).

    Returns an array broadcastable to ``like`` (the per-element loss).
    """
    check_reduction(reduction)
    xp = namespace(like)
    g = grad_output
    g = (
        xp.astype(g, like.dtype)
        if hasattr(g, "dtype")
        else xp.asarray(g, dtype=like.dtype, device=device(like))
    )
    if reduction == "none":
        return xp.broadcast_to(g, like.shape)
    if reduction == "mean":
        g = divide(g, as_denominator(like, denominator))
    return xp.broadcast_to(xp.reshape(g, ()), like.shape)
