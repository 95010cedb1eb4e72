"""Fused linear cross-entropy (issue 4): parity with the unfused composition, gradcheck, the memory bound.

Oracle: ``crossent.cross_entropy(F.linear(input, W, b), target, ...)`` (the unfused path, itself tested
against the NumPy reference), float64 unless a test says otherwise; bf16 against a float64 oracle on the
same rounded inputs. Both chunk forms run: the factored CPU form (float32/float64, index targets, no
softcap) and the explicit form (softcap, probability targets, half precision), the latter with and
without the compiled CPU kernel.
"""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent._backends import linear_ce
from oracle import count_calls

V, D = 23, 8


@pytest.fixture(params=["auto", "torch"], ids=["native", "torch-ops"])
def native(request):
    """The backend: "auto" runs the explicit chunk form through the compiled kernel (when built),
    "torch" through torch ops."""
    return request.param


def lce(backend):
    """``crossent.linear_cross_entropy`` with ``backend`` fixed."""
    return functools.partial(crossent.linear_cross_entropy, backend=backend)


def rows(k, v=V, d=D, nbytes=8):
    """A workspace of k rows per chunk: the (k, V) buffer and the three (k, D) operands it must hold."""
    return k * (v + 3 * d) * nbytes


def unfused(x, w, t, b=None, **kw):
    weight = kw.pop("weight", None)
    logits = F.linear(x, w, b)
    cls = logits.shape[-1]
    lead = t.shape if logits.dim() - 1 == t.dim() else t.shape[:-1]
    tt = t.reshape(-1) if logits.dim() - 1 == t.dim() else t.reshape(-1, cls)
    out = crossent.cross_entropy(logits.reshape(-1, cls), tt, weight, **kw)
    return out.reshape(lead) if kw.get("reduction") == "none" else out


def grads_of(fn, inputs, grad_output=None):
    loss = fn()
    go = torch.ones_like(loss) if grad_output is None else grad_output
    return loss.detach(), torch.autograd.grad(loss, inputs, go)


def make(n=37, dtype=torch.float64, bias=False, lead=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if lead is None else lead
    x = torch.randn(*shape, D, generator=g, dtype=dtype).requires_grad_(True)
    w = (torch.randn(V, D, generator=g, dtype=dtype) * 0.7).requires_grad_(True)
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, V, shape, generator=g)
    return x, w, b, t


# One option set per reason; crossed with reduction, bias and the two chunk forms below.
OPTIONS = {
    "plain": {},
    "weight+ignore": dict(weight="rand", ignore=True),
    "smoothing+weight": dict(weight="rand", label_smoothing=0.1),
    "smoothing=1": dict(label_smoothing=1.0),
    "zloss+ignore": dict(z_loss=1e-2, ignore=True),
    "softcap": dict(softcap=2.5),  # explicit form; small cap so tanh saturates
    "everything": dict(weight="rand", ignore=True, label_smoothing=0.2, z_loss=1e-2, softcap=4.0),
    "ignore_index=0": dict(ignore_index=0),  # a valid class can be the ignored one
    "zero-weights+zloss": dict(weight="zeros-some", z_loss=0.05),  # rows with a zero coefficient
    "normalize_by": dict(normalize_by=7.0, label_smoothing=0.1),
}


