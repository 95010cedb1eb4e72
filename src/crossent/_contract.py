"""The option contract of the cross-entropy family: the one place that says what each option means.

Every path (NumPy reference, PyTorch eager, compiled kernels) validates its options here, so an option
means the same thing everywhere and bad input gets the same error everywhere.

Errors name the argument and the value. Where PyTorch raises a ``RuntimeError`` for the same condition,
crossent's error is *also* a ``RuntimeError`` (the classes below inherit from both), so code written
against ``torch.nn.functional`` keeps catching what it caught before.

This module imports nothing from the rest of crossent (it sits below the NumPy reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Reduction = Literal["none", "mean", "sum"]
KLReduction = Literal["none", "mean", "sum", "batchmean"]

REDUCTIONS: tuple[str, ...] = get_args(Reduction)
KL_REDUCTIONS: tuple[str, ...] = get_args(KLReduction)


class CrossentValueError(ValueError, RuntimeError):
    """A bad value. Also a ``RuntimeError``, which is what PyTorch raises for most of these."""


class CrossentTypeError(TypeError, RuntimeError):
    """A bad dtype or type. Also a ``RuntimeError``, which is what PyTorch raises for these."""


class CrossentIndexError(IndexError, RuntimeError):
    """A class index out of range (PyTorch: ``IndexError: Target 5 is out of bounds.``)."""


@dataclass(frozen=True)
class CEOptions:
    """Static options of a categorical cross-entropy call, validated.

    Attributes:
        ignore_index: target value whose positions contribute 0 to the loss, the gradient and the mean's
            denominator (index targets only).
        label_smoothing: ε in [0, 1]; the target becomes (1 − ε)·q + ε/C.
        z_loss: λ ≥ 0; adds λ·lse² to each non-ignored element's loss, weighted like the CE term.
        softcap: s > 0 or None; logits become s·tanh(x/s) before everything else.
        reduction: "none", "sum" or "mean".
    """

    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    reduction: Reduction = "mean"


def check_reduction(reduction: object, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    """Return ``reduction`` if it is one of ``allowed``; raise the error PyTorch raises otherwise."""
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"{reduction} is not a valid value for reduction "
            f"(argument 'reduction' must be one of {', '.join(map(repr, allowed))})"
        )
    return reduction


def _as_float(name: str, value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"argument '{name}' must be a real number, got {value!r}") from None
    if math.isnan(out):
        raise CrossentValueError(f"argument '{name}' must not be NaN")
    return out


def check_label_smoothing(label_smoothing: object) -> float:
    """ε must lie in [0, 1]. (PyTorch silently treats ε < 0 as 0; crossent raises instead.)"""
    eps = _as_float("label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise CrossentValueError(
            f"label_smoothing must be between 0.0 and 1.0. Got: {eps} (argument 'label_smoothing')"
        )
    return eps


def check_z_loss(z_loss: object) -> float:
    z = _as_float("z_loss", z_loss)
    if z < 0.0 or math.isinf(z):
        raise CrossentValueError(f"argument 'z_loss' must be a finite number >= 0, got {z}")
    return z


def check_softcap(softcap: object) -> float | None:
    if softcap is None:
        return None
    s = _as_float("softcap", softcap)
    if not (s > 0.0 and math.isfinite(s)):
        raise CrossentValueError(f"argument 'softcap' must be None or a finite number > 0, got {s}")
    return s


def check_ignore_index(ignore_index: object) -> int:
    if isinstance(ignore_index, bool) or isinstance(ignore_index, float):
        raise TypeError(
            f"argument 'ignore_index' must be int, not {type(ignore_index).__name__} "
            f"(got {ignore_index!r})"
        )
    try:
        return int(ignore_index)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(f"argument 'ignore_index' must be int, got {ignore_index!r}") from None


def ce_options(
    ignore_index: object = -100,
    label_smoothing: object = 0.0,
    z_loss: object = 0.0,
    softcap: object = None,
    reduction: object = "mean",
) -> CEOptions:
    """Validate every option of a categorical cross-entropy call and freeze them."""
    return CEOptions(
        ignore_index=check_ignore_index(ignore_index),
        label_smoothing=check_label_smoothing(label_smoothing),
        z_loss=check_z_loss(z_loss),
        softcap=check_softcap(softcap),
        reduction=check_reduction(reduction),  # type: ignore[arg-type]
    )


def check_gamma(gamma: object) -> float:
    g = _as_float("gamma", gamma)
    if g < 0.0 or math.isinf(g):
        raise CrossentValueError(f"argument 'gamma' must be a finite number >= 0, got {g}")
    return g


def check_sigmoid_focal_alpha(alpha: object) -> float:
    """torchvision's rule: alpha in [0, 1], or -1 to switch the class balance off."""
    a = _as_float("alpha", alpha)
    if not (0.0 <= a <= 1.0) and a != -1:
        raise CrossentValueError(
            f"Invalid alpha value: {a}. alpha must be in the range [0,1] or -1 for ignore."
        )
    return a


