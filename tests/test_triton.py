"""The Triton cross-entropy kernels (``backend="triton"``) against the eager backend and torch.

On a machine without an NVIDIA GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set
below, and in conftest, before anything imports Triton), at small shapes: the whole option grid of
``grid.py`` on the single-block path, and the long-row (online softmax) path forced by a small block.
Tests marked ``gpu`` need CUDA and compiled kernels (run them with ``TRITON_INTERPRET=0``): V = 256000,
more than 2^31 elements, torch.compile with inductor, CUDA-graph capture, no host synchronisation.

Oracles: ``torch.nn.functional.cross_entropy`` in float64 on the same (rounded) inputs, the eager backend
(``backend="torch"``, which computes the NumPy reference) for z-loss and softcap, and for half inputs
"no less accurate than torch in the same dtype".
"""

import os

if not os.path.exists("/dev/nvidia0"):  # same rule as conftest: interpret where there is no GPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import crossent  # noqa: E402
import sm90  # noqa: E402
from crossent import _dispatch  # noqa: E402
from crossent._backends import eager  # noqa: E402
from crossent._backends.triton import configs, handover, ops  # noqa: E402
from crossent._contract import ce_options  # noqa: E402
from grid import cases, make_inputs  # noqa: E402
from oracle import TOL, t64  # noqa: E402

pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"  # where the Triton backend runs in the shared tests
# tests that look at the Triton backend's own tensors (custom ops, in-place writes) on CPU tensors
interpreted_only = pytest.mark.skipif(
    not INTERPRETED, reason="checks CPU tensors under TRITON_INTERPRET=1"
)
GRID = cases()[::2]  # every other case of the shared grid: each value still appears many times
F32 = TOL[torch.float32]


def _use_path(monkeypatch, path, block=64):
    """Force a kernel path at small shapes: "single" (the row in one block: one read), "multi" (online
    softmax over blocks of ``block`` columns, one program per row) or "split" (the same blocks, each row
    cut into chunks over several programs, merged by a second launch)."""
    if path in ("multi", "split"):
        monkeypatch.setattr(configs, "MAX_SINGLE_BLOCK", block)
    if path == "multi":
        monkeypatch.setattr(configs, "SPLIT_BELOW_PROGRAMS", 0)
    if path == "split":
        monkeypatch.setattr(configs, "MIN_BLOCKS_PER_CHUNK", 1)


@pytest.fixture(params=["single", "multi", "split"])
def block_path(request, monkeypatch):
    _use_path(monkeypatch, request.param)
    return request.param


def _on_device(v):
    return v.to(DEVICE) if isinstance(v, torch.Tensor) else v


def _ce(x, t, w=None, backend="triton", **kw):
    """crossent.cross_entropy; with compiled kernels (a GPU) the inputs travel to the GPU and the loss
    comes back (autograd follows), so the same tests check the interpreted and the compiled kernels."""
    if DEVICE == "cpu" or backend != "triton":
        return crossent.cross_entropy(x, t, w, backend=backend, **kw)
    kw = {k: _on_device(v) for k, v in kw.items()}
    return crossent.cross_entropy(
        _on_device(x), _on_device(t), _on_device(w), backend=backend, **kw
    ).cpu()


def _loss_and_grad(x, t, w, up, backend, **kw):
    xa = x.detach().clone().requires_grad_()
    loss = _ce(xa, t, w, backend=backend, **kw)
    (grad,) = torch.autograd.grad(loss, xa, up)
    return loss, grad


def _upstream(reduction, shape, seed=1):
    if reduction != "none":
        return torch.tensor(0.7)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
# Values and gradients over the option grid
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_grid_matches_torch_float64(case):
    """Every shape/target/weight/smoothing/reduction/ignore_index case, fp32 kernel vs fp64 torch."""
    x, t, w = make_inputs(case)
    x32 = t64(x).float()
    tt = t64(t).float() if case.prob_target else t64(t)
    ww = None if w is None else t64(w).float()
    kw = dict(
        ignore_index=case.ignore_index,
        reduction=case.reduction,
        label_smoothing=case.label_smoothing,
    )
    xo = x32.double().requires_grad_()
    oracle = F.cross_entropy(
        xo, tt.double() if case.prob_target else tt, None if ww is None else ww.double(), **kw
    )
    up = _upstream(case.reduction, oracle.shape)
    (g_oracle,) = torch.autograd.grad(oracle, xo, up.double())
    loss, grad = _loss_and_grad(x32, tt, ww, up, "triton", **kw)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), oracle.detach(), **F32)
    torch.testing.assert_close(grad.double(), g_oracle, **F32)


OPTION_SETS = {
    "plain": {},
    "weight": dict(weighted=True),
    "smooth": dict(label_smoothing=0.1),
    "zloss": dict(z_loss=1e-2),
    "softcap": dict(softcap=3.0),
    "all": dict(weighted=True, label_smoothing=0.2, z_loss=0.05, softcap=2.5),
    "eps1": dict(label_smoothing=1.0, weighted=True),
}


