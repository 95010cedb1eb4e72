"""The PyTorch API: drop-in twins of ``torch.nn.functional``'s losses, plus crossent's extras.

Each function has PyTorch's name, argument names, order and defaults; crossent's extras (``z_loss``,
``softcap``, ``normalize_by``, ``backend``) are keyword-only after ``*``. Values, gradients and errors
follow PyTorch (see ``shared/SEMANTICS.md``), with these deliberate differences:

* half-precision inputs: math in float32 and the loss returned in float32 (the gradient keeps the input's
  dtype);
* ``label_smoothing < 0`` raises instead of being treated as 0;
* errors are ``ValueError``/``TypeError``/``IndexError`` naming the argument (those PyTorch raises as
  ``RuntimeError`` are also ``RuntimeError``\\ s).

The math is :mod:`crossent.numpy`'s; this module validates, lays the input out as (rows, classes), picks a
backend (:mod:`crossent._dispatch`) and reshapes the result.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from . import _dispatch
from ._backends import eager, ownership
from ._contract import (
    KL_REDUCTIONS,
    CEOptions,
    CrossentTypeError,
    CrossentValueError,
    ce_layout,
    ce_options,
    check_class_weight,
    check_gamma,
    check_prob_target_ignore_index,
    check_reduction,
    check_sigmoid_focal_alpha,
)
from .numpy import _layout
from .numpy._xp import namespace
from .numpy.binary import _BCE_SIZE, _LOGITS_SIZE, _check_focal_reduction, broadcast_weight
from .numpy.categorical import _dtype_name, ce_denominator, check_target_bounds, check_target_dtypes
from .numpy.divergence import _entropy_layout

Tensor = torch.Tensor


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair, mapped onto ``reduction`` (with its warning)."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn(
        "size_average and reduce args will be deprecated, please use reduction='sum' instead.",
        UserWarning,
        stacklevel=3,
    )
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _int_option(value: Any) -> Any:
    # torch accepts a 0-d integer tensor for ignore_index.
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        return int(value)
    return value


def _float_option(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return float(value)
    return value


def _check_tensor(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"argument '{name}' must be Tensor, not {type(value).__name__}")


def _check_bounds(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Index targets outside [0, C): IndexError on the CPU; a device-side assert (no sync) on accelerators."""
    if target.device.type == "cpu":
        check_target_bounds(namespace(target), target, num_classes, ignore_index)
    elif not torch.compiler.is_compiling():
        t = target.long()
        bad = ((t < 0) | (t >= num_classes)) & (t != ignore_index)
        torch._assert_async(
            ~bad.any(),
            f"crossent: a target is out of bounds [0, {num_classes}) (argument 'target')",
        )


def _denominator(
    normalize_by: Tensor | float | None, default: Tensor | None, like: Tensor
) -> Tensor | None:
    if normalize_by is None:
        return default
    if isinstance(normalize_by, torch.Tensor):
        return normalize_by.to(device=like.device, dtype=like.dtype).reshape(())
    return torch.tensor(float(normalize_by), dtype=like.dtype, device=like.device)


