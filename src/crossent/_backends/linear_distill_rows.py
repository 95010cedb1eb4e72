r"""The reference rows of the distillation loss, in place, for the fused CPU chunk loop.

Computes what :func:`crossent.numpy.distillation.distill_rows_value_and_grad` (``teacher=False``)
computes, with the formulas of :mod:`crossent.numpy.distillation`, over a block of (r, V) logits that
may be overwritten: the student's buffer becomes the gradient G, the teacher's is scratch, and three
preallocated (r, V) buffers hold the probabilities and the mixture (a fourth, with a hard term, the
untempered softmax minus the one-hot target; its loss is −log softmax(z_S)_y, gathered from a
log-softmax). Fused softmax / log-softmax kernels give both the probabilities and the log-probabilities
(one pass each, no separate ``exp``; the log-softmax is written over its own input, which the CPU
kernel allows: it reads a row whole before writing it, and the tests compare against the reference);
the row sums are taken of products written into buffers already at hand (a fresh (r, V) temporary per
block costs page faults that were measured at several times the arithmetic); every other step is one
in-place pass. Passes over the block (each reading one or two (r, V) arrays): forward KL 9, reverse KL
9, JSD 15, and 3 for a hard term (the reference rows: about 30, each into a fresh temporary).

The one departure from the reference's arithmetic: the JSD's mixture is ``log(lerp(p_S, p_T, β))``
instead of the log-add-exp of the log-probabilities (one ``log`` instead of an ``exp`` and a ``log1p``);
the two agree to rounding wherever ``m > 0``. Where a probability underflows to 0 next to an infinite
log-ratio (``m = 0``, or a logit of -inf) the product ``0·∞`` is NaN, not the reference's 0: the block
reports it and the caller recomputes that block with the reference rows, so results never differ from
the reference beyond rounding. (A NaN row sum is checked on the host: CPU only.)
"""

from __future__ import annotations

import torch

from .._contract import DistillOptions
from ..numpy.distillation import effective_divergence

Tensor = torch.Tensor

# (r, V) scratch buffers a block needs besides the two logit buffers (the fourth for the hard term).
SCRATCH_BUFFERS = 4


def distill_block_(
    zs: Tensor,
    zt: Tensor,
    target: Tensor | None,
    opts: DistillOptions,
    g_rows: Tensor | None,
    scratch: list[Tensor],
) -> Tensor | None:
    """Per-row losses (r,) of the block; with ``g_rows`` (r,) the student's gradient of
    ``Σ g_i ℓ_i`` is written into ``zs``. ``zt`` and ``scratch`` (``SCRATCH_BUFFERS`` tensors of at
    least r rows) are overwritten. Returns None (with ``zs``, ``zt`` clobbered) when a row met
    ``0·∞``: the caller recomputes the block with the reference rows (module docstring)."""
    tau, c, h = opts.temperature, opts.soft_scale, opts.hard_weight
    m = zs.shape[0]
    want = g_rows is not None
    valid = None
    if target is not None:
        valid = target != opts.ignore_index
    g = scale = None
    if g_rows is not None:
        g = g_rows.to(zs.dtype)
        if valid is not None:  # ignored rows carry 0 (as the reference)
            g = torch.where(valid, g, torch.zeros_like(g))
        scale = (g * (c / tau)).unsqueeze(1)
    hard_loss = hard_grad = None
    if h > 0:  # the hard term on the untempered logits, before they are overwritten
        assert target is not None and valid is not None
        # CE = lse(z_S) − z_S,y = −log softmax(z_S)_y; gradient softmax(z_S) − e_y
        hard_grad = scratch[3][:m]
        y = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
        torch.log_softmax(zs, 1, out=hard_grad)
        hard_loss = -hard_grad.gather(1, y).squeeze(1)
        if want:
            torch.softmax(zs, 1, out=hard_grad)
            hard_grad.scatter_add_(1, y, torch.full_like(y, -1, dtype=zs.dtype))
        else:
            hard_grad = None
    if tau != 1.0:
        zs.div_(tau)
        zt.div_(tau)
    p, t, mix = (b[:m] for b in scratch[:3])
    kind = effective_divergence(opts)
    if kind == "forward_kl":  # D = Σ p_T (log p_T − log p_S); G = p_S − p_T
        torch.softmax(zt, 1, out=t)
        torch.log_softmax(zt, 1, out=zt)
        if want:
            torch.softmax(zs, 1, out=p)
        torch.log_softmax(zs, 1, out=zs)
        d = zt.sub_(zs).mul_(t).sum(1)  # the products in place: no allocation per block
        if scale is not None:
            torch.sub(p, t, out=zs).mul_(scale)
    elif kind == "reverse_kl":  # D = Σ p_S (log p_S − log p_T); G = p_S (log p_S − log p_T − D)
        torch.softmax(zs, 1, out=p)
        torch.log_softmax(zs, 1, out=zs)
        torch.log_softmax(zt, 1, out=zt)
        d = torch.mul(zs.sub_(zt), p, out=zt).sum(1)
        if scale is not None:
            zs.sub_(d.unsqueeze(1)).mul_(p).mul_(scale)
    else:  # JSD: K_T = Σ p_T (log p_T − log m), K_S likewise; G = (1 − β) p_S (log p_S − log m − K_S)
        beta = opts.beta
        torch.softmax(zs, 1, out=p)
        torch.log_softmax(zs, 1, out=zs)
        torch.softmax(zt, 1, out=t)
        torch.log_softmax(zt, 1, out=zt)
        torch.lerp(p, t, beta, out=mix).log_()
        k_t = zt.sub_(mix).mul_(t).sum(1)
        k_s = torch.mul(zs.sub_(mix), p, out=mix).sum(1)
        d = beta * k_t + (1.0 - beta) * k_s
        if scale is not None:
            zs.sub_(k_s.unsqueeze(1)).mul_(p).mul_(scale * (1.0 - beta))
    if bool(torch.isnan(d).any()):
        return None
    loss = c * d
    if hard_loss is not None:
        loss = loss + h * hard_loss
        if hard_grad is not None:
            assert g is not None
            zs.addcmul_(hard_grad, (g * h).unsqueeze(1))
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss


__all__ = ["SCRATCH_BUFFERS", "distill_block_"]