SHAPE_PATHS = [
    ((5, 7), "single"),
    ((3, 257), "single"),
    ((3, 257), "multi"),
    ((2, 1000), "multi"),
    ((3, 257), "split"),
    ((2, 1000), "split"),
]


@pytest.mark.parametrize(
    "shape,path", SHAPE_PATHS, ids=[f"{s[0]}x{s[1]}-{p}" for s, p in SHAPE_PATHS]
)
@pytest.mark.parametrize("prob_target", [False, True])
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_options_match_eager_backend(monkeypatch, shape, path, prob_target, options, reduction):
    """z-loss and softcap (beyond torch) and every option together, against the eager backend, on the
    one-read, the online-softmax and the split-row paths (128-wide blocks: 3 and 8 blocks a row)."""
    _use_path(monkeypatch, path, block=128)
    opts = dict(OPTION_SETS[options])
    weighted = opts.pop("weighted", False)
    g = torch.Generator().manual_seed(sum(shape))
    n, c = shape
    x = torch.randn(shape, generator=g) * 3
    if prob_target:
        t = torch.softmax(torch.randn(shape, generator=g), 1)
    else:
        t = torch.randint(0, c, (n,), generator=g)
        t[0] = -100
    w = torch.rand(c, generator=g) + 0.5 if weighted else None
    up = _upstream(reduction, (n,))
    loss, grad = _loss_and_grad(x, t, w, up, "triton", reduction=reduction, **opts)
    ref_loss, ref_grad = _loss_and_grad(x, t, w, up, "torch", reduction=reduction, **opts)
    torch.testing.assert_close(loss, ref_loss, **F32)
    torch.testing.assert_close(grad, ref_grad, **F32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy meets inf - inf
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_non_finite_logits_like_eager(block_path, label_smoothing):
    inf, nan = float("inf"), float("nan")
    rows = [
        [1.0, -inf, 0.5],  # -inf at a non-target class: fine (inf with smoothing)
        [-inf, 2.0, 0.0],  # -inf at the target: +inf
        [inf, 0.0, 1.0],  # +inf anywhere: NaN
        [nan, 1.0, 0.0],  # NaN: NaN
        [-inf, -inf, -inf],  # only -inf: NaN
        [0.0, 1.0, nan],  # ignored row holding NaN: loss 0, gradient NaN
    ]
    x = torch.tensor(
        [r + [0.25] * 97 for r in rows]
    )  # C = 100 (two blocks of 64 on the multi path)
    t = torch.tensor([0, 0, 1, 2, 1, -100])
    up = torch.ones(6)
    loss, grad = _loss_and_grad(
        x, t, None, up, "triton", reduction="none", label_smoothing=label_smoothing
    )
    ref_loss, ref_grad = _loss_and_grad(
        x, t, None, up, "torch", reduction="none", label_smoothing=label_smoothing
    )
    torch.testing.assert_close(loss, ref_loss, equal_nan=True)
    torch.testing.assert_close(grad, ref_grad, equal_nan=True)


@pytest.mark.parametrize("scale", [1e4, -1e4, 30.0])
def test_extreme_and_confident_rows(block_path, scale):
    x = torch.zeros(3, 100)
    x[0, 0], x[0, 2] = scale, -scale
    x[1, 1], x[1, 7] = scale, 1.0
    x[2, 5] = scale
    t = torch.tensor([0, 7, 5])  # row 0 and 2: confident when scale > 0
    up = torch.ones(3)
    loss, grad = _loss_and_grad(x, t, None, up, "triton", reduction="none", label_smoothing=0.1)
    xo = x.double().requires_grad_()
    oracle = F.cross_entropy(xo, t, reduction="none", label_smoothing=0.1)
    (g_oracle,) = torch.autograd.grad(oracle, xo, up.double())
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), oracle.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), g_oracle, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# Half precision: fp32 math, fp32 loss, the gradient rounded once
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_half_precision_no_less_accurate_than_torch(block_path, dtype, reduction):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(24, 100, generator=g) * 3).to(dtype)
    t = torch.randint(0, 100, (24,), generator=g)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    xo = x.double().requires_grad_()  # the oracle sees the same rounded inputs
    oracle = F.cross_entropy(xo, t, **kw)
    up = torch.ones(24) if reduction == "none" else torch.tensor(1.0)
    (g_oracle,) = torch.autograd.grad(oracle, xo, up.double())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = _ce(xa, t, **kw), F.cross_entropy(xb, t, **kw)
    assert ours.dtype == torch.float32
    (ga,) = torch.autograd.grad(ours, xa, up)
    (gb,) = torch.autograd.grad(theirs, xb, up.to(dtype))
    assert ga.dtype == dtype
    assert (ours.double() - oracle).abs().max() <= (theirs.double() - oracle).abs().max() + 1e-12
    assert (ga.double() - g_oracle).abs().max() <= (gb.double() - g_oracle).abs().max() + 1e-12
    # rounded once, from fp32 (the true class included): within one ulp of the exact gradient
    ulp = torch.finfo(dtype).eps * g_oracle.abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((ga.double() - g_oracle).abs() <= ulp).all()


