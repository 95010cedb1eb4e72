"""The compiled CPU kernel (crossent._native) against the NumPy reference and against exact math.

Oracles:
* float64 kernel vs ``crossent.numpy.categorical.ce_rows`` / ``ce_rows_grad`` in float64: 1e-12 relative.
* float32 kernel vs the same float64 reference evaluated on the float32 inputs: 1e-6 relative (the
  gradient relative to its largest entry; the loss with an absolute allowance of 1e-6·(1 + |lse|),
  the scale at which a float32 log-sum-exp is rounded).
* The vectorised exp/log against NumPy's float64 (float32 functions) and mpmath (float64 exp), in ulps.
Every instruction set the CPU has is tested (the kernel falls back to the best one below a request).
"""

from __future__ import annotations

import itertools
import warnings
import zlib

import numpy as np
import pytest

from crossent import _native
from crossent._contract import ce_options
from crossent._native import _lib
from crossent.numpy.categorical import ce_rows, ce_rows_grad

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if not _native.available():
        pytest.skip(
            f"compiled kernel not built: {_native.unavailable_reason()}", allow_module_level=True
        )

ISAS = ["generic", "avx2", "avx512"]  # requests above the CPU's best run the best one (still valid)

# The option grid: each value with its reason.
SMOOTHING = [0.0, 0.1, 1.0]  # off; typical; the uniform-target edge where (1-ε)=0
Z_LOSS = [0.0, 1e-3]  # off; PaLM's value
SOFTCAP = [None, 3.0]  # off; small enough that tanh is far from linear on randn·3 logits
WEIGHTED = [False, True]
IGNORE = ["none", "some", "class0"]  # no hits; some rows; ignore_index equal to a valid class (0)


def _data(rng, m, c, dtype, *, prob=False, weighted=False, ignore="none"):
    x = (rng.standard_normal((m, c)) * 3).astype(dtype)
    w = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    if prob:
        q = rng.random((m, c))
        q = (q / q.sum(1, keepdims=True)).astype(dtype)
        return x, q, w, -100
    t = rng.integers(0, c, m)
    ii = -100
    if ignore == "some":
        t[::3] = -100
    elif ignore == "class0":
        ii = 0
        t[::2] = 0
    return x, t, w, ii


def _reference(x, t, w, opts, prob, gscale):
    x64 = x.astype(np.float64)
    t64 = t.astype(np.float64) if prob else t
    w64 = None if w is None else w.astype(np.float64)
    loss, lse = ce_rows(x64, t64, w64, opts, prob)
    grad = ce_rows_grad(x64, t64, w64, opts, prob, gscale.astype(np.float64))
    return loss, lse, grad


def _check(x, t, w, opts, prob, gscale, *, isa="auto", flags=0, num_threads=None):
    grad = np.empty_like(x)
    loss, lse = _native.ce_rows_native(
        x,
        t,
        w,
        opts,
        prob,
        grad=grad,
        grad_scale=gscale,
        isa=isa,
        flags=flags,
        num_threads=num_threads,
    )
    rloss, rlse, rgrad = _reference(x, t, w, opts, prob, gscale)
    assert loss.dtype == lse.dtype == x.dtype
    if x.dtype == np.float64:
        rtol, scale = 1e-12, 1e-12
    else:
        rtol, scale = 1e-6, 1e-6
    # the gradient's scale: its largest entry, or the size of the terms that cancel in it (g·w_y; e.g.
    # p_y·coef − (1−ε)w_y when p_y → 1), whichever is larger
    terms = np.max(np.abs(gscale), initial=0.0) * (
        1.0 if w is None else np.max(np.abs(w), initial=0.0)
    )
    gmax = max(np.nanmax(np.abs(rgrad), initial=0.0), terms)
    # lse = m + log Σ e^{z−m}: its rounding is relative to the largest |z| of the row, not to lse itself
    # (which can cancel to near 0)
    zmax = np.nanmax(np.abs(np.where(np.isfinite(x), x, 0.0)), initial=0.0)
    np.testing.assert_allclose(
        lse, rlse, rtol=rtol, atol=0.0 if x.dtype == np.float64 else scale * zmax
    )
    np.testing.assert_allclose(
        loss, rloss, rtol=rtol, atol=scale * (1 + np.nanmax(np.abs(rlse), initial=0.0))
    )
    np.testing.assert_allclose(grad, rgrad, rtol=rtol, atol=scale * gmax)
    return loss, lse, grad


