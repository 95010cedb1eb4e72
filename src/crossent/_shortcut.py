"""The shortcut of plain, small CPU calls of ``cross_entropy`` and ``nll_loss`` to PyTorch's kernel.

For a (32, 10) cross-entropy PyTorch's kernel takes about 8 µs, and crossent's checks (options, layout,
dtypes, target bounds) about as long again: a drop-in would be twice as slow as what it replaces, for
the calls people make most (small batches of a classifier). A *plain* call is one whose arguments are
all of the ordinary kind, read from metadata alone (no pass over the data):

* logits: a ``torch.Tensor`` (not a subclass) on the CPU, float32 or float64, (N, C) or (N, C, d1, …),
  of a size and layout ``backend="auto"`` gives to PyTorch's kernel
  (:func:`crossent._dispatch.aten_preferred`: every ``nll_loss``; a ``cross_entropy`` of at most
  :data:`crossent._dispatch.ATEN_MAX_ELEMENTS` elements, or an image of few classes);
* target: an int64 ``torch.Tensor`` of class indices, one dimension fewer than the logits; ``weight``:
  None, or a tensor of the logits' dtype and device that needs no gradient;
* ``ignore_index`` an int, ``label_smoothing`` a number in [0, 1], ``reduction`` one of "none", "sum",
  "mean"; no legacy arguments, no crossent-only option (``z_loss``, ``softcap``, ``normalize_by``),
  ``backend="auto"``.

Such a call passes every check of crossent's except those PyTorch's kernel makes itself (matching
shapes, the weight's length, index bounds), and ``backend="auto"`` computes it with PyTorch's kernel
(:func:`crossent._dispatch.auto_backend`): the value is the same either way. So it goes to the kernel
first; when the kernel raises, the caller runs its checked path, which raises crossent's error for the
same call (naming the argument).
"""

from __future__ import annotations

import torch

from ._dispatch import aten_preferred

_FLOATS = (torch.float32, torch.float64)
_REDUCTIONS = ("none", "sum", "mean")


def plain_index_call(
    function: str,
    input: object,
    target: object,
    weight: object,
    ignore_index: object,
    label_smoothing: object,
    reduction: object,
) -> bool:
    """Whether a call of ``function`` ("cross_entropy" or "nll_loss") is plain (see the module
    docstring)."""
    return (
        type(input) is torch.Tensor
        and type(target) is torch.Tensor
        and input.dtype in _FLOATS
        and input.dim() >= 2
        and target.dtype == torch.int64
        and target.dim() == input.dim() - 1
        and input.device.type == "cpu"
        and aten_preferred(function, input)
        and (
            weight is None
            or (
                type(weight) is torch.Tensor
                and weight.dtype == input.dtype
                and weight.device.type == "cpu"
                and not weight.requires_grad
            )
        )
        and type(ignore_index) is int
        and type(label_smoothing) in (float, int)
        and 0.0 <= label_smoothing <= 1.0  # type: ignore[operator]
        and reduction in _REDUCTIONS
    )


def no_z_loss(z_loss: object) -> bool:
    """Whether ``z_loss`` is the number 0 (its default)."""
    return type(z_loss) in (float, int) and z_loss == 0