def _options(spec, t, dtype, seed=1):
    kw = {k: v for k, v in spec.items() if k not in ("weight", "ignore")}
    g = torch.Generator().manual_seed(seed)
    if spec.get("weight") == "rand":
        kw["weight"] = torch.rand(V, generator=g, dtype=dtype) + 0.1
    elif spec.get("weight") == "zeros-some":
        w = torch.rand(V, generator=g, dtype=dtype)
        w[::3] = 0.0
        kw["weight"] = w
    if spec.get("ignore"):
        t = t.clone()
        t.view(-1)[::4] = -100
    return kw, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_parity_option_grid(name, bias, reduction, native):
    x, w, b, t = make(bias=bias)
    kw, t = _options(OPTIONS[name], t, x.dtype)
    kw["reduction"] = reduction
    if "normalize_by" in kw and reduction != "mean":
        kw.pop("normalize_by")
    inputs = [x, w] + ([b] if bias else [])
    # 5 rows per chunk: 37 rows → 7 full chunks + 2 rows (chunk size does not divide N)
    fused = lambda: lce(native)(  # noqa: E731
        x, w, t, linear_bias=b, workspace_bytes=rows(5), **kw
    )
    ref = lambda: unfused(x, w, t, b, **kw)  # noqa: E731
    go = (
        torch.randn(t.shape, dtype=x.dtype)
        if reduction == "none"
        else torch.tensor(1.7, dtype=x.dtype)
    )
    l1, g1 = grads_of(fused, inputs, go)
    l0, g0 = grads_of(ref, inputs, go)
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("workspace", [1, rows(3), 1 << 20], ids=["1-row", "3-rows", "one-chunk"])
def test_parity_batch_shape_and_chunks(reduction, workspace, native):
    """(B, T, D) inputs with (B, T) targets; chunks of 1 row, 3 rows (not dividing 15) and everything."""
    x, w, b, t = make(lead=(3, 5), bias=True)
    kw, t = _options(OPTIONS["everything"], t, x.dtype)
    kw["reduction"] = reduction
    inputs = [x, w, b]
    go = torch.randn(t.shape, dtype=x.dtype) if reduction == "none" else None
    l1, g1 = grads_of(
        lambda: lce(native)(x, w, t, linear_bias=b, workspace_bytes=workspace, **kw), inputs, go
    )
    l0, g0 = grads_of(lambda: unfused(x, w, t, b, **kw), inputs, go)
    assert l1.shape == l0.shape == ((3, 5) if reduction == "none" else ())
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets(reduction, native):
    x, w, b, _ = make(n=11, bias=True)
    g = torch.Generator().manual_seed(3)
    q = torch.softmax(torch.randn(11, V, generator=g, dtype=x.dtype), -1)
    kw = dict(
        reduction=reduction,
        label_smoothing=0.1,
        z_loss=1e-2,
        softcap=3.0,
        weight=torch.rand(V, generator=g, dtype=x.dtype),
    )
    inputs = [x, w, b]
    go = torch.randn(11, dtype=x.dtype) if reduction == "none" else None
    l1, g1 = grads_of(
        lambda: lce(native)(x, w, q, linear_bias=b, workspace_bytes=rows(4), **kw), inputs, go
    )
    l0, g0 = grads_of(lambda: unfused(x, w, q, b, **kw), inputs, go)
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)


def test_all_ignored():
    """mean → NaN (0/0) with all-zero gradients, sum → 0, none → zeros (PyTorch's conventions)."""
    x, w, b, t = make(n=9, bias=True)
    t = torch.full_like(t, -100)
    for reduction in ("mean", "sum", "none"):
        l1, g1 = grads_of(
            lambda: crossent.linear_cross_entropy(x, w, t, linear_bias=b, reduction=reduction),
            [x, w, b],
        )
        l0, g0 = grads_of(lambda: unfused(x, w, t, b, reduction=reduction), [x, w, b])
        torch.testing.assert_close(l1, l0, equal_nan=True)
        for a, c in zip(g1, g0):
            torch.testing.assert_close(a, c)
            assert torch.count_nonzero(a) == 0
    assert torch.isnan(crossent.linear_cross_entropy(x, w, t))


def test_empty_batch():
    x, w, _, t = make(n=0)
    assert torch.isnan(crossent.linear_cross_entropy(x, w, t))
    assert crossent.linear_cross_entropy(x, w, t, reduction="none").shape == (0,)
    loss = crossent.linear_cross_entropy(x, w, t, reduction="sum")
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.count_nonzero(w.grad) == 0


@pytest.mark.parametrize("opts", ["plain", "everything", "smoothing+weight"])
def test_float32_parity(opts, native):
    torch.manual_seed(0)
    n, d, v = 300, 64, 1000
    x = torch.randn(n, d, requires_grad=True)
    w = (torch.randn(v, d) / d**0.5).requires_grad_(True)
    t = torch.randint(0, v, (n,))
    spec = dict(OPTIONS[opts])
    kw = {k: val for k, val in spec.items() if k not in ("weight", "ignore")}
    if spec.get("weight"):
        kw["weight"] = torch.rand(v) + 0.1
    if spec.get("ignore"):
        t[::4] = -100
    l1, g1 = grads_of(
        lambda: lce(native)(x, w, t, workspace_bytes=rows(37, v, 64, 4), **kw), [x, w]
    )
    l0, g0 = grads_of(lambda: unfused(x, w, t, **kw), [x, w])
    torch.testing.assert_close(l1, l0, rtol=3e-5, atol=1e-6)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, rtol=3e-5, atol=1e-7)