INDEX_GRID = list(itertools.product(WEIGHTED, IGNORE, SMOOTHING, Z_LOSS, SOFTCAP))
PROB_GRID = list(itertools.product(WEIGHTED, SMOOTHING, Z_LOSS, SOFTCAP))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted,ignore,eps,zl,cap", INDEX_GRID)
def test_index_targets_match_reference(dtype, weighted, ignore, eps, zl, cap):
    rng = np.random.default_rng(zlib.crc32(repr((weighted, ignore, eps, zl, cap)).encode()))
    x, t, w, ii = _data(rng, 23, 37, dtype, weighted=weighted, ignore=ignore)
    opts = ce_options(ignore_index=ii, label_smoothing=eps, z_loss=zl, softcap=cap)
    gscale = rng.uniform(0.5, 2.0, 23).astype(dtype)  # reduction="none" with a per-row upstream
    for isa in ISAS:
        _check(x, t, w, opts, False, gscale, isa=isa)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted,eps,zl,cap", PROB_GRID)
def test_probability_targets_match_reference(dtype, weighted, eps, zl, cap):
    rng = np.random.default_rng(zlib.crc32(repr((weighted, eps, zl, cap)).encode()))
    x, q, w, _ = _data(rng, 19, 41, dtype, prob=True, weighted=weighted)
    opts = ce_options(label_smoothing=eps, z_loss=zl, softcap=cap)
    for isa in ISAS:
        _check(x, q, w, opts, True, np.float64(0.25), isa=isa)  # a scalar upstream (mean: g/D)


@pytest.mark.parametrize("flags", [_lib.FLAG_TILE, _lib.FLAG_NO_TILE])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted,ignore,eps,zl,cap", INDEX_GRID)
def test_few_classes_both_paths_match_reference(flags, dtype, weighted, ignore, eps, zl, cap):
    # 7 classes, 37 rows: transposed tiles with a partial last vector, or one row at a time
    rng = np.random.default_rng(zlib.crc32(repr((weighted, ignore, eps, zl, cap, 7)).encode()))
    x, t, w, ii = _data(rng, 37, 7, dtype, weighted=weighted, ignore=ignore)
    opts = ce_options(ignore_index=ii, label_smoothing=eps, z_loss=zl, softcap=cap)
    gscale = rng.uniform(0.5, 2.0, 37).astype(dtype)
    for isa in ISAS:
        _check(x, t, w, opts, False, gscale, isa=isa, flags=flags)
    if ignore == "none" and not weighted:
        q = _data(rng, 37, 7, dtype, prob=True)[1]
        for isa in ISAS:
            _check(x, q, w, opts, True, np.float64(0.5), isa=isa, flags=flags)


def test_unnormalised_and_negative_probabilities():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 6))
    q = rng.standard_normal((9, 6))  # torch accepts any q; so does the reference
    _check(x, q, None, ce_options(label_smoothing=0.2, z_loss=1e-2), True, np.float64(1.0))


