"""Argument checks of the JAX front end: static options, array arguments, dtypes and target bounds.

Options (``reduction``, ``ignore_index``, ``label_smoothing``, ``gamma``, …) decide the shape of the
computation, so they must be Python values when the function is traced: a traced value gets an error that
names the argument and says how to keep it static. The meaning of each option, and its range, is
:mod:`crossent._contract`'s.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._contract import (
    CEOptions,
    CrossentTypeError,
    ce_options,
    check_target_bounds,
    check_target_dtypes,
)

Array = jax.Array


def is_traced(value: object) -> bool:
    """True for a value JAX is tracing (under ``jit``, ``grad``, ``vmap``…): its contents are unknown."""
    return isinstance(value, jax.core.Tracer)


def static(name: str, value: Any) -> Any:
    """``value`` as a Python scalar; a traced or non-scalar array raises a TypeError naming ``name``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if is_traced(value):
        raise CrossentTypeError(
            f"argument '{name}' must be a Python value known when the function is traced, got a traced "
            f"array {value!r}; close over it or list it in jax.jit's static_argnames"
        )
    if hasattr(value, "shape") and tuple(value.shape) == ():
        return value.item()
    raise CrossentTypeError(f"argument '{name}' must be a Python scalar, got {value!r}")


def options(
    ignore_index: Any = -100,
    label_smoothing: Any = 0.0,
    z_loss: Any = 0.0,
    softcap: Any = None,
    reduction: Any = "mean",
) -> CEOptions:
    """The validated, hashable options of a categorical loss (ranges: :func:`crossent._contract.ce_options`)."""
    return ce_options(
        static("ignore_index", ignore_index),
        static("label_smoothing", label_smoothing),
        static("z_loss", z_loss),
        static("softcap", softcap),
        static("reduction", reduction),
    )


def array(name: str, value: Any) -> Array:
    """``value`` as a JAX array (NumPy arrays and Python numbers are converted)."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic, int, float)) and not isinstance(
        value, bool
    ):
        return jnp.asarray(value)
    raise CrossentTypeError(
        f"argument '{name}' must be a JAX or NumPy array, got {type(value).__name__}"
    )


def optional_array(name: str, value: Any) -> Array | None:
    """``value`` as a JAX array, or None."""
    return None if value is None else array(name, value)


def compute_dtype(x: Array) -> Any:
    """The dtype the math runs in: float64 or float32 (half-precision inputs compute in float32)."""
    return x.dtype if x.dtype in (jnp.float32, jnp.float64) else jnp.dtype(jnp.float32)


def check_floating(name: str, x: Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise CrossentTypeError(
            f"argument '{name}' must be a floating-point array, got dtype {x.dtype}"
        )


def check_targets(input: Array, target: Array, layout: Any, ignore_index: int) -> None:
    """Dtypes of the logits and targets; index targets in [0, C) when their values are known (not traced).

    Under ``jax.jit`` the targets' values are unknown when the function is traced, so an out-of-range
    index cannot raise there; its row then has no target class (see the docs).
    """
    check_target_dtypes(jnp, input, target, layout, strict_index_dtype=False)
    if not layout.prob_target and not is_traced(target):
        rows = np.reshape(
            np.asarray(target), (-1,)
        )  # concrete: checked on the host, outside any trace
        check_target_bounds(np, rows, layout.num_classes, ignore_index)


def denominator(normalize_by: Any, reduction: str, like: Array) -> Array | None:
    """``normalize_by`` (a number or a 0-d array, may be traced) as the mean's denominator, or None."""
    if normalize_by is None:
        return None
    if reduction != "mean":
        from .._contract import CrossentValueError

        raise CrossentValueError(
            "argument 'normalize_by' replaces the mean's denominator; it needs reduction='mean', "
            f"got reduction={reduction!r}"
        )
    value = jnp.asarray(normalize_by)
    if value.shape not in ((), (1,)):
        raise CrossentTypeError(
            f"argument 'normalize_by' must be a number or a 0-d array, got shape {value.shape}"
        )
    return jnp.reshape(value, ()).astype(like.dtype)