@pytest.mark.parametrize("softcap", [None, 20.0])
def test_bfloat16_no_less_accurate_than_unfused(softcap, native):
    """bf16 inputs: loss (float32) and gradients vs a float64 oracle on the same rounded inputs, no worse
    than the unfused bf16 composition (which rounds the logits to bf16 exactly as the fused path does)."""
    torch.manual_seed(0)
    n, d, v = 200, 64, 700
    x = torch.randn(n, d).bfloat16().requires_grad_(True)
    w = (torch.randn(v, d) / d**0.5).bfloat16().requires_grad_(True)
    b = torch.randn(v).bfloat16().requires_grad_(True)
    t = torch.randint(0, v, (n,))
    t[::7] = -100
    kw = dict(label_smoothing=0.1, z_loss=1e-3, softcap=softcap)
    x64, w64, b64 = (a.detach().double().requires_grad_(True) for a in (x, w, b))
    l_ref, g_ref = grads_of(lambda: unfused(x64, w64, t, b64, **kw), [x64, w64, b64])
    l1, g1 = grads_of(
        lambda: lce(native)(x, w, t, linear_bias=b, workspace_bytes=50 * v * 6, **kw), [x, w, b]
    )
    l0, g0 = grads_of(lambda: unfused(x, w, t, b, **kw), [x, w, b])
    assert l1.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in g1)

    def err(a, ref):
        return float((a.double() - ref).norm() / ref.norm())

    assert err(l1, l_ref) <= 1.5 * err(l0, l_ref) + 1e-6
    for a, c, r in zip(g1, g0, g_ref):
        assert err(a, r) <= 1.5 * err(c, r) + 1e-3


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck(reduction, native):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, -100, 6, 3, 3])
    kw = dict(
        weight=torch.rand(7, generator=g, dtype=torch.float64) + 0.1,
        label_smoothing=0.2,
        z_loss=1e-2,
        softcap=4.0,
        reduction=reduction,
    )

    def fn(x_, w_, b_):
        return lce(native)(x_, w_, t, linear_bias=b_, workspace_bytes=2 * 7 * 8, **kw)

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_gradcheck_factored_form():
    """The CPU fast path (index targets, no softcap) on its own, with every option it supports."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, -100, 6, 3, 3])
    kw = dict(
        weight=torch.rand(7, generator=g, dtype=torch.float64) + 0.1,
        label_smoothing=0.3,
        z_loss=0.02,
    )

    def fn(x_, w_, b_):
        return crossent.linear_cross_entropy(
            x_, w_, t, linear_bias=b_, workspace_bytes=2 * 7 * 8, **kw
        )

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_confident_and_extreme_rows():
    """Target probabilities that underflow (lse recomputed from the logits) and confident rows."""
    x, w, _, t = make(n=8)
    with torch.no_grad():
        x.mul_(60.0)  # logits spread ≫ 87: some target probabilities underflow in float32
    for dtype in (torch.float32, torch.float64):
        xd, wd = (
            x.detach().to(dtype).requires_grad_(True),
            w.detach().to(dtype).requires_grad_(True),
        )
        l1, g1 = grads_of(
            lambda: crossent.linear_cross_entropy(xd, wd, t, reduction="none"), [xd, wd]
        )
        l0, g0 = grads_of(lambda: unfused(xd, wd, t, reduction="none"), [xd, wd])
        assert torch.isfinite(l1).all()
        torch.testing.assert_close(l1, l0)
        for a, c in zip(g1, g0):
            torch.testing.assert_close(a, c)


def test_ignored_rows_get_zero_input_gradient():
    x, w, _, t = make(n=10)
    t[[1, 4, 5]] = -100
    crossent.linear_cross_entropy(x, w, t, workspace_bytes=2 * V * 8).backward()
    assert torch.count_nonzero(x.grad[[1, 4, 5]]) == 0
    assert torch.count_nonzero(x.grad[[0, 2, 3]]) > 0


def test_inputs_not_mutated(native):
    x, w, b, t = make(n=13, bias=True)
    kw, t = _options(OPTIONS["everything"], t, x.dtype)
    before = [a.detach().clone() for a in (x, w, b, t, kw["weight"])]
    for reduction in ("mean", "none"):
        loss = lce(native)(x, w, t, linear_bias=b, reduction=reduction, workspace_bytes=64, **kw)
        loss.sum().backward()
    for a, c in zip((x, w, b, t, kw["weight"]), before):
        assert torch.equal(a.detach(), c)


def test_deterministic(native):
    torch.manual_seed(0)
    x = torch.randn(257, 32, requires_grad=True)
    w = torch.randn(301, 32, requires_grad=True)
    t = torch.randint(0, 301, (257,))
    t[::9] = -100
    runs = [
        grads_of(lambda: lce(native)(x, w, t, label_smoothing=0.1, workspace_bytes=20_000), [x, w])
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0])
    for a, c in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, c)


def test_backward_twice_with_retain_graph():
    x, w, _, t = make(n=9)
    loss = crossent.linear_cross_entropy(x, w, t, label_smoothing=0.1)
    g1 = torch.autograd.grad(loss, [x, w], retain_graph=True)
    g2 = torch.autograd.grad(loss, [x, w], torch.tensor(2.0, dtype=x.dtype))
    for a, c in zip(g1, g2):
        torch.testing.assert_close(2 * a, c)


def test_no_grad_and_uint8_targets_and_module():
    x, w, b, t = make(n=12, bias=True)
    with torch.no_grad():
        l1 = crossent.linear_cross_entropy(x, w, t.to(torch.uint8), linear_bias=b)
    torch.testing.assert_close(l1, unfused(x, w, t, b).detach())
    mod = crossent.nn.LinearCrossEntropyLoss(
        D, V, bias=True, dtype=x.dtype, label_smoothing=0.1, workspace_bytes=3 * V * 8
    )
    with torch.no_grad():
        mod.linear.weight.copy_(w)
        mod.linear.bias.copy_(b)
    torch.testing.assert_close(mod(x, t), unfused(x, w, t, b, label_smoothing=0.1))


def test_errors():
    x, w, b, t = make(n=5, bias=True)
    with pytest.raises(ValueError, match="linear_weight"):
        crossent.linear_cross_entropy(x, w[:, :3], t)
    with pytest.raises(ValueError, match="linear_bias"):
        crossent.linear_cross_entropy(x, w, t, linear_bias=b[:3])
    with pytest.raises(TypeError, match="linear_weight"):
        crossent.linear_cross_entropy(x, w.float(), t)
    with pytest.raises(ValueError, match="target"):
        crossent.linear_cross_entropy(x, w, t[:3])
    with pytest.raises(ValueError, match="workspace_bytes"):
        crossent.linear_cross_entropy(x, w, t, workspace_bytes=0)
    with pytest.raises(IndexError, match="out of bounds"):
        crossent.linear_cross_entropy(x, w, torch.tensor([0, 1, V, 2, 3]))
    with pytest.raises(TypeError, match="Long or Byte"):
        crossent.linear_cross_entropy(x, w, t.int())
    with pytest.raises(ValueError, match="label_smoothing"):
        crossent.linear_cross_entropy(x, w, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="normalize_by"):
        crossent.linear_cross_entropy(x, w, t, reduction="sum", normalize_by=3.0)


# --------------------------------------------------------------------------------------------------
# The memory bound.
# --------------------------------------------------------------------------------------------------


class _AllocationTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the size in bytes of every storage an aten op returns (views of inputs included)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("softcap", [None, 10.0])
def test_memory_bound_no_tensor_as_large_as_the_logits(reduction, softcap, native):
    """Every tensor created during forward + backward is at most max(workspace, the gradients' size);
    the (N, V) logits here are 8× larger than either, so materialising them fails the test."""
    n, d, v = 2048, 4, 2000
    workspace = 1 << 20
    torch.manual_seed(0)
    x = torch.randn(n, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    t = torch.randint(0, v, (n,))
    t[::5] = -100
    inputs_and_grads = max(x.numel(), w.numel()) * 4
    assert n * v * 4 >= 8 * max(workspace, inputs_and_grads)
    tracker = _AllocationTracker()
    with tracker:
        loss = lce(native)(
            x,
            w,
            t,
            reduction=reduction,
            softcap=softcap,
            label_smoothing=0.1,
            workspace_bytes=workspace,
        )
        loss.sum().backward()
    assert tracker.largest <= max(workspace, inputs_and_grads)
    # the same tracker sees the unfused composition's logits (the check can fail)
    control = _AllocationTracker()
    with control:
        unfused(x, w, t, reduction=reduction, softcap=softcap).sum().backward()
    assert control.largest >= n * v * 4


_RSS_CHILD = textwrap.dedent(
    """
    import json, sys, torch, torch.nn.functional as F, crossent
    torch.manual_seed(0)
    fused = sys.argv[1] == "fused"
    # one-time costs (lazy imports, the kernel library, thread pools) are paid on a tiny problem first
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True)
    crossent.linear_cross_entropy(a, b, torch.tensor([0, 1, 2, 3])).backward()
    crossent.cross_entropy(F.linear(a, b), torch.tensor([0, 1, 2, 3])).backward()
    n, d, v = 2048, 64, 32000  # logits: 262 MB in float32
    x = torch.randn(n, d, requires_grad=True)
    w = torch.randn(v, d).div_(8.0).requires_grad_(True)
    t = torch.randint(0, v, (n,))
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    before = hwm()
    if fused:
        loss = crossent.linear_cross_entropy(x, w, t, workspace_bytes=16 << 20)
    else:
        loss = crossent.cross_entropy(F.linear(x, w), t)
    loss.backward()
    print(json.dumps({"growth": hwm() - before}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_memory_bound_peak_rss():
    """End to end, in fresh processes: peak RSS growth of forward + backward stays far below the logits
    (grads 8.5 MB + 16 MiB workspace + allocator slack), while the unfused composition exceeds them."""
    growth = {}
    for mode in ("fused", "unfused"):
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, mode], capture_output=True, text=True, check=True
        )
        growth[mode] = json.loads(out.stdout.strip().splitlines()[-1])["growth"]
    logits = 2048 * 32000 * 4
    assert growth["unfused"] > logits, growth
    assert growth["fused"] < 80e6, growth


