"""The compiled element-wise kernel (BCE with logits, KL divergence) against independent oracles.

Oracles:
* the float64 NumPy reference (``crossent.numpy``) on the same inputs: float64 results within the
  float64 tolerances, float32 results within the float32 ones (``tests/oracle.py``);
* ``torch.nn.functional`` in the same dtype (values and gradients);
* the eager backend for what torch does not define the same way (half precision, double backward).
Forced ``backend="native"`` goes through the public functions; ``auto`` is checked to pick the kernel
above the small-call size and PyTorch's kernel below it.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch, _native
from crossent.numpy import binary as ref_binary
from crossent.numpy import divergence as ref_divergence
from oracle import TOL

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if not _native.available():
        pytest.skip(
            f"compiled kernel not built: {_native.unavailable_reason()}", allow_module_level=True
        )

from crossent._native._binary import binary_elements_torch  # noqa: E402

# The grid, each value with its reason.
SHAPES = [
    (7,),  # shorter than one vector: only the masked tail
    (33, 17),  # odd rows and a (C,) period that does not divide a vector
    (64, 300),  # several vectors per row
    (257, 513),  # 131841 >= 2^17 elements: several sum blocks, above the small-call size
]
DTYPES = [torch.float32, torch.float64]
WEIGHTS = [None, "full", "last"]  # none; full-size; a (C,) vector along the last axis
KL_REDUCTIONS = ["none", "sum", "mean", "batchmean"]


def _bce_data(shape, dtype, weight, pos_weight, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 4).to(dtype)
    t = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    flat = t.view(-1)
    flat[::5] = 0.0  # hard labels among the soft ones
    flat[1::5] = 1.0
    c = shape[-1]
    w = {
        None: None,
        "full": torch.rand(shape, generator=g, dtype=torch.float64).to(dtype) + 0.1,
        "last": torch.rand(c, generator=g, dtype=torch.float64).to(dtype) + 0.1,
    }[weight]
    pw = torch.rand(c, generator=g, dtype=torch.float64).to(dtype) * 3 if pos_weight else None
    return x, t, w, pw


def _upstream(reduction, shape, dtype):
    if reduction == "none":
        g = torch.Generator().manual_seed(7)
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return torch.tensor(0.7, dtype=dtype)


def _np(a):
    return None if a is None else a.detach().to(torch.float64).numpy()


def _close(actual, expected, dtype):
    torch.testing.assert_close(actual, torch.as_tensor(expected).to(actual.dtype), **TOL[dtype])


@pytest.mark.parametrize(
    "shape,dtype,reduction,weight,pos_weight",
    list(itertools.product(SHAPES, DTYPES, ["none", "sum", "mean"], WEIGHTS, [False, True])),
)
def test_bce_with_logits(shape, dtype, reduction, weight, pos_weight):
    x, t, w, pw = _bce_data(shape, dtype, weight, pos_weight)
    xr = x.clone().requires_grad_()
    loss = crossent.binary_cross_entropy_with_logits(
        xr, t, w, reduction=reduction, pos_weight=pw, backend="native"
    )
    go = _upstream(reduction, shape, dtype)
    (grad,) = torch.autograd.grad(loss, xr, go)
    assert loss.dtype == dtype and grad.dtype == dtype
    args = (_np(x), _np(t), _np(w), reduction, _np(pw))
    _close(loss, ref_binary.binary_cross_entropy_with_logits(*args), dtype)
    _close(
        grad, ref_binary.binary_cross_entropy_with_logits_grad(*args, grad_output=_np(go)), dtype
    )
    # torch in the same dtype
    xt = x.clone().requires_grad_()
    expected = F.binary_cross_entropy_with_logits(xt, t, w, reduction=reduction, pos_weight=pw)
    (expected_grad,) = torch.autograd.grad(expected, xt, go)
    torch.testing.assert_close(loss, expected, **TOL[dtype])
    torch.testing.assert_close(grad, expected_grad, **TOL[dtype])


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize(
    "shape,dtype,reduction,log_target",
    list(itertools.product(SHAPES, DTYPES, KL_REDUCTIONS, [False, True])),
)
def test_kl_div(shape, dtype, reduction, log_target):
    g = torch.Generator().manual_seed(1)
    x = torch.log_softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 3, -1).to(dtype)
    p = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 3, -1)
    if not log_target:
        p.view(-1)[::3] = 0.0  # 0 log 0 = 0
    t = (p.log() if log_target else p).to(dtype)
    xr = x.clone().requires_grad_()
    loss = crossent.kl_div(xr, t, reduction=reduction, log_target=log_target, backend="native")
    go = _upstream(reduction, shape, dtype)
    (grad,) = torch.autograd.grad(loss, xr, go)
    assert loss.dtype == dtype and grad.dtype == dtype
    _close(loss, ref_divergence.kl_div(_np(x), _np(t), reduction, log_target), dtype)
    ref_grad = ref_divergence.kl_div_grad(
        _np(x), _np(t), reduction, log_target, grad_output=_np(go)
    )
    _close(grad, ref_grad, dtype)
    xt = x.clone().requires_grad_()
    expected = F.kl_div(xt, t, reduction=reduction, log_target=log_target)
    (expected_grad,) = torch.autograd.grad(expected, xt, go)
    torch.testing.assert_close(loss, expected, **TOL[dtype])
    torch.testing.assert_close(grad, expected_grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_extreme_values(dtype, isa):
    """|x| up to 80 with hard labels (softplus and σ at both ends), KL with t = 0 and log-probs to -80."""
    values = [-80.0, -40.0, -17.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 17.0, 40.0, 80.0]
    x = torch.tensor(values * 2, dtype=dtype)
    t = torch.tensor([0.0] * len(values) + [1.0] * len(values), dtype=dtype)
    pw = torch.full((x.numel(),), 2.5, dtype=dtype)
    for pos_weight in (None, pw):
        grad = torch.empty_like(x)
        loss, total = binary_elements_torch(
            "bce_with_logits", x, t, None, pos_weight, loss=True, total=True, grad=grad, isa=isa
        )
        args = (_np(x), _np(t), None, _np(pos_weight))
        expected = ref_binary.bce_logits_elements(*args)
        _close(loss, expected, dtype)
        _close(grad, ref_binary.bce_logits_elements_grad(*args, 1.0), dtype)
        assert total == pytest.approx(float(expected.sum()), rel=1e-6)
    # KL: t = 0 gives 0 whatever the input; small positive targets against very negative log-probs
    x = torch.tensor([-80.0, -30.0, -1.0, 0.0, -80.0, -30.0, -1.0, -1e-6], dtype=dtype)
    t = torch.tensor([0.0, 0.0, 0.0, 0.0, 1e-30, 0.5, 1.0, 1e-3], dtype=dtype)
    grad = torch.empty_like(x)
    loss, _ = binary_elements_torch("kl_div", x, t, loss=True, grad=grad, isa=isa)
    _close(loss, ref_divergence.kl_div_elements(_np(x), _np(t), False), dtype)
    _close(grad, ref_divergence.kl_div_elements_grad(_np(x), _np(t), False, 1.0), dtype)
    assert torch.equal(loss[:4], torch.zeros(4, dtype=dtype))
    lt = torch.tensor([-80.0, -30.0, -1.0, 0.0, 2.0, -1e-6, -5.0, -0.5], dtype=dtype)
    loss, _ = binary_elements_torch("kl_div_log_target", x, lt, loss=True, grad=grad, isa=isa)
    _close(loss, ref_divergence.kl_div_elements(_np(x), _np(lt), True), dtype)
    _close(grad, ref_divergence.kl_div_elements_grad(_np(x), _np(lt), True, 1.0), dtype)


def test_kl_zero_target_against_minus_inf_is_nan_like_torch():
    x = torch.tensor([-float("inf"), -1.0])
    t = torch.tensor([0.0, 0.5])
    got = crossent.kl_div(x, t, reduction="none", backend="native")
    torch.testing.assert_close(got, F.kl_div(x, t, reduction="none"), equal_nan=True)


@pytest.mark.parametrize("kind", ["bce_with_logits", "kl_div", "kl_div_log_target"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_changes_no_bit(kind, dtype):
    """Whole blocks per thread, partial sums added in block order: 1, 2 and 3 threads agree bitwise."""
    g = torch.Generator().manual_seed(3)
    n = 300_007  # several blocks, a partial last block and a partial last vector
    x = torch.randn(n, generator=g, dtype=dtype) - (2 if kind != "bce_with_logits" else 0)
    t = torch.rand(n, generator=g, dtype=dtype)
    w = torch.rand(n, generator=g, dtype=dtype) if kind == "bce_with_logits" else None
    results = []
    for threads in (1, 2, 3):
        grad = torch.empty_like(x)
        loss, total = binary_elements_torch(
            kind, x, t, w, loss=True, total=True, grad=grad, grad_scale=0.3, num_threads=threads
        )
        results.append((loss, total, grad))
    for loss, total, grad in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert total == results[0][1]
        assert torch.equal(grad, results[0][2])


@pytest.mark.parametrize("function", ["binary_cross_entropy_with_logits", "kl_div"])
def test_auto_picks_native_above_the_small_call_size(function):
    big = torch.randn(257, 513)
    small = torch.randn(32, 10)
    assert _dispatch.choose(function, "auto", big, aten=True) == "native"
    assert _dispatch.choose(function, "auto", small, aten=True) == "aten"
    edge = _dispatch.ELEMENTWISE_ATEN_MAX
    assert _dispatch.choose(function, "auto", torch.randn(edge), aten=True) == "aten"
    assert _dispatch.choose(function, "auto", torch.randn(edge + 1), aten=True) == "native"
    t = torch.rand(257, 513)
    x = big.clone().requires_grad_()
    xt = big.clone().requires_grad_()
    if function == "kl_div":
        got = crossent.kl_div(x, t, reduction="batchmean")
        expected = F.kl_div(xt, t, reduction="batchmean")
    else:
        got = crossent.binary_cross_entropy_with_logits(x, t)
        expected = F.binary_cross_entropy_with_logits(xt, t)
    got.backward()
    expected.backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(x.grad, xt.grad)


@pytest.mark.parametrize(
    "weight_shape", [(257, 1), (1,), (1, 513)], ids=["per-row", "scalar", "row-vector"]
)
def test_other_weight_broadcasts_and_layouts(weight_shape):
    """Broadcasts other than full-size or (C,) are materialised; a transposed input is copied."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(513, 257, generator=g).t()  # non-contiguous
    t = torch.rand(257, 513, generator=g)
    w = torch.rand(weight_shape, generator=g)
    pw = torch.rand(257, 1, generator=g) * 2
    xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = crossent.binary_cross_entropy_with_logits(
        xr, t, w, reduction="sum", pos_weight=pw, backend="native"
    )
    expected = F.binary_cross_entropy_with_logits(xt, t, w, reduction="sum", pos_weight=pw)
    got.backward()
    expected.backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(xr.grad, xt.grad)


