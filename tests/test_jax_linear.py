"""crossent.jax.linear_cross_entropy: values and gradients against the loss of materialised logits, and
XLA's memory analysis of the compiled ``value_and_grad``.

Oracle: ``crossent.jax.cross_entropy(x @ w.T + b, …)`` (itself tested against the NumPy reference) and
``crossent.numpy.cross_entropy`` on the float64 logits; chunk sizes that do not divide the rows.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import crossent.jax as cj  # noqa: E402
import crossent.numpy as cn  # noqa: E402
from oracle import close64  # noqa: E402

ALL = dict(label_smoothing=0.1, z_loss=1e-2, softcap=4.0, ignore_index=2)


def _inputs(n=23, d=6, v=9, seed=0, dtype=np.float64, lead=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    w = (rng.normal(size=(v, d)) / np.sqrt(d)).astype(dtype)
    b = rng.normal(size=v).astype(dtype) * 0.1
    y = rng.integers(0, v, n)
    y[::5] = 2  # rows for ignore_index=2
    if lead is not None:
        x, y = x.reshape(*lead, d), y.reshape(lead)
    return jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), jnp.asarray(y)


# workspace of 3 rows' chunk buffers: chunks of 3 rows, 23 = 7·3 + 2 (a padded last chunk)
SMALL_WS = 3 * 4 * 8 * (3 * 9 + 2 * 6) // 4


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("options", [{}, ALL], ids=["plain", "all"])
@pytest.mark.parametrize("bias, weighted", [(False, False), (True, True)])
def test_matches_materialised_logits(x64, reduction, options, bias, weighted):
    x, w, b, y = _inputs()
    cw = jnp.linspace(0.5, 1.5, 9) if weighted else None
    b = b if bias else None
    kw = dict(options, reduction=reduction, weight=cw)

    def fused(x, w, b):
        return cj.linear_cross_entropy(x, w, y, linear_bias=b, workspace_bytes=SMALL_WS, **kw)

    def plain(x, w, b):
        return cj.cross_entropy(x @ w.T + (0.0 if b is None else b), y, **kw)

    out, pull = jax.vjp(fused, x, w, b)
    ref, pull_ref = jax.vjp(plain, x, w, b)
    close64(out, ref)
    logits = np.asarray(x @ w.T + (0.0 if b is None else b))
    kw_np = dict(kw, weight=None if cw is None else np.asarray(cw))
    close64(out, cn.cross_entropy(logits, np.asarray(y), **kw_np))
    u = jnp.asarray(np.random.default_rng(1).normal(size=np.shape(out)))
    for g, h in zip(pull(u), pull_ref(u)):
        if h is not None:
            close64(g, h)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_probability_targets_and_leading_dims(x64, reduction):
    x, w, _, _ = _inputs(lead=(4, 5), n=20)
    q = jax.nn.softmax(jnp.asarray(np.random.default_rng(2).normal(size=(4, 5, 9))))
    kw = dict(reduction=reduction, label_smoothing=0.2, z_loss=1e-3)
    fused = lambda x, w: cj.linear_cross_entropy(x, w, q, workspace_bytes=SMALL_WS, **kw)  # noqa: E731
    plain = lambda x, w: cj.cross_entropy(
        jnp.moveaxis(x @ w.T, -1, 1), jnp.moveaxis(q, -1, 1), **kw
    )  # noqa: E731
    out, pull = jax.vjp(fused, x, w)
    ref, pull_ref = jax.vjp(plain, x, w)
    assert out.shape == ref.shape
    close64(out, ref)
    u = jnp.ones_like(out)
    for g, h in zip(pull(u), pull_ref(u)):
        close64(g, h)


def test_jit_jvp_vmap_and_normalize_by(x64):
    x, w, b, y = _inputs()
    kw = dict(workspace_bytes=SMALL_WS, **ALL)
    fused = lambda x, w: cj.linear_cross_entropy(x, w, y, **kw)  # noqa: E731
    plain = lambda x, w: cj.cross_entropy(x @ w.T, y, **ALL)  # noqa: E731
    value, grads = jax.jit(jax.value_and_grad(fused, (0, 1)))(x, w)
    close64(value, plain(x, w))
    for g, h in zip(grads, jax.grad(plain, (0, 1))(x, w)):
        close64(g, h)
    tangents = (jnp.ones_like(x), -jnp.ones_like(w))
    close64(jax.jvp(fused, (x, w), tangents)[1], jax.jvp(plain, (x, w), tangents)[1])
    rows = lambda x, w: cj.linear_cross_entropy(x, w, y, reduction="none", **kw)  # noqa: E731
    rows_plain = lambda x, w: cj.cross_entropy(x @ w.T, y, reduction="none", **ALL)  # noqa: E731
    close64(jax.jvp(rows, (x, w), tangents)[1], jax.jvp(rows_plain, (x, w), tangents)[1])
    # vmap: one loss per sequence of a (B, T, D) batch
    xs, ys = x[:20].reshape(4, 5, 6), y[:20].reshape(4, 5)
    per_seq = jax.vmap(lambda a, t: cj.linear_cross_entropy(a, w, t, workspace_bytes=SMALL_WS))(
        xs, ys
    )
    close64(per_seq, [cj.cross_entropy(a @ w.T, t) for a, t in zip(xs, ys)])
    total = cj.linear_cross_entropy(x, w, y, reduction="mean", normalize_by=100.0)
    close64(total, cj.cross_entropy(x @ w.T, y, reduction="sum") / 100.0)


def test_everything_ignored_gives_nan_mean_and_zero_gradients(x64):
    x, w, _, _ = _inputs()
    y = jnp.full((23,), -100)
    value, (gx, gw) = jax.value_and_grad(cj.linear_cross_entropy, (0, 1))(x, w, y)
    assert np.isnan(float(value))
    assert not np.any(np.asarray(gx)) and not np.any(
        np.asarray(gw)
    )  # zeros (the reference's), not NaN
    assert float(jnp.abs(cj.linear_cross_entropy(x, w, y, reduction="sum"))) == 0.0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_computes_in_float32(dtype):
    x, w, _, y = _inputs(dtype=np.float32)
    xh, wh = x.astype(dtype), w.astype(dtype)
    value, (gx, gw) = jax.value_and_grad(cj.linear_cross_entropy, (0, 1))(xh, wh, y)
    assert value.dtype == jnp.float32 and gx.dtype == xh.dtype and gw.dtype == wh.dtype
    x32, w32 = xh.astype(jnp.float32), wh.astype(jnp.float32)
    ref, (rx, rw) = jax.value_and_grad(lambda a, b: cj.cross_entropy(a @ b.T, y), (0, 1))(x32, w32)
    close64(value, ref, rtol=1e-5, atol=1e-6)
    close64(gx.astype(jnp.float32), rx, rtol=2e-2, atol=2e-3)
    close64(gw.astype(jnp.float32), rw, rtol=2e-2, atol=2e-3)


def test_compiled_temporaries_stay_far_below_the_logits():
    n, d, v = 1024, 64, 8192  # float32 logits: 32 MiB
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(v, d)) / 8, jnp.float32)
    y = jnp.asarray(rng.integers(0, v, n))
    logits_bytes = n * v * 4

    def temp_bytes(fn):
        step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        return step.lower(x, w, y).compile().memory_analysis().temp_size_in_bytes

    fused = temp_bytes(lambda a, b, t: cj.linear_cross_entropy(a, b, t, workspace_bytes=1 << 20))
    materialised = temp_bytes(lambda a, b, t: cj.cross_entropy(a @ b.T, t))
    assert materialised >= logits_bytes  # the analysis sees the logits where they exist
    assert fused < logits_bytes / 8, (fused, logits_bytes)
    u = jnp.linspace(
        0.0, 1.0, n
    )  # per-token losses with their own cotangents: recomputed, not stored

    def weighted_rows(a, b, t):
        return jnp.vdot(
            u, cj.linear_cross_entropy(a, b, t, reduction="none", workspace_bytes=1 << 20)
        )

    assert temp_bytes(weighted_rows) < logits_bytes / 8


def test_errors_name_the_argument():
    x, w, b, y = _inputs(dtype=np.float32)
    with pytest.raises(ValueError, match="linear_weight"):
        cj.linear_cross_entropy(x, w.T, y)
    with pytest.raises(ValueError, match="linear_bias"):
        cj.linear_cross_entropy(x, w, y, linear_bias=b[:3])
    with pytest.raises(ValueError, match="target"):
        cj.linear_cross_entropy(x, w, y[:4])
    with pytest.raises(TypeError, match="target"):
        cj.linear_cross_entropy(x, w, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="workspace_bytes"):
        cj.linear_cross_entropy(x, w, y, workspace_bytes=0)
    with pytest.raises(IndexError, match="out of bounds"):
        cj.linear_cross_entropy(x, w, y.at[3].set(9))
    with pytest.raises(ValueError, match="'weight'"):
        jax.grad(lambda c: cj.linear_cross_entropy(x, w, y, weight=c))(jnp.ones(9))
