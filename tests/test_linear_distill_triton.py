"""The Triton rows of the fused linear distillation (what CUDA tensors use;
``crossent._backends.triton.distill_chunk``), forced with ``backend="triton"``.

On CPU tensors under ``TRITON_INTERPRET=1`` (set below, and in conftest), small shapes: V = 300 with the
kernel's block lowered to 128 columns (three blocks per row, the last one partial), chunks of a few rows.
Oracles: the float64 autograd formula of ``test_distillation.oracle`` (torch's log_softmax / kl_div /
cross_entropy) on the logits materialised in float64 from the same inputs; for classes masked to -inf
(where that formula gives 0·∞) the unfused ``crossent.distillation_loss`` in float64; for bfloat16, "no
less accurate than the reference rows in the same dtype, both against float64". On a CUDA machine the
last test compares the kernel with the reference rows on the GPU with host synchronisation forbidden;
without a GPU every variant of the kernel is compiled for sm_90a (``tests/sm90.py``).
"""

import itertools
import math
import os
import zlib

if not os.path.exists("/dev/nvidia0"):  # same rule as conftest: interpret where there is no GPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import crossent  # noqa: E402
from oracle import count_calls  # noqa: E402
from test_distillation import IGNORE, oracle  # noqa: E402

pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
N, DS, DT, V = 12, 8, 6, 300


@pytest.fixture
def triton_rows(monkeypatch):
    """Count the Triton rows' launches, with a 128-column block (several blocks per row)."""
    from crossent._backends.triton import distill_chunk

    monkeypatch.setattr(distill_chunk, "MAX_BLOCK", 128)
    return count_calls(monkeypatch, distill_chunk, "distill_rows_")


