"""The Triton softmax focal-loss kernel (``crossent.focal_loss(..., backend="triton")``).

Without an NVIDIA GPU the kernel runs on CPU tensors under ``TRITON_INTERPRET=1`` at small shapes: the
one-read path (C = 7) and the online-softmax path forced by 32-wide blocks (C = 100: four blocks a row,
three passes for probability targets). With a GPU the same tests run the compiled kernel on CUDA.

Oracle: torch autograd through the float64 focal formula written out below (independent of
``crossent.numpy``), and the eager backend (``backend="torch"``) for non-finite rows and bf16.
"""

import itertools
import os

if not os.path.exists("/dev/nvidia0"):  # same rule as conftest: interpret where there is no GPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402

import crossent  # noqa: E402
import sm90  # noqa: E402
from crossent._backends import eager  # noqa: E402
from crossent._backends.triton import configs, focal_ops, handover  # noqa: E402
from oracle import TOL  # noqa: E402

pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
interpreted_only = pytest.mark.skipif(
    not INTERPRETED, reason="checks CPU tensors under TRITON_INTERPRET=1"
)
F32 = TOL[torch.float32]
ROWS = 6
SMALL_BLOCK = 32  # C = 100 then spans four blocks: the multi-block passes


@pytest.fixture(params=["single", "multi"])
def path(request, monkeypatch):
    if request.param == "multi":
        monkeypatch.setattr(configs, "MAX_SINGLE_BLOCK", SMALL_BLOCK)
    return request.param


def _dev(v):
    return v.to(DEVICE) if isinstance(v, torch.Tensor) else v


def _focal(x, t, alpha=None, gamma=2.0, w=None, backend="triton", **kw):
    """crossent.focal_loss, on the GPU when there is one (the loss comes back; autograd follows)."""
    out = crossent.focal_loss(_dev(x), _dev(t), _dev(alpha), gamma, _dev(w), backend=backend, **kw)
    return out.cpu()


def _loss_and_grad(x, t, alpha, gamma, w, up, backend="triton", **kw):
    xa = x.detach().clone().requires_grad_()
    loss = _focal(xa, t, alpha, gamma, w, backend=backend, **kw)
    (grad,) = torch.autograd.grad(loss, xa, up)
    return loss, grad


def _oracle(x, t, alpha, gamma, w, ignore_index=-100, reduction="mean", up=None):
    """ℓ_i = −Σ_c α_c w_c q_ic (1 − p_ic)^γ log p_ic in float64 (reduced), and its autograd gradient
    for the upstream gradient ``up``."""
    x = x.double().requires_grad_()
    loss = _oracle_loss(x, t, alpha, gamma, w, ignore_index, reduction)
    up = torch.ones(()) if up is None else up
    (grad,) = torch.autograd.grad(loss, x, up.double())
    return loss.detach(), grad


def _oracle_loss(x, t, alpha, gamma, w, ignore_index, reduction):
    lp = torch.log_softmax(x, 1)
    prob = t.is_floating_point()
    if prob:
        q = t.double()
    else:
        valid = t != ignore_index
        q = torch.nn.functional.one_hot(torch.where(valid, t, 0), x.shape[1]).double()
        q = q * valid[:, None]
    a = torch.ones(x.shape[1], dtype=torch.float64)
    if alpha is not None:
        a = a * (alpha.double() if isinstance(alpha, torch.Tensor) else alpha)
    if w is not None:
        a = a * w.double()
    mod = (-torch.expm1(lp)) ** gamma
    rows = -torch.where(q != 0, a * q * mod * lp, 0.0).sum(1)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if prob:
        return rows.sum() / x.shape[0]
    wy = torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double()[t.clamp(0)]
    return rows.sum() / torch.where(t != ignore_index, wy, 0.0).sum()


