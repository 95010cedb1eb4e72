r"""Vocab-parallel fused linear distillation: the student's and the teacher's output layers sharded the
same way (contiguous vocabulary slices in rank order, uneven allowed) over a process group.

Computes, on every rank, :func:`crossent.linear_distillation_loss` of the concatenated vocabulary (the
math is :mod:`crossent.numpy.distillation`; its row sums add over vocabulary shards once the
log-probabilities are normalised by the global log-sum-exps). Neither model's (N, V) logits, nor even the
(N, V_local) shard, are held: rows go in chunks as in :mod:`crossent._backends.linear_distill`.

Passes over the chunks (each recomputes the chunk's two logit products) and collectives, all through
:func:`crossent.distributed._comm.all_reduce` (N rows, P ranks, k = [hard_weight > 0]):

1. local row maxima and sum-exps (relative to the local maxima) of ``a = z_S/τ``, ``b = z_T/τ`` and,
   with a hard term, of the untempered ``z_S``; **MAX all-reduce** of ``(2 + k)·N + P`` values (the
   maxima and every rank's shard size); the sum-exps are rebased to the global maxima;
2. **SUM all-reduce** of ``(2 + k)·N`` values: the global log-sum-exps;
3. the divergence's row shares (:func:`crossent.numpy.distillation.soft_sums`: 1 for the KLs, 2 for
   the JSD) and, with a hard term, the target logit on the rank that owns it; **SUM all-reduce** of
   ``(1 or 2 + k)·N`` values: the loss of every row;
4. (gradients) the student's logit gradient from :func:`crossent.numpy.distillation.soft_grads` with
   the global sums, ``dW_local``, ``db_local`` (local) and the rank's share of ``dX``; **SUM
   all-reduce** of the (N, D_S) input gradient (only when ``student_input`` requires one). For a reduced
   loss this runs in the forward (the backward only scales by grad_output and communicates nothing);
   for ``reduction="none"`` in the backward, from the O(N) statistics saved by the forward.

So three all-reduces of O(N) values per forward (at most ``9N + P`` elements in all, float32 or float64),
plus the one of ``N·D_S`` for the input's gradient, independent of V. Every rank must pass the same
options, target and replicated inputs (not checked: no extra collective). The teacher gets no gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .._backends.linear_distill import LinearDistillSpec, chunk_rows
from .._contract import (
    CrossentValueError,
    DistillOptions,
    check_linear_args,
    check_target_dtype,
    distill_options,
)
from ..numpy.distillation import soft_grads, soft_parts, soft_sums, soft_value
from ._comm import all_reduce, group_rank

Tensor = torch.Tensor


@dataclass(frozen=True)
class _Spec:
    options: DistillOptions
    group: Any
    workspace_bytes: int | None
    need_input: bool
    need_weight: bool
    need_bias: bool


def _cdtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _logits(x: Tensor, w: Tensor, b: Tensor | None, cdt: torch.dtype) -> Tensor:
    z = torch.mm(x, w.t()) if b is None else torch.addmm(b, x, w.t())
    return z.to(cdt)


def _chunks(spec: _Spec, xs: Tensor, xt: Tensor, v_local: int):
    c = chunk_rows(LinearDistillSpec(spec.options, spec.workspace_bytes), xs, xt, v_local)
    n = xs.shape[0]
    return [(lo, min(lo + c, n)) for lo in range(0, n, max(c, 1))]


def _max_and_sumexp(z: Tensor) -> tuple[Tensor, Tensor]:
    m = z.amax(dim=1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m, torch.exp(z - m[:, None]).sum(dim=1)


@dataclass
class _Stats:
    """Per-row statistics of the whole vocabulary (every rank holds the same)."""

    lse_a: Tensor
    lse_b: Tensor
    lse_z: Tensor | None
    sums: list[Tensor]
    start: Tensor  # this rank's first global class (0-d int64, on the device)


def _forward_stats(spec: _Spec, xs, ws, bs, xt, wt, bt, target) -> tuple[Tensor, _Stats]:
    """Passes 1–3 and their three collectives; returns the per-row losses and the statistics."""
    opts, group = spec.options, spec.group
    tau, hard = opts.temperature, opts.hard_weight > 0
    n, v_local = xs.shape[0], ws.shape[0]
    cdt = _cdtype(xs)
    dev = xs.device
    k = 3 if hard else 2
    world = dist.get_world_size(group)
    maxima = torch.full((k * n + world,), -math.inf, dtype=cdt, device=dev)
    sexp = torch.zeros((k, n), dtype=cdt, device=dev)
    # pass 1: local maxima and sum-exps
    for lo, hi in _chunks(spec, xs, xt, v_local):
        zs = _logits(xs[lo:hi], ws, bs, cdt)
        zt = _logits(xt[lo:hi], wt, bt, cdt)
        for j, z in enumerate([zs / tau, zt / tau] + ([zs] if hard else [])):
            m, s = _max_and_sumexp(z)
            maxima[j * n + lo : j * n + hi] = m
            sexp[j, lo:hi] = s
    maxima[k * n + group_rank(group)] = float(v_local)
    local_max = maxima[: k * n].reshape(k, n).clone()
    all_reduce(maxima, dist.ReduceOp.MAX, group)  # collective 1
    row_max = maxima[: k * n].reshape(k, n)
    sizes = maxima[k * n :]
    start = sizes[: group_rank(group)].sum().to(torch.int64)
    # rebase to the global maxima; a share of 0 stays 0 (0·e^δ could be 0·inf)
    sexp = torch.where(sexp == 0, sexp, sexp * torch.exp(local_max - row_max)).contiguous()
    all_reduce(sexp, dist.ReduceOp.SUM, group)  # collective 2
    lse = row_max + torch.log(sexp)
    stats = _Stats(lse[0], lse[1], lse[2] if hard else None, [], start)
    if target is not None and target.device.type == "cpu":  # free on the CPU; a sync elsewhere
        total = int(sizes.sum())
        bad = ((target < 0) | (target >= total)) & (target != opts.ignore_index)
        if bool(bad.any()):
            raise IndexError(f"Target {int(target[bad][0])} is out of bounds. (argument 'target')")
    # pass 3: the divergence's row shares and the owned target logit
    cols: list[Tensor] = []
    for lo, hi in _chunks(spec, xs, xt, v_local):
        zs = _logits(xs[lo:hi], ws, bs, cdt)
        zt = _logits(xt[lo:hi], wt, bt, cdt)
        log_ps, log_pt = _log_probs(zs, zt, stats, lo, hi, tau)
        parts = soft_sums(log_ps, log_pt, opts)
        if hard:
            owned, local = _owned(target[lo:hi], start, v_local, opts)
            z_y = zs.gather(1, local[:, None])[:, 0]
            parts.append(torch.where(owned, z_y, torch.zeros_like(z_y)))
        cols.append(torch.stack(parts))
    packed = (
        torch.cat(cols, dim=1)
        if cols
        else torch.zeros((3 if hard else 2, 0), dtype=cdt, device=dev)
    ).contiguous()
    all_reduce(packed, dist.ReduceOp.SUM, group)  # collective 3
    stats.sums = list(packed[: packed.shape[0] - int(hard)])
    loss = opts.soft_scale * soft_value(stats.sums, opts)
    if stats.lse_z is not None:
        loss = loss + opts.hard_weight * (stats.lse_z - packed[-1])
    if target is not None:
        loss = torch.where(target != opts.ignore_index, loss, torch.zeros_like(loss))
    return loss, stats


def _log_probs(zs, zt, stats: _Stats, lo: int, hi: int, tau: float) -> tuple[Tensor, Tensor]:
    """Global log-probabilities of the chunk's classes on this shard: ``z/τ − lse`` (from the lse's)."""
    return zs / tau - stats.lse_a[lo:hi, None], zt / tau - stats.lse_b[lo:hi, None]


def _owned(t: Tensor, start: Tensor, v_local: int, opts: DistillOptions) -> tuple[Tensor, Tensor]:
    """(rows whose target class lies on this shard, its local index clamped into range)."""
    local = t.to(torch.int64) - start
    owned = (t != opts.ignore_index) & (local >= 0) & (local < v_local)
    return owned, local.clamp(0, v_local - 1)


def _grads(spec: _Spec, xs, ws, bs, xt, wt, bt, target, stats: _Stats, g: Tensor):
    """Pass 4: the student's gradients of Σ_i g_i ℓ_i; dX all-reduced over the group."""
    opts = spec.options
    tau, h, c = opts.temperature, opts.hard_weight, opts.soft_scale
    n, v_local = xs.shape[0], ws.shape[0]
    cdt = _cdtype(xs)
    g = g.to(cdt).expand(n)
    if target is not None:  # ignored rows carry 0 (the mean's g may be 1/0)
        g = torch.where(target != opts.ignore_index, g, torch.zeros_like(g))
    dx = torch.zeros((n, xs.shape[1]), dtype=cdt, device=xs.device) if spec.need_input else None
    dw = (
        torch.zeros((v_local, ws.shape[1]), dtype=cdt, device=xs.device)
        if spec.need_weight
        else None
    )
    db = torch.zeros((v_local,), dtype=cdt, device=xs.device) if spec.need_bias else None
    w_c = ws.to(cdt)
    for lo, hi in _chunks(spec, xs, xt, v_local):
        zs = _logits(xs[lo:hi], ws, bs, cdt)
        zt = _logits(xt[lo:hi], wt, bt, cdt)
        g_c = g[lo:hi, None]
        if c > 0:
            log_ps, log_pt = _log_probs(zs, zt, stats, lo, hi, tau)
            sums = [s[lo:hi] for s in stats.sums]
            parts = soft_parts(log_ps, log_pt, opts)
            ga, _ = soft_grads(log_ps, log_pt, opts, sums, teacher=False, parts=parts)
            dz = ga * (g_c * (c / tau))
        else:
            dz = torch.zeros_like(zs)
        if h > 0 and stats.lse_z is not None and target is not None:
            # hard term: h·g·(softmax(z_S) − e_y), the softmax from the global lse
            dz = dz + torch.exp(zs - stats.lse_z[lo:hi, None]) * (g_c * h)
            owned, local = _owned(target[lo:hi], stats.start, v_local, opts)
            rows = torch.arange(hi - lo, device=zs.device)
            dz[rows, local] -= torch.where(owned, g[lo:hi] * h, torch.zeros_like(g[lo:hi]))
        x_c = xs[lo:hi].to(cdt)
        if dx is not None:
            dx[lo:hi] = dz @ w_c
        if dw is not None:
            dw.addmm_(dz.t(), x_c)
        if db is not None:
            db.add_(dz.sum(0))
    if dx is not None:
        all_reduce(dx, dist.ReduceOp.SUM, spec.group)  # the input is replicated: sum the shares
        dx = dx.to(xs.dtype)
    return (
        dx,
        None if dw is None else dw.to(ws.dtype),
        None if db is None else db.to(bs.dtype),
    )