def test_chunk_rows_respects_workspace():
    spec = linear_ce.LinearCESpec(crossent._contract.CEOptions(), False, rows(10, 1000, 3, 4))
    assert linear_ce.chunk_rows(spec, torch.empty(1, 3), 1000) == 10
    # bf16 input: + a bf16 copy of each row (float32 buffer 4000 + 2000 + operands 36 bytes per row)
    assert linear_ce.chunk_rows(spec, torch.empty(1, 3, dtype=torch.bfloat16), 1000) == 6
    assert linear_ce.chunk_rows(spec, torch.empty(1, 3), 10**9) == 1  # at least one row
    assert linear_ce.default_workspace_bytes(torch.device("cpu")) == 96 << 20


def test_option_grid_covers_every_option():
    keys = set(itertools.chain.from_iterable(OPTIONS.values()))
    assert {
        "weight",
        "ignore",
        "label_smoothing",
        "z_loss",
        "softcap",
        "ignore_index",
        "normalize_by",
    } <= keys


# ---------------------------------------------------------------------------------------------------
# The Triton chunk kernel (the CUDA path's per-chunk CE), on CPU tensors under TRITON_INTERPRET=1
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def triton_chunk(monkeypatch):
    """Force the explicit chunk form through the Triton kernel (what CUDA tensors use)."""
    pytest.importorskip("triton")
    from crossent._backends.triton import chunk

    return count_calls(monkeypatch, chunk, "ce_rows_grad_")


