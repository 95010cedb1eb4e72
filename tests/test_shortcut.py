"""Plain small CPU calls go straight to PyTorch's kernel (crossent._shortcut); every other call, and
every failing one, takes the checked path: same values, and crossent's errors naming the argument."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch
from crossent._contract import CrossentIndexError, CrossentValueError
from crossent._shortcut import plain_index_call

x = torch.randn(5, 4, dtype=torch.float64)
y = torch.tensor([0, 3, 1, 2, 3])


def test_plain_calls_are_recognised():
    assert plain_index_call("cross_entropy", x, y, None, -100, 0.0, "mean")
    assert plain_index_call("cross_entropy", x.float(), y, torch.ones(4), 1, 1, "none")
    big, ybig = torch.randn(512, 512), torch.zeros(512, dtype=torch.long)
    native = _dispatch.native_available()
    assert plain_index_call("cross_entropy", big, ybig, None, -100, 0.0, "mean") != native
    assert plain_index_call("nll_loss", big, ybig, None, -100, 0.0, "mean")  # aten at every size
    # images: those auto gives to PyTorch's kernel (few classes, or small)
    yimg = torch.zeros(2, 128, 128, dtype=torch.long)
    few = torch.randn(2, 3, 128, 128)
    assert plain_index_call("cross_entropy", few, yimg, None, -100, 0.0, "sum")
    many = torch.randn(2, 16, 128, 128)
    assert plain_index_call("cross_entropy", many, yimg, None, -100, 0.0, "sum") != native


class _Sub(torch.Tensor):
    pass


@pytest.mark.parametrize(
    "args",
    [
        (x.as_subclass(_Sub), y, None, -100, 0.0, "mean"),  # a tensor subclass
        (x.half(), y, None, -100, 0.0, "mean"),  # half precision (crossent returns float32)
        (x[:, :, None], y, None, -100, 0.0, "mean"),  # (N, C, d) logits, (N,) targets
        (x, y.int(), None, -100, 0.0, "mean"),  # int32 targets: torch's dtype error, ours
        (x, torch.rand(5, 4, dtype=torch.float64), None, -100, 0.0, "mean"),  # probabilities
        (x, y, torch.ones(4), -100, 0.0, "mean"),  # float32 weight for float64 logits
        (x, y, torch.ones(4, dtype=torch.float64, requires_grad=True), -100, 0.0, "mean"),
        (x, y, None, 1.0, 0.0, "mean"),  # a float ignore_index
        (x, y, None, True, 0.0, "mean"),
        (x, y, None, -100, -0.1, "mean"),  # torch takes it as 0, crossent raises
        (x, y, None, -100, float("nan"), "mean"),
        (x, y, None, -100, True, "mean"),
        (x, y, None, -100, 0.0, "batchmean"),
    ],
)
def test_other_calls_are_not_plain(args):
    assert not plain_index_call("cross_entropy", *args)


@pytest.mark.parametrize("function", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize(
    "target,weight,match,error",
    [
        (
            torch.tensor([0, 4, 1, 2, 3]),
            None,
            r"Target 4 is out of bounds\. \(argument 'target'\)",
            CrossentIndexError,
        ),
        (
            torch.tensor([0, -1, 1, 2, 3]),
            None,
            r"Target -1 is out of bounds\. \(argument 'target'\)",
            CrossentIndexError,
        ),
        (torch.tensor([0, 1, 2]), None, r"batch_size.*argument 'target'", CrossentValueError),
        (y, torch.ones(3, dtype=torch.float64), r"argument 'weight'", CrossentValueError),
    ],
)
def test_failing_plain_calls_raise_crossents_errors(function, target, weight, match, error):
    with pytest.raises(Exception) as theirs:
        getattr(F, function)(x, target, weight)
    with pytest.raises(error, match=match) as ours:
        getattr(crossent, function)(x, target, weight)
    assert isinstance(
        ours.value, theirs.type
    )  # still what torch raises (IndexError, ValueError, …)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("ignore_index,label_smoothing", [(-100, 0.0), (3, 0.2), (0, 1.0)])
def test_plain_calls_match_torch_with_gradients(reduction, ignore_index, label_smoothing):
    weight = torch.rand(4, dtype=torch.float64) + 0.5
    for function, extra in [
        ("cross_entropy", {"label_smoothing": label_smoothing}),
        ("nll_loss", {}),
    ]:
        ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
        kwargs = {"ignore_index": ignore_index, "reduction": reduction, **extra}
        ours = getattr(crossent, function)(ours_x, y, weight, **kwargs)
        theirs = getattr(F, function)(theirs_x, y, weight, **kwargs)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        ours.sum().backward()
        theirs.sum().backward()
        torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=0, atol=0)


def test_plain_call_traces_under_compile():
    xs = torch.randn(6, 5, requires_grad=True)
    ys = torch.tensor([0, 1, 2, 3, 4, -100])
    compiled = torch.compile(
        lambda v: crossent.cross_entropy(v, ys), fullgraph=True, backend="eager"
    )
    torch.testing.assert_close(compiled(xs), F.cross_entropy(xs, ys))


def test_plain_image_calls_match_torch_and_fail_with_crossents_errors():
    img = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 5, 4))
    t[0, 0, 0] = -100
    w = torch.rand(3, dtype=torch.float64) + 0.5
    ours_x, theirs_x = img.clone().requires_grad_(), img.clone().requires_grad_()
    ours = crossent.cross_entropy(ours_x, t, w, label_smoothing=0.1, reduction="none")
    theirs = F.cross_entropy(theirs_x, t, w, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=0, atol=0)
    bad = t.clone()
    bad[1, 2, 3] = 3
    with pytest.raises(
        CrossentIndexError, match=r"Target 3 is out of bounds\. \(argument 'target'\)"
    ):
        crossent.cross_entropy(img, bad)
    with pytest.raises(CrossentValueError, match="argument 'target'"):
        crossent.cross_entropy(img, t[:, :4])
