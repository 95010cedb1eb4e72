r"""Fused linear + cross-entropy: computes ``crossent.cross_entropy(F.linear(x, W, b), target, ...)``
without ever holding the (N, V) logits.

Algorithm (rows of ``x`` in chunks of ``c`` rows, fixed order, so the result is deterministic):

1. Before the loop: the mean's denominator D = Σ_{not ignored} w[y_i] (targets and class weights only,
   :func:`crossent.numpy.categorical.ce_denominator`), so every chunk's gradient is scaled by 1/D at once.
   On the CPU the non-ignored rows are compacted on the host (a free sync there), so ignored tokens cost
   no matrix work; on CUDA every row is processed and ignored rows get a zero upstream factor (no sync).
2. Per chunk: ``z = X_c·Wᵀ (+ b)`` into one preallocated (c, V) buffer, or on the CPU in float32
   as oneDNN's fresh product, released when the next chunk starts (product 1 of 3); the chunk's
   cross-entropy and its gradient in place (:mod:`crossent._backends.linear_ce_chunk`); then
   ``dX_c = G_c·W`` (product 2) and ``dW += G_cᵀ·X_c`` (product 3), ``db += Σ_rows G_c``.
   *Factored* form (CPU, float32/float64, index targets, no softcap): the buffer only becomes the
   softmax P; ``G = a·P − b·onehot − (ε/C)·g·wᵀ`` is applied by writing ``P[i, y_i] −= b_i/a_i`` (c
   positions), scaling rows of X_c and of P·W by ``a``, and a rank-one correction of dX per chunk and of
   dW once at the end, so the chunk is read/written only by the softmax kernel and the two products.
   (``index_add_`` into dW was measured at ~200 ms per 512-row chunk at V=32000, D=1024: avoided.)
   *Explicit* form (everything else): the buffer becomes G (float32 for half-precision inputs; cast once
   to the input dtype for product 2; dW and db accumulate in float32). On the CPU the compiled kernel
   ``crossent._native.ce_rows_native_torch`` writes G in place when it was built (one read, one write of
   the chunk); otherwise eager torch ops (:func:`crossent._backends.linear_ce_chunk.ce_grad_`).
3. ``reduction`` "sum"/"mean" with gradients required: the three products run in the forward and the
   gradients are kept (unscaled by grad_output); backward multiplies them by the 0-d grad_output in
   place (no host sync, no recompute) and hands them over. A second backward through the same graph
   (``retain_graph=True``) recomputes them from the saved inputs. ``reduction="none"``: the forward
   computes only the per-row losses (product 1); backward recomputes the logits and applies the per-row
   grad_output before reducing dW (4 products in all; exact).

Memory: the workspace holds the (c, V) chunk buffer (plus, where used, a same-shape softcap scratch and a
half-precision copy of G) and the chunk's (c, D) operands (gathered rows, row-scaled copies);
``c = workspace_bytes // (bytes per row of those)`` (at least 1). Beyond it: O(N) row vectors and the
gradients themselves (dW in float32 while accumulating for half-precision inputs). Default workspace:
96 MiB on the CPU (the chunk height matters there: every chunk's products stream all of W, and
``dW`` is read and written once per chunk; MKL's ``sgemm`` also re-packs W per call, which is why the
float32 products ``X_c·Wᵀ`` and ``G_c·W`` go through oneDNN, :mod:`crossent._backends.onednn`;
``benchmarks/notes/linear_ce.md``), 256 MiB elsewhere.

The chunk kernel of the explicit form (``chunk_kernel``): the Triton kernel on CUDA when Triton is
importable (:func:`crossent._backends.triton.chunk.ce_rows_grad_`: one read of the logits, the gradient
written into them, in the input dtype: half-precision chunks stay half precision, the kernel computes in
float32 and rounds G once), the compiled kernel on the CPU when it was built, eager torch ops otherwise.

Layout: this module holds the loop and the autograd function; the chunk's cross-entropy is
:mod:`crossent._backends.linear_ce_chunk`, its products :mod:`crossent._backends.linear_ce_products`.
The public entry (validation, K-dimensional heads, ``backend=``) is :func:`crossent.linear_cross_entropy`.

GPU (CUDA): cuBLAS products in the input dtype, the Triton chunk kernel, no host synchronisation (no
compaction: ignored rows carry a zero factor and still cost their share of the products). For
half-precision inputs dW accumulates in float32 through ``torch.addmm(..., out_dtype=torch.float32)``
(bf16/fp16 products with float32 output, cuBLAS); where that overload is missing, a float32 product.
Untested on a GPU here (no GPU lent); the Triton chunk path is tested on the CPU under the interpreter.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._contract import CEOptions
from . import onednn
from .linear_ce_chunk import ce_grad_, prob_rows_target_grads
from .linear_ce_products import Grads, explicit_grads, factored_chunk, factored_grads

Tensor = torch.Tensor

MiB = 1 << 20
# Defaults: the chunk buffer must stay far below the logits (N·V·4 bytes) while keeping the chunk's
# products efficient. On the CPU 96 MiB = 786 rows at V=32000, D=1024 and 195 rows at V=128256, D=512 in
# float32; the products of 130-row chunks (64 MiB) ran at ~1.5× the unchunked products at V=128256 and
# ~200-row chunks at ~1.2× (product 1 alone, benchmarks/notes/linear_ce.md), and 96 MiB keeps the
# measured peak extra memory under our CPU target of 128 MB.
DEFAULT_WORKSPACE_BYTES_CPU = 96 * MiB
DEFAULT_WORKSPACE_BYTES_GPU = 256 * MiB
# The reference rows used for probability targets hold about this many (c, V) temporaries at once.
_PROB_TARGET_BUFFERS = 8


def default_workspace_bytes(device: torch.device) -> int:
    """96 MiB on the CPU, 256 MiB on accelerators."""
    return DEFAULT_WORKSPACE_BYTES_CPU if device.type == "cpu" else DEFAULT_WORKSPACE_BYTES_GPU


@dataclass(frozen=True)
class LinearCESpec:
    """Static options of one fused call (travel through autograd as one object).

    Attributes:
        options: the validated cross-entropy options (``options.reduction`` is the call's reduction).
        prob_target: the target holds class probabilities (N, V).
        workspace_bytes: cap on the chunk buffers.
        need_input, need_weight, need_bias: which gradients are wanted (decided before the forward).
        need_target, need_class_weight: gradients with respect to probability targets and class weights.
        backend: "auto", "torch", "native" or "triton" (see :func:`chunk_kernel`).
        max_rows: a cap on the rows per chunk (besides the workspace), or None.
    """

    options: CEOptions
    prob_target: bool
    workspace_bytes: int
    need_input: bool = False
    need_weight: bool = False
    need_bias: bool = False
    need_target: bool = False
    need_class_weight: bool = False
    backend: str = "auto"
    max_rows: int | None = None

    @property
    def need_any(self) -> bool:
        return (
            self.need_input
            or self.need_weight
            or self.need_bias
            or self.need_target
            or self.need_class_weight
        )


def compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def native_ready(x: Tensor) -> bool:
    """The compiled CPU kernel (``crossent._native``) can compute the explicit chunk form of ``x``."""
    if x.device.type != "cpu":
        return False
    from .. import _native

    return _native.available() and hasattr(_native, "ce_rows_native_torch")


def chunk_kernel(spec: LinearCESpec, x: Tensor) -> str:
    """How the chunk's CE is computed: "factored" (CPU fast path), "triton", "native" or "torch".

    ``spec.backend``: "auto" — the Triton kernel on CUDA (not for float64), else the factored form where
    it applies, else the compiled kernel when built, else torch ops; "torch" — the factored form or torch
    ops; "native" — the compiled kernel for every chunk; "triton" — the Triton kernel (float64: torch).
    Gradients with respect to probability targets or class weights come from the reference rows
    (torch ops) whatever the backend.
    """
    backend = spec.backend
    if spec.need_target or spec.need_class_weight:
        return "torch"
    if x.dtype != torch.float64 and (backend == "triton" or backend == "auto" and x.is_cuda):
        if backend == "triton" or importlib.util.find_spec("triton") is not None:
            return "triton"
    if backend == "native":
        return "native"
    if _factored(spec, x):
        return "factored"
    return "native" if backend == "auto" and native_ready(x) else "torch"


def _factored(spec: LinearCESpec, x: Tensor) -> bool:
    """The CPU fast path: index targets, no softcap, products in the input dtype."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and not spec.prob_target
        and spec.options.softcap is None
    )


