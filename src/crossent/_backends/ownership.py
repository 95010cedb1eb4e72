"""Which tensors crossent made itself: layout copies that no caller holds.

A backend that keeps only a *weak* reference to its inputs for a later recompute (the Triton losses,
:mod:`crossent._backends.triton.handover`) relies on the caller holding them. That fails for a copy made
inside crossent (rows of (N, C, d…) logits moved to (M, C), a ``contiguous()`` of strided rows): nobody
else holds it, so it dies when the call returns. The code that makes such a copy marks it here, and the
backend holds marked tensors strongly instead (what the eager backend, which saves its input, always does).

The registry maps ``id(t)`` to a weak reference to ``t`` (dropped when ``t`` dies); it is plain Python
bookkeeping, so it is skipped while ``torch.compile`` traces (second derivatives of compiled regions do not
exist in torch 2.13, so nothing there needs it).
"""

from __future__ import annotations

import weakref

import torch

from .._transforms import transforms_active

_PRIVATE: dict[int, weakref.ref] = {}


def mark_private(t: torch.Tensor) -> torch.Tensor:
    """Record that ``t`` is a copy only crossent holds; returns ``t``."""
    if not torch.compiler.is_compiling():
        key = id(t)

        def forget(_ref: object, key: int = key) -> None:
            _PRIVATE.pop(key, None)

        _PRIVATE[key] = weakref.ref(t, forget)
    return t


def is_private(t: torch.Tensor) -> bool:
    """Whether ``t`` was marked by :func:`mark_private` (and is still that tensor)."""
    ref = _PRIVATE.get(id(t))
    return ref is not None and ref() is t


def mark_if_copy(t: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Mark ``t`` when it does not share memory with ``source`` (a copy made from it); returns ``t``."""
    if torch.compiler.is_compiling() or type(t) is not torch.Tensor or type(source) is not torch.Tensor:
        return t  # tracing, or a tensor subclass (no storage to compare; it never reaches the kernels)
    if transforms_active():
        return t  # functorch's wrappers have no storage; under a transform no kernel runs anyway
    if t is not source and t.untyped_storage().data_ptr() != source.untyped_storage().data_ptr():
        mark_private(t)
    return t
