"""Handing the forward's gradient over in backward: the autograd shared by the Triton losses.

For ``sum``/``mean`` the categorical CE (:mod:`.ops`), the softmax focal loss (:mod:`.focal_ops`) and
the binary losses (:mod:`.binary_ops`) write the gradient for upstream 1 in the forward; the graph keeps
only that buffer (no other tensor the size of the logits, in particular not the logits), and backward
hands it over, scaled by the upstream gradient. One :class:`Handover` per forward op is that op's
autograd (``setup_context`` and ``backward``): ``reduction="none"`` saves the inputs and runs the op's
own backward kernel; for ``sum``/``mean`` :meth:`~Handover.grad` hands the buffer over:

* the usual single backward: the buffer is scaled in place (the op's ``scale_``, no traffic where the
  upstream gradient is 1) and handed over — no (M, C) allocation;
* ``retain_graph=True`` (``loss.backward(retain_graph=True)``, ``autograd.grad`` twice): the backward
  asks the engine whether the graph is kept (:func:`keeps_graph`); if so it hands over a scaled *copy*
  and leaves the buffer as it was, so the next backward is exact (one allocation per kept backward);
* a backward after the buffer was handed over: torch's "backward through the graph a second time"
  error, as for any node; where torch lacks the probe, a recompute (the forward op again) from the
  inputs, or a ``RuntimeError`` if they are gone — never a buffer scaled twice.

``create_graph=True`` (backward with grad mode on: gradient penalties, ``gradgradcheck``,
Hessian-vector products; :func:`builds_graph`) goes to :meth:`~Handover.differentiable_grad`: the loss
is recomputed by the eager backend (:func:`crossent._backends.eager.row_loss`, same ``RowMath``, same
inputs) and differentiated with ``create_graph=True``. Its backward is the reference's analytic gradient
in differentiable torch ops, so the gradient has a graph and the second derivatives are exactly the
eager backend's, for every reduction. Why not an analytic gradient per loss (CE had one,
``ce_rows_grad`` called directly): it is the same graph minus one eager forward (elementwise, O(MC),
small next to the double backward), and this is one implementation for every loss, with the eager
backend's dtype rules. The Triton buffer stays unused for a later first-order backward.

The inputs of a reduced loss are held *weakly* where they are the size of the logits (the logits, and
targets of that size: :class:`WeakInput`), strongly otherwise (class weights, the mean's denominator, the
options), and strongly where they are a layout copy crossent made itself (rows of (N, C, d…) logits,
``contiguous()`` of strided rows: the ``held`` bits of :mod:`crossent._backends.ownership`), since no caller holds those; such
a copy then lives until the backward, as the eager backend's saved input does. Why weak: saving the logits keeps them from forward to backward when the caller drops them
(``loss = ce(head(h), y)``), so the graph would hold logits + gradient instead of the gradient alone.
Measured on the CPU (interpreter; M = 2048, V = 32000, fp32 logits of 250 MiB from ``h @ W.T``): one
loss then backward, the same peak RSS either way (the forward's kernel holds both anyway); two losses
before one backward, +250 MiB held and +250 MiB peak when saving — one more logits tensor per loss
computed before the backward. So a recompute or a second derivative needs the caller to still hold
them (or a tensor they are a view of), unmodified; otherwise backward raises a ``RuntimeError`` saying
to keep a reference or use ``backend="torch"`` — never a wrong or graph-less gradient.

Under ``torch.compile`` the backward is traced once with grad mode off; functionalisation leaves the
saved buffer intact, so a retained compiled graph backwards twice exactly. (Second derivatives of
compiled regions are AOTAutograd's: in torch 2.13 it drops them silently for every op,
``F.cross_entropy`` included.) Nothing here synchronises with the host.
"""

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import eager

Tensor = torch.Tensor

_TENSORS = 4  # tensor inputs of each forward op (Handover)

# Whether the running backward keeps the graph (retain_graph=True). A private probe (AOTAutograd's
# runtime uses it too); without it every backward is taken as the last, and a second one recomputes.
_KEEP_GRAPH = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


def has_keep_graph_probe() -> bool:
    """Whether this torch tells a backward that the graph is kept (else a second backward recomputes)."""
    return _KEEP_GRAPH is not None


def keeps_graph() -> bool:
    """Whether the running backward keeps the graph for another one (``retain_graph=True``)."""
    return _KEEP_GRAPH is not None and _KEEP_GRAPH() and not torch.compiler.is_compiling()


