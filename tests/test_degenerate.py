"""Degenerate sizes (zero classes, zero rows, zero spatial size) give torch's values, for every target kind.

Oracle: torch.nn.functional itself, called on the same tensors: the same value (NaN where torch gives NaN),
dtype, shape and sign of zero, the same gradient shape, or an error of a compatible class whose message
contains torch's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import crossent

SHAPES = {
    "no-classes": (5, 0),
    "no-rows": (0, 4),
    "nothing": (0, 0),
    "no-spatial": (2, 3, 0),
    "no-classes-spatial": (2, 0, 3),
    "no-classes-2d-spatial": (2, 0, 3, 2),
    "no-rows-spatial": (0, 3, 2),
    "1d-no-classes": (0,),
}


def _index_target(shape: tuple[int, ...], fill: int) -> torch.Tensor:
    loss_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    return torch.full(loss_shape, fill, dtype=torch.long)


def _outcome(f: Callable[[], torch.Tensor]) -> tuple[torch.Tensor | None, BaseException | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f(), None
    except Exception as e:  # noqa: BLE001 - compared with torch's below
        return None, e


def _agree(ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor]) -> None:
    expected, their_error = _outcome(theirs)
    got, our_error = _outcome(ours)
    if their_error is not None:
        assert our_error is not None, f"torch raises {their_error!r}, crossent returns {got}"
        assert isinstance(our_error, type(their_error)), (our_error, their_error)
        assert str(their_error).splitlines()[0] in str(our_error)
        return
    assert our_error is None, f"torch returns {expected}, crossent raises {our_error!r}"
    assert got is not None and expected is not None
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)
    zeros = expected == 0
    assert torch.equal(torch.signbit(got[zeros]), torch.signbit(expected[zeros])), (got, expected)


REDUCTIONS = ("mean", "sum", "none")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weight"])
@pytest.mark.parametrize("target", ["index", "ignored", "prob"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_cross_entropy(
    shape: tuple[int, ...], smoothing: float, target: str, weighted: bool, reduction: str
) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    classes = shape[1] if len(shape) > 1 else shape[0]
    w = torch.rand(classes, dtype=torch.float64) if weighted else None
    if target == "prob":
        t = torch.rand(shape, dtype=torch.float64)
    else:
        t = _index_target(shape, 0 if target == "index" else -100)
    kwargs = {"weight": w, "reduction": reduction, "label_smoothing": smoothing}
    _agree(lambda: crossent.cross_entropy(x, t, **kwargs), lambda: F.cross_entropy(x, t, **kwargs))
    if target != "prob":
        nll = {"weight": w, "reduction": reduction}
        _agree(lambda: crossent.nll_loss(x, t, **nll), lambda: F.nll_loss(x, t, **nll))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", ["index", "prob"])
@pytest.mark.parametrize("shape", [(5, 0), (0, 4), (0, 0), (2, 3, 0)], ids=str)
def test_gradient_shapes(shape: tuple[int, ...], target: str, reduction: str) -> None:
    t = torch.rand(shape, dtype=torch.float64) if target == "prob" else _index_target(shape, -100)
    grads = []
    for f in (crossent.cross_entropy, F.cross_entropy):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        f(x, t, reduction=reduction).sum().backward()
        grads.append(x.grad)
    assert grads[0] is not None and grads[1] is not None
    assert grads[0].shape == grads[1].shape


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_elementwise_losses(shape: tuple[int, ...], reduction: str) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    t = torch.rand(shape, dtype=torch.float64)
    p = torch.sigmoid(x)
    if reduction != "batchmean":
        for name, a in (("binary_cross_entropy", p), ("binary_cross_entropy_with_logits", x)):
            ours, theirs = getattr(crossent, name), getattr(F, name)
            _agree(
                lambda: ours(a, t, reduction=reduction), lambda: theirs(a, t, reduction=reduction)
            )
    _agree(
        lambda: crossent.kl_div(x, t, reduction=reduction),
        lambda: F.kl_div(x, t, reduction=reduction),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5, 0), (0, 4), (0, 0), (2, 3, 0)], ids=str)
def test_focal_loss_with_gamma_zero_is_cross_entropy(
    shape: tuple[int, ...], reduction: str
) -> None:
    """crossent's extra: the focal loss at γ = 0 is torch's cross-entropy, degenerate sizes included."""
    x = torch.randn(shape, dtype=torch.float64)
    t = torch.rand(shape, dtype=torch.float64)
    _agree(
        lambda: crossent.focal_loss(x, t, gamma=0.0, reduction=reduction),
        lambda: F.cross_entropy(x, t, reduction=reduction),
    )


def test_modules_zero_classes() -> None:
    x, t = torch.rand(5, 0), torch.rand(5, 0)
    for reduction, expected in (("mean", math.nan), ("sum", -0.0)):
        ours = crossent.nn.CrossEntropyLoss(reduction=reduction)(x, t)
        theirs = torch.nn.CrossEntropyLoss(reduction=reduction)(x, t)
        torch.testing.assert_close(ours, theirs, equal_nan=True)
        assert math.copysign(1, ours.item()) == math.copysign(1, expected) or math.isnan(expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_entropy(shape: tuple[int, ...], reduction: str) -> None:
    """crossent's extra; oracle: -(p · log p) summed over the class axis, reduced, in torch."""
    x = torch.randn(shape, dtype=torch.float64)
    axis = 0 if x.dim() == 1 else 1

    def oracle() -> torch.Tensor:
        rows = -(torch.softmax(x, axis) * torch.log_softmax(x, axis)).sum(axis)
        return rows if reduction == "none" else rows.sum() if reduction == "sum" else rows.mean()

    _agree(lambda: crossent.entropy(x, reduction=reduction), oracle)