def _ce_call(
    kind: str,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
    *,
    aux: Tensor | None = None,
    extra: Any = None,
    normalize_by: Tensor | float | None = None,
    backend: str = "auto",
    inplace: bool = False,
) -> Tensor:
    """Shared path of the categorical losses: validate, lay out as rows, dispatch, reshape."""
    if normalize_by is not None and options.reduction != "mean":
        raise CrossentValueError(
            f"argument 'normalize_by' replaces the mean's denominator; it needs reduction='mean', "
            f"got reduction={options.reduction!r}"
        )
    _check_tensor("input", input)
    _check_tensor("target", target)
    _check_tensor("weight", weight, optional=True)
    layout = ce_layout(input, target, min_dim=1)
    if kind == "nll" and layout.prob_target:
        raise CrossentValueError(
            "0D or 1D target tensor expected, multi-target not supported (argument 'target' of nll_loss "
            "must hold class indices)"
        )
    check_target_dtypes(namespace(input, target), input, target, layout, strict_index_dtype=True)
    check_class_weight(weight, layout.num_classes)
    # (N, C, d…) rows are a copy: marked, so a backend that holds inputs weakly keeps it (ownership)
    x = ownership.mark_if_copy(_layout.to_rows(input, layout), input)
    if layout.prob_target:
        check_prob_target_ignore_index(options.ignore_index)
        t = ownership.mark_if_copy(_layout.to_rows(target, layout), target)
    else:
        if weight is not None and weight.dtype != input.dtype:
            raise CrossentTypeError(
                f"expected scalar type {_dtype_name(input.dtype)} but found {_dtype_name(weight.dtype)} "
                "(argument 'weight' must have the input's dtype for class-index targets)"
            )
        t = _layout.index_to_rows(target)
        _check_bounds(t, layout.num_classes, options.ignore_index)
    dtype = eager.compute_dtype(input, *((target, weight) if layout.prob_target else ()))
    like = torch.empty(0, dtype=dtype, device=input.device)
    default_den = None
    if options.reduction == "mean" and not layout.prob_target:
        default_den = ce_denominator(
            t, None if weight is None else weight.to(dtype), options, False, like
        )
    den = _denominator(normalize_by, default_den, like) if options.reduction == "mean" else None
    if kind == "ce":
        math = eager.RowMath(
            "ce", options.reduction, options, layout.prob_target, promote_target=True
        )
        impl = _dispatch.ce_impl(_dispatch.choose_ce_backend(x, backend))
        loss = (
            impl(math, x, t, weight, den, **({"inplace": True} if inplace else {}))
            if impl is not None
            else eager.row_loss(math, x, t, weight, None, den)
        )
    elif kind == "focal":
        math = eager.RowMath(
            "focal", options.reduction, extra, layout.prob_target, promote_target=True
        )
        # only the Triton backend has a focal kernel; "torch" (and "auto" without it) computes it eagerly
        chosen = _dispatch.check_backend(backend, "focal_loss")
        triton = (_dispatch.auto_backend("focal_loss", x) if chosen == "auto" else chosen) == "triton"
        impl = _dispatch.ce_impl("triton") if triton else None
        loss = (
            impl(math, x, t, weight, den, aux=aux)
            if impl is not None
            else eager.row_loss(math, x, t, weight, aux, den)
        )
    else:
        math = eager.RowMath("nll", options.reduction, options, False)
        loss = eager.row_loss(math, x, t, weight, None, den)
    if options.reduction == "none":
        loss = _layout.loss_from_rows(loss, layout)
    return loss


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    normalize_by: Tensor | float | None = None,
    backend: str = "auto",
    inplace: bool = False,
) -> Tensor:
    r"""Cross-entropy between logits and class-index or class-probability targets.

    Computes :func:`crossent.numpy.cross_entropy` (formulas there); a drop-in for
    :func:`torch.nn.functional.cross_entropy` with the same arguments, values, gradients and errors.

    Args:
        input: logits (C), (N, C) or (N, C, d1, …, dk); float16, bfloat16, float32 or float64.
        target: class indices (int64 or uint8) of shape (), (N) or (N, d1, …, dk), or class probabilities
            of the input's shape.
        weight: (C,) class weights (the input's dtype for index targets, as in torch).
        size_average, reduce: deprecated PyTorch arguments (mapped onto ``reduction`` with a warning).
        ignore_index: index targets equal to it contribute nothing, to the loss or to the mean's denominator.
        reduction: "none", "sum" or "mean" (Σℓ / Σ w[y_i] over non-ignored positions for index targets,
            Σℓ / number of positions for probability targets).
        label_smoothing: ε in [0, 1].
        z_loss: λ ≥ 0: adds λ·lse² per non-ignored element, weighted like the CE term.
        softcap: s > 0: logits → s·tanh(x/s) before everything else.
        normalize_by: replaces the mean's denominator (e.g. a global token count); a tensor stays on the
            device (no host synchronisation).
        backend: "auto", "torch", "triton" or "native" (see :mod:`crossent._dispatch`). The Triton
            backend (CUDA) keeps only the gradient for a reduced loss, not the logits: a double backward
            (``create_graph=True``) recomputes from the logits the caller still holds and raises if they
            were freed (``loss = cross_entropy(head(h), y)``); use ``backend="torch"`` there.
        inplace: allow a backend that computes the gradient in the forward (Triton) to write it into
            ``input`` instead of a new buffer, saving the logits' size in memory. The input is then
            overwritten (autograd is told, via ``mark_dirty``, so a later use of the old values raises);
            it must not be a leaf that requires grad. Other backends ignore it. Default: never written.

    Returns:
        The loss: float32 for half-precision inputs, else the (promoted) input dtype; shape () unless
        ``reduction="none"`` (then the input's shape without the class axis).

    Example:
        >>> import torch, crossent
        >>> crossent.cross_entropy(torch.zeros(1, 4), torch.tensor([2]))  # log 4
        tensor(1.3863)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    options = ce_options(
        _int_option(ignore_index), _float_option(label_smoothing), z_loss, softcap, reduction
    )
    return _ce_call(
        "ce", input, target, weight, options, normalize_by=normalize_by, backend=backend,
        inplace=inplace,
    )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities; computes :func:`crossent.numpy.nll_loss`.

    A drop-in for :func:`torch.nn.functional.nll_loss` (``input`` is used as it is).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    options = ce_options(_int_option(ignore_index), 0.0, 0.0, None, reduction)
    if isinstance(input, torch.Tensor) and input.dim() == 0:
        raise CrossentValueError("Expected 1 or more dimensions (got 0) (argument 'input')")
    return _ce_call("nll", input, target, weight, options)


def focal_loss(
    input: Tensor,
    target: Tensor,
    alpha: Tensor | float | None = None,
    gamma: float = 2.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    backend: str = "auto",
) -> Tensor:
    r"""Softmax (multi-class) focal loss; computes :func:`crossent.numpy.focal_loss` (formula there).

    :math:`\ell = -\sum_c \alpha_c w_c q_c (1-p_c)^\gamma \log p_c`; γ = 0 and α = None give
    :func:`cross_entropy`. Targets, ``weight``, ``ignore_index`` and ``reduction`` as in
    :func:`cross_entropy`. ``backend``: "auto" (the Triton kernel for CUDA tensors, else eager), "torch"
    or "triton"; "native" raises (there is no native kernel for this loss). Double backward on the
    Triton path needs the caller to hold the logits, as in :func:`cross_entropy`.
    """
    gamma = check_gamma(gamma)
    options = ce_options(_int_option(ignore_index), 0.0, 0.0, None, reduction)
    aux = alpha if isinstance(alpha, torch.Tensor) else None
    if aux is not None and aux.dim() == 0:
        aux, alpha = None, float(aux)
    if aux is not None and tuple(aux.shape) != (input.shape[0 if input.dim() == 1 else 1],):
        raise CrossentValueError(
            f"argument 'alpha' must be a number or a (C,) tensor, got shape {tuple(aux.shape)}"
        )
    if aux is None and alpha is not None and not isinstance(alpha, (int, float)):
        raise TypeError(f"argument 'alpha' must be None, a number or a (C,) tensor, got {alpha!r}")
    extra = eager.FocalOptions(
        options, gamma, None if aux is not None or alpha is None else float(alpha)
    )
    return _ce_call("focal", input, target, weight, options, aux=aux, extra=extra, backend=backend)


def _same_dtype(input: Tensor, target: Tensor) -> None:
    if target.dtype != input.dtype:
        raise CrossentTypeError(
            f"Found dtype {_dtype_name(target.dtype)} but expected {_dtype_name(input.dtype)} "
            "(argument 'target' must have the input's dtype)"
        )


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy of probabilities; computes :func:`crossent.numpy.binary_cross_entropy`."""
    reduction = check_reduction(legacy_reduction(size_average, reduce, reduction))
    _check_tensor("input", input)
    _check_tensor("target", target)
    if tuple(target.shape) != tuple(input.shape):
        raise CrossentValueError(
            _BCE_SIZE.format(
                t=f"torch.Size({list(target.shape)})", i=f"torch.Size({list(input.shape)})"
            )
        )
    _same_dtype(input, target)
    if input.device.type == "cpu" and input.numel():
        if not bool(((input >= 0) & (input <= 1)).all()):
            raise CrossentValueError(
                "all elements of input should be between 0 and 1 (argument 'input')"
            )
        if not bool(((target >= 0) & (target <= 1)).all()):
            raise CrossentValueError(
                "all elements of target should be between 0 and 1 (argument 'target')"
            )
    w = broadcast_weight(namespace(target), weight, target)
    math = eager.RowMath("bce", reduction, None, per_row=False, promote_target=True)
    return eager.row_loss(math, input, target, w)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """Binary cross-entropy of logits with ``pos_weight``; computes
    :func:`crossent.numpy.binary_cross_entropy_with_logits` (multi-label: an (N, C) input).

    ``backend``: "auto" (Triton for CUDA tensors when available, else eager), "torch" (eager) or
    "triton" (forced); "native" raises (there is no native kernel for this loss).
    """
    reduction = check_reduction(legacy_reduction(size_average, reduce, reduction))
    _check_tensor("input", input)
    _check_tensor("target", target)
    _check_tensor("pos_weight", pos_weight, optional=True)
    if tuple(target.shape) != tuple(input.shape):
        raise CrossentValueError(
            _LOGITS_SIZE.format(
                t=f"torch.Size({list(target.shape)})", i=f"torch.Size({list(input.shape)})"
            )
        )
    if not target.is_floating_point():
        raise CrossentTypeError(
            f"result type Float can't be cast to the desired output type {_dtype_name(target.dtype)} "
            "(argument 'target' must be floating point)"
        )
    w = broadcast_weight(namespace(target), weight, target)
    pw = broadcast_weight(namespace(target), pos_weight, target, "pos_weight")
    math = eager.RowMath("bce_logits", reduction, None, per_row=False, promote_target=True)
    impl = _dispatch.binary_impl(input, backend, "binary_cross_entropy_with_logits")
    if impl is not None:
        loss = impl(math, input, target, w, pw)
    else:
        loss = eager.row_loss(math, input, target, w, pw)
    # torch's output dtype follows the target's (at least float32 here).
    return loss.to(eager.compute_dtype(target))


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
    *,
    backend: str = "auto",
) -> Tensor:
    """torchvision's ``sigmoid_focal_loss`` (same defaults); computes :func:`crossent.numpy.sigmoid_focal_loss`.

    ``backend``: as in :func:`binary_cross_entropy_with_logits`.
    """
    alpha, gamma = check_sigmoid_focal_alpha(alpha), check_gamma(gamma)
    _check_focal_reduction(reduction)
    _check_tensor("inputs", inputs)
    _check_tensor("targets", targets)
    if tuple(targets.shape) != tuple(inputs.shape):
        raise CrossentValueError(_LOGITS_SIZE.format(t=tuple(targets.shape), i=tuple(inputs.shape)))
    math = eager.RowMath(
        "sigmoid_focal",
        reduction,
        eager.SigmoidFocalOptions(alpha, gamma),
        per_row=False,
        promote_target=True,
    )
    impl = _dispatch.binary_impl(inputs, backend, "sigmoid_focal_loss")
    if impl is not None:
        return impl(math, inputs, targets)
    return eager.row_loss(math, inputs, targets)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """KL divergence with PyTorch's ``kl_div`` contract; computes :func:`crossent.numpy.kl_div`."""
    reduction = check_reduction(legacy_reduction(size_average, reduce, reduction), KL_REDUCTIONS)
    _check_tensor("input", input)
    _check_tensor("target", target)
    if reduction == "mean":
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning,
            stacklevel=2,
        )
    shape = torch.broadcast_shapes(input.shape, target.shape)
    if target.shape != shape:
        warnings.warn(
            "Using a target size that is different to the input size (it is broadcast).",
            UserWarning,
            stacklevel=2,
        )
    x, t = input.expand(shape), target.expand(shape)
    den = None
    if reduction == "batchmean":
        batch = float(x.shape[0]) if x.dim() > 0 else 1.0
        den = torch.tensor(batch, dtype=eager.compute_dtype(x, t), device=x.device)
    math = eager.RowMath(
        "kl",
        "mean" if reduction == "batchmean" else reduction,
        eager.KLOptions(bool(log_target)),
        per_row=False,
        promote_target=True,
    )
    return eager.row_loss(math, x, t, None, None, den)


def entropy(input: Tensor, reduction: str = "none") -> Tensor:
    """Entropy of the softmax of logits in nats; computes :func:`crossent.numpy.entropy`."""
    reduction = check_reduction(reduction)
    _check_tensor("input", input)
    layout = _entropy_layout(input)
    x = _layout.to_rows(input, layout)
    math = eager.RowMath("entropy", reduction, None)
    loss = eager.row_loss(math, x, torch.empty(0, device=input.device))
    return _layout.loss_from_rows(loss, layout) if reduction == "none" else loss


from .linear import linear_cross_entropy  # noqa: E402  (it imports helpers defined above)

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "focal_loss",
    "kl_div",
    "linear_cross_entropy",
    "nll_loss",
    "sigmoid_focal_loss",
]
