"""Distillation losses: the reference, the PyTorch function and the fused linear form.

Oracles:
* an independent float64 formula written here with ``torch.log_softmax``/``F.kl_div``/``F.cross_entropy``
  and differentiated by autograd (student and teacher gradients);
* closed forms in the one-hot limit of the teacher (forward KL is the tempered CE; the JSD has a
  two-term expression);
* for the torch function, the NumPy reference in float64; for the fused form, the unfused composition
  (materialised logits → ``crossent.distillation_loss``) in float64 to 1e-10.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossent
import crossent.numpy as cn

IGNORE = -100
DIVERGENCES = [  # (divergence, beta): the JSD's endpoints follow TRL's convention (checked below)
    ("forward_kl", 0.5),
    ("reverse_kl", 0.5),
    ("jsd", 0.5),
    ("jsd", 0.1),
    ("jsd", 0.0),
    ("jsd", 1.0),
]
TEMPERATURES = [0.1, 1.0, 10.0]  # extremes: sharp (×10 logits) and flat (÷10)


def oracle(zs, zt, y, *, divergence, beta, temperature, hard_weight, reduction, scale=False):
    """The loss from torch's log_softmax/kl_div/cross_entropy (float64), differentiable by autograd."""
    ls = torch.log_softmax(zs / temperature, -1)
    lt = torch.log_softmax(zt / temperature, -1)

    def kl(p_log, q_log):  # KL(p || q) per row, from log-probabilities
        return F.kl_div(q_log, p_log, reduction="none", log_target=True).sum(-1)

    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        d = kl(lt, ls)
    elif divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        d = kl(ls, lt)
    else:
        lm = torch.logsumexp(torch.stack([lt + math.log(beta), ls + math.log(1 - beta)]), 0)
        d = beta * kl(lt, lm) + (1 - beta) * kl(ls, lm)
    loss = (1 - hard_weight) * (temperature**2 if scale else 1.0) * d
    count = torch.tensor(float(zs.shape[0]), dtype=zs.dtype)
    if y is not None:
        if hard_weight > 0:
            loss = loss + hard_weight * F.cross_entropy(
                zs, y, ignore_index=IGNORE, reduction="none"
            )
        valid = y != IGNORE
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        count = valid.sum().to(zs.dtype)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / count


def _data(n=7, v=9, seed=0, confident=False, ignored=True):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    zt = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    if confident:  # a near one-hot teacher in half of the rows
        zt[::2] = 0.0
        zt[::2, 3] = 40.0
    y = torch.randint(0, v, (n,), generator=g)
    if ignored:
        y[1] = IGNORE
        y[4] = IGNORE
    return zs, zt, y


def _grid():
    """divergence × temperature × (hard weight, target) × reduction; the τ² scaling where τ ≠ 1."""
    for (div, beta), tau, (h, tgt), red in itertools.product(
        DIVERGENCES,
        TEMPERATURES,
        [(0.0, "none"), (0.0, "ignored"), (0.3, "ignored")],
        ["none", "sum", "mean"],
    ):
        yield div, beta, tau, h, tgt, red, tau != 1.0 and tgt == "ignored"


def _kw(div, beta, tau, h, red, scale):
    return dict(
        divergence=div,
        beta=beta,
        temperature=tau,
        hard_weight=h,
        reduction=red,
        scale_by_temperature_squared=scale,
    )


# --------------------------------------------------------------------------------------------------
# The reference against the autograd oracle.
# --------------------------------------------------------------------------------------------------