@pytest.mark.triton
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "weight+ignore",
        "smoothing+weight",
        "zloss+ignore",
        "softcap",
        "everything",
        "ignore_index=0",
        "normalize_by",
    ],
)
def test_triton_chunk_parity(name, reduction, triton_chunk):
    """float32 inputs through the Triton chunk kernel vs the unfused composition in float64."""
    x, w, b, t = make(bias=True)
    kw, t = _options(OPTIONS[name], t, torch.float64)
    kw["reduction"] = reduction
    if "normalize_by" in kw and reduction != "mean":
        kw.pop("normalize_by")
    x32, w32, b32 = (a.detach().float().requires_grad_(True) for a in (x, w, b))
    kw32 = {k: (val.float() if isinstance(val, torch.Tensor) else val) for k, val in kw.items()}
    go = (
        torch.randn(t.shape, dtype=torch.float64)
        if reduction == "none"
        else torch.tensor(1.7, dtype=torch.float64)
    )
    l1, g1 = grads_of(
        lambda: lce("triton")(
            x32, w32, t, linear_bias=b32, workspace_bytes=rows(5, nbytes=4), **kw32
        ),
        [x32, w32, b32],
        go.float(),
    )
    x64, w64, b64 = (a.detach().double().requires_grad_(True) for a in (x32, w32, b32))
    l0, g0 = grads_of(lambda: unfused(x64, w64, t, b64, **kw), [x64, w64, b64], go)
    assert triton_chunk, "the Triton chunk kernel was not used"
    torch.testing.assert_close(l1.double(), l0, rtol=2e-5, atol=2e-6)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a.double(), c, rtol=2e-5, atol=2e-6)


@pytest.mark.triton
def test_triton_chunk_probability_targets(triton_chunk):
    x, w, b, _ = make(n=11, bias=True, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    q = torch.softmax(torch.randn(11, V, generator=g), -1)
    kw = dict(
        label_smoothing=0.1, z_loss=1e-2, softcap=3.0, weight=torch.rand(V, generator=g) + 0.1
    )
    l1, g1 = grads_of(
        lambda: lce("triton")(x, w, q, linear_bias=b, workspace_bytes=rows(4, nbytes=4), **kw),
        [x, w, b],
    )
    x64, w64, b64 = (a.detach().double().requires_grad_(True) for a in (x, w, b))
    kw64 = {k: (val.double() if isinstance(val, torch.Tensor) else val) for k, val in kw.items()}
    l0, g0 = grads_of(lambda: unfused(x64, w64, q.double(), b64, **kw64), [x64, w64, b64])
    assert triton_chunk
    torch.testing.assert_close(l1.double(), l0, rtol=2e-5, atol=2e-6)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a.double(), c, rtol=2e-5, atol=2e-6)


