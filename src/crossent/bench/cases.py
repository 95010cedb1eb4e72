"""Benchmark cases: what is measured, how its inputs are made, and its floor.

Every case is a forward + backward of a mean-reduced cross-entropy with class-index targets, either over
given logits (``kind="ce"``, memory-bound) or fused with the classifier's matrix product
(``kind="linear"``, compute-bound). Each case carries

* a setup factory (:meth:`Case.make_inputs`): seeded random inputs on the case's device and dtype;
* its floor (:meth:`Case.floor`): the least work any exact implementation must do at that shape —
  for logits, a copy of the logits into a *preallocated* buffer (one read and one write of N·V elements;
  an allocating ``clone()`` would add the page faults of a fresh buffer, which is not the floor); for the
  fused case, the three matrix products every exact method needs: logits = X·Wᵀ, dX = G·W and
  dW = Gᵀ·X, into preallocated outputs, in the case's dtype;
* the minimum traffic or arithmetic used for GB/s (2·N·V·itemsize bytes) and TFLOP/s (6·N·D·V flops);
* the project's target ratio to the floor where one is set.

The shapes are the project's GPU and CPU target cases, each also in an every-option-on variant
(class weights, label smoothing, z-loss, softcap and 10% ignored targets) that only providers supporting
the whole option set run. ``--quick`` swaps in tiny shapes for CI smoke runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100

_DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}


@dataclass(frozen=True)
class Options:
    """The loss options a case switches on (torch's names; z-loss and softcap are crossent's extras)."""

    weight: bool = False
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    ignore_fraction: float = 0.0

    @property
    def plain(self) -> bool:
        return self == Options()

    def describe(self) -> str:
        if self.plain:
            return "plain"
        parts = []
        if self.weight:
            parts.append("weight")
        if self.label_smoothing:
            parts.append(f"smoothing={self.label_smoothing:g}")
        if self.z_loss:
            parts.append(f"z_loss={self.z_loss:g}")
        if self.softcap is not None:
            parts.append(f"softcap={self.softcap:g}")
        if self.ignore_fraction:
            parts.append(f"ignored={self.ignore_fraction:.0%}")
        return ",".join(parts)


# Every option on: values typical of LLM training (Gemma-2's final softcap 30, PaLM's z-loss 1e-4).
ALL_OPTIONS = Options(
    weight=True, label_smoothing=0.1, z_loss=1e-4, softcap=30.0, ignore_fraction=0.1
)


@dataclass
class Inputs:
    """One case's tensors. ``leaves`` are the tensors whose gradients every provider must return."""

    target: torch.Tensor
    class_weight: torch.Tensor | None
    logits: torch.Tensor | None = None  # kind "ce": (N, V)
    x: torch.Tensor | None = None  # kind "linear": (N, D)
    w: torch.Tensor | None = None  # kind "linear": (V, D)

    @property
    def leaves(self) -> tuple[torch.Tensor, ...]:
        return (self.logits,) if self.logits is not None else (self.x, self.w)  # type: ignore[return-value]

    @property
    def grad_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.leaves)


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``shape`` is (N, V) for ``kind="ce"`` and (N, D, V) for ``kind="linear"``."""

    kind: str
    device: str
    dtype: str
    shape: tuple[int, ...]
    options: Options = Options()
    target_ratio: float | None = None  # the project's goal, as a multiple of the floor
    seed: int = 0

    @property
    def name(self) -> str:
        suffix = "" if self.options.plain else "-allopts"
        return f"{self.kind}-{'x'.join(map(str, self.shape))}-{self.dtype}{suffix}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_classes(self) -> int:
        return self.shape[-1]

    @property
    def min_bytes(self) -> int:
        """One read and one write of the logits (kind "ce"); 0 for the fused case."""
        if self.kind != "ce":
            return 0
        return (
            2
            * self.shape[0]
            * self.shape[1]
            * torch.empty(0, dtype=self.torch_dtype).element_size()
        )

    @property
    def flops(self) -> int:
        """The three matrix products' 6·N·D·V flops (kind "linear"); 0 for logits."""
        if self.kind != "linear":
            return 0
        n, d, v = self.shape
        return 6 * n * d * v

    def make_inputs(self) -> Inputs:
        """The setup factory: seeded inputs on the case's device (leaves require grad)."""
        dev = torch.device(self.device)
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        dtype, n, v = self.torch_dtype, self.n_rows, self.n_classes

        def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
            t = torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32)
            if scale != 1.0:
                t.mul_(scale)
            return t.to(dtype).requires_grad_()

        target = torch.randint(0, v, (n,), generator=gen, device=dev)
        if self.options.ignore_fraction:
            drop = torch.rand(n, generator=gen, device=dev) < self.options.ignore_fraction
            target = target.masked_fill(drop, IGNORE_INDEX)
        class_weight = None
        if self.options.weight:
            class_weight = (torch.rand(v, generator=gen, device=dev) + 0.5).to(dtype)
        if self.kind == "ce":
            # logits with a spread like a language model's (std 2)
            return Inputs(target, class_weight, logits=randn(n, v, scale=2.0))
        d = self.shape[1]
        # X·Wᵀ then has unit-scale entries
        return Inputs(target, class_weight, x=randn(n, d), w=randn(v, d, scale=d**-0.5))

    def floor(self, inputs: Inputs) -> Callable[[], None]:
        """The floor as a callable; its output buffers are allocated (and touched) here, untimed."""
        if self.kind == "ce":
            logits = inputs.logits.detach()  # type: ignore[union-attr]
            out = torch.empty_like(logits)
            out.copy_(logits)  # fault the pages in now: the floor writes into memory that exists

            def copy() -> None:
                out.copy_(logits)

            return copy
        x, w = inputs.x.detach(), inputs.w.detach()  # type: ignore[union-attr]
        logits = torch.mm(x, w.t())
        dx, dw = torch.mm(logits, w), torch.mm(logits.t(), x)

        def three_products() -> None:
            torch.mm(x, w.t(), out=logits)  # logits = X·Wᵀ
            torch.mm(logits, w, out=dx)  # dX = G·W (G stands in for the logits' gradient)
            torch.mm(logits.t(), x, out=dw)  # dW = Gᵀ·X

        return three_products

    def floor_description(self) -> str:
        if self.kind == "ce":
            return "copy of the logits into a preallocated buffer (one read + one write)"
        return "three matrix products X·Wᵀ, G·W, Gᵀ·X into preallocated outputs"

    def describe(self) -> str:
        if self.kind == "ce":
            n, v = self.shape
            what = f"logits N={n}, V={v}"
        else:
            n, d, v = self.shape
            what = f"fused linear N={n}, D={d}, V={v}"
        return f"{what}, {self.dtype}, {self.options.describe()}"