def _inputs(c, prob, weighted, alpha_kind, seed=0, ignore_index=-100):
    g = torch.Generator().manual_seed(seed + c)
    x = torch.randn(ROWS, c, generator=g) * 3
    if prob:
        t = torch.softmax(torch.randn(ROWS, c, generator=g), 1)
        t[2, : c // 2] = 0.0  # zeros in the target (0·log p = 0)
    else:
        t = torch.randint(0, c, (ROWS,), generator=g)
        t[1] = ignore_index
    w = torch.rand(c, generator=g) + 0.5 if weighted else None
    alpha = {"none": None, "float": 0.25, "tensor": torch.rand(c, generator=g) + 0.1}[alpha_kind]
    return x, t, w, alpha


def _upstream(reduction, seed=1):
    if reduction != "none":
        return torch.tensor(0.7)
    return torch.randn(ROWS, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
# The option grid: values and gradients against the float64 formula
# ---------------------------------------------------------------------------------------------------

_FULL = list(
    itertools.product(
        ["index", "prob"],
        ["none", "float", "tensor"],  # alpha
        [0.0, 0.5, 2.0],  # gamma: cross-entropy, γ < 1 (unbounded (1−p)^(γ−1)), the usual 2
        ["none", "sum", "mean"],
        [False, True],  # class weights
        ["single", "multi"],
    )
)
GRID = _FULL[::5]  # 5 is prime to every axis length: each value of each axis appears ~equally


@pytest.mark.parametrize(
    "target,alpha_kind,gamma,reduction,weighted,kernel_path",
    GRID,
    ids=["-".join(map(str, c)) for c in GRID],
)
def test_grid_matches_float64_formula(
    monkeypatch, target, alpha_kind, gamma, reduction, weighted, kernel_path
):
    if kernel_path == "multi":
        monkeypatch.setattr(configs, "MAX_SINGLE_BLOCK", SMALL_BLOCK)
    c = 100 if kernel_path == "multi" else 7
    x, t, w, alpha = _inputs(c, target == "prob", weighted, alpha_kind)
    up = _upstream(reduction)
    oracle, g_oracle = _oracle(x, t, alpha, gamma, w, reduction=reduction, up=up)
    loss, grad = _loss_and_grad(x, t, alpha, gamma, w, up, reduction=reduction)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(loss.double(), oracle, **F32)
    torch.testing.assert_close(grad.double(), g_oracle, **F32)


# ---------------------------------------------------------------------------------------------------
# Identities, ignore_index, layouts
# ---------------------------------------------------------------------------------------------------


def test_gamma_zero_is_cross_entropy(path):
    """γ = 0: α·CE (with class weights and ignored rows), against the cross-entropy kernel."""
    c = 100 if path == "multi" else 7
    x, t, w, _ = _inputs(c, False, True, "none")
    up = torch.tensor(1.3)
    focal = _loss_and_grad(x, t, 0.5, 0.0, w, up)
    xa = x.clone().requires_grad_()
    ce = crossent.cross_entropy(_dev(xa), _dev(t), _dev(w), backend="triton").cpu()
    (g_ce,) = torch.autograd.grad(ce, xa, up)
    torch.testing.assert_close(focal[0], 0.5 * ce.detach(), **F32)
    torch.testing.assert_close(focal[1], 0.5 * g_ce, **F32)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_ignore_index_that_is_a_class(reduction):
    x, t, w, alpha = _inputs(7, False, True, "tensor", ignore_index=0)
    t[3] = 0
    up = _upstream(reduction)
    oracle, g_oracle = _oracle(x, t, alpha, 0.5, w, 0, reduction, up)
    loss, grad = _loss_and_grad(x, t, alpha, 0.5, w, up, ignore_index=0, reduction=reduction)
    torch.testing.assert_close(loss.double(), oracle, **F32)
    torch.testing.assert_close(grad.double(), g_oracle, **F32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy computes g = 1/0
def test_all_ignored_mean_is_nan_with_zero_gradient():
    x = torch.randn(3, 7)
    t = torch.full((3,), -100)
    loss, grad = _loss_and_grad(x, t, None, 2.0, None, torch.tensor(1.0))
    assert torch.isnan(loss) and torch.equal(grad, torch.zeros_like(grad))


def test_strided_logits_and_spatial_dims():
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(2, 7, 3, generator=g) * 2)[:, :, ::1]  # (N, C, d): rows are strided views
    t = torch.randint(0, 7, (2, 3), generator=g)
    up = torch.randn(2, 3, generator=g)
    loss, grad = _loss_and_grad(x, t, 0.25, 2.0, None, up, reduction="none")
    ref_loss, ref_grad = _loss_and_grad(x, t, 0.25, 2.0, None, up, "torch", reduction="none")
    torch.testing.assert_close(loss, ref_loss, **F32)
    torch.testing.assert_close(grad, ref_grad, **F32)
    xt = torch.randn(7, 4, generator=g).t()  # column-major (4, 7)
    yt = torch.randint(0, 7, (4,), generator=g)
    a = _loss_and_grad(xt, yt, None, 0.5, None, torch.tensor(1.0))
    b = _loss_and_grad(xt, yt, None, 0.5, None, torch.tensor(1.0), "torch")
    torch.testing.assert_close(a, b, **F32)


# ---------------------------------------------------------------------------------------------------
# Confident, extreme and non-finite rows; bf16
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_extreme_and_confident_rows(path, gamma):
    """p_y → 1 (exactly 1 in fp32 at 1e4 and 30), p_y → 0, against the float64 reference (analytic:
    autograd through (1 − p)^γ is NaN at p = 1)."""
    x = torch.zeros(4, 100)
    x[0, 0] = 1e4  # p_y = 1
    x[1, 1], x[1, 7] = -1e4, 1.0  # p_y = 0
    x[2, 5] = 30.0  # p_y = 1 − 1e-11
    x[3, 3], x[3, 4] = 30.0, 30.0  # p_y = 1/2
    t = torch.tensor([0, 1, 5, 3])
    up = torch.randn(4, generator=torch.Generator().manual_seed(3))
    kw = dict(reduction="none")
    loss, grad = _loss_and_grad(x, t, 0.25, gamma, None, up, **kw)
    ref_loss, ref_grad = _loss_and_grad(
        x.double(), t, 0.25, gamma, None, up.double(), "torch", **kw
    )
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy meets inf - inf
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("prob", [False, True])
def test_non_finite_logits_like_eager(path, gamma, prob):
    inf, nan = float("inf"), float("nan")
    rows = [
        [1.0, -inf, 0.5],  # -inf at a non-target class: finite
        [-inf, 2.0, 0.0],  # -inf at the target: +inf (gradient NaN for γ > 0, as the reference)
        [inf, 0.0, 1.0],  # +inf anywhere: NaN
        [nan, 1.0, 0.0],  # NaN: NaN
        [-inf, -inf, -inf],  # only -inf: NaN
        [0.0, 1.0, nan],  # ignored row (index targets) holding NaN: loss 0, gradient NaN
    ]
    x = torch.tensor([r + [0.25] * 97 for r in rows])  # C = 100
    if prob:
        t = torch.softmax(torch.randn(6, 100, generator=torch.Generator().manual_seed(4)), 1)
        t[0, 1] = 0.0  # q = 0 where the logit is -inf: 0, not NaN
    else:
        t = torch.tensor([0, 0, 1, 2, 1, -100])
    up = torch.ones(6)
    loss, grad = _loss_and_grad(x, t, 0.25, gamma, None, up, reduction="none")
    ref_loss, ref_grad = _loss_and_grad(x, t, 0.25, gamma, None, up, "torch", reduction="none")
    torch.testing.assert_close(loss, ref_loss, equal_nan=True)
    torch.testing.assert_close(grad, ref_grad, equal_nan=True)


@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_bf16_fp32_math_rounded_once(path, prob, reduction):
    """bf16 logits: fp32 loss equal to the float64 formula on the rounded inputs (to fp32 accuracy), the
    bf16 gradient within one bf16 ulp of it and, compiled, no less accurate than the eager backend."""
    c = 100 if path == "multi" else 7
    x, t, w, alpha = _inputs(c, prob, True, "tensor", seed=7)
    x = x.bfloat16()
    w = w.bfloat16() if not prob else w
    # upstream 1 for the mean: another upstream scales the bf16 gradient in place (a second rounding)
    up = _upstream(reduction) if reduction == "none" else torch.tensor(1.0)
    oracle, g_oracle = _oracle(x, t, alpha, 2.0, w, reduction=reduction, up=up)
    loss, grad = _loss_and_grad(x, t, alpha, 2.0, w, up, reduction=reduction)
    _, g_eager = _loss_and_grad(x, t, alpha, 2.0, w, up, "torch", reduction=reduction)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), oracle, **F32)
    ulp = torch.finfo(torch.bfloat16).eps * g_oracle.abs().clamp_min(
        torch.finfo(torch.float32).tiny
    )
    err = (grad.double() - g_oracle).abs()
    assert (err <= ulp).all()
    if not INTERPRETED:  # the interpreter's fp32 → bf16 cast truncates; the GPU's rounds to nearest
        assert err.max() <= (g_eager.double() - g_oracle).abs().max() + 1e-12


