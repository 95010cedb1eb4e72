"""Providers: the implementations ``crossent bench`` measures side by side.

A provider says whether it is available on a device (and why not), whether it supports a case (kind and
options), and prepares a :class:`Runner` for the case's inputs. A runner's ``call`` is the timed part —
one forward and backward, returning the loss and the gradients of the case's leaves (fresh gradient
buffers, as ``torch.autograd.grad`` allocates them) — and its optional ``setup`` runs untimed before
each call (Liger's clone of the logits, which its kernel overwrites).

Peers are imported only when a provider is prepared or asked about a device where it could run, so the
registry itself costs nothing to build and never touches CUDA.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .cases import IGNORE_INDEX, Case, Inputs, torch_loss
from .provider import Provider, Result, Runner
from .provider import grads as _grads
from .provider import has_module as _has


@dataclass
class Crossent(Provider):
    backend: str = "auto"

    def available(self, device: str) -> tuple[bool, str]:
        if self.backend == "native" and device != "cpu":
            return False, "the native kernel is a CPU kernel"
        if self.backend == "triton" and device != "cuda":
            return False, (
                "Triton kernels need a CUDA device (TRITON_INTERPRET=1 runs them on the CPU "
                "at interpreter speed, which is not worth timing)"
            )
        if self.backend in ("native", "triton"):
            return _probe_backend(self.backend, device)
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        import crossent

        from .. import _dispatch

        o = case.options
        if case.kind == "ce":
            logits = inputs.logits

            def call() -> Result:
                loss = crossent.cross_entropy(
                    logits,
                    inputs.target,
                    inputs.class_weight,
                    ignore_index=IGNORE_INDEX,
                    label_smoothing=o.label_smoothing,
                    z_loss=o.z_loss,
                    softcap=o.softcap,
                    backend=self.backend,
                )
                return _grads(loss, inputs.leaves)

            detail = ""
            if self.backend == "auto":
                try:
                    detail = "backend=" + _dispatch.auto_backend("cross_entropy", logits.detach())  # type: ignore[union-attr]
                except Exception:  # an internal helper: its absence costs the detail, not the run
                    detail = ""
            return Runner(call, detail=detail)

        def call_linear() -> Result:
            loss = crossent.linear_cross_entropy(
                inputs.x,
                inputs.w,
                inputs.target,
                weight=inputs.class_weight,
                ignore_index=IGNORE_INDEX,
                label_smoothing=o.label_smoothing,
                z_loss=o.z_loss,
                softcap=o.softcap,
            )
            return _grads(loss, inputs.leaves)

        return Runner(call_linear)


@functools.cache
def _probe_backend(backend: str, device: str) -> tuple[bool, str]:
    """Whether ``backend`` computes a tiny cross-entropy on ``device`` (the error's text if not)."""
    import crossent

    try:
        x = torch.zeros(2, 3, device=device, requires_grad=True)
        loss = crossent.cross_entropy(x, torch.tensor([0, 2], device=device), backend=backend)
        torch.autograd.grad(loss, (x,))
    except Exception as exc:  # unbuilt extension, missing kernel, no driver: all mean "unavailable"
        return False, f"backend={backend!r} fails here: {type(exc).__name__}: {str(exc)[:160]}"
    return True, ""


@dataclass
class CrossentNumpy(Provider):
    """crossent.native's cross_entropy and cross_entropy_grad (the compiled kernel's NumPy entry, the
    fast twin of the pure reference crossent.numpy) on NumPy views of the CPU tensors."""

    def available(self, device: str) -> tuple[bool, str]:
        import crossent.native

        if device == "cpu" and not crossent.native.available():
            return False, "the native kernel is not built"
        return super().available(device)

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        import crossent.native as cnp

        o = case.options
        x = inputs.logits.detach().numpy()  # type: ignore[union-attr]
        t = inputs.target.numpy()
        w = None if inputs.class_weight is None else inputs.class_weight.numpy()

        def call() -> Result:
            opts = (IGNORE_INDEX, "mean", o.label_smoothing)
            loss = cnp.cross_entropy(x, t, w, *opts, z_loss=o.z_loss, softcap=o.softcap)
            grad = cnp.cross_entropy_grad(x, t, w, *opts, z_loss=o.z_loss, softcap=o.softcap)
            return torch.as_tensor(loss), (torch.from_numpy(grad),)

        return Runner(call)


# ---------------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------------


def _torch_fn(case: Case) -> Callable[..., torch.Tensor]:
    o = case.options
    if case.kind == "ce":
        return lambda logits, target, cw: torch_loss(logits, target, cw, o)
    return lambda x, w, target, cw: torch_loss(torch.nn.functional.linear(x, w), target, cw, o)


def _torch_args(case: Case, inputs: Inputs) -> tuple:
    if case.kind == "ce":
        return (inputs.logits, inputs.target, inputs.class_weight)
    return (inputs.x, inputs.w, inputs.target, inputs.class_weight)


@dataclass
class TorchEager(Provider):
    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        fn, args = _torch_fn(case), _torch_args(case, inputs)
        return Runner(lambda: _grads(fn(*args), inputs.leaves))


@dataclass
class TorchCompile(Provider):
    """torch.compile of the eager composition; its compile time is the first call (reported apart)."""

    def available(self, device: str) -> tuple[bool, str]:
        if device == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
            return False, "torch.compile's CPU backend needs a C++ compiler"
        if device == "cuda" and not _has("triton"):
            return False, "torch.compile's GPU backend needs Triton"
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        torch._dynamo.reset()  # a fresh cache per case: no recompile limits across shapes
        fn = torch.compile(_torch_fn(case), dynamic=False)
        args = _torch_args(case, inputs)
        return Runner(lambda: _grads(fn(*args), inputs.leaves))


@dataclass
class TorchLinearCE(Provider):
    """PyTorch's own ``F.linear_cross_entropy`` (torch ≥ 2.13): reference path or chunked options."""

    chunked: bool = False

    def available(self, device: str) -> tuple[bool, str]:
        if not hasattr(torch.nn.functional, "linear_cross_entropy"):
            return False, f"torch {torch.__version__} has no F.linear_cross_entropy (needs ≥ 2.13)"
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        options = torch.nn.LinearCrossEntropyOptions() if self.chunked else None

        def call() -> Result:
            assert inputs.x is not None and inputs.w is not None  # a fused-linear case
            loss = torch.nn.functional.linear_cross_entropy(
                inputs.x, inputs.w, inputs.target, ignore_index=IGNORE_INDEX, options=options
            )
            return _grads(loss, inputs.leaves)

        return Runner(
            call, detail="options=LinearCrossEntropyOptions()" if self.chunked else "options=None"
        )


# ---------------------------------------------------------------------------------------------------
# Liger-Kernel and Cut Cross-Entropy
# ---------------------------------------------------------------------------------------------------


@dataclass
class Liger(Provider):
    def available(self, device: str) -> tuple[bool, str]:
        if not _has("liger_kernel"):
            return False, "liger-kernel is not installed (pip install liger-kernel packaging)"
        if device != "cuda":
            return False, (
                "Liger's Triton kernels need a CUDA device (TRITON_INTERPRET=1 runs them on the "
                "CPU at interpreter speed, which is not worth timing)"
            )
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        from liger_kernel.transformers.functional import (
            liger_cross_entropy,
            liger_fused_linear_cross_entropy,
        )

        if case.kind == "linear":

            def call_linear() -> Result:
                loss = liger_fused_linear_cross_entropy(
                    inputs.x, inputs.w, inputs.target, ignore_index=IGNORE_INDEX
                )
                return _grads(loss, inputs.leaves)

            return Runner(call_linear)

        # Liger writes the gradient into its input: each call gets a fresh copy, made untimed.
        buf: list[torch.Tensor] = []

        def setup() -> None:
            buf.clear()
            buf.append(inputs.logits.detach().clone().requires_grad_())  # type: ignore[union-attr]

        def call() -> Result:
            logits = buf.pop()
            loss = liger_cross_entropy(logits, inputs.target, ignore_index=IGNORE_INDEX)
            return _grads(loss, (logits,))

        return Runner(call, setup=setup, detail="on a clone of the logits (made untimed)")


@dataclass
class CutCrossEntropy(Provider):
    """Cut Cross-Entropy: the ``cce`` kernel on the GPU, its ``torch_compile`` implementation on the CPU."""

    exact: bool = False

    def available(self, device: str) -> tuple[bool, str]:
        if not _has("cut_cross_entropy"):
            return False, "cut-cross-entropy is not installed (pip install cut-cross-entropy)"
        if device == "cpu" and self.exact:
            return False, "the cce kernel needs a GPU (on the CPU, 'cce' runs impl='torch_compile')"
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        from cut_cross_entropy import linear_cross_entropy

        on_gpu = case.device == "cuda"
        kwargs: dict = {"impl": "cce" if on_gpu else "torch_compile"}
        if self.exact:
            kwargs["filter_eps"] = None
        if not on_gpu:
            torch._dynamo.reset()

        def call() -> Result:
            loss = linear_cross_entropy(
                inputs.x, inputs.w, inputs.target, ignore_index=IGNORE_INDEX, **kwargs
            )
            return _grads(loss, inputs.leaves)

        return Runner(call, detail=", ".join(f"{k}={v}" for k, v in kwargs.items()))


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------


def _registry() -> list[Provider]:
    return [
        Crossent(
            "crossent",
            "crossent.cross_entropy / linear_cross_entropy, backend='auto'",
            all_options=True,
        ),
        Crossent(
            "crossent-torch",
            "crossent.cross_entropy, backend='torch' (eager)",
            kinds=("ce",),
            all_options=True,
            backend="torch",
        ),
        Crossent(
            "crossent-native",
            "crossent.cross_entropy, backend='native' (C++ CPU kernel)",
            kinds=("ce",),
            all_options=True,
            backend="native",
        ),
        Crossent(
            "crossent-triton",
            "crossent.cross_entropy, backend='triton'",
            kinds=("ce",),
            all_options=True,
            backend="triton",
        ),
        CrossentNumpy(
            "crossent-numpy",
            "crossent.native.cross_entropy + cross_entropy_grad (NumPy arrays, compiled kernel)",
            kinds=("ce",),
            all_options=True,
            devices=("cpu",),
            notes={"cuda": "NumPy runs on the CPU only"},
        ),
        TorchEager(
            "torch-eager",
            "PyTorch eager: F.cross_entropy (softcap/z-loss composed in torch ops)",
            all_options=True,
        ),
        TorchCompile(
            "torch-compile",
            "torch.compile of the eager composition (compile time apart)",
            all_options=True,
            slow_to_prepare=True,
        ),
        TorchLinearCE(
            "torch-lce",
            "PyTorch F.linear_cross_entropy, reference path (options=None)",
            kinds=("linear",),
        ),
        TorchLinearCE(
            "torch-lce-chunked",
            "PyTorch F.linear_cross_entropy with LinearCrossEntropyOptions()",
            kinds=("linear",),
            chunked=True,
        ),
        Liger("liger", "Liger-Kernel: LigerCrossEntropy / LigerFusedLinearCrossEntropy"),
        CutCrossEntropy(
            "cce",
            "Cut Cross-Entropy, default (gradient filtering: approximate on the GPU)",
            kinds=("linear",),
            slow_to_prepare=True,
            approximate_grad=True,
        ),
        CutCrossEntropy(
            "cce-exact",
            "Cut Cross-Entropy with filter_eps=None (exact)",
            kinds=("linear",),
            exact=True,
        ),
    ]


_REGISTRY: list[Provider] = _registry()


def all_providers() -> list[Provider]:
    """Every known provider, available or not (the harness asks each)."""
    from .distill_cases import providers as distill_providers
    from .jax_providers import providers as jax_providers

    return [*_REGISTRY, *jax_providers(), *distill_providers()]


@functools.cache
def peer_versions() -> dict[str, str]:
    """Installed versions of the peers (``"-"`` where missing), without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (
        "torch",
        "triton",
        "numpy",
        "liger-kernel",
        "cut-cross-entropy",
        "crossent",
        "matplotlib",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out
