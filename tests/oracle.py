"""Tolerances per dtype and small helpers that turn NumPy oracles into torch tensors."""

from __future__ import annotations

import numpy as np
import torch

from crossent.testing import TOLERANCES

# the shared tolerances (crossent.testing), keyed by torch dtype for assert_close
TOL = {
    getattr(torch, name): dict(rtol=rtol, atol=atol) for name, (rtol, atol) in TOLERANCES.items()
}


def t64(a: np.ndarray | None) -> torch.Tensor | None:
    if a is None:
        return None
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(a.astype(np.float64))


def count_calls(monkeypatch, module, name):
    """Replace ``module.name`` by a wrapper that records each call; returns the (growing) list of calls."""
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


TOL64 = dict(rtol=1e-10, atol=1e-12)  # float64 end to end (the JAX tests against the reference)


def close64(actual, expected, **tol):
    """``np.testing.assert_allclose`` of array-likes (JAX arrays too), at :data:`TOL64` by default."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **(tol or TOL64))
