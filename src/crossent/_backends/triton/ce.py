"""Fused Triton cross-entropy over (M, C) logits: loss, lse and gradient in one launch.

Computes :func:`crossent.numpy.cross_entropy` (formulas in :mod:`crossent.numpy.categorical`); this file
only says how. Math in float32 whatever the input dtype (upcast at load, one rounding at the store);
row offsets in int64.

Algorithm (``_ce_kernel``, one program per row), with ``z = softcap(x)``:

* **Row fits in one block** (``C <= BLOCK``, see :mod:`.configs`): load the row once into registers,
  compute ``m = max z``, ``lse = m + log Σ exp(z − m)``, the loss, and — when a gradient is wanted — the
  gradient ``∂ℓ/∂x`` from the same registers, stored once. Bytes moved: one read of the logits, one write
  of the gradient, plus O(1) per row (target, loss, lse) and, with probability targets, one read of the
  target row.
* **Large vocabularies** (``C > BLOCK``): pass 1 streams the row in column blocks with the online
  log-sum-exp (running ``m``, ``d = Σ exp(z − m)``) and the running sums the loss needs; pass 2
  re-reads the row (from L2 when the schedule is kind) and writes the gradient. Bytes moved: two reads,
  one write. The exponentials of pass 1 are recomputed in pass 2 instead of being stored.
* **Few long rows** (``configs.split_config``): each row is cut into chunks of whole blocks, one program
  per (row, chunk). ``_ce_partial_kernel`` writes each chunk's running sums (6 floats), then
  ``_ce_kernel`` on the same grid merges a row's chunks in a fixed order (deterministic), chunk 0 writes
  the loss, and every program writes the gradient of its own chunk. Two launches, same bytes as above
  plus 24 bytes per (row, chunk).

For ``reduction="none"`` the forward also saves the per-row coefficient of ``p`` in the gradient
(``coef``, with lse); the backward is then one pass (read the logits, write the gradient), the per-row
upstream gradient applied exactly.

The loss terms that are sums over classes use a running shift so nothing cancels: with ``s`` the
running max, ``Σ_c w_c (lse − z_c) = W·(lse − s) − Σ_c w_c (z_c − s)``, both terms ≥ 0 in one block; a
new maximum adds ``W_seen·(s_old − s_new)`` to the second sum.

The upstream factor of each row's gradient, ``g`` (``G_MODE``): 0 → a scalar argument (1 for ``sum``,
1/M for the ``mean`` of probability targets), 1 → ``1 / D`` with the mean's denominator D read from the
device (no host sync), 2 → ``g_i`` read per row (backward of ``reduction="none"``).

``_scale_kernel`` multiplies a gradient computed with g = 1 by the real upstream gradient in backward; it
reads g on the device and does no memory traffic when g == 1 (the usual ``loss.backward()``), so backward
costs nothing then. Ideas from FlashAttention's ``flash_attn/ops/triton/cross_entropy.py`` (one program per
row, lse saved, gradient in forward) and Liger-Kernel's ``ops/cross_entropy.py`` (gradient computed in
forward and scaled in backward, skipped when the upstream gradient is 1); all code here is written anew.
"""

import torch
import triton
import triton.language as tl

from . import configs
from .tl_math import finish_lse, online_lse_step, softcap, softcap_grad

# G_MODE values (how the upstream factor g of a row is obtained), see the module docstring.
G_SCALAR, G_INV_DEN, G_PER_ROW = 0, 1, 2
# row_stats of launch_ce: compute lse and the loss (pass 1); also save the gradient's per-row coefficient;
# or load lse and that coefficient (backward of reduction="none": one pass). (_ce_kernel's ROW_STATS
# constexpr: 0 pass 1 in the program, 1 merge the chunks of a split row, 2 load the saved values.)
STATS_COMPUTE, STATS_SAVE, STATS_LOAD = 0, 1, 2


