"""Fused Triton softmax focal loss over (M, C) logits: loss, lse and gradient in one launch.

Computes :func:`crossent.numpy.focal_loss` (formula and analytic gradient in :mod:`crossent.numpy.focal`);
this file only says how. Math in float32 whatever the input dtype (upcast at load, one rounding at the
store); row offsets in int64. With ``a_c = α_c w_c`` (one fp32 (C,) array, or none), ``α`` a scalar,
``β_c = α a_c q_c``, ``u_c = 1 − p_c = −expm1(log p_c)`` and ``A_c = u_c^γ − γ u_c^γ p_c log p_c / u_c``:

    ℓ = −Σ_c β_c u_c^γ log p_c,    ∂ℓ/∂z_j = p_j·S − B_j,    B_c = β_c A_c,  S = Σ_c B_c

(terms with q_c = 0 are 0, as in the reference, also where log p_c = −inf). For index targets only the
target class has q ≠ 0, so ``S = B_y`` and the gradient is ``B_y·(p − onehot(y))``: a per-row coefficient
times p plus a one-hot term, the shape of the cross-entropy gradient (:mod:`.ce`).

Algorithm (``_focal_kernel``, one program per row):

* **Row fits in one block** (``C <= BLOCK``, :mod:`.configs`): load the row once, lse, the loss, S and the
  gradient from registers. Bytes moved: one read of the logits (and of a probability target row), one
  write of the gradient.
* **Longer rows**: pass 1 streams the row with the online log-sum-exp; index targets then take the loss
  and ``B_y`` from the target logit alone, probability targets re-read the row once more for the loss and
  S (the focal term is not shift-separable, so it needs the final lse); the last pass writes the
  gradient. Bytes: two reads (three with probability targets) and one write. Rows are not split over
  several programs (the CE kernel's split-row path): few very long rows get one program each.

For ``reduction="none"`` the forward saves lse and the per-row coefficient (``B_y``, or ``S``); the
backward is one more pass with the per-row upstream gradient applied exactly. ``G_MODE`` as in :mod:`.ce`.
"""

import torch
import triton
import triton.language as tl

from . import configs
from .ce import _load_block
from .tl_math import expm1, finish_lse, online_lse_step, row_upstream


@triton.jit
def _focal_terms(z, lse, a, q, keep, alpha, gamma, HAS_GAMMA: tl.constexpr):
    """The loss term −β u^γ log p and B = β·A of one class, or a block of classes (0 where not ``keep``)."""
    # log p directly (stable), not log(softmax); 0 where unused (no 0·(−inf) past C or where q = 0)
    lp = tl.where(keep, z - lse, 0.0)
    beta = alpha * a * q
    if HAS_GAMMA:
        u = -expm1(lp)  # 1 − p, accurate as p → 1
        pos = u > 0
        # u^γ by exp(γ log u); 0 at u = 0, NaN stays NaN
        mod = tl.where(pos, tl.exp(gamma * tl.log(tl.where(pos, u, 1.0))), tl.where(u == 0, 0.0, u))
        # A = u^γ − γ·u^γ·p·(log p / u), with log p / u → −1 as u → 0 (finite for every γ ≥ 0)
        ratio = tl.where(pos, lp / tl.where(pos, u, 1.0), -1.0)
        big_a = mod - gamma * mod * tl.exp(lp) * ratio
        term = mod * lp
    else:
        big_a = 1.0  # γ = 0: cross-entropy, B = β
        term = lp
    loss = tl.where(keep, -beta * term, 0.0)
    b = tl.where(keep, beta * big_a, 0.0)
    return loss, b


@triton.jit
def _focal_grad_block(
    z, a, q, cols, lse, coef, g_row, y, alpha, gamma,
    PROB_TARGET: tl.constexpr, HAS_GAMMA: tl.constexpr,
):  # fmt: skip
    """∂ℓ/∂x for one block, in fp32 (rounded once, at the store)."""
    p = tl.exp(z - lse)
    if PROB_TARGET:
        # ∂ℓ/∂z_c = S·p_c − B_c,  S = Σ_k B_k (coef)
        _, b = _focal_terms(z, lse, a, q, q != 0, alpha, gamma, HAS_GAMMA)
        dz = coef * p - b
    else:
        # ∂ℓ/∂z_c = B_y·(p_c − [c = y]),  B_y (coef)
        dz = coef * p
        dz = tl.where(cols == y, dz - coef, dz)
    return dz * g_row


