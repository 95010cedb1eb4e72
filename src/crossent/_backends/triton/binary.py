"""Fused Triton kernels of the elementwise binary losses: BCE with logits and the sigmoid focal loss.

Computes :func:`crossent.numpy.binary_cross_entropy_with_logits` and
:func:`crossent.numpy.sigmoid_focal_loss` (formulas in :mod:`crossent.numpy.binary`); this file only
says how. Math in float32 whatever the input dtype (upcast at load, one rounding at the store); element
indices and offsets in int64.

Algorithm (``_binary_kernel``, one program per ``BLOCK`` consecutive elements of the flat, C-ordered
input): read x, t, and where given the weight w and pos_weight pw, once each; then, per constexpr flag,

* write the per-element loss (``reduction="none"``) or the block's partial sum (``sum``/``mean``: one
  fp32 per program, summed afterwards by ``torch.sum`` in a fixed order, so the result is deterministic;
  no atomics);
* write the gradient ``∂ℓ/∂x · g`` in x's dtype, with the upstream factor g either a host constant
  (the forward of ``sum``/``mean``: g = 1 or 1/N, scaled in backward by ``_scale_kernel``) or read from a
  tensor (the backward of ``none``: the per-element upstream gradient, applied exactly).

Bytes moved: forward one read of x and t (plus w, pw), one write of the loss (or a float per program)
and, when a gradient is needed in ``sum``/``mean``, one write of the gradient; the backward of ``none``
re-reads x, t (w, pw) and the upstream gradient and writes the gradient. ``_scale_kernel`` (backward of
``sum``/``mean``) reads the upstream gradient on the device and touches nothing when it is 1.

Layouts: no operand is copied. Each operand (x, t, w, pw, the upstream gradient) is read through a
strided view of the input's shape — w and pw are ``expand``-ed views (stride 0 on broadcast dims) — whose
dimensions are coalesced on the host into at most three (``layout``); the kernel turns the flat index
into an offset with at most two divisions. Only an operand that does not coalesce into three dims (rare:
e.g. a 4-D broadcast pattern) is materialised with ``contiguous()``. The loss and the gradient are
written contiguous.

Stable forms (those of the reference): ``log σ(x) = min(x, 0) − log1p(e^{−|x|})`` and
``σ(x) = exp(log σ(x))``; ``log1p`` is written with ``tl.log`` (no libdevice under the interpreter).
"""

import torch
import triton
import triton.language as tl

# Provisional (written without a GPU; not measured): 2048 elements per program,
# 8 warps (8 elements per thread), a common choice for memory-bound elementwise kernels.
BLOCK = 2048
NUM_WARPS = 8
SCALE_BLOCK = 4096
MAX_DIMS = 3  # coalesced dims of a strided operand; more are materialised
MAX_INT_GAMMA = 8  # focal γ ∈ {1, …, 8}: exact repeated products (like torch's pow); else exp/log

KIND_BCE_LOGITS, KIND_SIGMOID_FOCAL = 0, 1
# G_MODE: the gradient's upstream factor is the host constant g_scale (0), or g_scale times a tensor
# read through its layout (1: per element, or a 0-d tensor with stride 0).
G_CONST, G_TENSOR = 0, 1


