r"""Knowledge distillation losses for PyTorch: a student's logits against a teacher's.

* :func:`distillation_loss` on (…, V) logits of both models;
* :func:`linear_distillation_loss`, the fused form on hidden states and the two output layers, which never
  holds either model's (N, V) logits.

Both compute :func:`crossent.numpy.distillation_loss` (the formulas, the JSD's β ∈ {0, 1} convention and
the reduction are documented there): forward KL, reverse KL or the generalised JSD of tempered
distributions, plus an optional hard cross-entropy term. The backward is the reference's analytic
gradient; math runs in float32 for half-precision inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import _dispatch
from ._contract import (
    CrossentValueError,
    DistillOptions,
    check_distillation,
    check_linear_distillation,
    check_logits,
    distill_options,
)
from .numpy.distillation import distill_denominator, distill_rows, distill_rows_grad
from .numpy.reduce import reduce, upstream

Tensor = torch.Tensor

__all__ = ["distillation_loss", "linear_distillation_loss"]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


@dataclass(frozen=True)
class _Spec:
    options: DistillOptions
    shape: tuple[int, ...]


class _Distillation(torch.autograd.Function):
    """Loss from :func:`crossent.numpy.distillation.distill_rows`; backward from its analytic gradient."""

    @staticmethod
    def forward(ctx: Any, spec: _Spec, zs: Tensor, zt: Tensor, target: Tensor | None) -> Tensor:  # type: ignore[override]
        cdt = _compute_dtype(zs, zt)
        v = zs.shape[-1]
        s, t = zs.reshape(-1, v).to(cdt), zt.reshape(-1, v).to(cdt)
        y = None if target is None else target.reshape(-1)
        loss = distill_rows(s, t, y, spec.options)
        den = distill_denominator(y, spec.options, loss)
        ctx.spec = spec
        ctx.save_for_backward(zs, zt, target)
        return reduce(loss.reshape(spec.shape), spec.options.reduction, den)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        spec: _Spec = ctx.spec
        zs, zt, target = ctx.saved_tensors
        cdt = _compute_dtype(zs, zt)
        v = zs.shape[-1]
        s, t = zs.reshape(-1, v).to(cdt), zt.reshape(-1, v).to(cdt)
        y = None if target is None else target.reshape(-1)
        like = torch.zeros(spec.shape, dtype=cdt, device=zs.device)
        den = distill_denominator(y, spec.options, like.reshape(-1))
        g = upstream(like, spec.options.reduction, grad_output, den).reshape(-1)
        want_s, want_t = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        ds, dt = distill_rows_grad(s, t, y, spec.options, g, teacher=want_t)
        d_s = ds.reshape(zs.shape).to(zs.dtype) if want_s else None
        d_t = dt.reshape(zt.shape).to(zt.dtype) if want_t and dt is not None else None
        return None, d_s, d_t, None


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor | None = None,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    scale_by_temperature_squared: bool = False,
) -> Tensor:
    r"""Distillation loss :math:`(1-h)\,s\,D(p_T, p_S) + h\,\mathrm{CE}(z^S, y)` of (…, V) logits.

    Computes :func:`crossent.numpy.distillation_loss` (formulas there) with its analytic backward. The
    teacher gets a gradient only when ``teacher_logits`` requires one (then the exact one; detach it
    for the usual frozen teacher).

    Args:
        student_logits: (…, V) floating logits.
        teacher_logits: (…, V) floating logits of the same shape (same vocabulary).
        target: (…) integer class indices (for the hard term and ``ignore_index``), or None.
        divergence: "forward_kl" (KL(p_T‖p_S)), "reverse_kl" (KL(p_S‖p_T)) or "jsd".
        beta: the teacher's share β ∈ [0, 1] of the JSD mixture; β = 0 is forward KL, β = 1 reverse KL.
        temperature: τ > 0, applied to both models' logits for the soft term.
        hard_weight: h ∈ [0, 1], the weight of the cross-entropy on the untempered student logits.
        ignore_index: target value whose rows contribute nothing.
        reduction: "none" (shape (…)), "sum" or "mean" (over non-ignored rows; all rows without target).
        scale_by_temperature_squared: multiply the soft term by τ² (off by default).

    Returns:
        The loss, float32 for half-precision logits (float64 if either is float64).

    Raises:
        ValueError: mismatched shapes or vocabularies, a bad option (naming the argument).
        TypeError: non-floating logits, a non-integer target.
        IndexError: a target outside [0, V) other than ``ignore_index`` (checked on the CPU).

    Example:
        >>> import torch, crossent
        >>> zs = torch.zeros(1, 2, requires_grad=True)
        >>> crossent.distillation_loss(zs, torch.tensor([[1.0, 3.0]]).log())  # doctest: +ELLIPSIS
        tensor(0.1308..., grad_fn=...)
    """
    check_logits("student_logits", student_logits)
    check_logits("teacher_logits", teacher_logits)
    options = distill_options(
        divergence,
        beta,
        temperature,
        hard_weight,
        ignore_index,
        reduction,
        scale_by_temperature_squared,
    )
    check_distillation(student_logits, teacher_logits, target, options)
    spec = _Spec(options, tuple(student_logits.shape[:-1]))
    return _Distillation.apply(spec, student_logits, teacher_logits, target)


def linear_distillation_loss(
    student_input: Tensor,
    student_weight: Tensor,
    teacher_input: Tensor,
    teacher_weight: Tensor,
    target: Tensor | None = None,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    scale_by_temperature_squared: bool = False,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    workspace_bytes: int | None = None,
    backend: str = "auto",
) -> Tensor:
    r"""Fused ``distillation_loss(F.linear(student_input, student_weight, student_bias),
    F.linear(teacher_input, teacher_weight, teacher_bias), target, ...)`` that never holds the (N, V)
    logits of either model.

    Rows are processed in chunks whose temporaries fit ``workspace_bytes``; for a scalar loss the
    student's gradients are computed during the forward (four matrix products in all), for
    ``reduction="none"`` the backward recomputes the logits and applies each row's grad_output exactly.
    The teacher is a constant: ``teacher_input``, ``teacher_weight`` and ``teacher_bias`` get no
    gradient. How: :mod:`crossent._backends.linear_distill`.

    Args:
        student_input: (…, D_S) floating hidden states of the student.
        student_weight: (V, D_S), the student_input's dtype.
        teacher_input: (…, D_T) hidden states of the teacher (same leading shape; D_T may differ).
        teacher_weight: (V, D_T), the teacher_input's dtype (the same V as the student's).
        target, divergence, beta, temperature, hard_weight, ignore_index, reduction,
            scale_by_temperature_squared: as in :func:`distillation_loss`.
        student_bias, teacher_bias: (V,) or None.
        workspace_bytes: cap on the chunk's temporaries (default 144 MiB on the CPU, 256 MiB on
            accelerators); at least one row is processed at a time.
        backend: "auto" (the divergence rows by an in-place block kernel on the CPU, by a Triton
            kernel on CUDA; the reference rows for float64 and elsewhere), "torch" (the reference rows
            of :mod:`crossent.numpy.distillation`) or "triton" (the Triton kernel; CPU tensors under
            ``TRITON_INTERPRET=1``).

    Returns:
        The loss, float32 for half-precision inputs (dW and db accumulate in float32 too); shape () or,
        for ``reduction="none"``, the leading shape (…).

    Raises:
        ValueError: mismatched vocabularies or shapes, a bad option, ``workspace_bytes`` < 1, an
            unknown ``backend`` (or "triton" without Triton installed).
        TypeError: non-floating inputs, dtypes that differ within one model, a non-integer target.

    Example:
        >>> import torch, crossent
        >>> x = torch.zeros(2, 3)
        >>> crossent.linear_distillation_loss(x, torch.zeros(4, 3), x, torch.zeros(4, 3))
        tensor(0.)
    """
    from ._backends import linear_distill

    options = distill_options(
        divergence,
        beta,
        temperature,
        hard_weight,
        ignore_index,
        reduction,
        scale_by_temperature_squared,
    )
    args = check_linear_distillation(
        (student_input, student_weight, student_bias),
        (teacher_input, teacher_weight, teacher_bias),
        target,
        options,
        workspace_bytes,
    )
    _dispatch.check_backend(backend, "linear_distillation_loss")  # the table lists the row kernels
    if backend == "triton" and not _dispatch.triton_available():
        raise CrossentValueError(
            "argument 'backend': Triton is not available (install triton, or use 'auto'/'torch'), "
            "got 'triton'"
        )
    grad_on = torch.is_grad_enabled()
    xs, ws, bs = args.xs, args.ws, args.bs
    spec = linear_distill.LinearDistillSpec(
        options=options,
        workspace_bytes=workspace_bytes,
        need_input=grad_on and xs.requires_grad,
        need_weight=grad_on and ws.requires_grad,
        need_bias=grad_on and bs is not None and bs.requires_grad,
        backend=backend,
    )
    bt = None if args.bt is None else args.bt.detach()
    loss = linear_distill.linear_distillation(
        spec, xs, ws, bs, args.xt.detach(), args.wt.detach(), bt, args.target
    )
    return loss.reshape(args.lead) if options.reduction == "none" else loss
