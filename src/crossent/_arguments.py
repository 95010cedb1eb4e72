"""Argument conversions of the PyTorch API that are not checks: torch's legacy spellings and 0-d tensors.

(Every check and message text lives in :mod:`crossent._contract`.)
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


def legacy_reduction(
    size_average: bool | None, reduce: bool | None, reduction: str, *, renamed: bool = True
) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair, mapped onto ``reduction`` (with its warning).

    With ``renamed`` (the functions; modules keep the spelling and map it when called), also torch's old
    spelling ``"elementwise_mean"`` → ``"mean"``, with torch's warning.
    """
    if size_average is None and reduce is None:
        return renamed_reduction(reduction, stacklevel=4) if renamed else reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    result = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{result}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return result


def renamed_reduction(reduction: Any, *, stacklevel: int = 3) -> Any:
    """torch still takes ``reduction="elementwise_mean"`` for ``"mean"``, with a deprecation warning."""
    if isinstance(reduction, str) and reduction == "elementwise_mean":
        warnings.warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            UserWarning,
            stacklevel=stacklevel,
        )
        return "mean"
    return reduction


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
