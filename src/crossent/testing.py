"""The option grid and the tolerances that crossent's tests, ``crossent check`` and the benchmark
harness share (defined once, here).

The grid is that of the categorical losses (each value there for a reason, in the comment beside it);
:func:`make_inputs` makes a case's NumPy float64 inputs. Tolerances are ``(rtol, atol)`` per dtype name.
Nothing here imports torch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# (rtol, atol) of a value or gradient against the float64 reference, per dtype of the computation:
# float64 agrees to a few ulps of the result; float32 to 3e-5 relative (accumulation over a row).
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-12),
    "float32": (3e-5, 3e-6),
}

# Relative tolerances (loss, gradient) of the benchmark harness's check before timing: large shapes,
# norms of whole tensors, half precision included.
BENCH_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp64": (1e-9, 1e-7),
    "fp32": (1e-4, 1e-3),
    "bf16": (2e-2, 5e-2),
    "fp16": (5e-3, 1e-2),
}

SHAPES = [
    (7, 5),  # plain (N, C)
    (1, 1),  # C = 1: loss is -0.0, gradient 0
    (4, 3, 6),  # K-dim (N, C, d1): class axis is 1, not last
    (2, 4, 3, 5),  # 4-D input: torch routes through nll_loss2d
    (5,),  # 1-D input (C): a single position
    (3, 257),  # odd C beyond a power of two
]
WEIGHTED = [False, True]  # class weights change the mean's denominator for index targets
SMOOTHING = [0.0, 0.1, 1.0]  # off, typical, the uniform-target extreme
REDUCTIONS = ["none", "sum", "mean"]
IGNORE = [-100, 1]  # the default (never hit), and a real class that is ignored


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    prob_target: bool
    weighted: bool
    label_smoothing: float
    reduction: str
    ignore_index: int

    @property
    def id(self) -> str:
        kind = "prob" if self.prob_target else "index"
        w = "w" if self.weighted else "nw"
        return f"{'x'.join(map(str, self.shape))}-{kind}-{w}-ls{self.label_smoothing}-{self.reduction}-ii{self.ignore_index}"


def cases(*, prob: tuple[bool, ...] = (False, True)) -> list[Case]:
    out = []
    for shape, p, w, ls, red, ii in itertools.product(
        SHAPES, prob, WEIGHTED, SMOOTHING, REDUCTIONS, IGNORE
    ):
        if p and ii >= 0:
            continue  # probability targets reject ignore_index >= 0 (tested in test_errors)
        if ii >= 0 and shape[0 if len(shape) == 1 else 1] <= ii:
            continue
        out.append(Case(shape, p, w, ls, red, ii))
    return out


def make_inputs(case: Case, seed: int = 0, dtype=np.float64):
    """Logits, target and weight for a case (NumPy float64), with ignored positions where they can occur."""
    rng = np.random.default_rng(seed)
    shape = case.shape
    class_dim = 0 if len(shape) == 1 else 1
    c = shape[class_dim]
    x = rng.normal(size=shape) * 2.0
    t: np.ndarray
    loss_shape = shape[:class_dim] + shape[class_dim + 1 :]
    if case.prob_target:
        t = rng.random(shape) + 0.1
        t = t / t.sum(axis=class_dim, keepdims=True)
    else:
        t = rng.integers(0, c, size=loss_shape)
        if t.size > 1:
            flat = t.reshape(-1)
            flat[0] = case.ignore_index  # ignored positions occur in every case
    w = rng.random(c) + 0.5 if case.weighted else None
    return x.astype(dtype), t, w
