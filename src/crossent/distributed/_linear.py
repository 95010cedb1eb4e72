"""Vocab-parallel linear cross-entropy: the classifier weight is sharded by vocabulary rows.

Computes ``crossent.distributed.cross_entropy(F.linear(input, local_linear_weight, linear_bias), ...)``:
each rank forms its own (N, V_local) logits from the replicated hidden states and its rows of the
classifier, then the vocab-parallel cross-entropy runs as usual (two collectives in the forward).

Backward: the logits' gradient is local; ``∂/∂W_local = dZᵀ·X`` and ``∂/∂b_local = Σ dZ`` stay local,
but each rank's ``dZ·W_local`` is only a partial sum of the input's gradient. One SUM all-reduce of the
(N, H) partial gradients completes it — the "f" operator of Megatron-LM's tensor parallelism
(``megatron/core/tensor_parallel/mappings.py``, ``_CopyToModelParallelRegion``: identity forward, all-reduce
backward). That is the one collective of this function's backward: ``N·H`` elements of the input's dtype
per rank, only when the input requires a gradient.

With ``chunk_size=k`` the (N, V_local) logits are never held whole: a custom autograd function walks the
rows k at a time.

1. Forward, one pass over the chunks: logits of the chunk (``F.linear`` in the input's dtype), their local
   row maxima and the local shares of the per-row sums *relative to the local maxima*.
2. MAX all-reduce of the local maxima; the shares are rebased to the global maxima (``S·e^δ``,
   ``B + A·δ``, ``Σ + W_local·δ`` with ``δ = m_local − m``); the target logit of index targets is one
   gathered dot product ``h_i·W[y_i] + b[y_i]`` per row on the owning rank (O(N·H), after the MAX, when the
   shard offsets are known).
3. SUM all-reduce of the packed shares, as in :func:`crossent.distributed.cross_entropy`.
4. Backward, one pass over the chunks: recompute the chunk's logits, form its logit gradient (the same
   formula), and accumulate ``dW += dZᵀ·h``, ``db += Σ dZ``, ``dh = dZ·W`` in the compute dtype (float32
   for half inputs; the weight is upcast once); then the one SUM all-reduce of ``dh``.

Memory: O(k·V_local) for the logits of a chunk plus O(N) per-row statistics, instead of O(N·V_local);
cost: the logits' matmul runs twice (forward and backward) instead of once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .._backends.linear_ce import logit_chunks
from .._contract import CrossentValueError
from ..numpy.primitives import softcap as _softcap
from ._args import VocabParallelSpec, compute_dtype, prepare_call
from ._comm import all_reduce, global_row_max, global_row_sums
from ._vocab_parallel import (
    cross_entropy,
    finish_forward,
    global_shift,
    logit_grad,
    row_upstream,
    shard_start,
)


class _CopyToTensorParallel(torch.autograd.Function):
    """Identity in the forward; SUM all-reduce of the gradient over the group in the backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        all_reduce(grad, dist.ReduceOp.SUM, ctx.group)
        return grad, None


def _chunk_shares(zl, q, w, options):
    """Shares of the rows relative to their *local* maxima: S, (A, B), (Σ) — see ``_vocab_parallel``.

    Consumes ``zl`` (exponentiated in place last).
    """
    cols = []
    if q is not None:
        wq = q if w is None else q * w
        cols += [wq.sum(dim=1), (wq * zl).sum(dim=1)]
    if options.label_smoothing > 0:
        cols.append(zl.sum(dim=1) if w is None else zl @ w)
    return [zl.exp_().sum(dim=1), *cols]


def _chunks(h, lin_w, lin_b, chunk, cdt):
    """The shared fused-linear chunk loop (:func:`crossent._backends.linear_ce.logit_chunks`): logits of
    ``chunk`` rows at a time in one reused (chunk, V_local) buffer of the compute dtype."""
    rows = min(chunk, max(h.shape[0], 1))
    buf = torch.empty((rows, lin_w.shape[0]), dtype=cdt, device=h.device)
    low = None if h.dtype == cdt else torch.empty_like(buf, dtype=h.dtype)
    return logit_chunks(h, lin_w, lin_b, chunk, buf, low)


