"""The compiled kernel on spatial (N, C, d1, …) logits, and the native backend's autograd entry points.

Oracle: ``crossent.numpy.cross_entropy`` / ``cross_entropy_grad`` (the pure
array-API reference, never the kernel) on float64 copies of the inputs.
"""

from __future__ import annotations

import itertools
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crossent import _native  # noqa: E402
from crossent._backends import eager  # noqa: E402
from crossent._contract import ce_options  # noqa: E402
from crossent.numpy import cross_entropy, cross_entropy_grad  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if not _native.available():
        pytest.skip(
            f"compiled kernel not built: {_native.unavailable_reason()}", allow_module_level=True
        )

from crossent._backends.native import native_ce, native_ce_spatial  # noqa: E402

ISAS = ["generic", "avx2", "avx512"]
# odd spatial sizes (partial vectors, batch boundaries inside a vector); one call big enough for threads
SHAPES = [(2, 5, 3, 4), (3, 2, 7), (1, 21, 33), (2, 3, 8000)]


def _inputs(rng, shape, dtype, *, prob, weighted, ignore):
    n, c = shape[:2]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    w = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    if prob:
        q = rng.random(shape)
        return x, (q / q.sum(1, keepdims=True)).astype(dtype), w
    t = rng.integers(0, c, (n, *shape[2:]))
    if ignore:
        t.reshape(-1)[::3] = -100
    return x, t, w


def _oracle(x, t, w, reduction, opts, grad_output):
    f64 = {
        "weight": None if w is None else w.astype(np.float64),
        "reduction": reduction,
        "ignore_index": opts.ignore_index,
        "label_smoothing": opts.label_smoothing,
        "z_loss": opts.z_loss,
        "softcap": opts.softcap,
    }
    t64 = t.astype(np.float64) if t.dtype.kind == "f" else t
    loss = cross_entropy(x.astype(np.float64), t64, **f64)
    grad = cross_entropy_grad(x.astype(np.float64), t64, grad_output=grad_output, **f64)
    return loss, grad


def _denominator(t, w, opts, prob, dtype):
    if prob:
        return None
    valid = t.reshape(-1) != opts.ignore_index
    wy = np.ones(valid.shape) if w is None else w[np.where(valid, t.reshape(-1), 0)]
    return torch.tensor(float(np.sum(np.where(valid, wy, 0.0))), dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "prob,weighted,eps,zl,cap",
    [
        (False, False, 0.0, 0.0, None),
        (False, True, 0.1, 1e-3, None),
        (False, True, 0.0, 0.0, 3.0),
        (True, False, 0.0, 0.0, None),
        (True, True, 0.2, 1e-3, 3.0),
    ],
)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_spatial_backend_matches_reference_float64(shape, prob, weighted, eps, zl, cap, reduction):
    rng = np.random.default_rng(
        zlib.crc32(repr((shape, prob, weighted, eps, zl, cap, reduction)).encode())
    )
    x, t, w = _inputs(rng, shape, np.float64, prob=prob, weighted=weighted, ignore=not prob)
    opts = ce_options(label_smoothing=eps, z_loss=zl, softcap=cap, reduction=reduction)
    go = rng.uniform(0.5, 2.0, (shape[0], *shape[2:])) if reduction == "none" else 1.7
    rloss, rgrad = _oracle(x, t, w, reduction, opts, go)
    math = eager.CrossEntropyMath(reduction, opts, prob)
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = None if w is None else torch.from_numpy(w)
    den = _denominator(t, w, opts, prob, torch.float64) if reduction == "mean" else None
    loss = native_ce_spatial(math, xt, torch.from_numpy(t), wt, den)
    assert tuple(loss.shape) == tuple(np.shape(rloss))
    torch.testing.assert_close(loss.detach(), torch.as_tensor(rloss), rtol=1e-12, atol=1e-12)
    loss.backward(
        torch.as_tensor(go, dtype=torch.float64)
        if reduction == "none"
        else torch.tensor(1.7, dtype=torch.float64)
    )
    torch.testing.assert_close(xt.grad, torch.from_numpy(rgrad), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("prob", [False, True])
def test_spatial_kernel_float32_every_isa(isa, prob):
    rng = np.random.default_rng(5)
    shape = (2, 7, 5, 9)
    x, t, w = _inputs(rng, shape, np.float32, prob=prob, weighted=True, ignore=not prob)
    opts = ce_options(label_smoothing=0.1, z_loss=1e-3, reduction="sum")
    rloss, rgrad = _oracle(x, t, w, "none", opts, np.ones((2, 5, 9)))
    g = torch.empty(shape)
    loss, lse = _native.ce_spatial_native_torch(
        torch.from_numpy(x),
        torch.from_numpy(t),
        torch.from_numpy(w),
        opts,
        prob,
        grad=g,
        grad_scale=1.0,
        isa=isa,
    )
    assert loss.shape == lse.shape == (2, 5, 9) and loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.from_numpy(rloss).float(), rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(g, torch.from_numpy(rgrad).float(), rtol=2e-6, atol=2e-7)


def test_spatial_non_finite_positions_and_bad_targets():
    x = np.zeros((1, 3, 5))
    x[0, 1, 0] = np.nan
    x[0, :, 1] = -np.inf
    x[0, 2, 2] = np.inf
    t = np.array([[0, 1, 2, -100, 1]])
    g = torch.empty(1, 3, 5, dtype=torch.float64)
    loss, lse = _native.ce_spatial_native_torch(
        torch.from_numpy(x), torch.from_numpy(t), None, ce_options(), False, grad=g
    )
    assert torch.isnan(loss[0, :3]).all() and torch.isnan(lse[0, :3]).all()
    assert torch.isnan(g[0, :, :3]).all()
    assert loss[0, 3] == 0 and (g[0, :, 3] == 0).all()  # ignored, finite: zero loss and gradient
    torch.testing.assert_close(loss[0, 4], torch.tensor(np.log(3.0), dtype=torch.float64))
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        _native.ce_spatial_native_torch(
            torch.zeros(2, 3, 4),
            torch.tensor([[0, 1, 2, 0], [1, 7, 0, 0]]),
            None,
            ce_options(),
            False,
        )
    with pytest.raises(ValueError, match="'target' must have shape"):
        _native.ce_spatial_native_torch(
            torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64), None, ce_options(), False
        )


