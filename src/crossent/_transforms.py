"""Whether a function transform is active: ``torch.func`` (grad, vmap, jvp, jacfwd, …) or forward AD.

The kernel backends and the eager backend's ``autograd.Function`` are built for plain autograd (a
backward pass). Under a transform the eager backend instead runs the NumPy reference's forward as plain,
differentiable torch ops, which every transform understands; these two questions pick that path. Both
are cheap (a C call and a module attribute) and are answered ``False`` while ``torch.compile`` traces.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad


def transforms_active() -> bool:
    """True inside ``torch.func`` transforms or a ``torch.autograd.forward_ad.dual_level()``."""
    if torch.compiler.is_compiling():
        return False
    return bool(torch._C._are_functorch_transforms_active()) or _forward_ad._current_level >= 0


def vmap_active() -> bool:
    """True inside ``torch.func.vmap`` (values are batched: checks that read them must not run)."""
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


__all__ = ["transforms_active", "vmap_active"]
