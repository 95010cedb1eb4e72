r"""The chunked computation behind :func:`crossent.jax.linear_cross_entropy`.

Algorithm (rows of ``X`` in chunks of ``c`` rows, one ``lax.scan`` inside the caller's jitted program, so
only one chunk's (c, V) logits exist at a time):

1. The rows are padded to a multiple of ``c`` (padding rows carry a zero row mask: loss 0, gradient 0) and
   viewed as ``(n, c, D)`` chunks.
2. Per chunk: ``Z = X_c·Wᵀ (+ b)`` (product 1 of 3, computed in float32 for half-precision inputs, in the
   input's dtype otherwise); the rows' losses from the reference's
   :func:`crossent.numpy.categorical.ce_rows`; for a scalar loss with gradients, the logits' gradient
   ``G = ce_rows_grad(Z, …)`` (same module), then ``dX_c = G·W`` (product 2) and ``dW += Gᵀ·X_c``
   (product 3, accumulated in float32 or float64), ``db += Σ_rows G``.
3. Differentiation. The summed loss (``reduction`` "sum"/"mean") is a ``jax.custom_jvp`` function whose
   rule runs step 2 with gradients, in the forward: its tangent is
   ``⟨dX, Ẋ⟩ + ⟨dW, Ẇ⟩ + ⟨db, ḃ⟩``, linear in the tangents, so ``jax.grad`` transposes it into
   ``ḡ·dX, ḡ·dW, ḡ·db`` without recomputing anything (three products in all), and ``jax.jvp`` works too.
   The per-row losses (``reduction="none"``) are a ``jax.custom_jvp`` function too, whose rule's chunk
   is a ``jax.checkpoint``: the forward computes the losses (product 1); reverse mode recomputes each
   chunk's logits and ``G`` and applies the rows' cotangents (four products in all).

Memory: one chunk's (c, V) logits and the few same-shape temporaries XLA keeps for the chunk's softmax and
gradient, the chunk's operands, and beyond that O(N·D + V·D): the padded rows, dX, dW. The targets and the
class weights are not differentiated (an error says so where JAX would otherwise need their gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from .._contract import CEOptions, CrossentValueError
from ..numpy.categorical import ce_rows, ce_rows_grad
from ._rows import quiet_int64

Array = jax.Array


@dataclass(frozen=True)
class Plan:
    """Static description of one fused call.

    Attributes:
        options: the validated loss options (``reduction`` is not used here).
        prob_target: targets hold class probabilities (N, V) rather than indices (N,).
        chunk: rows per chunk ``c``.
        rows: N, the number of real rows (before padding).
    """

    options: CEOptions
    prob_target: bool
    chunk: int
    rows: int

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk)


def _compute_dtype(x: Array) -> jnp.dtype:
    return x.dtype if x.dtype in (jnp.float32, jnp.float64) else jnp.dtype(jnp.float32)


def _chunked(plan: Plan, a: Array) -> Array:
    """(N, …) → (n, c, …), zero padding rows appended."""
    pad = plan.chunks * plan.chunk - plan.rows
    if pad:
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
    return jnp.reshape(a, (plan.chunks, plan.chunk, *a.shape[1:]))


def _row_mask(plan: Plan, dtype: jnp.dtype) -> Array:
    return _chunked(plan, jnp.ones((plan.rows,), dtype))


def _unchunked(plan: Plan, a: Array) -> Array:
    return jnp.reshape(a, (plan.chunks * plan.chunk, *a.shape[2:]))[: plan.rows]


def _logits(xc: Array, w: Array, b: Array | None, dtype: jnp.dtype) -> Array:
    """Product 1: ``X_c·Wᵀ (+ b)`` in the compute dtype."""
    z = lax.dot_general(xc, w, (((1,), (1,)), ((), ())), preferred_element_type=dtype)
    return z if b is None else z + b.astype(dtype)


def _chunk_grads(
    xc: Array, w: Array, z: Array, tc: Array, cw: Array | None, plan: Plan, g: Array
) -> tuple[Array, Array, Array]:
    """(dX_c, dW_c, db_c) of ``Σ g·loss`` over one chunk, from its logits ``z`` (products 2 and 3)."""
    dz = ce_rows_grad(z, tc, cw, plan.options, plan.prob_target, g)
    dx = lax.dot_general(
        dz.astype(w.dtype), w, (((1,), (0,)), ((), ())), preferred_element_type=z.dtype
    )
    dw = lax.dot_general(dz, xc.astype(z.dtype), (((0,), (0,)), ((), ())))
    return dx.astype(xc.dtype), dw, jnp.sum(dz, axis=0)


def _scan_losses(
    plan: Plan, x: Array, w: Array, b: Array | None, t: Array, cw: Array | None
) -> Array:
    """Per-row losses (N,), product 1 only."""
    dtype = _compute_dtype(x)
    cw = None if cw is None else cw.astype(dtype)

    def body(_: None, chunk: tuple) -> tuple[None, Array]:
        xc, tc, mc = chunk
        z = _logits(xc, w, b, dtype)
        loss = ce_rows(z, tc, cw, plan.options, plan.prob_target)[0]
        return None, jnp.where(mc > 0, loss, 0.0)

    with quiet_int64():
        _, losses = lax.scan(
            body, None, (_chunked(plan, x), _chunked(plan, t), _row_mask(plan, dtype))
        )
    return _unchunked(plan, losses)


def _scan_grads(
    plan: Plan,
    x: Array,
    w: Array,
    b: Array | None,
    t: Array,
    cw: Array | None,
) -> tuple[Array, Array, Array, Array]:
    """(per-row losses, dX, dW, db) of ``Σ_i ℓ_i``."""
    dtype = _compute_dtype(x)
    cw = None if cw is None else cw.astype(dtype)
    v, d = w.shape
    mask = _row_mask(plan, dtype)

    def body(carry: tuple, chunk: tuple) -> tuple[tuple, tuple]:
        dw, db = carry
        xc, tc, mc = chunk
        z = _logits(xc, w, b, dtype)
        loss = ce_rows(z, tc, cw, plan.options, plan.prob_target)[0]
        dxc, dwc, dbc = _chunk_grads(xc, w, z, tc, cw, plan, mc)
        return (dw + dwc, db + dbc), (jnp.where(mc > 0, loss, 0.0), dxc)

    init = (jnp.zeros((v, d), dtype), jnp.zeros((v,), dtype))
    xs = (_chunked(plan, x), _chunked(plan, t), mask)
    with quiet_int64():
        (dw, db), (losses, dx) = lax.scan(body, init, xs)
    return _unchunked(plan, losses), _unchunked(plan, dx), dw.astype(w.dtype), db


# --- reduction "sum"/"mean": Σ_i ℓ_i with the gradients computed in the forward --------------------


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def summed(plan: Plan, x: Array, w: Array, b: Array | None, t: Array, cw: Array | None) -> Array:
    """Σ_i ℓ_i over the real rows (the gradients only when JAX differentiates it)."""
    return jnp.sum(_scan_losses(plan, x, w, b, t, cw))


def _zero(t: object) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def _not_differentiable(names: tuple[str, ...], tangents: tuple) -> None:
    for name, tangent in zip(names, tangents):
        if not _zero(tangent):
            raise CrossentValueError(
                f"linear_cross_entropy does not differentiate with respect to argument '{name}'; "
                "compute the logits and use crossent.jax.cross_entropy for that"
            )


@partial(summed.defjvp, symbolic_zeros=True)
def _summed_jvp(plan: Plan, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, w, b, t, cw = primals
    dx_t, dw_t, db_t, t_t, cw_t = tangents
    _not_differentiable(("target", "weight"), (t_t, cw_t))
    losses, dx, dw, db = _scan_grads(plan, x, w, b, t, cw)
    out = jnp.sum(losses)
    tangent = jnp.zeros_like(out)
    if not _zero(dx_t):
        tangent = tangent + jnp.vdot(dx, dx_t).astype(out.dtype)
    if not _zero(dw_t):
        tangent = tangent + jnp.vdot(dw, dw_t).astype(out.dtype)
    if b is not None and not _zero(db_t):
        tangent = tangent + jnp.vdot(db, db_t).astype(out.dtype)
    return out, tangent


# --- reduction "none": per-row losses; reverse mode recomputes each chunk's logits -----------------


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def per_row(plan: Plan, x: Array, w: Array, b: Array | None, t: Array, cw: Array | None) -> Array:
    """The (N,) per-row losses."""
    return _scan_losses(plan, x, w, b, t, cw)


@partial(per_row.defjvp, symbolic_zeros=True)
def _per_row_jvp(plan: Plan, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    """Losses and their tangents ``Σ_v G ⊙ (Ẋ_c·Wᵀ + X_c·Ẇᵀ + ḃ)``, chunk by chunk.

    The chunk's computation is a ``jax.checkpoint``: when JAX linearises this rule for reverse mode it
    keeps only the chunk's inputs and, in the transposed scan, recomputes the chunk's logits and ``G``
    before applying the rows' cotangents (``dX_c = (ḡ·G)·W``, ``dW += (ḡ·G)ᵀ·X_c``), so no (N, V) array
    is ever stored.
    """
    x, w, b, t, cw = primals
    tx, tw, tb, t_t, cw_t = (None if _zero(d) else d for d in tangents)
    _not_differentiable(("target", "weight"), (t_t, cw_t))
    dtype = _compute_dtype(x)
    cw = None if cw is None else cw.astype(dtype)

    @jax.checkpoint
    def chunk(xc: Array, tc: Array, mc: Array, txc: Array | None, consts: tuple) -> tuple:
        w, b, cw, tw, tb = consts
        z = _logits(xc, w, b, dtype)
        loss = jnp.where(mc > 0, ce_rows(z, tc, cw, plan.options, plan.prob_target)[0], 0.0)
        g = ce_rows_grad(z, tc, cw, plan.options, plan.prob_target, mc)
        dz = jnp.zeros_like(z)
        if txc is not None:
            dz = dz + _logits(txc, w, None, dtype)
        if tw is not None:
            dz = dz + _logits(xc, tw, None, dtype)
        if tb is not None:
            dz = dz + tb.astype(dtype)
        return loss, jnp.sum(g * dz, axis=-1)

    def body(_: None, c: tuple) -> tuple[None, tuple]:
        return None, chunk(*c, (w, b, cw, tw, tb))

    tx_chunks = None if tx is None else _chunked(plan, tx)
    xs = (_chunked(plan, x), _chunked(plan, t), _row_mask(plan, dtype), tx_chunks)
    with quiet_int64():
        _, (losses, tangent) = lax.scan(body, None, xs)
    return _unchunked(plan, losses), _unchunked(plan, tangent)
