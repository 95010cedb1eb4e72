"""Hugging Face ``transformers``: train a causal LM with :func:`crossent.linear_cross_entropy`, no logits.

``patch(model)`` changes one model instance so that a call with ``labels`` computes its loss from the final
hidden states and the output embedding's weight with the fused linear cross-entropy; the (tokens × vocab)
logits are never materialised. The loss equals the model's own (transformers' ``ForCausalLMLoss``: labels
shifted left by one, ``ignore_index=-100``, ``num_items_in_batch`` and ``shift_labels`` honoured), and
whatever the model's forward adds to it (an MoE router's auxiliary loss) is still added.

How, without a copy of any model's forward code:

1. a forward pre-hook on the model sees whether ``labels`` were given;
2. if so, the output embedding (``model.get_output_embeddings()``, an ``nn.Linear``) keeps its input (the
   final hidden states) and returns an empty placeholder instead of the logits;
3. the model applies its logit post-processing to the placeholder, which records it
   (:mod:`crossent.integrations._logits_tape`: scale factors, Gemma's softcap; anything else is refused);
4. the model passes the placeholder to ``self.loss_function``, replaced on the instance by the fused loss;
5. a forward hook checks that the loss consumed the placeholder and returns the output with
   ``logits=None`` (with ``return_dict=False``, the tuple without the logits, as transformers leaves out
   ``None`` fields).

Calls without ``labels`` (generation, evaluation of logits) run the stock code path untouched. Importing
this module does not import ``transformers``; :func:`patch` does.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, TypeVar

import torch

import crossent

from ._logits_tape import LogitsPlaceholder, Tape, UnsupportedModelError, placeholder, read_tape

__all__ = ["UnsupportedModelError", "is_patched", "patch", "unpatch"]

M = TypeVar("M", bound=torch.nn.Module)
_ATTR = "_crossent_patch"
_MISSING = object()


@dataclasses.dataclass
class _Patch:
    """One patched model: options, the saved originals, and the state of the call in progress."""

    owner: str
    label_smoothing: float
    z_loss: float
    workspace_bytes: int | None
    train_only: bool
    stock_loss: Any
    labels_position: int | None
    saved_loss: Any = _MISSING
    head: torch.nn.Linear | None = None
    saved_head_forward: Any = _MISSING
    handles: list[Any] = dataclasses.field(default_factory=list)
    active: bool = False
    hidden: torch.Tensor | None = None
    tape: Tape | None = None


def is_patched(model: torch.nn.Module) -> bool:
    """Whether :func:`patch` is in effect on this instance."""
    return isinstance(model.__dict__.get(_ATTR), _Patch)


def patch(
    model: M,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    workspace_bytes: int | None = None,
    train_only: bool = False,
) -> M:
    """Makes ``model(..., labels=...)`` compute its loss with :func:`crossent.linear_cross_entropy`.

    The loss is transformers' causal-LM loss of the logits ``softcap(s · (h Wᵀ + b))`` that the model would
    have computed from its final hidden states ``h`` and output embedding ``(W, b)`` — with the scale ``s``
    and softcap the model's forward applies — plus anything the forward adds to it, computed without the
    (tokens × vocab) logits. The output's ``logits`` are ``None`` when ``labels`` are given; without
    ``labels`` nothing changes. Only this instance is changed; a second call replaces the options.

    Args:
        model: a ``transformers`` causal LM (``…ForCausalLM``, ``GPT2LMHeadModel``) whose
            ``loss_function`` is transformers' ``ForCausalLMLoss`` and whose output embedding is an
            ``nn.Linear``.
        label_smoothing, z_loss: as in :func:`crossent.linear_cross_entropy` (0 keeps the model's loss).
        workspace_bytes: cap on the fused loss's chunk buffers (default: crossent's per-device default).
        train_only: if True, a model in eval mode (``model.eval()``, as ``Trainer`` evaluates) computes
            its logits and loss the stock way, so evaluation can return logits (``compute_metrics``).

    Returns:
        ``model`` itself, patched.

    Raises:
        UnsupportedModelError: (a ``TypeError``) naming the model's class and what is missing: a causal-LM
            ``loss_function``, an ``nn.Linear`` output embedding, a ``labels`` argument; at the first call,
            logit post-processing other than scale factors and a tanh softcap; transformers < 4.50.
        ImportError: if ``transformers`` is not installed.

    Example:
        >>> model = patch(AutoModelForCausalLM.from_config(config))  # doctest: +SKIP
        >>> model(input_ids=ids, labels=ids).loss.backward()  # doctest: +SKIP
    """
    from transformers.loss.loss_utils import ForCausalLMLoss

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"argument 'model' must be a torch.nn.Module, got {type(model).__name__}")
    if is_patched(model):
        unpatch(model)
    owner = type(model).__name__
    stock_loss = getattr(model, "loss_function", None)
    if stock_loss is not ForCausalLMLoss:
        got = getattr(stock_loss, "__name__", type(stock_loss).__name__)
        raise UnsupportedModelError(
            f"{owner}: its loss_function is {got}; crossent reproduces transformers' ForCausalLMLoss "
            "(causal language modelling) only"
        )
    _output_embedding(model, owner)
    names = list(inspect.signature(type(model).forward).parameters)[1:]
    if "labels" not in names:
        raise UnsupportedModelError(f"{owner}: its forward takes no 'labels' argument")
    p = _Patch(
        owner,
        label_smoothing,
        z_loss,
        workspace_bytes,
        train_only,
        stock_loss,
        names.index("labels"),
    )
    p.saved_loss = model.__dict__.get("_loss_function", _MISSING)
    fused = functools.partial(_fused_loss, p)
    model.__dict__["_loss_function"] = fused  # what transformers' loss_function setter does
    if model.loss_function is not fused:  # transformers before the per-instance loss_function
        _restore_loss(model, p)
        raise UnsupportedModelError(
            f"{owner}: this transformers version reads no per-instance loss_function; the integration "
            "needs transformers >= 4.50"
        )
    p.handles = [
        model.register_forward_pre_hook(functools.partial(_begin, p), with_kwargs=True),
        model.register_forward_hook(functools.partial(_end, p), with_kwargs=True, always_call=True),
    ]
    model.__dict__[_ATTR] = p
    return model


def unpatch(model: M) -> M:
    """Restores the model's own loss and head (a no-op on a model that is not patched)."""
    p = model.__dict__.pop(_ATTR, None)
    if not isinstance(p, _Patch):
        return model
    for handle in p.handles:
        handle.remove()
    _release_head(p)
    _restore_loss(model, p)
    return model