@triton.jit
def _offsets(i, S1, S2, T0, T1, T2, NDIM: tl.constexpr):
    """Offset of flat index ``i`` in an operand of coalesced sizes (·, S1, S2) and strides (T0, T1, T2)."""
    if NDIM == 1:
        off = i * T2
    elif NDIM == 2:
        off = (i // S2) * T1 + (i % S2) * T2
    else:
        r = i // S2
        off = (r // S1) * T0 + (r % S1) * T1 + (i % S2) * T2
    return off


@triton.jit
def _log1p(e):
    """log(1 + e) for e ≥ 0, accurate near 0 without libdevice: log(u)·e/(u − 1), u = 1 + e (Goldberg)."""
    u = 1.0 + e
    d = u - 1.0
    return tl.where(d == 0.0, e, tl.log(u) * (e / d))


@triton.jit
def _int_pow(m, N: tl.constexpr):
    """m^N for a constexpr N ≥ 0 by repeated products (m·m is what torch's pow(m, 2) computes)."""
    r = tl.full(m.shape, 1.0, tl.float32)
    for _ in tl.static_range(N):
        r = r * m
    return r


@triton.jit
def _binary_kernel(
    # pointers
    X, T, W, PW, G, LOSS, PART, DX,
    # shapes: N elements
    N,
    # layouts (coalesced sizes S1, S2 and strides T0, T1, T2 per operand, see `layout`)
    x_s1, x_s2, x_t0, x_t1, x_t2,
    t_s1, t_s2, t_t0, t_t1, t_t2,
    w_s1, w_s2, w_t0, w_t1, w_t2,
    p_s1, p_s2, p_t0, p_t1, p_t2,
    g_s1, g_s2, g_t0, g_t1, g_t2,
    # options
    alpha, gamma, g_scale,
    # constexprs
    KIND: tl.constexpr, X_DIMS: tl.constexpr, T_DIMS: tl.constexpr, W_DIMS: tl.constexpr,
    PW_DIMS: tl.constexpr, G_DIMS: tl.constexpr, G_MODE: tl.constexpr, HAS_ALPHA: tl.constexpr,
    INT_GAMMA: tl.constexpr, WRITE_LOSS: tl.constexpr, WRITE_PART: tl.constexpr,
    WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # int64 indices: N may pass 2^31 elements, and strided offsets can too.
    pid = tl.program_id(0).to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    mask = i < N
    x = tl.load(X + _offsets(i, x_s1, x_s2, x_t0, x_t1, x_t2, X_DIMS), mask=mask, other=0.0)
    x = x.to(tl.float32)  # upcast at load (bf16/fp16 arithmetic is wrong under the interpreter)
    t = tl.load(T + _offsets(i, t_s1, t_s2, t_t0, t_t1, t_t2, T_DIMS), mask=mask, other=0.0)
    t = t.to(tl.float32)

    # log σ(x) = min(x, 0) − log1p(e^{−|x|}): never overflows; ±inf give 0 / −inf, NaN stays NaN
    ls = tl.where(x < 0.0, x, 0.0) - _log1p(tl.exp(-tl.abs(x)))
    # BCE with logits, no weights: (1 − t)·x − log σ(x)
    ce = (1.0 - t) * x - ls

    if KIND == 0:
        if PW_DIMS > 0:
            pw = tl.load(
                PW + _offsets(i, p_s1, p_s2, p_t0, p_t1, p_t2, PW_DIMS), mask=mask, other=0.0
            )
            pw = pw.to(tl.float32)
            # ℓ = (1 − t)·x − (1 + (pw − 1)·t)·log σ(x)
            loss = (1.0 - t) * x - (1.0 + (pw - 1.0) * t) * ls
        else:
            loss = ce
        if W_DIMS > 0:
            w = tl.load(W + _offsets(i, w_s1, w_s2, w_t0, w_t1, w_t2, W_DIMS), mask=mask, other=0.0)
            w = w.to(tl.float32)
            loss = loss * w
    else:
        # p = σ(x), q = σ(−x) from log σ(±x), each accurate to its own size; m = 1 − p_t = p(1 − t) + qt
        # (the reference's form: no cancellation at confident predictions)
        p = tl.exp(ls)
        q = tl.exp(tl.where(x > 0.0, -x, 0.0) - _log1p(tl.exp(-tl.abs(x))))
        m = p * (1.0 - t) + q * t
        if HAS_ALPHA:
            alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
        else:
            alpha_t = 1.0
        if INT_GAMMA == 0:
            mod = 1.0
        elif INT_GAMMA > 0:
            mod = _int_pow(m, INT_GAMMA)
        else:
            mod = tl.exp(gamma * tl.log(m))  # m^γ (0 at m = 0, NaN for m < 0 like torch's pow)
        # ℓ = α_t · BCE · m^γ
        loss = alpha_t * ce * mod

    if WRITE_LOSS:
        tl.store(LOSS + i, loss, mask=mask)
    if WRITE_PART:
        tl.store(PART + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))

    if WRITE_GRAD:
        if G_MODE == 0:
            g = g_scale
        else:
            g = tl.load(G + _offsets(i, g_s1, g_s2, g_t0, g_t1, g_t2, G_DIMS), mask=mask, other=0.0)
            g = g.to(tl.float32) * g_scale
        if KIND == 0:
            s = tl.exp(ls)
            if PW_DIMS > 0:
                # ∂ℓ/∂x = w·[(pw·t + 1 − t)·σ(x) − pw·t]
                dx = (pw * t + 1.0 - t) * s - pw * t
            else:
                # ∂ℓ/∂x = w·(σ(x) − t)
                dx = s - t
            dx = dx * g
            if W_DIMS > 0:
                dx = dx * w
        else:
            p_minus_t = p * (1.0 - t) - q * t
            if INT_GAMMA == 0:
                dx = p_minus_t
            else:
                # ∂ℓ/∂x = α_t·[(p − t)·m^γ + γ·BCE·m^(γ−1)·(1 − 2t)·p(1 − p)], m^(γ−1) := 0 at m = 0
                if INT_GAMMA > 0:
                    m_pow = _int_pow(m, INT_GAMMA - 1)
                else:
                    m_pow = tl.exp((gamma - 1.0) * tl.log(tl.where(m > 0.0, m, 1.0)))
                m_pow = tl.where(m > 0.0, m_pow, 0.0)
                dx = p_minus_t * mod + gamma * ce * m_pow * (1.0 - 2.0 * t) * p * q
            dx = alpha_t * dx * g
        tl.store(DX + i, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _scale_kernel(DX, G, N, BLOCK: tl.constexpr):
    """DX *= G[0] over N contiguous elements; no loads or stores where G[0] == 1."""
    pid = tl.program_id(0).to(tl.int64)
    g = tl.load(G).to(tl.float32)
    if g != 1.0:  # a uniform branch: with g == 1 the program only reads g
        i = pid * BLOCK + tl.arange(0, BLOCK)
        mask = i < N
        dx = tl.load(DX + i, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + i, (dx * g).to(DX.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------
# Launchers (plain tensors in, tensors out; the custom ops in .binary_ops wrap these).
# ----------------------------------------------------------------------------------------------------


def layout(v: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, int, tuple[int, ...]]:
    """``(tensor, ndim, (S1, S2, T0, T1, T2))``: ``v`` expanded to ``shape`` with its dims coalesced.

    Size-1 dims are dropped and neighbours merged where ``stride[k] == stride[k+1]·size[k+1]`` (stride-0
    broadcast dims merge with each other). More than ``MAX_DIMS`` dims left: materialised, contiguous.
    """
    v = v.expand(shape)
    dims: list[list[int]] = []
    for size, stride in zip(v.shape, v.stride()):
        if size == 1:
            continue
        if dims and dims[-1][1] == stride * size:
            dims[-1] = [dims[-1][0] * size, stride]
        else:
            dims.append([size, stride])
    if len(dims) > MAX_DIMS:
        v = v.contiguous()
        dims = [[v.numel(), 1]]
    if not dims:
        dims = [[1, 0]]
    ndim = len(dims)
    dims = [[1, 0]] * (MAX_DIMS - ndim) + dims
    (_, t0), (s1, t1), (s2, t2) = dims
    return v, ndim, (s1, s2, t0, t1, t2)


_ABSENT = (1, 1, 0, 0, 0)


def _operand(v: torch.Tensor | None, shape: torch.Size, dummy: torch.Tensor):
    if v is None:
        return dummy, 0, _ABSENT
    return layout(v, shape)


def gamma_mode(gamma: float) -> int:
    """INT_GAMMA: γ itself for an integer γ in [0, MAX_INT_GAMMA], else −1 (m^γ through exp/log)."""
    g = float(gamma)
    return int(g) if g.is_integer() and 0 <= g <= MAX_INT_GAMMA else -1


def launch_binary(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    g: torch.Tensor | None,
    loss: torch.Tensor | None,
    partials: torch.Tensor | None,
    dx: torch.Tensor | None,
    *,
    kind: int,
    alpha: float,
    gamma: float,
    g_scale: float,
    block: int | None = None,
) -> None:
    """Launch ``_binary_kernel`` over the elements of ``x`` (any strides).

    ``target``, ``weight``, ``pos_weight`` and ``g`` (the upstream gradient; None: the constant
    ``g_scale``) broadcast to ``x.shape``. Outputs, each optional and contiguous: ``loss`` (x's numel,
    fp32), ``partials`` (one fp32 per program: ``num_programs(x.numel())``) and ``dx`` (x's dtype).
    ``alpha < 0`` means no α (torchvision's −1).
    """
    n = x.numel()
    block = block or BLOCK
    if n == 0:
        return
    shape = x.shape
    xv, x_dims, x_lay = layout(x, shape)
    tv, t_dims, t_lay = layout(target, shape)
    wv, w_dims, w_lay = _operand(weight, shape, xv)
    pv, p_dims, p_lay = _operand(pos_weight, shape, xv)
    gv, g_dims, g_lay = _operand(g, shape, xv)
    _binary_kernel[(triton.cdiv(n, block),)](
        xv, tv, wv, pv, gv,
        loss if loss is not None else xv, partials if partials is not None else xv,
        dx if dx is not None else xv,
        n, *x_lay, *t_lay, *w_lay, *p_lay, *g_lay,
        float(alpha), float(gamma), float(g_scale),
        KIND=int(kind), X_DIMS=x_dims, T_DIMS=t_dims, W_DIMS=w_dims, PW_DIMS=p_dims,
        G_DIMS=max(g_dims, 1), G_MODE=G_TENSOR if g is not None else G_CONST,
        HAS_ALPHA=alpha >= 0, INT_GAMMA=gamma_mode(gamma), WRITE_LOSS=loss is not None,
        WRITE_PART=partials is not None, WRITE_GRAD=dx is not None, BLOCK=block,
        num_warps=NUM_WARPS,
    )  # fmt: skip


def num_programs(n: int, block: int | None = None) -> int:
    """Programs (= partial sums) of a launch over ``n`` elements."""
    return -(-n // (block or BLOCK))


def launch_scale(dx: torch.Tensor, g: torch.Tensor) -> None:
    """``dx *= g`` in place (dx contiguous, g a 0-d tensor), skipped on the device where g == 1."""
    n = dx.numel()
    if n == 0:
        return
    _scale_kernel[(triton.cdiv(n, SCALE_BLOCK),)](dx, g, n, BLOCK=SCALE_BLOCK, num_warps=NUM_WARPS)
