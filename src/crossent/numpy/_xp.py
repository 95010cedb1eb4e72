"""Array-namespace plumbing: the reference math is written once against the Python array API.

`crossent.numpy` functions take NumPy arrays; because they only use the array API (through
`array_api_compat`), the same row-level functions also run on PyTorch tensors, which is how the eager
PyTorch backend reuses them instead of re-writing the math.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

Array = Any


def namespace(*arrays: object) -> Any:
    """The array-API namespace of the given arrays (None entries are skipped).

    PyTorch tensors (the hot path of every call of the PyTorch API) take a short cut to the namespace
    ``array_api_compat.array_namespace`` returns for them; nothing is cached (a global written during a
    call would be a side effect ``torch.compile`` cannot trace).
    """
    present = tuple(a for a in arrays if a is not None)
    if present and all(array_api_compat.is_torch_array(a) for a in present):
        import array_api_compat.torch as torch_namespace

        return torch_namespace
    return array_api_compat.array_namespace(*present)


def is_floating(xp: Any, x: Array) -> bool:
    return bool(xp.isdtype(x.dtype, "real floating"))


def is_integer(xp: Any, x: Array) -> bool:
    return bool(xp.isdtype(x.dtype, "integral"))


def compute_dtype(xp: Any, x: Array) -> Any:
    """The dtype the math runs in: the input's, but never below float32 (half inputs are upcast)."""
    if x.dtype in (xp.float32, xp.float64):
        return x.dtype
    return xp.float32


def one_hot(xp: Any, index: Array, num_classes: int) -> Array:
    """Boolean (M, C) mask with True at ``[i, index[i]]`` (indices outside [0, C) give an all-False row)."""
    classes = xp.arange(num_classes, dtype=index.dtype, device=array_api_compat.device(index))
    return xp.reshape(index, (-1, 1)) == xp.reshape(classes, (1, -1))


def take_rows(xp: Any, x: Array, index: Array) -> Array:
    """``x[i, index[i]]`` for a 2-D ``x`` and 1-D integer ``index`` (all indices in range)."""
    return xp.take_along_axis(x, xp.reshape(index, (-1, 1)), axis=-1)[:, 0]


def device(x: Array) -> Any:
    return array_api_compat.device(x)


def writable(a: Array) -> Array:
    """``a`` itself, for the caller to update in place, or a copy when autograd may have saved it.

    The eager PyTorch backend differentiates the reference's functions (double backward, gradients with
    respect to targets): a tensor that requires grad may be saved by the op that made it (``exp`` saves its
    output), so it is copied before an in-place update. NumPy arrays and tensors outside autograd are
    returned as they are.
    """
    return a.clone() if getattr(a, "requires_grad", False) else a