def test_reference_matches_autograd_oracle_on_the_option_grid():
    zs, zt, y = _data(confident=True)  # rows 0, 2, 4, 6: a near one-hot teacher; the others random
    for div, beta, tau, h, tgt, red, scale in _grid():
        target = y if tgt == "ignored" else None
        kw = _kw(div, beta, tau, h, red, scale)
        a = zs.clone().requires_grad_()
        b = zt.clone().requires_grad_()
        want = oracle(
            a,
            b,
            target,
            divergence=div,
            beta=beta,
            temperature=tau,
            hard_weight=h,
            reduction=red,
            scale=scale,
        )
        go = torch.linspace(0.5, 1.5, want.numel(), dtype=torch.float64).reshape(want.shape)
        ga, gb = torch.autograd.grad(want, (a, b), go)
        t_np = None if target is None else target.numpy()
        got = cn.distillation_loss(zs.numpy(), zt.numpy(), t_np, **kw)
        ds, dt = cn.distillation_loss_grad(
            zs.numpy(), zt.numpy(), t_np, grad_output=go.numpy(), **kw
        )
        msg = f"{kw} target={tgt}"
        tol = dict(rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(torch.as_tensor(got), want.detach(), **tol, msg=msg)
        torch.testing.assert_close(torch.as_tensor(ds), ga, **tol, msg=msg)
        torch.testing.assert_close(torch.as_tensor(dt), gb, **tol, msg=msg)


def test_forward_kl_against_a_one_hot_teacher_is_the_tempered_cross_entropy():
    zs, _, _ = _data(n=5, v=8, ignored=False)
    k = torch.tensor([0, 3, 7, 2, 2])
    zt = F.one_hot(k, 8).double() * 400.0  # p_T = e_k up to e^-400/τ
    for tau in TEMPERATURES:
        got = cn.distillation_loss(zs.numpy(), zt.numpy(), temperature=tau, reduction="none")
        want = F.cross_entropy(zs / tau, k, reduction="none")
        torch.testing.assert_close(torch.as_tensor(got), want, rtol=1e-12, atol=1e-12)


def test_jsd_against_a_one_hot_teacher_has_its_closed_form():
    zs, _, _ = _data(n=5, v=8, ignored=False)
    k = torch.tensor([0, 3, 7, 2, 2])
    zt = F.one_hot(k, 8).double() * 400.0
    for beta in (0.1, 0.5, 0.9):
        # m = β e_k + (1-β) p_S:  KL(e_k||m) = -log(β + (1-β) q),  q = p_S,k
        # KL(p_S||m) = -(1 - q) log(1-β) + q log(q / (β + (1-β) q))
        q = torch.softmax(zs, -1).gather(1, k[:, None])[:, 0]
        mk = beta + (1 - beta) * q
        want = beta * -torch.log(mk) + (1 - beta) * (
            -(1 - q) * math.log(1 - beta) + q * torch.log(q / mk)
        )
        got = cn.distillation_loss(
            zs.numpy(), zt.numpy(), divergence="jsd", beta=beta, reduction="none"
        )
        torch.testing.assert_close(torch.as_tensor(got), want, rtol=1e-12, atol=1e-12)


def test_jsd_endpoints_are_trl_kl_limits():
    zs, zt, y = _data()
    args = (zs.numpy(), zt.numpy(), y.numpy())
    fwd = cn.distillation_loss(*args, divergence="forward_kl", reduction="none")
    rev = cn.distillation_loss(*args, divergence="reverse_kl", reduction="none")
    np.testing.assert_array_equal(
        cn.distillation_loss(*args, divergence="jsd", beta=0.0, reduction="none"), fwd
    )
    np.testing.assert_array_equal(
        cn.distillation_loss(*args, divergence="jsd", beta=1.0, reduction="none"), rev
    )
    # ... which are the limits of JSD_β/β (β → 0) and JSD_β/(1-β) (β → 1), not of JSD_β itself (→ 0)
    eps = 1e-8  # the next term is O(β·χ²(p_T‖p_S)) relative
    lo = cn.distillation_loss(*args, divergence="jsd", beta=eps, reduction="none") / eps
    hi = cn.distillation_loss(*args, divergence="jsd", beta=1 - eps, reduction="none") / eps
    np.testing.assert_allclose(lo, fwd, rtol=1e-5)
    np.testing.assert_allclose(hi, rev, rtol=1e-5)
    assert np.all(cn.distillation_loss(*args, divergence="jsd", beta=eps, reduction="none") < 1e-4)


def test_extreme_temperatures_and_confident_teachers_stay_finite():
    zs, zt, y = _data(confident=True)
    zt = zt * 50  # logit gaps of ~2000 at τ = 1, ~20000 at τ = 0.1
    for (div, beta), tau in itertools.product(DIVERGENCES, TEMPERATURES):
        kw = dict(divergence=div, beta=beta, temperature=tau, reduction="none")
        loss = cn.distillation_loss(zs.numpy(), zt.numpy(), y.numpy(), **kw)
        ds, dt = cn.distillation_loss_grad(
            zs.numpy(), zt.numpy(), y.numpy(), grad_output=np.ones(7), **kw
        )
        assert np.isfinite(loss).all() and np.isfinite(ds).all() and np.isfinite(dt).all(), kw
        assert (loss >= 0).all(), kw


def test_every_row_ignored_gives_nan_mean_zero_sum_zero_gradients():
    zs, zt, y = _data()
    y[:] = IGNORE
    args = (zs.numpy(), zt.numpy(), y.numpy())
    assert np.isnan(cn.distillation_loss(*args))
    assert cn.distillation_loss(*args, reduction="sum") == 0.0
    ds, dt = cn.distillation_loss_grad(*args)
    assert not ds.any() and not dt.any()


# --------------------------------------------------------------------------------------------------
# The PyTorch function.
# --------------------------------------------------------------------------------------------------


def test_torch_function_matches_the_reference_with_and_without_teacher_gradient():
    zs, zt, y = _data(n=6, v=11, seed=3)
    zs3, zt3, y3 = zs.reshape(2, 3, 11), zt.reshape(2, 3, 11), y.reshape(2, 3)  # leading dims too
    for (div, beta), red, h in itertools.product(DIVERGENCES, ["none", "mean", "sum"], [0.0, 0.4]):
        kw = dict(divergence=div, beta=beta, temperature=2.0, hard_weight=h, reduction=red)
        want = cn.distillation_loss(zs3.numpy(), zt3.numpy(), y3.numpy(), **kw)
        a = zs3.clone().requires_grad_()
        for teacher_grad in (False, True):
            b = zt3.clone().requires_grad_(teacher_grad)
            got = crossent.distillation_loss(a, b, y3, **kw)
            torch.testing.assert_close(got.detach(), torch.as_tensor(want), rtol=1e-12, atol=1e-13)
            go = torch.rand(got.shape, dtype=torch.float64)
            ds, dt = cn.distillation_loss_grad(
                zs3.numpy(), zt3.numpy(), y3.numpy(), grad_output=go.numpy(), **kw
            )
            a.grad = None
            got.backward(go)
            torch.testing.assert_close(a.grad, torch.as_tensor(ds), rtol=1e-12, atol=1e-13)
            if teacher_grad:
                torch.testing.assert_close(b.grad, torch.as_tensor(dt), rtol=1e-12, atol=1e-13)
            else:
                assert b.grad is None


def test_torch_function_gradcheck():
    zs, zt, y = _data(n=5, v=5, seed=5)
    a, b = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    for div in ("forward_kl", "reverse_kl", "jsd"):
        fn = lambda s, t: crossent.distillation_loss(s, t, y, divergence=div, hard_weight=0.2)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (a, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_compute_in_float32(dtype):
    zs, zt, y = _data(n=8, v=13, seed=7)
    a, b = zs.to(dtype).requires_grad_(), zt.to(dtype)
    for div, beta in DIVERGENCES[:3]:
        kw = dict(divergence=div, beta=beta, temperature=0.5, hard_weight=0.2)
        got = crossent.distillation_loss(a, b, y, **kw)
        assert got.dtype == torch.float32
        # the oracle on the same rounded inputs, in float64: float32 tolerance
        ra, rb = a.detach().double().requires_grad_(), b.double()
        want = oracle(
            ra, rb, y, divergence=div, beta=beta, temperature=0.5, hard_weight=0.2, reduction="mean"
        )
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-6)
        (ga,) = torch.autograd.grad(got, a)
        (gw,) = torch.autograd.grad(want, ra)
        assert ga.dtype == dtype
        torch.testing.assert_close(ga.double(), gw, rtol=1e-2, atol=1e-3)  # rounded once to dtype


# --------------------------------------------------------------------------------------------------
# The fused linear form.
# --------------------------------------------------------------------------------------------------


def _linear_data(n=29, ds=6, dt=4, v=17, seed=11, dtype=torch.float64, confident=False):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, ds, generator=g, dtype=torch.float64)
    ws = torch.randn(v, ds, generator=g, dtype=torch.float64)
    bs = torch.randn(v, generator=g, dtype=torch.float64)
    xt = torch.randn(n, dt, generator=g, dtype=torch.float64)
    wt = torch.randn(v, dt, generator=g, dtype=torch.float64) * (20.0 if confident else 1.0)
    bt = torch.randn(v, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (n,), generator=g)
    y[::5] = IGNORE
    return [t.to(dtype) for t in (xs, ws, bs, xt, wt, bt)] + [y]


