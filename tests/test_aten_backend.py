"""The "aten" backend (PyTorch's own kernels) and the rule that picks it; values against torch itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch
from crossent._backends import aten
from crossent._contract import ce_options


def test_auto_picks_aten_for_small_calls_and_images():
    small = torch.randn(32, 10)
    assert _dispatch.choose("cross_entropy", "auto", small, aten=True) == "aten"
    images = torch.randn(2, 2, 64, 64)
    assert _dispatch.choose("cross_entropy", "auto", images, aten=True) == "aten"
    few_classes = torch.randn(2, _dispatch.IMAGE_MIN_CLASSES - 1, 128, 128)
    assert _dispatch.choose("cross_entropy", "auto", few_classes, aten=True) == "aten"
    # larger images of many classes: the native kernel reads them where they lie
    many_classes = torch.randn(2, _dispatch.IMAGE_MIN_CLASSES, 128, 128)
    want = "native" if _dispatch.native_available() else "aten"
    assert _dispatch.choose("cross_entropy", "auto", many_classes, aten=True) == want
    large = torch.randn(512, 1000)
    want = "native" if _dispatch.native_available() else "aten"
    assert _dispatch.choose("cross_entropy", "auto", large, aten=True) == want
    # a call PyTorch's kernel does not compute identically never goes there
    assert _dispatch.choose("cross_entropy", "auto", small, aten=False) != "aten"


def test_aten_takes_only_what_pytorch_computes_identically():
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert aten.takes_categorical(x, y, None, ce_options(), False)
    assert not aten.takes_categorical(x, y, None, ce_options(z_loss=1e-3), False)
    assert not aten.takes_categorical(x, y, None, ce_options(softcap=5.0), False)
    assert not aten.takes_categorical(x.half(), y, None, ce_options(), False)
    assert not aten.takes_categorical(x, y, torch.rand(5, dtype=torch.float64), ce_options(), False)
    q = torch.rand(4, 5, requires_grad=True)
    assert not aten.takes_categorical(
        x, q, None, ce_options(), True
    )  # d/d target stays with crossent


def test_forcing_aten_for_an_extra_option_raises():
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="'aten'"):
        crossent.cross_entropy(x, y, z_loss=1e-3, backend="aten")
    with pytest.raises(ValueError, match="no aten kernel for focal_loss"):
        crossent.focal_loss(x, y, backend="aten")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(32, 10), (3, 4, 5, 6), (7,)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_forced_aten_equals_torch_and_the_eager_backend(dtype, shape, reduction):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype)
    c = shape[0] if len(shape) == 1 else shape[1]
    t_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    y = torch.randint(0, c, t_shape, generator=g)
    w = torch.rand(c, generator=g, dtype=dtype) + 0.5
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
    xa, xb, xc = (x.clone().requires_grad_() for _ in range(3))
    a = crossent.cross_entropy(xa, y, **kw, backend="aten")
    b = F.cross_entropy(xb, y, **kw)
    c_ = crossent.cross_entropy(xc, y, **kw, backend="torch")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c_)
    up = torch.rand_like(a) + 0.5
    ga, gb, gc = (torch.autograd.grad(v, s, up)[0] for v, s in ((a, xa), (b, xb), (c_, xc)))
    torch.testing.assert_close(ga, gb, rtol=0, atol=0)
    torch.testing.assert_close(ga, gc)


def test_half_precision_keeps_the_float32_loss_contract():
    x = torch.randn(16, 4, dtype=torch.bfloat16)
    y = torch.randint(0, 4, (16,))
    assert crossent.cross_entropy(x, y).dtype == torch.float32
    assert crossent.nll_loss(x.float().log_softmax(1).to(torch.bfloat16), y).dtype == torch.float32


def test_the_other_drop_ins_on_aten_equal_torch():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(6, 5, generator=g).log_softmax(1)
    y = torch.randint(0, 5, (6,), generator=g)
    torch.testing.assert_close(crossent.nll_loss(logp, y), F.nll_loss(logp, y), rtol=0, atol=0)
    p, t = torch.rand(6, 5, generator=g), torch.rand(6, 5, generator=g)
    torch.testing.assert_close(
        crossent.binary_cross_entropy(p, t), F.binary_cross_entropy(p, t), rtol=0, atol=0
    )
    z, pw = torch.randn(6, 5, generator=g), torch.rand(5, generator=g) + 0.5
    torch.testing.assert_close(
        crossent.binary_cross_entropy_with_logits(z, t, pos_weight=pw),
        F.binary_cross_entropy_with_logits(z, t, pos_weight=pw),
        rtol=0,
        atol=0,
    )
    q = torch.rand(6, 5, generator=g).softmax(1)
    for reduction in ("batchmean", "sum", "none"):
        torch.testing.assert_close(
            crossent.kl_div(logp, q, reduction=reduction),
            F.kl_div(logp, q, reduction=reduction),
            rtol=0,
            atol=0,
        )
