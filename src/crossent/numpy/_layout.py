"""Moving the class axis last and flattening, and back: (C), (N, C), (N, C, d1..dk) ↔ (M, C) rows."""

from __future__ import annotations

from .._contract import CELayout
from ._xp import Array, namespace


def to_rows(x: Array, layout: CELayout) -> Array:
    """(…, C, …) → (M, C) with the class axis last. A view where the memory layout allows it."""
    xp = namespace(x)
    if layout.class_dim == 0:
        return xp.reshape(x, (1, layout.num_classes))
    if len(layout.shape) > 2:
        x = xp.moveaxis(x, 1, -1)
    return xp.reshape(x, (layout.rows, layout.num_classes))  # explicit M: C may be 0


def index_to_rows(target: Array) -> Array:
    """Index targets of any shape → (M,)."""
    xp = namespace(target)
    return xp.reshape(target, (-1,))


def from_rows(rows: Array, layout: CELayout) -> Array:
    """Inverse of :func:`to_rows` for an (M, C) array."""
    xp = namespace(rows)
    if layout.class_dim == 0:
        return xp.reshape(rows, (layout.num_classes,))
    if len(layout.shape) > 2:
        moved = layout.loss_shape[:1] + layout.loss_shape[1:] + (layout.num_classes,)
        return xp.moveaxis(xp.reshape(rows, moved), -1, 1)
    return xp.reshape(rows, layout.shape)


def loss_from_rows(loss: Array, layout: CELayout) -> Array:
    """(M,) per-row losses → the per-element loss shape (input shape without the class axis)."""
    xp = namespace(loss)
    return xp.reshape(loss, layout.loss_shape)