def _fused_and_unfused(xs, ws, bs, xt, wt, bt, y, kw, workspace, backend="auto"):
    leaves = [t.clone().requires_grad_() for t in (xs, ws, bs)]
    fused = crossent.linear_distillation_loss(
        leaves[0],
        leaves[1],
        xt,
        wt,
        y,
        student_bias=leaves[2],
        teacher_bias=bt,
        workspace_bytes=workspace,
        backend=backend,
        **kw,
    )
    ref_leaves = [t.clone().requires_grad_() for t in (xs, ws, bs)]
    unfused = crossent.distillation_loss(F.linear(*ref_leaves), F.linear(xt, wt, bt), y, **kw)
    go = torch.linspace(0.5, 2.0, max(1, fused.numel()), dtype=fused.dtype).reshape(fused.shape)
    g1 = torch.autograd.grad(fused, leaves, go)
    g2 = torch.autograd.grad(unfused, ref_leaves, go)
    return fused, unfused, g1, g2


def test_fused_equals_unfused_in_float64():
    datasets = [_linear_data(), _linear_data(confident=True)]  # teacher logits ~ ±40·N(0, 1) there
    for i, ((div, beta), tau) in enumerate(itertools.product(DIVERGENCES, TEMPERATURES)):
        h, red, data = [0.0, 0.3][i % 2], ["none", "sum", "mean"][i % 3], datasets[(i // 2) % 2]
        kw = dict(
            divergence=div,
            beta=beta,
            temperature=tau,
            hard_weight=h,
            reduction=red,
            scale_by_temperature_squared=tau != 1.0,
        )
        # a 3-row chunk: 10 chunks, the last one short
        fused, unfused, g1, g2 = _fused_and_unfused(*data, kw, workspace=3 * 8 * 17 * 16)
        torch.testing.assert_close(fused, unfused, rtol=1e-10, atol=1e-10, msg=str(kw))
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=str(kw))


def test_fused_without_target_and_without_biases():
    xs, ws, _, xt, wt, _, _ = _linear_data()
    a, w = xs.clone().requires_grad_(), ws.clone().requires_grad_()
    got = crossent.linear_distillation_loss(a, w, xt, wt, divergence="jsd", workspace_bytes=4000)
    a2, w2 = xs.clone().requires_grad_(), ws.clone().requires_grad_()
    want = crossent.distillation_loss(a2 @ w2.T, xt @ wt.T, divergence="jsd")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, a2.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-10, atol=1e-10)


