"""Checks of the PyTorch API with PyTorch's message texts (tensors are duck-typed; torch is imported
only inside a check that needs it, when it is loaded already)."""

from __future__ import annotations

from typing import Any

from .layout import check_target_bounds, torch_dtype_name
from .options import CrossentTypeError, CrossentValueError, Signature, argument_name

# --- checks of the PyTorch API (tensors are duck-typed here: this module never imports torch) ------


def check_tensor(
    name: str, value: object, *, optional: bool = False, signature: Signature | None = None
) -> None:
    """``value`` must be a torch.Tensor (None allowed when ``optional``), with torch's message."""
    if value is None and optional:
        return
    import torch  # loaded already: only the PyTorch API calls this

    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{argument_name(name, signature)} must be Tensor, not {type(value).__name__}"
        )


def check_floating_input(input: Any, target: Any, prob_target: bool, kernel: str) -> None:
    """Integer logits: torch's text (its kernel ``kernel`` has no integer version).

    With probability targets torch checks the target's dtype first (:func:`check_target_dtypes`).
    """
    if input.is_floating_point() or (prob_target and not target.is_floating_point()):
        return
    raise CrossentTypeError(
        f"\"{kernel}\" not implemented for '{torch_dtype_name(input.dtype)}' "
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
            f"\"{kernel}\" not implemented for '{torch_dtype_name(input.dtype)}' "
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

    if torch.compiler.is_compiling():
        return  # (torch's shape helper is not traceable; a bad shape still fails in the traced ops)
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
        check_target_bounds(
            array_api_compat.array_namespace(target), target, num_classes, ignore_index
        )
    else:
        t = target.long()
        bad = ((t < 0) | (t >= num_classes)) & (t != ignore_index)
        torch._assert_async(
            ~bad.any(),
            f"crossent: a target is out of bounds [0, {num_classes}) (argument 'target')",
        )