# ---------------------------------------------------------------------------------------------------
# Behaviour: the kernel is used, deterministic, leaves its inputs alone; custom ops
# ---------------------------------------------------------------------------------------------------


def _no_eager(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the eager backend was called")

    monkeypatch.setattr(focal_ops, "row_loss", boom)
    monkeypatch.setattr(eager, "row_loss", boom)


@pytest.mark.parametrize("prob", [False, True])
def test_triton_path_is_taken(monkeypatch, path, prob):
    _no_eager(monkeypatch)
    c = 100 if path == "multi" else 7
    x, t, w, alpha = _inputs(c, prob, True, "tensor")
    for reduction in ("none", "mean"):
        _loss_and_grad(x, t, alpha, 0.5, w, _upstream(reduction), reduction=reduction)
    with torch.no_grad():
        _focal(x, t, 0.25, 2.0, w)
    # the cases the kernel leaves to the eager backend do reach it (the patch works)
    with pytest.raises(AssertionError, match="eager backend"):
        _focal(x.double(), t.double() if prob else t, None, 2.0, None)
    with pytest.raises(AssertionError, match="eager backend"):
        _focal(x, t, alpha.clone().requires_grad_(), 2.0, w)


def test_inputs_untouched_and_bitwise_deterministic(path):
    c = 100 if path == "multi" else 7
    x, t, w, alpha = _inputs(c, True, True, "tensor", seed=9)
    x = x.bfloat16()
    copies = [v.clone() for v in (x, t, w, alpha)]
    up = torch.tensor(1.3)
    a = _loss_and_grad(x, t, alpha, 0.5, w, up)
    b = _loss_and_grad(x, t, alpha, 0.5, w, up)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for v, copy in zip((x, t, w, alpha), copies):
        assert torch.equal(v, copy)


@interpreted_only
def test_custom_op_registrations():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 11, generator=g, requires_grad=True)
    t = torch.tensor([1, -100, 10])
    a = torch.rand(11, generator=g) + 0.5
    den = torch.tensor(2.0)
    # as for triton_ce: test_aot_dispatch_dynamic is left out (backward scales the returned buffer)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    for red, d in (("mean", den), ("sum", None), ("none", None)):
        torch.library.opcheck(
            focal_ops.triton_focal,
            (x, t, a, d, 0.25, 2.0, -100, False, 0, red, True),
            test_utils=checks,
        )
    stats = (torch.randn(3).abs() + 1.0, torch.rand(3) + 0.5)  # lse, coef
    torch.library.opcheck(
        focal_ops.triton_focal_rows_backward,
        (x.detach(), t, a, *stats, torch.randn(3), 1.0, 0.5, -100, False),
    )