@triton.heuristics(
    {
        "HAS_A": lambda args: args["A"] is not None,
        # the per-class factor as an array: probability targets only (index targets read a_y once)
        "LOAD_A": lambda args: args["A"] is not None and args["PROB_TARGET"],
        "SINGLE_BLOCK": lambda args: args["C"] <= args["BLOCK"],
    }
)
@triton.jit
def _focal_kernel(
    # pointers
    X, T, A, G, LOSS, LSE, COEF, DX,
    # shapes
    C,
    # strides, in elements (the class axis has stride 1)
    stride_xm, stride_tm, stride_dxm,
    # options
    ignore_index, alpha, gamma, g_scale,
    # constexprs
    PROB_TARGET: tl.constexpr, HAS_GAMMA: tl.constexpr, G_MODE: tl.constexpr,
    LOAD_STATS: tl.constexpr, SAVE_COEF: tl.constexpr, WRITE_GRAD: tl.constexpr,
    HAS_A: tl.constexpr, LOAD_A: tl.constexpr, SINGLE_BLOCK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # int64 row offsets: row * stride passes 2^31 elements for large N·V.
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_xm
    t_row = T + row * stride_tm
    cols = tl.arange(0, BLOCK)
    g_row = row_upstream(G, row, g_scale, G_MODE)

    # index targets: the target class, its logit and class factor, read once (clamped: an out-of-range
    # target, already reported by the caller's check, never reads out of bounds)
    y = 0
    valid = True
    z_y = 0.0
    a_y = 1.0
    if not PROB_TARGET:
        y = tl.load(T + row).to(tl.int64)
        valid = y != ignore_index
        y = tl.where(valid & (y >= 0) & (y < C), y, 0)
        z_y = tl.load(x_row + y).to(tl.float32)
        if HAS_A:
            a_y = tl.load(A + y)
        # ignored rows carry 0 (not 0·g: with everything ignored, g = 1/0 = inf for the mean)
        g_row = tl.where(valid, g_row, 0.0)

    if LOAD_STATS:
        # backward of reduction="none": lse and the row's coefficient come from the forward
        lse = tl.load(LSE + row)
        coef = tl.load(COEF + row)
    else:
        # ---- pass 1: lse ---------------------------------------------------------------------------
        if SINGLE_BLOCK:
            z, a, q, mask = _load_block(x_row, t_row, A, cols, C, 1.0, PROB_TARGET, LOAD_A, False)
            m, d = online_lse_step(float("-inf"), 0.0, z)
        else:
            m = float("-inf")
            d = 0.0
            for start in range(0, C, BLOCK):
                zb, _, _, _ = _load_block(
                    x_row, t_row, A, start + cols, C, 1.0, False, False, False
                )
                m, d = online_lse_step(m, d, zb)
        lse = finish_lse(m, d)

        # ---- pass 2: the loss and the coefficient (B_y, or S = Σ_c B_c) -----------------------------
        if PROB_TARGET:
            if SINGLE_BLOCK:
                terms, b = _focal_terms(z, lse, a, q, q != 0, alpha, gamma, HAS_GAMMA)
                loss = tl.sum(terms, axis=0)
                coef = tl.sum(b, axis=0)
            else:
                loss = 0.0
                coef = 0.0
                for start in range(0, C, BLOCK):
                    zb, ab, qb, _ = _load_block(
                        x_row, t_row, A, start + cols, C, 1.0, True, LOAD_A, False
                    )
                    terms, b = _focal_terms(zb, lse, ab, qb, qb != 0, alpha, gamma, HAS_GAMMA)
                    loss = loss + tl.sum(terms, axis=0)
                    coef = coef + tl.sum(b, axis=0)
        else:
            loss, coef = _focal_terms(z_y, lse, a_y, 1.0, valid, alpha, gamma, HAS_GAMMA)
        tl.store(LOSS + row, loss)
        tl.store(LSE + row, lse)
        if SAVE_COEF:
            tl.store(COEF + row, coef)

    # ---- last pass: the gradient (from registers when the row fit in one block) ---------------------
    if WRITE_GRAD:
        dx_row = DX + row * stride_dxm
        if SINGLE_BLOCK:
            if LOAD_STATS:
                z, a, q, mask = _load_block(
                    x_row, t_row, A, cols, C, 1.0, PROB_TARGET, LOAD_A, False
                )
            dz = _focal_grad_block(
                z, a, q, cols, lse, coef, g_row, y, alpha, gamma, PROB_TARGET, HAS_GAMMA
            )
            tl.store(dx_row + cols, dz.to(DX.dtype.element_ty), mask=mask)
        else:
            for start in range(0, C, BLOCK):
                zb, ab, qb, mb = _load_block(
                    x_row, t_row, A, start + cols, C, 1.0, PROB_TARGET, LOAD_A, False
                )
                dz = _focal_grad_block(
                    zb, ab, qb, start + cols, lse, coef, g_row, y, alpha, gamma,
                    PROB_TARGET, HAS_GAMMA,
                )  # fmt: skip
                tl.store(dx_row + start + cols, dz.to(DX.dtype.element_ty), mask=mb)


# ----------------------------------------------------------------------------------------------------
# Launcher (plain tensors in, tensors out; the custom ops in .focal_ops wrap it).
# ----------------------------------------------------------------------------------------------------


def launch_focal(
    x: torch.Tensor,
    target: torch.Tensor,
    a: torch.Tensor | None,
    g: torch.Tensor | None,
    loss: torch.Tensor,
    lse: torch.Tensor,
    coef: torch.Tensor | None,
    dx: torch.Tensor | None,
    *,
    load_stats: bool,
    g_mode: int,
    g_scale: float,
    alpha: float,
    gamma: float,
    ignore_index: int,
    prob_target: bool,
) -> None:
    """Launch ``_focal_kernel`` over the rows of ``x`` (M, C), class stride 1.

    ``a``: the per-class factor α_c·w_c (fp32, contiguous) or None; ``alpha`` a scalar factor on top.
    Without ``load_stats`` the kernel writes ``loss`` and ``lse`` (fp32, (M,)) and, when given, ``coef``;
    with it, it reads ``lse`` and ``coef`` instead of the first passes (``loss`` is not written). The
    gradient goes into ``dx`` (x's dtype, class stride 1) when given.
    """
    M, C = x.shape
    if M == 0:
        return
    # probability targets keep the focal terms (u^γ, B) live beside z, q and a: one more array than
    # cross-entropy. Measured with ptxas -v for sm_90a (bf16, gradient on, Triton 3.7.1): BLOCK 16384 /
    # 32 warps spills 8 B (164 B with α or weights), 8192 / 16 warps none; index targets none at 32768.
    live = configs.live_arrays(
        prob_target=prob_target, weighted=a is not None, smoothing=False, softcap=False
    ) + int(prob_target)
    block, num_warps = configs.ce_config(C, x.element_size(), live)
    t = target if prob_target or target.is_contiguous() else target.contiguous()
    _focal_kernel[(M,)](
        x, t, a, g if g is not None else lse, loss, lse, coef if coef is not None else lse,
        dx if dx is not None else x,
        C,
        x.stride(0), t.stride(0) if prob_target else 0, dx.stride(0) if dx is not None else 0,
        int(ignore_index), float(alpha), float(gamma), float(g_scale),
        PROB_TARGET=bool(prob_target), HAS_GAMMA=gamma != 0, G_MODE=int(g_mode),
        LOAD_STATS=bool(load_stats), SAVE_COEF=coef is not None and not load_stats,
        WRITE_GRAD=dx is not None, BLOCK=block, num_warps=num_warps,
    )  # fmt: skip
