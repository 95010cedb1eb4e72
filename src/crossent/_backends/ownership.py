"""Which tensors crossent made itself: layout copies that no caller holds.

A backend that keeps only a *weak* reference to its inputs for a later recompute (the Triton losses,
:mod:`crossent._backends.triton.handover`) relies on the caller holding them. That fails for a copy made
inside crossent (rows of (N, C, d…) logits moved to (M, C), a ``contiguous()`` of strided rows): nobody
else holds it, so it dies when the call returns. Whoever makes such a copy says so explicitly — a bit of
``held`` (:data:`HOLD_INPUT`, :data:`HOLD_TARGET`) passed down with the tensors and into the custom op —
and the backend holds those tensors strongly instead (what the eager backend, which saves its input,
always does).
"""

from __future__ import annotations

import torch

from .._transforms import transforms_active

HOLD_INPUT = 1  # the logits (rows) are crossent's own copy
HOLD_TARGET = 2  # the probability targets (rows) are crossent's own copy


def is_copy(t: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether ``t`` is a copy of ``source`` (shares no memory with it).

    False while ``torch.compile`` traces (storage identity is not traceable; second derivatives of
    compiled regions do not exist in torch 2.13, so nothing there needs it) and for tensor subclasses
    (no storage to compare; they never reach the kernels).
    """
    if (
        torch.compiler.is_compiling()
        or type(t) is not torch.Tensor
        or type(source) is not torch.Tensor
    ):
        return False
    if transforms_active():
        return (
            False  # functorch's wrappers have no storage; under a transform no kernel runs anyway
        )
    return t is not source and t.untyped_storage().data_ptr() != source.untyped_storage().data_ptr()


def held_bits(x: torch.Tensor, input: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> int:
    """The ``held`` bits of rows ``x``, ``t`` laid out from the caller's ``input``, ``target``."""
    return (HOLD_INPUT if is_copy(x, input) else 0) | (HOLD_TARGET if is_copy(t, target) else 0)


def memory_owner(x: torch.Tensor) -> torch.Tensor | None:
    """The tensor whose memory is exactly the contiguous logits ``x`` (``x`` or its base), or None.

    ``inplace=True`` writes the gradient there only when it owns its memory (a slice of a larger tensor
    gets a new buffer instead).
    """
    root = x._base if x._base is not None else x
    same = (
        x.is_contiguous()
        and root.is_contiguous()
        and root.numel() == x.numel()
        and root.data_ptr() == x.data_ptr()
        and root.dtype == x.dtype
    )
    return root if same else None