_SM90_SCRIPT = r"""
from crossent._backends.triton import configs, focal


def kernel(dt, prob, has_a, gamma, g_mode, load, save, grad, single, block, warps):
    types = {"X": "*" + dt, "T": "*fp32" if prob else "*i64", "A": "*fp32", "G": "*fp32",
             "LOSS": "*fp32", "LSE": "*fp32", "COEF": "*fp32", "DX": "*" + dt, "C": "i32",
             "stride_xm": "i64", "stride_tm": "i64", "stride_dxm": "i64", "ignore_index": "i64",
             "alpha": "fp32", "gamma": "fp32", "g_scale": "fp32"}
    consts = dict(PROB_TARGET=prob, HAS_GAMMA=gamma, G_MODE=g_mode, LOAD_STATS=load,
                  SAVE_COEF=save, WRITE_GRAD=grad, HAS_A=has_a, LOAD_A=has_a and prob,
                  SINGLE_BLOCK=single, BLOCK=block)
    if not has_a:
        consts["A"] = None
    return build(focal._focal_kernel, types, consts, warps)


for prob, has_a, gamma in itertools.product((False, True), repeat=3):
    kernel("bf16", prob, has_a, gamma, 1, False, False, True, True, 1024, 4)  # one block, mean
    kernel("fp32", prob, has_a, gamma, 0, False, True, False, False, 256, 4)  # none: forward
    kernel("fp16", prob, has_a, gamma, 2, True, False, True, False, 256, 4)  # none: backward
    kernel("bf16", prob, has_a, gamma, 1, False, False, True, False, 256, 4)  # passes, mean
for prob, has_a, v in itertools.product((False, True), (False, True), (32000, 128256)):
    live = configs.live_arrays(prob_target=prob, weighted=has_a, smoothing=False, softcap=False)
    block, warps = configs.ce_config(v, 2, live + int(prob))  # as launch_focal
    k = kernel("bf16", prob, has_a, True, 1, False, False, True, block >= v, block, warps)
    print(f"live={live} V={v} BLOCK={block} warps={warps} spill={spills(k)}")
"""