def chunk_rows(spec: LinearCESpec, x: Tensor, num_classes: int) -> int:
    """Rows per chunk so that the (c, V) buffers and the (c, D) operands together fit
    ``spec.workspace_bytes`` (≥ 1)."""
    kernel = chunk_kernel(spec, x)
    cbytes = torch.empty((), dtype=compute_dtype(x)).element_size()
    half = x.dtype != compute_dtype(x)
    per_row = 3 * x.shape[-1] * cbytes  # gathered rows, row-scaled rows, a (c, D) product
    if kernel == "triton":
        per_row += num_classes * x.element_size()  # the chunk stays in the input dtype
        if half and not x.is_cuda:
            per_row += (
                num_classes * cbytes
            )  # float32 copy of G for dW (no bf16→fp32 product off CUDA)
        return max(1, spec.workspace_bytes // per_row)
    reference_rows = spec.prob_target and kernel == "torch"
    per_row += num_classes * cbytes * (_PROB_TARGET_BUFFERS if reference_rows else 1)
    if half:
        per_row += num_classes * x.element_size()  # the half-precision copy of G (or of the logits)
    if spec.options.softcap is not None and not spec.prob_target and kernel == "torch":
        per_row += num_classes * cbytes  # tanh(x/s), kept for the gradient factor
    return max(1, spec.workspace_bytes // per_row)


def _logits_(
    z: Tensor, low: Tensor | None, x_c: Tensor, weight: Tensor, bias: Tensor | None
) -> None:
    """z ← x_c·Wᵀ + b (computed in the input dtype, like ``F.linear``; widened into ``z`` if needed)."""
    out = z if low is None else low
    if bias is None:
        torch.mm(x_c, weight.t(), out=out)
    else:
        torch.addmm(bias, x_c, weight.t(), out=out)
    if low is not None:
        z.copy_(low)


def logit_chunks(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    chunk: int,
    buf: Tensor | None,
    low: Tensor | None = None,
    rows: Tensor | None = None,
) -> Iterator[tuple[int, int, Tensor | None, Tensor, Tensor]]:
    """The fused-linear chunk loop, shared by this module and the vocab-parallel
    :func:`crossent.distributed.linear_cross_entropy`: what happens to each chunk is the caller's.

    Walks the rows of ``x`` (or the rows listed in ``rows``) ``chunk`` at a time, in order, and yields
    ``(start, stop, idx, x_c, z)``: the chunk's position in the walk, its row indices (None when the rows
    are a slice ``x[start:stop]``), its (m, D) rows and its logits ``z = x_c·Wᵀ + b`` written into the
    first m rows of ``buf`` (computed in the input dtype, like ``F.linear``, through ``low`` when ``buf``
    is wider). ``z`` is overwritten by the next chunk. ``buf=None`` (operands that
    :func:`crossent._backends.onednn.takes`): each chunk's logits are oneDNN's fresh output, whose memory is released
    when the next chunk starts (``z`` is then empty), so one chunk's logits are alive at a time.
    """
    n_rows = x.shape[0] if rows is None else rows.numel()
    previous: Tensor | None = None
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        if rows is None:
            idx, x_c = None, x[start:stop]
        else:
            idx = rows[start:stop]
            x_c = x.index_select(0, idx)
        if buf is None:
            if previous is not None:
                previous.untyped_storage().resize_(0)  # the caller is done with it (see above)
            z = previous = onednn.logits(x_c, weight, bias)
        else:
            z = buf[: stop - start]
            _logits_(z, None if low is None else low[: stop - start], x_c, weight, bias)
        yield start, stop, idx, x_c, z


def run(
    spec: LinearCESpec,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    g: Tensor,
    want_grad: bool,
) -> tuple[Tensor, Grads]:
    """The chunk loop. Returns ``(loss, grads)``: the summed loss (0-d) when ``options.reduction`` is
    "sum"/"mean" and ``g`` is 0-d, else the per-row losses (N,); gradients of ``Σ_i g_i ℓ_i`` when
    ``want_grad`` (``g``: 0-d factor or (N,) per row)."""
    opts = spec.options
    n, d = x.shape
    v = weight.shape[0]
    cdtype = compute_dtype(x)
    dev = x.device
    kernel = chunk_kernel(spec, x)
    factored, native, triton = kernel == "factored", kernel == "native", kernel == "triton"
    wc = None if class_weight is None else class_weight.to(cdtype)
    per_row_out = g.dim() == 1 or not want_grad and opts.reduction == "none"

    # Rows to process: on the CPU only the non-ignored ones (host-side compaction, free there).
    rows: Tensor | None = None
    n_rows = n
    if not spec.prob_target and dev.type == "cpu" and not triton:
        valid = target != opts.ignore_index
        if not bool(valid.all()):
            rows = valid.nonzero().view(-1)
            n_rows = rows.numel()

    c = min(chunk_rows(spec, x, v), spec.max_rows or max(n_rows, 1), max(n_rows, 1))
    # the Triton kernel reads and writes the chunk in the input dtype; the others work in float32/64
    buf = (
        None
        if not triton and onednn.takes(x, weight, bias)
        else torch.empty((c, v), dtype=x.dtype if triton else cdtype, device=dev)
    )
    low = (
        torch.empty((c, v), dtype=x.dtype, device=dev) if x.dtype != cdtype and not triton else None
    )
    tau = (
        torch.empty((c, v), dtype=cdtype, device=dev)
        if opts.softcap is not None and not spec.prob_target and kernel == "torch"
        else None
    )

    grads = Grads()
    acc_dtype = cdtype  # float32 accumulation of dW/db for half-precision inputs
    if want_grad and spec.need_input:
        grads.input = (torch.zeros if rows is not None else torch.empty)(
            (n, d), dtype=x.dtype, device=dev
        )
    if want_grad and spec.need_weight:
        # the factored form's first chunk writes dW/db with a plain product: no zero fill needed
        grads.weight = (torch.empty if factored and n_rows else torch.zeros)(
            (v, d), dtype=acc_dtype, device=dev
        )
    if want_grad and spec.need_bias:
        grads.bias = (torch.empty if factored and n_rows else torch.zeros)(
            (v,), dtype=acc_dtype, device=dev
        )
    if want_grad and spec.need_target:
        grads.target = torch.empty(target.shape, dtype=target.dtype, device=dev)
    if want_grad and spec.need_class_weight:
        grads.class_weight = torch.zeros((v,), dtype=cdtype, device=dev)
    loss_rows = torch.zeros((n,), dtype=cdtype, device=dev) if per_row_out else None
    total = torch.zeros((), dtype=cdtype, device=dev)

    eps = opts.label_smoothing
    # Factored form: Σ_c w_c z_ic = x_i·(Wᵀw) + b·w, and the rank-one term of dX uses u = Wᵀw.
    u = bw = None
    if factored and eps > 0:
        u = weight.sum(0) if wc is None else wc @ weight
        bw = 0.0 if bias is None else (bias.sum() if wc is None else bias @ wc)
    total_w: Tensor | float = float(v) if wc is None else wc.sum()
    sum_gx = (
        torch.zeros((d,), dtype=cdtype, device=dev) if factored and eps > 0 and want_grad else None
    )
    sum_g = torch.zeros((), dtype=cdtype, device=dev)

    for start, stop, idx, x_c, z in logit_chunks(x, weight, bias, c, buf, low, rows):
        first = start == 0
        m = stop - start
        lo = None if low is None else low[:m]
        if idx is None:
            t_c = target[start:stop]
            g_c = g if g.dim() == 0 else g[start:stop]
        else:
            t_c = target.index_select(0, idx)
            g_c = g if g.dim() == 0 else g.index_select(0, idx)
        if factored:
            loss_c, a, b = factored_chunk(
                z, x_c, t_c, weight, bias, wc, u, bw, total_w, opts, g_c, want_grad
            )
        elif triton:
            from .triton.chunk import ce_rows_grad_

            loss_c = ce_rows_grad_(z, t_c, class_weight, opts, spec.prob_target, g_c, want_grad)
        elif native:
            from .._native import ce_rows_native_torch

            loss_c, _ = ce_rows_native_torch(
                z,
                t_c,
                wc,
                opts,
                spec.prob_target,
                grad=z if want_grad else None,
                grad_scale=g_c,
                inplace=True,
            )
        else:
            if want_grad and (grads.target is not None or grads.class_weight is not None):
                dq, dcw = prob_rows_target_grads(
                    z, t_c, wc, opts, g_c, grads.class_weight is not None
                )
                if grads.target is not None:
                    grads.target[start:stop] = dq
                if dcw is not None and grads.class_weight is not None:
                    grads.class_weight += dcw
            loss_c = ce_grad_(
                z, t_c, wc, opts, spec.prob_target, g_c, want_grad, None if tau is None else tau[:m]
            )
        if loss_rows is not None:
            if idx is None:
                loss_rows[start:stop] = loss_c
            else:
                loss_rows.index_copy_(0, idx, loss_c)
        else:
            total += loss_c.to(cdtype).sum()
        if not want_grad:
            continue
        if factored:
            assert a is not None and b is not None  # (the factored form computed them)
            g_rows = g_c.to(cdtype).expand(m)
            factored_grads(
                grads, z, x_c, t_c, weight, u, a, b, g_rows, eps, v, idx, start, stop, first
            )
            if sum_gx is not None:
                sum_gx += g_rows @ x_c
                sum_g += g_rows.sum()
        else:
            explicit_grads(grads, z, lo, x_c, weight, idx, start, stop)

    if want_grad and factored and eps > 0:
        # the rank-one smoothing term −(ε/C)·g·wᵀ of every row, applied once: dW −= (ε/C)·w ⊗ Σ_i g_i x_i
        scale = -eps / v
        assert sum_gx is not None and sum_g is not None  # (accumulated when eps > 0)
        if grads.weight is not None:
            if wc is None:
                grads.weight.add_(sum_gx.view(1, -1), alpha=scale)
            else:
                grads.weight.addr_(wc, sum_gx, alpha=scale)
        if grads.bias is not None:
            grads.bias.add_((sum_g * scale) * (1.0 if wc is None else wc))
    if grads.weight is not None:
        grads.weight = grads.weight.to(weight.dtype)
    if grads.bias is not None and bias is not None:
        grads.bias = grads.bias.to(bias.dtype)
    if grads.class_weight is not None and class_weight is not None:
        grads.class_weight = grads.class_weight.to(class_weight.dtype)
    return (loss_rows if loss_rows is not None else total), grads


class LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss (and, for a scalar loss, the gradients); see the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        spec: LinearCESpec,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,
        class_weight: Tensor | None,
        denominator: Tensor | None,
    ) -> Tensor:
        opts = spec.options
        cdtype = compute_dtype(x)
        ctx.spec = spec
        if opts.reduction == "none":
            loss, _ = run(
                spec,
                x,
                weight,
                bias,
                target,
                class_weight,
                torch.ones((), dtype=cdtype, device=x.device),
                False,
            )
            if spec.need_any:
                ctx.save_for_backward(x, weight, bias, target, class_weight)
            return loss
        if opts.reduction == "mean":
            den = (
                denominator
                if denominator is not None
                else torch.tensor(float(x.shape[0]), dtype=cdtype, device=x.device)
            )
            g = torch.reciprocal(den.to(cdtype))
        else:
            den, g = None, torch.ones((), dtype=cdtype, device=x.device)
        total, grads = run(spec, x, weight, bias, target, class_weight, g, spec.need_any)
        ctx.grads = grads if spec.need_any else None
        if spec.need_any:  # references only: used if backward runs a second time (retain_graph)
            ctx.save_for_backward(x, weight, bias, target, class_weight, g)
        return total if den is None else total / den.to(cdtype)

    @staticmethod
    @once_differentiable  # gradients formed in the forward: a second-order request raises
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        spec: LinearCESpec = ctx.spec
        if spec.options.reduction == "none":
            x, weight, bias, target, class_weight = ctx.saved_tensors
            _, grads = run(
                spec,
                x,
                weight,
                bias,
                target,
                class_weight,
                grad_output.to(compute_dtype(x)).reshape(-1),
                True,
            )
        else:
            grads = ctx.grads
            ctx.grads = None  # handed to autograd (which then keeps them without a copy)
            if grads is None:
                # a second backward through the same graph: the forward's gradients are gone, recompute
                x, weight, bias, target, class_weight, g = ctx.saved_tensors
                _, grads = run(
                    spec, x, weight, bias, target, class_weight, g * grad_output.to(g.dtype), True
                )
                return None, *_returned(grads)
            # scale the gradients computed in the forward by the 0-d grad_output, in place (no sync on
            # accelerators; on the CPU, where reading it is free, the common grad_output == 1 skips the pass)
            if grad_output.device.type != "cpu" or bool(grad_output != 1):
                for t in (grads.input, grads.weight, grads.bias, grads.target, grads.class_weight):
                    if t is not None:
                        t.mul_(grad_output.to(t.dtype))
        return None, *_returned(grads)


def _returned(grads: Grads) -> tuple[Tensor | None, ...]:
    """Gradients in the order of the forward's tensor arguments after ``spec``."""
    return grads.input, grads.weight, grads.bias, grads.target, grads.class_weight, None


def linear_cross_entropy(
    spec: LinearCESpec,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    class_weight: Tensor | None,
    denominator: Tensor | None,
) -> Tensor:
    """Apply :class:`LinearCrossEntropy` to validated (N, D) rows; see the module docstring."""
    return LinearCrossEntropy.apply(spec, x, weight, bias, target, class_weight, denominator)


__all__ = [
    "DEFAULT_WORKSPACE_BYTES_CPU",
    "DEFAULT_WORKSPACE_BYTES_GPU",
    "LinearCESpec",
    "LinearCrossEntropy",
    "chunk_rows",
    "default_workspace_bytes",
    "logit_chunks",
    "linear_cross_entropy",
    "run",
]
