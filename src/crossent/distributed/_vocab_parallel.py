r"""Vocab-parallel cross-entropy: computes :func:`crossent.numpy.cross_entropy` on the concatenation of
the ranks' vocabulary shards, without ever gathering the logits.

How (the formulas themselves are in :mod:`crossent.numpy.categorical`). Per row, let :math:`z` be the
soft-capped logits, :math:`m` the row maximum over *all* ranks (a MAX all-reduce) and, on each rank,
:math:`\hat z_c = z_c - m \le 0` for its own classes. Every global quantity of the loss is a sum over
classes, so each rank computes its share and one SUM all-reduce of the packed shares finishes them:

======================  ====================================================  ==================
partial sum (per row)   local share                                           needed for
======================  ====================================================  ==================
:math:`S`               :math:`\sum_c e^{\hat z_c}`                           :math:`\mathrm{lse} = m + \log S`
:math:`\hat z_y`        :math:`\hat z_y` on the rank owning :math:`y`, else 0   index targets
:math:`w_y`             :math:`w_y` on the rank owning :math:`y`, else 0        weight, D, z-loss
:math:`A`               :math:`\sum_c w_c q_c` (:math:`=\omega`)              probability targets
:math:`B`               :math:`\sum_c w_c q'_c \hat z_c`, :math:`q' = (1-\varepsilon)q + \varepsilon/C`   probability targets
:math:`\Sigma`          :math:`\sum_c w_c \hat z_c`                           smoothing, index targets
:math:`W` (per call)    :math:`\sum_c w_c` of the weight shard                smoothing with weight
======================  ====================================================  ==================

Then :math:`-\log p_y = \log S - \hat z_y`, :math:`\sum_c w_c(-\log p_c) = W\log S - \Sigma` and
:math:`\sum_c w_c q'_c(-\log p_c) = ((1-\varepsilon)A + \tfrac{\varepsilon}{C}W)\log S - B`: the identities hold exactly and every term stays
small (the shift is applied before the sums, the same stable form as the single-process reference). The
global class count :math:`C` comes with the row maxima (each rank's shard size rides in the MAX buffer).
Non-finite rows follow torch: +inf or NaN anywhere in a row makes its loss and gradient NaN on every
rank; a row of −inf has lse = −inf.

The gradient of a rank's shard is the reference's formula, computed locally from the saved
:math:`\mathrm{lse}` and the per-row coefficient (no collective in the backward):

* index: :math:`\partial\ell/\partial z_c = \kappa\,p_c - (1-\varepsilon)w_y[c=y] - \tfrac{\varepsilon}{C}w_c`,
  :math:`\kappa = (1-\varepsilon)w_y + \tfrac{\varepsilon}{C}W + 2\lambda w_y\mathrm{lse}`;
* probabilities: :math:`\partial\ell/\partial z_c = \kappa\,p_c - w_c q'_c`,
  :math:`\kappa = (1-\varepsilon)A + \tfrac{\varepsilon}{C}W + 2\lambda A\,\mathrm{lse}`, and
  :math:`\partial\ell/\partial q_c = w_c[(1-\varepsilon)(\mathrm{lse} - z_c) + \lambda\,\mathrm{lse}^2]`.
"""

from __future__ import annotations

from typing import Any

import torch

from .._contract import CEOptions
from ..numpy import categorical
from ..numpy.primitives import softcap as _softcap
from ..numpy.primitives import softcap_grad_from_output
from ._args import VocabParallelSpec, compute_dtype, prepare_call
from ._comm import global_row_max, global_row_sums, group_rank

# --------------------------------------------------------------------------------------------------
# Step 2: local shares of the per-row sums, and the combination after the SUM all-reduce.
# --------------------------------------------------------------------------------------------------


def _index_shares(zs, target, w, start, options):
    """Local shares for class-index targets (see the module table). Returns (columns, scalars, owned, safe).

    Consumes ``zs`` (a fresh buffer: it is exponentiated in place last, to spare an (N, V_local) copy).
    """
    valid = target != options.ignore_index
    local = target.to(torch.int64) - start
    owned = valid & (local >= 0) & (local < zs.shape[1])
    safe = torch.where(owned, local, torch.zeros_like(local))
    zero = zs.new_zeros(())
    z_y = torch.where(owned, zs.gather(1, safe[:, None])[:, 0], zero)
    extra, scalars = [], []
    if w is not None:
        extra.append(torch.where(owned, w[safe], zero))
    if options.label_smoothing > 0:
        extra.append(zs.sum(dim=1) if w is None else zs @ w)
        if w is not None:
            scalars.append(w.sum())
    return [zs.exp_().sum(dim=1), z_y, *extra], scalars, owned, safe


