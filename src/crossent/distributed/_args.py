"""Arguments of the vocab-parallel functions: local checks, the cross-rank validation, the static spec.

Local checks raise on the rank that got the bad argument (before any collective, so the others stop at
the group's timeout). The cross-rank validation (``validate=True``) compares every option, shape, dtype
and the target itself through one small MAX all-reduce (:func:`._comm.exchange_metadata`), so that ranks
that disagree all raise the same ``ValueError`` together and none runs ahead into a collective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._contract import (
    CEOptions,
    CrossentTypeError,
    CrossentValueError,
    ce_options,
    check_class_weight,
    check_prob_target_ignore_index,
    out_of_bounds,
)
from ._comm import METADATA_ENTRIES, exchange_metadata, group_rank

_DTYPE_CODES = {
    torch.float16: 1.0,
    torch.bfloat16: 2.0,
    torch.float32: 3.0,
    torch.float64: 4.0,
    torch.uint8: 5.0,
    torch.int64: 6.0,
}
_DTYPE_LEGEND = ", ".join(f"{int(v)} = {str(k)[6:]}" for k, v in _DTYPE_CODES.items())
_REDUCTION_CODES = {"none": 0.0, "sum": 1.0, "mean": 2.0}


@dataclass(frozen=True)
class VocabParallelSpec:
    """The static part of a call, carried through autograd as one object.

    Attributes:
        options: the validated loss options.
        group: the tensor-parallel process group (None: the default group).
        prob_target: True when the target holds this rank's shard of class probabilities.
        vocab_start: the global index of this rank's first class, or None to derive it on the device from
            the shard sizes that travel with the row maxima.
    """

    options: CEOptions
    group: Any
    prob_target: bool
    vocab_start: int | None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # float16/bfloat16/float32 are computed and accumulated in float32, float64 in float64.
    return torch.float64 if dtype == torch.float64 else torch.float32


def rows_layout(local_logits: torch.Tensor, target: torch.Tensor, options: CEOptions):
    """Flatten (..., V_local) logits and their target to rows. Returns (x2d, t, prob_target, lead)."""
    if not isinstance(local_logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise CrossentTypeError("arguments 'local_logits' and 'target' must be torch.Tensor")
    if local_logits.dim() < 1:
        raise CrossentValueError(
            "argument 'local_logits' must have a class dimension (shape (..., V_local)), got a 0-d tensor"
        )
    if not local_logits.is_floating_point():
        raise CrossentTypeError(
            f"argument 'local_logits' must be floating point, got dtype {local_logits.dtype}"
        )
    lead = tuple(local_logits.shape[:-1])
    v_local = local_logits.shape[-1]
    if v_local < 1:
        raise CrossentValueError(
            f"argument 'local_logits' must hold at least one class per rank, got shape {list(local_logits.shape)}"
        )
    prob_target = tuple(target.shape) == tuple(local_logits.shape)
    if prob_target:
        if not target.is_floating_point():
            raise CrossentTypeError(
                "Expected floating point type for target with class probabilities, got "
                f"{target.dtype} (argument 'target')"
            )
        check_prob_target_ignore_index(options.ignore_index)
        t = target.reshape(-1, v_local)
    else:
        if tuple(target.shape) != lead:
            raise CrossentValueError(
                f"argument 'target' must have shape {list(lead)} (class indices) or {list(local_logits.shape)}"
                f" (this rank's shard of class probabilities), got {list(target.shape)}"
            )
        if target.dtype not in (torch.int64, torch.uint8):
            raise CrossentTypeError(
                f"expected target dtype to be Long or Byte, but got {target.dtype} (argument 'target')"
            )
        t = target.reshape(-1)
    return local_logits.reshape(-1, v_local), t, prob_target, lead


def _checksums(t: torch.Tensor, prob_target: bool) -> list[float]:
    """Two exact integer checksums of an index target (identical targets ⇒ identical sums, any order)."""
    if prob_target or t.numel() == 0:
        return [0.0, 0.0]
    td = t.to(torch.float64)
    # (i mod 1024 + 1)·t stays below 2**53 for N·C < 8e12, so the float64 sums are exact
    pos = torch.arange(t.numel(), device=t.device, dtype=torch.float64).remainder(1024.0) + 1.0
    return [float(td.sum()), float((td * pos).sum())]


def validate_group(
    x: torch.Tensor,
    device: torch.device,
    t: torch.Tensor,
    lead: tuple[int, ...],
    weight: torch.Tensor | None,
    normalize_by: object,
    options: CEOptions,
    prob_target: bool,
    vocab_start: int | None,
    group: Any,
) -> tuple[int, int]:
    """Check that every rank called with the same shapes, dtypes, options and targets; return
    ``(vocab_start, num_classes)``. One MAX all-reduce of ``2K + 2P`` float64 and one host sync.

    ``x`` gives the rows, shard size and dtype of the logits (a ``meta`` tensor will do); ``device`` is
    where the collective runs.

    Every rank sees the same reduced vector, so all ranks raise the same error together.
    """
    entries = [
        ("local_logits", "number of rows (product of the leading dimensions)", x.shape[0]),
        ("local_logits", "number of dimensions", len(lead) + 1),
        ("local_logits", f"dtype, coded {_DTYPE_LEGEND}", _DTYPE_CODES.get(x.dtype, 0.0)),
        ("target", "kind (0 = class indices, 1 = shard of probabilities)", float(prob_target)),
        ("target", f"dtype, coded {_DTYPE_LEGEND}", _DTYPE_CODES.get(t.dtype, 0.0)),
        ("weight", "presence (0 = None, 1 = a shard)", float(weight is not None)),
        ("ignore_index", "value", options.ignore_index),
        ("reduction", "code (none 0, sum 1, mean 2)", _REDUCTION_CODES[options.reduction]),
        ("label_smoothing", "value", options.label_smoothing),
        ("z_loss", "value", options.z_loss),
        ("softcap", "value (-1 = None)", -1.0 if options.softcap is None else options.softcap),
        ("normalize_by", "presence (0 = None, 1 = given)", float(normalize_by is not None)),
        ("vocab_start", "presence (0 = None, 1 = given)", float(vocab_start is not None)),
    ]
    sums = _checksums(t, prob_target)
    entries += [
        ("target", "checksum of the class indices", sums[0]),
        ("target", "position-weighted checksum of the class indices", sums[1]),
    ]
    assert len(entries) == METADATA_ENTRIES
    per_rank = [x.shape[1], -1.0 if vocab_start is None else vocab_start]
    lo, hi, table = exchange_metadata([e[2] for e in entries], per_rank, group, device)
    for (name, what, _), a, b in zip(entries, lo, hi):
        if a != b:
            raise CrossentValueError(
                f"ranks of the process group disagree on argument '{name}' ({what}): values range from "
                f"{a:g} to {b:g}; every tensor-parallel rank must pass the same options, the same target "
                "and logits of the same shape and dtype"
            )
    sizes = [int(row[0]) for row in table]
    starts = [0]
    for s in sizes[:-1]:
        starts.append(starts[-1] + s)
    if vocab_start is not None:
        for r, (row, expected) in enumerate(zip(table, starts)):
            if int(row[1]) != expected:
                raise CrossentValueError(
                    f"argument 'vocab_start' of rank {r} is {int(row[1])}, but the shards of the ranks "
                    f"before it hold {expected} classes (shard sizes {sizes}); shards must be contiguous "
                    "and in rank order"
                )
    num_classes = sum(sizes)
    if not prob_target and t.numel():
        tl = t.to(torch.int64)
        bad = ((tl < 0) | (tl >= num_classes)) & (tl != options.ignore_index)
        if bool(bad.any()):
            raise out_of_bounds(int(tl[bad][0]))
    return starts[group_rank(group)], num_classes


def prepare_call(
    local_logits,
    device,
    target,
    *,
    group,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    softcap,
    normalize_by,
    vocab_start,
    validate,
):
    """Validate the arguments (locally, then across the group when ``validate``); shared by both public
    functions. ``local_logits`` may be a ``meta`` tensor standing in for logits that are never formed.

    Returns ``(logits as rows, target as rows, leading shape, normalize_by as a 0-d tensor or None, spec)``.
    """
    options = ce_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
    x, t, prob_target, lead = rows_layout(local_logits, target, options)
    check_class_weight(weight, x.shape[1])
    if normalize_by is not None:
        if options.reduction != "mean":
            raise CrossentValueError(
                f"argument 'normalize_by' replaces the mean's denominator; it needs reduction='mean', "
                f"got reduction={options.reduction!r}"
            )
        if not isinstance(normalize_by, torch.Tensor):
            normalize_by = torch.tensor(float(normalize_by), dtype=torch.float64, device=device)
        elif normalize_by.numel() != 1:
            raise CrossentValueError(
                f"argument 'normalize_by' must hold one number, got shape {list(normalize_by.shape)}"
            )
        normalize_by = normalize_by.reshape(())
    if vocab_start is not None:
        vocab_start = int(vocab_start)
        if vocab_start < 0:
            raise CrossentValueError(f"argument 'vocab_start' must be >= 0, got {vocab_start}")
    if validate:
        vocab_start, _ = validate_group(
            x, device, t, lead, weight, normalize_by, options, prob_target, vocab_start, group
        )
    return x, t, lead, normalize_by, VocabParallelSpec(options, group, prob_target, vocab_start)
