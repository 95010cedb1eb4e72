r"""Products 2 and 3 of a fused linear cross-entropy chunk: ``dX_c``, ``dW`` and ``db`` from the chunk's
softmax (*factored* form) or from its explicit logit gradient (*explicit* form). The algorithm and the
two forms are described in :mod:`crossent._backends.linear_ce`; the chunk's cross-entropy itself is
:mod:`crossent._backends.linear_ce_chunk`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from .._contract import CEOptions
from . import onednn
from .linear_ce_chunk import index_rows, softmax_rows_

Tensor = torch.Tensor


@dataclass
class Grads:
    input: Tensor | None = None
    weight: Tensor | None = None
    bias: Tensor | None = None
    target: Tensor | None = None
    class_weight: Tensor | None = None


def factored_chunk(
    z: Tensor,
    x_c: Tensor,
    t_c: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    wc: Tensor | None,
    u: Tensor | None,
    bw: Any,
    total_w: Tensor | float,
    opts: CEOptions,
    g_c: Tensor,
    want_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss rows and the (a, b) row scales of a chunk whose rows are all valid; ``z`` becomes P."""
    lse, z_y, bad = softmax_rows_(z, t_c)
    if bool(
        bad.any()
    ):  # host decision (CPU): the target probability underflowed; lse from the logits
        sel = bad.nonzero().view(-1)
        lg = x_c.index_select(0, sel) @ weight.t()
        if bias is not None:
            lg = lg + bias
        lse.index_copy_(0, sel, torch.logsumexp(lg.to(z.dtype), 1))
    sum_wz = None
    if opts.label_smoothing > 0:
        assert u is not None  # (given with label smoothing)
        sum_wz = x_c.to(z.dtype) @ u.to(z.dtype) + bw
    w_y = 1.0 if wc is None else wc.index_select(0, t_c)
    g = g_c.to(z.dtype).expand(lse.shape) if want_grad else None
    return index_rows(lse, z_y, sum_wz, w_y, total_w, opts, z.shape[1], g)


def factored_grads(
    grads: Grads,
    p: Tensor,
    x_c: Tensor,
    t_c: Tensor,
    weight: Tensor,
    u: Tensor | None,
    a: Tensor,
    b: Tensor,
    g_rows: Tensor,
    eps: float,
    v: int,
    idx: Tensor | None,
    start: int,
    stop: int,
    first: bool,
) -> None:
    """Products 2 and 3 of a chunk from P: G = a·P − b·onehot − (ε/C)·g·wᵀ (rank-one term of dW later).

    The one-hot term goes into P itself, P[i, y_i] −= b_i / a_i (m positions), so that a·P' = a·P − b·onehot:
    the cancellation p_y − 1 happens before any product, as in the explicit form. Rows with a_i = 0 (a
    zero upstream factor, or a zero coefficient) keep P and get their −b_i·onehot term separately.
    """
    rows = torch.arange(p.shape[0], device=p.device)
    safe_a = torch.where(a == 0, torch.ones_like(a), a)
    p.index_put_((rows, t_c), p[rows, t_c] - torch.where(a == 0, torch.zeros_like(b), b / safe_a))
    odd = ((a == 0) & (b != 0)).nonzero().view(-1)  # host decision (CPU only): almost always empty
    xa = x_c * a.view(-1, 1)
    if grads.input is not None:
        if idx is None:
            dx = grads.input[start:stop]
            times_weight(p, weight, dx)
        else:
            dx = times_weight(p, weight)
        # dX_i = a_i (P' W)_i − (ε/C) g_i u
        dx.mul_(a.view(-1, 1))
        if eps > 0:
            assert u is not None  # (given with label smoothing)
            dx.addr_(g_rows, u, alpha=-eps / v)
        if odd.numel():
            dx.index_add_(0, odd, weight.index_select(0, t_c[odd]) * -b[odd].view(-1, 1))
        if idx is not None:
            grads.input.index_copy_(0, idx, dx)
    if grads.weight is not None:
        # dW += P'ᵀ·(a ⊙ X_c)   (the first chunk writes instead of accumulating: no zero fill)
        if first:
            torch.mm(p.t(), xa, out=grads.weight)
        else:
            grads.weight.addmm_(p.t(), xa)
        if odd.numel():
            grads.weight.index_put_((t_c[odd],), x_c[odd] * -b[odd].view(-1, 1), accumulate=True)
    if grads.bias is not None:
        if first:
            torch.mv(p.t(), a, out=grads.bias)
        else:
            grads.bias.addmv_(p.t(), a)
        if odd.numel():
            grads.bias.index_put_((t_c[odd],), -b[odd], accumulate=True)


def times_weight(g: Tensor, weight: Tensor, out: Tensor | None = None) -> Tensor:
    """``g·W`` (product 2), by oneDNN where it takes the operands (:mod:`crossent._backends.onednn`)."""
    if onednn.takes(g, weight):
        product = onednn.times_weight(g, weight)
        return product if out is None else out.copy_(product)
    return g @ weight if out is None else torch.mm(g, weight, out=out)


def explicit_grads(
    grads: Grads,
    gz: Tensor,
    low: Tensor | None,
    x_c: Tensor,
    weight: Tensor,
    idx: Tensor | None,
    start: int,
    stop: int,
) -> None:
    """Products 2 and 3 of a chunk from the explicit gradient ``gz`` (float32/float64, or already in the
    half-precision input dtype when the Triton kernel wrote it)."""
    if grads.input is not None:
        g_in = gz
        if low is not None:
            low.copy_(gz)  # round G once, to the input dtype, for the product with W
            g_in = low
        if idx is None:
            times_weight(g_in, weight, grads.input[start:stop])
        else:
            grads.input.index_copy_(0, idx, times_weight(g_in, weight))
    if grads.weight is not None:
        accumulate_product_(grads.weight, gz.t(), x_c)  # float32 accumulation for half inputs
    if grads.bias is not None:
        grads.bias.add_(gz.sum(0, dtype=grads.bias.dtype))


def accumulate_product_(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """``acc += a·b`` with ``acc`` float32/float64. Half-precision ``a``, ``b`` on CUDA: one cuBLAS product
    with float32 output (``addmm(..., out_dtype=float32)``), no float32 copies; elsewhere the operands are
    widened to ``acc``'s dtype first."""
    if a.dtype != acc.dtype and a.is_cuda and _half_product_f32_out(a.device, a.dtype):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
        return
    acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


@functools.cache
def _half_product_f32_out(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch.addmm(acc, a, b, out_dtype=float32, out=acc)`` runs for ``dtype`` operands on
    ``device`` (tried once on 2×2 operands; an older torch or a backend without the overload: no). A
    later failure of the real product (a shape cuBLAS rejects) is raised, not papered over."""
    acc = torch.zeros((2, 2), dtype=torch.float32, device=device)
    a = torch.ones((2, 2), dtype=dtype, device=device)
    try:
        torch.addmm(acc, a, a, out_dtype=torch.float32, out=acc)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


__all__ = ["Grads", "explicit_grads", "factored_chunk", "factored_grads"]
