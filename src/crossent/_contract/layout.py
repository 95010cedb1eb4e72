"""Shapes, layouts, target dtypes and bounds: the checks the reference and the PyTorch API share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .options import CrossentIndexError, CrossentTypeError, CrossentValueError


def shape_of(x: object) -> tuple[int, ...]:
    return tuple(map(int, x.shape))  # type: ignore[attr-defined]


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
    ishape, tshape = shape_of(input), shape_of(target)
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
    wshape = shape_of(weight)
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
    if hasattr(x, "is_floating_point"):  # a torch tensor: its own (C++) test is the cheap one
        return bool(x.is_floating_point())
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
    if strict_index_dtype:
        ok = target.dtype in (xp.int64, xp.uint8)
    else:
        ok = bool(xp.isdtype(target.dtype, "integral"))
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
    shape = shape_of(input)
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
