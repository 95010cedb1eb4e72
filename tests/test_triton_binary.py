"""The Triton kernels of ``binary_cross_entropy_with_logits`` and ``sigmoid_focal_loss`` (``backend="triton"``).

On a machine without an NVIDIA GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set
below and in conftest, before anything imports Triton), with a small block (``binary.BLOCK = 256``) so
that every shape spans several programs with a partial last block.

Oracles: ``torch.nn.functional.binary_cross_entropy_with_logits`` in float64 on the same (rounded)
inputs, torchvision's sigmoid focal loss written out in float64 (``_focal64``), gradients by autograd
through those; the eager backend (``backend="torch"``) for the NaN/inf pattern of the focal loss.
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
from crossent._backends import eager  # noqa: E402
from crossent._backends.triton import binary, binary_ops, handover  # noqa: E402
from crossent._contract import CrossentValueError  # noqa: E402
from oracle import TOL  # noqa: E402

pytestmark = [
    pytest.mark.triton,
    # numpy's warnings from inside the interpreter (inf − inf, 0·inf, log 0: the tested non-finite cases)
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="CPU tensors under TRITON_INTERPRET=1"
    ),
]

F32 = TOL[torch.float32]
SHAPES = [(), (7,), (37, 53), (3, 5, 11)]  # 0-d, 1-D, (N, C) with a partial block, 3-D
LOW = [torch.bfloat16, torch.float16]


@pytest.fixture(autouse=True)
def small_block(monkeypatch):
    monkeypatch.setattr(binary, "BLOCK", 256)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _inputs(shape, targets="soft", seed=0):
    g = _gen(seed)
    x = torch.randn(shape, generator=g) * 4
    t = torch.rand(shape, generator=g)
    if targets == "hard":
        t = (t > 0.5).float()
    return x, t


def _weight(kind, shape, seed=1):
    g = _gen(seed)
    if kind is None:
        return None
    wshape = {"C": shape[-1:], "full": shape, "row": shape[:-1] + (1,)}[kind]
    return torch.rand(wshape, generator=g) * 2 + 0.1


def _upstream(loss, seed=3):
    return torch.randn(loss.shape, generator=_gen(seed)) if loss.dim() else torch.tensor(1.7)


def _run(fn, x, t, *args, up=None, **kw):
    """(loss, grad of (up · loss).sum() w.r.t. x) for the loss function ``fn``."""
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, *args, **kw)
    up = _upstream(loss) if up is None else up
    (grad,) = torch.autograd.grad(loss, x, up.to(loss.dtype))
    return loss.detach(), grad, up


def _d(v):
    return None if v is None else v.detach().double()


def _bce64(x, t, w=None, reduction="mean", pos_weight=None):
    return F.binary_cross_entropy_with_logits(
        x, t.double(), _d(w), reduction=reduction, pos_weight=_d(pos_weight)
    )


def _focal64(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, in float64."""
    t = t.double()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _oracle(fn64, x, t, *args, up, **kw):
    """The float64 loss and gradient on the rounded inputs."""
    return _run(fn64, x.double(), t, *args, up=up.double(), **kw)[:2]


def _bce(*args, **kw):
    return crossent.binary_cross_entropy_with_logits(*args, backend="triton", **kw)


def _focal(*args, **kw):
    return crossent.sigmoid_focal_loss(*args, backend="triton", **kw)


@pytest.fixture
def triton_only(monkeypatch):
    """The eager backend raises: the result must come from the kernel."""

    def refuse(*args, **kw):
        raise AssertionError("the eager fallback was called")

    monkeypatch.setattr(eager, "row_loss", refuse)


