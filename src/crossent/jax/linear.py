"""Fused linear + cross-entropy for JAX: a language-model head's loss without its (tokens × vocab) logits.

:func:`linear_cross_entropy` computes ``cross_entropy(input @ linear_weight.T + linear_bias, target, …)``
chunk by chunk inside one XLA computation; how, and what it keeps in memory:
:mod:`crossent.jax._linear_scan`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .._contract import CELayout, CrossentTypeError, CrossentValueError, check_class_weight
from . import _args, _linear_scan
from ._rows import divide_mean
from .categorical import mean_denominator

Array = jax.Array

MiB = 1 << 20
# Default cap on the chunk's (c, V) buffers: 64 MiB keeps the compiled temporaries of a jitted
# value_and_grad at N=4096, D=256, V=32000 (float32, CPU) near 110 MiB, under a quarter of the 500 MiB of
# logits, with chunks of ~170 rows whose products still run at the speed of the unchunked ones (docs/jax.md).
DEFAULT_WORKSPACE_BYTES = 64 * MiB
# About this many (c, V) arrays of the compute dtype are live at once in a compiled chunk (the logits,
# their exponentials, the gradient), measured with XLA's memory analysis on the CPU.
LIVE_CHUNK_BUFFERS = 3


def chunk_rows(rows: int, vocab: int, dim: int, itemsize: int, workspace_bytes: int | None) -> int:
    """Rows per chunk: as many as fit ``workspace_bytes`` (at least 1, at most ``rows``)."""
    budget = DEFAULT_WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    per_row = itemsize * (LIVE_CHUNK_BUFFERS * vocab + 2 * dim)
    return max(1, min(max(rows, 1), budget // per_row))


def _check_workspace(workspace_bytes: Any) -> int | None:
    value = _args.static("workspace_bytes", workspace_bytes)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CrossentValueError(
            f"argument 'workspace_bytes' must be None or an int >= 1, got {workspace_bytes!r}"
        )
    return value


def _check_shapes(x: Array, w: Array, b: Array | None) -> None:
    for name, a in (("input", x), ("linear_weight", w), ("linear_bias", b)):
        if a is not None:
            _args.check_floating(name, a)
    if x.ndim < 1:
        raise CrossentValueError("argument 'input' must have shape (..., D), got a 0-d array")
    if w.ndim != 2 or w.shape[1] != x.shape[-1]:
        raise CrossentValueError(
            f"argument 'linear_weight' must have shape (V, {x.shape[-1]}) for input of shape "
            f"{tuple(x.shape)}, got {tuple(w.shape)}"
        )
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise CrossentValueError(
            f"argument 'linear_bias' must have shape ({w.shape[0]},), got {tuple(b.shape)}"
        )


def _layout(x: Array, t: Array, vocab: int) -> CELayout:
    lead = tuple(x.shape[:-1])
    rows = math.prod(lead)
    if tuple(t.shape) == (*lead, vocab):
        return CELayout((rows, vocab), 1, vocab, lead, True)
    if tuple(t.shape) == lead:
        return CELayout((rows, vocab), 1, vocab, lead, False)
    raise CrossentValueError(
        f"argument 'target' must have shape {lead} (class indices) or {(*lead, vocab)} (class "
        f"probabilities) for input of shape {tuple(x.shape)}, got {tuple(t.shape)}"
    )


def linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: Any = None,
    workspace_bytes: int | None = None,
) -> Array:
    r"""``cross_entropy(input @ linear_weight.T + linear_bias, target, …)`` without the (N, V) logits.

    Computes :func:`crossent.numpy.cross_entropy` of those logits (formula there), chunk by chunk:
    for "sum"/"mean" the gradients of ``input``, ``linear_weight`` and ``linear_bias`` are produced
    during the forward of the differentiated computation (three matrix products in all), so a jitted
    ``jax.value_and_grad`` holds one chunk's logits at a time (:mod:`crossent.jax._linear_scan`).

    Args:
        input: (…, D) hidden states, floating (half precision computes in float32; dW accumulates in
            float32).
        linear_weight: (V, D) output projection (the layout of ``torch.nn.Linear``).
        target: class indices of shape (…), integers, or class probabilities (…, V).
        linear_bias: (V,) or None.
        weight, reduction, ignore_index, label_smoothing, z_loss, softcap, normalize_by: as in
            :func:`crossent.jax.cross_entropy` (the class axis is the last one).
        workspace_bytes: cap on the chunk's (c, V) buffers (default 64 MiB); at least one row is processed
            at a time.

    Returns:
        The loss: shape () for "sum"/"mean", the target's shape (…) for "none"; float32 for
        half-precision inputs, else the input's dtype. Differentiable with respect to ``input``,
        ``linear_weight`` and ``linear_bias`` (``jax.grad``, ``jax.jvp``, ``jax.vmap``), not with
        respect to ``target`` or ``weight`` (differentiating those raises).

    Raises:
        ValueError, TypeError, IndexError: as :func:`crossent.jax.cross_entropy`, and for shapes of
            ``linear_weight``/``linear_bias`` that do not fit ``input``, or a ``workspace_bytes`` < 1.

    Example:
        >>> import jax.numpy as jnp
        >>> x, w = jnp.zeros((2, 3)), jnp.zeros((4, 3))
        >>> float(linear_cross_entropy(x, w, jnp.array([0, 3])))  # log 4
        1.3862943...
    """
    opts = _args.options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    workspace = _check_workspace(workspace_bytes)
    x = _args.array("input", input)
    w = _args.array("linear_weight", linear_weight)
    b = _args.optional_array("linear_bias", linear_bias)
    t = _args.array("target", target)
    cw = _args.optional_array("weight", weight)
    _check_shapes(x, w, b)
    vocab, dim = w.shape
    layout = _layout(x, t, vocab)
    rows = layout.rows
    x2 = jnp.reshape(x, (rows, dim))
    t2 = jnp.reshape(t, (rows, vocab) if layout.prob_target else (rows,))
    if layout.prob_target:
        from .._contract import check_prob_target_ignore_index

        check_prob_target_ignore_index(opts.ignore_index)
        _args.check_floating("target", t)
    elif not jnp.issubdtype(t.dtype, jnp.integer):
        raise CrossentTypeError(
            f"argument 'target' holds class indices: use an integer array, got dtype {t.dtype}"
        )
    _args.check_targets(x2, t, layout, opts.ignore_index)
    check_class_weight(cw, vocab)
    dtype = _args.compute_dtype(x)
    if cw is not None:
        _args.check_floating("weight", cw)
    if layout.prob_target:
        t2 = t2.astype(dtype)
    chunk = chunk_rows(rows, vocab, dim, jnp.dtype(dtype).itemsize, workspace)
    plan = _linear_scan.Plan(opts, layout.prob_target, chunk, rows)
    den = _args.denominator(normalize_by, opts.reduction, jnp.zeros((), dtype))
    if opts.reduction == "none":
        loss = _linear_scan.per_row(plan, x2, w, b, t2, cw)
        return jnp.reshape(loss, layout.loss_shape)
    total = _linear_scan.summed(plan, x2, w, b, t2, cw)
    if opts.reduction == "sum":
        return total
    if den is None:
        den = mean_denominator(t2, cw, opts, layout.prob_target, total)
    return divide_mean(total, den)  # NaN with zero gradients when every position is ignored
