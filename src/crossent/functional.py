"""The PyTorch API: drop-in twins of ``torch.nn.functional``'s losses, plus crossent's extras.

Each function has PyTorch's name, argument names, order and defaults; crossent's extras (``z_loss``,
``softcap``, ``normalize_by``, ``backend``, ``inplace``) are keyword-only after ``*``. Values, gradients and
errors follow PyTorch (``docs/semantics.md``), with these deliberate differences:

* half-precision inputs: math in float32 and the loss returned in float32 (the gradient keeps the input's
  dtype);
* ``label_smoothing < 0`` raises instead of being treated as 0;
* errors are ``ValueError``/``TypeError``/``IndexError`` naming the argument (those PyTorch raises as
  ``RuntimeError`` are also ``RuntimeError``\\ s).

Every function reads *check → rows → dispatch → reshape*: the checks are :mod:`crossent._contract`'s, the
layout is :mod:`crossent.numpy._layout`'s, the backend comes from :func:`crossent._dispatch.resolve` (the
eager backend when it answers None), and the math is :mod:`crossent.numpy`'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import _dispatch, _shortcut
from ._arguments import denominator, float_option, int_option, legacy_reduction
from ._backends import aten, eager, ownership
from ._contract import (
    BCE_LOGITS_SIGNATURE,
    BCE_SIZE_MESSAGE,
    CE_SIGNATURE,
    KL_REDUCTIONS,
    KL_SIGNATURE,
    LOGITS_SIZE_MESSAGE,
    NLL_SIGNATURE,
    CELayout,
    CEOptions,
    Signature,
    ce_layout,
    ce_options,
    check_broadcast,
    check_class_weight,
    check_dim_at_least_one,
    check_elementwise_floating,
    check_floating_input,
    check_floating_target,
    check_focal_alpha_tensor,
    check_focal_reduction,
    check_gamma,
    check_index_target_only,
    check_index_weight_dtype,
    check_normalize_by,
    check_prob_target_ignore_index,
    check_reduction,
    check_same_dtype,
    check_same_shape,
    check_sigmoid_focal_alpha,
    check_target_bounds_torch,
    check_target_dtypes,
    check_tensor,
    check_unit_interval,
    entropy_layout,
)
from ._transforms import vmap_active
from .numpy import _layout
from .numpy._xp import namespace
from .numpy.binary import broadcast_weight
from .numpy.categorical import ce_denominator
from .numpy.reduce import reduce

Tensor = torch.Tensor


@dataclass(frozen=True)
class _Rows:
    """A categorical call laid out as (M, C) rows: logits, targets, the mean's denominator."""

    layout: CELayout
    x: Tensor
    t: Tensor
    den: Tensor | None
    held: int  # ownership bits: which of x, t are crossent's own layout copies

    @property
    def prob_target(self) -> bool:
        return self.layout.prob_target

    def output(self, loss: Tensor, reduction: str) -> Tensor:
        """The loss in the caller's layout (per position for ``"none"``)."""
        return _layout.loss_from_rows(loss, self.layout) if reduction == "none" else loss


def _check_categorical(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
    normalize_by: Tensor | float | None = None,
    *,
    index_only: bool = False,
    signature: Signature | None = None,
) -> CELayout:
    """Check a categorical call (the shared step of CE, NLL and focal loss); its layout.

    ``signature``: the torch function whose messages the errors carry (``nll_loss_nd`` when
    ``index_only``, else ``cross_entropy_loss``; None for crossent's own functions).
    """
    check_normalize_by(normalize_by, options.reduction)
    check_tensor("input", input, signature=signature)
    check_tensor("target", target, signature=signature)
    check_tensor("weight", weight, optional=True, signature=signature)
    layout = ce_layout(input, target, min_dim=1)
    if index_only:
        check_index_target_only(layout.prob_target)
        kernel = "nll_loss_out_frame" if input.dim() <= 2 else "nll_loss2d_forward_out_frame"
    else:
        kernel = (
            "log_softmax_lastdim_kernel_impl" if input.dim() <= 2 else "log_softmax_kernel_impl"
        )
    check_floating_input(input, target, layout.prob_target, kernel)
    check_target_dtypes(namespace(input, target), input, target, layout, strict_index_dtype=True)
    prefix = "cross_entropy: " if layout.prob_target and signature is CE_SIGNATURE else ""
    check_class_weight(weight, layout.num_classes, prefix=prefix)
    if layout.prob_target:
        check_prob_target_ignore_index(options.ignore_index)
    else:
        check_index_weight_dtype(input, weight)
    return layout