def _prob_shares(zs, q, w, options, num_classes):
    """Local shares for probability targets: S, A = Σ w q and B = Σ w q' ẑ with the smoothed target
    q' = (1 − ε) q + ε/C (and W with smoothing and weights).

    B is formed with q' itself (C is known once the MAX all-reduce has brought the shard sizes), so a
    class with q = 0 and logit −inf gives +inf under smoothing, as in torch, not 0·(−inf) = NaN.
    Consumes ``zs`` like :func:`_index_shares`.
    """
    eps = options.label_smoothing
    wq = q if w is None else q * w
    scalars = []
    if eps > 0:
        q_smooth = q * (1.0 - eps) + eps / num_classes
        b = ((q_smooth if w is None else q_smooth * w) * zs).sum(dim=1)
        if w is not None:
            scalars.append(w.sum())
    else:
        b = (wq * zs).sum(dim=1)
    return [zs.exp_().sum(dim=1), wq.sum(dim=1), b], scalars


def _combine(cols, scalars, shift, num_classes, has_weight, options, prob_target):
    """Per-row loss, lse, the gradient coefficient κ and the row weight (w_y or ω) from the global sums."""
    eps, lam = options.label_smoothing, options.z_loss
    log_s = torch.log(cols[0])
    lse = shift + log_s
    total_w = (scalars[0] if has_weight else num_classes) if eps > 0 else None
    if not prob_target:
        # ℓ and κ of the reference, from lse, ẑ_y and Σ w ẑ relative to the shift
        omega = cols[2] if has_weight else torch.ones_like(log_s)
        smooth = cols[-1] if eps > 0 else None
        loss, coef = categorical.index_row_terms(
            log_s, cols[1], smooth, omega, total_w, eps, lam, num_classes, shift
        )
        return loss, lse, coef, omega
    omega = cols[1]
    # Σ w q' = (1−ε)·A + (ε/C)·W;  Σ w q' (lse − z) = (Σ w q')·log S − B
    total = omega
    if eps > 0:
        total = (1.0 - eps) * omega + (eps / num_classes) * total_w
    loss = total * log_s - cols[2]
    coef = total
    if lam:
        loss = loss + lam * omega * lse * lse
        coef = coef + 2.0 * lam * omega * lse
    return loss, lse, coef, omega


def global_shift(row_max: torch.Tensor) -> torch.Tensor:
    """The common per-row shift: the global max, or 0 for a row whose max is -inf."""
    return torch.where(row_max == -torch.inf, torch.zeros_like(row_max), row_max)


def shard_start(spec: VocabParallelSpec, sizes: torch.Tensor):
    """This rank's first global class: as given, or Σ of the earlier ranks' shard sizes (on the device)."""
    if spec.vocab_start is not None:
        return spec.vocab_start
    return sizes[: group_rank(spec.group)].sum().to(torch.int64)


def finish_forward(cols, scalars, shift, num_classes, target, w, normalize_by, spec, n, cdt):
    """After the SUM all-reduce: per-row loss, then the reduction (in one place).

    Returns ``(out, saved)`` with ``saved = (lse, coef, omega, valid, denominator)`` for the backward.
    """
    options = spec.options
    loss, lse, coef, omega = _combine(
        cols, scalars, shift, num_classes, w is not None, options, spec.prob_target
    )
    if spec.prob_target:
        valid = None
        denominator = torch.full((), float(n), dtype=cdt, device=shift.device)
    else:
        valid = target != options.ignore_index
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        denominator = torch.where(valid, omega, torch.zeros_like(omega)).sum()
    if normalize_by is not None:
        denominator = normalize_by.detach().to(device=shift.device, dtype=cdt)
    if options.reduction == "none":
        out = loss
    elif options.reduction == "sum":
        out = loss.sum()
    else:
        out = loss.sum() / denominator
    return out, (lse, coef, omega, valid, denominator)


