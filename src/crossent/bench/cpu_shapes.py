"""The ``cpu-shapes`` suite: crossent against torch on the CPU over the shapes people use.

Run ``crossent bench --suite cpu-shapes`` (or ``python -m crossent.bench.cpu_shapes``). Cases, float32:

* categorical cross-entropy, rows ∈ {32, 4096, 262144} × C ∈ {2, 10, 100, 1000, 32000} with rows·C ≤ 2^27;
* spatial cross-entropy (segmentation): (8, 2, 512, 512), (8, 21, 256, 256), (4, 150, 128, 128);
* ``nll_loss``, ``binary_cross_entropy_with_logits`` and ``kl_div`` at (32, 10), (4096, 1000), (262144, 10).

Per case, in one process, interleaved (one call of each timer per round, rounds repeated; the medians and
the median of per-round ratios are reported, so load from other processes hits every timer alike). A
call's speed depends on what ran just before it — whether the allocator hands it a block already faulted
in or fresh pages (a (4096, 1000) ``nll_loss`` forward + backward took 1.1 or 4.8 ms by its place in the
round, the same PyTorch call either way) — so each timed call follows an untimed call of the same timer
(the steady state of a training loop, where the same step repeats), and the order of the timers
alternates from round to round (forward, then reversed).

* ``crossent``: the public function, forward + ``backward()`` (a fresh gradient, as in training);
* ``torch``: ``torch.nn.functional``'s function, forward + ``backward()``;
* cross-entropy cases also time the compiled kernel alone (loss + gradient into a preallocated buffer,
  per ISA: the CPU's best and, with ``--isa``, others such as ``avx2`` forced on an AVX-512 CPU), the
  preallocated-copy floor (``dst.copy_(x)``), and for ≥ 2^20 elements the fresh-buffer floor
  (``x.clone()``) and crossent with ``inplace=True``; spatial cases also time the native backend's
  spatial entry (``native_ce_spatial``) end to end.

Prints a Markdown table (median ms, ratios) headed by the machine, ISA and threads.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .harness import cpu_model

ROWS = (32, 4096, 262144)
CLASSES = (2, 10, 100, 1000, 32000)
SPATIAL = ((8, 2, 512, 512), (8, 21, 256, 256), (4, 150, 128, 128))
OTHER = ("nll", "bce_logits", "kl")
OTHER_SHAPES = ((32, 10), (4096, 1000), (262144, 10))
BIG = 1 << 20


@dataclass
class Case:
    kind: str  # "ce", "spatial", "nll", "bce_logits", "kl"
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.kind}-" + "x".join(map(str, self.shape))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def all_cases() -> list[Case]:
    cases = [Case("ce", (m, c)) for m in ROWS for c in CLASSES if m * c <= 1 << 27]
    cases += [Case("spatial", s) for s in SPATIAL]
    cases += [Case(k, s) for k in OTHER for s in OTHER_SHAPES]
    return cases


def _inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=g)
    c = case.shape[1]
    if case.kind in ("ce", "spatial", "nll"):
        t_shape = case.shape[:1] + case.shape[2:]
        t = torch.randint(0, c, t_shape, generator=g)
        if case.kind == "nll":
            x = torch.log_softmax(x, 1)
        return x, t
    if case.kind == "bce_logits":
        return x, torch.rand(case.shape, generator=g)
    return torch.log_softmax(x, 1), torch.softmax(torch.randn(case.shape, generator=g), 1)  # kl


def _train_step(fn: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor, **kw: object):
    leaf = x.clone().requires_grad_(True)

    def step() -> None:
        leaf.grad = None
        fn(leaf, t, **kw).backward()

    return step


def _timers(case: Case, isas: list[str]) -> dict[str, Callable[[], object]]:
    import torch.nn.functional as tf

    import crossent.functional as cf

    x, t = _inputs(case)
    timers: dict[str, Callable[[], object]] = {}
    if case.kind in ("ce", "spatial"):
        timers["crossent"] = _train_step(cf.cross_entropy, x, t)
        timers["torch"] = _train_step(tf.cross_entropy, x, t)
        timers.update(_kernel_timers(case, x, t, isas))
    elif case.kind == "nll":
        timers["crossent"] = _train_step(cf.nll_loss, x, t)
        timers["torch"] = _train_step(tf.nll_loss, x, t)
    elif case.kind == "bce_logits":
        timers["crossent"] = _train_step(cf.binary_cross_entropy_with_logits, x, t)
        timers["torch"] = _train_step(tf.binary_cross_entropy_with_logits, x, t)
    else:
        timers["crossent"] = _train_step(cf.kl_div, x, t, reduction="batchmean")
        timers["torch"] = _train_step(tf.kl_div, x, t, reduction="batchmean")
    return timers


def _kernel_timers(
    case: Case, x: torch.Tensor, t: torch.Tensor, isas: list[str]
) -> dict[str, Callable[[], object]]:
    from .. import _native
    from .._contract import ce_options

    out: dict[str, Callable[[], object]] = {}
    if not _native.available():
        return out
    opts = ce_options()
    dst = torch.empty_like(x)
    out["copy floor"] = lambda: dst.copy_(x)
    if case.numel >= BIG:
        out["clone floor"] = lambda: x.clone()
    scale = 1.0 / (case.numel // case.shape[1])
    if case.kind == "ce":
        xn, tn, gn = x.numpy(), t.numpy(), dst.numpy()

        def rows_kernel(isa: str) -> Callable[[], object]:
            return lambda: _native.ce_rows_native(
                xn, tn, None, opts, False, grad=gn, grad_scale=scale,
                num_threads=torch.get_num_threads(), isa=isa,
            )  # fmt: skip

        for isa in isas:
            out[f"kernel {isa}"] = rows_kernel(isa)
    elif hasattr(_native, "ce_spatial_native_torch"):

        def spatial_kernel(isa: str) -> Callable[[], object]:
            return lambda: _native.ce_spatial_native_torch(
                x, t, None, opts, False, grad=dst, grad_scale=scale, isa=isa
            )

        for isa in isas:
            out[f"kernel {isa}"] = spatial_kernel(isa)
        out["crossent spatial entry"] = _spatial_entry(x, t)
    if case.numel >= BIG:
        out["crossent inplace"] = _inplace_step(case, x, t)
    return out


def _spatial_entry(x: torch.Tensor, t: torch.Tensor) -> Callable[[], object]:
    from .._backends import eager
    from .._backends.native import native_ce_spatial
    from .._contract import ce_options

    math_ = eager.CrossEntropyMath("mean", ce_options(), False)
    return _train_step(lambda leaf, t: native_ce_spatial(math_, leaf, t, None, None), x, t)


def _inplace_step(case: Case, x: torch.Tensor, t: torch.Tensor) -> Callable[[], object]:
    """crossent with ``inplace=True`` through the native backend: the logits are a fresh non-leaf
    (``h.clone()``, standing for a model's output; that clone is the fresh-buffer floor), overwritten by
    their gradient, which autograd hands to ``h.grad`` without another buffer. The report subtracts the
    clone floor to compare the rest with the kernel alone."""
    from .._backends import eager
    from .._backends import native as nb
    from .._contract import ce_options

    math_ = eager.CrossEntropyMath("mean", ce_options(), False)
    entry = nb.native_ce_spatial if case.kind == "spatial" else nb.native_ce
    h = x.clone().requires_grad_(True)

    def step() -> None:
        h.grad = None
        entry(math_, h.clone(), t, None, None, inplace=True).backward()

    return step


def run_case(case: Case, isas: list[str], rounds: int, budget_s: float) -> dict[str, list[float]]:
    timers = _timers(case, isas)
    for k, fn in list(timers.items()):
        try:
            fn()  # warm-up: page faults of fresh buffers, thread pools, lazy imports
        except Exception as exc:  # noqa: BLE001  (a timer this version cannot run is reported, not fatal)
            print(f"<!-- {case.name}: {k} skipped: {type(exc).__name__}: {exc} -->")
            del timers[k]
    times: dict[str, list[float]] = {k: [] for k in timers}
    start = time.perf_counter()
    order = list(timers.items())
    for r in range(rounds):
        for k, fn in order if r % 2 == 0 else order[::-1]:
            fn()  # untimed: the allocator in this step's steady state
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def _ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds per case (max)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per case, after 3 rounds")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names")
    ap.add_argument(
        "--isa", default="", help="extra ISAs for the kernel-alone timers, e.g. avx2,generic"
    )


def options_from(cli: argparse.Namespace) -> argparse.Namespace:
    """This suite's options from ``crossent bench``'s (``--threads``, ``--repeats``, ``--max-seconds``,
    ``--cases``); the extra ISAs come from ``CROSSENT_BENCH_ISAS`` (e.g. ``avx2,generic``)."""
    return argparse.Namespace(
        threads=cli.threads or 2,
        rounds=cli.repeats or 15,
        budget=cli.max_seconds or 20.0,
        cases=cli.cases,
        isa=os.environ.get("CROSSENT_BENCH_ISAS", ""),
    )


def run(args: argparse.Namespace) -> int:
    from .. import _native

    torch.set_num_threads(args.threads)
    best = _native.active_isa() if hasattr(_native, "active_isa") else _native.best_isa()
    isas = [best] + [i for i in args.isa.split(",") if i and i != best]
    cases = [
        c for c in all_cases() if not args.cases or any(s in c.name for s in args.cases.split(","))
    ]
    print(
        f"crossent cpu-shapes on {cpu_model()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"{args.threads} threads, float32, kernel ISA {best} (CPU best {_native.best_isa()}), "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')!r}"
    )
    print()
    print(
        "| case | elements | timer | median ms | / torch | / copy floor | / clone floor | / kernel |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        times = run_case(case, isas, args.rounds, args.budget)
        if "crossent inplace" in times and "clone floor" in times:
            times["crossent inplace - clone"] = [
                a - b for a, b in zip(times["crossent inplace"], times["clone floor"])
            ]
        for k, ts in times.items():
            vs_torch = f"{_ratio(ts, times['torch']):.2f}" if k != "torch" else ""
            vs_copy = f"{_ratio(ts, times['copy floor']):.2f}" if "copy floor" in times else ""
            vs_clone = f"{_ratio(ts, times['clone floor']):.2f}" if "clone floor" in times else ""
            kern = times.get(f"kernel {isas[0]}")
            vs_kern = f"{statistics.median(ts) / statistics.median(kern):.2f}" if kern else ""
            print(
                f"| {case.name} | {case.numel} | {k} | {statistics.median(ts) * 1e3:.3f} | {vs_torch} "
                f"| {vs_copy} | {vs_clone} | {vs_kern} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
