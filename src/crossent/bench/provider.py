"""The provider interface of ``crossent bench``: what a provider is, what its runner returns.

(The providers themselves: :mod:`.providers` for crossent and the PyTorch peers, :mod:`.jax_providers`.)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .cases import Case, Inputs

Result = tuple[torch.Tensor, tuple[torch.Tensor, ...]]


@dataclass
class Runner:
    call: Callable[[], Result]
    setup: Callable[[], None] | None = None
    detail: str = ""  # shown beside the provider, e.g. the backend "auto" resolved to


def grads(loss: torch.Tensor, leaves: tuple[torch.Tensor, ...]) -> Result:
    return loss.detach(), tuple(torch.autograd.grad(loss, leaves))


def has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Provider:
    """Base class. ``kinds``: "ce" and/or "linear"; ``all_options``: runs the every-option variants."""

    name: str
    description: str
    kinds: tuple[str, ...] = ("ce", "linear")
    all_options: bool = False
    slow_to_prepare: bool = (
        False  # compiles on its first call: left out of --quick unless asked for
    )
    approximate_grad: bool = (
        False  # by design (e.g. CCE's gradient filtering): checked more loosely
    )
    devices: tuple[str, ...] = ("cpu", "cuda")
    notes: dict[str, str] = field(default_factory=dict)

    def available(self, device: str) -> tuple[bool, str]:
        if device not in self.devices:
            return False, self.notes.get(device, f"does not run on {device}")
        return True, ""

    def supports(self, case: Case) -> tuple[bool, str]:
        if case.kind not in self.kinds:
            what = {"ce": "logits cross-entropy", "linear": "fused linear cross-entropy"}
            return False, f"no {what.get(case.kind, case.kind + ' loss')}"
        if not case.options.plain and not self.all_options:
            return False, "every-option variants run only where the whole option set is supported"
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Runner:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
# crossent
# ---------------------------------------------------------------------------------------------------
