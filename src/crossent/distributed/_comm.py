"""The collective steps of vocab-parallel cross-entropy, each one short named function.

Every collective of :mod:`crossent.distributed` goes through :func:`all_reduce` here, so the
communication volume can be measured by wrapping one function (see ``tests/test_distributed.py``) and
there is exactly one place that talks to ``torch.distributed``. Collectives run on the process group's
own backend (gloo on the CPU, NCCL on CUDA) and honour the group's timeout: a rank that never arrives
makes the others raise (``DistBackendError``/``RuntimeError``) instead of hanging.

Steps of a forward (names as in the code):

0. :func:`exchange_metadata` — only with ``validate=True``: one MAX all-reduce of a fixed-size float64
   vector ``[meta, -meta, sizes]`` (``2K + P`` elements), so every rank sees the same minimum and maximum
   of every option and shape and raises the same ``ValueError`` (no rank runs ahead into a collective
   the others skip).
1. :func:`global_row_max` — one MAX all-reduce of ``[row maxima (N), shard sizes (P)]``.
2. :func:`global_row_sums` — one SUM all-reduce of the packed per-row partial sums ``(N·k + s)``.

The backward has no collective (the linear variant has one, see :mod:`._linear`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce",
    "exchange_metadata",
    "global_row_max",
    "global_row_sums",
    "group_rank",
    "group_size",
]


def group_rank(group: Any) -> int:
    return dist.get_rank(group)


def group_size(group: Any) -> int:
    return dist.get_world_size(group)


def all_reduce(tensor: torch.Tensor, op: Any, group: Any) -> torch.Tensor:
    """In-place all-reduce of a contiguous tensor (the only call into ``torch.distributed``)."""
    dist.all_reduce(tensor, op=op, group=group)
    return tensor


def exchange_metadata(
    meta: Sequence[float], per_rank: Sequence[float], group: Any, device: torch.device
) -> tuple[list[float], list[float], list[list[float]]]:
    """Step 0 (``validate=True``): every rank learns the min and max of each metadata entry and every
    rank's ``per_rank`` values (shard size, given vocab_start).

    One MAX all-reduce of ``[meta, -meta, per_rank of rank 0, …, per_rank of rank P-1]`` in float64
    (exact for integers below 2**53): ``2K + P·R`` elements. Returns ``(lo, hi, table)`` as Python lists,
    ``table[r]`` being rank r's ``per_rank``. This is the one host synchronisation of the validated path.
    """
    world, rank = group_size(group), group_rank(group)
    k, r = len(meta), len(per_rank)
    buf = torch.full((2 * k + world * r,), -math.inf, dtype=torch.float64)
    vals = torch.tensor([float(v) for v in meta], dtype=torch.float64)
    buf[:k] = vals
    buf[k : 2 * k] = -vals
    start = 2 * k + rank * r
    buf[start : start + r] = torch.tensor([float(v) for v in per_rank], dtype=torch.float64)
    out = all_reduce(buf.to(device), dist.ReduceOp.MAX, group).cpu().tolist()
    hi = out[:k]
    lo = [-v for v in out[k : 2 * k]]
    table = [out[2 * k + i * r : 2 * k + (i + 1) * r] for i in range(world)]
    return lo, hi, table


def global_row_max(
    local_max: torch.Tensor, local_size: int, group: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: the global maximum of each row and every rank's shard size, in one MAX all-reduce.

    ``local_max`` is (N,) in the compute dtype (float32 or float64; shard sizes are exact in it below
    2**24 and 2**53). Returns ``(row_max (N,), sizes (P,))``, both on the device, no host sync.
    """
    world, rank = group_size(group), group_rank(group)
    n = local_max.shape[0]
    buf = torch.full((n + world,), -math.inf, dtype=local_max.dtype, device=local_max.device)
    buf[:n] = local_max
    buf[n + rank] = float(local_size)
    all_reduce(buf, dist.ReduceOp.MAX, group)
    return buf[:n], buf[n:]


def global_row_sums(
    columns: Sequence[torch.Tensor], scalars: Sequence[torch.Tensor], group: Any
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Step 2: sum the per-row partial sums (each (N,)) and a few per-call scalars over the group.

    Packs them into one contiguous buffer ``[columns as (k, N) | scalars]``, one SUM all-reduce, and
    returns views in the same order.
    """
    k = len(columns)
    n = columns[0].shape[0] if k else 0
    parts = [c.reshape(-1) for c in columns] + [s.reshape(1) for s in scalars]
    buf = torch.cat(parts) if parts else columns[0].new_zeros(0)
    all_reduce(buf, dist.ReduceOp.SUM, group)
    cols = [buf[i * n : (i + 1) * n] for i in range(k)]
    scal = [buf[k * n + j] for j in range(len(scalars))]
    return cols, scal


# Number of metadata entries compared by the validation step (see ``_args.validate_group``).
METADATA_ENTRIES = 15


def communication_volume(
    rows: int,
    world_size: int,
    *,
    prob_target: bool = False,
    weight: bool = False,
    label_smoothing: bool = False,
    validate: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict[str, int]:
    """Elements and bytes one rank passes to ``all_reduce`` in one forward of
    :func:`crossent.distributed.cross_entropy` (the backward passes none).

    * MAX: ``N + P`` (row maxima, shard sizes), in the compute dtype (float32, or float64 for float64).
    * SUM: ``k·N + s`` with ``k = 2 + [weight] + [ε > 0]`` for index targets (S, ẑ_y, w_y, Σ) and
      ``k = 3`` for probability targets (S, A, B); ``s = [weight and ε > 0]`` (W). (The chunked
      ``linear_cross_entropy`` packs one more column, Σ, for probability targets with ε > 0.)
    * validation (``validate=True``): ``2K + 2P`` float64, K = :data:`METADATA_ENTRIES`.

    A ring all-reduce sends about ``2(P−1)/P`` times each buffer per rank. For comparison, gathering
    the logits would move ``N·C`` elements.
    """
    k = 3 if prob_target else 2 + int(weight) + int(label_smoothing)
    s = int(weight and label_smoothing)
    item = 8 if dtype == torch.float64 else 4
    out = {
        "max_elements": rows + world_size,
        "sum_elements": k * rows + s,
        "validate_elements": (2 * METADATA_ENTRIES + 2 * world_size) if validate else 0,
    }
    out["bytes"] = item * (out["max_elements"] + out["sum_elements"]) + 8 * out["validate_elements"]
    return out