def row_upstream(grad_out, options: CEOptions, denominator, valid, n, cdt):
    """The factor each row's gradient carries: g (sum), g/D (mean) or g_i (none); 0 at ignored rows."""
    g = grad_out.to(cdt)
    if options.reduction == "none":
        g_rows = g.reshape(-1)
    elif options.reduction == "sum":
        g_rows = g.reshape(()).expand(n)
    else:
        g_rows = (g.reshape(()) / denominator).expand(n)
    if valid is not None:
        # ignored rows carry exactly 0 (also when D = 0: the all-ignored mean has gradient 0, not NaN)
        g_rows = torch.where(valid, g_rows, torch.zeros_like(g_rows))
    return g_rows


def logit_grad(z, target, w, lse, coef, omega, owned, safe, g_rows, spec, num_classes, target_grad):
    """Gradient of the rows' loss with respect to this rank's logits (and probability shard).

    ``z`` are the soft-capped logits of the rows in the compute dtype; the other per-row tensors are
    those saved by the forward, restricted to the same rows. Returns ``(d logits, d target or None)``.
    """
    options = spec.options
    eps, lam = options.label_smoothing, options.z_loss
    # ∂ℓ/∂z_c = κ p_c − (target part): (1−ε) w_y [c=y] + (ε/C) w_c, or w_c q'_c  (in place, one buffer)
    dz = (z - lse[:, None]).exp_().mul_(coef[:, None])
    dq = None
    if spec.prob_target:
        q = target.to(z.dtype)
        if w is None:
            dz.sub_(q, alpha=1.0 - eps)
        else:
            dz.addcmul_(q, w, value=-(1.0 - eps))
        if eps > 0:
            dz.sub_((eps / num_classes) * (1.0 if w is None else w))
        if target_grad:
            # ∂ℓ/∂q_c = w_c [(1−ε)(lse − z_c) + λ lse²]
            dq = (1.0 - eps) * (lse[:, None] - z)
            if lam:
                dq.add_(lam * (lse * lse)[:, None])
            if w is not None:
                dq.mul_(w)
            dq = dq.mul_(g_rows[:, None]).to(target.dtype)
    else:
        hit = torch.where(owned, (1.0 - eps) * omega, torch.zeros_like(omega))
        dz.scatter_add_(1, safe[:, None], -hit[:, None])
        if eps > 0:
            dz.sub_((eps / num_classes) * (1.0 if w is None else w))
    dz.mul_(g_rows[:, None])
    if options.softcap is not None:
        dz.mul_(softcap_grad_from_output(z, options.softcap))
    return dz, dq


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward: two collectives (MAX, then SUM of the packed shares). Backward: none."""

    @staticmethod
    def forward(ctx, logits, target, weight, normalize_by, spec: VocabParallelSpec):
        options, group = spec.options, spec.group
        cdt = compute_dtype(logits.dtype)
        n, v_local = logits.shape
        z = _softcap(logits.to(cdt), options.softcap)
        # step 1: global row maxima (and every rank's shard size), one MAX all-reduce
        row_max, sizes = global_row_max(z.amax(dim=1), v_local, group)
        # stability: shift by the global max. A row of -inf shifts by 0 (its lse is -inf, its loss NaN); a
        # +inf or NaN max shifts by itself, which makes the whole row NaN on every rank (torch's semantics)
        shift = global_shift(row_max)
        zs = z - shift[:, None]
        w = None if weight is None else weight.to(cdt)
        # step 2: local shares → one SUM all-reduce → loss per row → reduction
        owned = safe = None
        if spec.prob_target:
            cols, scalars = _prob_shares(zs, target.to(cdt), w, options, sizes.sum())
        else:
            cols, scalars, owned, safe = _index_shares(
                zs, target, w, shard_start(spec, sizes), options
            )
        cols, scalars = global_row_sums(cols, scalars, group)
        num_classes = sizes.sum()
        out, saved = finish_forward(
            cols, scalars, shift, num_classes, target, w, normalize_by, spec, n, cdt
        )
        lse, coef, omega, valid, denominator = saved
        ctx.spec, ctx.cdt, ctx.num_classes = spec, cdt, num_classes
        ctx.valid, ctx.owned, ctx.safe = valid, owned, safe
        ctx.save_for_backward(logits, target, weight, lse, coef, omega, denominator)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, target, weight, lse, coef, omega, denominator = ctx.saved_tensors
        spec, cdt = ctx.spec, ctx.cdt
        g_rows = row_upstream(grad_out, spec.options, denominator, ctx.valid, logits.shape[0], cdt)
        w = None if weight is None else weight.to(cdt)
        z = _softcap(logits.to(cdt), spec.options.softcap)
        dz, dq = logit_grad(
            z,
            target,
            w,
            lse,
            coef,
            omega,
            ctx.owned,
            ctx.safe,
            g_rows,
            spec,
            ctx.num_classes,
            spec.prob_target and ctx.needs_input_grad[1],
        )
        return dz.to(logits.dtype), dq, None, None, None


# --------------------------------------------------------------------------------------------------
# Public function.
# --------------------------------------------------------------------------------------------------


def cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    *,
    group: Any = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: torch.Tensor | float | None = None,
    vocab_start: int | None = None,
    validate: bool = True,
) -> torch.Tensor:
    r"""Cross-entropy over a vocabulary sharded across the ranks of ``group``: computes
    :func:`crossent.numpy.cross_entropy` (formulas there) on the concatenated logits.

    Each rank holds a contiguous slice of the classes, in rank order (rank 0 the first ``V_0``, rank 1 the
    next ``V_1``, …); slices may differ in size. The class dimension is the **last** one.

    Args:
        local_logits: (..., V_local) floating logits of this rank's classes (float16/bfloat16 are computed
            in float32).
        target: global class indices of shape (...) (int64 or uint8, identical on every rank), or this
            rank's shard of class probabilities, (..., V_local), floating.
        group: the tensor-parallel process group (default: the default group).
        weight: (V_local,) this rank's shard of the class weights, or None. Not differentiable.
        ignore_index: index targets equal to it add 0 to the loss, the gradient and the mean's denominator.
        reduction: "none" (per element, shape (...)), "sum", or "mean" (Σℓ / D, D = Σ w[y] over
            non-ignored elements for index targets, the number of elements for probabilities).
        label_smoothing: ε in [0, 1]; the uniform part spans all C = Σ V_local classes.
        z_loss: λ ≥ 0; adds λ·w_y·lse² (ω·lse² for probabilities), lse over all C classes.
        softcap: s > 0; logits → s·tanh(x/s) first.
        normalize_by: replaces D for ``reduction="mean"`` (a tensor or a number, used as given, no host
            sync), e.g. the global number of non-ignored tokens of an optimizer step; see the recipe in
            :mod:`crossent.distributed`.
        vocab_start: the global index of this rank's first class; None derives it from the shard sizes.
        validate: True (default) adds one small collective (``2K + 2P`` float64) and a host sync that
            check every rank passes the same shapes, dtypes, options and target, and that index targets are
            in range; False runs exactly two collectives and never syncs with the host, and checks
            nothing across ranks (an out-of-range index is then owned by no rank and silently gives a
            wrong loss): validate on the first steps, then turn it off in the training loop.

    Returns:
        The same loss on every rank (float32 for half inputs): shape (...) for "none", else a scalar.
        Backward gives each rank the gradient of its own shard (and of its probability shard), with no
        communication.

    Raises:
        ValueError: bad shapes or options, or ranks that disagree (with ``validate=True``), naming the
            argument; ``normalize_by`` with a reduction other than "mean".
        TypeError: non-floating logits, index targets that are not int64/uint8.
        IndexError: an index target outside [0, C) that is not ``ignore_index`` (``validate=True``).
        RuntimeError / torch.distributed.DistBackendError: a rank that never reaches a collective, after
            the group's timeout (no hang).

    Example (2 ranks, ``torchrun --nproc_per_node 2``; see ``examples/vocab_parallel.py``)::

        logits = full_logits[:, rank * 5 : (rank + 1) * 5].requires_grad_()   # V = 10
        loss = crossent.distributed.cross_entropy(logits, target, label_smoothing=0.1)
        loss.backward()   # logits.grad = this rank's slice of the single-process gradient
    """
    x, t, lead, normalize_by, spec = prepare_call(
        local_logits,
        local_logits.device if isinstance(local_logits, torch.Tensor) else None,
        target,
        group=group,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        normalize_by=normalize_by,
        vocab_start=vocab_start,
        validate=validate,
    )
    out = _VocabParallelCrossEntropy.apply(x, t, weight, normalize_by, spec)
    return out.reshape(lead) if spec.options.reduction == "none" else out