def _rows_of(t, rows):
    return None if t is None else t[rows]


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Vocab-parallel linear cross-entropy over row chunks: two collectives forward, one backward."""

    @staticmethod
    def forward(ctx, h, lin_w, lin_b, target, weight, normalize_by, spec: VocabParallelSpec, chunk):
        options, group = spec.options, spec.group
        n, v_local = h.shape[0], lin_w.shape[0]
        cdt = compute_dtype(torch.result_type(h, lin_w))
        w = None if weight is None else weight.to(cdt)
        q_all = target.to(cdt) if spec.prob_target else None
        # pass 1: local maxima and local shares, chunk by chunk
        maxima, parts = [], []
        for lo, hi, _, _, z in _chunks(h, lin_w, lin_b, chunk, cdt):
            z = _softcap(z, options.softcap)
            m = z.amax(dim=1)
            local_shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            q = None if q_all is None else q_all[lo:hi]
            maxima.append(m)
            parts.append([local_shift] + _chunk_shares(z.sub_(local_shift[:, None]), q, w, options))
        cols = [torch.cat(c) for c in zip(*parts)] if parts else None
        local_max = torch.cat(maxima) if maxima else h.new_zeros(0, dtype=cdt)
        # step 1: global maxima, one MAX all-reduce; rebase the shares to them
        row_max, sizes = global_row_max(local_max, v_local, group)
        shift = global_shift(row_max)
        if cols is None:
            cols = [torch.zeros_like(shift)] * (
                2 + 2 * spec.prob_target + (options.label_smoothing > 0)
            )
        local_shift, s_local, rest = cols[0], cols[1], cols[2:]
        delta = local_shift - shift
        # a shard whose row is all -inf has S = 0: keep it 0 (0·e^δ could be 0·inf)
        shares = [torch.where(s_local == 0, s_local, s_local * torch.exp(delta))]
        w_local = float(v_local) if w is None else w.sum()
        owned = safe = None
        if spec.prob_target:
            a, b = rest[0], rest[1]
            shares += [a, b + a * delta]
        else:
            start = shard_start(spec, sizes)
            valid = target != options.ignore_index
            local = target.to(torch.int64) - start
            owned = valid & (local >= 0) & (local < v_local)
            safe = torch.where(owned, local, torch.zeros_like(local))
            # the target logit: one dot product per row, h_i·W[y_i] + b[y_i], on the owning rank
            # (computed in the compute dtype, rounded like F.linear's output)
            zy = (h.to(cdt) * lin_w[safe].to(cdt)).sum(dim=1)
            if lin_b is not None:
                zy = zy + lin_b[safe].to(cdt)
            logit_dtype = torch.result_type(h, lin_w)
            zy = _softcap(zy.to(logit_dtype).to(cdt), options.softcap) - shift
            zero = shift.new_zeros(())
            shares.append(torch.where(owned, zy, zero))
            if w is not None:
                shares.append(torch.where(owned, w[safe], zero))
        scalars = []
        if options.label_smoothing > 0:
            shares.append(rest[-1] + w_local * delta)
            if w is not None:
                scalars.append(w.sum())
        # step 2: one SUM all-reduce of the packed shares → loss → reduction
        shares, scalars = global_row_sums(shares, scalars, group)
        num_classes = sizes.sum()
        if spec.prob_target and options.label_smoothing > 0:
            # B' = Σ w q' ẑ = (1−ε)·B + (ε/C)·Σ, the form the combination expects (C is known only now)
            eps = options.label_smoothing
            s_, a_, b_, smooth = shares
            shares = [s_, a_, (1.0 - eps) * b_ + (eps / num_classes) * smooth]
        out, saved = finish_forward(
            shares, scalars, shift, num_classes, target, w, normalize_by, spec, n, cdt
        )
        lse, coef, omega, valid, denominator = saved
        ctx.spec, ctx.cdt, ctx.chunk, ctx.num_classes = spec, cdt, chunk, num_classes
        ctx.valid, ctx.owned, ctx.safe = valid, owned, safe
        ctx.save_for_backward(h, lin_w, lin_b, target, weight, lse, coef, omega, denominator)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, lin_w, lin_b, target, weight, lse, coef, omega, denominator = ctx.saved_tensors
        spec, cdt, chunk = ctx.spec, ctx.cdt, ctx.chunk
        n = h.shape[0]
        g_rows = row_upstream(grad_out, spec.options, denominator, ctx.valid, n, cdt)
        w = None if weight is None else weight.to(cdt)
        want_h, want_w, want_b, want_q = ctx.needs_input_grad[:4]
        w_c, h_c = lin_w.to(cdt), h.to(cdt)
        dh = torch.zeros_like(h_c) if want_h else None
        dw = torch.zeros_like(w_c) if want_w else None
        db = torch.zeros(lin_w.shape[0], dtype=cdt, device=h.device) if want_b else None
        dqs = []
        for lo, hi, _, _, z in _chunks(h, lin_w, lin_b, chunk, cdt):
            rows = slice(lo, hi)
            z = _softcap(z, spec.options.softcap)
            dz, dq = logit_grad(
                z,
                target[rows],
                w,
                lse[rows],
                coef[rows],
                omega[rows],
                _rows_of(ctx.owned, rows),
                _rows_of(ctx.safe, rows),
                g_rows[rows],
                spec,
                ctx.num_classes,
                spec.prob_target and want_q,
            )
            if want_h:
                dh[rows] = dz @ w_c
            if want_w:
                dw += dz.T @ h_c[rows]
            if want_b:
                db += dz.sum(dim=0)
            dqs.append(dq)
        if want_h:
            # the one collective of the backward: each rank holds a partial sum of dh
            all_reduce(dh, dist.ReduceOp.SUM, spec.group)
        dq = torch.cat(dqs) if spec.prob_target and want_q and dqs else None
        return (
            None if dh is None else dh.to(h.dtype),
            None if dw is None else dw.to(lin_w.dtype),
            None if db is None else db.to(lin_b.dtype),
            dq,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    input: torch.Tensor,
    local_linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: torch.Tensor | float | None = None,
    vocab_start: int | None = None,
    validate: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of ``input @ local_linear_weight.T (+ linear_bias)`` over a vocabulary sharded by rows
    of the classifier: computes :func:`crossent.numpy.cross_entropy` of the full-vocabulary logits.

    Args:
        input: (..., H) hidden states, identical on every rank of ``group``.
        local_linear_weight: (V_local, H) this rank's rows of the classifier (contiguous, in rank order).
        target: class indices (...) identical on every rank, or this rank's (..., V_local) shard of
            class probabilities.
        group, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, normalize_by,
        vocab_start, validate: as in :func:`crossent.distributed.cross_entropy`.
        linear_bias: (V_local,) this rank's slice of the classifier bias, or None.
        chunk_size: None forms the rank's (N, V_local) logits at once (autograd through ``F.linear``);
            k > 0 walks the rows k at a time and never holds more than (k, V_local) logits (the matmul
            is recomputed in the backward; see the module docstring).

    Returns:
        The same loss on every rank. Gradients: the local weight and bias shards get their own gradient
        (no communication); ``input`` gets the full gradient after one SUM all-reduce of ``N·H`` elements.

    Example::

        loss = crossent.distributed.linear_cross_entropy(hidden, lm_head.weight, target)
    """
    if input.dim() < 1 or local_linear_weight.dim() != 2:
        raise CrossentValueError(
            f"arguments 'input' (..., H) and 'local_linear_weight' (V_local, H) have shapes "
            f"{list(input.shape)} and {list(local_linear_weight.shape)}"
        )
    if input.shape[-1] != local_linear_weight.shape[1]:
        raise CrossentValueError(
            f"argument 'local_linear_weight' has shape {list(local_linear_weight.shape)}, but 'input' has "
            f"H = {input.shape[-1]} features"
        )
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
            raise CrossentValueError(
                f"argument 'chunk_size' must be None or an int >= 1, got {chunk_size!r}"
            )
        v_local = local_linear_weight.shape[0]
        meta = torch.empty(
            (*input.shape[:-1], v_local),
            dtype=torch.result_type(input, local_linear_weight),
            device="meta",
        )
        _, t, lead, normalize_by, spec = prepare_call(
            meta,
            input.device,
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
        h = input.reshape(-1, input.shape[-1])
        out = _ChunkedLinearCrossEntropy.apply(
            h, local_linear_weight, linear_bias, t, weight, normalize_by, spec, int(chunk_size)
        )
        return out.reshape(lead) if spec.options.reduction == "none" else out
    x = _CopyToTensorParallel.apply(input, group) if input.requires_grad else input
    logits = F.linear(x, local_linear_weight, linear_bias)
    return cross_entropy(
        logits,
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