@triton.jit
def _load_block(
    x_row,
    t_row,
    W,
    cols,
    C,
    cap,
    PROB_TARGET: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
):
    """The block ``cols`` of a row: z (−inf past C), w (0 past C; 1 without weights), q (prob targets)."""
    mask = cols < C
    x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)  # upcast at load (bf16/fp16)
    if HAS_SOFTCAP:
        x = softcap(x, cap)
    z = tl.where(mask, x, float("-inf"))
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        w = 1.0  # a scalar: no per-class array to keep live
    if PROB_TARGET:
        q = tl.load(t_row + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        q = w  # unused
    return z, w, q, mask


@triton.jit
def _accumulate(
    z,
    w,
    q,
    mask,
    m,
    d,
    s_w,
    w_seen,
    s_q,
    omega,
    PROB_TARGET: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
):
    """Fold one block into the row's running sums (see the module docstring for the running shift).

    m, d: online lse. s_w = Σ w_c (z_c − s), w_seen = Σ w_c (smoothing). s_q = Σ w_c q_c (z_c − s),
    omega = Σ w_c q_c (probability targets). s is the finite shift of the running max.
    """
    s_old = tl.where(m == float("-inf"), 0.0, m)  # the finite shift: m, or 0 while m is −inf
    m, d = online_lse_step(m, d, z)
    s_new = tl.where(m == float("-inf"), 0.0, m)
    if HAS_SMOOTH:
        s_w = s_w + w_seen * (s_old - s_new)
        dz = tl.where(mask, z - s_new, 0.0)  # 0 past C (not 0·(−inf))
        s_w = s_w + tl.sum(w * dz, axis=0)
        w_seen = w_seen + tl.sum(tl.where(mask, w, 0.0), axis=0)
    if PROB_TARGET:
        wq = w * q
        s_q = s_q + omega * (s_old - s_new)
        s_q = s_q + tl.sum(wq * tl.where(mask, z - s_new, 0.0), axis=0)
        omega = omega + tl.sum(wq, axis=0)
    return m, d, s_w, w_seen, s_q, omega


@triton.jit
def _grad_block(
    z,
    w,
    q,
    cols,
    mask,
    lse,
    coef,
    g_row,
    y,
    eps_over_c,
    one_minus_eps,
    w_y,
    cap,
    PROB_TARGET: tl.constexpr,
    HAS_SMOOTH: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
):
    """∂ℓ/∂x for one block, in fp32 (rounded once, at the store: the true class is exact before rounding)."""
    p = tl.exp(z - lse)
    if PROB_TARGET:
        # ∂ℓ/∂z_c = (Σ_k w_k q'_k + 2λ·ω·lse)·p_c − w_c q'_c,  q' = (1 − ε)q + ε/C
        if HAS_SMOOTH:
            wq = w * (q * one_minus_eps + eps_over_c)
        else:
            wq = w * q
        dz = (coef * p - wq) * g_row
    else:
        # ∂ℓ/∂z_c = ((1 − ε)w_y + (ε/C)W + 2λ·w_y·lse)·p_c − (1 − ε)w_y·[c = y] − (ε/C)·w_c
        dz = coef * p
        dz = tl.where(cols == y, dz - one_minus_eps * w_y, dz)
        if HAS_SMOOTH:
            dz = dz - eps_over_c * w
        dz = dz * g_row
    # chain rule through the softcap: dz/dx = 1 − (z/s)²
    if HAS_SOFTCAP:
        dz = dz * softcap_grad(tl.where(mask, z, 0.0), cap)  # (z is −inf past C)
    return dz


@triton.jit
def _combine_partials(PART, row, n_chunks, MAX_CHUNKS: tl.constexpr):
    """Merge the per-chunk running sums of one row (written by ``_ce_partial_kernel``) in a fixed order.

    Each chunk k holds (m_k, d_k, s_w_k, w_k, s_q_k, ω_k) relative to its own shift s_k; moving a sum to
    the row's shift s adds W_k·(s_k − s) (or ω_k·(s_k − s)), and d_k scales by exp(m_k − s).
    """
    k = tl.arange(0, MAX_CHUNKS)
    kmask = k < n_chunks
    base = PART + (row * n_chunks + k) * 6
    m_k = tl.load(base, mask=kmask, other=float("-inf"))
    d_k = tl.load(base + 1, mask=kmask, other=0.0)
    s_w_k = tl.load(base + 2, mask=kmask, other=0.0)
    w_k = tl.load(base + 3, mask=kmask, other=0.0)
    s_q_k = tl.load(base + 4, mask=kmask, other=0.0)
    om_k = tl.load(base + 5, mask=kmask, other=0.0)
    m = tl.max(m_k, axis=0)
    shift = tl.where(m == float("-inf"), 0.0, m)
    shift_k = tl.where(m_k == float("-inf"), 0.0, m_k)
    d = tl.sum(tl.where(d_k == 0.0, 0.0, d_k * tl.exp(m_k - shift)), axis=0)
    moved = tl.where(kmask, shift_k - shift, 0.0)
    s_w = tl.sum(s_w_k + w_k * moved, axis=0)
    s_q = tl.sum(s_q_k + om_k * moved, axis=0)
    return m, d, s_w, tl.sum(w_k, axis=0), s_q, tl.sum(om_k, axis=0)


@triton.heuristics({"HAS_WEIGHT": lambda args: args["W"] is not None})
@triton.jit
def _ce_partial_kernel(
    # pointers
    X, T, W, PART,
    # shapes
    C, chunk_size, n_chunks,
    # strides
    stride_xm, stride_tm,
    # options
    cap,
    # constexprs
    PROB_TARGET: tl.constexpr, HAS_SMOOTH: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Split rows, launch 1 of 2: the running sums of pass 1 over one chunk of one row, to ``PART``."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    col_lo = chunk * chunk_size
    col_hi = tl.minimum(col_lo + chunk_size, C)
    x_row = X + row * stride_xm
    t_row = T + row * stride_tm
    cols = tl.arange(0, BLOCK)
    m = float("-inf")
    d = 0.0
    s_w = 0.0
    w_seen = 0.0
    s_q = 0.0
    omega = 0.0
    for start in range(col_lo, col_hi, BLOCK):
        z, w, q, mask = _load_block(
            x_row, t_row, W, start + cols, col_hi, cap, PROB_TARGET, HAS_WEIGHT, HAS_SOFTCAP
        )
        m, d, s_w, w_seen, s_q, omega = _accumulate(
            z, w, q, mask, m, d, s_w, w_seen, s_q, omega, PROB_TARGET, HAS_SMOOTH
        )
    base = PART + (row * n_chunks + chunk) * 6
    tl.store(base, m)
    tl.store(base + 1, d)
    tl.store(base + 2, s_w)
    tl.store(base + 3, w_seen)
    tl.store(base + 4, s_q)
    tl.store(base + 5, omega)


@triton.heuristics(
    {
        "HAS_WEIGHT": lambda args: args["W"] is not None,
        "SINGLE_BLOCK": lambda args: args["C"] <= args["BLOCK"],
    }
)
@triton.jit
def _ce_kernel(
    # pointers
    X, T, W, G, LOSS, LSE, COEF, PART, DX,
    # shapes: C classes; this program's gradient covers columns [chunk·chunk_size, +chunk_size)
    C, chunk_size, n_chunks,
    # strides, in elements (the class axis has stride 1)
    stride_xm, stride_tm, stride_dxm,
    # options
    ignore_index, eps, z_loss, cap, g_scale,
    # constexprs
    PROB_TARGET: tl.constexpr, HAS_SMOOTH: tl.constexpr, HAS_ZLOSS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, G_MODE: tl.constexpr, ROW_STATS: tl.constexpr,
    SAVE_COEF: tl.constexpr, WRITE_GRAD: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    SINGLE_BLOCK: tl.constexpr, MAX_CHUNKS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # int64 row offsets: row * stride passes 2^31 elements for large N·V.
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    x_row = X + row * stride_xm
    t_row = T + row * stride_tm
    cols = tl.arange(0, BLOCK)
    eps_over_c = eps / C
    one_minus_eps = 1.0 - eps

    # the row's upstream factor g
    if G_MODE == 0:
        g = g_scale
    elif G_MODE == 1:
        g = g_scale / tl.load(G).to(tl.float32)
    else:
        g = tl.load(G + row).to(tl.float32)

    # index targets: the target class and its logit/weight, read once (clamped: an out-of-range target,
    # already reported by the caller's check, never reads out of bounds)
    y = 0
    valid = True
    w_y = 1.0
    z_y = 0.0
    g_row = g
    if not PROB_TARGET:
        y = tl.load(T + row).to(tl.int64)
        valid = y != ignore_index
        y = tl.where(valid & (y >= 0) & (y < C), y, 0)
        z_y = tl.load(x_row + y).to(tl.float32)
        if HAS_SOFTCAP:
            z_y = softcap(z_y, cap)
        if HAS_WEIGHT:
            w_y = tl.load(W + y).to(tl.float32)
        # ignored rows carry 0 (not 0·g: with everything ignored, g = 1/0 = inf for the mean)
        g_row = tl.where(valid, g, 0.0)

    if ROW_STATS == 2:
        # backward of reduction="none": lse and the row's coefficient come from the forward
        lse = tl.load(LSE + row)
        coef = tl.load(COEF + row)
    else:
        # ---- pass 1: lse and the loss's running sums ---------------------------------------------
        m = float("-inf")
        d = 0.0
        s_w = 0.0
        w_seen = 0.0
        s_q = 0.0
        omega = 0.0
        if ROW_STATS == 1:  # split row: merge the chunks' sums from _ce_partial_kernel
            m, d, s_w, w_seen, s_q, omega = _combine_partials(PART, row, n_chunks, MAX_CHUNKS)
        elif SINGLE_BLOCK:
            z, w, q, mask = _load_block(
                x_row, t_row, W, cols, C, cap, PROB_TARGET, HAS_WEIGHT, HAS_SOFTCAP
            )
            m, d, s_w, w_seen, s_q, omega = _accumulate(
                z, w, q, mask, m, d, s_w, w_seen, s_q, omega, PROB_TARGET, HAS_SMOOTH
            )
        else:
            for start in range(0, C, BLOCK):
                z, w, q, mask = _load_block(
                    x_row, t_row, W, start + cols, C, cap, PROB_TARGET, HAS_WEIGHT, HAS_SOFTCAP
                )
                m, d, s_w, w_seen, s_q, omega = _accumulate(
                    z, w, q, mask, m, d, s_w, w_seen, s_q, omega, PROB_TARGET, HAS_SMOOTH
                )
        lse = finish_lse(m, d)
        shift = tl.where(m == float("-inf"), 0.0, m)
        w_total = w_seen  # Σ_c w_c (C without weights), meaningful with smoothing only

        # ---- the loss and the coefficient of p in the gradient --------------------------------------
        if PROB_TARGET:
            # ℓ = Σ_c w_c q'_c (lse − z_c) + λ·ω·lse²
            loss = omega * (lse - shift) - s_q
            if HAS_SMOOTH:
                loss = one_minus_eps * loss + eps_over_c * (w_total * (lse - shift) - s_w)
            if HAS_ZLOSS:
                loss = loss + z_loss * omega * lse * lse
            # coef = Σ_k w_k q'_k + 2λ·ω·lse
            coef = omega
            if HAS_SMOOTH:
                coef = one_minus_eps * omega + eps_over_c * w_total
            if HAS_ZLOSS:
                coef = coef + 2.0 * z_loss * omega * lse
        else:
            # ℓ = (1 − ε)·w_y·(lse − z_y) + (ε/C)·Σ_c w_c (lse − z_c) + λ·w_y·lse², 0 where ignored
            loss = one_minus_eps * w_y * (lse - z_y)
            if HAS_SMOOTH:
                loss = loss + eps_over_c * (w_total * (lse - shift) - s_w)
            if HAS_ZLOSS:
                loss = loss + z_loss * w_y * lse * lse
            loss = tl.where(valid, loss, 0.0)
            # coef = (1 − ε)·w_y + (ε/C)·W + 2λ·w_y·lse
            coef = one_minus_eps * w_y
            if HAS_SMOOTH:
                coef = coef + eps_over_c * w_total
            if HAS_ZLOSS:
                coef = coef + 2.0 * z_loss * w_y * lse
        if chunk == 0:  # one writer per row
            tl.store(LOSS + row, loss)
            tl.store(LSE + row, lse)
            if SAVE_COEF:
                tl.store(COEF + row, coef)

    # ---- pass 2: the gradient (from registers when the row fit in one block) ----------------------
    if WRITE_GRAD:
        dx_row = DX + row * stride_dxm
        if SINGLE_BLOCK:
            if ROW_STATS == 2:
                z, w, q, mask = _load_block(
                    x_row, t_row, W, cols, C, cap, PROB_TARGET, HAS_WEIGHT, HAS_SOFTCAP
                )
            dz = _grad_block(
                z, w, q, cols, mask, lse, coef, g_row, y, eps_over_c, one_minus_eps, w_y, cap,
                PROB_TARGET, HAS_SMOOTH, HAS_SOFTCAP,
            )  # fmt: skip
            tl.store(dx_row + cols, dz.to(DX.dtype.element_ty), mask=mask)
        else:
            col_lo = chunk * chunk_size
            col_hi = tl.minimum(col_lo + chunk_size, C)
            for start in range(col_lo, col_hi, BLOCK):
                z, w, q, mask = _load_block(
                    x_row, t_row, W, start + cols, col_hi, cap, PROB_TARGET, HAS_WEIGHT, HAS_SOFTCAP
                )
                dz = _grad_block(
                    z, w, q, start + cols, mask, lse, coef, g_row, y, eps_over_c, one_minus_eps,
                    w_y, cap, PROB_TARGET, HAS_SMOOTH, HAS_SOFTCAP,
                )  # fmt: skip
                tl.store(dx_row + start + cols, dz.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _scale_kernel(
    # pointers
    DX,
    G,
    # shapes and strides
    C,
    stride_dxm,
    # constexprs
    PER_ROW: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """DX[row, :] *= g (g = G[0], or G[row] when PER_ROW); no loads or stores where g == 1."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if PER_ROW:
        g = tl.load(G + row).to(tl.float32)
    else:
        g = tl.load(G).to(tl.float32)
    if g != 1.0:  # a uniform branch: with g == 1 the program only reads g (no traffic over DX)
        mask = cols < C
        ptr = DX + row * stride_dxm + cols
        dx = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptr, (dx * g).to(DX.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------
# Launchers (plain tensors in, tensors out; the custom ops in .ops wrap these).
# ----------------------------------------------------------------------------------------------------


def _index_target(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


def launch_ce(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    g: torch.Tensor | None,
    loss: torch.Tensor,
    lse: torch.Tensor,
    coef: torch.Tensor | None,
    dx: torch.Tensor | None,
    *,
    row_stats: int,
    g_mode: int,
    g_scale: float,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    prob_target: bool,
) -> None:
    """Launch the kernels over the rows of ``x`` (M, C), class stride 1.

    ``row_stats``: STATS_COMPUTE writes ``loss`` and ``lse`` (fp32, (M,)); STATS_SAVE also the gradient's
    per-row coefficient ``coef``; STATS_LOAD reads ``lse`` and ``coef`` instead of pass 1 (``loss`` is
    not written). The gradient goes into ``dx`` (x's dtype, class stride 1; may be ``x``) when given.
    ``softcap <= 0`` means no softcap. Few long rows are split over ``configs.split_config`` chunks:
    ``_ce_partial_kernel`` writes each chunk's running sums, ``_ce_kernel`` merges them per row.
    """
    M, C = x.shape
    if M == 0:
        return
    live = configs.live_arrays(
        prob_target=prob_target,
        weighted=weight is not None,
        smoothing=label_smoothing > 0,
        softcap=softcap > 0,
    )
    block, num_warps = configs.ce_config(C, x.element_size(), live)
    n_chunks, chunk_size = configs.split_config(M, C, block)
    t = target if prob_target else _index_target(target)
    flags = dict(
        PROB_TARGET=bool(prob_target), HAS_SMOOTH=label_smoothing > 0, HAS_SOFTCAP=softcap > 0
    )
    cap = float(softcap) if softcap > 0 else 1.0
    part = None
    stats_mode = 2 if row_stats == STATS_LOAD else 0
    if n_chunks > 1 and row_stats != STATS_LOAD:
        part = torch.empty((M, n_chunks, 6), dtype=torch.float32, device=x.device)
        _ce_partial_kernel[(M, n_chunks)](
            x, t, weight, part, C, chunk_size, n_chunks, x.stride(0),
            t.stride(0) if prob_target else 0, cap, **flags, BLOCK=block, num_warps=num_warps,
        )  # fmt: skip
        stats_mode = 1
    grid_chunks = n_chunks if dx is not None else 1  # chunks only split the gradient's columns
    _ce_kernel[(M, grid_chunks)](
        x, t, weight, g if g is not None else lse, loss, lse, coef if coef is not None else lse,
        part if part is not None else lse, dx if dx is not None else x,
        C, chunk_size, n_chunks,
        x.stride(0), t.stride(0) if prob_target else 0, dx.stride(0) if dx is not None else 0,
        int(ignore_index), float(label_smoothing), float(z_loss), cap, float(g_scale),
        **flags, HAS_ZLOSS=z_loss > 0, G_MODE=int(g_mode), ROW_STATS=stats_mode,
        SAVE_COEF=row_stats == STATS_SAVE, WRITE_GRAD=dx is not None,
        MAX_CHUNKS=triton.next_power_of_2(n_chunks), BLOCK=block, num_warps=num_warps,
    )  # fmt: skip


def launch_scale(dx: torch.Tensor, g: torch.Tensor, *, per_row: bool) -> None:
    """``dx *= g`` in place (g a 0-d tensor, or (M,) per row), skipped on the device where g == 1."""
    M, C = dx.shape
    if M == 0 or C == 0:
        return
    block, num_warps = configs.scale_config(C)
    _scale_kernel[(M, triton.cdiv(C, block))](
        dx, g, C, dx.stride(0), PER_ROW=per_row, BLOCK=block, num_warps=num_warps
    )