class _VocabParallelDistillation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: _Spec, xs, ws, bs, xt, wt, bt, target):  # type: ignore[override]
        opts = spec.options
        loss, stats = _forward_stats(spec, xs, ws, bs, xt, wt, bt, target)
        ctx.spec = spec
        need = spec.need_input or spec.need_weight or spec.need_bias
        ctx.grads = None
        if opts.reduction == "none":
            if need:
                ctx.stats = stats
                ctx.save_for_backward(xs, ws, bs, xt, wt, bt, target)
            return loss
        g = torch.ones((), dtype=loss.dtype, device=loss.device)
        total = loss.sum()
        if opts.reduction == "mean":
            den = (
                torch.tensor(float(xs.shape[0]), dtype=loss.dtype, device=loss.device)
                if target is None
                else (target != opts.ignore_index).sum().to(loss.dtype)
            )
            g = torch.reciprocal(den)
            total = total / den
        if need:
            ctx.grads = _grads(spec, xs, ws, bs, xt, wt, bt, target, stats, g)
        return total

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        spec: _Spec = ctx.spec
        if spec.options.reduction == "none":
            xs, ws, bs, xt, wt, bt, target = ctx.saved_tensors
            dx, dw, db = _grads(
                spec, xs, ws, bs, xt, wt, bt, target, ctx.stats, grad_output.reshape(-1)
            )
        else:
            if ctx.grads is None:
                raise RuntimeError(
                    "crossent.distributed.linear_distillation_loss: a second backward through the same "
                    "graph is not supported (the gradients were handed over by the first one)"
                )
            dx, dw, db = ctx.grads
            ctx.grads = None
            dx, dw, db = (
                None if t is None else t.mul_(grad_output.to(t.dtype)) for t in (dx, dw, db)
            )
        return None, dx, dw, db, None, None, None, None


