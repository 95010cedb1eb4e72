r"""Distillation rows of one chunk of logits, with the student's gradient written over its logits: the
Triton kernel of the fused linear distillation (:mod:`crossent._backends.linear_distill`) on CUDA.

Computes :func:`crossent.numpy.distillation.distill_rows_value_and_grad` (``teacher=False``; the
formulas, the JSD's β ∈ {0, 1} convention and 0·log 0 = 0 are in :mod:`crossent.numpy.distillation`);
this file only says how. For each row of the student's logits ``z`` and the teacher's ``t`` (both
(m, V), class stride 1, any floating dtype, upcast to float32 at load), with ``a = z/τ``, ``b = t/τ``:
the per-row loss ``(1 − h)·s·D + h·(lse(z) − z_y)`` (0 at ignored rows) and, with an upstream factor
``g_i`` per row, the gradient ``g_i·∂ℓ_i/∂z`` stored over ``z`` (rounded once to z's dtype). The
teacher's logits are only read. No host synchronisation; one program per row, row offsets in int64.

Passes over the row, in column blocks of ``BLOCK`` (the row never has to fit on chip, V = 128256 works):

1. Online log-sum-exps (Milakov & Gimelshein): running maxima and ``d = Σ exp(· − m)`` of ``a``, of ``b``
   and, for the hard term when τ ≠ 1, of ``z`` (τ = 1: lse(z) = lse(a)); the target logit ``z_y``
   is read once, before anything is written. For the two KLs the divergence is summed in the same
   pass, relative to the running shifts ``s_a``, ``s_b`` (the finite running maxima):
   ``S = Σ e^{a − s_a}·((a − s_a) − (b − s_b))`` for the reverse KL (for the forward KL the roles of a and
   b swap); a new maximum rescales it, ``S ← e^{s_a,old − s_a}·(S + d_a,old·(Δs_a − Δs_b))``, and at the
   end ``D = S/d_a − log d_a + log d_b`` (that is ``Σ p_S (log p_S − log p_T)`` exactly: each term is
   taken relative to its row's maximum, so nothing large cancels).
2. JSD only: with both lse known, ``K_T = Σ p_T (log p_T − log m)`` and ``K_S`` likewise, where
   ``log m = logaddexp(log β + log p_T, log(1 − β) + log p_S)`` (the mixture from the two
   log-probabilities: a confident teacher or an extreme τ cannot underflow it); ``D = β K_T + (1−β) K_S``.
3. With a gradient: each block is read again and the gradient written over it,
   ``G = g·(1 − h)s/τ·∂D/∂a + g·h·(softmax(z) − e_y)``.

Bytes per row: forward KL / reverse KL read z and t once (loss only) or twice and write z once (with
the gradient); the JSD reads them once more (pass 2). Exponentials are recomputed, never stored.
β ∈ {0, 1} of the JSD is the launcher's choice of ``DIV`` (forward / reverse KL, as the reference).
Every sum over classes treats a zero probability as contributing 0 (``where(p == 0, 0, ·)``), so a
teacher with −inf logits (masked classes) gives the reference's values.
"""

import math

import torch
import triton
import triton.language as tl

from ..._contract import DistillOptions
from ...numpy.distillation import effective_divergence
from .tl_math import finish_lse, online_lse_step

Tensor = torch.Tensor

# The divergence a launch computes (the constexpr DIV), after β ∈ {0, 1} of the JSD is resolved.
FORWARD_KL, REVERSE_KL, JSD = 0, 1, 2
_DIV = {"forward_kl": FORWARD_KL, "reverse_kl": REVERSE_KL, "jsd": JSD}

# Columns per block. Provisional (not measured on a GPU): up to four float32 (BLOCK,) arrays are live
# in pass 3 (z, t and two temporaries), so 4096 columns with 16 warps keeps them in registers (8 values
# per thread each); a GPU run should time {1024, 2048, 4096, 8192}. The tests lower it to force several
# blocks per row on small vocabularies.
MAX_BLOCK = 4096


