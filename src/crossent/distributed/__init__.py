r"""Vocab-parallel cross-entropy over ``torch.distributed`` (tensor parallelism over the classes).

Each rank of a process group holds a contiguous slice of the vocabulary (slices may be uneven): its
(..., V_local) logits, or its (V_local, H) rows of the classifier. :func:`cross_entropy` and
:func:`linear_cross_entropy` return, on every rank, the loss of the single-process
:func:`crossent.numpy.cross_entropy` on the concatenated vocabulary — class weights (sharded),
``ignore_index``, label smoothing over all C classes, z-loss of the global log-sum-exp, softcap, index and
probability targets, every reduction — and give each rank the gradient of its own shard.

Communication (one forward; N = number of rows, P = ranks, b = 4 bytes, 8 for float64 logits):

* one MAX all-reduce of ``N + P`` elements (row maxima and shard sizes);
* one SUM all-reduce of ``k·N + s`` elements: k = 2–4 per-row partial sums (sum-exp, target logit,
  target weight, smoothing sum) and s ≤ 1 scalar (:func:`communication_volume` gives the exact count);
* with ``validate=True`` (the default) one more MAX all-reduce of ``2·15 + 2P`` float64 and a host sync,
  which make disagreeing ranks raise a ``ValueError`` naming the argument; ``validate=False`` runs the
  two collectives above only and never syncs with the host.

So about ``b·(k + 1)·N`` bytes per rank per step (≤ 20·N for float32 logits), independent of the vocabulary
size; the backward of :func:`cross_entropy` communicates nothing, that of :func:`linear_cross_entropy` one
SUM all-reduce of the input's ``N·H`` gradient (as Megatron-LM's tensor-parallel linear layers). Every
collective uses the group's timeout (``init_process_group(timeout=...)``): a rank that fails before a
collective makes the others raise instead of hanging.

Normalising over data-parallel ranks and gradient accumulation. The mean of a micro-batch divides by that
micro-batch's D (its count of non-ignored tokens, or Σ w[y]); averaging such means over micro-batches and
ranks weighs tokens unequally (the "gradient accumulation bug"). Instead divide every micro-batch's sum by
the D of the whole step::

    dp_size = torch.distributed.get_world_size(dp_group)
    D = crossent.distributed.global_denominator(micro_targets, group=dp_group)  # Σ over the step, no sync
    for hidden, target in micro_batches:
        loss = crossent.distributed.linear_cross_entropy(
            hidden, lm_head_shard, target, group=tp_group, normalize_by=D / dp_size)
        loss.backward()            # gradients accumulate
    optimizer.step()               # DDP/FSDP averaged over dp_size, hence the "/ dp_size" above

The accumulated gradient is then exactly that of (Σ over all tokens of the step) / D. Without data
parallelism (or when gradients are summed, not averaged, over ranks) use ``normalize_by=D``.
``normalize_by`` is used as given (a tensor stays on the device), for ``reduction="mean"`` only.

Distillation. :func:`linear_distillation_loss` shards the student's and the teacher's output layers the
same way and returns :func:`crossent.linear_distillation_loss` of the full vocabulary: three all-reduces
of O(N) values per forward (MAX of ``(2+k)·N + P``, SUM of ``(2+k)·N``, SUM of ``(1 or 2 + k)·N`` with
``k = [hard_weight > 0]``), plus one SUM of the ``N·D_S`` input gradient; see
:mod:`crossent.distributed._distill`.
"""

from ._comm import communication_volume
from ._distill import linear_distillation_loss
from ._linear import linear_cross_entropy
from ._normalize import global_denominator
from ._vocab_parallel import cross_entropy

__all__ = [
    "communication_volume",
    "cross_entropy",
    "global_denominator",
    "linear_cross_entropy",
    "linear_distillation_loss",
]
