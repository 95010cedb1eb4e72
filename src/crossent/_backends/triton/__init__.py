"""The Triton backend: fused cross-entropy kernels for CUDA tensors (CPU tensors under TRITON_INTERPRET=1).

Importing this package imports Triton and defines the kernels and the ``crossent::triton_*`` custom ops;
it never touches CUDA (no device query, no compilation: kernels compile on their first launch).
Modules: :mod:`.tl_math` (jit helpers), :mod:`.ce` (kernels and launchers), :mod:`.configs` (block
sizes), :mod:`.ops` (custom ops, autograd, the backend entry point ``ce_impl``), :mod:`.focal` and
:mod:`.focal_ops` (the softmax focal loss, reached through ``ce_impl``), :mod:`.handover` (the autograd
those and the binary losses share: the forward's gradient handed over, retain_graph, create_graph).
"""

from ... import _dispatch
from . import focal_ops  # noqa: F401  (registers the crossent::triton_focal ops at import)
from .ops import ce_impl

__all__ = ["ce_impl"]

_dispatch.register_ce("triton", ce_impl)
