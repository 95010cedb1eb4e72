"""crossent: the cross-entropy loss family, exact, stable, memory-lean and fast.

``crossent.numpy`` is the NumPy reference (no PyTorch needed). The PyTorch API (``crossent.cross_entropy``
and friends, ``crossent.nn``) is loaded on first use, so importing ``crossent.numpy`` never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_TORCH_API = {
    "cross_entropy": "crossent.functional",
    "nll_loss": "crossent.functional",
    "binary_cross_entropy": "crossent.functional",
    "binary_cross_entropy_with_logits": "crossent.functional",
    "kl_div": "crossent.functional",
    "focal_loss": "crossent.functional",
    "sigmoid_focal_loss": "crossent.functional",
    "linear_cross_entropy": "crossent.linear",
    "entropy": "crossent.functional",
    "distillation_loss": "crossent.distillation",
    "linear_distillation_loss": "crossent.distillation",
    "nn": "crossent.nn",
    "functional": "crossent.functional",
}

__all__ = ["__version__", *_TORCH_API]


def __getattr__(name: str) -> Any:
    module = _TORCH_API.get(name)
    if module is None:
        raise AttributeError(f"module 'crossent' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.endswith(name) else getattr(mod, name)
    globals()[name] = value
    return value
