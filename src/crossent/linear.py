"""``crossent.linear_cross_entropy``: the fused linear + cross-entropy of the PyTorch API."""

from __future__ import annotations

import torch

from ._arguments import denominator as _denominator
from ._arguments import float_option as _float_option
from ._arguments import int_option as _int_option
from ._contract import (
    CELayout,
    CrossentTypeError,
    CrossentValueError,
    ce_options,
    check_class_weight,
    check_index_weight_dtype,
    check_normalize_by,
    check_prob_target_ignore_index,
    check_target_bounds_torch,
    check_target_dtypes,
    check_tensor,
)
from .numpy._xp import namespace
from .numpy.categorical import ce_denominator

Tensor = torch.Tensor


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: Tensor | float | None = None,
    workspace_bytes: int | None = None,
) -> Tensor:
    r"""Fused ``cross_entropy(F.linear(input, linear_weight, linear_bias), target, ...)`` that never
    materialises the (N, V) logits; computes :func:`crossent.numpy.cross_entropy` of those logits.

    The rows of ``input`` are processed in chunks whose logits fit ``workspace_bytes``; for a scalar loss
    the gradients are computed during the forward (three matrix products in all, no recompute), for
    ``reduction="none"`` the backward recomputes the logits so that each token's grad_output is applied
    exactly. How: :mod:`crossent._backends.linear_ce`.

    Args:
        input: (…, D) floating (float16/bfloat16/float32/float64).
        linear_weight: (V, D), the input's dtype.
        target: class indices of shape (…) (int64 or uint8), or class probabilities (…, V).
        linear_bias: (V,) or None.
        weight, reduction, ignore_index, label_smoothing, z_loss, softcap, normalize_by: as in
            :func:`cross_entropy` (the logits' class axis is the last one).
        workspace_bytes: cap on the chunk buffers of logits and the chunk's operands (default 96 MiB on
            the CPU, 256 MiB on accelerators); at least one row is always processed at a time.

    Returns:
        The loss, float32 for half-precision inputs (dW and db accumulate in float32 too), else the input's
        dtype; shape () or, for ``reduction="none"``, the target's shape (…).

    Raises:
        ValueError, TypeError, IndexError: as :func:`cross_entropy`, and for shapes or dtypes of
            ``linear_weight``/``linear_bias`` that do not fit ``input``, or a ``workspace_bytes`` < 1.

    Example:
        >>> import torch, crossent
        >>> crossent.linear_cross_entropy(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 3]))  # log 4
        tensor(1.3863)
    """
    from ._backends import linear_ce

    check_tensor("input", input)
    check_tensor("linear_weight", linear_weight)
    check_tensor("target", target)
    check_tensor("linear_bias", linear_bias, optional=True)
    check_tensor("weight", weight, optional=True)
    options = ce_options(_int_option(ignore_index), _float_option(label_smoothing), z_loss, softcap, reduction)
    check_normalize_by(normalize_by, options.reduction)
    if input.dim() < 1 or not input.is_floating_point():
        raise CrossentTypeError(
            f"argument 'input' must be a floating-point tensor of shape (..., D), got {input.dtype} "
            f"of shape {list(input.shape)}"
        )
    d = input.shape[-1]
    if linear_weight.dim() != 2 or linear_weight.shape[1] != d:
        raise CrossentValueError(
            f"argument 'linear_weight' must have shape (V, {d}) for input of shape {list(input.shape)}, "
            f"got {list(linear_weight.shape)}"
        )
    v = linear_weight.shape[0]
    if linear_bias is not None and tuple(linear_bias.shape) != (v,):
        raise CrossentValueError(f"argument 'linear_bias' must have shape ({v},), got {list(linear_bias.shape)}")
    for name, t in (("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if t is not None and t.dtype != input.dtype:
            raise CrossentTypeError(
                f"expected {name} of dtype {input.dtype} (the input's), got {t.dtype} (argument '{name}')"
            )
        if t is not None and t.device != input.device:
            raise CrossentValueError(f"argument '{name}' is on {t.device}, the input on {input.device}")
    lead = tuple(input.shape[:-1])
    n = 1
    for s in lead:
        n *= s
    if tuple(target.shape) == lead:
        prob_target = False
    elif tuple(target.shape) == lead + (v,):
        prob_target = True
    else:
        raise CrossentValueError(
            f"argument 'target' must have shape {list(lead)} (class indices) or {list(lead + (v,))} "
            f"(class probabilities) for input {list(input.shape)} and linear_weight {list(linear_weight.shape)}, "
            f"got {list(target.shape)}"
        )
    layout = CELayout((n, v), 1, v, (n,), prob_target)
    check_target_dtypes(namespace(input, target), input, target, layout, strict_index_dtype=True)
    check_class_weight(weight, v)
    if workspace_bytes is None:
        workspace_bytes = linear_ce.default_workspace_bytes(input.device)
    elif isinstance(workspace_bytes, bool) or not isinstance(workspace_bytes, int) or workspace_bytes < 1:
        raise CrossentValueError(f"argument 'workspace_bytes' must be a positive int, got {workspace_bytes!r}")
    x = input.reshape(n, d)
    cdtype = linear_ce.compute_dtype(input)
    like = torch.empty(0, dtype=cdtype, device=input.device)
    if prob_target:
        check_prob_target_ignore_index(options.ignore_index)
        t = target.reshape(n, v)
        default_den = None
    else:
        check_index_weight_dtype(input, weight)
        t = target.reshape(n)
        check_target_bounds_torch(t, v, options.ignore_index)
        t = t.long()  # uint8 targets: one O(N) widening, so gathers and index_put take them as they are
        default_den = None
        if options.reduction == "mean":
            default_den = ce_denominator(t, None if weight is None else weight.to(cdtype), options, False, like)
    den = _denominator(normalize_by, default_den, like) if options.reduction == "mean" else None
    grad_on = torch.is_grad_enabled()
    spec = linear_ce.LinearCESpec(
        options,
        prob_target,
        int(workspace_bytes),
        need_input=grad_on and input.requires_grad,
        need_weight=grad_on and linear_weight.requires_grad,
        need_bias=grad_on and linear_bias is not None and linear_bias.requires_grad,
    )
    loss = linear_ce.linear_cross_entropy(spec, x, linear_weight, linear_bias, t, weight, den)
    return loss.reshape(lead) if options.reduction == "none" else loss
