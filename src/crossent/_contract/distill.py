"""The options and shapes of the distillation losses (meanings in :mod:`crossent.numpy.distillation`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from .layout import shape_of
from .options import (
    CrossentValueError,
    Reduction,
    as_float,
    check_ignore_index,
    check_reduction,
)

# --------------------------------------------------------------------------------------------------
# Distillation (crossent.numpy.distillation): student vs teacher logits.
# --------------------------------------------------------------------------------------------------

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)


@dataclass(frozen=True)
class DistillOptions:
    """Static options of a distillation call, validated (meanings in :mod:`crossent.numpy.distillation`).

    Attributes:
        divergence: "forward_kl" (KL(p_T‖p_S)), "reverse_kl" (KL(p_S‖p_T)) or "jsd" (generalised JSD).
        beta: β in [0, 1], the teacher's share of the JSD mixture (only used by "jsd").
        temperature: τ > 0, finite; both models' logits are divided by it for the soft term.
        hard_weight: h in [0, 1]; the loss is (1 − h)·soft + h·CE(student logits, target).
        ignore_index: target value whose rows contribute nothing (to either term or the mean's count).
        reduction: "none", "sum" or "mean".
        scale_by_temperature_squared: multiply the soft term by τ² (Hinton et al.); off by default.
    """

    divergence: Divergence = "forward_kl"
    beta: float = 0.5
    temperature: float = 1.0
    hard_weight: float = 0.0
    ignore_index: int = -100
    reduction: Reduction = "mean"
    scale_by_temperature_squared: bool = False

    @property
    def soft_scale(self) -> float:
        """The soft term's factor: (1 − h)·τ² with the τ² scaling, else (1 − h)."""
        tau2 = self.temperature**2 if self.scale_by_temperature_squared else 1.0
        return (1.0 - self.hard_weight) * tau2


def distill_options(
    divergence: object = "forward_kl",
    beta: object = 0.5,
    temperature: object = 1.0,
    hard_weight: object = 0.0,
    ignore_index: object = -100,
    reduction: object = "mean",
    scale_by_temperature_squared: object = False,
) -> DistillOptions:
    """Validate every option of a distillation call and freeze them (errors name the argument)."""
    if not isinstance(divergence, str) or divergence not in DIVERGENCES:
        raise CrossentValueError(
            f"argument 'divergence' must be one of {', '.join(map(repr, DIVERGENCES))}, "
            f"got {divergence!r}"
        )
    b = as_float("beta", beta)
    if not 0.0 <= b <= 1.0:
        raise CrossentValueError(f"argument 'beta' must be in [0, 1], got {b}")
    tau = as_float("temperature", temperature)
    if not (tau > 0.0 and math.isfinite(tau)):
        raise CrossentValueError(f"argument 'temperature' must be a finite number > 0, got {tau}")
    h = as_float("hard_weight", hard_weight)
    if not 0.0 <= h <= 1.0:
        raise CrossentValueError(f"argument 'hard_weight' must be in [0, 1], got {h}")
    if not isinstance(scale_by_temperature_squared, bool):
        raise TypeError(
            "argument 'scale_by_temperature_squared' must be bool, "
            f"got {scale_by_temperature_squared!r}"
        )
    return DistillOptions(
        divergence=divergence,  # type: ignore[arg-type]
        beta=b,
        temperature=tau,
        hard_weight=h,
        ignore_index=check_ignore_index(ignore_index),
        reduction=check_reduction(reduction),  # type: ignore[arg-type]
        scale_by_temperature_squared=scale_by_temperature_squared,
    )


def check_distill_shapes(
    student: object, teacher: object, target: object, hard_weight: float
) -> None:
    """Student and teacher logits must have the same shape (same vocabulary); a target, if given, the
    shape without the class axis; ``hard_weight > 0`` needs a target."""
    s, t = shape_of(student), shape_of(teacher)
    if len(s) < 1:
        raise CrossentValueError(
            f"argument 'student_logits' needs a class (last) dimension, got shape {list(s)}"
        )
    if s[-1] != t[-1]:
        raise CrossentValueError(
            f"student and teacher vocabularies differ: argument 'student_logits' has {s[-1]} classes, "
            f"argument 'teacher_logits' has {t[-1]}"
        )
    if s != t:
        raise CrossentValueError(
            f"argument 'teacher_logits' has shape {list(t)}, expected the student's {list(s)}"
        )
    if target is None:
        if hard_weight > 0:
            raise CrossentValueError(
                f"argument 'hard_weight' is {hard_weight} but no target was given (argument 'target')"
            )
        return
    y = shape_of(target)
    if y != s[:-1]:
        raise CrossentValueError(
            f"argument 'target' has shape {list(y)}, expected {list(s[:-1])} (the logits' shape "
            "without the class dimension)"
        )
