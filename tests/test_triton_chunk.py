"""The Triton chunk entry point (``crossent._backends.triton.chunk.ce_rows_grad_``) against the float64
reference rows and the eager chunk function it replaces (``linear_ce_chunk.ce_grad_``).

Small shapes on CPU tensors under ``TRITON_INTERPRET=1`` (set below, and in conftest): every option set,
index and probability targets, a 0-d and a per-row upstream factor, float32 and bfloat16 logits, and the
three kernel paths (the row in one block; several blocks, one program per row; split rows, several
programs per row — where the loss must be read before the gradient overwrites the target logit).
"""

import os

if not os.path.exists("/dev/nvidia0"):  # same rule as conftest: interpret where there is no GPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402

from crossent._backends import linear_ce_chunk  # noqa: E402
from crossent._backends.triton import chunk, configs  # noqa: E402
from crossent._contract import ce_options  # noqa: E402
from crossent.numpy import categorical  # noqa: E402
from oracle import TOL  # noqa: E402

pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
F32 = TOL[torch.float32]

OPTION_SETS = {
    "plain": {},
    "weight": dict(weighted=True),
    "smooth": dict(label_smoothing=0.1),
    "zloss": dict(z_loss=1e-2),
    "softcap": dict(softcap=3.0),
    "all": dict(weighted=True, label_smoothing=0.2, z_loss=0.05, softcap=2.5),
}
# (V, path): 37 fits one block; 300 at 64-wide blocks is 5 blocks a row, one program per row or split
PATHS = {"single": 37, "multi": 300, "split": 300}


def _use_path(monkeypatch, path):
    if path in ("multi", "split"):
        monkeypatch.setattr(configs, "MAX_SINGLE_BLOCK", 64)
    if path == "multi":
        monkeypatch.setattr(configs, "SPLIT_BELOW_PROGRAMS", 0)
    if path == "split":
        monkeypatch.setattr(configs, "MIN_BLOCKS_PER_CHUNK", 1)


def _inputs(v, prob_target, weighted, per_row_g, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = 5
    z = torch.randn(m, v, generator=g) * 3
    if prob_target:
        t = torch.softmax(torch.randn(m, v, generator=g), 1)
    else:
        t = torch.randint(0, v, (m,), generator=g)
        t[1] = -100  # an ignored row
        t[3] = v - 1  # the target in the last block (split: the last program's columns)
    w = torch.rand(v, generator=g) + 0.5 if weighted else None
    up = torch.randn(m, generator=g) if per_row_g else torch.tensor(0.7)
    return z, t, w, up


def _reference64(z, t, w, options, prob_target, up):
    """float64 loss rows and g_i·∂ℓ_i/∂z from the reference, on the same (rounded) inputs."""
    z64 = z.double()
    t64 = t.double() if prob_target else t
    w64 = None if w is None else w.double()
    loss, _ = categorical.ce_rows(z64, t64, w64, options, prob_target)
    grad = categorical.ce_rows_grad(
        z64, t64, w64, options, prob_target, up.double().expand(z.shape[0])
    )
    return loss, grad


def _dev(v):
    return v.to(DEVICE) if isinstance(v, torch.Tensor) else v


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("per_row_g", [False, True], ids=["g0d", "grows"])
@pytest.mark.parametrize("prob_target", [False, True], ids=["index", "prob"])
@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_matches_float64_reference_and_eager_chunk(
    monkeypatch, name, prob_target, per_row_g, dtype, path
):
    _use_path(monkeypatch, path)
    opts = dict(OPTION_SETS[name])
    weighted = opts.pop("weighted", False)
    options = ce_options(**opts)
    z, t, w, up = _inputs(PATHS[path], prob_target, weighted, per_row_g)
    z = z.to(dtype)
    ref_loss, ref_grad = _reference64(z, t, w, options, prob_target, up)

    buf = _dev(z.clone())
    loss = chunk.ce_rows_grad_(buf, _dev(t), _dev(w), options, prob_target, _dev(up), True)
    loss, grad = loss.cpu(), buf.cpu()
    assert loss.dtype == torch.float32 and loss.shape == (5,)
    assert grad.dtype == dtype
    torch.testing.assert_close(loss.double(), ref_loss, **F32)
    if dtype == torch.float32:
        torch.testing.assert_close(grad.double(), ref_grad, **F32)
        # the eager chunk function this replaces (float32; the softcap needs its scratch buffer)
        eager = z.clone()
        tau = torch.empty_like(eager) if options.softcap is not None else None
        eager_loss = linear_ce_chunk.ce_grad_(eager, t, w, options, prob_target, up, True, tau)
        torch.testing.assert_close(loss, eager_loss, **F32)
        torch.testing.assert_close(grad, eager, **F32)
    else:
        # fp32 math, rounded once into z: within one bf16 ulp of the exact gradient
        ulp = torch.finfo(dtype).eps * ref_grad.abs().clamp_min(1e-30)
        assert ((grad.double() - ref_grad).abs() <= ulp).all()
    if not prob_target:
        assert torch.equal(grad[1], torch.zeros_like(grad[1]))  # the ignored row


@pytest.mark.parametrize("path", list(PATHS))
def test_loss_only_leaves_the_logits_alone(monkeypatch, path):
    _use_path(monkeypatch, path)
    options = ce_options(label_smoothing=0.1, z_loss=0.01, softcap=4.0)
    z, t, w, up = _inputs(PATHS[path], False, True, False, seed=1)
    buf = z.clone()
    loss = chunk.ce_rows_grad_(_dev(buf), _dev(t), _dev(w), options, False, _dev(up), False).cpu()
    ref_loss, _ = _reference64(z, t, w, options, False, up)
    torch.testing.assert_close(loss.double(), ref_loss, **F32)
    assert torch.equal(buf, z)


def test_all_rows_ignored_and_zero_upstream():
    options = ce_options()
    z = torch.randn(3, 11)
    buf = _dev(z.clone())
    loss = chunk.ce_rows_grad_(buf, _dev(torch.full((3,), -100)), None, options, False,
                               _dev(torch.tensor(1.0)), True)  # fmt: skip
    assert torch.equal(loss.cpu(), torch.zeros(3))
    assert torch.equal(buf.cpu(), torch.zeros(3, 11))
    buf = _dev(z.clone())
    chunk.ce_rows_grad_(buf, _dev(torch.tensor([0, 5, 10])), None, options, False,
                        _dev(torch.zeros(3)), True)  # fmt: skip
    assert torch.equal(buf.cpu(), torch.zeros(3, 11))


@pytest.mark.skipif(not INTERPRETED, reason="checks CPU tensors under TRITON_INTERPRET=1")
def test_custom_op_and_torch_compile():
    """One opaque op that mutates z: opcheck, and torch.compile(fullgraph=True) (aot_eager)."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 13, generator=g)
    t = torch.tensor([1, -100, 12, 0])
    w = torch.rand(13, generator=g) + 0.5
    args = (t, w, torch.rand(4, generator=g), -100, 0.1, 0.01, 2.0, False)
    torch.library.opcheck(chunk.triton_ce_rows_grad_, (z.clone(), *args, True))
    torch.library.opcheck(chunk.triton_ce_rows_grad_, (z.clone(), *args, False))
    options = ce_options(label_smoothing=0.1, z_loss=0.01)
    up = torch.tensor(0.5)

    def f(z):
        return chunk.ce_rows_grad_(z, t, w, options, False, up, True)

    a, b = z.clone(), z.clone()
    loss = torch.compile(f, fullgraph=True, backend="aot_eager")(a)
    ref = f(b)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(a, b)