def _restore_loss(model: torch.nn.Module, p: _Patch) -> None:
    if p.saved_loss is _MISSING:
        model.__dict__.pop("_loss_function", None)
    else:
        model.__dict__["_loss_function"] = p.saved_loss


def _output_embedding(model: torch.nn.Module, owner: str) -> torch.nn.Linear:
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, torch.nn.Linear) or type(head).forward is not torch.nn.Linear.forward:
        got = "None" if head is None else type(head).__name__
        raise UnsupportedModelError(
            f"{owner}: its output embedding (get_output_embeddings()) is {got}, not a torch.nn.Linear; "
            "the fused loss needs the head's weight (V, D) and optional bias"
        )
    return head


def _attach_head(p: _Patch, head: torch.nn.Linear) -> None:
    """Routes ``head``'s calls through :func:`_head_forward` (a no-op if it already is)."""
    if p.head is head:
        return
    _release_head(p)
    p.head = head
    p.saved_head_forward = head.__dict__.get("forward", _MISSING)
    inner = head.forward
    head.__dict__["forward"] = functools.partial(_head_forward, p, inner)


def _release_head(p: _Patch) -> None:
    if p.head is None:
        return
    if p.saved_head_forward is _MISSING:
        p.head.__dict__.pop("forward", None)
    else:
        p.head.__dict__["forward"] = p.saved_head_forward
    p.head = None


