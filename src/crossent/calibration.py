"""Alias of :mod:`crossent.diagnostics.calibration` (the name the diagnostics issue uses)."""

from .diagnostics.calibration import *  # noqa: F403
