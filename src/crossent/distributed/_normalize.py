"""The mean's denominator of a whole optimizer step, for ``normalize_by``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from .._contract import check_ignore_index
from ._comm import all_reduce


def global_denominator(
    targets: torch.Tensor | Sequence[torch.Tensor],
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    group: Any = None,
) -> torch.Tensor:
    r"""D = Σ w[y] over the non-ignored index targets of every micro-batch on every rank of ``group``.

    The index-target mean's denominator of the whole step (the count of non-ignored tokens without
    ``weight``), as a 0-d float64 tensor on the targets' device: one SUM all-reduce of one element, no
    host sync. Pass it (divided by the data-parallel size when the gradients are averaged, see
    :mod:`crossent.distributed`) as ``normalize_by``.

    Args:
        targets: one index-target tensor or a sequence of them (the step's micro-batches on this rank).
        weight: the full (C,) class weights, or None.
        ignore_index: the target value that is not counted.
        group: the data-parallel group to sum over; None sums over the default group.
    """
    ignore_index = check_ignore_index(ignore_index)
    if isinstance(targets, torch.Tensor):
        targets = [targets]
    total = None
    for t in targets:
        valid = t != ignore_index
        if weight is None:
            part = valid.sum(dtype=torch.float64)
        else:
            safe = torch.where(valid, t.to(torch.int64), torch.zeros_like(t, dtype=torch.int64))
            part = torch.where(valid, weight.to(torch.float64)[safe], 0.0).sum()
        total = part if total is None else total + part
    if total is None:
        raise ValueError("argument 'targets' must hold at least one tensor")
    total = total.reshape(1).clone()
    all_reduce(total, dist.ReduceOp.SUM, group)
    return total.reshape(())