def _check_bounds(layout: CELayout, target: Tensor, options: CEOptions) -> None:
    """Index targets outside [0, C) that are not ``ignore_index`` raise (see check_target_bounds_torch).

    Not for a call PyTorch's kernel computes: it checks the bounds itself (:func:`_aten_categorical`).
    """
    if not layout.prob_target and not vmap_active():
        check_target_bounds_torch(
            _layout.index_to_rows(target), layout.num_classes, options.ignore_index
        )


def _aten_categorical(
    function: Callable[..., Tensor],
    layout: CELayout,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
) -> Tensor:
    """A checked categorical call computed by PyTorch's kernel, which checks index bounds itself (one
    pass fewer for a small call): its IndexError is raised as crossent's, naming the argument."""
    try:
        return function(input, target, weight, options)
    except IndexError:
        _check_bounds(layout, target, options)
        raise


def _categorical_rows(
    layout: CELayout,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: CEOptions,
    normalize_by: Tensor | float | None = None,
    *,
    keep_layout: bool = False,
) -> _Rows:
    """Lay a checked categorical call out as rows, with the mean's denominator.

    ``keep_layout``: (N, C, d…) logits and targets stay where they lie (no transposed copy), for a
    backend that reads that layout itself (the native kernel's spatial entry).
    """
    if keep_layout:
        x, t, held = input, target, 0
    else:
        x = _layout.to_rows(input, layout)
        t = _layout.to_rows(target, layout) if layout.prob_target else _layout.index_to_rows(target)
        # (N, C, d…) rows are a copy: a backend that holds its inputs weakly must hold it (ownership)
        held = ownership.held_bits(x, input, t, target)
    if not layout.prob_target and layout.num_classes and vmap_active():
        # under vmap the values cannot be read: a gather raises for an index out of range instead
        # (torch's RuntimeError, what torch's own functions raise there)
        x.gather(-1, torch.where(t == options.ignore_index, 0, t.long())[:, None])
    den = None
    if options.reduction == "mean":
        dtype = eager.compute_dtype(input, *((target, weight) if layout.prob_target else ()))
        like = torch.empty(0, dtype=dtype, device=input.device)
        default = None
        if not layout.prob_target:
            w = None if weight is None else weight.to(dtype)
            default = ce_denominator(_layout.index_to_rows(t), w, options, False, like)
        den = denominator(normalize_by, default, like)
    return _Rows(layout, x, t, den, held)


