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
from typing import Any, Literal, get_args

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


# torch's name for a function in its argument-parser messages, and the positions of its arguments
Signature = tuple[str, dict[str, int]]
CE_SIGNATURE: Signature = (
    "cross_entropy_loss",
    {"input": 1, "target": 2, "weight": 3, "ignore_index": 5},
)
NLL_SIGNATURE: Signature = ("nll_loss_nd", {"input": 1, "target": 2, "weight": 3, "ignore_index": 5})
BCE_LOGITS_SIGNATURE: Signature = (
    "binary_cross_entropy_with_logits",
    {"weight": 3, "pos_weight": 4},
)
KL_SIGNATURE: Signature = ("kl_div", {"input": 1, "target": 2})


def _argument(name: str, signature: Signature | None) -> str:
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
                f"{_argument('ignore_index', signature)} must be int, not "
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
    where = f"(argument 'target' has shape {list(tshape)} for input of shape {list(ishape)})"
    if len(ishape) == 4 and len(tshape) != 3:  # torch's 2-D spatial path has its own messages
        raise CrossentValueError(
            "only batches of spatial targets supported (3D tensors) but got targets of dimension: "
            f"{len(tshape)} {where}"
        )
    if tshape != loss_shape:
        if len(ishape) == 4:
            raise CrossentValueError(
                f"size mismatch (got input: {list(ishape)} , target: {list(tshape)} {where}"
            )
        raise CrossentValueError(
            f"Expected target size {list(loss_shape)}, got {list(tshape)} "
            f"(argument 'target' for input of shape {list(ishape)})"
        )
    spatial = math.prod(loss_shape[1:])
    if num_classes == 0 and len(ishape) not in (2, 4) and ishape[0] > 0 and spatial > 0:
        # torch flattens (N, 0, d…) to (N, 0, 1, d) for its 2-D kernel, which then rejects the shapes
        raise CrossentValueError(
            f"size mismatch (got input: [{ishape[0]}, 0, 0, 0] , target: [{ishape[0]}, 1, {spatial}] "
            "(argument 'input' has no classes)"
        )
    return CELayout(ishape, class_dim, num_classes, loss_shape, False)