def _shape(x: object) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CELayout:
    """How an input of shape (C), (N, C) or (N, C, d1..dk) maps to 2-D rows of classes.

    Attributes:
        shape: the input's shape.
        class_dim: 0 for a 1-D input, else 1.
        num_classes: C.
        loss_shape: shape of the per-element loss (``reduction="none"``).
        prob_target: True if the target holds class probabilities (same shape as the input).
    """

    shape: tuple[int, ...]
    class_dim: int
    num_classes: int
    loss_shape: tuple[int, ...]
    prob_target: bool

    @property
    def rows(self) -> int:
        return math.prod(self.loss_shape)


def ce_layout(input: object, target: object, *, min_dim: int = 1) -> CELayout:
    """Work out the layout of a (input, target) pair exactly as ``torch.nn.functional.cross_entropy`` does.

    The target holds probabilities iff its shape equals the input's; otherwise it holds class indices of
    shape ``input.shape`` without the class dimension. Raises the errors PyTorch raises, naming the
    argument.
    """
    ishape, tshape = _shape(input), _shape(target)
    if len(ishape) < min_dim or len(ishape) == 0:
        if ishape == tshape:  # what torch does for 0-d: it takes the probability path, then fails
            raise CrossentTypeError(
                "Expected floating point type for target with class probabilities, got Long "
                "(argument 'input' is 0-dimensional; it needs a class dimension)"
            )
        raise CrossentValueError(
            f"Expected 1 or more dimensions (got {len(ishape)}) (argument 'input')"
        )
    class_dim = 0 if len(ishape) == 1 else 1
    num_classes = ishape[class_dim]
    if ishape == tshape:
        loss_shape = ishape[:class_dim] + ishape[class_dim + 1 :]
        return CELayout(ishape, class_dim, num_classes, loss_shape, True)
    loss_shape = ishape[:class_dim] + ishape[class_dim + 1 :]
    if len(ishape) == 1:
        if tshape not in ((), (1,)):
            raise CrossentValueError(
                f"For 1D input, 1D target must have size 1, but got target size: {tshape[0] if tshape else 0}"
                f" (argument 'target' has shape {list(tshape)})"
            )
        return CELayout(ishape, class_dim, num_classes, (), False)
    if len(tshape) == 0 or tshape[0] != ishape[0]:
        got = tshape[0] if tshape else 1
        raise CrossentValueError(
            f"Expected input batch_size ({ishape[0]}) to match target batch_size ({got}). "
            f"(argument 'target' has shape {list(tshape)}, argument 'input' has shape {list(ishape)})"
        )
    if len(ishape) == 2 and len(tshape) != 1:
        raise CrossentValueError(
            "0D or 1D target tensor expected, multi-target not supported "
            f"(argument 'target' has shape {list(tshape)} for input of shape {list(ishape)})"
        )
    if tshape != loss_shape:
        raise CrossentValueError(
            f"Expected target size {list(loss_shape)}, got {list(tshape)} "
            f"(argument 'target' for input of shape {list(ishape)})"
        )
    return CELayout(ishape, class_dim, num_classes, loss_shape, False)


def check_class_weight(weight: object, num_classes: int, *, name: str = "weight") -> None:
    """A class weight must be 1-D with one entry per class."""
    if weight is None:
        return
    wshape = _shape(weight)
    if wshape != (num_classes,):
        raise CrossentValueError(
            f"weight tensor should be defined either for all {num_classes} classes or no classes "
            f"but got weight tensor of shape: {list(wshape)} (argument '{name}')"
        )


def check_prob_target_ignore_index(ignore_index: int) -> None:
    if ignore_index >= 0:
        raise CrossentValueError(
            "ignore_index is not supported for floating point target "
            f"(argument 'ignore_index' is {ignore_index}; probability targets have nothing to ignore)"
        )


def out_of_bounds(target_value: int) -> CrossentIndexError:
    return CrossentIndexError(f"Target {target_value} is out of bounds. (argument 'target')")


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
    b = _as_float("beta", beta)
    if not 0.0 <= b <= 1.0:
        raise CrossentValueError(f"argument 'beta' must be in [0, 1], got {b}")
    tau = _as_float("temperature", temperature)
    if not (tau > 0.0 and math.isfinite(tau)):
        raise CrossentValueError(f"argument 'temperature' must be a finite number > 0, got {tau}")
    h = _as_float("hard_weight", hard_weight)
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
    s, t = _shape(student), _shape(teacher)
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
    y = _shape(target)
    if y != s[:-1]:
        raise CrossentValueError(
            f"argument 'target' has shape {list(y)}, expected {list(s[:-1])} (the logits' shape "
            "without the class dimension)"
        )