def test_bf16_probability_target_promotes_to_float32():
    x = torch.randn(4, 9).bfloat16().requires_grad_()
    q = torch.softmax(torch.randn(4, 9), 1)
    ours = _ce(x, q)
    theirs = F.cross_entropy(x.detach(), q)
    assert ours.dtype == theirs.dtype == torch.float32
    oracle = F.cross_entropy(x.detach().double(), q.double())
    torch.testing.assert_close(ours.double(), oracle, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Layouts, targets, denominators, fallbacks
# ---------------------------------------------------------------------------------------------------


def test_strided_logits_uint8_targets_and_normalize_by():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(6, 40, generator=g)
    x = base[:, ::2]  # class stride 2: the backend makes rows contiguous
    t = torch.tensor([0, 3, 19, 7, 1, 2], dtype=torch.uint8)
    total = torch.tensor(11.0)
    for kw in ({}, dict(normalize_by=total), dict(reduction="sum", label_smoothing=0.3)):
        loss, grad = _loss_and_grad(x, t, None, torch.tensor(1.0), "triton", **kw)
        ref_loss, ref_grad = _loss_and_grad(x, t, None, torch.tensor(1.0), "torch", **kw)
        torch.testing.assert_close(loss, ref_loss, **F32)
        torch.testing.assert_close(grad, ref_grad, **F32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 1/0 for the mean's factor, by design
def test_all_ignored_mean_is_nan_with_zero_gradient():
    x = torch.randn(3, 5, requires_grad=True)
    t = torch.full((3,), -100)
    loss = _ce(x, t)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isnan(loss)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_float64_and_target_gradients_fall_back_to_eager():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1, 0, 5, -100])
    torch.testing.assert_close(_ce(x, t), F.cross_entropy(x, t), **TOL[torch.float64])
    q = torch.softmax(torch.randn(4, 6), 1).requires_grad_()
    xf = x.detach().float().requires_grad_()
    a = _ce(xf, q, label_smoothing=0.1)
    b = F.cross_entropy(xf, q, label_smoothing=0.1)
    for ga, gb in zip(torch.autograd.grad(a, (xf, q)), torch.autograd.grad(b, (xf, q))):
        torch.testing.assert_close(ga, gb, **F32)


def test_no_grad_forward_writes_no_gradient():
    x = torch.randn(5, 7, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        loss = _ce(x, t)
    torch.testing.assert_close(loss, F.cross_entropy(x.detach(), t), **F32)
    assert loss.grad_fn is None


# ---------------------------------------------------------------------------------------------------
# Memory semantics: the input is never written unless inplace=True; upstream scaling; determinism
# ---------------------------------------------------------------------------------------------------


@interpreted_only
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_input_untouched_by_default(reduction):
    x = torch.randn(5, 7, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, -100])
    before = x.detach().clone()
    loss = _ce(x, t, reduction=reduction, label_smoothing=0.1, z_loss=0.1)
    assert torch.equal(x.detach(), before)
    loss.sum().backward()
    assert torch.equal(x.detach(), before)
    assert x.grad.data_ptr() != x.data_ptr()


@interpreted_only
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_inplace_writes_the_gradient_into_the_logits(reduction):
    leaf = torch.randn(5, 7, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, -100])
    kw = dict(reduction=reduction, label_smoothing=0.1, z_loss=0.1)
    up = _upstream(reduction, (5,))
    ref_loss, ref_grad = _loss_and_grad(leaf, t, None, up, "torch", **kw)
    h = leaf * 1.0  # a non-leaf, like logits out of a matmul
    version = h._version
    loss = _ce(h, t, inplace=True, **kw)
    assert h._version > version  # autograd was told (mark_dirty)
    torch.testing.assert_close(loss, ref_loss, **F32)
    (grad,) = torch.autograd.grad(loss, leaf, up)
    torch.testing.assert_close(grad, ref_grad, **F32)
    torch.testing.assert_close(h.detach(), ref_grad, **F32)  # the logits now hold the gradient


