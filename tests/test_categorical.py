"""Categorical cross-entropy and NLL: the NumPy reference and the PyTorch API against torch.nn.functional.

Oracle: ``torch.nn.functional.cross_entropy`` / ``nll_loss`` in float64 (values and autograd gradients),
over the whole option grid of ``grid.py``; z-loss and softcap against their closed forms composed from
torch ops (docs/semantics.md, crossent's extras).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossent
import crossent.numpy as cn
from grid import cases, make_inputs
from oracle import TOL, t64

GRID = cases()


def _torch_ref(x, t, w, case, **extra):
    return F.cross_entropy(
        x,
        t,
        w,
        ignore_index=case.ignore_index,
        reduction=case.reduction,
        label_smoothing=case.label_smoothing,
    )


def _native_ok() -> bool:
    from crossent import _dispatch

    return _dispatch.native_available()


NATIVE = pytest.param(
    "native", marks=pytest.mark.skipif(not _native_ok(), reason="no native kernel")
)


def _numpy_module(name: str):
    """The pure reference, or its compiled twin for NumPy arrays (crossent.native)."""
    if name == "reference":
        return cn
    import crossent.native

    return crossent.native


@pytest.mark.parametrize("backend", ["reference", NATIVE])
@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_reference_matches_torch(case, backend):
    x, t, w = make_inputs(case)
    mod = _numpy_module(backend)
    expected = _torch_ref(t64(x).requires_grad_(), t64(t), t64(w), case)
    got = mod.cross_entropy(x, t, w, case.ignore_index, case.reduction, case.label_smoothing)
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    # analytic gradient vs torch autograd, with a non-trivial upstream gradient
    xt = t64(x).requires_grad_()
    out = _torch_ref(xt, t64(t), t64(w), case)
    g = np.random.default_rng(1).normal(size=out.shape) if case.reduction == "none" else 0.7
    (grad,) = torch.autograd.grad(out, xt, t64(np.asarray(g)))
    got_grad = mod.cross_entropy_grad(
        x, t, w, case.ignore_index, case.reduction, case.label_smoothing, grad_output=g
    )
    np.testing.assert_allclose(got_grad, grad.numpy(), rtol=1e-10, atol=1e-13)


BACKENDS = ["torch", NATIVE]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", GRID[::2], ids=[c.id for c in GRID[::2]])
def test_torch_api_matches_torch(case, dtype, backend):
    x, t, w = make_inputs(case)
    tt = t64(t) if not case.prob_target else t64(t).to(dtype)
    ww = None if w is None else t64(w).to(dtype)
    xa = t64(x).to(dtype).requires_grad_()
    xb = t64(x).to(dtype).requires_grad_()
    a = crossent.cross_entropy(
        xa,
        tt,
        ww,
        ignore_index=case.ignore_index,
        reduction=case.reduction,
        label_smoothing=case.label_smoothing,
        backend=backend,
    )
    b = _torch_ref(xb, tt, ww, case)
    torch.testing.assert_close(a, b, **TOL[dtype])
    g = torch.randn_like(b) if case.reduction == "none" else torch.tensor(1.3, dtype=dtype)
    torch.testing.assert_close(
        torch.autograd.grad(a, xa, g)[0], torch.autograd.grad(b, xb, g)[0], **TOL[dtype]
    )


def test_positional_arguments_like_torch():
    x, t, w = (
        torch.randn(4, 3, dtype=torch.float64),
        torch.tensor([0, 2, 1, 1]),
        torch.rand(3, dtype=torch.float64),
    )
    a = crossent.cross_entropy(x, t, w, None, -100, None, "sum", 0.1)
    torch.testing.assert_close(a, F.cross_entropy(x, t, w, None, -100, None, "sum", 0.1))


def test_legacy_size_average_reduce_warn_and_map():
    x, t = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    with pytest.warns(UserWarning, match="size_average and reduce"):
        a = crossent.cross_entropy(x, t, size_average=False)
    torch.testing.assert_close(a, F.cross_entropy(x, t, reduction="sum"))
    with pytest.warns(UserWarning):
        a = crossent.cross_entropy(x, t, reduce=False)
    assert a.shape == (4,)


def test_ignore_index_as_zero_dim_tensor_and_uint8_target():
    x = torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 255, 2, 1], dtype=torch.uint8)
    a = crossent.cross_entropy(x, t, ignore_index=torch.tensor(255))
    torch.testing.assert_close(a, F.cross_entropy(x, t, ignore_index=255))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_all_ignored_and_empty_batches(reduction):
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.full((3,), -100)
    a, b = (
        crossent.cross_entropy(x, t, reduction=reduction),
        F.cross_entropy(x, t, reduction=reduction),
    )
    torch.testing.assert_close(a, b, equal_nan=True)
    (ga,) = torch.autograd.grad(a.sum(), x)
    assert torch.equal(
        ga, torch.zeros_like(ga)
    )  # all-ignored mean: NaN loss, zero gradient (like torch)
    e = torch.randn(0, 4, dtype=torch.float64)
    ea = crossent.cross_entropy(e, torch.zeros(0, dtype=torch.long), reduction=reduction)
    eb = F.cross_entropy(e, torch.zeros(0, dtype=torch.long), reduction=reduction)
    torch.testing.assert_close(ea, eb, equal_nan=True)
    k = torch.randn(2, 3, 0, dtype=torch.float64)
    kt = torch.zeros(2, 0, dtype=torch.long)
    torch.testing.assert_close(
        crossent.cross_entropy(k, kt, reduction=reduction),
        F.cross_entropy(k, kt, reduction=reduction),
        equal_nan=True,
    )


def test_class_count_one_gives_negative_zero():
    a = crossent.cross_entropy(torch.randn(2, 1), torch.tensor([0, 0]), reduction="none")
    assert torch.equal(a, torch.zeros(2)) and torch.all(torch.signbit(a))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_non_finite_logits_like_torch(label_smoothing):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor(
        [
            [1.0, -inf, 0.5],
            [-inf, 2.0, 0.0],
            [inf, 0.0, 1.0],
            [nan, 1.0, 0.0],
            [1.0, 2.0, nan],
            [0.0, 1.0, 2.0],
        ],
        dtype=torch.float64,
    )
    t = torch.tensor([0, 0, 1, 2, 1, -100])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = crossent.cross_entropy(xa, t, reduction="none", label_smoothing=label_smoothing)
    b = F.cross_entropy(xb, t, reduction="none", label_smoothing=label_smoothing)
    torch.testing.assert_close(a, b, equal_nan=True)
    g = torch.ones(6, dtype=torch.float64)
    torch.testing.assert_close(
        torch.autograd.grad(a, xa, g)[0], torch.autograd.grad(b, xb, g)[0], equal_nan=True
    )


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_are_finite_and_exact(scale):
    x = torch.tensor([[scale, 0.0, -scale], [0.0, scale, 1.0]], dtype=torch.float32)
    t = torch.tensor([0, 2])
    a = crossent.cross_entropy(x, t, reduction="none", label_smoothing=0.1)
    b = F.cross_entropy(x.double(), t, reduction="none", label_smoothing=0.1)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=1e-6)


def _zloss_softcap_oracle(x, t, w, ignore_index, reduction, ls, z, cap):
    """Closed form (docs/semantics.md) composed from torch ops, autograd-differentiable."""
    zc = cap * torch.tanh(x / cap) if cap is not None else x
    ce = F.cross_entropy(zc, t, w, ignore_index=ignore_index, reduction="none", label_smoothing=ls)
    valid = t != ignore_index
    wy = torch.ones_like(ce) if w is None else w[t.clamp(min=0)]
    zl = torch.where(valid, z * wy * torch.logsumexp(zc, dim=-1) ** 2, torch.zeros_like(ce))
    rows = ce + zl
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / torch.where(valid, wy, torch.zeros_like(wy)).sum()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cap", [None, 2.5])
@pytest.mark.parametrize("z", [0.0, 1e-2, 0.5])
def test_z_loss_and_softcap_closed_form(reduction, weighted, cap, z):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9, 6, generator=g, dtype=torch.float64) * 3).requires_grad_()
    t = torch.tensor([0, 5, 2, -100, 1, 1, 3, 4, 0])
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    a = crossent.cross_entropy(
        x, t, w, reduction=reduction, label_smoothing=0.1, z_loss=z, softcap=cap
    )
    b = _zloss_softcap_oracle(x, t, w, -100, reduction, 0.1, z, cap)
    torch.testing.assert_close(a, b, **TOL[torch.float64])
    up = torch.randn_like(b)
    torch.testing.assert_close(
        torch.autograd.grad(a, x, up)[0], torch.autograd.grad(b, x, up)[0], **TOL[torch.float64]
    )
    # the NumPy reference agrees too
    ref = cn.cross_entropy(
        x.detach().numpy(),
        t.numpy(),
        None if w is None else w.numpy(),
        reduction=reduction,
        label_smoothing=0.1,
        z_loss=z,
        softcap=cap,
    )
    np.testing.assert_allclose(ref, b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_prob_target_z_loss_weighted_by_target_mass():
    """For probability targets the z-term weight is ω = Σ_c w_c q_c (= w_y for one-hot q)."""
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 2])
    w = torch.rand(4, dtype=torch.float64) + 0.5
    q = F.one_hot(y, 4).double()
    soft = crossent.cross_entropy(x, q, w, reduction="sum", z_loss=0.3)
    hard = crossent.cross_entropy(x, y, w, reduction="sum", z_loss=0.3)
    torch.testing.assert_close(soft, hard)


def test_gradcheck_and_gradgradcheck_float64():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, -100, 2, 1])
    w = torch.rand(4, dtype=torch.float64) + 0.5
    fn = lambda x: crossent.cross_entropy(x, t, w, label_smoothing=0.2, z_loss=0.1, softcap=3.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    q = torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1).requires_grad_()
    fq = lambda x, q: crossent.cross_entropy(x, q, w, label_smoothing=0.1, z_loss=0.05)  # noqa: E731
    assert torch.autograd.gradcheck(fq, (x, q))


def test_probability_target_and_weight_gradients_like_torch():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    q = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    a = crossent.cross_entropy(x, q, w, label_smoothing=0.2)
    b = F.cross_entropy(x, q, w, label_smoothing=0.2)
    for ga, gb in zip(torch.autograd.grad(a, (x, q, w)), torch.autograd.grad(b, (x, q, w))):
        torch.testing.assert_close(ga, gb)


def test_weight_not_differentiable_on_index_path_like_torch():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'weight'"):
        crossent.cross_entropy(x, torch.tensor([0, 1, 2, 0]), w).backward()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_half_precision_is_at_least_as_accurate_as_torch(dtype, reduction):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(512, 100, generator=g) * 3).to(dtype)
    t = torch.randint(0, 100, (512,), generator=g)
    oracle = F.cross_entropy(x.double(), t, reduction=reduction, label_smoothing=0.1)
    ours = crossent.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
    theirs = F.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
    assert ours.dtype == torch.float32  # loss in float32 for half inputs (a deliberate difference)
    err_ours = (ours.double() - oracle).abs().max()
    err_theirs = (theirs.double() - oracle).abs().max()
    assert err_ours <= err_theirs + 1e-12
    # gradients: in the input's dtype, never less accurate than torch's
    xa, xb, xo = x.clone().requires_grad_(), x.clone().requires_grad_(), x.double().requires_grad_()
    up = torch.ones(512) if reduction == "none" else torch.tensor(1.0)
    ga = torch.autograd.grad(
        crossent.cross_entropy(xa, t, reduction=reduction, label_smoothing=0.1), xa, up
    )[0]
    gb = torch.autograd.grad(
        F.cross_entropy(xb, t, reduction=reduction, label_smoothing=0.1), xb, up.to(dtype)
    )[0]
    go = torch.autograd.grad(
        F.cross_entropy(xo, t, reduction=reduction, label_smoothing=0.1), xo, up.double()
    )[0]
    assert ga.dtype == dtype
    assert (ga.double() - go).abs().max() <= (gb.double() - go).abs().max() + 1e-12


def test_layouts_strided_and_channels_last():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 4, 5))
    expected = F.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(
        crossent.cross_entropy(x.to(memory_format=torch.channels_last), t, reduction="none"),
        expected,
    )
    y = torch.randn(6, 8, dtype=torch.float64)[::2, ::2]
    ty = torch.tensor([0, 3, 1])
    torch.testing.assert_close(crossent.cross_entropy(y, ty), F.cross_entropy(y, ty))
    torch.testing.assert_close(
        crossent.cross_entropy(y.t().contiguous().t(), ty), F.cross_entropy(y, ty)
    )


def test_caller_tensors_are_not_mutated():
    x = torch.randn(6, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 4, -100])
    before = x.detach().clone()
    crossent.cross_entropy(x, t, label_smoothing=0.1, z_loss=0.1).backward()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_nll_loss_matches_torch(reduction):
    x = torch.randn(6, 5, 3, dtype=torch.float64).log_softmax(1).requires_grad_()
    t = torch.randint(0, 5, (6, 3))
    t[0, 0] = -100
    w = torch.rand(5, dtype=torch.float64)
    a, b = crossent.nll_loss(x, t, w, reduction=reduction), F.nll_loss(x, t, w, reduction=reduction)
    torch.testing.assert_close(a, b)
    up = torch.randn_like(b)
    gb = torch.autograd.grad(b, x, up)[0]
    torch.testing.assert_close(torch.autograd.grad(a, x, up)[0], gb)
    ref = cn.nll_loss(x.detach().numpy(), t.numpy(), w.numpy(), reduction=reduction)
    np.testing.assert_allclose(ref, b.detach().numpy(), rtol=1e-12)
    ref_g = cn.nll_loss_grad(
        x.detach().numpy(), t.numpy(), w.numpy(), reduction=reduction, grad_output=up.numpy()
    )
    np.testing.assert_allclose(ref_g, gb.numpy(), rtol=1e-12)


def test_modules_match_torch_modules():
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 2, 1, 1])
    w = torch.rand(3, dtype=torch.float64)
    ours = crossent.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"weight"}
    torch.testing.assert_close(
        crossent.nn.NLLLoss(w)(x.log_softmax(1), t), torch.nn.NLLLoss(w)(x.log_softmax(1), t)
    )


@pytest.mark.parametrize(
    "input_dtype,target_dtype",
    [
        (torch.float32, torch.float64),
        (torch.float64, torch.float32),
        (torch.bfloat16, torch.float32),
    ],
)
def test_probability_path_promotes_dtypes_like_torch(input_dtype, target_dtype):
    x = torch.randn(3, 4).to(input_dtype)
    q = torch.softmax(torch.randn(3, 4), 1).to(target_dtype)
    ours, theirs = crossent.cross_entropy(x, q), F.cross_entropy(x, q)
    assert ours.dtype == theirs.dtype
    torch.testing.assert_close(
        ours, theirs, rtol=1e-2 if input_dtype == torch.bfloat16 else 1e-6, atol=1e-6
    )


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_normalize_by_replaces_the_mean_denominator(backend):
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, -100, 3, 4, 2])
    total = torch.tensor(17.0, dtype=torch.float64)
    a = crossent.cross_entropy(x, t, normalize_by=total, backend=backend, label_smoothing=0.1)
    b = F.cross_entropy(x, t, reduction="sum", label_smoothing=0.1) / 17.0
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])
