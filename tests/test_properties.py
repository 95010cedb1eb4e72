"""Property tests (hypothesis) of the NumPy reference: identities that hold for every input.

* CE(q, x) = H(q) + KL(q ‖ softmax x) per row;
* gradient rows sum to zero (softmax − target, both sum to 1) without label smoothing weights;
* invariance to adding a constant to a row (values and gradients);
* index targets equal one-hot probability targets (no weights, sum/none);
* the analytic gradient matches central finite differences.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import crossent.numpy as cn

finite = st.floats(-30, 30, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 6))
    c = draw(st.integers(1, 7))
    x = draw(arrays(np.float64, (n, c), elements=finite))
    y = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    q = draw(arrays(np.float64, (n, c), elements=st.floats(0.01, 1.0)))
    q = q / q.sum(1, keepdims=True)
    ls = draw(st.sampled_from([0.0, 0.1, 0.5]))
    return x, y, q, ls


@settings(max_examples=60, deadline=None)
@given(problems())
def test_ce_is_entropy_plus_kl(p):
    x, _, q, _ = p
    ce = cn.cross_entropy(x, q, reduction="none")
    h = -(q * np.log(q)).sum(1)
    kl = cn.kl_div(cn.log_softmax(x), q, reduction="none").sum(1)
    np.testing.assert_allclose(ce, h + kl, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(problems(), st.floats(-1e3, 1e3))
def test_gradient_rows_sum_to_zero_and_shift_invariance(p, shift):
    x, y, q, ls = p
    g = cn.cross_entropy_grad(x, y, reduction="sum", label_smoothing=ls)
    np.testing.assert_allclose(g.sum(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        cn.cross_entropy(x + shift, y, reduction="none", label_smoothing=ls),
        cn.cross_entropy(x, y, reduction="none", label_smoothing=ls),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        cn.cross_entropy_grad(x + shift, y, reduction="sum", label_smoothing=ls), g, atol=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(problems())
def test_index_targets_equal_one_hot_targets(p):
    x, y, _, ls = p
    onehot = np.eye(x.shape[1])[y]
    np.testing.assert_allclose(
        cn.cross_entropy(x, y, reduction="none", label_smoothing=ls),
        cn.cross_entropy(x, onehot, reduction="none", label_smoothing=ls),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        cn.cross_entropy_grad(x, y, reduction="sum", label_smoothing=ls),
        cn.cross_entropy_grad(x, onehot, reduction="sum", label_smoothing=ls),
        atol=1e-12,
    )


@settings(max_examples=30, deadline=None)
@given(problems(), st.sampled_from([0.0, 0.05]), st.sampled_from([None, 4.0]))
def test_gradient_matches_finite_differences(p, z, cap):
    x, y, _, ls = p
    w = np.linspace(0.5, 1.5, x.shape[1])
    kw = dict(weight=w, label_smoothing=ls, z_loss=z, softcap=cap, reduction="sum")
    g = cn.cross_entropy_grad(x, y, **kw)
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        num[idx] = (cn.cross_entropy(x + e, y, **kw) - cn.cross_entropy(x - e, y, **kw)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-5)
