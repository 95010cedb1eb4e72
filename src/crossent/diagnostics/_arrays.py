"""The boundary of the diagnostics: NumPy arrays and torch tensors in, float64 / int64 NumPy arrays out.

Torch is never imported here: a tensor is recognised by its type's module, detached and copied to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_torch_tensor(value: object) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def to_numpy(value: Any) -> np.ndarray:
    """``value`` as a NumPy array (a torch tensor is detached and moved to the CPU; bf16/fp16 → float32)."""
    if _is_torch_tensor(value):
        t = value.detach().cpu()
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()
        return t.numpy()
    return np.asarray(value)


def as_logits(logits: Any, name: str = "logits") -> np.ndarray:
    """(N, C) float64 logits; raises ``ValueError`` naming the argument for any other shape."""
    x = to_numpy(logits)
    if x.ndim != 2:
        raise ValueError(f"argument {name!r} must have shape (N, C), got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"argument {name!r} must hold floating-point logits, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def as_labels(target: Any, n: int, num_classes: int, name: str = "target") -> np.ndarray:
    """(N,) int64 class indices in [0, C); raises ``ValueError``/``IndexError`` naming the argument."""
    y = to_numpy(target)
    if y.shape != (n,):
        raise ValueError(f"argument {name!r} must have shape ({n},), got shape {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"argument {name!r} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if n and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0]
        raise IndexError(
            f"argument {name!r} holds class index {int(bad)}, outside [0, {num_classes})"
        )
    return y


def logits_and_labels(logits: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    x = as_logits(logits)
    return x, as_labels(target, x.shape[0], x.shape[1])
