"""Elementwise losses for JAX: ``binary_cross_entropy_with_logits``, ``sigmoid_focal_loss``, ``kl_div``.

Each computes the function of the same name in :mod:`crossent.numpy` (formulas there), one independent
term per element, with the analytic derivative of :mod:`crossent.jax._rows`; ``mean`` averages over all
elements (weights are part of the loss, never of the denominator), ``batchmean`` (``kl_div``) divides the
sum by the batch size. Half-precision inputs compute in float32 and return a float32 loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._contract import (
    KL_REDUCTIONS,
    LOGITS_SIZE_MESSAGE,
    CrossentValueError,
    check_gamma,
    check_reduction,
    check_sigmoid_focal_alpha,
)
from ..numpy.binary import broadcast_weight
from ..numpy.reduce import reduce
from . import _args, _rows

Array = jax.Array


def _pair(names: tuple[str, str], input: Any, target: Any) -> tuple[Array, Array]:
    """Input and target of the same shape, both floating, in the compute dtype."""
    x = _args.array(names[0], input)
    t = _args.array(names[1], target)
    if tuple(x.shape) != tuple(t.shape):
        raise CrossentValueError(LOGITS_SIZE_MESSAGE.format(t=tuple(t.shape), i=tuple(x.shape)))
    _args.check_floating(names[0], x)
    _args.check_floating(names[1], t)
    dtype = _args.compute_dtype(x)
    return x.astype(dtype), t.astype(dtype)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Array:
    r"""Binary cross-entropy of logits: :math:`\ell = w[(1-t)x - (1 + (\text{pw}-1)t)\log\sigma(x)]`.

    Computes :func:`crossent.numpy.binary_cross_entropy_with_logits` (multi-label: an (N, C) input).

    Args:
        input: logits of any shape, floating.
        target: targets in [0, 1] of the input's shape, floating (differentiable).
        weight: per-element weights broadcastable to the target's shape, or None.
        reduction: "none", "sum" or "mean" (over all elements).
        pos_weight: weight of the positive term, broadcastable to the target's shape (e.g. (C,)).

    Returns:
        The loss (the input's shape for "none"); float32 for half-precision inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> float(binary_cross_entropy_with_logits(jnp.array([0.0]), jnp.array([1.0])))  # log 2
        0.6931471...
    """
    reduction = check_reduction(_args.static("reduction", reduction))
    x, t = _pair(("input", "target"), input, target)
    w = broadcast_weight(jnp, _args.optional_array("weight", weight), t)
    pw = broadcast_weight(jnp, _args.optional_array("pos_weight", pos_weight), t, "pos_weight")
    w = None if w is None else w.astype(x.dtype)
    pw = None if pw is None else pw.astype(x.dtype)
    return reduce(_rows.bce_logits_elements(x, t, w, pw), reduction)


def sigmoid_focal_loss(
    inputs: Any, targets: Any, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Array:
    r"""Sigmoid focal loss (RetinaNet; torchvision's definition and defaults α = 0.25, γ = 2, "none").

    Computes :func:`crossent.numpy.sigmoid_focal_loss`:
    :math:`\ell = \alpha_t\,\mathrm{BCE}(x, t)\,(1 - p_t)^\gamma` (α = −1 switches the balance off).

    Example:
        >>> import jax.numpy as jnp
        >>> loss = sigmoid_focal_loss(jnp.array([-3.0, 0.0]), jnp.array([1.0, 0.5]))
        >>> [round(float(v), 5) for v in loss]  # torchvision's values
        [0.69157, 0.08664]
    """
    alpha = check_sigmoid_focal_alpha(_args.static("alpha", alpha))
    gamma = check_gamma(_args.static("gamma", gamma))
    reduction = check_reduction(_args.static("reduction", reduction))
    x, t = _pair(("inputs", "targets"), inputs, targets)
    return reduce(_rows.sigmoid_focal_elements(x, t, alpha, gamma), reduction)


def kl_div(input: Any, target: Any, reduction: str = "mean", log_target: bool = False) -> Array:
    r"""KL divergence with PyTorch's ``kl_div`` contract: pointwise :math:`p(\log p - \log q)`.

    Computes :func:`crossent.numpy.kl_div`: ``input`` holds :math:`\log q`, ``target`` holds :math:`p`
    (or :math:`\log p` with ``log_target=True``), :math:`0 \log 0 = 0`. ``batchmean`` divides the sum by
    ``input.shape[0]`` (the KL divergence per sample), ``mean`` by the number of elements (as torch).
    The target is broadcast to the input's shape.

    Example:
        >>> import jax.numpy as jnp
        >>> float(kl_div(jnp.log(jnp.array([0.5, 0.5])), jnp.array([1.0, 0.0]), reduction="sum"))
        0.6931471...
    """
    reduction = check_reduction(_args.static("reduction", reduction), KL_REDUCTIONS)
    log_target = bool(_args.static("log_target", log_target))
    x = _args.array("input", input)
    t = _args.array("target", target)
    _args.check_floating("input", x)
    _args.check_floating("target", t)
    dtype = _args.compute_dtype(x)
    x = x.astype(dtype)
    try:
        t = jnp.broadcast_to(t, x.shape).astype(dtype)
    except ValueError:
        raise CrossentValueError(
            f"argument 'target' of shape {tuple(t.shape)} does not broadcast to the input's shape "
            f"{tuple(x.shape)}"
        ) from None
    loss = _rows.kl_elements(x, t, log_target)
    if reduction == "batchmean":
        return reduce(loss, "mean", float(x.shape[0]) if x.ndim > 0 else 1.0)
    return reduce(loss, reduction)