# ---------------------------------------------------------------------------------------------------
# Values and gradients against torch in float64
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight", [None, "C", "full"])
@pytest.mark.parametrize("pos_weight", [None, "C"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_bce_matches_torch_float64(triton_only, shape, weight, pos_weight, reduction, targets):
    if shape == () and "C" in (weight, pos_weight):
        pytest.skip("no class axis")
    x, t = _inputs(shape, targets)
    w, pw = _weight(weight, shape), _weight(pos_weight, shape, seed=2)
    loss, grad, up = _run(_bce, x, t, w, reduction=reduction, pos_weight=pw)
    ref, ref_grad = _oracle(_bce64, x, t, w, up=up, reduction=reduction, pos_weight=pw)
    assert loss.dtype == torch.float32 and loss.shape == ref.shape and grad.dtype == x.dtype
    torch.testing.assert_close(loss.double(), ref, **F32)
    torch.testing.assert_close(grad.double(), ref_grad, **F32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_focal_matches_torchvision_float64(triton_only, shape, alpha, gamma, reduction, targets):
    x, t = _inputs(shape, targets, seed=4)
    loss, grad, up = _run(_focal, x, t, alpha, gamma, reduction)
    ref, ref_grad = _oracle(_focal64, x, t, alpha, gamma, reduction, up=up)
    assert loss.dtype == torch.float32 and loss.shape == ref.shape and grad.dtype == x.dtype
    torch.testing.assert_close(loss.double(), ref, **F32)
    torch.testing.assert_close(grad.double(), ref_grad, **F32)


def test_focal_vector_72(triton_only):
    x = torch.tensor([-3.0, 0.0, 2.0, 5.0])
    t = torch.tensor([1.0, 0.5, 0.0, 1.0])
    expected = [0.6915701102563155, 0.08664339756999316, 1.2375586345660565, 7.520225563169966e-08]
    torch.testing.assert_close(_focal(x, t).double(), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("loss_name", ["bce", "focal"])
def test_half_precision_inputs(triton_only, dtype, reduction, loss_name):
    """fp32 math: the loss (float32) is the float64 value of the rounded inputs to fp32 accuracy; the
    gradient is that value rounded once to the input's dtype (twice with an upstream factor ≠ 1 on a
    reduced loss). Allowed: 2 ulps (the interpreter's float32 → bfloat16 cast truncates instead of
    rounding to nearest, so each rounding costs up to 1 ulp there)."""
    shape = (37, 53)
    x, t = _inputs(shape, "soft", seed=5)
    x, t = x.to(dtype), t.to(dtype)
    if loss_name == "bce":
        w, pw = _weight("C", shape).to(dtype), _weight("C", shape, seed=2)
        loss, grad, up = _run(_bce, x, t, w, reduction=reduction, pos_weight=pw)
        ref, ref_grad = _oracle(_bce64, x, t, w, up=up, reduction=reduction, pos_weight=pw)
    else:
        loss, grad, up = _run(_focal, x, t, 0.25, 2.0, reduction)
        ref, ref_grad = _oracle(_focal64, x, t, 0.25, 2.0, reduction, up=up)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss.double(), ref, **F32)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    atol = 2 * eps * tiny + 1e-6 * ref_grad.abs().max().item()  # 2 ulps of the subnormals
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2 * eps, atol=atol)


# ---------------------------------------------------------------------------------------------------
# Extreme and non-finite logits
# ---------------------------------------------------------------------------------------------------

EXTREME = [-float("inf"), -100.0, -50.0, -1e-8, 0.0, 1e-8, 50.0, 100.0, float("inf"), float("nan")]


def _extreme_grid():
    x = torch.tensor(EXTREME).repeat_interleave(3)
    t = torch.tensor([0.0, 1.0, 0.5]).repeat(len(EXTREME))
    return x, t


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_extreme_logits_like_torch(triton_only, pos_weight):
    x, t = _extreme_grid()
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    loss, grad, up = _run(_bce, x, t, None, reduction="none", pos_weight=pw)
    ref, ref_grad = _oracle(_bce64, x, t, None, up=up, reduction="none", pos_weight=pw)
    torch.testing.assert_close(loss.double(), ref, equal_nan=True, **F32)  # same NaN/inf pattern
    torch.testing.assert_close(grad.double(), ref_grad, equal_nan=True, **F32)
    for reduction in ("sum", "mean"):  # a NaN anywhere makes the reduced loss NaN, like torch
        assert torch.isnan(_bce(x, t, reduction=reduction, pos_weight=pw))


@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_focal_extreme_logits_like_eager(gamma):
    x, t = _extreme_grid()
    got = _run(_focal, x, t, 0.25, gamma, "none", up=torch.ones(x.shape))[:2]
    want = _run(crossent.sigmoid_focal_loss, x, t, 0.25, gamma, "none", up=torch.ones(x.shape))
    for a, b in zip(got, want[:2]):
        torch.testing.assert_close(a, b, equal_nan=True, **F32)
    finite = x.abs() <= 50  # the loss against torchvision where its formula is defined
    ref = _focal64(x.double()[finite], t[finite], 0.25, gamma)
    torch.testing.assert_close(got[0][finite].double(), ref, **F32)


# ---------------------------------------------------------------------------------------------------
# Layouts: broadcast weights, strided and expanded operands
# ---------------------------------------------------------------------------------------------------


def test_broadcast_and_strided_operands(triton_only):
    """Row weights (N, 1), a transposed input, an expanded target, a 0-d pos_weight, a 4-D broadcast
    that does not coalesce into three dims (materialised), and a per-element upstream of stride 0."""
    g = _gen(7)
    x = (torch.randn(53, 37, generator=g) * 3).t()  # (37, 53), column-major
    t = torch.rand(53, generator=g).expand(37, 53)
    w = _weight("row", (37, 53))
    pw = torch.tensor(2.5)
    loss, grad, up = _run(_bce, x, t, w, reduction="none", pos_weight=pw)
    ref, ref_grad = _oracle(_bce64, x, t, w, up=up, reduction="none", pos_weight=pw)
    torch.testing.assert_close(loss.double(), ref, **F32)
    torch.testing.assert_close(grad.double(), ref_grad, **F32)

    x4, t4 = _inputs((2, 3, 4, 5), seed=8)
    w4 = torch.rand(2, 1, 4, 1, generator=g) + 0.5
    pw4 = torch.rand(3, 1, 5, generator=g) + 0.5
    up4 = torch.tensor(0.5).expand(2, 3, 4, 5)  # what loss.sum()·0.5 sends back: all strides 0
    loss, grad, _ = _run(_bce, x4, t4, w4, reduction="none", pos_weight=pw4, up=up4)
    ref, ref_grad = _oracle(_bce64, x4, t4, w4, up=up4, reduction="none", pos_weight=pw4)
    torch.testing.assert_close(loss.double(), ref, **F32)
    torch.testing.assert_close(grad.double(), ref_grad, **F32)


def test_layout_coalescing():
    shape = torch.Size((6, 4, 5))
    assert binary.layout(torch.zeros(shape), shape)[1] == 1  # contiguous: one dim
    # layout(...)[2] = (S1, S2, T0, T1, T2): (C,) along the last dim; one value per leading index
    assert binary.layout(torch.zeros(5), shape)[1:] == (2, (24, 5, 0, 0, 1))
    assert binary.layout(torch.zeros(6, 1, 1), shape)[1:] == (2, (6, 20, 0, 1, 0))
    assert binary.layout(torch.zeros(4, 1), shape)[1] == 3
    v, ndim, _ = binary.layout(torch.zeros(2, 1, 4, 1), torch.Size((2, 3, 4, 5)))
    assert ndim == 1 and v.is_contiguous()  # four dims left: materialised
    assert binary.layout(torch.tensor(2.0), shape)[1:] == (1, (1, 120, 0, 0, 0))  # stride 0


# ---------------------------------------------------------------------------------------------------
# Properties: no mutation, determinism, the upstream factor, dispatch and fallbacks
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_no_mutation_and_bitwise_determinism(triton_only, reduction):
    x, t = _inputs((37, 53), "soft", seed=9)
    x = x.to(torch.bfloat16)
    w, pw = _weight("C", (37, 53)), _weight("full", (37, 53), seed=2)
    before = [v.clone() for v in (x, t, w, pw)]
    runs = [_run(_bce, x, t, w, reduction=reduction, pos_weight=pw) for _ in range(2)]
    runs += [_run(_focal, x, t, 0.25, 2.0, reduction) for _ in range(2)]
    for v, b in zip((x, t, w, pw), before):
        assert torch.equal(v, b)
    for a, b in (runs[0], runs[1]), (runs[2], runs[3]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reduced_loss_upstream_one_and_scaled(triton_only, reduction):
    """The gradient written in the forward (upstream 1) and its in-place scaling in backward."""
    x, t = _inputs((37, 53), seed=10)
    for up in (torch.tensor(1.0), torch.tensor(-3.25)):
        loss, grad, _ = _run(_bce, x, t, reduction=reduction, up=up)
        _, ref_grad = _oracle(_bce64, x, t, up=up, reduction=reduction)
        torch.testing.assert_close(grad.double(), ref_grad, **F32)


def test_no_grad_needed(triton_only):
    x, t = _inputs((37, 53), seed=11)
    with torch.no_grad():
        loss = _bce(x.requires_grad_(), t)
    torch.testing.assert_close(loss.double(), _bce64(x.double(), t), **F32)


def test_fallbacks_match_eager():
    """Gradients w.r.t. target/weight/pos_weight and float64 go to the eager backend (same values)."""
    x, t = _inputs((37, 53), seed=12)
    w, pw = _weight("C", (37, 53)), _weight("C", (37, 53), seed=2)
    for backend in ("triton", "torch"):
        ts, ws, pws = (v.clone().requires_grad_() for v in (t, w, pw))
        loss = crossent.binary_cross_entropy_with_logits(x, ts, ws, pos_weight=pws, backend=backend)
        grads = torch.autograd.grad(loss, (ts, ws, pws))
        if backend == "triton":
            got = (loss, *grads)
    for a, b in zip(got, (loss, *grads)):
        assert torch.equal(a, b)
    # float64 math (a float64 target promotes): eager, and the output follows the target's dtype
    out = _bce(x, t.double(), reduction="none")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _bce64(x.double(), t, reduction="none"), **TOL[torch.float64])


def test_fallback_calls_eager(monkeypatch):
    calls = []
    real = eager.row_loss
    monkeypatch.setattr(eager, "row_loss", lambda *a: calls.append(a[0].name) or real(*a))
    x, t = _inputs((5, 3))
    _bce(x.double(), t.double())  # float64: eager
    crossent.sigmoid_focal_loss(x, t)  # "auto" on CPU tensors: eager
    _bce(torch.empty(0, 3), torch.empty(0, 3))  # empty: eager
    assert calls == [
        "binary_cross_entropy_with_logits",
        "sigmoid_focal_loss",
        "binary_cross_entropy_with_logits",
    ]
    assert torch.isnan(_bce(torch.empty(0, 3), torch.empty(0, 3)))  # mean of nothing, like torch


@pytest.mark.parametrize(
    "fn", [crossent.binary_cross_entropy_with_logits, crossent.sigmoid_focal_loss]
)
def test_backend_argument(fn):
    x, t = _inputs((4, 3))
    if fn is crossent.sigmoid_focal_loss:
        with pytest.raises(CrossentValueError, match="'backend'.*no native kernel"):
            fn(x, t, backend="native")
    with pytest.raises(ValueError, match="'backend'"):
        fn(x, t, backend="cuda")
    torch.testing.assert_close(fn(x, t, backend="triton"), fn(x, t, backend="torch"), **F32)


def test_custom_op_registrations():
    x, t = _inputs((9, 7), seed=13)
    x.requires_grad_()
    w, pw = _weight("C", (9, 7)).expand(9, 7), _weight("full", (9, 7), seed=2)
    # test_aot_dispatch_dynamic is left out for triton_binary: opcheck also returns the gradient buffer
    # as a graph output, which backward then scales in place (as for ops.triton_ce).
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    for red in ("none", "sum", "mean"):
        torch.library.opcheck(
            binary_ops.triton_binary, (x, t, w, pw, 0, -1.0, 0.0, red, True), test_utils=checks
        )
        torch.library.opcheck(
            binary_ops.triton_binary, (x, t, None, None, 1, 0.25, 2.0, red, True), test_utils=checks
        )
    torch.library.opcheck(
        binary_ops.triton_binary_backward,
        (x.detach(), t, w, pw, torch.randn(9, 7), 0, -1.0, 0.0, 1.0),
    )
    torch.library.opcheck(binary_ops.triton_binary_scale_, (torch.randn(9, 7), torch.tensor(2.0)))


def test_torch_compile_fullgraph():
    x, t = _inputs((6, 5), seed=14)

    w, pw = _weight("C", (6, 5)), _weight("row", (6, 5), seed=2)

    def f(x, t):
        return _bce(x, t, w, reduction="sum", pos_weight=pw) + _focal(x, t, reduction="mean")

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = _run(compiled, x, t, up=torch.tensor(2.0))
    want = _run(f, x, t, up=torch.tensor(2.0))
    for a, b in zip(got[:2], want[:2]):
        torch.testing.assert_close(a, b, **F32)


# ---------------------------------------------------------------------------------------------------
# A second backward through the same graph, and second derivatives (handover.py, as for CE)
# ---------------------------------------------------------------------------------------------------

TWICE = [("bce", "sum"), ("bce", "mean"), ("bce", "none"), ("focal", "mean"), ("focal", "none")]
TWICE_IDS = [f"{n}-{r}" for n, r in TWICE]
TWICE_SHAPE = (5, 7)


def _twice_loss(name, x, t, reduction="mean", backend="triton"):
    """BCE with (C,) weight and pos_weight, or the sigmoid focal loss, of (5, 7) logits."""
    if name == "bce":
        w, pw = _weight("C", TWICE_SHAPE), _weight("C", TWICE_SHAPE, seed=2)
        return crossent.binary_cross_entropy_with_logits(
            x, t, w, reduction=reduction, pos_weight=pw, backend=backend
        )
    return crossent.sigmoid_focal_loss(x, t, 0.25, 2.0, reduction, backend=backend)


def _twice_inputs(seed):
    x, t = _inputs(TWICE_SHAPE, "soft", seed=seed)
    return x.requires_grad_(), t


@pytest.mark.parametrize("name,reduction", TWICE, ids=TWICE_IDS)
def test_backward_twice_matches_eager(name, reduction):
    """The logits are a temporary (dropped by the caller): a retained graph backwards again, exactly
    (``.backward`` and ``autograd.grad``), until a backward frees it."""
    leaf, t = _twice_inputs(20)
    ref_loss = _twice_loss(name, leaf * 2.0, t, reduction, "torch")
    up = _upstream(ref_loss)
    ref = torch.autograd.grad(ref_loss, leaf, up)[0]
    loss = _twice_loss(name, leaf * 2.0, t, reduction)
    loss.backward(up, retain_graph=True)
    torch.testing.assert_close(leaf.grad, ref, **F32)
    for retain in (True, False):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=retain)
        torch.testing.assert_close(grad, ref, **F32)
    with pytest.raises(RuntimeError, match="second time"):  # torch's error, as for any other node
        loss.backward(up)


@pytest.mark.parametrize("name,reduction", TWICE, ids=TWICE_IDS)
def test_double_backward_matches_torch_and_eager(name, reduction):
    """create_graph=True: gradients and Hessian-vector products equal torch's own (BCE) or the eager
    backend's (sigmoid focal; torch has none), through a (5, 7) view of held (35,) logits."""
    leaf, t = _twice_inputs(22)
    leaf = leaf.detach().view(-1).requires_grad_()
    v = torch.randn(35, generator=_gen(23))
    w, pw = _weight("C", TWICE_SHAPE), _weight("C", TWICE_SHAPE, seed=2)
    results = []
    for backend in ("triton", "reference"):
        logits = leaf * 2.0  # held by the caller; its (5, 7) view is not
        x = logits.view(TWICE_SHAPE)
        if backend == "reference" and name == "bce":
            loss = F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw)
        else:
            loss = _twice_loss(
                name, x, t, reduction, "torch" if backend == "reference" else backend
            )
        (grad,) = torch.autograd.grad(loss, leaf, _upstream(loss), create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), leaf)
        results.append((grad.detach(), hvp))
    torch.testing.assert_close(results[0][0], results[1][0], **F32)
    torch.testing.assert_close(results[0][1], results[1][1], **F32)


