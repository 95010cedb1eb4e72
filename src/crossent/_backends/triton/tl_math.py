"""``@triton.jit`` helpers shared by the cross-entropy kernels.

Everything here works on float32 values (the kernels upcast at load: bf16 arithmetic is wrong under the
interpreter and ``tl.exp``/``tl.log`` want fp32) and uses only ``tl.exp``/``tl.log``: no libdevice, so the
same code runs on a GPU and under ``TRITON_INTERPRET=1``. (Callers test their constexpr flags before
calling: under the interpreter every nested call costs ~3 ms per program, so the kernels avoid calls that
would do nothing.)
"""

import triton
import triton.language as tl


@triton.jit
def tanh(a):
    """tanh in fp32 from ``tl.exp`` only.

    Small |a| (< 0.3): the odd Taylor series up to a^9 (relative error < 6e-8 there), because
    ``(1 - e)/(1 + e)`` loses digits to cancellation near 0. Elsewhere ``sign(a)·(1 - e)/(1 + e)`` with
    ``e = exp(-2|a|)`` in (0, 1): no overflow for any |a|, and ±1 for ±inf.
    """
    abs_a = tl.abs(a)
    e = tl.exp(-2.0 * abs_a)
    big = (1.0 - e) / (1.0 + e)
    big = tl.where(a < 0, -big, big)
    a2 = a * a
    # tanh a = a − a³/3 + 2a⁵/15 − 17a⁷/315 + 62a⁹/2835 − …
    small = a * (
        1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0))))
    )
    return tl.where(abs_a < 0.3, small, big)


@triton.jit
def softcap(x, cap):
    """z = cap·tanh(x/cap) (Gemma 2's logit soft-capping)."""
    return cap * tanh(x / cap)


@triton.jit
def softcap_grad(z, cap):
    """dz/dx = 1 − (z/cap)², written through the capped value z (the reference's form)."""
    t = z / cap
    return 1.0 - t * t


@triton.jit
def online_lse_step(m, d, z):
    """One step of the online log-sum-exp (Milakov & Gimelshein 2018) over a block ``z`` of one row.

    Carries the running maximum ``m`` and ``d = Σ exp(z_c − m)`` over the blocks seen so far. A block
    (or a prefix) of only −inf keeps ``d = 0`` instead of producing ``exp(−inf − (−inf)) = NaN``.
    Returns ``(m_new, d_new)``.
    """
    m_new = tl.maximum(m, tl.max(z, axis=0))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.where(m == m_new, 1.0, tl.exp(m - shift))
    d_new = d * alpha + tl.sum(tl.exp(z - shift), axis=0)
    return m_new, d_new


@triton.jit
def finish_lse(m, d):
    """lse = m + log d. A row of only −inf gives NaN, like the reference (whose ``z − max`` is NaN there)."""
    lse = m + tl.log(d)
    return tl.where(m == float("-inf"), float("nan"), lse)


@triton.jit
def expm1(a):
    """exp(a) − 1 in fp32 from ``tl.exp`` only (libdevice's ``expm1`` does not run under the interpreter).

    |a| < 0.5: the Taylor series up to a^8 (truncation < 2e-8 relative), because ``exp(a) − 1`` cancels
    near 0; elsewhere ``exp(a) − 1`` (−1 at −inf).
    """
    # Horner: expm1(a) ≈ a·(1 + a/2! + a²/3! + … + a⁷/8!)
    s = a / 40320.0 + 1.0 / 5040.0
    s = s * a + 1.0 / 720.0
    s = s * a + 1.0 / 120.0
    s = s * a + 1.0 / 24.0
    s = s * a + 1.0 / 6.0
    s = s * a + 0.5
    small = a * (s * a + 1.0)
    return tl.where(tl.abs(a) < 0.5, small, tl.exp(a) - 1.0)


@triton.jit
def row_upstream(G, row, g_scale, G_MODE: tl.constexpr):
    """A row's upstream factor g: ``g_scale`` (G_MODE 0), ``g_scale / G[0]`` (1: the mean's denominator,
    read on the device), or ``G[row]`` (2: the backward of ``reduction="none"``)."""
    if G_MODE == 0:
        g = g_scale
    elif G_MODE == 1:
        g = g_scale / tl.load(G).to(tl.float32)
    else:
        g = tl.load(G + row).to(tl.float32)
    return g