def test_fused_leading_dims_teacher_gets_no_gradient_and_second_backward_recomputes():
    xs, ws, bs, xt, wt, bt, y = _linear_data(n=12)
    a, w = xs.reshape(3, 4, -1).clone().requires_grad_(), ws.clone().requires_grad_()
    t_in, t_w = xt.reshape(3, 4, -1).clone().requires_grad_(), wt.clone().requires_grad_()
    loss = crossent.linear_distillation_loss(a, w, t_in, t_w, y.reshape(3, 4), workspace_bytes=2000)
    loss.backward(retain_graph=True)
    first = a.grad.clone()
    loss.backward()
    torch.testing.assert_close(a.grad, 2 * first, rtol=1e-12, atol=1e-14)
    assert t_in.grad is None and t_w.grad is None
    none = crossent.linear_distillation_loss(a, w, t_in, t_w, y.reshape(3, 4), reduction="none")
    assert none.shape == (3, 4)


def test_fused_float32_and_bfloat16_within_their_tolerance():
    data64 = _linear_data(n=40, ds=16, dt=12, v=50)
    kw = dict(divergence="jsd", beta=0.3, temperature=2.0, hard_weight=0.2)
    f32 = [t.float() if t.is_floating_point() else t for t in data64]
    fused, unfused, g1, g2 = _fused_and_unfused(*f32, kw, workspace=4000)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    bf = [t.bfloat16() if t.is_floating_point() else t for t in data64]
    fused, unfused, g1, g2 = _fused_and_unfused(*bf, kw, workspace=4000)
    assert fused.dtype == torch.float32 and g1[1].dtype == torch.bfloat16
    # against the float64 composition on the same rounded inputs: the bf16 products' rounding of the
    # logits dominates (relative 2^-8)
    ref = [t.double() if t.is_floating_point() else t for t in bf]
    _, exact, _, g3 = _fused_and_unfused(*ref, kw, workspace=4000)
    torch.testing.assert_close(fused.double(), exact, rtol=2e-2, atol=2e-3)
    for a, b in zip(g1, g3):
        torch.testing.assert_close(a.double(), b, rtol=5e-2, atol=5e-3)


