"""Tolerances per dtype and small helpers that turn NumPy oracles into torch tensors."""

from __future__ import annotations

import numpy as np
import torch

# float64: agreement to a few ulps of the result; float32: our target of 3e-5 relative.
TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=3e-5, atol=3e-6),
}


def t64(a: np.ndarray | None) -> torch.Tensor | None:
    if a is None:
        return None
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(a.astype(np.float64))
