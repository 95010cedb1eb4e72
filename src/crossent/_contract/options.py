"""The options of the family and the errors crossent raises: what each option means, validated."""

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


def as_float(name: str, value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"argument '{name}' must be a real number, got {value!r}") from None
    if math.isnan(out):
        raise CrossentValueError(f"argument '{name}' must not be NaN")
    return out


def check_label_smoothing(label_smoothing: object) -> float:
    """ε must lie in [0, 1]. (PyTorch silently treats ε < 0 as 0; crossent raises instead.)"""
    eps = as_float("label_smoothing", label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise CrossentValueError(
            f"label_smoothing must be between 0.0 and 1.0. Got: {eps} (argument 'label_smoothing')"
        )
    return eps


def check_z_loss(z_loss: object) -> float:
    z = as_float("z_loss", z_loss)
    if z < 0.0 or math.isinf(z):
        raise CrossentValueError(f"argument 'z_loss' must be a finite number >= 0, got {z}")
    return z


def check_softcap(softcap: object) -> float | None:
    if softcap is None:
        return None
    s = as_float("softcap", softcap)
    if not (s > 0.0 and math.isfinite(s)):
        raise CrossentValueError(f"argument 'softcap' must be None or a finite number > 0, got {s}")
    return s


# torch's name for a function in its argument-parser messages, and the positions of its arguments
Signature = tuple[str, dict[str, int]]
CE_SIGNATURE: Signature = (
    "cross_entropy_loss",
    {"input": 1, "target": 2, "weight": 3, "ignore_index": 5},
)
NLL_SIGNATURE: Signature = (
    "nll_loss_nd",
    {"input": 1, "target": 2, "weight": 3, "ignore_index": 5},
)
BCE_LOGITS_SIGNATURE: Signature = (
    "binary_cross_entropy_with_logits",
    {"weight": 3, "pos_weight": 4},
)
KL_SIGNATURE: Signature = ("kl_div", {"input": 1, "target": 2})


def argument_name(name: str, signature: Signature | None) -> str:
    """``argument 'name'``, as torch's argument parser writes it when ``signature`` is given."""
    if signature is None or name not in signature[1]:
        return f"argument '{name}'"
    return f"{signature[0]}(): argument '{name}' (position {signature[1][name]})"


def check_ignore_index(ignore_index: object, signature: Signature | None = None) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        try:
            if isinstance(ignore_index, (bool, float)):
                raise TypeError
            return int(ignore_index)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise TypeError(
                f"{argument_name('ignore_index', signature)} must be int, not "
                f"{type(ignore_index).__name__} (got {ignore_index!r})"
            ) from None
    return int(ignore_index)


def ce_options(
    ignore_index: object = -100,
    label_smoothing: object = 0.0,
    z_loss: object = 0.0,
    softcap: object = None,
    reduction: object = "mean",
    signature: Signature | None = None,
) -> CEOptions:
    """Validate every option of a categorical cross-entropy call and freeze them (``signature``: the
    torch function whose argument-parser text the errors carry)."""
    return CEOptions(
        ignore_index=check_ignore_index(ignore_index, signature),
        label_smoothing=check_label_smoothing(label_smoothing),
        z_loss=check_z_loss(z_loss),
        softcap=check_softcap(softcap),
        reduction=check_reduction(reduction),  # type: ignore[arg-type]
    )


def check_gamma(gamma: object) -> float:
    g = as_float("gamma", gamma)
    if g < 0.0 or math.isinf(g):
        raise CrossentValueError(f"argument 'gamma' must be a finite number >= 0, got {g}")
    return g


def check_sigmoid_focal_alpha(alpha: object) -> float:
    """torchvision's rule: alpha in [0, 1], or -1 to switch the class balance off."""
    a = as_float("alpha", alpha)
    if not (0.0 <= a <= 1.0) and a != -1:
        raise CrossentValueError(
            f"Invalid alpha value: {a}. alpha must be in the range [0,1] or -1 for ignore."
        )
    return a
