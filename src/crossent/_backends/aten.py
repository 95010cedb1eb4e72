"""PyTorch's own kernels (ATen) as a backend of the drop-ins that PyTorch also has.

``torch.nn.functional`` is the specification of ``cross_entropy``, ``nll_loss``, ``binary_cross_entropy``,
``binary_cross_entropy_with_logits`` and ``kl_div``: where a call uses only options PyTorch has, in a dtype
whose result PyTorch returns as crossent does (float32 and float64), PyTorch's kernel computes exactly the
function crossent defines (:mod:`crossent.numpy`), so it is a legitimate way to compute it. It is the fastest
one where a call is dominated by per-call overhead (small inputs) or where its kernels are vectorised across
rows (few classes, (N, C, d…) images without a layout copy), and it brings forward-mode AD and
``torch.func`` transforms along. crossent validates first (its errors name the argument); this module only
calls the ATen operators.

What it does not take (the other backends compute it): half precision (crossent returns a float32 loss),
z-loss and softcap (not PyTorch options), ``normalize_by``, and mixed dtypes of logits, probability
targets and class weights (PyTorch promotes differently), and gradients with respect to targets or
weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._contract import CEOptions

Tensor = torch.Tensor

_DTYPES = (torch.float32, torch.float64)
_REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}  # ATen's reduction codes


def _same_float(input: Tensor, *others: Tensor | None) -> bool:
    # operands that require a gradient stay with crossent's backends (PyTorch differentiates fewer)
    return input.dtype in _DTYPES and all(
        o is None or (o.dtype == input.dtype and o.device == input.device and not o.requires_grad)
        for o in others
    )


def takes_categorical(
    input: Tensor, target: Tensor, weight: Tensor | None, options: CEOptions, prob_target: bool
) -> bool:
    """Whether a cross-entropy (or NLL) call uses only what PyTorch's kernel computes identically."""
    if options.z_loss != 0.0 or options.softcap is not None or target.requires_grad:
        return False
    return _same_float(input, target if prob_target else None, weight)


def cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None, options: CEOptions
) -> Tensor:
    """:func:`crossent.numpy.cross_entropy` by ``torch.nn.functional.cross_entropy``."""
    return F.cross_entropy(
        input,
        target,
        weight,
        ignore_index=options.ignore_index,
        reduction=options.reduction,
        label_smoothing=options.label_smoothing,
    )


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None, options: CEOptions) -> Tensor:
    """:func:`crossent.numpy.nll_loss` by ``torch.nn.functional.nll_loss``."""
    return F.nll_loss(
        input, target, weight, ignore_index=options.ignore_index, reduction=options.reduction
    )


def takes_elementwise(input: Tensor, target: Tensor, *others: Tensor | None) -> bool:
    """Whether an elementwise loss's operands share one float32/float64 dtype and device."""
    return _same_float(input, target, *others)


def binary_cross_entropy(
    input: Tensor, target: Tensor, weight: Tensor | None, reduction: str
) -> Tensor:
    """:func:`crossent.numpy.binary_cross_entropy` by ``torch.nn.functional.binary_cross_entropy``."""
    return F.binary_cross_entropy(input, target, weight, reduction=reduction)


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Tensor | None, reduction: str, pos_weight: Tensor | None
) -> Tensor:
    """:func:`crossent.numpy.binary_cross_entropy_with_logits` by PyTorch's function."""
    return F.binary_cross_entropy_with_logits(
        input, target, weight, reduction=reduction, pos_weight=pos_weight
    )


def kl_div(input: Tensor, target: Tensor, reduction: str, log_target: bool) -> Tensor:
    """:func:`crossent.numpy.kl_div` by the ATen operator (crossent has issued PyTorch's warnings)."""
    if reduction == "batchmean":
        total = torch.kl_div(input, target, _REDUCTION_ENUM["sum"], log_target=log_target)
        return total / input.shape[0] if input.dim() != 0 else total
    return torch.kl_div(input, target, _REDUCTION_ENUM[reduction], log_target=log_target)