def _no_terms(rows: _Rows, weight: Tensor | None, options: CEOptions) -> Tensor:
    """The loss of a call with no terms to sum (zero rows or zero classes), as torch gives it.

    Every row's loss is an empty sum over classes: ``-0.`` for probability targets (torch negates the
    sum), ``0.`` for index targets (``NaN`` with label smoothing and no classes: ε/C·0). The mean is
    ``Σℓ / D`` with D = 0 (``NaN``) unless ``normalize_by`` gives D. Kept in the graph (empty gradients).
    """
    dtype = eager.compute_dtype(rows.x, *((rows.t, weight) if rows.prob_target else ()))
    x = rows.x.to(dtype)
    if rows.prob_target:
        terms = x * rows.t.to(dtype) if weight is None else x * rows.t.to(dtype) * weight.to(dtype)
        per_row, total = -terms.sum(-1), -terms.sum()
    else:
        per_row, total = (x * 0).sum(-1), (x * 0).sum()
        if options.label_smoothing > 0 and rows.layout.num_classes == 0:
            per_row, total = per_row + torch.nan, total + torch.nan
    if options.reduction == "none":
        return per_row
    if options.reduction == "sum":
        return total
    den = rows.den if rows.den is not None else torch.zeros((), dtype=dtype, device=x.device)
    return total / den


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
    if (
        backend == "auto"
        and size_average is None
        and reduce is None
        and softcap is None
        and normalize_by is None
        and _shortcut.no_z_loss(z_loss)
        and _shortcut.plain_index_call(
            "cross_entropy", input, target, weight, ignore_index, label_smoothing, reduction
        )
    ):
        try:
            return torch.nn.functional.cross_entropy(
                input, target, weight, None, ignore_index, None, reduction, label_smoothing
            )
        except (IndexError, ValueError, RuntimeError):
            pass  # the checked path below raises crossent's error for this call
    reduction = legacy_reduction(size_average, reduce, reduction)
    options = ce_options(
        int_option(ignore_index),
        float_option(label_smoothing),
        z_loss,
        softcap,
        reduction,
        signature=CE_SIGNATURE,
    )
    layout = _check_categorical(
        input, target, weight, options, normalize_by, signature=CE_SIGNATURE
    )
    aten_ok = normalize_by is None and aten.takes_categorical(
        input, target, weight, options, layout.prob_target
    )
    chosen = _dispatch.choose("cross_entropy", backend, input, aten=aten_ok)
    if chosen == "aten":
        return _aten_categorical(aten.cross_entropy, layout, input, target, weight, options)
    _check_bounds(layout, target, options)
    # the native kernel reads (N, C, d…) logits where they lie (class stride d1·…·dk), no transposed copy
    spatial = chosen == "native" and input.dim() > 2 and input.numel() > 0
    rows = _categorical_rows(
        layout, input, target, weight, options, normalize_by, keep_layout=spatial
    )
    math = eager.CrossEntropyMath(options.reduction, options, rows.prob_target)
    impl = _dispatch.implementation("cross_entropy", chosen)
    if rows.x.numel() == 0:
        loss = _no_terms(rows, weight, options)
    elif impl is None:
        loss = eager.row_loss(math, rows.x, rows.t, weight, None, rows.den)
    elif inplace:
        loss = impl(math, rows.x, rows.t, weight, rows.den, inplace=True, held=rows.held)
    else:
        loss = impl(math, rows.x, rows.t, weight, rows.den, held=rows.held)
    return rows.output(loss, options.reduction)


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
    if (
        size_average is None
        and reduce is None
        and _shortcut.plain_index_call(
            "nll_loss", input, target, weight, ignore_index, 0.0, reduction
        )
    ):
        try:
            return torch.nn.functional.nll_loss(
                input, target, weight, None, ignore_index, None, reduction
            )
        except (IndexError, ValueError, RuntimeError):
            pass  # the checked path below raises crossent's error for this call
    reduction = legacy_reduction(size_average, reduce, reduction)
    options = ce_options(
        int_option(ignore_index), 0.0, 0.0, None, reduction, signature=NLL_SIGNATURE
    )
    check_tensor("input", input, signature=NLL_SIGNATURE)
    check_dim_at_least_one(input)
    layout = _check_categorical(
        input, target, weight, options, index_only=True, signature=NLL_SIGNATURE
    )
    aten_ok = aten.takes_categorical(input, target, weight, options, False)
    if _dispatch.choose("nll_loss", "auto", input, aten=aten_ok) == "aten":
        return _aten_categorical(aten.nll_loss, layout, input, target, weight, options)
    _check_bounds(layout, target, options)
    rows = _categorical_rows(layout, input, target, weight, options)
    if rows.x.numel() == 0:
        return rows.output(_no_terms(rows, weight, options), options.reduction)
    math = eager.NLLMath(options.reduction, options.ignore_index)
    loss = eager.row_loss(math, rows.x, rows.t, weight, None, rows.den)
    return rows.output(loss, options.reduction)


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
    options = ce_options(int_option(ignore_index), 0.0, 0.0, None, reduction)
    alpha_rows = alpha if isinstance(alpha, torch.Tensor) else None
    if alpha_rows is not None and alpha_rows.dim() == 0:
        alpha, alpha_rows = float(alpha_rows), None
    if alpha_rows is not None:
        check_focal_alpha_tensor(alpha_rows, input.shape[0 if input.dim() == 1 else 1])
    elif alpha is not None and not isinstance(alpha, (int, float)):
        raise TypeError(f"argument 'alpha' must be None, a number or a (C,) tensor, got {alpha!r}")
    layout = _check_categorical(input, target, weight, options)
    _check_bounds(layout, target, options)
    rows = _categorical_rows(layout, input, target, weight, options)
    scalar = None if alpha_rows is not None or alpha is None else float(alpha)
    math = eager.FocalMath(options.reduction, options, gamma, scalar, rows.prob_target)
    impl = _dispatch.resolve("focal_loss", backend, rows.x)
    if rows.x.numel() == 0:
        loss = _no_terms(rows, weight, options)
    elif impl is None:
        loss = eager.row_loss(math, rows.x, rows.t, weight, alpha_rows, rows.den)
    else:
        loss = impl(math, rows.x, rows.t, weight, rows.den, aux=alpha_rows, held=rows.held)
    return rows.output(loss, options.reduction)