@pytest.mark.parametrize("spatial", [False, True])
def test_inplace_writes_the_gradient_into_the_logits(spatial):
    rng = np.random.default_rng(9)
    shape = (4, 6, 10) if spatial else (40, 6)
    x, t, _ = _inputs(rng, shape, np.float64, prob=False, weighted=False, ignore=True)
    opts = ce_options(reduction="mean")
    rloss, rgrad = _oracle(x, t, None, "mean", opts, 1.0)
    math = eager.CrossEntropyMath("mean", opts, False)
    den = _denominator(t, None, opts, False, torch.float64)
    entry = native_ce_spatial if spatial else native_ce
    leaf = torch.from_numpy(x.copy()).requires_grad_(True)
    xt = leaf.clone()  # a non-leaf the caller lets us overwrite
    ptr = xt.data_ptr()
    loss = entry(math, xt, torch.from_numpy(t), None, den, inplace=True)
    torch.testing.assert_close(loss.detach(), torch.as_tensor(rloss), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        xt.detach(), torch.from_numpy(rgrad), rtol=1e-12, atol=1e-15
    )  # x is dirty
    assert xt.data_ptr() == ptr
    loss.backward()
    torch.testing.assert_close(leaf.grad, torch.from_numpy(rgrad), rtol=1e-12, atol=1e-15)


def test_isa_override_environment_variable(monkeypatch):
    monkeypatch.setenv("CROSSENT_ISA", "generic")
    assert _native.active_isa() == "generic"
    assert _native.active_isa("avx2") in ("avx2", "generic")  # an explicit isa= wins
    monkeypatch.setenv("CROSSENT_ISA", "sse9")
    with pytest.raises(ValueError, match="CROSSENT_ISA"):
        _native.active_isa()
    monkeypatch.delenv("CROSSENT_ISA")
    assert _native.active_isa() == _native.best_isa()


def test_spatial_threads_do_not_change_results():
    rng = np.random.default_rng(12)
    x, t, w = _inputs(rng, (3, 4, 5000), np.float32, prob=False, weighted=True, ignore=True)
    out = []
    for threads, isa in itertools.product([1, 2], ["auto"]):
        g = torch.empty(3, 4, 5000)
        loss, _ = _native.ce_spatial_native_torch(
            torch.from_numpy(x),
            torch.from_numpy(t),
            torch.from_numpy(w),
            ce_options(),
            False,
            grad=g,
            num_threads=threads,
            isa=isa,
        )
        out.append((loss, g))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=0)
