r"""Fused linear distillation: computes ``crossent.distillation_loss(F.linear(x_S, W_S, b_S),
F.linear(x_T, W_T, b_T), target, ...)`` without ever holding either model's (N, V) logits.

The math is :func:`crossent.numpy.distillation.distill_rows_value_and_grad` (formulas in
:mod:`crossent.numpy.distillation`), run on torch tensors one chunk of rows at a time.

Algorithm (rows in chunks of ``c``, fixed order, so the result is deterministic):

1. Before the loop: the mean's denominator D (non-ignored rows, or N without a target) as a 0-d tensor,
   so every chunk's gradient carries the factor 1/D at once (no host synchronisation: ignored rows are
   processed like the others and get a zero upstream factor).
2. Per chunk: the student's logits ``Z_S = X_S,c·W_Sᵀ (+ b_S)`` and the teacher's ``Z_T = X_T,c·W_Tᵀ
   (+ b_T)`` (products 1 and 2, in the inputs' dtypes, widened to float32 for half precision); the
   per-row losses and the student's logit gradient G from the reference rows; then ``dX_S,c = G·W_S``
   (product 3, G rounded once to the input dtype) and ``dW_S += Gᵀ·X_S,c`` (product 4, accumulated in
   float32 for half-precision inputs), ``db_S += Σ_rows G``. Nothing of the teacher outlives its chunk
   and the teacher gets no gradient (its tensors are constants here).
3. ``reduction`` "sum"/"mean" with gradients required: the four products run in the forward and the
   gradients are kept; backward multiplies them by the 0-d grad_output (no recompute). A second backward
   (``retain_graph=True``) recomputes them. ``reduction="none"``: the forward computes only the losses
   (products 1, 2); backward recomputes the logits and applies the per-row grad_output exactly (six
   products in all).

Memory (:func:`chunk_plan`): the two (c, V) logit buffers of a chunk (the student's becomes G in place)
and the temporaries of a block of r ≤ c rows. On the CPU the rows run through the in-place block kernel
(:mod:`crossent._backends.linear_distill_rows`: fused softmax / log-softmax kernels, :data:`SCRATCH_BUFFERS`
(r, V) buffers, about 9–15 passes over the block, the reference rows again for a block that meets
``0·∞``), with blocks of :data:`BLOCK_BYTES` that stay in cache; elsewhere (and with
``backend="torch"``) the reference rows of :mod:`crossent.numpy.distillation`, with about
:data:`ROW_BUFFERS` (r, V) temporaries in a quarter of the workspace. The rest of the workspace goes to
the chunk, which must be tall for the products (each product streams the whole weight once per chunk: at
V = 32000, D = 512 on 2 CPU cores, 18-row chunks took 4× the time of ~290-row chunks). Beyond the
workspace: O(N) row vectors and the student's gradients (dW in float32 while accumulating for
half-precision inputs). Default workspace: :data:`DEFAULT_WORKSPACE_BYTES_CPU` (144 MiB) on the CPU,
:func:`crossent._backends.linear_ce.default_workspace_bytes` elsewhere.

The rows of a chunk (:func:`row_kernel`): on the CPU the in-place block kernel; on CUDA (float32 and
half precision, Triton importable) the Triton kernel
:func:`crossent._backends.triton.distill_chunk.distill_rows_` (one launch per chunk, one program per row,
online over V: the logits are read two or three times and G written once over the student's buffer,
float32 math, no temporaries besides O(c) row vectors); the reference rows elsewhere, for float64 and
with ``backend="torch"``. ``backend="triton"`` forces the Triton kernel (CPU tensors too, under
``TRITON_INTERPRET=1``).

CUDA: cuBLAS products and the Triton rows; no host synchronisation anywhere (the CPU kernel's NaN check
and the target bounds check are CPU-only). Untested on a GPU here; the Triton rows are tested on the CPU
under the interpreter.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._contract import DistillOptions
from ..numpy.distillation import distill_denominator, distill_rows_value_and_grad
from . import onednn
from .linear_ce import compute_dtype, default_workspace_bytes
from .linear_ce_products import accumulate_product_, times_weight
from .linear_distill_rows import SCRATCH_BUFFERS, distill_block_

Tensor = torch.Tensor

MiB = 1 << 20
# Default workspace of the fused distillation on the CPU: the two (c, V) logit buffers, the block
# scratch and the chunk's operands. 144 MiB keeps the measured peak extra memory under 160 MB while
# giving taller chunks than the cross-entropy's 96 MiB (two logit buffers instead of one).
DEFAULT_WORKSPACE_BYTES_CPU = 144 * MiB
# Rows per block of the in-place kernel: its five (r, V) arrays stay cache-resident.
BLOCK_BYTES = 4 * MiB

# (c, V) temporaries of the reference rows at their peak, counted for forward KL / JSD with the
# student's gradient (see the module docstring); the chunk height is sized with this many.
ROW_BUFFERS = 12


@dataclass(frozen=True)
class LinearDistillSpec:
    """Static options of one fused call (travel through autograd as one object).

    Attributes:
        options: the validated distillation options.
        workspace_bytes: cap on the chunk buffers (None: the device's default).
        need_input, need_weight, need_bias: which of the student's gradients are wanted.
        backend: "auto", "torch" (the reference rows of :mod:`crossent.numpy.distillation`
            everywhere) or "triton" (the Triton rows); see :func:`row_kernel`.
    """

    options: DistillOptions
    workspace_bytes: int | None = None
    need_input: bool = False
    need_weight: bool = False
    need_bias: bool = False
    backend: str = "auto"

    @property
    def need_any(self) -> bool:
        return self.need_input or self.need_weight or self.need_bias


def chunk_rows(spec: LinearDistillSpec, xs: Tensor, xt: Tensor, num_classes: int) -> int:
    """Rows per chunk so that the reference rows' (c, V) temporaries and the chunk's operands fit the
    workspace (≥ 1)."""
    budget = spec.workspace_bytes or default_workspace_bytes(xs.device)
    cbytes = torch.empty((), dtype=compute_dtype(xs)).element_size()
    per_row = ROW_BUFFERS * num_classes * cbytes
    per_row += 2 * num_classes * max(xs.element_size(), xt.element_size())  # half-precision logits
    per_row += 2 * (xs.shape[-1] + xt.shape[-1]) * cbytes  # the chunk's (c, D) operands and dX
    return max(1, budget // per_row)


def _logits(x: Tensor, weight: Tensor, bias: Tensor | None, cdtype: torch.dtype) -> Tensor:
    """``x·Wᵀ + b`` in the input dtype (as ``F.linear``), widened to the compute dtype."""
    z = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
    return z if z.dtype == cdtype else z.to(cdtype)


@dataclass
class Grads:
    input: Tensor | None = None
    weight: Tensor | None = None
    bias: Tensor | None = None


def chunk_plan(
    spec: LinearDistillSpec, xs: Tensor, xt: Tensor, num_classes: int
) -> tuple[int, int]:
    """``(c, r)``: rows per chunk of the products and rows per block of the reference rows.

    A quarter of the workspace goes to the reference rows' :data:`ROW_BUFFERS` (r, V) temporaries, the
    rest to the two (c, V) logit buffers and the chunk's operands (both at least one row, r ≤ c). The
    Triton rows need no temporaries: the whole workspace goes to the chunk and r = c.
    """
    budget = spec.workspace_bytes or workspace_default(xs.device)
    cbytes = torch.empty((), dtype=compute_dtype(xs)).element_size()
    kernel = row_kernel(spec, xs)
    if kernel == "block":
        r = max(1, min(budget // 4, BLOCK_BYTES) // (SCRATCH_BUFFERS * num_classes * cbytes))
        scratch = SCRATCH_BUFFERS
    elif kernel == "triton":  # one launch per chunk, no (r, V) temporaries
        r, scratch = 0, 0
    else:
        r = max(1, (budget // 4) // (ROW_BUFFERS * num_classes * cbytes))
        scratch = ROW_BUFFERS
    per_row = 2 * num_classes * cbytes  # the student's and the teacher's logits (then G)
    if xs.dtype != compute_dtype(xs):
        per_row += num_classes * xs.element_size()  # G rounded to the input dtype for dX
    per_row += 2 * (xs.shape[-1] + xt.shape[-1]) * cbytes  # operands, dX rows
    c = max(1, (budget - r * scratch * num_classes * cbytes) // per_row)
    return max(c, r), r or c


def workspace_default(device: torch.device) -> int:
    """:data:`DEFAULT_WORKSPACE_BYTES_CPU` on the CPU, the fused cross-entropy's default elsewhere."""
    return DEFAULT_WORKSPACE_BYTES_CPU if device.type == "cpu" else default_workspace_bytes(device)


def row_kernel(spec: LinearDistillSpec, x: Tensor) -> str:
    """How a chunk's rows are computed: "block", "triton" or "torch".

    ``spec.backend``: "auto" — the in-place block kernel on the CPU (its NaN check is a host read), the
    Triton kernel on CUDA when Triton is importable (not for float64), else the reference rows; "torch"
    — the reference rows; "triton" — the Triton kernel (float64: the reference rows, which keep float64).
    """
    backend = spec.backend
    if backend == "triton" or (backend == "auto" and x.is_cuda):
        if x.dtype != torch.float64 and (
            backend == "triton" or importlib.util.find_spec("triton") is not None
        ):
            return "triton"
    if backend == "auto" and x.device.type == "cpu":
        return "block"
    return "torch"


def _logits_into(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """``out ← x·Wᵀ + b``: into ``out`` directly when the dtypes agree, else computed in the input dtype
    (as ``F.linear``) and widened."""
    if out.dtype == x.dtype:
        if bias is None:
            torch.mm(x, weight.t(), out=out)
        else:
            torch.addmm(bias, x, weight.t(), out=out)
    else:
        out.copy_(_logits(x, weight, bias, out.dtype))


def run(
    spec: LinearDistillSpec,
    xs: Tensor,
    ws: Tensor,
    bs: Tensor | None,
    xt: Tensor,
    wt: Tensor,
    bt: Tensor | None,
    target: Tensor | None,
    g: Tensor,
    want_grad: bool,
) -> tuple[Tensor, Grads]:
    """The chunk loop. Returns ``(loss, grads)``: the summed loss (0-d) when ``g`` is 0-d and the
    reduction is not "none", else the per-row losses (N,); the student's gradients of ``Σ_i g_i ℓ_i``
    when ``want_grad`` (``g``: 0-d factor or (N,) per row).

    Per chunk of c rows: both logit products into preallocated (c, V) buffers (so the products see tall
    operands), then the reference rows block by block of r rows (their temporaries stay small and
    cache-resident), each block's gradient written over its logits, then dX and dW of the whole chunk.
    """
    opts = spec.options
    n, d = xs.shape
    v = ws.shape[0]
    cdtype = compute_dtype(xs)
    dev = xs.device
    per_row_out = g.dim() == 1 or (not want_grad and opts.reduction == "none")
    c, r = chunk_plan(spec, xs, xt, v)
    c = min(c, max(n, 1))
    # float32 on the CPU: each chunk's logits are oneDNN's fresh products (crossent._backends.onednn),
    # released when the next chunk starts; otherwise preallocated buffers
    fresh_s, fresh_t = onednn.takes(xs, ws, bs), onednn.takes(xt, wt, bt)
    zs_buf = None if fresh_s else torch.empty((c, v), dtype=cdtype, device=dev)
    zt_buf = None if fresh_t else torch.empty((c, v), dtype=cdtype, device=dev)
    previous: list[Tensor] = []
    kernel = row_kernel(spec, xs)
    fast = kernel == "block" and opts.soft_scale > 0
    scratch = [
        torch.empty((r, v), dtype=cdtype, device=dev)
        for _ in range(SCRATCH_BUFFERS - (opts.hard_weight == 0) if fast else 0)
    ]
    grads = Grads()
    if want_grad and spec.need_input:
        grads.input = torch.empty((n, d), dtype=xs.dtype, device=dev)
    if want_grad and spec.need_weight:
        # float32 for half inputs; written by the first chunk's product when the dtypes agree
        alloc = torch.empty if cdtype == xs.dtype else torch.zeros
        grads.weight = alloc((v, d), dtype=cdtype, device=dev)
    if want_grad and spec.need_bias:
        grads.bias = torch.zeros((v,), dtype=cdtype, device=dev)
    loss_rows = torch.empty((n,), dtype=cdtype, device=dev) if per_row_out else None
    total = torch.zeros((), dtype=cdtype, device=dev)
    g = g.to(cdtype)
    for start in range(0, n, c):
        stop = min(start + c, n)
        m = stop - start
        x_c = xs[start:stop]
        for z in previous:
            z.untyped_storage().resize_(0)  # the previous chunk's logits (or G): done with
        previous.clear()
        if zs_buf is None:  # product 1
            zs = onednn.logits(x_c, ws, bs)
            previous.append(zs)
        else:
            zs = zs_buf[:m]
            _logits_into(zs, x_c, ws, bs)
        if zt_buf is None:  # product 2
            zt = onednn.logits(xt[start:stop], wt, bt)
            previous.append(zt)
        else:
            zt = zt_buf[:m]
            _logits_into(zt, xt[start:stop], wt, bt)
        for lo in range(0, m, r):
            hi = min(lo + r, m)
            t_b = None if target is None else target[start + lo : start + hi]
            g_b = None
            if want_grad:
                g_b = g.expand(hi - lo) if g.dim() == 0 else g[start + lo : start + hi]
            loss_b = None
            if kernel == "triton":  # G written over the student's logits
                from .triton.distill_chunk import distill_rows_

                loss_b = distill_rows_(zs[lo:hi], zt[lo:hi], t_b, opts, g_b)
            elif fast:  # G written over the student's logits
                loss_b = distill_block_(zs[lo:hi], zt[lo:hi], t_b, opts, g_b, scratch)
                if loss_b is None:  # 0·∞ met: the block again from its logits, reference rows
                    rows = slice(start + lo, start + hi)
                    _logits_into(zs[lo:hi], xs[rows], ws, bs)
                    _logits_into(zt[lo:hi], xt[rows], wt, bt)
            if loss_b is None:
                loss_b, dz, _ = distill_rows_value_and_grad(
                    zs[lo:hi], zt[lo:hi], t_b, opts, g_b, teacher=False
                )
                if want_grad:
                    assert dz is not None
                    zs[lo:hi] = dz  # G replaces the logits of the rows already done
            if loss_rows is not None:
                loss_rows[start + lo : start + hi] = loss_b
            else:
                total += loss_b.sum()
        if not want_grad:
            continue
        dz_in = zs if zs.dtype == xs.dtype else zs.to(xs.dtype)  # G rounded once for product 3
        if grads.input is not None:
            times_weight(dz_in, ws, grads.input[start:stop])  # product 3
        if grads.weight is not None:
            if start == 0 and zs.dtype == x_c.dtype:  # product 4: the first chunk writes dW
                torch.mm(zs.t(), x_c, out=grads.weight)
            else:
                accumulate_product_(grads.weight, zs.t(), x_c)
        if grads.bias is not None:
            grads.bias.add_(zs.sum(0))
    if grads.weight is not None:
        grads.weight = grads.weight.to(ws.dtype)
    if grads.bias is not None and bs is not None:
        grads.bias = grads.bias.to(bs.dtype)
    return (loss_rows if loss_rows is not None else total), grads


def denominator(spec: LinearDistillSpec, target: Tensor | None, n: int, like: Tensor) -> Tensor:
    """D of the mean as a 0-d tensor (no host synchronisation)."""
    den = distill_denominator(target, spec.options, like)
    if den is None:
        return torch.tensor(float(n), dtype=like.dtype, device=like.device)
    return den


class LinearDistillation(torch.autograd.Function):
    """Forward computes the loss (and, for a scalar loss, the student's gradients); module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        spec: LinearDistillSpec,
        xs: Tensor,
        ws: Tensor,
        bs: Tensor | None,
        xt: Tensor,
        wt: Tensor,
        bt: Tensor | None,
        target: Tensor | None,
    ) -> Tensor:
        cdtype = compute_dtype(xs)
        ctx.spec = spec
        like = torch.zeros((), dtype=cdtype, device=xs.device)
        if spec.options.reduction == "none":
            loss, _ = run(spec, xs, ws, bs, xt, wt, bt, target, torch.ones_like(like), False)
            if spec.need_any:
                ctx.save_for_backward(xs, ws, bs, xt, wt, bt, target)
            return loss
        den = None
        g = torch.ones_like(like)
        if spec.options.reduction == "mean":
            den = denominator(spec, target, xs.shape[0], like)
            g = torch.reciprocal(den)
        total, grads = run(spec, xs, ws, bs, xt, wt, bt, target, g, spec.need_any)
        ctx.grads = grads if spec.need_any else None
        if spec.need_any:
            ctx.save_for_backward(xs, ws, bs, xt, wt, bt, target, g)
        return total if den is None else total / den

    @staticmethod
    @once_differentiable  # gradients formed by the chunk loop: a second-order request raises
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        spec: LinearDistillSpec = ctx.spec
        if spec.options.reduction == "none":
            xs, ws, bs, xt, wt, bt, target = ctx.saved_tensors
            g = grad_output.to(compute_dtype(xs)).reshape(-1)
            _, grads = run(spec, xs, ws, bs, xt, wt, bt, target, g, True)
        else:
            grads = ctx.grads
            ctx.grads = None
            if grads is None:  # a second backward through the same graph: recompute
                xs, ws, bs, xt, wt, bt, target, g = ctx.saved_tensors
                _, grads = run(
                    spec, xs, ws, bs, xt, wt, bt, target, g * grad_output.to(g.dtype), True
                )
            elif grad_output.device.type != "cpu" or bool(grad_output != 1):
                # scale the forward's gradients by the 0-d grad_output, in place (no host sync on
                # accelerators; on the CPU the common grad_output = 1 skips the passes)
                for t in (grads.input, grads.weight, grads.bias):
                    if t is not None:
                        t.mul_(grad_output.to(t.dtype))
        return None, grads.input, grads.weight, grads.bias, None, None, None, None


def linear_distillation(
    spec: LinearDistillSpec,
    xs: Tensor,
    ws: Tensor,
    bs: Tensor | None,
    xt: Tensor,
    wt: Tensor,
    bt: Tensor | None,
    target: Tensor | None,
) -> Tensor:
    """Apply :class:`LinearDistillation` to validated (N, D_S) / (N, D_T) rows (module docstring)."""
    return LinearDistillation.apply(spec, xs, ws, bs, xt, wt, bt, target)


__all__ = [
    "ROW_BUFFERS",
    "LinearDistillSpec",
    "LinearDistillation",
    "chunk_plan",
    "chunk_rows",
    "linear_distillation",
    "row_kernel",
    "run",
]