def _data(seed, *, confident=False, dtype=torch.float32, n=N, v=V):
    """Student and teacher hidden states and heads; ``confident``: a near one-hot teacher."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, DS, generator=g)
    ws = torch.randn(v, DS, generator=g) / DS**0.5
    bs = torch.randn(v, generator=g)
    xt = torch.randn(n, DT, generator=g)
    wt = torch.randn(v, DT, generator=g) / DT**0.5
    bt = torch.randn(v, generator=g)
    if confident:  # teacher logits spread ~±30: its softmax is one-hot to float32 precision
        wt = wt * 15.0
    y = torch.randint(0, v, (n,), generator=g)
    y[::4] = IGNORE
    return [t.to(dtype) for t in (xs, ws, bs, xt, wt, bt)] + [y]


def _workspace(rows, v=V, elem=4):
    """A workspace that gives chunks of ``rows`` rows on the Triton path (two (c, V) float32 buffers,
    the (c, D) operands; half-precision G for dX)."""
    return rows * (2 * v * 4 + (v * elem if elem < 4 else 0) + 2 * (DS + DT) * 4)


def _fused(data, kw, backend, workspace, go):
    """Loss and (dX_S, dW_S, db_S) of the fused call with upstream gradient ``go``."""
    xs, ws, bs, xt, wt, bt, y = data
    leaves = [t.clone().requires_grad_() for t in (xs, ws, bs)]
    loss = crossent.linear_distillation_loss(
        leaves[0], leaves[1], xt, wt, y, student_bias=leaves[2], teacher_bias=bt,
        workspace_bytes=workspace, backend=backend, **kw,
    )  # fmt: skip
    return loss, torch.autograd.grad(loss, leaves, go.to(loss.dtype))


def _exact(data, kw, go, formula=oracle):
    """The same in float64 from the logits the fused call sees (``F.linear`` in the inputs' dtype,
    widened): the loss and its gradient G with respect to the student's logits by autograd, then
    ``dX = G·W``, ``dW = Gᵀ·X``, ``db = Σ_rows G`` in float64. (Rounding the logits is the products'
    error, not the rows'; at τ = 0.1 a saturated JSD's gradient is sensitive to it at the 10% level.)"""
    xs, ws, bs, xt, wt, bt, y = data
    zs = F.linear(xs, ws, bs).double().requires_grad_()
    zt = F.linear(xt, wt, bt).double()
    if formula is oracle:
        loss = oracle(
            zs, zt, y, divergence=kw["divergence"], beta=kw["beta"], temperature=kw["temperature"],
            hard_weight=kw["hard_weight"], reduction=kw["reduction"],
            scale=kw["scale_by_temperature_squared"],
        )  # fmt: skip
    else:
        loss = crossent.distillation_loss(zs, zt, y, **kw)
    (g,) = torch.autograd.grad(loss, [zs], go)
    return loss.detach(), (g @ ws.double(), g.T @ xs.double(), g.sum(0))


def _upstream(reduction, n=N):
    if reduction == "none":
        return torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    return torch.tensor(1.7, dtype=torch.float64)


def _err(a, exact):
    """Largest error relative to the tensor's largest entry (τ = 0.1 makes the logits ×10, whose
    float32 rounding sets the absolute error of every log-probability)."""
    return float((a.double() - exact).abs().max() / exact.abs().max().clamp_min(1e-30))


def _check(got, want, ref):
    """``got`` (Triton rows, float32) within 5e-5 of the float64 ``want``, or no less accurate than
    ``ref`` (the reference rows in float32, ``backend="torch"``): a τ = 0.1 JSD whose two distributions
    barely overlap has a gradient ~1e-4 of its terms, which float32 rows resolve only to ~10%."""
    for a, r, w in zip(got, ref, want):
        assert _err(a, w) <= max(5e-5, 1.5 * _err(r, w)), (_err(a, w), _err(r, w))


# (divergence, beta) × temperature; hard weight, reduction, a confident teacher and the τ² factor cycle
# through them, so every value meets several others without the full product (the interpreter is slow)
DIVERGENCES = [
    ("forward_kl", 0.5),
    ("reverse_kl", 0.5),
    ("jsd", 0.5),
    ("jsd", 0.0),  # = forward KL (TRL's convention)
    ("jsd", 1.0),  # = reverse KL
]
GRID = [
    dict(
        divergence=div,
        beta=beta,
        temperature=tau,
        hard_weight=[0.0, 0.3][i % 2],
        reduction=["none", "sum", "mean"][i % 3],
        scale_by_temperature_squared=i % 4 == 1,
        confident=i % 5 in (0, 3),
    )  # fmt: skip
    for i, ((div, beta), tau) in enumerate(itertools.product(DIVERGENCES, [0.1, 1.0, 10.0]))
]


@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_triton_rows_match_the_float64_oracle(case, triton_rows):
    kw = dict(case)
    data = _data(zlib.crc32(repr(case).encode()), confident=kw.pop("confident"))
    go = _upstream(kw["reduction"])
    loss, grads = _fused(data, kw, "triton", _workspace(5), go)  # 3 chunks, the last one short
    assert triton_rows, "the Triton rows were not used"
    assert loss.dtype == torch.float32
    ref_loss, ref_grads = _fused(data, kw, "torch", _workspace(5), go)
    want, want_grads = _exact(data, kw, go)
    _check([loss, *grads], [want, *want_grads], [ref_loss, *ref_grads])


def test_triton_rows_without_target_and_without_biases(triton_rows):
    xs, ws, _, xt, wt, _, _ = _data(5)
    a = xs.clone().requires_grad_()
    kw = dict(divergence="jsd", beta=0.3, temperature=2.0)
    loss = crossent.linear_distillation_loss(a, ws, xt, wt, backend="triton", **kw)
    (dx,) = torch.autograd.grad(loss, [a])
    a64 = xs.double().requires_grad_()
    want = crossent.distillation_loss(a64 @ ws.double().T, xt.double() @ wt.double().T, **kw)
    (dx64,) = torch.autograd.grad(want, [a64])
    assert triton_rows
    assert _err(loss, want) <= 5e-5 and _err(dx, dx64) <= 5e-5


def test_triton_rows_with_masked_classes(triton_rows):
    """A class masked to -inf in both models (probabilities exactly 0, infinite log-ratios): the sums
    take 0·log 0 = 0, as the reference."""
    data = _data(7, confident=True)
    data[2][3] = -math.inf  # student bias
    data[5][3] = -math.inf  # teacher bias
    data[6][data[6] == 3] = IGNORE  # the hard term of a -inf target logit would be +inf
    for div, beta in (("reverse_kl", 0.5), ("jsd", 0.3)):
        kw = dict(divergence=div, beta=beta, temperature=0.5, hard_weight=0.2, reduction="sum")
        go = _upstream("sum")
        loss, grads = _fused(data, kw, "triton", _workspace(6), go)
        want, want_grads = _exact(data, kw, go, formula=crossent.distillation_loss)
        assert torch.isfinite(want)
        assert all(_err(a, w) <= 5e-5 for a, w in zip([loss, *grads], [want, *want_grads]))
    assert triton_rows


def test_triton_rows_bfloat16_no_less_accurate_than_the_reference_rows(triton_rows, monkeypatch):
    """bf16 inputs (default block: one block per row): loss float32, gradients bf16; against float64 on
    the same rounded inputs, no less accurate than the reference rows (``backend="torch"``) in bf16."""
    from crossent._backends.triton import distill_chunk

    monkeypatch.setattr(distill_chunk, "MAX_BLOCK", 4096)
    data = _data(11, dtype=torch.bfloat16, n=16)
    kw = dict(
        divergence="jsd", beta=0.5, temperature=2.0, hard_weight=0.3, reduction="mean",
        scale_by_temperature_squared=False,
    )  # fmt: skip
    go = _upstream("mean")
    ws = _workspace(6, elem=2)
    loss, grads = _fused(data, kw, "triton", ws, go)
    assert triton_rows
    assert loss.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    ref_loss, ref_grads = _fused(data, kw, "torch", ws, go)
    want, want_grads = _exact(data, kw, go)

    def err(a, exact):
        return float((a.double() - exact).norm() / exact.norm())

    assert err(loss, want) <= 1.5 * err(ref_loss, want) + 1e-6
    for got, ref, exact in zip(grads, ref_grads, want_grads):
        assert err(got, exact) <= 1.5 * err(ref, exact) + 1e-3
        assert err(got, exact) < 1e-2  # bf16 gradients: relative 2^-8 per entry


@pytest.mark.parametrize(
    "divergence, beta, temperature", [("forward_kl", 0.5, 0.1), ("jsd", 0.3, 10.0)]
)
def test_kernel_rows_at_a_llama3_vocabulary(divergence, beta, temperature):
    """V = 128256 in the default blocks (31 full, one partial): a confident teacher row, an ignored
    row and per-row upstream factors, against the reference rows in float64 on the same logits."""
    from crossent._backends.triton.distill_chunk import distill_rows_
    from crossent._contract import distill_options
    from crossent.numpy.distillation import distill_rows_value_and_grad

    g = torch.Generator().manual_seed(1)
    v = 128256
    zs = torch.randn(3, v, generator=g) * 2
    zt = torch.randn(3, v, generator=g) * 2
    zt[0] = -20.0
    zt[0, 12345] = 20.0  # p_T one-hot to float32 precision
    y = torch.tensor([5, IGNORE, v - 1])
    up = torch.tensor([1.0, 2.0, 0.5])
    opts = distill_options(divergence, beta, temperature, 0.3, IGNORE, "mean", False)
    z = zs.clone()
    loss = distill_rows_(z, zt, y, opts, up)
    want, want_grad, _ = distill_rows_value_and_grad(zs.double(), zt.double(), y, opts, up.double())
    assert loss[1] == 0 and bool((z[1] == 0).all())
    assert _err(loss, want) <= 5e-5 and _err(z, want_grad) <= 5e-5


def test_every_row_ignored_gives_nan_mean_and_zero_gradients(triton_rows):
    xs, ws, bs, xt, wt, bt, y = _data(9, n=4)
    y = torch.full_like(y, IGNORE)
    kw = dict(divergence="jsd", beta=0.5, temperature=1.0, hard_weight=0.3, reduction="mean")
    loss, grads = _fused([xs, ws, bs, xt, wt, bt, y], kw, "triton", None, _upstream("mean"))
    assert triton_rows and torch.isnan(loss)  # 0/0, as the reference
    assert all(bool((g == 0).all()) for g in grads)


def test_backend_is_validated_and_auto_keeps_the_cpu_kernels(triton_rows):
    xs, ws, bs, xt, wt, bt, y = _data(3, n=4, v=20)
    for bad in ("native", "cuda", None):
        with pytest.raises(ValueError, match="'backend'"):
            crossent.linear_distillation_loss(xs, ws, xt, wt, y, backend=bad)
    crossent.linear_distillation_loss(xs, ws, xt, wt, y, backend="auto")  # the CPU block kernel
    crossent.linear_distillation_loss(xs.double(), ws.double(), xt, wt, y, backend="triton")
    assert not triton_rows  # float64 keeps the reference rows even when Triton is asked for


# Every variant of the kernel compiled for an H100 (sm_90a) without a GPU (tests/sm90.py): the
# interpreter lets through what the compiler rejects; the block block_config picks must not spill.
_SM90_SCRIPT = r"""
from crossent._backends.triton import distill_chunk as dc