def builds_graph() -> bool:
    """Whether the running backward builds a graph (``create_graph=True``: grad mode is on)."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


class WeakInput:
    """A weak reference to a tensor input: ``get()`` returns it, or None once it was freed or modified in
    place since the forward (the version counter moved).

    A view (e.g. the (M, C) rows of (B, T, C) logits, made per call) dies with the call; its base lives on
    in the caller. So the base is referenced too, and the view is rebuilt from it (``as_strided``, which
    autograd connects to the base) when the view itself is gone.
    """

    __slots__ = ("_view", "_base", "_geometry", "_version")

    def __init__(self, t: Tensor) -> None:
        base = t._base
        usable = base is not None and base.dtype == t.dtype
        self._view = weakref.ref(t)
        self._base = weakref.ref(base) if usable else None
        self._geometry = (t.size(), t.stride(), t.storage_offset())
        self._version = t._version

    def get(self) -> Tensor | None:
        t = self._view()
        if t is None and self._base is not None:
            base = self._base()
            t = None if base is None else base.as_strided(*self._geometry)
        if t is None or t._version != self._version:
            return None
        return t


def scaled(ctx: Any, grad: Tensor, g: Tensor, scale_: Callable[[Tensor, Tensor], None]) -> Tensor:
    """``grad · g`` for this backward (``g`` broadcastable to ``grad``): a copy where the graph is kept
    (the next backward needs ``grad`` as it is), else ``grad`` scaled in place (``ctx.consumed`` set)."""
    if keeps_graph():
        # float32 math, rounded once, like the scale kernels (a float32 temporary for half gradients)
        return (grad.to(torch.float32) * g.to(torch.float32)).to(grad.dtype)
    ctx.consumed = True
    scale_(grad, g)
    return grad


@dataclass(frozen=True)
class Handover:
    """The autograd of one forward op (module docstring); register it with
    ``op.register_autograd(h.backward, setup_context=h.setup_context)``.

    The op's inputs: four tensors ``(x, target, ·, ·)`` (or None), then its options, ending with
    ``reduction`` and ``compute_grad``; its outputs: the loss first, the gradient for upstream 1 last
    (empty unless reduced), between them what the backward of ``"none"`` reads.

    Attributes:
        op: the forward custom op (run again only by the recompute).
        scale_: ``grad *= g`` in place for a 0-d ``g`` (a custom op that skips the work where g == 1).
        rows_backward: ``(inputs, saved outputs, grad_loss) -> grad`` for ``reduction="none"``.
        to_eager: the op's inputs → ``(math, (x, target, weight, aux, den))`` for
            :func:`crossent._backends.eager.row_loss`; reads only the options to build ``math``.
        held: the op's inputs → its ownership bits (:mod:`crossent._backends.ownership`): which of x,
            target are crossent's own copies, held strongly. Ops that never get copies: 0.
    """

    op: Callable[..., tuple[Tensor, ...]]
    scale_: Callable[[Tensor, Tensor], None]
    rows_backward: Callable[[tuple, tuple, Tensor], Tensor]
    to_eager: Callable[[tuple], tuple[eager.RowMath, tuple]]
    held: Callable[[tuple], int] = lambda inputs: 0

    def setup_context(self, ctx: Any, inputs: tuple, output: tuple) -> None:
        x, target = inputs[:2]
        ctx.options = inputs[_TENSORS:]
        if inputs[-2] == "none":
            # the gradient is computed in backward (g_i applied exactly), from the saved inputs
            ctx.save_for_backward(*inputs[:_TENSORS], *output[1:-1])
            return
        # the gradient was computed in forward (g = 1): keep only it (strongly); the logits, and a
        # target of their size, weakly, the rest (class weights, the mean's denominator) strongly; a
        # layout copy made inside crossent strongly too (nobody else holds it: see ownership)
        ctx.save_for_backward(output[-1])
        ctx.consumed = False
        held = self.held(inputs)
        weak = tuple(
            i for i in ((0, 1) if target.shape == x.shape else (0,)) if not held & (1 << i)
        )
        ctx.held = tuple(WeakInput(v) if i in weak else v for i, v in enumerate(inputs[:_TENSORS]))

    def backward(self, ctx: Any, grad_loss: Tensor, *_unused: Tensor | None) -> tuple:
        if ctx.options[-2] != "none":
            grad_x = self.grad(ctx, grad_loss)
        else:
            saved = ctx.saved_tensors
            inputs = (*saved[:_TENSORS], *ctx.options)
            if builds_graph():
                grad_x = self.differentiable_grad(inputs, grad_loss)
            else:
                grad_x = self.rows_backward(inputs, saved[_TENSORS:], grad_loss)
        return (grad_x,) + (None,) * (_TENSORS + len(ctx.options) - 1)

    def grad(self, ctx: Any, grad_loss: Tensor) -> Tensor:
        """The gradient with respect to the logits, in the backward of a reduced loss."""
        if builds_graph():
            return self.differentiable_grad(
                self._inputs(ctx, "backward with create_graph=True"), grad_loss
            )
        if not ctx.consumed:
            (grad,) = ctx.saved_tensors
            return scaled(ctx, grad, grad_loss, self.scale_)
        if has_keep_graph_probe():
            # the buffer went to a backward that freed the graph: raise torch's "backward through the
            # graph a second time" error, as every other node does
            ctx.saved_tensors  # noqa: B018
        inputs = self._inputs(ctx, "a second backward")
        grad = self.op(*inputs[:-1], True)[-1]
        self.scale_(grad, grad_loss)
        return grad

    def differentiable_grad(self, inputs: tuple, grad_loss: Tensor) -> Tensor:
        """The gradient as the eager backend computes it, with a graph (``create_graph=True``)."""
        math, (x, *others) = self.to_eager(inputs)
        with torch.enable_grad():
            loss = eager.row_loss(math, x, *others)
            (grad,) = torch.autograd.grad(loss, x, grad_loss, create_graph=True)
        return grad

    def _inputs(self, ctx: Any, why: str) -> tuple:
        """The op's inputs of a reduced forward, for a recompute; raise if a weak one is gone."""
        tensors = tuple(v.get() if isinstance(v, WeakInput) else v for v in ctx.held)
        inputs = (*tensors, *ctx.options)
        if any(v is None and isinstance(h, WeakInput) for v, h in zip(tensors, ctx.held)):
            name = self.to_eager(inputs)[0].name
            raise RuntimeError(
                f"crossent: {why} through {name}(backend='triton') recomputes the gradient from the "
                "logits (the forward keeps only its gradient, to save memory), but the logits (or "
                "targets of their size) were freed or modified in place since the forward. Keep a "
                "reference to them, unmodified, until the last backward, or use backend='torch'."
            )
        return inputs


__all__ = ["Handover", "WeakInput", "builds_graph", "keeps_graph", "scaled"]