@pytest.mark.parametrize(
    "shape", [(7, 1), (3, 5), (1, 17), (252, 507), (5, 16), (4, 33), (2, 4099)]
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_odd_shapes(shape, dtype):
    # C = 1 (loss -0.0), C below / at / above one vector, a row longer than a page, odd row counts
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x, t, w, _ = _data(rng, *shape, dtype, weighted=True)
    opts = ce_options(label_smoothing=0.1, z_loss=1e-4)
    for isa in ISAS:
        _check(x, t, w, opts, False, np.full(shape[0], 1.0 / shape[0], dtype), isa=isa)
    if shape[1] == 1:
        loss, _ = _native.ce_rows_native(x, t, None, ce_options(), False)
        assert np.all(loss == 0) and np.all(np.signbit(loss))  # torch returns -0.0 for C = 1


def test_empty_batch():
    loss, lse = _native.ce_rows_native(
        np.zeros((0, 5)), np.zeros(0, np.int64), None, ce_options(), False, grad=np.zeros((0, 5))
    )
    assert loss.shape == lse.shape == (0,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits(dtype):
    """|x| up to 1e4, confident rows, -inf at non-targets: finite and accurate."""
    rng = np.random.default_rng(5)
    m, c = 12, 300
    x = rng.uniform(-1e4, 1e4, (m, c)).astype(dtype)
    t = rng.integers(0, c, m)
    x[0] += 1e4  # a large common offset: nothing may cancel
    x[1, t[1]] = 2e4  # confident row: softmax(x_y) -> 1
    x[2, :] = -1e4
    x[2, t[2]] = 1e4
    x[3, (t[3] + 1) % c] = -np.inf  # -inf at a non-target class is fine without smoothing
    x[4, :] = 7.0  # a flat row
    for opts in (ce_options(), ce_options(z_loss=1e-4), ce_options(softcap=30.0)):
        for isa in ISAS:
            loss, lse, grad = _check(x, t, None, opts, False, np.ones(m, dtype), isa=isa)
            assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # float32 loss of a 1e4-offset row is computed from non-negative pieces: relative accuracy holds
    loss, _ = _native.ce_rows_native(x, t, None, ce_options(), False)
    ref = ce_rows(x.astype(np.float64), t, None, ce_options(), False)[0]
    np.testing.assert_allclose(loss[[0, 4]], ref[[0, 4]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("prob", [False, True])
def test_non_finite_rows_follow_the_reference(dtype, prob):
    """NaN anywhere, +inf anywhere, or only -inf in a row: NaN loss and NaN gradient row (torch's
    semantics); an ignored row gets loss 0 but keeps its NaN gradient; -inf at the target gives +inf;
    -inf at a non-target with smoothing gives +inf."""
    rng = np.random.default_rng(11)
    m, c = 10, 21
    x = rng.standard_normal((m, c)).astype(dtype)
    t = rng.integers(1, c, m)
    x[0, 3] = np.nan
    x[1, 5] = np.inf
    x[2, :] = -np.inf
    x[3, :] = np.nan
    x[4, 2] = np.nan
    x[5, t[5]] = -np.inf
    x[6, 0] = -np.inf
    x[7, 0] = np.inf
    if prob:
        target = rng.random((m, c)).astype(dtype)
        opts_list = [ce_options(), ce_options(label_smoothing=0.1)]
    else:
        t[4] = -100  # ignored NaN row
        t[7] = -100  # ignored +inf row
        target = t
        opts_list = [
            ce_options(),
            ce_options(label_smoothing=0.1),
            ce_options(z_loss=1e-3, softcap=None),
        ]
    for opts, flags, isa in itertools.product(opts_list, [0, _lib.FLAG_TILE], ISAS):
        if True:
            grad = np.empty_like(x)
            loss, lse = _native.ce_rows_native(
                x,
                target,
                None,
                opts,
                prob,
                grad=grad,
                grad_scale=np.ones(m, dtype),
                isa=isa,
                flags=flags,
            )
            with np.errstate(all="ignore"):
                rloss, rlse, rgrad = _reference(x, target, None, opts, prob, np.ones(m, dtype))
            np.testing.assert_array_equal(np.isnan(loss), np.isnan(rloss))
            np.testing.assert_array_equal(np.isinf(loss), np.isinf(rloss))
            np.testing.assert_array_equal(np.isnan(lse), np.isnan(rlse))
            np.testing.assert_array_equal(np.isnan(grad), np.isnan(rgrad))
            fin = np.isfinite(rloss)
            np.testing.assert_allclose(loss[fin], rloss[fin], rtol=1e-6)
            gfin = np.isfinite(rgrad)
            np.testing.assert_allclose(
                grad[gfin], rgrad[gfin], rtol=1e-6, atol=1e-6 * np.abs(rgrad[gfin]).max()
            )


def test_all_ignored_mean_gives_zero_gradient():
    # the mean's factor g/D is 1/0 = inf when everything is ignored: ignored rows still get exact 0
    x = np.random.default_rng(0).standard_normal((4, 5))
    t = np.full(4, -100)
    grad = np.empty_like(x)
    loss, _ = _native.ce_rows_native(x, t, None, ce_options(), False, grad=grad, grad_scale=np.inf)
    assert np.all(loss == 0) and np.all(grad == 0)


@pytest.mark.parametrize(
    "flags",
    [
        0,
        _lib.FLAG_NO_STREAM,
        _lib.FLAG_NO_PREFETCH,
        _lib.FLAG_NO_PIPELINE,
        _lib.FLAG_PREFETCH_SHORT,
        15,
        _lib.FLAG_PIPELINE,
        _lib.FLAG_PIPELINE | _lib.FLAG_PREFETCH_SHORT | _lib.FLAG_STREAM_SHORT,
    ],
)
def test_flags_and_threads_do_not_change_results(flags):
    rng = np.random.default_rng(3)
    x, t, w, _ = _data(rng, 64, 4500, np.float32, weighted=True)  # long rows: prefetch path taken
    opts = ce_options(label_smoothing=0.05)
    g1, g2 = np.empty_like(x), np.empty_like(x)
    l1, s1 = _native.ce_rows_native(x, t, w, opts, False, grad=g1, num_threads=1)
    l2, s2 = _native.ce_rows_native(x, t, w, opts, False, grad=g2, num_threads=2, flags=flags)
    np.testing.assert_array_equal(l1, l2)  # rows are independent: bitwise the same
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(g1, g2)


def test_strided_rows_misaligned_grad_and_uint8_targets():
    rng = np.random.default_rng(4)
    big = rng.standard_normal((6, 40)).astype(np.float32)
    x = big[:, 1:38]  # row stride 40, first element not 64-byte aligned: no copy, peeled stores
    t = rng.integers(0, 37, 6).astype(np.uint8)
    gbuf = np.zeros((6, 45), np.float32)
    grad = gbuf[:, 3:40]
    loss, lse = _native.ce_rows_native(x, t, None, ce_options(), False, grad=grad, grad_scale=0.5)
    rloss, rlse, rgrad = _reference(
        x, t.astype(np.int64), None, ce_options(), False, np.full(6, 0.5)
    )
    np.testing.assert_allclose(loss, rloss, rtol=1e-6)
    np.testing.assert_allclose(grad, rgrad, rtol=1e-6, atol=1e-7)
    assert np.all(gbuf[:, :3] == 0) and np.all(
        gbuf[:, 40:] == 0
    )  # nothing written outside the view


def test_grad_buffer_rules_and_inplace():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 13))
    t = rng.integers(0, 13, 8)
    with pytest.raises(ValueError, match="inplace=True"):
        _native.ce_rows_native(x, t, None, ce_options(), False, grad=x)
    with pytest.raises(TypeError, match="grad"):
        _native.ce_rows_native(x, t, None, ce_options(), False, grad=np.empty((8, 13), np.float32))
    expected_loss, _, expected_grad = _reference(
        x, t, None, ce_options(label_smoothing=0.1), False, np.ones(8)
    )
    xc = x.copy()
    loss, _ = _native.ce_rows_native(
        xc, t, None, ce_options(label_smoothing=0.1), False, grad=xc, inplace=True
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(xc, expected_grad, rtol=1e-12, atol=1e-15)


def test_out_of_range_target_raises_index_error():
    x = np.zeros((3, 4))
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        _native.ce_rows_native(
            x, np.array([0, 7, 1]), None, ce_options(), False, grad=np.empty_like(x)
        )
    with pytest.raises(IndexError, match="Target -2 is out of bounds"):
        _native.ce_rows_native(x, np.array([0, -2, 1]), None, ce_options(), False)


def test_unavailable_kernel_warns_once(monkeypatch):
    monkeypatch.setattr(_lib, "load", lambda: None)
    monkeypatch.setattr(_lib, "error", lambda: "not built")
    monkeypatch.setattr(_native._core, "_warned", False)
    with pytest.warns(RuntimeWarning, match="not available"):
        assert not _native.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _native.available()  # no second warning


def test_torch_entry_matches_numpy_entry_without_copies():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x, t, w, _ = _data(rng, 33, 70, np.float32, weighted=True, ignore="some")
    opts = ce_options(label_smoothing=0.1, z_loss=1e-3, softcap=4.0)
    g = np.empty_like(x)
    gs = rng.random(33).astype(np.float32)
    loss, lse = _native.ce_rows_native(x, t, w, opts, False, grad=g, grad_scale=gs)
    xt, tt, wt = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(w)
    gt = torch.empty_like(xt)
    tloss, tlse = _native.ce_rows_native_torch(
        xt, tt, wt, opts, False, grad=gt, grad_scale=torch.from_numpy(gs)
    )
    torch.testing.assert_close(tloss, torch.from_numpy(loss), rtol=0, atol=0)
    torch.testing.assert_close(tlse, torch.from_numpy(lse), rtol=0, atol=0)
    torch.testing.assert_close(gt, torch.from_numpy(g), rtol=0, atol=0)
    # probability targets and torch's own cross_entropy (no z-loss/softcap there)
    q = torch.softmax(torch.randn(33, 70, dtype=torch.float64), 1)
    x64 = torch.randn(33, 70, dtype=torch.float64)
    g64 = torch.empty_like(x64)
    l64, _ = _native.ce_rows_native_torch(
        x64, q, None, ce_options(label_smoothing=0.2), True, grad=g64, grad_scale=1.0 / 33
    )
    xr = x64.clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(xr, q, label_smoothing=0.2)
    ref.backward()
    torch.testing.assert_close(l64.mean(), ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(g64, xr.grad, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="inplace=True"):
        _native.ce_rows_native_torch(x64, q, None, ce_options(), True, grad=x64)


# ------------------------------------------------------------------------------------------------
# The vectorised math functions.
# ------------------------------------------------------------------------------------------------


def _ulps32(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Error in units of the float32 spacing at the exact value (exact given in float64)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


SPECIAL_EXP = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    1e-40,
    1.0,
    -1.0,
    0.5,
    88.0,
    88.7,
    88.72,
    88.7228,
    88.73,
    89.0,
    100.0,
    -87.3,
    -87.34,
    -88.7,
    -100.0,
    -103.0,
    -103.97,
    -104.0,
    -150.0,
    -1e4,
    1e4,
    -3e38,
]


@pytest.mark.parametrize("isa", ISAS)
def test_vexp_float32_within_2_ulp(isa):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.array(SPECIAL_EXP, np.float32),
            rng.uniform(-104.0, 89.0, 200_000).astype(np.float32),
            rng.uniform(-1.0, 1.0, 50_000).astype(np.float32),
            np.linspace(-103.98, -87.0, 20_000, dtype=np.float32),  # results in the denormal range
            np.linspace(88.0, 88.7228, 5_000, dtype=np.float32),  # up to the overflow threshold
        ]
    )
    got = _native.vexp(x, isa=isa)
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64))
    finite = exact < np.finfo(np.float32).max
    assert np.max(_ulps32(got[finite], exact[finite])) <= 2.0
    assert np.all(np.isinf(got[~finite]))  # overflow -> +inf
    specials = np.array([-np.inf, np.inf, np.nan], np.float32)
    out = _native.vexp(specials, isa=isa)
    assert out[0] == 0.0 and out[1] == np.inf and np.isnan(out[2])