@pytest.mark.triton
def test_triton_chunk_bfloat16(triton_chunk):
    """bf16: the chunk stays bf16 (G rounded once by the kernel), dW/db accumulate in float32; no less
    accurate than the unfused bf16 composition against a float64 oracle on the same rounded inputs."""
    torch.manual_seed(0)
    n, d, v = 64, 32, 300
    x = torch.randn(n, d).bfloat16().requires_grad_(True)
    w = (torch.randn(v, d) / d**0.5).bfloat16().requires_grad_(True)
    b = torch.randn(v).bfloat16().requires_grad_(True)
    t = torch.randint(0, v, (n,))
    t[::7] = -100
    kw = dict(label_smoothing=0.1, z_loss=1e-3, softcap=20.0)
    x64, w64, b64 = (a.detach().double().requires_grad_(True) for a in (x, w, b))
    l_ref, g_ref = grads_of(lambda: unfused(x64, w64, t, b64, **kw), [x64, w64, b64])
    l1, g1 = grads_of(
        lambda: lce("triton")(x, w, t, linear_bias=b, workspace_bytes=10 * v * 6, **kw), [x, w, b]
    )
    l0, g0 = grads_of(lambda: unfused(x, w, t, b, **kw), [x, w, b])
    assert triton_chunk
    assert l1.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in g1)

    def err(a, ref):
        return float((a.double() - ref).norm() / ref.norm())

    assert err(l1, l_ref) <= 1.5 * err(l0, l_ref) + 1e-6
    for a, c, r in zip(g1, g0, g_ref):
        assert err(a, r) <= 1.5 * err(c, r) + 1e-3


