"""Function transforms: forward-mode AD, ``torch.func.grad``, per-sample gradients (``vmap(grad)``) and
Hessians (``jacfwd(jacrev)``) of every loss, on every backend that runs on the CPU.

Oracle: the same transform applied to torch's own function (``torch.nn.functional``), in float64; for
crossent's extras (focal losses, entropy) a composition of torch ops written here from the formulas.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import grad, jacfwd, jacrev, jvp, vmap

import crossent

N, C = 3, 4
gen = torch.Generator().manual_seed(0)
X = torch.randn(N, C, generator=gen, dtype=torch.float64)
X3 = torch.randn(N, C, 2, generator=gen, dtype=torch.float64)
Y = torch.tensor([0, 3, 1])
Y_IGN = torch.tensor([0, -100, 1])
Y3 = torch.tensor([[0, 3], [1, 2], [-100, 0]])
Q = torch.softmax(torch.randn(N, C, generator=gen, dtype=torch.float64), -1)
W = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5
P = torch.rand(N, C, generator=gen, dtype=torch.float64) * 0.9 + 0.05
T = torch.rand(N, C, generator=gen, dtype=torch.float64)
LOGQ = torch.log_softmax(X, -1)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _focal_oracle(x: torch.Tensor, y: torch.Tensor, gamma: float, reduction: str) -> torch.Tensor:
    logp = torch.log_softmax(x, 1)
    logp_y = logp.gather(1, y[:, None])[:, 0]
    rows = -((1 - logp_y.exp()) ** gamma) * logp_y
    return rows if reduction == "none" else rows.sum() if reduction == "sum" else rows.mean()


def _sigmoid_focal_oracle(x: torch.Tensor, t: torch.Tensor, reduction: str) -> torch.Tensor:
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = (0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def _entropy_oracle(x: torch.Tensor, reduction: str) -> torch.Tensor:
    rows = -(torch.softmax(x, 1) * torch.log_softmax(x, 1)).sum(1)
    return rows if reduction == "none" else rows.sum() if reduction == "sum" else rows.mean()


# (id, input, target, crossent's loss(x, t, reduction, backend), the oracle(x, t, reduction), backends)
CE_BACKENDS = ("auto", "torch", "native")
CASES: list[tuple[str, torch.Tensor, torch.Tensor, Callable, Callable, tuple[str, ...]]] = [
    (
        "ce-index-weight",
        X,
        Y_IGN,
        lambda x, t, r, b: crossent.cross_entropy(x, t, W, reduction=r, backend=b),
        lambda x, t, r: F.cross_entropy(x, t, W, reduction=r),
        CE_BACKENDS,
    ),
    (
        "ce-index-smoothing",
        X,
        Y,
        lambda x, t, r, b: crossent.cross_entropy(
            x, t, reduction=r, label_smoothing=0.2, backend=b
        ),
        lambda x, t, r: F.cross_entropy(x, t, reduction=r, label_smoothing=0.2),
        CE_BACKENDS,
    ),
    (
        "ce-spatial",
        X3,
        Y3,
        lambda x, t, r, b: crossent.cross_entropy(x, t, W, reduction=r, backend=b),
        lambda x, t, r: F.cross_entropy(x, t, W, reduction=r),
        CE_BACKENDS,
    ),
    (
        "ce-prob-weight-smoothing",
        X,
        Q,
        lambda x, t, r, b: crossent.cross_entropy(
            x, t, W, reduction=r, label_smoothing=0.1, backend=b
        ),
        lambda x, t, r: F.cross_entropy(x, t, W, reduction=r, label_smoothing=0.1),
        CE_BACKENDS,
    ),
    (
        "nll-weight",
        LOGQ,
        Y_IGN,
        lambda x, t, r, b: crossent.nll_loss(x, t, W, reduction=r),
        lambda x, t, r: F.nll_loss(x, t, W, reduction=r),
        ("auto",),
    ),
    (
        "bce-weight",
        P,
        T,
        lambda x, t, r, b: crossent.binary_cross_entropy(x, t, W, reduction=r),
        lambda x, t, r: F.binary_cross_entropy(x, t, W, reduction=r),
        ("auto",),
    ),
    (
        "bce-logits-pos-weight",
        X,
        T,
        lambda x, t, r, b: crossent.binary_cross_entropy_with_logits(
            x, t, W, reduction=r, pos_weight=W, backend=b
        ),
        lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, W, reduction=r, pos_weight=W),
        ("auto", "torch"),
    ),
    (
        "kl-div",
        LOGQ,
        Q,
        lambda x, t, r, b: crossent.kl_div(x, t, reduction=r),
        lambda x, t, r: F.kl_div(x, t, reduction=r),
        ("auto",),
    ),
    (
        "kl-div-log-target",
        LOGQ,
        Q.log(),
        lambda x, t, r, b: crossent.kl_div(x, t, reduction=r, log_target=True),
        lambda x, t, r: F.kl_div(x, t, reduction=r, log_target=True),
        ("auto",),
    ),
    (
        "focal",
        X,
        Y,
        lambda x, t, r, b: crossent.focal_loss(x, t, gamma=2.0, reduction=r, backend=b),
        lambda x, t, r: _focal_oracle(x, t, 2.0, r),
        ("auto", "torch"),
    ),
    (
        "sigmoid-focal",
        X,
        T,
        lambda x, t, r, b: crossent.sigmoid_focal_loss(x, t, reduction=r, backend=b),
        lambda x, t, r: _sigmoid_focal_oracle(x, t, r),
        ("auto", "torch"),
    ),
    (
        "entropy",
        X,
        Y,  # (unused)
        lambda x, t, r, b: crossent.entropy(x, reduction=r),
        lambda x, t, r: _entropy_oracle(x, r),
        ("auto",),
    ),
]


def _forward_ad(f: Loss, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with fwAD.dual_level():
        return fwAD.unpack_dual(f(fwAD.make_dual(x, torch.ones_like(x)), t)).tangent


def _func_jvp(f: Loss, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tangent = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).reshape(x.shape)
    return jvp(lambda a: f(a, t), (x,), (tangent,))[1]


def _grad(f: Loss, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return grad(lambda a: f(a, t).sum())(x)


def _per_sample_grad(f: Loss, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return vmap(grad(lambda a, b: f(a[None], b[None]).sum()))(x, t)


def _hessian(f: Loss, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return jacfwd(jacrev(lambda a: f(a, t).sum()))(x)


TRANSFORMS = {
    "forward-ad": _forward_ad,
    "jvp": _func_jvp,
    "grad": _grad,
    "vmap-grad": _per_sample_grad,
    "hessian": _hessian,
}

PARAMS = [
    pytest.param(case, backend, id=f"{case[0]}-{backend}") for case in CASES for backend in case[5]
]


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_transform_matches_torch(case: tuple, backend: str, reduction: str, transform: str) -> None:
    _, x, t, ours, oracle, _ = case
    apply = TRANSFORMS[transform]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning, on both sides
        expected = apply(lambda a, b: oracle(a, b, reduction), x, t)
        got = apply(lambda a, b: ours(a, b, reduction, backend), x, t)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)


def test_modules_under_vmap_grad() -> None:
    ours, theirs = crossent.nn.CrossEntropyLoss(weight=W), torch.nn.CrossEntropyLoss(weight=W)
    for loss in (ours, theirs):
        loss.train()
    got = _per_sample_grad(ours, X, Y)
    torch.testing.assert_close(got, _per_sample_grad(theirs, X, Y), rtol=1e-7, atol=1e-10)


def test_float32_grad_and_forward_ad() -> None:
    x, t = X.float(), Y
    for apply in (_grad, _forward_ad):
        got = apply(lambda a, b: crossent.cross_entropy(a, b), x, t)
        torch.testing.assert_close(got, apply(lambda a, b: F.cross_entropy(a, b), x, t))


def test_plain_call_keeps_its_backend() -> None:
    """Outside transforms the fast path is unchanged: the native kernel still answers for CPU tensors."""
    from crossent import _dispatch
    from crossent._transforms import transforms_active

    assert not transforms_active()
    if _dispatch.native_available():
        assert _dispatch.resolve("cross_entropy", "auto", X) is not None
    seen = []

    def f(a: torch.Tensor) -> torch.Tensor:
        seen.append(_dispatch.resolve("cross_entropy", "auto", a))
        return crossent.cross_entropy(a, Y)

    grad(f)(X)
    assert seen == [None]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (crossent.cross_entropy, F.cross_entropy),
        (crossent.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
    ],
    ids=["cross_entropy", "bce_with_logits"],
)
def test_grad_with_respect_to_target_and_weight(ours: Callable, theirs: Callable) -> None:
    """Soft targets and weights are differentiable under transforms too (argnums over all three)."""
    t = Q if ours is crossent.cross_entropy else T

    def loss(f: Callable) -> Callable:
        return lambda x, t, w: f(x, t, w, reduction="sum")

    got = grad(loss(ours), argnums=(0, 1, 2))(X, t, W)
    expected = grad(loss(theirs), argnums=(0, 1, 2))(X, t, W)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-10)
