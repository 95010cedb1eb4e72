"""Integrations of crossent's losses into other libraries' training code.

Each integration is its own module, imported explicitly (``import crossent.integrations.transformers``);
importing this package imports none of them, and an integration imports its library only when called.
"""

from __future__ import annotations

__all__: list[str] = []
