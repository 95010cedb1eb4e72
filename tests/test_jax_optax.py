"""crossent.jax against optax where the two define the same loss (values and gradients, float64).

optax's functions return per-example losses, so crossent's ``reduction="none"`` is compared, and label
smoothing against optax's ``smooth_labels`` (the same mixing as torch's). Where the two differ (defaults,
reductions, options optax lacks) see ``docs/jax.md``. The extreme-logit vectors are the kind optax's own
tests use for its sigmoid cross-entropy (±1e9 logits, where a naive form overflows).
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

import crossent.jax as cj  # noqa: E402
from oracle import close64  # noqa: E402


def _same(ours, theirs, *args, argnum=0):
    """Values and the gradients of Σ u·loss (random u) agree."""
    a, b = ours(*args), theirs(*args)
    close64(a, b)
    u = jnp.asarray(np.random.default_rng(0).normal(size=np.shape(a)))
    ga = jax.grad(lambda *z: jnp.sum(u * ours(*z)), argnum)(*args)
    gb = jax.grad(lambda *z: jnp.sum(u * theirs(*z)), argnum)(*args)
    close64(ga, gb)


def _logits(seed=0, n=7, c=11, scale=3.0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, c)) * scale), rng


def test_integer_labels(x64):
    x, rng = _logits()
    y = jnp.asarray(rng.integers(0, 11, 7))
    _same(
        lambda a, b: cj.cross_entropy(a, b, reduction="none"),
        optax.losses.softmax_cross_entropy_with_integer_labels,
        x,
        y,
    )
    close64(
        cj.cross_entropy(x, y), optax.losses.softmax_cross_entropy_with_integer_labels(x, y).mean()
    )


def test_probability_labels(x64):
    x, rng = _logits(1)
    q = jnp.asarray(rng.dirichlet(np.ones(11), size=7))
    for argnum in (0, 1):  # also the gradient with respect to the labels
        _same(
            lambda a, b: cj.cross_entropy(a, b, reduction="none"),
            optax.losses.softmax_cross_entropy,
            x,
            q,
            argnum=argnum,
        )


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_label_smoothing_is_optax_smooth_labels(x64, eps):
    x, rng = _logits(2)
    y = jnp.asarray(rng.integers(0, 11, 7))
    _same(
        lambda a: cj.cross_entropy(a, y, reduction="none", label_smoothing=eps),
        lambda a: optax.losses.softmax_cross_entropy(
            a, optax.losses.smooth_labels(jax.nn.one_hot(y, 11), eps)
        ),
        x,
    )


def test_ignore_index_is_optax_where(x64):
    x, rng = _logits(3)
    y = np.asarray(rng.integers(0, 11, 7))
    y[[1, 4]] = -100
    keep = jnp.asarray(y != -100)
    ours = cj.cross_entropy(x, jnp.asarray(y), reduction="none")
    theirs = optax.losses.softmax_cross_entropy_with_integer_labels(
        x, jnp.asarray(np.maximum(y, 0))
    )
    close64(ours, jnp.where(keep, theirs, 0.0))
    close64(cj.cross_entropy(x, jnp.asarray(y)), theirs.sum(where=keep) / keep.sum())


def test_sigmoid_binary_cross_entropy(x64):
    x, rng = _logits(4)
    t = jnp.asarray(rng.random((7, 11)))
    _same(
        lambda a, b: cj.binary_cross_entropy_with_logits(a, b, reduction="none"),
        optax.losses.sigmoid_binary_cross_entropy,
        x,
        t,
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("labels", [[1.0, 0.0], [0.0, 1.0]])
def test_sigmoid_binary_cross_entropy_extreme_logits(sign, labels):
    x = jnp.asarray([sign * 1e9, sign * 1e-9], jnp.float32)
    t = jnp.asarray(labels, jnp.float32)
    ours = cj.binary_cross_entropy_with_logits(x, t)
    close64(ours, jnp.mean(optax.losses.sigmoid_binary_cross_entropy(x, t)), rtol=1e-6, atol=1e-6)
    assert np.isfinite(float(ours))


@pytest.mark.parametrize("alpha", [-1.0, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_loss(x64, alpha, gamma, soft):
    x, rng = _logits(5)
    t = rng.random((7, 11))
    t = jnp.asarray(t if soft else (t > 0.5).astype(np.float64))
    # optax switches the balance off with alpha=None; torchvision (and crossent) with alpha=-1
    _same(
        lambda a: cj.sigmoid_focal_loss(a, t, alpha=alpha, gamma=gamma),
        lambda a: optax.losses.sigmoid_focal_loss(
            a, t, alpha=None if alpha < 0 else alpha, gamma=gamma
        ),
        x,
    )


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_divergence(x64, log_target):
    x, rng = _logits(6)
    logq = jax.nn.log_softmax(x)
    p = jnp.asarray(rng.dirichlet(np.ones(11), size=7))
    target = jnp.log(p) if log_target else p
    theirs = (
        optax.losses.kl_divergence_with_log_targets if log_target else optax.losses.kl_divergence
    )
    for argnum in (0, 1):
        _same(
            lambda a, b: cj.kl_div(a, b, reduction="none", log_target=log_target).sum(-1),
            theirs,
            logq,
            target,
            argnum=argnum,
        )
    close64(cj.kl_div(logq, target, "batchmean", log_target), theirs(logq, target).mean())
