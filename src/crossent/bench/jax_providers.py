"""JAX providers for ``crossent bench``: ``crossent.jax.linear_cross_entropy`` and optax on materialised logits.

Both run the fused cases (``kind="linear"``) on the CPU as ``jax.jit(jax.value_and_grad(loss, (0, 1)))``
of a mean cross-entropy, compiled when the runner is prepared (so compilation is not timed). The inputs are
the case's torch tensors viewed as NumPy arrays and copied into JAX arrays once; the outputs come back as
torch tensors over the same memory (no copy in the timed call). The runner's detail reports XLA's own
analysis of the compiled program's temporaries (``temp_size_in_bytes``), the number the JAX front end is
designed to keep far below the (N, V) logits; the harness's RSS probe measures the call as for any other
provider.

JAX is imported only when a provider is asked about a device or prepared.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .cases import IGNORE_INDEX, Case, Inputs
from .provider import Provider, Result, Runner
from .provider import has_module as _has

MiB = 1 << 20


def _to_jax(t: torch.Tensor | None) -> Any:
    import jax.numpy as jnp

    if t is None:
        return None
    a = t.detach().cpu().numpy()
    return jnp.asarray(a.astype(np.int32) if a.dtype == np.int64 else a)


def _to_torch(a: Any) -> torch.Tensor:
    """A torch view of a JAX CPU array's memory (read-only there; nothing writes to it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's notice about a read-only NumPy array
        return torch.from_numpy(np.asarray(a))


@dataclass
class JaxLinear(Provider):
    """A JAX loss of (x, w, target, class weight) compiled with its gradients of x and w."""

    loss: str = "crossent"  # "crossent" (fused) or "optax" (materialised logits)

    def available(self, device: str) -> tuple[bool, str]:
        if device != "cpu":
            return False, "measured on the CPU backend of JAX"
        needed = ("jax", "optax") if self.loss == "optax" else ("jax",)
        missing = [m for m in needed if not _has(m)]
        if missing:
            return False, f"{', '.join(missing)} not installed (pip install crossent[jax])"
        return True, ""

    def supports(self, case: Case) -> tuple[bool, str]:
        ok, why = super().supports(case)
        if ok and case.dtype not in ("fp32", "fp64"):
            return False, "float32/float64 cases only"
        return ok, why

    def _loss_fn(self, case: Case) -> Callable[..., Any]:
        o = case.options
        if self.loss == "optax":
            import optax  # type: ignore[import-untyped]

            def plain(x: Any, w: Any, y: Any, cw: Any) -> Any:
                return optax.losses.softmax_cross_entropy_with_integer_labels(x @ w.T, y).mean()

            return plain
        import crossent.jax as cj

        def fused(x: Any, w: Any, y: Any, cw: Any) -> Any:
            return cj.linear_cross_entropy(
                x,
                w,
                y,
                weight=cw,
                ignore_index=IGNORE_INDEX,
                label_smoothing=o.label_smoothing,
                z_loss=o.z_loss,
                softcap=o.softcap,
            )

        return fused

    def prepare(self, case: Case, inputs: Inputs) -> Runner:
        import jax

        args = tuple(_to_jax(t) for t in (inputs.x, inputs.w, inputs.target, inputs.class_weight))
        step = jax.jit(jax.value_and_grad(self._loss_fn(case), argnums=(0, 1)))
        compiled = step.lower(*args).compile()
        analysis = compiled.memory_analysis()
        temp = None if analysis is None else analysis.temp_size_in_bytes

        def call() -> Result:
            loss, (dx, dw) = jax.block_until_ready(compiled(*args))
            return _to_torch(loss), (_to_torch(dx), _to_torch(dw))

        detail = "" if temp is None else f"XLA temporaries {temp / MiB:.1f} MiB"
        return Runner(call, detail=detail)


@functools.cache
def providers() -> tuple[Provider, ...]:
    return (
        JaxLinear(
            "crossent-jax",
            "crossent.jax.linear_cross_entropy under jax.jit(value_and_grad) (JAX, CPU)",
            kinds=("linear",),
            all_options=True,
            devices=("cpu",),
            loss="crossent",
        ),
        JaxLinear(
            "optax",
            "optax softmax_cross_entropy_with_integer_labels of x @ w.T, jitted (JAX, CPU)",
            kinds=("linear",),
            devices=("cpu",),
            loss="optax",
        ),
    )