@interpreted_only
def test_inplace_is_visible_to_autograd():
    leaf = torch.randn(4, 6, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    h = leaf.exp()  # exp saves its output for backward: overwriting it must be caught
    loss = _ce(h, t, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    h = leaf * 1.0
    loss = _ce(h, t, inplace=True)
    with pytest.raises(RuntimeError, match="overwrote its input"):
        # h holds the gradient now: using it is an error, not a silent one
        (loss + h.sum()).backward()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        _ce(torch.randn(4, 6, requires_grad=True), t, inplace=True)


@interpreted_only
def test_inplace_without_a_gradient_leaves_the_input_alone():
    x = torch.randn(4, 6)
    before = x.clone()
    _ce(x, torch.tensor([0, 1, 2, 3]), inplace=True)
    assert torch.equal(x, before)


def test_upstream_gradient_scales_without_changing_the_forward_gradient():
    x = torch.randn(6, 9, requires_grad=True)
    t = torch.tensor([0, 8, 2, -100, 4, 5])
    for up in (1.0, 2.5, 0.0, -3.0):
        loss, grad = _loss_and_grad(x, t, None, torch.tensor(up), "triton", label_smoothing=0.1)
        ref_loss, ref_grad = _loss_and_grad(
            x, t, None, torch.tensor(up), "torch", label_smoothing=0.1
        )
        torch.testing.assert_close(grad, ref_grad, **F32)
    _, g1 = _loss_and_grad(x, t, None, torch.tensor(1.0), "triton", reduction="sum")
    _, g2 = _loss_and_grad(x, t, None, torch.tensor(2.0), "triton", reduction="sum")
    assert torch.equal(g2, 2.0 * g1)  # scaling by a power of two is exact


@interpreted_only
def test_backward_hands_over_the_forward_buffer_without_a_copy():
    """The gradient written in forward becomes the leaf's .grad itself (scaled in place when g != 1)."""
    x = torch.randn(4, 9, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    for scale in (1.0, 2.0):
        x.grad = None
        loss, lse, coef, grad = ops.triton_ce(
            x, t, None, None, -100, 0.0, 0.0, 0.0, False, 0, "sum", True
        )
        ptr = grad.data_ptr()
        del grad, lse, coef
        (loss * scale).backward()
        assert x.grad.data_ptr() == ptr


def test_bitwise_deterministic(block_path):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 200, generator=g).bfloat16()
    t = torch.randint(0, 200, (4,), generator=g)
    w = torch.rand(200, generator=g).bfloat16()
    kw = dict(label_smoothing=0.1, z_loss=1e-3, softcap=20.0)
    a = _loss_and_grad(x, t, w, torch.tensor(1.3), "triton", **kw)
    b = _loss_and_grad(x, t, w, torch.tensor(1.3), "triton", **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_split_config_splits_only_few_long_rows():
    assert configs.split_config(8192, 128256, 16384)[0] == 1  # many rows: one program per row
    assert configs.split_config(64, 1000, 1024)[0] == 1  # the row fits one block
    n_chunks, chunk = configs.split_config(64, 256000, 16384)  # few long rows: split
    assert (
        n_chunks > 1 and chunk % 16384 == 0 and (n_chunks - 1) * chunk < 256000 <= n_chunks * chunk
    )


# ---------------------------------------------------------------------------------------------------
# Custom ops: registrations and torch.compile(fullgraph=True)
# ---------------------------------------------------------------------------------------------------


@interpreted_only
def test_custom_op_registrations():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 11, generator=g, requires_grad=True)
    t = torch.tensor([1, -100, 10])
    den = torch.tensor(2.0)
    # test_aot_dispatch_dynamic is left out for triton_ce: opcheck also returns the gradient buffer as a
    # graph output, which backward then scales in place; torch.compile (below) covers the real graph.
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    for red, d in (("mean", den), ("sum", None), ("none", None)):
        torch.library.opcheck(
            ops.triton_ce,
            (x, t, None, d, -100, 0.1, 0.01, 2.0, False, 0, red, True),
            test_utils=checks,
        )
    torch.library.opcheck(ops.triton_ce_scale_, (torch.randn(3, 11), torch.tensor(2.0), False))
    stats = (torch.randn(3).abs() + 1.0, torch.rand(3) + 0.5)  # lse, coef
    torch.library.opcheck(
        ops.triton_ce_rows_backward,
        (x.detach(), t, None, *stats, torch.randn(3), -100, 0.1, 0.0, 0.0, False),
    )
    torch.library.opcheck(
        ops.triton_ce_inplace_,
        (x.detach().clone(), t, None, den, -100, 0.1, 0.0, 0.0, False, "mean"),
    )


@interpreted_only
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph(reduction):
    """The backend's entry point traces as one graph (aot_eager here; inductor in the GPU test)."""
    t = torch.tensor([0, 3, -100, 8])
    w = torch.rand(9) + 0.5
    math = eager.CrossEntropyMath(
        reduction, ce_options(label_smoothing=0.1, z_loss=0.01, reduction=reduction), False
    )
    den = torch.tensor(2.5) if reduction == "mean" else None

    def f(leaf):
        x = leaf * 2.0
        impl = _dispatch.resolve("cross_entropy", "triton", x)  # dispatch traces too
        return impl(math, x, t, w, den)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaf = torch.randn(4, 9, requires_grad=True)
    loss = compiled(leaf)
    up = _upstream(reduction, (4,))
    (grad,) = torch.autograd.grad(loss, leaf, up)
    ref = eager.row_loss(math, leaf * 2.0, t, w, None, den)
    (ref_grad,) = torch.autograd.grad(ref, leaf, up)
    torch.testing.assert_close(loss, ref, **F32)
    torch.testing.assert_close(grad, ref_grad, **F32)


# Compiles the kernels for an H100 (sm_90a) on a machine without a GPU: the interpreter runs the kernels'
# Python and lets through what the compiler rejects (types of loop-carried values, constexpr misuse).
# Prints the spill bytes ptxas reports for the configuration ce_config picks at each register load.
_SM90_SCRIPT = r"""
from crossent._backends.triton import ce, configs


def ce_kernel(dt, prob, weight, opts, rows, save, grad, single, chunks, block, warps):
    types = {"X": "*" + dt, "T": "*fp32" if prob else "*i64", "W": "*" + dt, "G": "*fp32",
             "LOSS": "*fp32", "LSE": "*fp32", "COEF": "*fp32", "PART": "*fp32", "DX": "*" + dt,
             "C": "i32", "chunk_size": "i32", "n_chunks": "i32", "stride_xm": "i64",
             "stride_tm": "i64", "stride_dxm": "i64", "ignore_index": "i64", "eps": "fp32",
             "z_loss": "fp32", "cap": "fp32", "g_scale": "fp32"}
    consts = dict(PROB_TARGET=prob, HAS_SMOOTH=opts, HAS_ZLOSS=opts, HAS_SOFTCAP=opts, G_MODE=1,
                  ROW_STATS=rows, SAVE_COEF=save, WRITE_GRAD=grad, HAS_WEIGHT=weight,
                  SINGLE_BLOCK=single, MAX_CHUNKS=chunks, BLOCK=block)
    if not weight:
        consts["W"] = None
    return build(ce._ce_kernel, types, consts, warps)


for prob, weight, opts, grad in itertools.product((False, True), repeat=4):
    ce_kernel("bf16", prob, weight, opts, 0, False, grad, True, 1, 1024, 4)  # one block
    ce_kernel("fp32", prob, weight, opts, 0, not grad, grad, False, 1, 256, 4)  # two passes
    ce_kernel("bf16", prob, weight, opts, 1, False, grad, False, 8, 256, 4)  # split: merge
    if grad:
        ce_kernel("fp16", prob, weight, opts, 2, False, True, False, 1, 256, 4)  # none: backward
    types = {"X": "*bf16", "T": "*fp32" if prob else "*i64", "W": "*bf16", "PART": "*fp32",
             "C": "i32", "chunk_size": "i32", "n_chunks": "i32", "stride_xm": "i64",
             "stride_tm": "i64", "cap": "fp32"}
    consts = dict(PROB_TARGET=prob, HAS_SMOOTH=opts, HAS_SOFTCAP=opts, HAS_WEIGHT=weight, BLOCK=256)
    if not weight:
        consts["W"] = None
    build(ce._ce_partial_kernel, types, consts, 4)
build(ce._scale_kernel, {"DX": "*bf16", "G": "*fp32", "C": "i32", "stride_dxm": "i64"},
      dict(PER_ROW=True, BLOCK=4096), 8)
for prob, weight, opts in itertools.product((False, True), repeat=3):
    live = configs.live_arrays(prob_target=prob, weighted=weight, smoothing=opts, softcap=opts)
    block, warps = configs.ce_config(32000, 2, live)
    k = ce_kernel("bf16", prob, weight, opts, 0, False, True, True, 1, block, warps)
    print(f"live={live} BLOCK={block} warps={warps} spill={spills(k)}")
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    """Every kernel variant compiles for sm_90a, and the single-block configs chosen by ce_config do not
    spill registers (ptxas -v). Needs Triton's NVIDIA backend (bundled ptxas), not a GPU."""
    report = [line for line in sm90.run(_SM90_SCRIPT).split("\n") if line.startswith("live=")]
    assert len(report) == 8
    assert all(line.endswith("spill=0") for line in report), "\n".join(report)


# ---------------------------------------------------------------------------------------------------
# GPU only (compiled kernels): large shapes, compile, CUDA graphs, no host sync
# ---------------------------------------------------------------------------------------------------

compiled_kernels = pytest.mark.skipif(
    INTERPRETED, reason="needs compiled kernels (TRITON_INTERPRET=0)"
)


def _rows_reference(x, t, w, **kw):
    """Eager fp32 loss rows and gradient rows of (M, C) logits (for checking a few rows of a large case)."""
    xa = x.detach().float().requires_grad_()
    loss = crossent.cross_entropy(xa, t, w, reduction="none", backend="torch", **kw)
    loss.sum().backward()
    return loss.detach(), xa.grad


@pytest.mark.gpu
@compiled_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_large_vocabulary(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    n, v = 64, 256000
    x = (torch.randn(n, v, device="cuda", generator=g) * 4).to(dtype).requires_grad_()
    t = torch.randint(0, v, (n,), device="cuda", generator=g)
    t[3] = -100
    w = torch.rand(v, device="cuda", generator=g).to(dtype) + 0.5
    kw = dict(label_smoothing=0.1, z_loss=1e-4, softcap=30.0)
    before = x.detach().clone()
    loss = crossent.cross_entropy(
        x, t, w, reduction="none", backend="triton", **kw
    )  # 64 rows: split
    loss.sum().backward()
    assert torch.equal(x.detach(), before)  # the logits are untouched
    ref_loss, ref_grad = _rows_reference(x, t, w, **kw)
    torch.testing.assert_close(loss, ref_loss, rtol=3e-5, atol=3e-5)
    tol = dict(rtol=1e-2, atol=1e-6) if dtype == torch.bfloat16 else F32
    torch.testing.assert_close(x.grad.float(), ref_grad.to(x.grad.dtype).float(), **tol)


@pytest.mark.gpu
@compiled_kernels
def test_gpu_more_than_2_31_elements():
    v = 128256
    n = 2**31 // v + 16  # the last rows start past element 2^31: int32 offsets would wrap
    x = torch.randn(n, v, device="cuda", dtype=torch.bfloat16).requires_grad_()
    t = torch.randint(0, v, (n,), device="cuda")
    loss = crossent.cross_entropy(x, t, reduction="sum", backend="triton")
    loss.backward()
    tail = slice(n - 16, n)
    ref_loss, ref_grad = _rows_reference(x[tail], t[tail], None)
    head_loss, head_grad = _rows_reference(x[:16], t[:16], None)
    rows = crossent.cross_entropy(x.detach(), t, reduction="none", backend="triton")
    torch.testing.assert_close(rows[tail], ref_loss, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(rows[:16], head_loss, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(
        x.grad[tail].float(), ref_grad.bfloat16().float(), rtol=1e-2, atol=1e-7
    )
    torch.testing.assert_close(
        x.grad[:16].float(), head_grad.bfloat16().float(), rtol=1e-2, atol=1e-7
    )
    torch.testing.assert_close(loss, rows.sum(), rtol=1e-5, atol=1e-3)


@pytest.mark.gpu
@compiled_kernels
def test_gpu_compile_fullgraph_inductor_and_no_host_sync():
    x = torch.randn(512, 32000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, 32000, (512,), device="cuda")
    t[::7] = -100

    def f(x, t):
        return crossent.cross_entropy(x, t, label_smoothing=0.1, z_loss=1e-4, backend="triton")

    compiled = torch.compile(f, fullgraph=True)
    loss = compiled(x, t)
    (grad,) = torch.autograd.grad(loss, x)
    ref_loss, ref_grad = _rows_reference(x, t, None, label_smoothing=0.1, z_loss=1e-4)
    valid = (t != -100).sum()
    torch.testing.assert_close(loss, ref_loss.sum() / valid, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        grad.float(), (ref_grad / valid).bfloat16().float(), rtol=1e-2, atol=1e-7
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # eager path: forward and backward without a host synchronisation
        loss = f(x, t)
        torch.autograd.grad(loss, x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@compiled_kernels
def test_gpu_cuda_graph_capture_and_determinism():
    x = torch.randn(256, 50000, device="cuda", dtype=torch.bfloat16)
    t = torch.randint(0, 50000, (256,), device="cuda")
    w = torch.rand(50000, device="cuda", dtype=torch.bfloat16) + 0.5
    static_x = x.clone().requires_grad_()

    def step():
        loss = crossent.cross_entropy(static_x, t, w, label_smoothing=0.1, backend="triton")
        (grad,) = torch.autograd.grad(loss, static_x)
        return loss, grad

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        eager_loss, eager_grad = step()  # warm-up (compiles the kernels) outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_loss, g_grad = step()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(g_loss, eager_loss) and torch.equal(g_grad, eager_grad)
    again = step()
    assert torch.equal(again[0], eager_loss) and torch.equal(again[1], eager_grad)


# ---------------------------------------------------------------------------------------------------
# A second backward through the same graph, and second derivatives (ops.py module docstring)
# ---------------------------------------------------------------------------------------------------

BACKWARD_TWICE = [
    ("sum", dict(label_smoothing=0.1)),
    ("mean", dict(ignore_index=3, z_loss=0.01)),
    ("none", dict(softcap=2.0)),
]


def _twice_inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    leaf = torch.randn(5, 7, generator=g, requires_grad=True)
    return leaf, torch.tensor([0, 3, 6, 3, 1])


@pytest.mark.parametrize("reduction,kw", BACKWARD_TWICE, ids=[r for r, _ in BACKWARD_TWICE])
def test_retain_graph_backward_twice_matches_eager(reduction, kw):
    """The logits are a temporary (dropped by the caller): a retained graph still backwards twice."""
    leaf, t = _twice_inputs()
    up = _upstream(reduction, (5,))
    eager_grad = torch.autograd.grad(
        _ce(leaf * 2.0, t, backend="torch", reduction=reduction, **kw), leaf, up
    )[0]
    loss = _ce(leaf * 2.0, t, reduction=reduction, **kw)
    loss.backward(up, retain_graph=True)
    torch.testing.assert_close(leaf.grad, eager_grad, **F32)
    loss.backward(up)  # .grad accumulates the second, equal, gradient
    torch.testing.assert_close(leaf.grad, 2 * eager_grad, **F32)


@pytest.mark.parametrize("reduction,kw", BACKWARD_TWICE, ids=[r for r, _ in BACKWARD_TWICE])
def test_autograd_grad_twice_then_freed(reduction, kw):
    leaf, t = _twice_inputs(4)
    up = _upstream(reduction, (5,))
    ref = torch.autograd.grad(
        _ce(leaf * 2.0, t, backend="torch", reduction=reduction, **kw), leaf, up
    )[0]
    loss = _ce(leaf * 2.0, t, reduction=reduction, **kw)
    for retain in (True, True, False):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=retain)
        torch.testing.assert_close(grad, ref, **F32)
    with pytest.raises(RuntimeError, match="second time"):  # torch's error, as for any other node
        torch.autograd.grad(loss, leaf, up)


DOUBLE = [
    ("sum", False, dict(label_smoothing=0.1, weighted=True)),
    ("mean", False, dict(ignore_index=3, z_loss=0.01, softcap=2.0, weighted=True)),
    ("none", False, dict(label_smoothing=0.2, softcap=3.0)),
    ("mean", True, dict(label_smoothing=0.1, z_loss=0.01, weighted=True)),
    ("none", True, {}),
]


DOUBLE_IDS = [f"{r}-{'prob' if p else 'index'}" for r, p, _ in DOUBLE]


@pytest.mark.parametrize("reduction,prob_target,kw", DOUBLE, ids=DOUBLE_IDS)
def test_double_backward_matches_eager_backend(reduction, prob_target, kw):
    """create_graph=True: the gradient has a graph; Hessian-vector products match the eager backend's
    (whose backward is the differentiable reference), also through a (B, T, C) view of held logits."""
    g = torch.Generator().manual_seed(6)
    leaf = torch.randn(2, 3, 7, generator=g, requires_grad=True)
    kw = dict(kw)
    w = torch.rand(7, generator=g) + 0.5 if kw.pop("weighted", False) else None
    if prob_target:
        t = torch.softmax(torch.randn(6, 7, generator=g), 1)
    else:
        t = torch.tensor([0, 3, 6, 3, 1, 2])
    up = _upstream(reduction, (6,))
    v = torch.randn(2, 3, 7, generator=g)
    hvps = []
    for backend in ("triton", "torch"):
        logits = leaf * 2.0  # held by the caller; its (6, 7) view is not
        loss = _ce(logits.view(6, 7), t, w, backend=backend, reduction=reduction, **kw)
        (grad,) = torch.autograd.grad(loss, leaf, up, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), leaf)
        hvps.append((grad.detach(), hvp))
    torch.testing.assert_close(hvps[0][0], hvps[1][0], **F32)
    torch.testing.assert_close(hvps[0][1], hvps[1][1], **F32)


def test_double_backward_matches_torch_cross_entropy():
    leaf, t = _twice_inputs(7)
    results = []
    for fn in (_ce, F.cross_entropy):
        x = leaf * 1.5
        (grad,) = torch.autograd.grad(fn(x, t, label_smoothing=0.1), leaf, create_graph=True)
        results.append(torch.autograd.grad((grad**2).sum(), leaf)[0])
    torch.testing.assert_close(results[0], results[1], **F32)


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")  # float32 inputs, on purpose
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradgradcheck_float32(reduction):
    """Second derivatives (w.r.t. the logits and the upstream gradient) by finite differences; float32,
    so a coarse step and tolerances (float64 inputs would go to the eager backend)."""
    leaf, t = _twice_inputs(8)
    x = leaf.detach().clone().requires_grad_()

    def fn(x):
        return _ce(x, t, reduction=reduction, label_smoothing=0.1, z_loss=0.01)

    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-2, atol=2e-3, rtol=2e-2)


def test_double_backward_needs_the_logits():
    """The forward keeps only the gradient: without the logits a second derivative is an error that says
    what to do, never a wrong (or graph-less) gradient."""
    leaf, t = _twice_inputs(9)
    loss = _ce(leaf * 2.0, t)  # the logits are dropped at once
    with pytest.raises(RuntimeError, match="Keep a reference"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    logits = leaf * 2.0
    loss = _ce(logits, t)
    with torch.no_grad():
        logits.add_(1.0)  # modified after the forward: its gradient would be another one
    with pytest.raises(RuntimeError, match="modified in place"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    loss = _ce(leaf * 2.0, t)  # the first-order gradient still works (the buffer was left unused)
    torch.testing.assert_close(
        torch.autograd.grad(loss, leaf)[0],
        torch.autograd.grad(_ce(leaf * 2.0, t, backend="torch"), leaf)[0],
        **F32,
    )


@pytest.mark.parametrize("fn", ["cross_entropy", "focal_loss"])
@pytest.mark.parametrize("layout", ["transposed rows", "(N, C, d1, d2)", "strided prob target"])
def test_double_backward_through_layout_copies(fn, layout):
    """Logits the kernel sees only as a copy made inside crossent (class axis moved last, strided rows
    made contiguous) are held by the graph itself: the caller holds the original, so create_graph must
    work as on the eager backend (the copy is not the caller's to keep alive)."""
    g = torch.Generator().manual_seed(11)
    if layout == "transposed rows":
        x = torch.randn(7, 10, generator=g).t().requires_grad_(True)  # (10, 7), class stride 10
        t = torch.randint(0, 7, (10,), generator=g)
    elif layout == "(N, C, d1, d2)":
        x = torch.randn(2, 7, 3, 4, generator=g, requires_grad=True)
        t = torch.randint(0, 7, (2, 3, 4), generator=g)
    else:
        x = torch.randn(10, 7, generator=g, requires_grad=True)
        t = torch.softmax(torch.randn(7, 10, generator=g), 0).t()  # strided probability rows
    f = getattr(crossent, fn)
    grads = []
    for backend in ("triton", "torch"):
        (gx,) = torch.autograd.grad(f(x, t, backend=backend), x, create_graph=True)
        (hvp,) = torch.autograd.grad((gx * gx).sum(), x)
        grads.append((gx.detach(), hvp))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **F32)


@interpreted_only
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_backward_twice_and_no_second_derivative(reduction):
    leaf, t = _twice_inputs(10)
    up = _upstream(reduction, (5,))
    ref = torch.autograd.grad(_ce(leaf * 2.0, t, backend="torch", reduction=reduction), leaf, up)[0]
    loss = _ce(leaf * 2.0, t, reduction=reduction, inplace=True)
    for retain in (True, False):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=retain)
        torch.testing.assert_close(grad, ref, **F32)
    loss = _ce(leaf * 2.0, t, reduction=reduction, inplace=True)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(loss, leaf, up, create_graph=True)


@interpreted_only
def test_torch_compile_retained_graph_backwards_twice():
    t = torch.tensor([0, 3, -100, 8])
    math = eager.CrossEntropyMath("sum", ce_options(reduction="sum"), False)

    def f(leaf):
        return _dispatch.resolve("cross_entropy", "triton", leaf)(math, leaf * 2.0, t, None, None)

    leaf = torch.randn(4, 9, requires_grad=True)
    ref = torch.autograd.grad(eager.row_loss(math, leaf * 2.0, t), leaf, torch.tensor(3.0))[0]
    loss = torch.compile(f, fullgraph=True, backend="aot_eager")(leaf)
    for retain in (True, False):
        (grad,) = torch.autograd.grad(loss, leaf, torch.tensor(3.0), retain_graph=retain)
        torch.testing.assert_close(grad, ref, **F32)


@interpreted_only
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_on_split_rows(monkeypatch, reduction):
    """Split rows write the gradient over the logits in a second launch, after the loss read z_y."""
    _use_path(monkeypatch, "split")
    g = torch.Generator().manual_seed(11)
    leaf = torch.randn(3, 300, generator=g, requires_grad=True)
    t = torch.tensor([299, 0, 150])
    up = _upstream(reduction, (3,))
    kw = dict(reduction=reduction, label_smoothing=0.1, softcap=5.0)
    ref_loss, ref_grad = _loss_and_grad(leaf, t, None, up, "torch", **kw)
    # The race cannot show under the interpreter (programs run one after another), so the launch
    # structure is asserted too: the first launch writes no gradient, the second writes it over the logits.
    from crossent._backends.triton import chunk

    launches = []
    real = chunk.launch_ce

    def spy(x, *args, **kwargs):
        launches.append(args[6] is x)  # dx (the 8th positional argument) is the logits themselves
        return real(x, *args, **kwargs)

    monkeypatch.setattr(chunk, "launch_ce", spy)
    h = leaf * 1.0
    loss = _ce(h, t, inplace=True, **kw)
    assert launches == [False, True], launches
    torch.testing.assert_close(loss, ref_loss, **F32)
    torch.testing.assert_close(torch.autograd.grad(loss, leaf, up)[0], ref_grad, **F32)


@interpreted_only
def test_second_backward_without_the_keep_graph_probe_recomputes(monkeypatch):
    """Where torch lacks the probe, a retained graph's second backward recomputes from the held logits,
    and raises (never returns a twice-scaled buffer) when they are gone."""
    monkeypatch.setattr(handover, "_KEEP_GRAPH", None)
    leaf, t = _twice_inputs(12)
    up = torch.tensor(0.7)
    ref = torch.autograd.grad(_ce(leaf * 2.0, t, backend="torch"), leaf, up)[0]
    logits = leaf * 2.0
    loss = _ce(logits, t)
    for _ in range(2):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=True)
        torch.testing.assert_close(grad, ref, **F32)
    loss = _ce(leaf * 2.0, t)
    torch.autograd.grad(loss, leaf, up, retain_graph=True)
    with pytest.raises(RuntimeError, match="a second backward .* Keep a reference"):
        torch.autograd.grad(loss, leaf, up)
