"""crossent.jax under JAX's transformations (jit, grad, vmap, jvp, hessian) and its argument errors.

Oracles: the same call without the transformation; per-row gradients of ``reduction="none"`` for
per-example gradients; ``⟨∇f, v⟩`` and JAX's autodiff of the reference for forward mode and second
derivatives.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import crossent.jax as cj  # noqa: E402
import crossent.numpy as cn  # noqa: E402
from oracle import close64  # noqa: E402

KW = dict(weight=None, label_smoothing=0.1, z_loss=1e-2, softcap=5.0)


def _data(seed=0, n=6, c=5):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, c)) * 2), jnp.asarray(rng.integers(0, c, n))


def test_jit_matches_eager(x64):
    x, y = _data()
    loss = lambda a: cj.cross_entropy(a, y, **KW)  # noqa: E731
    close64(jax.jit(loss)(x), loss(x))
    close64(jax.jit(jax.grad(loss))(x), jax.grad(loss)(x))


def test_vmap_per_example_gradients(x64):
    x, y = _data(1)
    per_example = jax.vmap(jax.grad(lambda a, b: cj.cross_entropy(a, b, **KW)))(x, y)
    rows = jax.jacrev(lambda a: cj.cross_entropy(a, y, reduction="none", **KW))(x)
    close64(per_example, jnp.einsum("iic->ic", rows))


def test_vmap_over_a_batch_of_batches(x64):
    x, y = _data(2, n=12)
    xs, ys = x.reshape(3, 4, 5), y.reshape(3, 4)
    batched = jax.vmap(lambda a, b: cj.cross_entropy(a, b, **KW))(xs, ys)
    close64(batched, [cj.cross_entropy(a, b, **KW) for a, b in zip(xs, ys)])


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: cj.cross_entropy(x, y, **KW),
        lambda x, y: cj.focal_loss(x, y, gamma=1.5),
        lambda x, y: cj.nll_loss(jax.nn.log_softmax(x), y, reduction="sum"),
        lambda x, y: cj.binary_cross_entropy_with_logits(x, jax.nn.sigmoid(x.T @ x)[: x.shape[0]]),
        lambda x, y: cj.sigmoid_focal_loss(x, (x > 0).astype(x.dtype), reduction="sum"),
        lambda x, y: cj.kl_div(jax.nn.log_softmax(x), jax.nn.softmax(x[::-1]), "batchmean"),
    ],
    ids=["cross_entropy", "focal", "nll", "bce_logits", "sigmoid_focal", "kl_div"],
)
def test_jvp_is_the_directional_derivative(x64, fn):
    x, y = _data(3, n=5)
    v = jnp.asarray(np.random.default_rng(4).normal(size=x.shape))
    value, tangent = jax.jvp(lambda a: fn(a, y), (x,), (v,))
    close64(value, fn(x, y))
    close64(tangent, jnp.vdot(jax.grad(lambda a: fn(a, y))(x), v))
    # and a jitted jvp gives the same
    close64(jax.jit(lambda a, b: jax.jvp(lambda z: fn(z, y), (a,), (b,))[1])(x, v), tangent)


def test_second_derivatives_match_autodiff_of_the_reference(x64):
    x, y = _data(5, n=3)
    w = jnp.asarray([1.0, 2.0, 0.5, 1.5, 1.0])
    kw = dict(label_smoothing=0.1, z_loss=1e-2, softcap=5.0)
    ours = jax.hessian(lambda a: cj.cross_entropy(a, y, w, **kw))(x)
    theirs = jax.hessian(lambda a: cn.cross_entropy(a, y, w, **kw))(x)
    close64(ours, theirs, rtol=1e-9, atol=1e-12)


def test_static_option_traced_under_jit_names_the_argument():
    x, y = _data()
    for name in ("label_smoothing", "z_loss", "ignore_index", "softcap"):
        fn = jax.jit(lambda a, s, name=name: cj.cross_entropy(a, y, **{name: s}))
        with pytest.raises(TypeError, match=f"argument '{name}' must be a Python value"):
            fn(x, 0.1 if name != "ignore_index" else 1)
    with pytest.raises(TypeError, match="gamma"):
        jax.jit(lambda a, g: cj.focal_loss(a, y, gamma=g))(x, 2.0)
    with pytest.raises(TypeError, match="workspace_bytes"):
        jax.jit(lambda a, ws: cj.linear_cross_entropy(a, a, y, workspace_bytes=ws))(x[:, :5], 1024)
    # static_argnames is the documented way
    fn = jax.jit(cj.cross_entropy, static_argnames=("label_smoothing",))
    close64(fn(x, y, label_smoothing=0.1), cj.cross_entropy(x, y, label_smoothing=0.1), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(z_loss=-1.0), ValueError, "z_loss"),
        (dict(softcap=0.0), ValueError, "softcap"),
        (dict(weight=jnp.ones(3)), ValueError, "weight"),
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
    ],
)
def test_bad_options_raise_naming_the_argument(kwargs, error, match):
    x, y = _data()
    with pytest.raises(error, match=match):
        cj.cross_entropy(x, y, **kwargs)


def test_bad_targets_raise():
    x, _ = _data()
    with pytest.raises(IndexError, match="out of bounds"):
        cj.cross_entropy(x, jnp.asarray([0, 1, 2, 3, 4, 5]))
    with pytest.raises(TypeError, match="target"):
        cj.cross_entropy(x, jnp.zeros(6))  # float targets of the wrong shape for probabilities
    with pytest.raises(ValueError, match="batch_size"):
        cj.cross_entropy(x, jnp.zeros(5, jnp.int32))
    with pytest.raises(TypeError, match="input"):
        cj.cross_entropy(jnp.zeros((2, 3), jnp.int32), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="ignore_index"):
        cj.cross_entropy(x, jax.nn.softmax(x), ignore_index=0)
    with pytest.raises(ValueError, match="alpha"):
        cj.sigmoid_focal_loss(x, x, alpha=2.0)
    with pytest.raises(ValueError, match="alpha"):
        cj.focal_loss(x, jnp.zeros(6, jnp.int32), alpha=jnp.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        cj.kl_div(x, x, reduction="avg")
