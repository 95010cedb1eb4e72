"""The cheaper eager paths: half-precision cross-entropy on the native CPU kernel, and the reference rows
rewritten with fewer temporaries (in-place updates of arrays the row functions create themselves).

Oracles:
* half-precision CE through the kernel: a float64 evaluation on the rounded inputs; the loss must equal the
  eager backend's (same float32 math: to float32 rounding) and the gradient must be no less accurate than
  the eager backend's, both in the input's dtype; the route taken is checked (``NativeCE`` in the graph).
* the reference rows under autograd: ``gradcheck`` and ``gradgradcheck`` in float64 of every eager loss
  whose row functions update temporaries in place (the analytic gradient is differentiated again under
  ``create_graph=True``), and gradients with respect to targets, weights and ``pos_weight`` (autograd
  through the reference forward) against torch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch

HALF = [torch.bfloat16, torch.float16]

needs_native = pytest.mark.skipif(
    not _dispatch.native_available(), reason="compiled CPU kernel not built"
)


def _half_case(dtype, prob):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(257, 131, generator=g) * 4).to(dtype)
    if prob:
        t = torch.softmax(torch.randn(257, 131, generator=g), -1).to(dtype)
    else:
        t = torch.randint(0, 131, (257,), generator=g)
        t[::7] = -100
    w = (torch.rand(131, generator=g) + 0.5).to(dtype)
    return x, t, w


@needs_native
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0}])
def test_half_cross_entropy_takes_the_native_kernel(dtype, prob, reduction, opts):
    x, t, w = _half_case(dtype, prob)
    assert _dispatch.auto_backend("cross_entropy", x) == "native"
    kw = dict(weight=w, reduction=reduction, **opts)
    xa = x.clone().requires_grad_()
    ours = crossent.cross_entropy(xa, t, **kw)
    node = ours.grad_fn if reduction != "none" else ours.grad_fn.next_functions[0][0]
    assert type(node).__name__ == "NativeCEBackward"  # the route really taken
    xe = x.clone().requires_grad_()
    eager = crossent.cross_entropy(xe, t, backend="torch", **kw)
    assert ours.dtype == eager.dtype == torch.float32  # loss in float32, as on the eager path
    torch.testing.assert_close(ours, eager, rtol=2e-6, atol=2e-6)
    xo = x.double().requires_grad_()
    oracle = crossent.cross_entropy(
        xo,
        t.double() if prob else t,
        weight=w.double(),
        **{k: v for k, v in kw.items() if k != "weight"},
    )
    torch.testing.assert_close(ours.double(), oracle, rtol=1e-5, atol=1e-5)
    up = torch.linspace(0.5, 1.5, ours.numel()).reshape(ours.shape)
    ga = torch.autograd.grad(ours, xa, up)[0]
    ge = torch.autograd.grad(eager, xe, up)[0]
    go = torch.autograd.grad(oracle, xo, up.double())[0]
    assert ga.dtype == dtype
    assert (ga.double() - go).abs().max() <= (ge.double() - go).abs().max() + 1e-12


@needs_native
@pytest.mark.parametrize("dtype", HALF)
def test_half_cross_entropy_double_backward_on_native(dtype):
    x, t, w = _half_case(dtype, False)
    xa, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    la = crossent.cross_entropy(xa, t, w, label_smoothing=0.1)
    le = crossent.cross_entropy(xe, t, w, label_smoothing=0.1, backend="torch")
    assert type(la.grad_fn).__name__ == "NativeCEBackward"
    (ga,) = torch.autograd.grad(la, xa, create_graph=True)
    (ge,) = torch.autograd.grad(le, xe, create_graph=True)
    (ha,) = torch.autograd.grad((ga.float() ** 2).sum(), xa)
    (he,) = torch.autograd.grad((ge.float() ** 2).sum(), xe)
    assert ha.dtype == dtype
    torch.testing.assert_close(ha.float(), he.float(), rtol=2e-2, atol=1e-4)


@needs_native
def test_half_targets_needing_grad_stay_eager():
    x, t, _ = _half_case(torch.bfloat16, True)
    t = t.float().requires_grad_()
    x = x.requires_grad_()
    loss = crossent.cross_entropy(x, t)
    assert type(loss.grad_fn).__name__ == "RowLossBackward"
    loss.backward()
    assert t.grad is not None and x.grad.dtype == torch.bfloat16


def _x(*shape, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_()


def _probs(*shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_grad_and_gradgrad(reduction, weighted):
    x, t = _x(5, 4), _probs(5, 4)
    w = _probs(5, 4, seed=2) + 0.5 if weighted else None
    pw = (_probs(4, seed=3) + 0.5) if weighted else None
    fn = lambda x: crossent.binary_cross_entropy_with_logits(  # noqa: E731
        x, t, w, reduction=reduction, pos_weight=pw
    )
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_grad_and_gradgrad(gamma, alpha):
    x, t = _x(5, 4), _probs(5, 4)
    fn = lambda x: crossent.sigmoid_focal_loss(x, t, alpha, gamma, "mean")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_grad_and_gradgrad(log_target):
    x = torch.log_softmax(_x(5, 4), -1).detach().requires_grad_()
    q = torch.softmax(_x(5, 4, seed=4), -1).detach()
    if not log_target:
        q[0, 1] = 0.0  # 0·log 0 = 0 (a log target of -inf gives NaN, as in torch)
    t = q.log() if log_target else q
    fn = lambda x: crossent.kl_div(x, t, reduction="batchmean", log_target=log_target)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_nll_grad_and_gradgrad():
    x = _x(6, 4)
    y = torch.tensor([0, 3, -100, 1, 2, 3])
    w = _probs(4) + 0.5
    fn = lambda x: crossent.nll_loss(x, y, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, "vector"])
def test_focal_grad_and_gradgrad(prob, gamma, alpha):
    x = _x(6, 4)
    t = (
        torch.softmax(_x(6, 4, seed=5), -1).detach()
        if prob
        else torch.tensor([0, 3, -100, 1, 2, 3])
    )
    a = _probs(4, seed=6) + 0.25 if alpha else None
    w = _probs(4, seed=7) + 0.5
    fn = lambda x: crossent.focal_loss(x, t, a, gamma, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradients_wrt_targets_and_weights_match_torch():
    """Autograd through the reference forward (rows updated in place) gives torch's gradients."""
    x, t = _x(5, 4).detach(), _probs(5, 4).requires_grad_()
    w, pw = (
        (_probs(5, 4, seed=2) + 0.5).requires_grad_(),
        (_probs(4, seed=3) + 0.5).requires_grad_(),
    )
    ours = torch.autograd.grad(
        crossent.binary_cross_entropy_with_logits(x, t, w, pos_weight=pw), (t, w, pw)
    )
    theirs = torch.autograd.grad(
        F.binary_cross_entropy_with_logits(x, t, w.detach(), pos_weight=pw.detach()), t
    )[0]
    # torch differentiates neither weight nor pos_weight; closed forms of ∂ mean(w·ℓ):
    # ∂/∂w = ℓ / numel, ∂/∂pw = Σ_rows -w·t·logσ(x) / numel
    ell = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw.detach())
    d_pw = (-w.detach() * t.detach() * F.logsigmoid(x)).sum(0)
    for a, b in zip(ours, (theirs, ell / x.numel(), d_pw / x.numel())):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    lp = torch.log_softmax(_x(5, 4), -1).detach()
    for log_target in (False, True):
        q = torch.softmax(_x(5, 4, seed=4), -1).detach()
        q = (q.log() if log_target else q).requires_grad_()
        ours = torch.autograd.grad(
            crossent.kl_div(lp, q, reduction="sum", log_target=log_target), q
        )[0]
        theirs = torch.autograd.grad(F.kl_div(lp, q, reduction="sum", log_target=log_target), q)[0]
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not _dispatch.native_available(), reason="native kernel not built")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_route_keeps_no_widened_copy(reduction):
    """Between forward and backward the bf16 route keeps the caller's logits and at most one float32
    tensor of their shape (the gradient of a reduced loss), not a float32 copy of the logits too."""
    x = torch.randn(64, 300).bfloat16().requires_grad_(True)
    t = torch.randint(0, 300, (64,))
    saved = []

    def pack(tensor):
        saved.append((tensor.dtype, tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = crossent.cross_entropy(x, t, reduction=reduction)
    wide = [s for s in saved if s == (torch.float32, (64, 300))]
    assert len(wide) == (1 if reduction == "mean" else 0), saved
    assert (torch.bfloat16, (64, 300)) in saved
    up = torch.randn(64) if reduction == "none" else None
    (g,) = torch.autograd.grad(loss, x, up)
    x64 = x.detach().double().requires_grad_(True)
    (g64,) = torch.autograd.grad(
        F.cross_entropy(x64, t, reduction=reduction), x64, None if up is None else up.double()
    )
    assert g.dtype == torch.bfloat16
    torch.testing.assert_close(g.double(), g64, rtol=1e-2, atol=1e-4)


def test_numpy_focal_scalar_array_alpha():
    """A 0-d array alpha (or a NumPy scalar) means the same as the float."""
    import numpy as np

    import crossent.numpy as cn

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), np.array([0, 2, 3])
    want = cn.focal_loss(x, y, 0.25)
    for alpha in (np.float64(0.25), np.array(0.25)):
        np.testing.assert_allclose(cn.focal_loss(x, y, alpha), want, rtol=1e-15)
        np.testing.assert_allclose(
            cn.focal_loss_grad(x, y, alpha), cn.focal_loss_grad(x, y, 0.25), rtol=1e-15
        )


def test_wrapper_tensor_subclass_reaches_the_eager_backend():
    """Tensor subclasses without a storage of their own (wrapper subclasses) still run on the eager path."""
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 3])
    out = crossent.cross_entropy(two_tensor.TwoTensor(x, x.clone()), y, backend="torch")
    torch.testing.assert_close(out.a, F.cross_entropy(x, y))


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_target_gradient_where_the_target_is_zero(gamma):
    """∂ℓ/∂q_c = -a_c (1 - p_c)^γ log p_c also where q_c = 0 (γ = 0: exactly cross-entropy's)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    q = torch.softmax(torch.randn(4, 6, generator=g, dtype=torch.float64), 1)
    q[:, ::2] = 0.0
    q = (q / q.sum(1, keepdim=True)).requires_grad_(True)
    (got,) = torch.autograd.grad(crossent.focal_loss(x, q, gamma=gamma, backend="torch"), q)
    logp = torch.log_softmax(x, 1)
    want = -((1 - logp.exp()) ** gamma) * logp / x.shape[0]  # the mean over rows
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    if gamma == 0:
        qq = q.detach().requires_grad_(True)
        (ref,) = torch.autograd.grad(F.cross_entropy(x, qq), qq)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