def _check_probabilities(input: Tensor, target: Tensor) -> None:
    """Input and target of ``binary_cross_entropy`` lie in [0, 1] (CPU only: on accelerators the check
    would synchronise; under vmap the values cannot be read)."""
    if input.device.type == "cpu" and input.numel() and not vmap_active():
        check_unit_interval(input, "input")
        check_unit_interval(target, "target")


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
    check_tensor("input", input)
    check_tensor("target", target)
    check_same_shape(input, target, BCE_SIZE_MESSAGE)
    check_broadcast("weight", weight, target, style="expand")
    check_same_dtype(input, target)
    check_elementwise_floating("binary_cross_entropy", "binary_cross_entropy", input)
    w = broadcast_weight(namespace(target), weight, target)  # (its shape error is crossent's)
    aten_ok = aten.takes_elementwise(input, target, weight)
    if _dispatch.choose("binary_cross_entropy", "auto", input, aten=aten_ok) == "aten":
        try:  # PyTorch's kernel checks the input's range itself (one pass fewer)
            return aten.binary_cross_entropy(input, target, weight, reduction)
        except RuntimeError:
            _check_probabilities(input, target)  # crossent's error, naming the argument
            raise
    _check_probabilities(input, target)
    if w is not None and w.is_floating_point():
        w = w.to(eager.compute_dtype(input))  # the result's dtype follows the input's, as in torch
    return eager.row_loss(eager.BCEMath(reduction), input, target, w)


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

    ``backend``: "auto" (Triton for CUDA tensors when available; on the CPU PyTorch's kernel for small
    calls and the native kernel above ``crossent._dispatch.ATEN_MAX_ELEMENTS`` elements; else eager),
    "torch" (eager), "triton", "native" (the compiled CPU kernel: loss and gradient in one pass) or
    "aten" (forced).
    """
    reduction = check_reduction(legacy_reduction(size_average, reduce, reduction))
    check_tensor("input", input)
    check_tensor("target", target)
    check_tensor("weight", weight, optional=True, signature=BCE_LOGITS_SIGNATURE)
    check_tensor("pos_weight", pos_weight, optional=True, signature=BCE_LOGITS_SIGNATURE)
    check_same_shape(input, target, LOGITS_SIZE_MESSAGE)
    check_elementwise_floating("binary_cross_entropy_with_logits", "log_sigmoid_cpu", input)
    check_floating_target(target)
    check_broadcast("pos_weight", pos_weight, target, style="first")
    check_broadcast("weight", weight, target, style="second")
    # (their shape errors are crossent's, naming the argument)
    w = broadcast_weight(namespace(target), weight, target)
    pw = broadcast_weight(namespace(target), pos_weight, target, "pos_weight")
    aten_ok = aten.takes_elementwise(input, target, weight, pos_weight)
    chosen = _dispatch.choose("binary_cross_entropy_with_logits", backend, input, aten=aten_ok)
    if chosen == "aten":
        return aten.binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)
    math = eager.BCEWithLogitsMath(reduction)
    impl = _dispatch.implementation("binary_cross_entropy_with_logits", chosen)
    if impl is None:
        loss = eager.row_loss(math, input, target, w, pw)
    else:
        loss = impl(math, input, target, w, pw)
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
    check_focal_reduction(reduction)
    check_tensor("inputs", inputs)
    check_tensor("targets", targets)
    check_same_shape(inputs, targets, LOGITS_SIZE_MESSAGE, torch_size=False)
    math = eager.SigmoidFocalMath(reduction, alpha, gamma)
    impl = _dispatch.resolve("sigmoid_focal_loss", backend, inputs)
    if impl is None:
        return eager.row_loss(math, inputs, targets)
    return impl(math, inputs, targets)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
    *,
    backend: str = "auto",
) -> Tensor:
    """KL divergence with PyTorch's ``kl_div`` contract; computes :func:`crossent.numpy.kl_div`.

    ``backend``: "auto" (on the CPU PyTorch's kernel for small calls and the native kernel above
    ``crossent._dispatch.ATEN_MAX_ELEMENTS`` elements; else eager), "torch" (eager), "native" (the
    compiled CPU kernel: loss and gradient in one pass) or "aten" (forced).
    """
    if reduction == "mean" and size_average is None and reduce is None:
        # (torch warns for this spelling only, not for 'elementwise_mean' or the legacy arguments)
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning,
            stacklevel=2,
        )
    reduction = check_reduction(legacy_reduction(size_average, reduce, reduction), KL_REDUCTIONS)
    check_tensor("input", input, signature=KL_SIGNATURE)
    check_tensor("target", target, signature=KL_SIGNATURE)
    check_elementwise_floating("kl_div", None, input, target)
    check_broadcast("target", target, input, style="first")
    x, t = input, target
    if input.shape != target.shape:  # (broadcast silently, as torch does)
        shape = torch.broadcast_shapes(input.shape, target.shape)
        x, t = input.expand(shape), target.expand(shape)
    chosen = _dispatch.choose("kl_div", backend, x, aten=aten.takes_elementwise(x, t))
    if chosen == "aten":
        return aten.kl_div(x, t, reduction, bool(log_target))
    den = None
    if reduction == "batchmean":
        batch = float(x.shape[0]) if x.dim() > 0 else 1.0
        den = torch.tensor(batch, dtype=eager.compute_dtype(x, t), device=x.device)
    math = eager.KLDivMath("mean" if reduction == "batchmean" else reduction, bool(log_target))
    impl = _dispatch.implementation("kl_div", chosen)
    if impl is None:
        return eager.row_loss(math, x, t, None, None, den)
    return impl(math, x, t, den)


def entropy(input: Tensor, reduction: str = "none") -> Tensor:
    """Entropy of the softmax of logits in nats; computes :func:`crossent.numpy.entropy`."""
    reduction = check_reduction(reduction)
    check_tensor("input", input)
    layout = entropy_layout(input)
    x = _layout.to_rows(input, layout)
    if layout.num_classes == 0:  # an empty sum per row, negated: -0. (what -(p·log p).sum() gives)
        rows = -(x.to(eager.compute_dtype(x)) * 0).sum(-1)
        loss = reduce(rows, reduction)
    else:
        loss = eager.row_loss(eager.EntropyMath(reduction), x, torch.empty(0, device=input.device))
    return _layout.loss_from_rows(loss, layout) if reduction == "none" else loss


__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "focal_loss",
    "kl_div",
    "nll_loss",
    "sigmoid_focal_loss",
]
