"""An empty stand-in for a model's logits that records what the model does to them.

A patched output embedding returns :class:`LogitsPlaceholder`, a tensor with zero positions, instead of the
(tokens × vocab) logits. The model's forward then applies its logit post-processing to the placeholder
(Gemma's ``c * tanh(logits / c)``, Cohere's ``logits * logit_scale``, Granite's ``logits / logits_scaling``);
each op runs on the empty tensor (no memory, no compute) and is written on the placeholder's
:class:`Tape`. :func:`read_tape` turns the tape into a :class:`LogitMap` — the scale factors and the softcap
that the fused loss applies instead — or raises :class:`UnsupportedModelError` naming the first op it cannot
reproduce exactly. Reading the ops the model actually ran, rather than config fields, keeps the integration
generic: a model family that post-processes its logits in a new way is refused, never silently mis-computed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import torch

# torch function names (``func.__name__``) of the ops a logit post-processing may use, by what they do
_DIV = frozenset(
    {"__truediv__", "__itruediv__", "div", "div_", "divide", "true_divide", "true_divide_"}
)
_MUL = frozenset({"__mul__", "__rmul__", "__imul__", "mul", "mul_", "multiply"})
_TANH = frozenset({"tanh", "tanh_"})
_SAME_VALUES = frozenset({"contiguous", "clone", "float", "to", "type", "double"})
_READS = frozenset({"grad", "_base", "data"})  # torch.compile reads these while tracing
_SUPPORTED = "multiplying or dividing by a scalar, then c * tanh(logits / c)"


class UnsupportedModelError(TypeError):
    """A model that crossent cannot train with the fused loss exactly as the model's own loss."""


@dataclass
class Tape:
    """The ops applied to ``owner``'s placeholder, in order; ``closed`` once the loss has read it."""

    owner: str
    ops: list[tuple[str, tuple[Any, ...], dict[str, Any], torch.dtype]] = field(
        default_factory=list
    )
    closed: bool = False


class LogitsPlaceholder(torch.Tensor):
    """A (…, 0, V) tensor standing for the logits; every op on it is recorded on its tape."""

    _crossent_tape: Tape | None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        tape = next(
            (
                a._crossent_tape
                for a in (*args, *kwargs.values())
                if isinstance(a, LogitsPlaceholder)
                and getattr(a, "_crossent_tape", None) is not None
            ),
            None,
        )
        out = super().__torch_function__(func, types, args, kwargs)
        if tape is None or tape.closed or not isinstance(out, torch.Tensor) or _plain_read(func):
            return out  # attribute reads (shape, grad, ...) and ops after the loss are not recorded
        op = (getattr(func, "__name__", repr(func)), tuple(args), dict(kwargs), out.dtype)
        kind, what = _step(op)
        if kind == "?":  # refused where it happens, so the error names the op rather than a symptom
            raise UnsupportedModelError(
                f"{tape.owner} applies {what} to its logits before the loss; the fused loss "
                f"reproduces only {_SUPPORTED}"
            )
        tape.ops.append(op)
        if isinstance(out, LogitsPlaceholder):
            out._crossent_tape = tape
        return out


def _plain_read(func: Any) -> bool:
    """A property read that returns a tensor without computing on the logits (``grad``, ``_base``)."""
    prop = getattr(func, "__self__", None)
    return getattr(func, "__name__", "") == "__get__" and getattr(prop, "__name__", "") in _READS


def placeholder(hidden: torch.Tensor, vocab_size: int, owner: str) -> LogitsPlaceholder:
    """An empty (…, 0, V) placeholder for ``owner``'s logits of ``hidden`` (…, T, D), with a fresh tape."""
    shape = (*hidden.shape[:-2], 0, vocab_size) if hidden.dim() >= 2 else (0, vocab_size)
    out = torch.empty(shape, dtype=hidden.dtype, device=hidden.device).as_subclass(
        LogitsPlaceholder
    )
    out._crossent_tape = Tape(owner)
    return out


@dataclass(frozen=True)
class LogitMap:
    """What the model does to ``z = x Wᵀ + b``: ``softcap(s₁ ⋯ s_k z)`` with factors ``(op, s)``."""

    factors: tuple[tuple[str, Any], ...] = ()
    softcap: float | None = None

    def apply(
        self, x: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Moves the scale factors onto the linear's operands: ``(s x) Wᵀ + s b = s (x Wᵀ + b)``."""
        for op, s in self.factors:
            x = x * s if op == "mul" else x / s
            if bias is not None:
                bias = bias * s if op == "mul" else bias / s
        return x, bias


def _scalar(value: Any) -> bool:
    if isinstance(value, LogitsPlaceholder):
        return False
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and value.is_floating_point()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return a == b


def _step(op: tuple[str, tuple[Any, ...], dict[str, Any], torch.dtype]) -> tuple[str, Any]:
    """One recorded op as ``("mul"|"div", s)``, ``("tanh", None)``, ``("same", None)`` or ``("?", why)``."""
    name, args, kwargs, dtype = op
    first_is_logits = bool(args) and isinstance(args[0], LogitsPlaceholder)
    if kwargs and name not in _SAME_VALUES:
        return "?", f"{name} with keyword arguments {sorted(kwargs)}"
    if name in _SAME_VALUES:
        if dtype in (torch.float32, torch.float64) or dtype == args[0].dtype:
            return "same", None
        return "?", f"{name} to {dtype}"
    if name in _TANH and first_is_logits and len(args) == 1:
        return "tanh", None
    if len(args) == 2 and name in _MUL | _DIV:
        other = args[1] if first_is_logits else args[0]
        if _scalar(other) and (first_is_logits or name in _MUL):
            return ("mul" if name in _MUL else "div"), other
    return "?", name


def read_tape(tape: Tape) -> LogitMap:
    """The :class:`LogitMap` of a tape: scale factors, then at most one ``c * tanh(z / c)``.

    Raises:
        UnsupportedModelError: for any other sequence, naming the tape's owner and the op.
    """
    steps = [s for s in map(_step, tape.ops) if s[0] != "same"]
    factors: list[tuple[str, Any]] = []
    softcap = None
    i = 0
    while i < len(steps):
        window = steps[i : i + 3]
        if (
            softcap is None
            and [k for k, _ in window] == ["div", "tanh", "mul"]
            and _same(window[0][1], window[2][1])
        ):
            softcap = float(window[0][1])
            i += 3
        elif softcap is None and steps[i][0] in ("mul", "div"):
            factors.append(steps[i])
            i += 1
        else:
            kind, what = steps[i]
            op = what if kind == "?" else f"{kind} after the softcap" if softcap else kind
            raise UnsupportedModelError(
                f"{tape.owner} transforms its logits with an op that the fused loss cannot reproduce exactly "
                f"({op}); supported: {_SUPPORTED}"
            )
    return LogitMap(tuple(factors), softcap)