def test_gradient_with_respect_to_target_goes_to_the_eager_backend():
    x = torch.randn(64, 300, requires_grad=True)
    t = torch.rand(64, 300, requires_grad=True)
    loss = crossent.binary_cross_entropy_with_logits(x, t, backend="native")
    loss.backward()
    xt, tt = x.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    F.binary_cross_entropy_with_logits(xt, tt).backward()
    torch.testing.assert_close(x.grad, xt.grad)
    torch.testing.assert_close(t.grad, tt.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_widened(dtype):
    """Half inputs run on a float32 copy: the loss is float32 and the gradient the input's dtype,
    as on the eager backend."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 300, generator=g).to(dtype)
    t = torch.rand(64, 300, generator=g).to(dtype)
    for fn in (crossent.binary_cross_entropy_with_logits, crossent.kl_div):
        xr, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
        got = fn(xr, t, reduction="sum", backend="native")
        expected = fn(xe, t, reduction="sum", backend="torch")
        got.backward()
        expected.backward()
        assert got.dtype == torch.float32 and xr.grad.dtype == dtype
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(xr.grad, xe.grad)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_double_backward_matches_the_eager_backend(reduction):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(33, 17, generator=g, dtype=torch.float64)
    t = torch.rand(33, 17, generator=g, dtype=torch.float64)
    pw = torch.rand(17, generator=g, dtype=torch.float64)
    grads = []
    for backend in ("native", "torch"):
        xr = x.clone().requires_grad_()
        loss = crossent.binary_cross_entropy_with_logits(
            xr, t, reduction=reduction, pos_weight=pw, backend=backend
        )
        (gx,) = torch.autograd.grad(loss.sum(), xr, create_graph=True)
        (ggx,) = torch.autograd.grad((gx * gx).sum(), xr)
        grads.append((gx.detach(), ggx))
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float64])


def test_grad_output_scales_a_reduced_loss_and_two_backwards_agree():
    x = torch.randn(64, 300, dtype=torch.float64, requires_grad=True)
    t = torch.rand(64, 300, dtype=torch.float64)
    loss = crossent.kl_div(x, t, reduction="batchmean", backend="native")
    (g1,) = torch.autograd.grad(loss, x, torch.tensor(2.5, dtype=torch.float64), retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g1, 2.5 * g2)
    torch.testing.assert_close(g2, -t / 64)


def test_kl_div_backend_argument_is_validated():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="argument 'backend': there is no triton kernel"):
        crossent.kl_div(x, torch.rand(4, 3), reduction="sum", backend="triton")


def test_raw_entry_rejects_bad_arguments():
    x = torch.randn(12)
    with pytest.raises(ValueError, match="'kind'"):
        binary_elements_torch("bce", x, x, loss=True)
    with pytest.raises(ValueError, match="BCE only"):
        binary_elements_torch("kl_div", x, x, torch.ones(12), loss=True)
    with pytest.raises(ValueError, match="'weight'.*divides"):
        binary_elements_torch("bce_with_logits", x, x, torch.ones(5), loss=True)
    with pytest.raises(ValueError, match="nothing to compute"):
        binary_elements_torch("bce_with_logits", x, x)
    with pytest.raises(TypeError, match="'x'"):
        binary_elements_torch("kl_div", x.half(), x.half(), loss=True)
