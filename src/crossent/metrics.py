"""Alias of :mod:`crossent.diagnostics.metrics` (the name the diagnostics issue uses)."""

from .diagnostics.metrics import *  # noqa: F403