def class_weight_of_rows(
    target: torch.Tensor, class_weight: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """w[y_i] for non-ignored rows, 0 for ignored ones (1 for every class without class weights)."""
    valid = target != IGNORE_INDEX
    if class_weight is None:
        return valid.to(dtype)
    return class_weight.to(dtype)[target.clamp_min(0)] * valid


def torch_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    options: Options,
    reduction: str = "mean",
    denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """The case's loss composed from plain PyTorch ops (torch's conventions, crossent's extras).

    ``softcap`` maps the logits to s·tanh(x/s) first; ``z_loss`` adds λ·lse² per non-ignored row, weighted
    like the CE term; the mean divides by Σ w[y_i] over non-ignored rows (``denominator`` overrides it,
    for a reference computed in chunks of rows). This is what the torch eager and torch.compile
    providers run and, in float64 and in chunks, the reference every provider is checked against.
    """
    z = (
        logits
        if options.softcap is None
        else options.softcap * torch.tanh(logits / options.softcap)
    )
    ce = torch.nn.functional.cross_entropy(
        z,
        target,
        class_weight,
        ignore_index=IGNORE_INDEX,
        label_smoothing=options.label_smoothing,
        reduction="sum" if options.z_loss or denominator is not None else reduction,
    )
    if not options.z_loss and denominator is None:
        return ce
    total = ce
    if options.z_loss:
        w_y = class_weight_of_rows(
            target, class_weight, torch.float32 if z.dtype != torch.float64 else z.dtype
        )
        lse = torch.logsumexp(z, dim=-1)
        total = total + options.z_loss * (w_y * lse * lse).sum()
    if reduction == "sum":
        return total
    if denominator is None:
        denominator = class_weight_of_rows(target, class_weight, total.dtype).sum()
    return total / denominator


def _with_allopts(cases: list[Case]) -> list[Case]:
    out: list[Case] = []
    for case in cases:
        out.append(case)
        out.append(dataclasses.replace(case, options=ALL_OPTIONS, target_ratio=None))
    return out


def gpu_cases() -> list[Case]:
    """The H100 target cases (bf16 unless noted) and their every-option-on variants."""
    return _with_allopts(
        [
            Case("ce", "cuda", "bf16", (8192, 128256), target_ratio=1.25),
            Case("ce", "cuda", "fp32", (65536, 1000), target_ratio=1.10),
            Case("ce", "cuda", "bf16", (16384, 32000), target_ratio=1.10),
            Case("linear", "cuda", "bf16", (8192, 4096, 128256), target_ratio=1.10),
            Case("linear", "cuda", "bf16", (8192, 2304, 256000), target_ratio=1.10),
        ]
    )


def cpu_cases() -> list[Case]:
    """The CPU target cases (float32, 2 cores) and their every-option-on variants."""
    return _with_allopts(
        [
            Case("ce", "cpu", "fp32", (4096, 32000), target_ratio=1.25),
            Case("ce", "cpu", "fp32", (65536, 1000), target_ratio=1.25),
            Case("linear", "cpu", "fp32", (4096, 1024, 32000), target_ratio=1.15),
            Case("linear", "cpu", "fp32", (2048, 512, 128256), target_ratio=1.15),
            Case("linear", "cpu", "fp32", (4096, 256, 32000)),  # the JAX front end's target shape
        ]
    )


def quick_cases(device: str) -> list[Case]:
    """Tiny shapes for a smoke run (seconds, not minutes); bf16 on the GPU, float32 on the CPU."""
    dtype = "bf16" if device == "cuda" else "fp32"
    return _with_allopts(
        [
            Case("ce", device, dtype, (256, 1000)),
            Case("linear", device, dtype, (128, 64, 1000)),
        ]
    )


def all_cases(device: str, *, quick: bool = False) -> list[Case]:
    if quick:
        return quick_cases(device)
    return gpu_cases() if device == "cuda" else cpu_cases()
