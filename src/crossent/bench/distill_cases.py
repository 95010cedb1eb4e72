"""The distillation case of ``crossent bench``: a small student against a teacher, on the CPU.

One case (``kind="distill"``): forward + backward of the mean forward-KL distillation loss at
temperature 2 with a hard cross-entropy term of weight 0.5 (``crossent.linear_distillation_loss``'s
keywords ``divergence="forward_kl", temperature=2.0, hard_weight=0.5``), float32, a student of hidden size
D_S and a wider teacher of hidden size D_T over the same vocabulary V; only the student gets gradients
(its hidden states and its output layer, the case's leaves). ``shape`` is (N, D_S, D_T, V).

The floor is the four matrix products every exact method needs, into preallocated outputs: the student's
and the teacher's logits ``X_S·W_Sᵀ``, ``X_T·W_Tᵀ`` and the student's ``dX = G·W_S``, ``dW = Gᵀ·X_S``.
The reference is the textbook formula in plain PyTorch (``log_softmax``, ``kl_div``, ``cross_entropy``)
in float64, in chunks of rows.

Providers: ``crossent-distill`` (the fused form), ``crossent-distill-unfused``
(``crossent.distillation_loss`` on materialised logits) and ``torch-distill`` (the textbook formula with
autograd on materialised logits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cases import IGNORE_INDEX, Case, Inputs
from .provider import Provider, Result, Runner
from .provider import grads as _grads

Tensor = torch.Tensor


@dataclass
class Reference:
    """What the harness checks a provider against (the fields of ``harness.Reference``)."""

    loss: float
    grads: tuple[Tensor, ...]


@dataclass
class DistillInputs(Inputs):
    """The student's leaves ``x``, ``w`` (inherited) and the teacher's constants."""

    xt: Tensor | None = None  # (N, D_T)
    wt: Tensor | None = None  # (V, D_T)


@dataclass(frozen=True)
class DistillCase(Case):
    """A distillation case (``kind="distill"``); ``shape`` is (N, D_S, D_T, V)."""

    divergence: str = "forward_kl"
    temperature: float = 2.0
    hard_weight: float = 0.5

    @property
    def loss_kwargs(self) -> dict:
        return dict(
            divergence=self.divergence,
            temperature=self.temperature,
            hard_weight=self.hard_weight,
            ignore_index=IGNORE_INDEX,
        )

    @property
    def flops(self) -> int:
        """The four products' flops: 2·N·V·(D_S + D_T) for the logits, 4·N·D_S·V for dX and dW."""
        n, ds, dt, v = self.shape
        return 2 * n * v * (ds + dt) + 4 * n * ds * v

    def make_inputs(self) -> DistillInputs:
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        n, ds, dt, v = self.shape

        def randn(*shape: int, scale: float = 1.0) -> Tensor:
            t = torch.randn(*shape, generator=gen, device=self.device).mul_(scale)
            return t.to(self.torch_dtype)

        target = torch.randint(0, v, (n,), generator=gen, device=self.device)
        x, w = randn(n, ds).requires_grad_(), randn(v, ds, scale=ds**-0.5).requires_grad_()
        # a sharper teacher: logits of standard deviation 3
        xt, wt = randn(n, dt), randn(v, dt, scale=3 * dt**-0.5)
        return DistillInputs(target, None, x=x, w=w, xt=xt, wt=wt)

    def floor(self, inputs: Inputs) -> Callable[[], None]:
        assert isinstance(inputs, DistillInputs)
        x, w = inputs.x.detach(), inputs.w.detach()  # type: ignore[union-attr]
        xt, wt = inputs.xt, inputs.wt
        assert xt is not None and wt is not None
        zs, zt = torch.mm(x, w.t()), torch.mm(xt, wt.t())
        dx, dw = torch.mm(zs, w), torch.mm(zs.t(), x)

        def four_products() -> None:
            torch.mm(x, w.t(), out=zs)  # the student's logits
            torch.mm(xt, wt.t(), out=zt)  # the teacher's logits
            torch.mm(zs, w, out=dx)  # dX = G·W_S (G stands in for the logits' gradient)
            torch.mm(zs.t(), x, out=dw)  # dW = Gᵀ·X_S

        return four_products

    def floor_description(self) -> str:
        return "four matrix products X_S·W_Sᵀ, X_T·W_Tᵀ, G·W_S, Gᵀ·X_S into preallocated outputs"

    def describe(self) -> str:
        n, ds, dt, v = self.shape
        return (
            f"distillation N={n}, D_S={ds}, D_T={dt}, V={v}, {self.dtype}, {self.divergence} "
            f"τ={self.temperature:g} hard={self.hard_weight:g}"
        )

    def reference(self, inputs: Inputs) -> Reference:
        """Loss and student gradients of :func:`textbook_loss` in float64, in chunks of rows."""
        assert isinstance(inputs, DistillInputs)
        x, w = inputs.x.detach().double(), inputs.w.detach().double()  # type: ignore[union-attr]
        xt, wt = inputs.xt.double(), inputs.wt.double()  # type: ignore[union-attr]
        w = w.requires_grad_()
        n = self.n_rows
        rows = max(1, (1 << 23) // self.n_classes)
        gx = torch.empty(x.shape, dtype=torch.float32)
        gw = torch.zeros(w.shape, dtype=torch.float64)
        total = 0.0
        for s in range(0, n, rows):
            xc = x[s : s + rows].requires_grad_()
            zt = xt[s : s + rows] @ wt.t()
            part = textbook_loss(self, xc @ w.t(), zt, inputs.target[s : s + rows]) * (
                xc.shape[0] / n
            )
            dx, dw = torch.autograd.grad(part, (xc, w))
            gx[s : s + rows] = dx
            gw += dw
            total += float(part.detach())
        return Reference(total, (gx, gw.float()))


def textbook_loss(case: DistillCase, zs: Tensor, zt: Tensor, target: Tensor) -> Tensor:
    """The case's mean loss from plain PyTorch ops: (1 − h)·KL(p_T ‖ p_S) at τ + h·CE(z_S, y)."""
    tau, h = case.temperature, case.hard_weight
    ls, lt = torch.log_softmax(zs / tau, -1), torch.log_softmax(zt / tau, -1)
    soft = F.kl_div(ls, lt, reduction="none", log_target=True).sum(-1).mean()
    return (1 - h) * soft + h * F.cross_entropy(zs, target, ignore_index=IGNORE_INDEX)


@dataclass
class DistillProvider(Provider):
    """``how``: "fused" (crossent.linear_distillation_loss), "unfused" (crossent.distillation_loss on
    materialised logits) or "torch" (:func:`textbook_loss` with autograd)."""

    how: str = "fused"

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        import crossent

        assert isinstance(case, DistillCase) and isinstance(inputs, DistillInputs)
        x, w, xt, wt, y = inputs.x, inputs.w, inputs.xt, inputs.wt, inputs.target
        assert x is not None and w is not None and xt is not None and wt is not None
        kw = case.loss_kwargs

        def call() -> Result:
            if self.how == "fused":
                loss = crossent.linear_distillation_loss(x, w, xt, wt, y, **kw)
            elif self.how == "unfused":
                loss = crossent.distillation_loss(F.linear(x, w), F.linear(xt, wt), y, **kw)
            else:
                loss = textbook_loss(case, F.linear(x, w), F.linear(xt, wt), y)
            return _grads(loss, inputs.leaves)

        return Runner(call)


def distill_cases(device: str, *, quick: bool = False) -> list[Case]:
    """The CPU distillation case (a student of width 256 against a teacher of width 512, V = 32000);
    none on accelerators or in a ``--quick`` run."""
    if device != "cpu" or quick:
        return []
    return [DistillCase("distill", "cpu", "fp32", (1024, 256, 512, 32000))]


def providers() -> list[Provider]:
    kinds = ("distill",)
    return [
        DistillProvider(
            "crossent-distill", "crossent.linear_distillation_loss (fused)", kinds=kinds
        ),
        DistillProvider(
            "crossent-distill-unfused",
            "crossent.distillation_loss on materialised logits",
            kinds=kinds,
            how="unfused",
        ),
        DistillProvider(
            "torch-distill",
            "PyTorch: log_softmax + kl_div + cross_entropy on materialised logits",
            kinds=kinds,
            how="torch",
        ),
    ]