@pytest.mark.parametrize("isa", ISAS)
def test_vexp_float64_within_2_ulp_of_mpmath(isa):
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            np.array(
                [
                    0.0,
                    1e-300,
                    -1e-300,
                    1.0,
                    -1.0,
                    709.0,
                    709.78,
                    -708.0,
                    -740.0,
                    -745.0,
                    0.3466,
                    -0.3466,
                ]
            ),
            rng.uniform(-745.0, 709.7, 1500),
            rng.uniform(-1.0, 1.0, 500),
        ]
    )
    got = _native.vexp(x, isa=isa)
    mpmath.mp.prec = 80
    exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in x])
    ulps = np.abs(got - exact) / np.spacing(np.abs(exact))
    assert np.max(ulps) <= 2.0
    out = _native.vexp(np.array([-np.inf, np.inf, np.nan, 710.0, -746.0, -1e5, 1e5]), isa=isa)
    assert out[0] == 0.0 and out[1] == np.inf and np.isnan(out[2])
    assert out[3] == np.inf and out[4] == 0.0 and out[5] == 0.0 and out[6] == np.inf


@pytest.mark.parametrize("isa", ISAS)
def test_vlog_float32_within_2_ulp(isa):
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [
            np.array(
                [
                    1.0,
                    2.0,
                    0.5,
                    1.0000001,
                    0.99999994,
                    1.4142135,
                    0.70710677,
                    3.4028235e38,
                    1.1754944e-38,
                    1e-40,
                    1.4e-45,
                    10.0,
                    1e-10,
                ],
                np.float32,
            ),
            np.exp(rng.uniform(-103.0, 88.0, 200_000)).astype(np.float32),
            rng.uniform(0.5, 2.0, 50_000).astype(np.float32),
        ]
    )
    x = x[x > 0]
    got = _native.vlog(x, isa=isa)
    exact = np.log(x.astype(np.float64))
    assert np.max(_ulps32(got, exact)) <= 2.0
    out = _native.vlog(np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan], np.float32), isa=isa)
    assert out[0] == -np.inf and out[1] == -np.inf
    assert np.isnan(out[2]) and out[3] == np.inf and np.isnan(out[4]) and np.isnan(out[5])


