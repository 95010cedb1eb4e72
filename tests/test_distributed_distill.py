"""Vocab-parallel linear distillation on real gloo groups (2 and 4 ranks, uneven shards).

Oracle: the single-process composition ``crossent.distillation_loss(F.linear(...), F.linear(...))`` on
the full vocabulary in float64 (itself checked against an independent autograd formula in
``tests/test_distillation.py``); every rank must return the same loss, the full input gradient and the
gradient of its own weight and bias slices. Groups are started as in ``tests/test_distributed.py``
(forked ranks, one thread each, a free loopback port, killed on overrun).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from test_distributed import _free_port, run_group

pytestmark = pytest.mark.dist

TOL = dict(rtol=1e-9, atol=1e-9)
N, DS, DT, V = 13, 5, 4, 23
CASES = [
    dict(divergence="forward_kl", reduction="mean"),
    dict(divergence="reverse_kl", reduction="sum", temperature=0.1, hard_weight=0.3),
    dict(
        divergence="jsd",
        beta=0.3,
        reduction="none",
        temperature=10.0,
        scale_by_temperature_squared=True,
    ),
    dict(divergence="jsd", beta=0.0, reduction="mean", hard_weight=0.5),
    dict(divergence="jsd", beta=1.0, reduction="none"),
    dict(divergence="forward_kl", reduction="mean", hard_weight=1.0),
    dict(divergence="jsd", beta=0.7, reduction="mean", no_target=True),
]


def _data():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(N, DS, generator=g, dtype=torch.float64)
    ws = torch.randn(V, DS, generator=g, dtype=torch.float64)
    bs = torch.randn(V, generator=g, dtype=torch.float64)
    xt = torch.randn(N, DT, generator=g, dtype=torch.float64)
    wt = torch.randn(V, DT, generator=g, dtype=torch.float64) * 3
    bt = torch.randn(V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=g)
    y[::4] = -100
    return xs, ws, bs, xt, wt, bt, y


def _split(kw):
    kw = dict(kw)
    no_target = kw.pop("no_target", False)
    return kw, no_target


def worker_distill(rank, world, bounds):
    import crossent.distributed as cd

    lo, hi = bounds[rank], bounds[rank + 1]
    xs, ws, bs, xt, wt, bt, y = _data()
    out = []
    for case in CASES:
        kw, no_target = _split(case)
        a = xs.clone().requires_grad_()
        w = ws[lo:hi].clone().requires_grad_()
        b = bs[lo:hi].clone().requires_grad_()
        loss = cd.linear_distillation_loss(
            a,
            w,
            xt,
            wt[lo:hi],
            None if no_target else y,
            local_student_bias=b,
            local_teacher_bias=bt[lo:hi],
            workspace_bytes=4096,
            **kw,
        )
        go = torch.linspace(0.5, 1.5, loss.numel(), dtype=torch.float64).reshape(loss.shape)
        loss.backward(go)
        # plain lists: tensors in a queue would live in shared memory that dies with the rank
        out.append([t.tolist() for t in (loss.detach(), a.grad, w.grad, b.grad)])
    return out


def _check(bounds):
    world = len(bounds) - 1
    results = run_group(world, worker_distill, bounds)
    xs, ws, bs, xt, wt, bt, y = _data()
    for i, case in enumerate(CASES):
        kw, no_target = _split(case)
        a, w, b = (t.clone().requires_grad_() for t in (xs, ws, bs))
        want = crossent.distillation_loss(
            F.linear(a, w, b), F.linear(xt, wt, bt), None if no_target else y, **kw
        )
        go = torch.linspace(0.5, 1.5, want.numel(), dtype=torch.float64).reshape(want.shape)
        want.backward(go)
        for rank in range(world):
            lo, hi = bounds[rank], bounds[rank + 1]
            loss, da, dw, db = (torch.tensor(t, dtype=torch.float64) for t in results[rank][i])
            msg = f"rank {rank}/{world}, {case}"
            torch.testing.assert_close(loss, want.detach(), **TOL, msg=msg)
            torch.testing.assert_close(da, a.grad, **TOL, msg=msg)
            torch.testing.assert_close(dw, w.grad[lo:hi], **TOL, msg=msg)
            torch.testing.assert_close(db, b.grad[lo:hi], **TOL, msg=msg)


def test_two_ranks_uneven_shards_match_one_process():
    _check([0, 8, V])


def test_four_ranks_uneven_shards_match_one_process():
    _check([0, 3, 11, 12, V])


def test_three_all_reduces_of_o_n_values_in_the_forward(monkeypatch):
    """Counted with a one-rank group in this process: 3 forward collectives (sizes as documented), plus
    the input gradient's when the input requires one."""
    import torch.distributed as dist

    import crossent.distributed._distill as mod

    calls = []
    real = mod.all_reduce

    def counting(tensor, op, group):
        calls.append(("MAX" if op == dist.ReduceOp.MAX else "SUM", tensor.numel()))
        return real(tensor, op, group)

    monkeypatch.setattr(mod, "all_reduce", counting)
    xs, ws, bs, xt, wt, bt, y = _data()
    port = _free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        import crossent.distributed as cd

        cd.linear_distillation_loss(xs, ws, xt, wt, y, divergence="jsd", hard_weight=0.5)
        assert calls == [("MAX", 3 * N + 1), ("SUM", 3 * N), ("SUM", 3 * N)], calls
        calls.clear()
        cd.linear_distillation_loss(xs.requires_grad_(), ws, xt, wt, y, divergence="forward_kl")
        assert [c[1] for c in calls] == [2 * N + 1, 2 * N, N, N * DS], calls
    finally:
        dist.destroy_process_group()