def _labels(p: _Patch, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if "labels" in kwargs:
        return kwargs["labels"]
    pos = p.labels_position
    return args[pos] if pos is not None and pos < len(args) else None


def _begin(
    p: _Patch, model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Forward pre-hook: a call with labels takes the fused path (with ``train_only``, in training mode
    only); the head is re-found each time."""
    p.active = _labels(p, args, kwargs) is not None and (model.training or not p.train_only)
    p.hidden, p.tape = None, None
    if p.active:
        _attach_head(p, _output_embedding(model, p.owner))


def _head_forward(p: _Patch, inner: Any, input: torch.Tensor) -> torch.Tensor:
    """The output embedding: on the fused path keeps ``input`` and returns an empty placeholder."""
    if not p.active:
        return inner(input)
    if p.hidden is not None:
        raise UnsupportedModelError(
            f"{p.owner} calls its output embedding twice in one forward; the fused loss supports one call"
        )
    assert p.head is not None
    p.hidden = input
    logits = placeholder(input, p.head.out_features, p.owner)
    p.tape = logits._crossent_tape
    return logits


def _fused_loss(
    p: _Patch,
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """``ForCausalLMLoss`` of the placeholder's logits, fused; real logits go to the stock loss."""
    tape = logits._crossent_tape if isinstance(logits, LogitsPlaceholder) else None
    if tape is None or tape is not p.tape:
        return p.stock_loss(
            logits,
            labels,
            vocab_size,
            num_items_in_batch=num_items_in_batch,
            ignore_index=ignore_index,
            shift_labels=shift_labels,
            **kwargs,
        )
    tape.closed = True
    logit_map = read_tape(tape)
    hidden, head = p.hidden, p.head
    assert hidden is not None and head is not None
    weight, bias = head.weight, head.bias
    if weight.shape[0] != vocab_size:
        raise UnsupportedModelError(
            f"{p.owner}: the output embedding has {weight.shape[0]} rows but the loss gets "
            f"vocab_size={vocab_size}"
        )
    if shift_labels is None:  # position t predicts label t + 1; the last position predicts nothing
        padded = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = padded[..., 1:]
    shift_labels = shift_labels.to(hidden.device)
    if tuple(shift_labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"{p.owner}: labels of shape {list(shift_labels.shape)} do not match the final hidden states "
            f"{list(hidden.shape)} (is logits_to_keep set together with labels?)"
        )
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    x, b = logit_map.apply(hidden.to(dtype), None if bias is None else bias.to(dtype))
    with torch.autocast(device, enabled=False):
        return crossent.linear_cross_entropy(
            x,
            weight.to(dtype),
            shift_labels,
            linear_bias=b,
            reduction="mean",
            ignore_index=ignore_index,
            label_smoothing=p.label_smoothing,
            z_loss=p.z_loss,
            softcap=logit_map.softcap,
            normalize_by=num_items_in_batch,
            workspace_bytes=p.workspace_bytes,
        )


def _end(
    p: _Patch, model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> Any:
    """Forward hook: checks that the fused loss ran, and leaves the placeholder out of the output."""
    active, tape = p.active, p.tape
    p.active, p.hidden, p.tape = False, None, None
    if output is None or not active:  # the forward raised, or a call without labels
        return None
    if tape is None or not tape.closed:
        raise UnsupportedModelError(
            f"{p.owner} did not pass its output embedding's result to self.loss_function; the fused loss "
            "cannot stand in for its loss"
        )
    if isinstance(output, tuple):
        return tuple(v for v in output if not isinstance(v, LogitsPlaceholder))
    if hasattr(output, "keys") and "logits" in output.keys():
        return type(output)(**{k: v for k, v in output.items() if k != "logits"})
    return None