@pytest.mark.parametrize("name", ["bce", "focal"])
def test_double_backward_needs_the_logits_and_targets(name):
    leaf, t = _twice_inputs(24)
    public = {"bce": "binary_cross_entropy_with_logits", "focal": "sigmoid_focal_loss"}[name]
    loss = _twice_loss(name, leaf * 2.0, t)  # the logits are dropped at once
    with pytest.raises(RuntimeError, match=f"{public}.*Keep a reference"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    logits = leaf * 2.0
    loss = _twice_loss(name, logits, t.clone())  # held logits, dropped targets (the input's size)
    with pytest.raises(RuntimeError, match="Keep a reference"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    loss = _twice_loss(name, logits, t)  # the first-order gradient needs neither
    torch.testing.assert_close(
        torch.autograd.grad(loss, leaf)[0],
        torch.autograd.grad(_twice_loss(name, leaf * 2.0, t, backend="torch"), leaf)[0],
        **F32,
    )


def test_second_backward_without_the_keep_graph_probe_recomputes(monkeypatch):
    monkeypatch.setattr(handover, "_KEEP_GRAPH", None)
    leaf, t = _twice_inputs(25)
    up = torch.tensor(0.7)
    ref = torch.autograd.grad(_twice_loss("bce", leaf * 2.0, t, backend="torch"), leaf, up)[0]
    logits = leaf * 2.0  # held: the second backward recomputes from it
    loss = _twice_loss("bce", logits, t)
    for _ in range(2):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=True)
        torch.testing.assert_close(grad, ref, **F32)
    loss = _twice_loss("bce", leaf * 2.0, t)
    torch.autograd.grad(loss, leaf, up, retain_graph=True)
    with pytest.raises(RuntimeError, match="a second backward through binary_cross_entropy"):
        torch.autograd.grad(loss, leaf, up)


# Compiles the kernels for an H100 (sm_90a) on a machine without a GPU (the recipe of test_triton.py):
# the interpreter runs the kernels' Python and lets through what the compiler rejects.
_SM90_SCRIPT = r"""
from crossent._backends.triton import binary

def kernel(dt, kind, dims, weights, g_mode, int_gamma, loss, part, grad):
    types = {"X": "*" + dt, "T": "*" + dt, "W": "*fp32", "PW": "*fp32", "G": "*fp32",
             "LOSS": "*fp32", "PART": "*fp32", "DX": "*" + dt, "N": "i64",
             "alpha": "fp32", "gamma": "fp32", "g_scale": "fp32"}
    types.update({f"{p}_{s}": "i64" for p in "xtwpg" for s in ("s1", "s2", "t0", "t1", "t2")})
    consts = dict(KIND=kind, X_DIMS=dims, T_DIMS=dims, W_DIMS=weights, PW_DIMS=weights,
                  G_DIMS=dims, G_MODE=g_mode, HAS_ALPHA=kind == 1, INT_GAMMA=int_gamma,
                  WRITE_LOSS=loss, WRITE_PART=part, WRITE_GRAD=grad, BLOCK=binary.BLOCK)
    return build(binary._binary_kernel, types, consts, binary.NUM_WARPS)


ks = [
    kernel("bf16", 0, 1, 0, 0, 0, 1, 0, 0),  # none, forward
    kernel("fp16", 0, 2, 2, 0, 0, 0, 1, 1),  # sum/mean: partials + gradient
    kernel("bf16", 0, 3, 3, 1, 0, 0, 0, 1),  # backward of none
    kernel("fp32", 1, 1, 0, 0, 2, 0, 1, 1),  # focal, integer γ
    kernel("bf16", 1, 3, 0, 1, -1, 0, 0, 1),  # focal, general γ, backward
    kernel("bf16", 1, 2, 0, 0, 0, 1, 0, 0),  # focal, γ = 0
]
build(binary._scale_kernel, {"DX": "*bf16", "G": "*fp32", "N": "i64"},
      dict(BLOCK=binary.SCALE_BLOCK), binary.NUM_WARPS)
print("spills", sum(spills(k) for k in ks))
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    """The kernel variants compile for sm_90a without spilling (ptxas -v); needs Triton's NVIDIA
    backend (bundled ptxas), not a GPU."""
    out = sm90.run(_SM90_SCRIPT)
    assert "spills 0" in out, out


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_modules_forward_their_backend(backend, monkeypatch):
    """The nn modules of the family pass ``backend=`` through: values equal the functions', and the
    Triton route is the one taken when asked for (the eager fallback patched to raise)."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.rand(6, 5, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    pw = torch.rand(5, generator=g) + 0.5
    want = [
        F.binary_cross_entropy_with_logits(x, t, pos_weight=pw),
        crossent.sigmoid_focal_loss(x, t, 0.25, 2.0, "mean", backend="torch"),
        crossent.focal_loss(x, y, 0.5, 2.0, backend="torch"),
    ]
    if backend == "triton":

        def boom(*args, **kwargs):
            raise AssertionError("the eager fallback was called")

        from crossent._backends import eager

        monkeypatch.setattr(eager, "row_loss", boom)
    got = [
        crossent.nn.BCEWithLogitsLoss(pos_weight=pw, backend=backend)(x, t),
        crossent.nn.SigmoidFocalLoss(0.25, 2.0, "mean", backend=backend)(x, t),
        crossent.nn.FocalLoss(0.5, 2.0, backend=backend)(x, y),
    ]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_sigmoid_focal_confident_positives_relative_accuracy(backend, gamma):
    """1 − p_t = p(1 − t) + σ(−x)·t: no cancellation when p → 1, so confident positives keep float32's
    relative accuracy (p + t − 2pt, torchvision's form, is off by up to ~10 % at x = 15)."""
    x = torch.linspace(6.0, 15.0, 37).requires_grad_(True)
    t = torch.ones(37)
    x64 = x.detach().double().requires_grad_(True)
    ce = F.binary_cross_entropy_with_logits(x64, t.double(), reduction="none")
    ref = 0.25 * ce * torch.sigmoid(-x64) ** gamma  # the exact 1 − p_t in float64
    (ref_grad,) = torch.autograd.grad(ref.sum(), x64)
    loss = crossent.sigmoid_focal_loss(x, t, 0.25, gamma, "none", backend=backend)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert float(((loss.double() - ref) / ref).abs().max()) < 2e-5
    assert float(((grad.double() - ref_grad) / ref_grad).abs().max()) < 2e-5