# ---------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU): cuBLAS products + the Triton chunk kernel, no host sync, the memory bound
# ---------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cuda_parity_no_sync_and_memory(dtype, reduction):
    torch.manual_seed(0)
    n, d, v = 4096, 256, 50_000
    dev = "cuda"
    x = torch.randn(n, d, device=dev).to(dtype).requires_grad_(True)
    w = (torch.randn(v, d, device=dev) / d**0.5).to(dtype).requires_grad_(True)
    t = torch.randint(0, v, (n,), device=dev)
    t[::5] = -100
    kw = dict(label_smoothing=0.1, z_loss=1e-4, softcap=30.0, reduction=reduction)
    go = torch.randn(n, device=dev) if reduction == "none" else None
    workspace = 32 << 20
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.cuda.set_sync_debug_mode("error")
    try:
        l1, g1 = grads_of(
            lambda: crossent.linear_cross_entropy(x, w, t, workspace_bytes=workspace, **kw),
            [x, w],
            go,
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    peak = torch.cuda.max_memory_allocated() - base
    grads = n * d * x.element_size() + v * d * 4  # dX, and dW in float32 while accumulating
    assert peak <= workspace + grads + v * d * w.element_size() + (8 << 20), peak
    x64, w64 = (a.detach().double().requires_grad_(True) for a in (x, w))
    l0, g0 = grads_of(
        lambda: unfused(x64, w64, t, **kw), [x64, w64], None if go is None else go.double()
    )
    tol = dict(rtol=2e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(l1.double(), l0, **tol)
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a.double(), c, **tol)


# --------------------------------------------------------------------------------------------------
# Drop-in for torch.nn.functional.linear_cross_entropy (torch >= 2.13): the oracle is torch's function.
# --------------------------------------------------------------------------------------------------

torch_lce = getattr(F, "linear_cross_entropy", None)
needs_torch_lce = pytest.mark.skipif(
    torch_lce is None, reason="torch < 2.13 has no linear_cross_entropy"
)


def _torch_and_ours(args, kw, tensors, go=None, **extra):
    out = []
    for fn, more in ((torch_lce, {}), (crossent.linear_cross_entropy, extra)):
        loss = fn(*args, **kw, **more)
        g = torch.ones_like(loss) if go is None else go
        out.append((loss.detach(), torch.autograd.grad(loss, tensors, g)))
    return out


@needs_torch_lce
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True], ids=["index", "probs"])
@pytest.mark.parametrize("workspace", [None, 1], ids=["one-product", "per-position"])
def test_k_dimensional_head_matches_torch(reduction, prob, workspace):
    """(C, d1, d2, D) heads: the logits of every output position, one product when they fit the
    workspace, else the fused loop per position (workspace of one row)."""
    g = torch.Generator().manual_seed(5)
    n, c, of = 7, 5, (3, 2)
    x = torch.randn(n, D, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, *of, D, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, *of, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    if prob:
        t = torch.rand(n, c, *of, generator=g, dtype=torch.float64, requires_grad=True)
        tensors = [x, w, b, t]
    else:
        t = torch.randint(0, c, (n, *of), generator=g)
        t[0, 0, 0] = -100
        tensors = [x, w, b]
    kw = dict(linear_bias=b, weight=weight, reduction=reduction, label_smoothing=0.1)
    go = torch.rand((n, *of), generator=g, dtype=torch.float64) if reduction == "none" else None
    (l0, g0), (l1, g1) = _torch_and_ours((x, w, t), kw, tensors, go, workspace_bytes=workspace)
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    for a, e in zip(g1, g0):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


@needs_torch_lce
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_probability_target_and_class_weight_gradients_match_torch(reduction, backend):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, D, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, D, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.rand(9, V, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (torch.rand(V, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    kw = dict(weight=weight, reduction=reduction, label_smoothing=0.2)
    go = torch.rand(9, generator=g, dtype=torch.float64) if reduction == "none" else None
    (l0, g0), (l1, g1) = _torch_and_ours(
        (x, w, q), kw, [x, w, q, weight], go, backend=backend, workspace_bytes=rows(2)
    )
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    for a, e in zip(g1, g0):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_probability_target_gradient_with_z_loss_and_softcap_matches_unfused():
    """The extras (z-loss, softcap) against crossent.cross_entropy on materialised logits."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, D, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, D, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.rand(6, V, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (torch.rand(V, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    kw = dict(weight=weight, label_smoothing=0.1, z_loss=0.03, softcap=3.0)
    l1, g1 = grads_of(
        lambda: crossent.linear_cross_entropy(x, w, q, workspace_bytes=rows(4), **kw),
        [x, w, q, weight],
    )
    l0, g0 = grads_of(lambda: crossent.cross_entropy(F.linear(x, w), q, **kw), [x, w, q, weight])
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    for a, e in zip(g1, g0):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


@needs_torch_lce
def test_signature_defaults_and_errors_match_torch():
    import inspect

    ours = inspect.signature(crossent.linear_cross_entropy).parameters
    theirs = inspect.signature(torch_lce).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, p in theirs.items():
        assert ours[name].default == p.default and ours[name].kind == p.kind, name
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in list(ours.values())[3:])
    x, w, _, t = make(n=4)
    q = torch.rand(4, V, dtype=torch.float64)
    cases = [
        ((x, w, q), dict(ignore_index=-100)),  # explicit ignore_index with probabilities
        ((x[None, None], w, t[:2]), {}),  # 4-D input whose target fits no layout
        ((x, w[0], t), {}),
        ((x, w[:, :3], t), {}),
        ((x, w, t), dict(linear_bias=torch.zeros(3, dtype=torch.float64))),
        ((x[0], w.reshape(V, 1, D), t[0]), {}),
        ((x, w, t.float()), {}),
        ((x, w, t[:2]), {}),
        ((x, w, torch.tensor([0, 1, V, 2])), {}),
        ((x, w, t), dict(reduction="bad")),
        ((x, w, t), dict(label_smoothing=1.5)),
        ((x, w, t), dict(weight=torch.ones(3, dtype=torch.float64))),
    ]
    for args, kw in cases:
        with pytest.raises(Exception) as expected:
            torch_lce(*args, **kw)
        with pytest.raises(Exception) as got:
            crossent.linear_cross_entropy(*args, **kw)
        assert isinstance(got.value, type(expected.value)), (kw, got.value, expected.value)
        assert str(expected.value).rstrip(".") in str(got.value), (
            str(got.value),
            str(expected.value),
        )


def test_ignore_index_none_means_minus_100_and_input_extension():
    x, w, _, t = make(n=12)
    t[::3] = -100
    torch.testing.assert_close(
        crossent.linear_cross_entropy(x, w, t), unfused(x, w, t, ignore_index=-100)
    )
    x3 = x.detach().reshape(3, 4, D)
    out = crossent.linear_cross_entropy(x3, w, t.reshape(3, 4), reduction="none")
    torch.testing.assert_close(out, unfused(x, w, t, reduction="none").reshape(3, 4).detach())


def test_options_batch_chunk_size_caps_the_chunk_rows(monkeypatch):
    """LinearCrossEntropyOptions(batch_chunk_size=k): k rows per chunk (below the workspace's)."""
    options_cls = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if options_cls is None:
        pytest.skip("torch < 2.13")
    seen = []
    real = linear_ce._logits_

    def spy(z, *args):
        seen.append(z.shape[0])
        return real(z, *args)

    monkeypatch.setattr(linear_ce, "_logits_", spy)
    x, w, _, t = make(n=10)
    loss = crossent.linear_cross_entropy(x, w, t, options=options_cls(batch_chunk_size=4))
    assert seen == [4, 4, 2]
    torch.testing.assert_close(loss, unfused(x, w, t))


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_backend_argument_selects_the_chunk_kernel(backend, monkeypatch):
    if backend == "native" and not linear_ce.native_ready(torch.empty(1)):
        pytest.skip("native kernel not built")
    seen = []
    real = linear_ce.chunk_kernel
    monkeypatch.setattr(linear_ce, "chunk_kernel", lambda *a: seen.append(real(*a)) or seen[-1])
    x, w, _, t = make(n=10)
    l1, g1 = grads_of(
        lambda: crossent.linear_cross_entropy(x, w, t, softcap=5.0, backend=backend), [x, w]
    )
    l0, g0 = grads_of(lambda: unfused(x, w, t, softcap=5.0), [x, w])
    assert set(seen) == {backend}
    torch.testing.assert_close(l1, l0)
    for a, e in zip(g1, g0):
        torch.testing.assert_close(a, e)
    with pytest.raises(ValueError, match="backend"):
        crossent.linear_cross_entropy(x, w, t, backend="cuda")


# --------------------------------------------------------------------------------------------------
# Function transforms and forward-mode AD: the composite path, against torch's function.
# --------------------------------------------------------------------------------------------------


def _transform_results(f):
    from torch.autograd import forward_ad
    from torch.func import grad, jacfwd, jacrev, jvp, vmap

    g = torch.Generator().manual_seed(8)
    n, d, c = 5, 4, 6
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, d, generator=g, dtype=torch.float64)
    t = torch.randint(0, c, (n,), generator=g)
    q = torch.rand(n, c, generator=g, dtype=torch.float64)
    wk = torch.randn(c, 2, d, generator=g, dtype=torch.float64)
    tk = torch.randint(0, c, (n, 2), generator=g)
    t_ign = t.clone()
    t_ign[1] = -100
    out = {
        "grad": grad(lambda w: f(x, w, t_ign, label_smoothing=0.1))(w),
        "per-sample": vmap(grad(lambda w, xi, ti: f(xi, w, ti)), in_dims=(None, 0, 0))(w, x, t),
        "hessian": jacfwd(jacrev(lambda xx: f(xx, w, q[:2])))(x[:2]),
        "jvp": jvp(lambda xx: f(xx, w, t, reduction="none"), (x,), (torch.ones_like(x),))[1],
        "k-dim grad": grad(lambda wk: f(x, wk, tk))(wk),
    }
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x, torch.ones_like(x))
        out["forward-ad"] = forward_ad.unpack_dual(f(dual, w, t_ign)).tangent
    return out


@needs_torch_lce
def test_function_transforms_and_forward_ad_match_torch():
    expected = _transform_results(torch_lce)
    actual = _transform_results(crossent.linear_cross_entropy)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-10, atol=1e-12, msg=key)


def test_second_order_through_the_fused_path_raises():
    x, w, _, t = make(n=4)
    (gx,) = torch.autograd.grad(crossent.linear_cross_entropy(x, w, t), [x], create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gx.sum(), [w])


def test_cpu_chunk_logits_by_onednn_are_released_chunk_by_chunk():
    """float32 CPU chunks come from oneDNN's inner product (a fresh tensor each); the chunk loop frees
    each one when the next starts, so one chunk's logits are alive at a time."""
    from crossent._backends import onednn

    x, w, b = torch.randn(10, 6), torch.randn(7, 6), torch.randn(7)
    if not onednn.takes(x, w, b):
        pytest.skip("oneDNN is not available in this PyTorch build")
    seen = []
    for start, stop, _, _, z in linear_ce.logit_chunks(x, w, b, 4, None):
        torch.testing.assert_close(z, x[start:stop].double().mm(w.double().t()).add(b).float())
        seen.append(z)
    assert [z.untyped_storage().nbytes() for z in seen[:-1]] == [0, 0]
    with torch.backends.mkldnn.flags(enabled=False):
        assert not onednn.takes(x, w, b)  # the user's switch is respected


def test_zero_features_or_classes_take_the_buffered_products():
    """oneDNN has no inner product over 0 features: such calls keep torch.mm (values as torch's)."""
    x = torch.zeros(4, 0, requires_grad=True)
    w = torch.zeros(6, 0, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    t = torch.tensor([0, 5, 2, 3])
    ours = crossent.linear_cross_entropy(x, w, t, linear_bias=b)
    theirs = F.cross_entropy(F.linear(x, w, b), t)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, b), torch.autograd.grad(theirs, b))
