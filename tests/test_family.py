"""The rest of the family against torch.nn.functional (values, gradients) and closed forms.

Oracles: ``F.binary_cross_entropy``, ``F.binary_cross_entropy_with_logits``, ``F.kl_div`` in float64;
torchvision's sigmoid focal loss written out from its published definition (docs/semantics.md, with its
published vector); focal loss with γ = 0 is cross-entropy and matches autograd of its closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossent
import crossent.numpy as cn

D = torch.float64
REDUCTIONS = ["none", "sum", "mean"]


def _check(ours_fn, theirs_fn, inputs, *, equal_nan=False):
    """Values and the gradients of every floating input requiring grad agree."""
    a_in = [
        t.clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
        for t in inputs
    ]
    b_in = [
        t.clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
        for t in inputs
    ]
    a, b = ours_fn(*a_in), theirs_fn(*b_in)
    torch.testing.assert_close(a, b, equal_nan=equal_nan)
    leaves_a = [t for t in a_in if isinstance(t, torch.Tensor) and t.requires_grad]
    leaves_b = [t for t in b_in if isinstance(t, torch.Tensor) and t.requires_grad]
    if leaves_a:
        up = torch.randn_like(b)
        for ga, gb in zip(
            torch.autograd.grad(a, leaves_a, up), torch.autograd.grad(b, leaves_b, up)
        ):
            torch.testing.assert_close(ga, gb, equal_nan=equal_nan)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(reduction, weighted):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(5, 4, generator=g, dtype=D).requires_grad_()
    t = torch.rand(5, 4, generator=g, dtype=D).requires_grad_()
    w = torch.rand(4, generator=g, dtype=D) if weighted else None
    _check(
        lambda p, t: crossent.binary_cross_entropy(p, t, w, reduction=reduction),
        lambda p, t: F.binary_cross_entropy(p, t, w, reduction=reduction),
        [p, t],
    )
    np.testing.assert_allclose(
        cn.binary_cross_entropy(
            p.detach().numpy(), t.detach().numpy(), None if w is None else w.numpy(), reduction
        ),
        F.binary_cross_entropy(p, t, w, reduction=reduction).detach().numpy(),
        rtol=1e-12,
    )


def test_binary_cross_entropy_clamps_like_torch():
    p = torch.tensor([0.0, 0.0, 0.0, 1e-50, 1 - 1e-16, 1.0], dtype=D, requires_grad=True)
    t = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 1.0], dtype=D)
    _check(
        lambda p: crossent.binary_cross_entropy(p, t, reduction="none"),
        lambda p: F.binary_cross_entropy(p, t, reduction="none"),
        [p],
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight_shape", [None, (4,), (5, 1), ()])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits(reduction, pos_weight_shape, weighted):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(5, 4, generator=g, dtype=D) * 4).requires_grad_()
    t = torch.rand(5, 4, generator=g, dtype=D).requires_grad_()
    w = torch.rand(4, generator=g, dtype=D) if weighted else None
    pw = (
        None if pos_weight_shape is None else torch.rand(pos_weight_shape, generator=g, dtype=D) * 3
    )
    _check(
        lambda x, t: crossent.binary_cross_entropy_with_logits(
            x, t, w, reduction=reduction, pos_weight=pw
        ),
        lambda x, t: F.binary_cross_entropy_with_logits(
            x, t, w, reduction=reduction, pos_weight=pw
        ),
        [x, t],
    )
    ref = cn.binary_cross_entropy_with_logits(
        x.detach().numpy(),
        t.detach().numpy(),
        None if w is None else w.numpy(),
        reduction,
        None if pw is None else pw.numpy(),
    )
    np.testing.assert_allclose(
        ref,
        F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw)
        .detach()
        .numpy(),
        rtol=1e-12,
    )


def test_bce_with_logits_extremes_and_dtype_rule():
    inf = float("inf")
    x = torch.tensor([inf, inf, -inf, -inf, 100.0, -100.0, 1e4], dtype=D, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0], dtype=D)
    _check(
        lambda x: crossent.binary_cross_entropy_with_logits(x, t, reduction="none"),
        lambda x: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
        [x],
        equal_nan=True,
    )
    out = crossent.binary_cross_entropy_with_logits(torch.randn(3, dtype=D), torch.rand(3))
    assert (
        out.dtype
        == F.binary_cross_entropy_with_logits(torch.randn(3, dtype=D), torch.rand(3)).dtype
    )


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 5, generator=g, dtype=D).log_softmax(1).requires_grad_()
    t = torch.rand(4, 5, generator=g, dtype=D) + 0.01
    t = (t.log() if log_target else t).requires_grad_()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(
            lambda x, t: crossent.kl_div(x, t, reduction=reduction, log_target=log_target),
            lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target),
            [x, t],
        )
        ref = cn.kl_div(x.detach().numpy(), t.detach().numpy(), reduction, log_target)
        np.testing.assert_allclose(
            ref,
            F.kl_div(x, t, reduction=reduction, log_target=log_target).detach().numpy(),
            rtol=1e-12,
        )
        # 0·log 0 = 0 in the value (the target gradient there is -inf/NaN in torch and is not compared)
        z = t.detach().clone()
        z[0, 0] = float("-inf") if log_target else 0.0
        torch.testing.assert_close(
            crossent.kl_div(x, z, reduction=reduction, log_target=log_target),
            F.kl_div(x, z, reduction=reduction, log_target=log_target),
            equal_nan=True,
        )


def _torchvision_sigmoid_focal(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss as published (BSD-3), written with torch ops."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def test_sigmoid_focal_published_vector():
    # torchvision's output for these inputs (docs/semantics.md, sigmoid_focal_loss)
    x = torch.tensor([-3.0, 0.0, 2.0, 5.0], dtype=D)
    t = torch.tensor([1.0, 0.5, 0.0, 1.0], dtype=D)
    expected = torch.tensor(
        [0.6915701102563155, 0.08664339756999316, 1.2375586345660565, 7.520225563169966e-08],
        dtype=D,
    )
    torch.testing.assert_close(crossent.sigmoid_focal_loss(x, t), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "alpha,gamma", [(0.25, 2.0), (-1, 2.0), (0.5, 0.0), (0.25, 0.5), (1.0, 1.0)]
)
def test_sigmoid_focal_matches_torchvision_definition(reduction, alpha, gamma):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 3, generator=g, dtype=D) * 3).requires_grad_()
    t = (torch.rand(6, 3, generator=g, dtype=D) > 0.5).to(D)
    _check(
        lambda x: crossent.sigmoid_focal_loss(x, t, alpha, gamma, reduction),
        lambda x: _torchvision_sigmoid_focal(x, t, alpha, gamma, reduction),
        [x],
    )
    up = np.random.default_rng(0).normal(size=(6, 3)) if reduction == "none" else 1.7
    ref_g = cn.sigmoid_focal_loss_grad(
        x.detach().numpy(), t.numpy(), alpha, gamma, reduction, grad_output=up
    )
    xx = x.detach().clone().requires_grad_()
    (tg,) = torch.autograd.grad(
        _torchvision_sigmoid_focal(xx, t, alpha, gamma, reduction), xx, torch.as_tensor(up, dtype=D)
    )
    np.testing.assert_allclose(ref_g, tg.numpy(), rtol=1e-10, atol=1e-14)


def _focal_closed_form(x, t, alpha, gamma, weight, ignore_index, reduction):
    """−α_y w_y (1 − p_y)^γ log p_y with autograd; mean over Σ w_y (non-ignored)."""
    logp = x.log_softmax(1)
    valid = t != ignore_index
    ts = t.clamp(min=0)
    lp = logp.gather(1, ts[:, None])[:, 0]
    a = (
        torch.ones_like(lp)
        if alpha is None
        else (alpha[ts] if isinstance(alpha, torch.Tensor) else torch.full_like(lp, alpha))
    )
    w = torch.ones_like(lp) if weight is None else weight[ts]
    loss = torch.where(valid, -a * w * (1 - lp.exp()) ** gamma * lp, torch.zeros_like(lp))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / torch.where(valid, w, torch.zeros_like(w)).sum()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha_kind", [None, "scalar", "vector"])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_loss_closed_form(reduction, gamma, alpha_kind, weighted):
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(8, 5, generator=g, dtype=D) * 2).requires_grad_()
    t = torch.tensor([0, 1, 4, -100, 2, 3, 3, 0])
    alpha = {None: None, "scalar": 0.25, "vector": torch.rand(5, generator=g, dtype=D)}[alpha_kind]
    w = torch.rand(5, generator=g, dtype=D) + 0.5 if weighted else None
    _check(
        lambda x: crossent.focal_loss(x, t, alpha, gamma, w, reduction=reduction),
        lambda x: _focal_closed_form(x, t, alpha, gamma, w, -100, reduction),
        [x],
    )


def test_focal_with_gamma_zero_is_cross_entropy_and_prob_targets_match_one_hot():
    x = torch.randn(6, 4, 3, dtype=D)
    t = torch.randint(0, 4, (6, 3))
    torch.testing.assert_close(crossent.focal_loss(x, t, gamma=0.0), F.cross_entropy(x, t))
    q = F.one_hot(t, 4).movedim(-1, 1).to(D)
    torch.testing.assert_close(
        crossent.focal_loss(x, q, gamma=2.0, reduction="none"),
        crossent.focal_loss(x, t, gamma=2.0, reduction="none"),
    )


def test_focal_confident_rows_stay_finite():
    x = torch.tensor([[60.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float32, requires_grad=True)
    t = torch.tensor([0, 1])
    loss = crossent.focal_loss(x, t, gamma=0.5, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_focal_gradcheck():
    x = torch.randn(4, 3, dtype=D, requires_grad=True)
    t = torch.tensor([0, 2, -100, 1])
    alpha = torch.rand(3, dtype=D)
    assert torch.autograd.gradcheck(lambda x: crossent.focal_loss(x, t, alpha, 1.5), (x,))


def test_entropy_and_the_ce_identity():
    """CE(q, x) = H(q) + KL(q ‖ softmax x), and entropy's analytic gradient matches autograd."""
    x = torch.randn(5, 6, dtype=D, requires_grad=True)
    q = torch.softmax(torch.randn(5, 6, dtype=D), 1)
    ce = crossent.cross_entropy(x, q, reduction="sum")
    h = -(q * q.log()).sum()
    kl = crossent.kl_div(x.log_softmax(1), q, reduction="sum")
    torch.testing.assert_close(ce, h + kl)
    ent = crossent.entropy(x)
    p = x.softmax(1)
    closed = -(p * p.log()).sum(1)
    torch.testing.assert_close(ent, closed)
    up = torch.randn(5, dtype=D)
    torch.testing.assert_close(
        torch.autograd.grad(ent, x, up)[0], torch.autograd.grad(closed, x, up)[0]
    )