@pytest.mark.slow
def test_kernel_compiles_for_sm90_without_a_gpu():
    """Every variant compiles for sm_90a and the configs launch_focal picks do not spill registers
    (ptxas -v). Needs Triton's NVIDIA backend (bundled ptxas), not a GPU."""
    report = [line for line in sm90.run(_SM90_SCRIPT).split("\n") if line.startswith("live=")]
    assert len(report) == 8
    assert all(line.endswith("spill=0") for line in report), "\n".join(report)


@interpreted_only
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph(reduction):
    """The entry point traces as one graph (aot_eager), α tensor and class weights included."""
    from crossent import _dispatch
    from crossent._contract import ce_options

    t = torch.tensor([0, 3, -100, 8])
    w = torch.rand(9) + 0.5
    alpha = torch.rand(9) + 0.1
    math = eager.FocalMath(reduction, ce_options(reduction=reduction), 2.0, None, False)
    den = torch.tensor(2.5) if reduction == "mean" else None

    def f(leaf):
        x = leaf * 2.0
        impl = _dispatch.resolve("focal_loss", "triton", x)
        return impl(math, x, t, w, den, aux=alpha)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaf = torch.randn(4, 9, requires_grad=True)
    loss = compiled(leaf)
    up = torch.randn(4) if reduction == "none" else torch.tensor(0.7)
    (grad,) = torch.autograd.grad(loss, leaf, up)
    ref = eager.row_loss(math, leaf * 2.0, t, w, alpha, den)
    (ref_grad,) = torch.autograd.grad(ref, leaf, up)
    torch.testing.assert_close(loss, ref, **F32)
    torch.testing.assert_close(grad, ref_grad, **F32)


# ---------------------------------------------------------------------------------------------------
# A second backward through the same graph, and second derivatives (handover.py, as for CE)
# ---------------------------------------------------------------------------------------------------

TWICE = [("sum", False), ("mean", True), ("none", False)]  # (reduction, probability targets)
TWICE_IDS = [f"{r}-{'prob' if p else 'index'}" for r, p in TWICE]


def _twice_inputs(prob, seed):
    """(6, 7) logits as a (2, 3, 7) leaf on the device, with class weights and an α tensor."""
    x, t, w, alpha = _inputs(7, prob, True, "tensor", seed=seed)
    return x.view(2, 3, 7).to(DEVICE).requires_grad_(), _dev(t), _dev(w), _dev(alpha)


