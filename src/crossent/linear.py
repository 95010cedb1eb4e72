"""``linear_cross_entropy``: a drop-in twin of ``torch.nn.functional.linear_cross_entropy`` that never
materialises the logits.

The public function reads *check → rows → compute → reshape*: it validates with PyTorch's messages, lays
the call out as (N, D) rows against a (C, D) head per output position, runs the fused chunk loop of
:mod:`crossent._backends.linear_ce` once per position of a K-dimensional head, and restores the loss's
shape. The math is :func:`crossent.numpy.cross_entropy`'s.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch

from . import _dispatch, functional
from ._arguments import denominator, float_option, int_option
from ._backends import linear_ce
from ._contract import (
    CrossentTypeError,
    CrossentValueError,
    ce_layout,
    ce_options,
    check_class_weight,
    check_target_bounds_torch,
    check_target_dtypes,
    check_tensor,
    torch_dtype_name,
)
from .numpy import categorical
from .numpy._xp import namespace
from .numpy.categorical import ce_denominator

Tensor = torch.Tensor


def _shape_errors(input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None, target: Tensor):
    """PyTorch's shape checks, in its order and with its messages. Returns (num_classes, out_features).

    One extension: an input of more than 2 dimensions (…, D) with a (C, D) head and a target of shape
    (…) or (…, C) is accepted (rows of the flattened leading dimensions, the class axis last).
    """
    d_in = input.dim()
    if d_in < 1 or d_in > 2:
        extension = (
            d_in > 2
            and linear_weight.dim() == 2
            and input.shape[-1] == linear_weight.shape[-1]
            and tuple(target.shape)
            in (tuple(input.shape[:-1]), (*input.shape[:-1], linear_weight.shape[0]))
        )
        if not extension:
            raise CrossentValueError(
                f"expected input with dimensionality 1 or 2, got {d_in} (argument 'input'; crossent "
                "also takes (..., in_features) with a 2-D linear_weight and a target of shape (...) or "
                "(..., C))"
            )
    if linear_weight.dim() < 2:
        raise CrossentValueError(
            f"expected linear_weight with dimensionality at least 2, got {linear_weight.dim()} "
            "(argument 'linear_weight')"
        )
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise CrossentValueError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {in_features} and {linear_weight.shape[-1]}, respectively (argument 'linear_weight')"
        )
    num_classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise CrossentValueError(
            f"expected linear_bias shape {(num_classes, *out_features)}, got "
            f"{tuple(linear_bias.shape)} (argument 'linear_bias')"
        )
    if out_features and d_in < 2:
        raise CrossentValueError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
            f" batched input, (N, {in_features}), got unbatched input with shape {tuple(input.shape)}"
        )
    return num_classes, out_features


def _dtype_errors(input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None) -> None:
    for name, t in (("linear_weight", linear_weight), ("linear_bias", linear_bias)):
        if t is not None and t.dtype != input.dtype:
            raise CrossentTypeError(
                f"expected m1 and m2 to have the same dtype, but got: {torch_dtype_name(input.dtype).lower()}"
                f" != {torch_dtype_name(t.dtype).lower()} (argument '{name}' must have the input's dtype "
                f"{input.dtype}, got {t.dtype})"
            )
        if t is not None and t.device != input.device:
            raise CrossentValueError(
                f"argument '{name}' is on {t.device}, the input on {input.device}"
            )
    if not input.is_floating_point():
        raise CrossentTypeError(
            f"argument 'input' must be a floating-point tensor, got {input.dtype}"
        )


def _rows_cap(options: Any, n: int, d: int, c: int, x: Tensor) -> int | None:
    """Rows per chunk asked for by ``torch.nn.LinearCrossEntropyOptions`` (batch_chunk_size, or the one
    its chunking_method computes), or None."""
    if options is None:
        return None
    adjust = getattr(options, "_adjust", None)
    if adjust is not None and n > 0:
        resolved = adjust(
            num_batches=n, in_features=d, num_classes=c, dtype=x.dtype, device=x.device
        )
        cap = resolved.batch_chunk_size
    else:
        cap = getattr(options, "batch_chunk_size", None)
    return None if cap is None else max(1, int(cap))


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: Tensor | float | None = None,
    workspace_bytes: int | None = None,
    backend: str = "auto",
) -> Tensor:
    r"""Fused ``cross_entropy(F.linear(input, linear_weight, linear_bias), target, ...)`` that never
    materialises the logits; computes :func:`crossent.numpy.cross_entropy` of those logits.

    A drop-in for ``torch.nn.functional.linear_cross_entropy``: same arguments, defaults, values,
    gradients (``input``, ``linear_weight``, ``linear_bias``, and for probability targets ``target`` and
    the class ``weight``) and errors. The rows of ``input`` are processed in chunks whose logits fit
    ``workspace_bytes``; a K-dimensional head (C, d1, …, dK, in_features) runs the same fused loop once
    per output position, so no (N, C·d1⋯dK) logits are ever held. How:
    :mod:`crossent._backends.linear_ce`.

    Args:
        input: (in_features) or (N, in_features) floating. Extension: (…, in_features) with a 2-D
            ``linear_weight`` (the class axis of the logits is then the last one).
        linear_weight: (C, in_features) or (C, d1, …, dK, in_features), the input's dtype.
        target: class indices () / (N) / (N, d1, …, dK) (int64 or uint8), or class probabilities of the
            logits' shape (C) / (N, C) / (N, C, d1, …, dK).
        linear_bias: (C,) or (C, d1, …, dK), or None.
        weight: (C,) class weights.
        reduction: "none", "mean" or "sum".
        ignore_index: None (→ −100 for index targets); any value with probability targets raises.
        label_smoothing: ε in [0, 1].
        options: a ``torch.nn.LinearCrossEntropyOptions`` or None. Its ``batch_chunk_size`` (or the size its
            ``chunking_method`` computes) caps the rows per chunk; its accumulation options are accepted
            and have no effect (crossent always accumulates in float32 or float64).
        z_loss, softcap, normalize_by: crossent extras, as in :func:`crossent.cross_entropy`.
        workspace_bytes: cap on the chunk buffers (default 96 MiB on the CPU, 256 MiB on accelerators);
            at least one row is processed at a time.
        backend: "auto", "torch" (torch ops only), "native" (the compiled CPU kernel for every chunk) or
            "triton" (the Triton chunk kernel; CPU tensors under ``TRITON_INTERPRET=1``).

    Returns:
        The loss, float32 for half-precision inputs, else the input's dtype: a scalar, or for
        ``reduction="none"`` the target's shape without the class dimension.

    Raises:
        ValueError, TypeError, IndexError: PyTorch's errors and message texts (also ``RuntimeError``
            where PyTorch raises that), naming the argument.

    Example:
        >>> import torch, crossent
        >>> crossent.linear_cross_entropy(torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 3]))
        tensor(1.3863)
    """
    for name, value in (("input", input), ("linear_weight", linear_weight), ("target", target)):
        check_tensor(name, value)
    check_tensor("linear_bias", linear_bias, optional=True)
    check_tensor("weight", weight, optional=True)
    _dispatch.check_backend(backend, "linear_cross_entropy")  # the table lists the chunk kernels
    if backend == "native" and not linear_ce.native_ready(input):
        raise CrossentValueError(
            "argument 'backend': the compiled CPU kernel is not available for tensors on "
            f"{input.device} (build crossent's native extension, or use 'auto'/'torch'), got 'native'"
        )
    if backend == "triton":
        if not _dispatch.triton_available():
            raise CrossentValueError(
                "argument 'backend': Triton is not available (install triton, or use 'auto'/'torch'), "
                "got 'triton'"
            )
    c, out_features = _shape_errors(input, linear_weight, linear_bias, target)
    lead = tuple(input.shape[:-1])
    logits_shape = (*lead, c, *out_features)
    prob_target = tuple(target.shape) == logits_shape
    if prob_target and ignore_index is not None:
        raise CrossentValueError(
            "ignore_index cannot be specified when target contains probabilities "
            f"(argument 'ignore_index' is {ignore_index!r})"
        )
    opts = ce_options(
        -100 if ignore_index is None else int_option(ignore_index),
        float_option(label_smoothing),
        z_loss,
        softcap,
        reduction,
    )
    if normalize_by is not None and opts.reduction != "mean":
        raise CrossentValueError(
            f"argument 'normalize_by' replaces the mean's denominator; it needs reduction='mean', "
            f"got reduction={opts.reduction!r}"
        )
    # the checks of cross_entropy on logits of the right shape and dtype (never allocated)
    k_dim = bool(out_features)
    meta_shape = logits_shape if len(lead) <= 1 else (math.prod(lead), c)
    meta = SimpleNamespace(shape=meta_shape, dtype=input.dtype)  # shape and dtype only
    t_meta = (
        target if len(lead) <= 1 else target.reshape(math.prod(lead), *target.shape[len(lead) :])
    )
    layout = ce_layout(meta, t_meta, min_dim=1)
    check_target_dtypes(namespace(input, target), meta, t_meta, layout, strict_index_dtype=True)
    check_class_weight(weight, c)
    _dtype_errors(input, linear_weight, linear_bias)
    if not prob_target and weight is not None:
        if weight.dtype != input.dtype:
            raise CrossentTypeError(
                f"expected scalar type {torch_dtype_name(input.dtype)} but found "
                f"{torch_dtype_name(weight.dtype)} (argument 'weight' must have the input's dtype for "
                "class-index targets)"
            )
        if weight.requires_grad and torch.is_grad_enabled():
            raise CrossentValueError(
                "The function 'nll_loss_forward' is not differentiable with respect to argument "
                "'weight'. This input cannot have requires_grad True. (argument 'weight': class "
                "weights of index targets have no gradient)"
            )
    if workspace_bytes is None:
        workspace_bytes = linear_ce.default_workspace_bytes(input.device)
    elif (
        isinstance(workspace_bytes, bool)
        or not isinstance(workspace_bytes, int)
        or workspace_bytes < 1
    ):
        raise CrossentValueError(
            f"argument 'workspace_bytes' must be a positive int, got {workspace_bytes!r}"
        )

    # rows: x (N, D); heads (P, C, D) views; targets per position
    d = input.shape[-1]
    n = math.prod(lead)
    p = math.prod(out_features)
    x = input.reshape(n, d)
    cdtype = linear_ce.compute_dtype(input)
    like = torch.empty(0, dtype=cdtype, device=input.device)
    transformed = _transform_active(input, linear_weight, linear_bias, target, weight)
    if prob_target:
        t = target.reshape(n, c, p)
    else:
        t = target.reshape(n, p)
        if not transformed:  # (under vmap the check would need data-dependent control flow)
            check_target_bounds_torch(t.reshape(-1), c, opts.ignore_index)
        t = t.long()
    den = None
    if opts.reduction == "mean":
        default = None
        if not prob_target:
            w_den = None if weight is None else weight.to(cdtype)
            default = ce_denominator(t.reshape(-1), w_den, opts, False, like)
        elif k_dim:
            default = torch.tensor(float(n * p), dtype=cdtype, device=input.device)
        den = denominator(normalize_by, default, like)
    if transformed:
        loss = _composite(x, linear_weight, linear_bias, t, weight, den, opts, prob_target, c, p)
        return loss.reshape(*lead, *out_features) if opts.reduction == "none" else loss
    grad_on = torch.is_grad_enabled()
    spec = linear_ce.LinearCESpec(
        opts,
        prob_target,
        int(workspace_bytes),
        need_input=grad_on and input.requires_grad,
        need_weight=grad_on and linear_weight.requires_grad,
        need_bias=grad_on and linear_bias is not None and linear_bias.requires_grad,
        need_target=grad_on and prob_target and target.requires_grad,
        need_class_weight=grad_on and prob_target and weight is not None and weight.requires_grad,
        backend=backend,
        max_rows=_rows_cap(options, n, d, c, input),
    )
    if not k_dim:
        t2 = t.reshape(n, c) if prob_target else t.reshape(n)
        loss = linear_ce.linear_cross_entropy(spec, x, linear_weight, linear_bias, t2, weight, den)
    elif n * c * p * like.element_size() <= workspace_bytes:
        # the whole (N, C, d1, …, dK) logits fit the workspace: one product, then cross_entropy
        logits = torch.nn.functional.linear(
            x,
            linear_weight.reshape(c * p, d),
            None if linear_bias is None else linear_bias.reshape(c * p),
        ).reshape(n, c, *out_features)
        return functional.cross_entropy(
            logits,
            target,
            weight,
            ignore_index=opts.ignore_index,
            reduction=opts.reduction,
            label_smoothing=opts.label_smoothing,
            z_loss=opts.z_loss,
            softcap=opts.softcap,
            normalize_by=normalize_by,
            backend="auto" if backend == "auto" else "torch",
        )
    else:
        loss = _k_dim(spec, x, linear_weight, linear_bias, t, weight, den, c, p)
    if opts.reduction != "none":
        return loss
    return loss.reshape(target.shape[:-1] if prob_target and not k_dim else (*lead, *out_features))


def _transform_active(*tensors: Tensor | None) -> bool:
    """A function transform (``torch.func``: grad, vmap, jacrev, jacfwd) or forward-mode AD sees the
    call: the fused autograd function (gradients formed in the forward) cannot serve it."""
    if torch._C._functorch.maybe_current_level() is not None:
        return True
    from torch.autograd import forward_ad

    return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def _composite(x, linear_weight, linear_bias, t, weight, den, opts, prob_target, c, p) -> Tensor:
    """The reference rows (:func:`crossent.numpy.categorical.ce_rows`, torch ops) on materialised logits:
    differentiable to any order and in forward mode, batched by ``vmap``. Used only under a transform."""
    n, d = x.shape
    logits = torch.nn.functional.linear(
        x,
        linear_weight.reshape(c * p, d),
        None if linear_bias is None else linear_bias.reshape(c * p),
    )
    cdtype = linear_ce.compute_dtype(x)
    z = logits.reshape(n, c, p).transpose(1, 2).reshape(n * p, c).to(cdtype)
    if prob_target:
        rows = t.transpose(1, 2).reshape(n * p, c).to(cdtype)
    else:
        rows = t.reshape(n * p)
    w = None if weight is None else weight.to(cdtype)
    loss, _ = categorical.ce_rows(z, rows, w, opts, prob_target)
    if opts.reduction == "none":
        return loss.reshape(n, p)
    total = loss.sum()
    if opts.reduction == "sum":
        return total
    return total / (
        torch.tensor(float(n * p), dtype=cdtype, device=x.device) if den is None else den
    )


def _k_dim(spec, x, linear_weight, linear_bias, t, weight, den, c, p) -> Tensor:
    """A (C, d1, …, dK, D) head whose logits exceed the workspace: the fused loop once per output position (its (C, D) slice of the head),
    each with the whole call's mean denominator; per-position gradients meet through ``unbind``."""
    heads = linear_weight.reshape(c, p, linear_weight.shape[-1]).unbind(1)
    biases = [None] * p if linear_bias is None else linear_bias.reshape(c, p).unbind(1)
    targets = t.unbind(2) if spec.prob_target else t.unbind(1)
    losses = [
        linear_ce.linear_cross_entropy(spec, x, heads[i], biases[i], targets[i], weight, den)
        for i in range(p)
    ]
    if spec.options.reduction == "none":
        return torch.stack(losses, 1)
    return torch.stack(losses).sum()


__all__ = ["linear_cross_entropy"]