def kernel(dt, div, soft, hard, tempered, grad, block, warps):
    types = {"ZS": "*" + dt, "ZT": "*" + dt, "Y": "*i64", "GROWS": "*fp32", "LOSS": "*fp32",
             "V": "i32", "stride_zs": "i64", "stride_zt": "i64", "tau": "fp32",
             "soft_scale": "fp32", "hard_weight": "fp32", "beta": "fp32", "log_beta": "fp32",
             "log_1m_beta": "fp32", "ignore_index": "i64"}
    consts = dict(DIV=div, SOFT=soft, HARD=hard, TEMPERED=tempered, HAS_TARGET=hard or tempered,
                  WANT_GRAD=grad, BLOCK=block)
    return build(dc._distill_rows_kernel, types, consts, warps)


for div, soft, hard, tempered, grad in itertools.product((0, 1, 2), *[(True, False)] * 4):
    if soft or hard:
        kernel("bf16", div, soft, hard, tempered, grad, 256, 4)
block, warps = dc.block_config(128256)
for div, dt in itertools.product((0, 1, 2), ("fp32", "bf16")):
    k = kernel(dt, div, True, True, True, True, block, warps)
    print(f"div={div} dt={dt} BLOCK={block} warps={warps} spill={spills(k)}")
"""


@pytest.mark.slow
def test_kernel_compiles_for_sm90_without_a_gpu():
    import sm90

    report = [line for line in sm90.run(_SM90_SCRIPT).split("\n") if line.startswith("div=")]
    assert len(report) == 6
    assert all(line.endswith("spill=0") for line in report), "\n".join(report)


@pytest.mark.gpu
def test_cuda_triton_rows_match_the_reference_rows_without_host_sync():
    """On CUDA, backend "auto" takes the Triton rows; it equals the reference rows (``"torch"``) and
    never synchronises with the host."""
    data = [t.cuda() for t in _data(13, n=64, v=4099)]  # several default blocks, the last one short
    go = _upstream("mean").cuda()
    for div, beta in (("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.4)):
        kw = dict(
            divergence=div, beta=beta, temperature=2.0, hard_weight=0.3, reduction="mean",
            scale_by_temperature_squared=False,
        )  # fmt: skip
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss, grads = _fused(data, kw, "auto", None, go)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        ref_loss, ref_grads = _fused(data, kw, "torch", None, go)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
        for got, ref in zip(grads, ref_grads):
            torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-5)
