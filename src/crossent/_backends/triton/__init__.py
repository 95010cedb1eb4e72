"""The Triton backend: fused cross-entropy kernels for CUDA tensors (CPU tensors under TRITON_INTERPRET=1).

Importing this package imports Triton and defines the kernels and the ``crossent::triton_*`` custom ops;
it never touches CUDA (no device query, no compilation: kernels compile on their first launch).
Modules: :mod:`.tl_math` (jit helpers), :mod:`.ce` (kernels and launchers), :mod:`.configs` (block
sizes), :mod:`.rows` (what the categorical ops share), :mod:`.ops` (cross-entropy custom ops, autograd,
the entry point ``ce_impl``), :mod:`.focal` and :mod:`.focal_ops` (the softmax focal loss, entry point
``focal_impl``), :mod:`.binary` and :mod:`.binary_ops` (BCE with logits and sigmoid focal loss, entry
point ``binary_impl``), :mod:`.chunk` (the fused linear CE's chunk kernel), :mod:`.handover` (the autograd
those share: the forward's gradient handed over, retain_graph, create_graph). ``crossent._dispatch``
imports each entry point's module when a call first needs it; nothing registers itself.
"""