SPECIAL_TANH = [
    0.0,
    1e-45,
    1e-40,
    1e-30,
    1e-8,
    1e-4,
    0.01,
    0.1,
    0.2,
    0.3,
    0.34657,
    0.35,
    0.5,
    0.55,
    1.0,
    1.0397,
    2.0,
    4.5,
    8.0,
    9.0,
    9.01,
    10.0,
    19.0,
    20.0,
    40.0,
    88.0,
    1e4,
    3e38,
]


@pytest.mark.parametrize("isa", ISAS)
def test_vtanh_float32_within_3_ulp(isa):
    """The softcap's vectorised tanh: tiny inputs keep their relative accuracy, large ones saturate to ±1."""
    rng = np.random.default_rng(3)
    mag = np.concatenate(
        [
            np.array(SPECIAL_TANH),
            np.exp(rng.uniform(-90.0, 3.0, 100_000)),  # |a| from 1e-39 to 20, log-uniform
            rng.uniform(0.0, 12.0, 100_000),
            np.linspace(0.0, 0.7, 50_001),  # around the n = 0 / n = -1 reduction boundary
        ]
    )
    x = (mag * rng.choice([-1.0, 1.0], mag.size)).astype(np.float32)
    got = _native.vtanh(x, isa=isa)
    exact = np.tanh(x.astype(np.float64))
    assert np.max(_ulps32(got, exact)) <= 3.0
    assert np.all(np.abs(got) <= 1.0)
    assert np.all(np.signbit(got) == np.signbit(x))
    out = _native.vtanh(
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 9.5, -9.5, 1e-45], np.float32), isa=isa
    )
    assert out[0] == 0.0 and not np.signbit(out[0]) and out[1] == 0.0 and np.signbit(out[1])
    assert out[2] == 1.0 and out[3] == -1.0 and np.isnan(out[4])
    assert out[5] == 1.0 and out[6] == -1.0 and out[7] == np.float32(1e-45)


