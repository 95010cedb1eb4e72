"""The one option grid of the categorical losses: :mod:`crossent.testing` (shared with ``crossent check``)."""

from crossent.testing import (
    IGNORE,
    REDUCTIONS,
    SHAPES,
    SMOOTHING,
    WEIGHTED,
    Case,
    cases,
    make_inputs,
)

__all__ = [
    "IGNORE",
    "REDUCTIONS",
    "SHAPES",
    "SMOOTHING",
    "WEIGHTED",
    "Case",
    "cases",
    "make_inputs",
]