def block_config(num_classes: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for rows of ``num_classes`` logits (module constant :data:`MAX_BLOCK`)."""
    block = min(MAX_BLOCK, triton.next_power_of_2(max(num_classes, 16)))
    return block, max(4, min(16, block // 256))


@triton.jit
def _logaddexp(x, y):
    """log(eˣ + eʸ) from ``tl.exp``/``tl.log`` only: ``max + log1p(e^{−|x − y|})``, log1p written so it
    keeps its digits for a tiny argument (``log(u)·e/(u − 1)`` with ``u = 1 + e``; e itself when u
    rounds to 1). −inf when both are −inf."""
    mx = tl.maximum(x, y)
    safe = tl.where(mx == float("-inf"), 0.0, mx)
    e = tl.exp(tl.minimum(x, y) - safe)  # in [0, 1]
    u = 1.0 + e
    log1p = tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))
    return tl.where(mx == float("-inf"), float("-inf"), mx + log1p)


@triton.jit
def _distill_rows_kernel(
    # pointers: logits of the student (overwritten by G) and the teacher, targets, upstream, losses
    ZS, ZT, Y, GROWS, LOSS,
    # shape and strides (elements; the class axis has stride 1)
    V, stride_zs, stride_zt,
    # options
    tau, soft_scale, hard_weight, beta, log_beta, log_1m_beta, ignore_index,
    # constexprs
    DIV: tl.constexpr, SOFT: tl.constexpr, HARD: tl.constexpr, TEMPERED: tl.constexpr,
    HAS_TARGET: tl.constexpr, WANT_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # int64 row offsets: row * stride passes 2^31 elements for large m·V (V = 128256).
    row = tl.program_id(0).to(tl.int64)
    zs_row = ZS + row * stride_zs
    zt_row = ZT + row * stride_zt
    cols0 = tl.arange(0, BLOCK)

    # the target and its logit, read before anything of the row is written (clamped: an out-of-range
    # target, reported by the caller's check on the CPU, never reads out of bounds)
    valid = True
    y = 0
    z_y = 0.0
    if HAS_TARGET:
        y = tl.load(Y + row).to(tl.int64)
        valid = y != ignore_index
        y = tl.where(valid & (y >= 0) & (y < V), y, 0)
        if HARD:
            z_y = tl.load(zs_row + y).to(tl.float32)

    # ---- pass 1: online lse of a = z/τ, b = t/τ (and of z); the KLs' running sum S ------------------
    m_a = float("-inf")
    d_a = 0.0
    m_b = float("-inf")
    d_b = 0.0
    m_z = float("-inf")
    d_z = 0.0
    s_kl = 0.0
    for start in range(0, V, BLOCK):
        cols = start + cols0
        mask = cols < V
        z = tl.load(zs_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        if HARD and (TEMPERED or not SOFT):
            m_z, d_z = online_lse_step(m_z, d_z, z)
        if SOFT:
            t = tl.load(zt_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
            a = z / tau if TEMPERED else z
            b = t / tau if TEMPERED else t
            sa_old = tl.where(m_a == float("-inf"), 0.0, m_a)
            sb_old = tl.where(m_b == float("-inf"), 0.0, m_b)
            ma_old, da_old, mb_old, db_old = m_a, d_a, m_b, d_b
            m_a, d_a = online_lse_step(m_a, d_a, a)
            m_b, d_b = online_lse_step(m_b, d_b, b)
            sa = tl.where(m_a == float("-inf"), 0.0, m_a)
            sb = tl.where(m_b == float("-inf"), 0.0, m_b)
            u = a - sa
            v = b - sb
            if DIV == 0:
                # forward KL: S = Σ e^v (v − u), moved to the new shifts, plus this block
                alpha = tl.where(mb_old == m_b, 1.0, tl.exp(mb_old - sb))
                s_kl = alpha * (s_kl + db_old * ((sb_old - sb) - (sa_old - sa)))
                e = tl.exp(v)
                s_kl += tl.sum(tl.where(e == 0.0, 0.0, e * (v - u)), axis=0)
            elif DIV == 1:
                # reverse KL: S = Σ e^u (u − v), likewise
                alpha = tl.where(ma_old == m_a, 1.0, tl.exp(ma_old - sa))
                s_kl = alpha * (s_kl + da_old * ((sa_old - sa) - (sb_old - sb)))
                e = tl.exp(u)
                s_kl += tl.sum(tl.where(e == 0.0, 0.0, e * (u - v)), axis=0)
    lse_a = finish_lse(m_a, d_a)
    lse_b = finish_lse(m_b, d_b)
    if HARD and (TEMPERED or not SOFT):
        lse_z = finish_lse(m_z, d_z)
    else:
        lse_z = lse_a

    # ---- pass 2 (JSD): K_T, K_S with log m from the two log-probabilities -------------------------
    k_s = 0.0
    d_soft = 0.0
    if SOFT:
        if DIV == 0:  # D = Σ p_T (log p_T − log p_S) = S/d_b − log d_b + log d_a
            d_soft = s_kl / d_b - tl.log(d_b) + tl.log(d_a)
        elif DIV == 1:  # D = Σ p_S (log p_S − log p_T) = S/d_a − log d_a + log d_b
            d_soft = s_kl / d_a - tl.log(d_a) + tl.log(d_b)
        else:
            k_t = 0.0
            for start in range(0, V, BLOCK):
                cols = start + cols0
                mask = cols < V
                z = tl.load(zs_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
                t = tl.load(zt_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
                lps = (z / tau if TEMPERED else z) - lse_a
                lpt = (t / tau if TEMPERED else t) - lse_b
                ps = tl.exp(lps)
                pt = tl.exp(lpt)
                lm = _logaddexp(log_beta + lpt, log_1m_beta + lps)
                k_t += tl.sum(tl.where(pt == 0.0, 0.0, pt * (lpt - lm)), axis=0)
                k_s += tl.sum(tl.where(ps == 0.0, 0.0, ps * (lps - lm)), axis=0)
            d_soft = beta * k_t + (1.0 - beta) * k_s

    loss = 0.0
    if SOFT:
        loss = soft_scale * d_soft
    if HARD:
        loss = loss + hard_weight * (lse_z - z_y)  # CE of the untempered logits
    tl.store(LOSS + row, tl.where(valid, loss, 0.0))

    # ---- pass 3: the gradient over the student's logits ----------------------------------------------
    if WANT_GRAD:
        # ignored rows carry 0 (not 0·g: with every row ignored, the mean's g = 1/0 = inf)
        g = tl.where(valid, tl.load(GROWS + row).to(tl.float32), 0.0)
        g_soft = g * (soft_scale / tau)
        for start in range(0, V, BLOCK):
            cols = start + cols0
            mask = cols < V
            z = tl.load(zs_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
            grad = tl.zeros((BLOCK,), dtype=tl.float32)
            if SOFT:
                t = tl.load(zt_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
                lps = (z / tau if TEMPERED else z) - lse_a
                lpt = (t / tau if TEMPERED else t) - lse_b
                ps = tl.exp(lps)
                if DIV == 0:
                    # ∂D/∂a = p_S − p_T
                    ga = ps - tl.exp(lpt)
                elif DIV == 1:
                    # ∂D/∂a = p_S ⊙ (log p_S − log p_T − D)
                    ga = tl.where(ps == 0.0, 0.0, ps * (lps - lpt - d_soft))
                else:
                    # ∂D/∂a = (1 − β) p_S ⊙ (log p_S − log m − K_S)
                    lm = _logaddexp(log_beta + lpt, log_1m_beta + lps)
                    ga = (1.0 - beta) * tl.where(ps == 0.0, 0.0, ps * (lps - lm - k_s))
                grad = ga * g_soft
            if HARD:
                # ∂CE/∂z = softmax(z) − e_y
                dh = tl.exp(z - lse_z) - tl.where(cols == y, 1.0, 0.0)
                grad = grad + hard_weight * (dh * g)
            tl.store(zs_row + cols, grad.to(ZS.dtype.element_ty), mask=mask)


def distill_rows_(
    zs: Tensor,
    zt: Tensor,
    target: Tensor | None,
    options: DistillOptions,
    g_rows: Tensor | None,
) -> Tensor:
    """Per-row losses of a chunk; with ``g_rows`` the gradient of ``Σ_i g_i ℓ_i`` over ``zs``, in place.

    Args:
        zs: (m, V) student logits (float32, bfloat16 or float16; class stride 1), overwritten by the
            gradient (rounded once to its dtype) when ``g_rows`` is given.
        zt: (m, V) teacher logits (class stride 1), only read.
        target: (m,) integer class indices (``options.ignore_index`` allowed) or None.
        options: validated options (``reduction`` is not used).
        g_rows: (m,) upstream factor of each row (any float dtype), or None for the losses only.

    Returns:
        (m,) float32 losses (0 at ignored rows).
    """
    m, v = zs.shape
    if zs.stride(1) != 1 or zt.stride(1) != 1:
        raise ValueError(
            f"distill_rows_: the logits must have class stride 1, got strides {tuple(zs.stride())} "
            f"and {tuple(zt.stride())}"
        )
    loss = torch.empty(m, dtype=torch.float32, device=zs.device)
    if m == 0:
        return loss
    tau, h, soft = options.temperature, options.hard_weight, options.soft_scale
    kind = _DIV[effective_divergence(options)]
    beta = options.beta
    # log β and log(1 − β) only matter for the JSD, where 0 < β < 1
    log_beta = math.log(beta) if 0.0 < beta < 1.0 else 0.0
    log_1m_beta = math.log1p(-beta) if 0.0 < beta < 1.0 else 0.0
    y = zs if target is None else target.contiguous()  # (a placeholder pointer without a target)
    g = zs if g_rows is None else g_rows.to(torch.float32).reshape(-1).expand(m).contiguous()
    block, warps = block_config(v)
    _distill_rows_kernel[(m,)](
        zs, zt, y, g, loss,
        v, zs.stride(0), zt.stride(0),
        float(tau), float(soft), float(h), float(beta), log_beta, log_1m_beta,
        int(options.ignore_index),
        DIV=kind, SOFT=soft > 0, HARD=h > 0, TEMPERED=tau != 1.0,
        HAS_TARGET=target is not None, WANT_GRAD=g_rows is not None, BLOCK=block,
        num_warps=warps,
    )  # fmt: skip
    return loss


__all__ = ["MAX_BLOCK", "block_config", "distill_rows_"]