def check_class_weight(
    weight: object, num_classes: int, *, name: str = "weight", prefix: str = ""
) -> None:
    """A class weight must be 1-D with one entry per class (``prefix``: torch's, e.g. "cross_entropy: ")."""
    if weight is None:
        return
    wshape = _shape(weight)
    if wshape != (num_classes,):
        raise CrossentValueError(
            f"{prefix}weight tensor should be defined either for all {num_classes} classes or no classes "
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


# --- targets, dtypes and shapes (shared by the reference and the PyTorch API) ---------------------


def _is_floating(xp: Any, x: Any) -> bool:
    return bool(xp.isdtype(x.dtype, "real floating"))


def check_target_dtypes(
    xp: Any, input: Any, target: Any, layout: CELayout, *, strict_index_dtype: bool
) -> None:
    """Input floating; index targets integral (int64/uint8 only when ``strict_index_dtype``, torch's rule);
    probability targets floating (checked first, as torch does)."""
    if layout.prob_target and not _is_floating(xp, target):
        raise CrossentTypeError(
            "Expected floating point type for target with class probabilities, got "
            f"{torch_dtype_name(target.dtype)} (argument 'target')"
        )
    if not _is_floating(xp, input):
        raise CrossentTypeError(
            f"argument 'input' must be a floating-point array of logits, got dtype {input.dtype}"
        )
    if layout.prob_target:
        if not _is_floating(xp, target):
            raise CrossentTypeError(
                "Expected floating point type for target with class probabilities, got "
                f"{torch_dtype_name(target.dtype)} (argument 'target')"
            )
        return
    ok = bool(xp.isdtype(target.dtype, "integral")) and (
        not strict_index_dtype or target.dtype in (xp.int64, xp.uint8)
    )
    if not ok:
        raise CrossentTypeError(
            f"expected target dtype to be Long or Byte, but got {torch_dtype_name(target.dtype)} "
            "(argument 'target' holds class indices: use an integer array)"
        )


def check_target_bounds(xp: Any, target: Any, num_classes: int, ignore_index: int) -> None:
    """Raise IndexError for the first index target outside [0, C) that is not ``ignore_index``."""
    if target.shape[0] == 0:
        return
    t = xp.astype(target, xp.int64)
    bad = ((t < 0) | (t >= num_classes)) & (t != ignore_index)
    if bool(xp.any(bad)):
        first = t[bad][0]
        raise out_of_bounds(int(first))


def torch_dtype_name(dtype: object) -> str:
    """PyTorch's name of a dtype in its error messages (Long, Float, …)."""
    names = {
        "int64": "Long",
        "int32": "Int",
        "int16": "Short",
        "int8": "Char",
        "uint8": "Byte",
        "bool": "Bool",
        "float32": "Float",
        "float64": "Double",
        "float16": "Half",
        "bfloat16": "BFloat16",
    }
    key = str(dtype).replace("torch.", "")
    return names.get(key, key)


def entropy_layout(input: object) -> CELayout:
    """The layout of logits whose softmax entropy is taken (class axis 0 for 1-D input, else 1)."""
    shape = _shape(input)
    if len(shape) == 0:
        raise CrossentValueError("argument 'input' must have a class dimension (got a 0-d array)")
    class_dim = 0 if len(shape) == 1 else 1
    loss_shape = shape[:class_dim] + shape[class_dim + 1 :]
    return CELayout(shape, class_dim, shape[class_dim], loss_shape, False)


BCE_SIZE_MESSAGE = (
    "Using a target size ({t}) that is different to the input size ({i}) is deprecated. "
    "Please ensure they have the same size. (arguments 'target' and 'input')"
)
LOGITS_SIZE_MESSAGE = (
    "Target size ({t}) must be the same as input size ({i}) (arguments 'target' and 'input')"
)


def check_focal_reduction(reduction: object) -> None:
    """torchvision's check (and message) for ``sigmoid_focal_loss``'s reduction."""
    if reduction not in ("none", "mean", "sum"):
        raise CrossentValueError(
            f"Invalid Value for arg 'reduction': '{reduction} \n Supported reduction modes: 'none', 'mean', 'sum'"
        )


def check_focal_alpha(alpha: object, num_classes: int) -> None:
    """α of the softmax focal loss: None, a number, or a () / (C,) array."""
    if alpha is None or not hasattr(alpha, "shape"):
        if alpha is not None and not isinstance(alpha, (int, float)):
            raise CrossentTypeError(
                f"argument 'alpha' must be None, a number or a (C,) array, got {alpha!r}"
            )
        return
    if tuple(alpha.shape) not in ((num_classes,), ()):
        raise CrossentValueError(
            f"argument 'alpha' must be a scalar or have shape ({num_classes},), got shape {tuple(alpha.shape)}"
        )


# --- checks of the PyTorch API (tensors are duck-typed here: this module never imports torch) ------


def check_tensor(
    name: str, value: object, *, optional: bool = False, signature: Signature | None = None
) -> None:
    """``value`` must be a torch.Tensor (None allowed when ``optional``), with torch's message."""
    if value is None and optional:
        return
    import torch  # loaded already: only the PyTorch API calls this

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{_argument(name, signature)} must be Tensor, not {type(value).__name__}")


def check_floating_input(input: Any, target: Any, prob_target: bool, kernel: str) -> None:
    """Integer logits: torch's text (its kernel ``kernel`` has no integer version).

    With probability targets torch checks the target's dtype first (:func:`check_target_dtypes`).
    """
    if input.is_floating_point() or (prob_target and not target.is_floating_point()):
        return
    raise CrossentTypeError(
        f'"{kernel}" not implemented for \'{torch_dtype_name(input.dtype)}\' '
        "(argument 'input' must be floating point)"
    )


def check_elementwise_floating(
    function: str, kernel: str | None, input: Any, target: Any = None
) -> None:
    """Integer input (or target) of an elementwise loss: torch's text.

    ``kernel``: the name of torch's CPU kernel that rejects the dtype; None for ``kl_div``, which
    rejects integral inputs and targets by name.
    """
    if kernel is None:
        if not (input.is_floating_point() and target.is_floating_point()):
            raise CrossentTypeError(
                f"{function}: Integral inputs not supported. (arguments 'input' and 'target' must be "
                "floating point)"
            )
        return
    if not input.is_floating_point():
        raise CrossentTypeError(
            f'"{kernel}" not implemented for \'{torch_dtype_name(input.dtype)}\' '
            f"(argument 'input' of {function} must be floating point)"
        )


def check_broadcast(name: str, value: Any, target: Any, *, style: str) -> None:
    """An elementwise weight that does not broadcast to the target: torch's text for its operation.

    ``style``: "expand" (``binary_cross_entropy`` broadcasts the shapes first), "second" (the value
    is the second operand of torch's product), "first" (the first).
    """
    if value is None:
        return
    import torch

    a, b = torch.Size(value.shape), torch.Size(target.shape)
    try:
        if style == "expand":
            torch.broadcast_shapes(b, a)
        elif style == "second":
            torch._C._infer_size(b, a)
        else:
            torch._C._infer_size(a, b)
    except RuntimeError as e:
        raise CrossentValueError(
            f"{e} (argument '{name}' of shape {tuple(a)} does not broadcast to shape {tuple(b)})"
        ) from None


def check_normalize_by(normalize_by: object, reduction: str) -> None:
    """``normalize_by`` replaces the mean's denominator: it needs ``reduction="mean"``."""
    if normalize_by is not None and reduction != "mean":
        raise CrossentValueError(
            f"argument 'normalize_by' replaces the mean's denominator; it needs reduction='mean', "
            f"got reduction={reduction!r}"
        )


def check_index_weight_dtype(input: Any, weight: Any) -> None:
    """With class-index targets torch wants the class weight in the input's dtype."""
    if weight is not None and weight.dtype != input.dtype:
        raise CrossentTypeError(
            f"expected scalar type {torch_dtype_name(input.dtype)} but found "
            f"{torch_dtype_name(weight.dtype)} (argument 'weight' must have the input's dtype for "
            "class-index targets)"
        )


def check_index_target_only(prob_target: bool) -> None:
    """``nll_loss`` takes class indices only (torch's message)."""
    if prob_target:
        raise CrossentValueError(
            "0D or 1D target tensor expected, multi-target not supported (argument 'target' of "
            "nll_loss must hold class indices)"
        )


def check_same_dtype(input: Any, target: Any) -> None:
    """``binary_cross_entropy`` wants the target in the input's dtype (torch's message)."""
    if target.dtype != input.dtype:
        raise CrossentTypeError(
            f"Found dtype {torch_dtype_name(target.dtype)} but expected "
            f"{torch_dtype_name(input.dtype)} (argument 'target' must have the input's dtype)"
        )


def check_same_shape(input: Any, target: Any, message: str, *, torch_size: bool = True) -> None:
    """Elementwise losses: target and input of one shape (``message``: torch's text with {t}, {i})."""
    if tuple(target.shape) != tuple(input.shape):
        t, i = tuple(target.shape), tuple(input.shape)
        if torch_size:
            t, i = f"torch.Size({list(t)})", f"torch.Size({list(i)})"  # type: ignore[assignment]
        raise CrossentValueError(message.format(t=t, i=i))


def check_floating_target(target: Any) -> None:
    """``binary_cross_entropy_with_logits`` needs a floating target (torch's message)."""
    if not target.is_floating_point():
        raise CrossentTypeError(
            "result type Float can't be cast to the desired output type "
            f"{torch_dtype_name(target.dtype)} (argument 'target' must be floating point)"
        )


def check_unit_interval(values: Any, name: str) -> None:
    """Probabilities of ``binary_cross_entropy`` in [0, 1] (checked where it costs no sync: CPU)."""
    if not bool(((values >= 0) & (values <= 1)).all()):
        raise CrossentValueError(
            f"all elements of {name} should be between 0 and 1 (argument '{name}')"
        )


def check_focal_alpha_tensor(alpha: Any, num_classes: int) -> None:
    """A tensor α of the softmax focal loss is (C,) (a 0-d one is taken as a number)."""
    if tuple(alpha.shape) != (num_classes,):
        raise CrossentValueError(
            f"argument 'alpha' must be a number or a (C,) tensor, got shape {tuple(alpha.shape)}"
        )


def check_dim_at_least_one(input: Any) -> None:
    """``nll_loss`` of a 0-d input (torch's message)."""
    if input.dim() == 0:
        raise CrossentValueError("Expected 1 or more dimensions (got 0) (argument 'input')")


def check_target_bounds_torch(target: Any, num_classes: int, ignore_index: int) -> None:
    """Index targets outside [0, C): IndexError on the CPU; on accelerators a device-side assert that
    does not synchronise with the host. Not checked while ``torch.compile`` traces."""
    import array_api_compat
    import torch

    if torch.compiler.is_compiling():
        return  # a traced graph cannot branch on data (an out-of-range gather still fails at run time)
    if target.device.type == "cpu":
        if target.numel() == 0:
            return
        low, high = torch.aminmax(target)  # one pass; the masked search only when something is off
        if int(low) >= 0 and int(high) < num_classes:
            return
        check_target_bounds(array_api_compat.array_namespace(target), target, num_classes, ignore_index)
    else:
        t = target.long()
        bad = ((t < 0) | (t >= num_classes)) & (t != ignore_index)
        torch._assert_async(
            ~bad.any(), f"crossent: a target is out of bounds [0, {num_classes}) (argument 'target')"
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
