"""The tensor arguments of the PyTorch distillation losses (:func:`crossent.distillation_loss`,
:func:`crossent.linear_distillation_loss`, the vocab-parallel form): types, shapes, devices, targets.

Their options are :mod:`.distill`. Tensors are duck-typed except where a check must tell a tensor from
anything else; torch is imported only inside those checks (only the PyTorch API calls them, so it is
loaded already).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .distill import DistillOptions, check_distill_shapes
from .layout import check_target_bounds
from .options import CrossentTypeError, CrossentValueError


def check_logits(name: str, z: object) -> None:
    """``z`` (argument ``name``) must be a floating-point torch.Tensor."""
    import torch

    if not isinstance(z, torch.Tensor):
        raise TypeError(f"argument '{name}' must be a Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise CrossentTypeError(
            f"argument '{name}' must be a floating-point tensor of logits, got dtype {z.dtype}"
        )


def check_target_dtype(target: object) -> None:
    """A target is None or an integer tensor of class indices."""
    import torch

    if target is None:
        return
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"argument 'target' must be a Tensor or None, got {type(target).__name__}")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise CrossentTypeError(
            f"argument 'target' must hold integer class indices, got dtype {target.dtype}"
        )


def check_target(target: Any, num_classes: int, options: DistillOptions) -> None:
    """:func:`check_target_dtype`, and on the CPU the bounds (free there; on accelerators it would
    synchronise with the host, so it is not checked)."""
    check_target_dtype(target)
    if target is not None and target.device.type == "cpu":
        import array_api_compat

        t = target.reshape(-1)
        check_target_bounds(
            array_api_compat.array_namespace(t), t, num_classes, options.ignore_index
        )


def check_distillation(
    student_logits: Any, teacher_logits: Any, target: Any, options: DistillOptions
) -> None:
    """The tensors of :func:`crossent.distillation_loss` (logits checked before the options are)."""
    check_distill_shapes(student_logits, teacher_logits, target, options.hard_weight)
    if teacher_logits.device != student_logits.device:
        raise CrossentValueError(
            f"argument 'teacher_logits' is on {teacher_logits.device}, "
            f"argument 'student_logits' on {student_logits.device}"
        )
    check_target(target, student_logits.shape[-1], options)


def check_linear_args(
    name: str, x: object, w: object, b: object, lead: tuple[int, ...] | None
) -> tuple[Any, Any, Any]:
    """One model's ``{name}_input`` (…, D), ``{name}_weight`` (V, D) and ``{name}_bias`` (V,) or None:
    floating tensors of one dtype on one device; with ``lead``, the input's leading shape must be it.

    Returns:
        ``(x as (N, D) rows, w, b)``.
    """
    import torch

    prefix = name
    for arg, t in ((f"{prefix}_input", x), (f"{prefix}_weight", w)):
        check_logits(arg, t)
    assert isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor)
    if x.dim() < 1:
        raise CrossentValueError(
            f"argument '{prefix}_input' must have shape (..., D), got a 0-d tensor"
        )
    d = x.shape[-1]
    if w.dim() != 2 or w.shape[1] != d:
        raise CrossentValueError(
            f"argument '{prefix}_weight' must have shape (V, {d}) for {prefix}_input of shape "
            f"{list(x.shape)}, got {list(w.shape)}"
        )
    if lead is not None and tuple(x.shape[:-1]) != lead:
        raise CrossentValueError(
            f"argument '{prefix}_input' has leading shape {list(x.shape[:-1])}, the student's is "
            f"{list(lead)}"
        )
    for arg, t in ((f"{prefix}_weight", w), (f"{prefix}_bias", b)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"argument '{arg}' must be a Tensor, got {type(t).__name__}")
        if t.dtype != x.dtype:
            raise CrossentTypeError(
                f"expected {arg} of dtype {x.dtype} (the {prefix}_input's), got {t.dtype} "
                f"(argument '{arg}')"
            )
        if t.device != x.device:
            raise CrossentValueError(
                f"argument '{arg}' is on {t.device}, {prefix}_input on {x.device}"
            )
    if isinstance(b, torch.Tensor) and tuple(b.shape) != (w.shape[0],):
        raise CrossentValueError(
            f"argument '{prefix}_bias' must have shape ({w.shape[0]},), got {list(b.shape)}"
        )
    return x.reshape(-1, d), w, b


@dataclass(frozen=True)
class LinearDistillArgs:
    """The validated tensors of a fused distillation call: (N, D) rows of both inputs, weights, biases,
    the (N,) target (or None) and the inputs' leading shape."""

    xs: Any
    ws: Any
    bs: Any
    xt: Any
    wt: Any
    bt: Any
    target: Any
    lead: tuple[int, ...]


def check_linear_distillation(
    student: tuple[object, object, object],
    teacher: tuple[object, object, object],
    target: Any,
    options: DistillOptions,
    workspace_bytes: object,
) -> LinearDistillArgs:
    """The tensors of :func:`crossent.linear_distillation_loss`: ``student`` and ``teacher`` are each
    ``(input, weight, bias)``; both models share the vocabulary, the device and the leading shape."""
    xs, ws, bs = check_linear_args("student", *student, None)
    lead = tuple(student[0].shape[:-1])  # type: ignore[attr-defined]
    xt, wt, bt = check_linear_args("teacher", *teacher, lead)
    if wt.shape[0] != ws.shape[0]:
        raise CrossentValueError(
            f"student and teacher vocabularies differ: argument 'student_weight' has {ws.shape[0]} rows, "
            f"argument 'teacher_weight' has {wt.shape[0]}"
        )
    if xt.device != xs.device:
        raise CrossentValueError(
            f"argument 'teacher_input' is on {xt.device}, argument 'student_input' on {xs.device}"
        )
    if target is not None and tuple(target.shape) != lead:
        raise CrossentValueError(
            f"argument 'target' has shape {list(target.shape)}, expected {list(lead)} (the inputs' "
            "leading shape)"
        )
    if target is None and options.hard_weight > 0:
        raise CrossentValueError(
            f"argument 'hard_weight' is {options.hard_weight} but no target was given (argument 'target')"
        )
    check_target(target, ws.shape[0], options)
    if workspace_bytes is not None and (
        isinstance(workspace_bytes, bool)
        or not isinstance(workspace_bytes, int)
        or workspace_bytes < 1
    ):
        raise CrossentValueError(
            f"argument 'workspace_bytes' must be an int >= 1, got {workspace_bytes!r}"
        )
    y = None if target is None else target.reshape(-1)
    return LinearDistillArgs(xs, ws, bs, xt, wt, bt, y, lead)


__all__ = [
    "LinearDistillArgs",
    "check_distillation",
    "check_linear_args",
    "check_linear_distillation",
    "check_logits",
    "check_target",
    "check_target_dtype",
]