def _twice_loss(leaf, t, w, alpha, reduction, backend="triton"):
    return _focal(leaf.view(6, 7) * 2.0, t, alpha, 0.5, w, backend=backend, reduction=reduction)


@pytest.mark.parametrize("reduction,prob", TWICE, ids=TWICE_IDS)
def test_backward_twice_matches_eager(reduction, prob):
    """The logits are a temporary (dropped by the caller): a retained graph backwards again, exactly
    (``.backward`` and ``autograd.grad``), until a backward frees it."""
    leaf, t, w, alpha = _twice_inputs(prob, 3)
    up = _upstream(reduction)
    ref = torch.autograd.grad(_twice_loss(leaf, t, w, alpha, reduction, "torch"), leaf, up)[0]
    loss = _twice_loss(leaf, t, w, alpha, reduction)
    loss.backward(up, retain_graph=True)
    torch.testing.assert_close(leaf.grad, ref, **F32)
    for retain in (True, False):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=retain)
        torch.testing.assert_close(grad, ref, **F32)
    with pytest.raises(RuntimeError, match="second time"):  # torch's error, as for any other node
        loss.backward(up)


@pytest.mark.parametrize("reduction,prob", TWICE, ids=TWICE_IDS)
def test_double_backward_matches_eager_backend(reduction, prob):
    """create_graph=True: Hessian-vector products equal the eager backend's, through a (6, 7) view of
    held (2, 3, 7) logits."""
    leaf, t, w, alpha = _twice_inputs(prob, 6)
    up = _upstream(reduction)
    v = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    results = []
    for backend in ("triton", "torch"):
        logits = leaf * 2.0  # held by the caller; its (6, 7) view is not
        loss = _focal(logits.view(6, 7), t, alpha, 2.0, w, backend=backend, reduction=reduction)
        (grad,) = torch.autograd.grad(loss, leaf, up, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), leaf)
        results.append((grad.detach(), hvp))
    torch.testing.assert_close(results[0][0], results[1][0], **F32)
    torch.testing.assert_close(results[0][1], results[1][1], **F32)


def test_double_backward_needs_the_logits_and_probability_targets():
    leaf, t, w, alpha = _twice_inputs(True, 9)
    loss = _twice_loss(leaf, t, w, alpha, "mean")  # the logits are dropped at once
    with pytest.raises(RuntimeError, match="focal_loss.*Keep a reference"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    logits = leaf.view(6, 7) * 2.0
    loss = _focal(logits, t.clone(), alpha, 0.5, w)  # held logits, dropped probability targets
    with pytest.raises(RuntimeError, match="Keep a reference"):
        torch.autograd.grad(loss, leaf, create_graph=True)
    loss = _twice_loss(leaf, t, w, alpha, "mean")  # the first-order gradient needs neither
    torch.testing.assert_close(
        torch.autograd.grad(loss, leaf)[0],
        torch.autograd.grad(_twice_loss(leaf, t, w, alpha, "mean", "torch"), leaf)[0],
        **F32,
    )


def test_second_backward_without_the_keep_graph_probe_recomputes(monkeypatch):
    monkeypatch.setattr(handover, "_KEEP_GRAPH", None)
    leaf, t, w, alpha = _twice_inputs(False, 12)
    up = torch.tensor(0.7)
    ref = torch.autograd.grad(_twice_loss(leaf, t, w, alpha, "mean", "torch"), leaf, up)[0]
    logits = leaf.view(6, 7) * 2.0  # held: the second backward recomputes from it
    loss = _focal(logits, t, alpha, 0.5, w)
    for _ in range(2):
        (grad,) = torch.autograd.grad(loss, leaf, up, retain_graph=True)
        torch.testing.assert_close(grad, ref, **F32)
    loss = _twice_loss(leaf, t, w, alpha, "mean")
    torch.autograd.grad(loss, leaf, up, retain_graph=True)
    with pytest.raises(
        RuntimeError, match="a second backward through focal_loss.*Keep a reference"
    ):
        torch.autograd.grad(loss, leaf, up)