@pytest.mark.parametrize("isa", ISAS)
def test_vtanh_float64_within_1e_15_of_mpmath(isa):
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(4)
    mag = np.concatenate(
        [
            np.array(SPECIAL_TANH + [1e-300, 5e-324, 18.0, 19.1, 25.0, 40.0, 1e300]),
            np.exp(rng.uniform(-700.0, 3.5, 800)),
            rng.uniform(0.0, 25.0, 800),
            rng.uniform(0.0, 0.7, 400),
        ]
    )
    x = mag * rng.choice([-1.0, 1.0], mag.size)
    got = _native.vtanh(x, isa=isa)
    mpmath.mp.prec = 90
    exact = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x])
    nz = exact != 0
    assert np.max(np.abs(got[nz] - exact[nz]) / np.abs(exact[nz])) <= 1e-15
    assert np.all(got[~nz] == 0.0)
    out = _native.vtanh(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 19.5, -19.5]), isa=isa)
    assert out[0] == 0.0 and not np.signbit(out[0]) and out[1] == 0.0 and np.signbit(out[1])
    assert out[2] == 1.0 and out[3] == -1.0 and np.isnan(out[4])
    assert out[5] == 1.0 and out[6] == -1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softcap_saturated_and_tiny_logits(dtype):
    """Softcap with logits far past the cap (tanh = ±1 exactly), tiny ones, and a row length with a tail."""
    rng = np.random.default_rng(5)
    m, c = 7, 53
    x = rng.standard_normal((m, c)) * 30.0
    x[0] *= 1e-20
    x[1, ::3] = 1e6
    x[2, ::2] = -1e30
    x[3] = rng.choice([-1.0, 1.0], c) * 1e4
    x = x.astype(dtype)
    t = rng.integers(0, c, m).astype(np.int64)
    w = rng.uniform(0.5, 2.0, c).astype(dtype)
    opts = ce_options(softcap=3.0, label_smoothing=0.1, z_loss=1e-4)
    for isa in ISAS:
        _check(x, t, w, opts, False, np.full(m, 1.0 / m, dtype), isa=isa)