# --------------------------------------------------------------------------------------------------
# Errors name the argument.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match, error",
    [
        (dict(beta=-0.1), "'beta'", ValueError),
        (dict(beta=1.5), "'beta'", ValueError),
        (dict(beta=float("nan")), "'beta'", ValueError),
        (dict(temperature=0.0), "'temperature'", ValueError),
        (dict(temperature=-1.0), "'temperature'", ValueError),
        (dict(temperature=float("inf")), "'temperature'", ValueError),
        (dict(hard_weight=1.5), "'hard_weight'", ValueError),
        (dict(hard_weight=-0.5), "'hard_weight'", ValueError),
        (dict(divergence="kl"), "'divergence'", ValueError),
        (dict(reduction="batchmean"), "'reduction'", ValueError),
        (dict(scale_by_temperature_squared=1), "'scale_by_temperature_squared'", TypeError),
    ],
)
def test_bad_options_raise_naming_the_argument(kwargs, match, error):
    zs, zt, y = _data()
    for fn, args in (
        (cn.distillation_loss, (zs.numpy(), zt.numpy(), y.numpy())),
        (crossent.distillation_loss, (zs, zt, y)),
        (
            crossent.linear_distillation_loss,
            (
                zs,
                torch.ones(4, 9, dtype=torch.float64),
                zt,
                torch.ones(4, 9, dtype=torch.float64),
                y,
            ),
        ),
    ):
        with pytest.raises(error, match=match):
            fn(*args, **kwargs)


def test_shape_errors_name_the_argument():
    zs, zt, y = _data()
    with pytest.raises(ValueError, match="vocabularies differ"):
        crossent.distillation_loss(zs, zt[:, :-1])
    with pytest.raises(ValueError, match="vocabularies differ"):
        cn.distillation_loss(zs.numpy(), zt[:, :-1].numpy())
    with pytest.raises(ValueError, match="'teacher_logits'"):
        crossent.distillation_loss(zs, zt[:-1])
    with pytest.raises(ValueError, match="'target'"):
        crossent.distillation_loss(zs, zt, y[:-1])
    with pytest.raises(ValueError, match="'hard_weight'"):
        crossent.distillation_loss(zs, zt, hard_weight=0.5)
    with pytest.raises(IndexError, match="out of bounds"):
        crossent.distillation_loss(zs, zt, torch.full_like(y, 9))
    with pytest.raises(TypeError, match="'target'"):
        crossent.distillation_loss(zs, zt, y.double())
    w = torch.ones(4, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="vocabularies differ"):
        crossent.linear_distillation_loss(zs, torch.ones(4, 9, dtype=torch.float64), zt, w[:3])
    with pytest.raises(ValueError, match="'teacher_input'"):
        crossent.linear_distillation_loss(zs, w, zt[:-1], w)
    with pytest.raises(ValueError, match="'student_weight'"):
        crossent.linear_distillation_loss(zs, w[:, :-1], zt, w)
    with pytest.raises(TypeError, match="'teacher_weight'"):
        crossent.linear_distillation_loss(zs, w, zt, w.float())
    with pytest.raises(ValueError, match="'workspace_bytes'"):
        crossent.linear_distillation_loss(zs, w, zt, w, workspace_bytes=0)


@pytest.mark.parametrize("block_kernel", [True, False])
@pytest.mark.parametrize("div,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3)])
def test_fused_with_masked_classes_and_underflow_matches_unfused(block_kernel, div, beta):
    # a class masked to -inf in both models gives 0·∞ in the in-place block kernel; a τ = 0.1 confident teacher underflows probabilities: both must still match the reference
    xs, ws, bs, xt, wt, bt, y = _linear_data(confident=True)
    bt = bt.clone()
    bt[3] = -math.inf
    bs = bs.clone()
    bs[3] = -math.inf
    y[y == 3] = IGNORE  # the hard term of a -inf target logit would be +inf
    for tau in (0.1, 1.0):
        kw = dict(divergence=div, beta=beta, temperature=tau, hard_weight=0.2, reduction="sum")
        fused, unfused, g1, g2 = _fused_and_unfused(
            xs,
            ws,
            bs,
            xt,
            wt,
            bt,
            y,
            kw,
            workspace=4000,
            backend="auto" if block_kernel else "torch",
        )
        assert torch.isfinite(unfused)
        torch.testing.assert_close(fused, unfused, rtol=1e-10, atol=1e-10, msg=str(kw))
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=str(kw))


def test_fused_distillation_refuses_a_second_derivative():
    """The fused form's gradients come from its chunk loop: create_graph=True raises, not silently
    returns gradients that are not differentiable."""
    xs = torch.randn(4, 3, requires_grad=True)
    ws = torch.randn(7, 3, requires_grad=True)
    xt, wt = torch.randn(4, 5), torch.randn(7, 5)
    loss = crossent.linear_distillation_loss(xs, ws, xt, wt)
    (gx,) = torch.autograd.grad(loss, xs, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