def linear_distillation_loss(
    student_input: Tensor,
    local_student_weight: Tensor,
    teacher_input: Tensor,
    local_teacher_weight: Tensor,
    target: Tensor | None = None,
    *,
    group: Any = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    scale_by_temperature_squared: bool = False,
    local_student_bias: Tensor | None = None,
    local_teacher_bias: Tensor | None = None,
    workspace_bytes: int | None = None,
) -> Tensor:
    r"""Distillation loss over a vocabulary sharded across ``group``: computes
    :func:`crossent.linear_distillation_loss` of the concatenated output layers (module docstring).

    Args:
        student_input: (…, D_S) hidden states, identical on every rank.
        local_student_weight: (V_local, D_S) this rank's rows of the student's output layer (contiguous
            slices in rank order; V_local ≥ 1 and may differ between ranks).
        teacher_input: (…, D_T) teacher hidden states, identical on every rank.
        local_teacher_weight: (V_local, D_T) the teacher's rows of the same slice.
        target: (…) global class indices, identical on every rank, or None.
        group: the process group (None: the default group).
        divergence, beta, temperature, hard_weight, ignore_index, reduction,
            scale_by_temperature_squared, workspace_bytes: as in :func:`crossent.linear_distillation_loss`.
        local_student_bias, local_teacher_bias: (V_local,) slices of the biases, or None.

    Returns:
        The same loss on every rank. The student's weight and bias shards get their own gradients;
        ``student_input`` the full gradient (one SUM all-reduce of N·D_S). The teacher gets none.

    Example::

        loss = crossent.distributed.linear_distillation_loss(
            h_student, student_head_shard, h_teacher, teacher_head_shard, target, divergence="jsd")
    """
    options = distill_options(
        divergence,
        beta,
        temperature,
        hard_weight,
        ignore_index,
        reduction,
        scale_by_temperature_squared,
    )
    xs, ws, bs = check_linear_args(
        "student", student_input, local_student_weight, local_student_bias, None
    )
    lead = tuple(student_input.shape[:-1])
    xt, wt, bt = check_linear_args(
        "teacher", teacher_input, local_teacher_weight, local_teacher_bias, lead
    )
    if wt.shape[0] != ws.shape[0] or ws.shape[0] < 1:
        raise CrossentValueError(
            f"the student's and the teacher's vocabulary shards differ or are empty: argument "
            f"'local_student_weight' has {ws.shape[0]} rows, 'local_teacher_weight' {wt.shape[0]}"
        )
    if target is not None and tuple(target.shape) != lead:
        raise CrossentValueError(
            f"argument 'target' has shape {list(target.shape)}, expected {list(lead)}"
        )
    if target is None and options.hard_weight > 0:
        raise CrossentValueError(
            f"argument 'hard_weight' is {options.hard_weight} but no target was given (argument 'target')"
        )
    check_target_dtype(target)
    grad_on = torch.is_grad_enabled()
    spec = _Spec(
        options,
        group if group is not None else dist.group.WORLD,
        workspace_bytes,
        grad_on and xs.requires_grad,
        grad_on and ws.requires_grad,
        grad_on and bs is not None and bs.requires_grad,
    )
    y = None if target is None else target.reshape(-1)
    loss = _VocabParallelDistillation.apply(
        spec, xs, ws, bs, xt.detach(), wt.detach(), None if bt is None else bt.detach(), y
    )
    return loss.reshape(lead) if options.reduction == "none" else loss


__all__ = ["linear_distillation_loss"]
