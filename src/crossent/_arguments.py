"""Argument conversions of the PyTorch API that are not checks: torch's legacy spellings and 0-d tensors.

(Every check and message text lives in :mod:`crossent._contract`.)
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair, mapped onto ``reduction`` (with its warning)."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn(
        "size_average and reduce args will be deprecated, please use reduction='sum' instead.",
        UserWarning,
        stacklevel=3,
    )
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def int_option(value: Any) -> Any:
    """torch accepts a 0-d integer tensor for ``ignore_index``."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        return int(value)
    return value


def float_option(value: Any) -> Any:
    """torch accepts a 0-d tensor for ``label_smoothing``."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return float(value)
    return value


def denominator(
    normalize_by: torch.Tensor | float | None, default: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor | None:
    """The mean's denominator: ``normalize_by`` when given (a tensor stays on its device), else ``default``."""
    if normalize_by is None:
        return default
    if isinstance(normalize_by, torch.Tensor):
        return normalize_by.to(device=like.device, dtype=like.dtype).reshape(())
    return torch.tensor(float(normalize_by), dtype=like.dtype, device=like.device)
