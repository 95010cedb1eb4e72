"""Time crossent's compiled CPU kernel against the copy floor and torch, forward + backward, in one run.

Usage (standalone; needs the extension built and torch installed):

    python benchmarks/scripts/cpu_kernel.py [--threads N] [--reps 15] [--shapes 4096x32000,65536x1000]
                                    [--dtype float32] [--torch-reps 5] [--variants]

Cases, all on the same logits and targets, per shape (medians of ``--reps`` runs in this one process —
these VMs are noisy, so only ratios measured in one run are compared):

* ``floor``: copy the logits into a preallocated buffer (one read + one write of M·C elements),
  ``torch.Tensor.copy_`` with the same thread count.
* ``crossent``: ``ce_rows_native`` on NumPy arrays: per-row loss + lse + the gradient of the mean loss
  written into a preallocated buffer, then the mean of the loss (what a training step needs).
* ``crossent_torch``: the same through ``ce_rows_native_torch`` on torch tensors (data_ptr, no copies).
* ``torch``: ``torch.nn.functional.cross_entropy(x, y)`` forward + ``backward()`` (allocates its gradient).
* with ``--variants``: the kernel without non-temporal stores / without software prefetch / without
  the pipelined gradient (the last two only change rows of >= 16 KiB).

The cases are interleaved (one run of each per round) and the ratio to the floor is the median over
rounds of (case time / floor time in the same round), which keeps the comparison fair when other
processes load the machine.

Prints a Markdown table with milliseconds, spread (min–max) and the ratio to the floor, and states
whether ``THP_MEM_ALLOC_ENABLE`` is set (it changes torch's allocation cost).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time


def _interleaved(cases: dict, reps: int, slow: frozenset = frozenset(), slow_reps: int = 3) -> dict:
    """Time every case once per round, round after round, so that load from other processes on a shared
    machine hits all cases alike. Returns ``{name: [ms, ...]}``; cases in ``slow`` run in the first
    ``slow_reps`` rounds only. Also returns the process CPU time of each run (all threads), which
    other processes' load inflates less than wall time."""
    for fn in cases.values():
        fn()  # warm-up: page faults of fresh buffers, thread pools
    times: dict = {name: [] for name in cases}
    cpu: dict = {name: [] for name in cases}
    for rnd in range(reps):
        for name, fn in cases.items():
            if name in slow and rnd >= slow_reps:
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    return times, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="threads (default: torch's own)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--torch-reps", type=int, default=5)
    ap.add_argument("--shapes", default="4096x32000,65536x1000")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument(
        "--variants", action="store_true", help="also time the kernel without streaming/prefetch"
    )
    ap.add_argument("--no-torch", action="store_true", help="skip torch's cross_entropy (slow)")
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from crossent import _native
    from crossent._contract import CEOptions
    from crossent._native import _lib
    from crossent.bench.harness import cpu_model
    from crossent.numpy.categorical import ce_rows, ce_rows_grad

    if not _native.available():
        raise SystemExit(f"the compiled kernel is not available: {_native.unavailable_reason()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    nt = torch.get_num_threads()
    dtype = getattr(np, args.dtype)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; kernel ISA: {_native.best_isa()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    print(
        f"threads: {nt}; dtype: {args.dtype}; THP_MEM_ALLOC_ENABLE: {thp if thp is not None else 'not set'}"
    )
    print()
    print(
        "| shape | case | median ms | min–max ms | × floor (median of per-round ratios) | × floor (min/min) "
        "| CPU ms (all threads, median) | CPU × floor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    opts = CEOptions()
    for shape in args.shapes.split(","):
        M, C = (int(s) for s in shape.split("x"))
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((M, C), dtype=np.float32) * 2).astype(dtype)
        y = rng.integers(0, C, M)
        g = np.empty_like(x)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        gt = torch.empty_like(xt)
        dst = torch.empty_like(xt)

        # correctness before timing: a few rows against the float64 reference
        k = min(M, 64)
        loss, _ = _native.ce_rows_native(
            x[:k], y[:k], None, opts, False, grad=g[:k], grad_scale=1.0 / k
        )
        ref = ce_rows(x[:k].astype(np.float64), y[:k], None, opts, False)[0]
        gref = ce_rows_grad(x[:k].astype(np.float64), y[:k], None, opts, False, np.full(k, 1.0 / k))
        assert np.allclose(loss, ref, rtol=1e-5), "kernel loss disagrees with the reference"
        assert np.allclose(g[:k], gref, rtol=1e-4, atol=1e-6 * np.abs(gref).max()), (
            "kernel grad disagrees"
        )

        def floor():
            dst.copy_(xt)

        def crossent(flags=0):
            loss, _ = _native.ce_rows_native(
                x, y, None, opts, False, grad=g, grad_scale=1.0 / M, num_threads=nt, flags=flags
            )
            return loss.mean()

        def crossent_torch():
            loss, _ = _native.ce_rows_native_torch(
                xt, yt, None, opts, False, grad=gt, grad_scale=1.0 / M, num_threads=nt
            )
            return loss.mean()

        xr = xt.clone().requires_grad_(True)

        def torch_ce():
            xr.grad = None
            F.cross_entropy(xr, yt).backward()

        cases = {
            "floor (copy into preallocated)": floor,
            "crossent kernel (numpy)": crossent,
            "crossent kernel (torch tensors)": crossent_torch,
        }
        if args.variants:
            cases["kernel, plain stores"] = lambda: crossent(_lib.FLAG_NO_STREAM)
            cases["kernel, no prefetch"] = lambda: crossent(_lib.FLAG_NO_PREFETCH)
            cases["kernel, not pipelined"] = lambda: crossent(_lib.FLAG_NO_PIPELINE)
        slow = frozenset()
        if not args.no_torch:
            cases["torch F.cross_entropy fwd+bwd"] = torch_ce
            slow = frozenset({"torch F.cross_entropy fwd+bwd"})
        times, cpu = _interleaved(cases, args.reps, slow, args.torch_reps)
        base = times["floor (copy into preallocated)"]
        cbase = statistics.median(cpu["floor (copy into preallocated)"])
        for name, ts in times.items():
            med = statistics.median(ts)
            # the ratio of each run to the floor run of the same round, then the median of those
            ratio = statistics.median(t / f for t, f in zip(ts, base))
            cmed = statistics.median(cpu[name])
            print(
                f"| {M}×{C} | {name} | {med:.1f} | {min(ts):.1f}–{max(ts):.1f} | {ratio:.2f} "
                f"| {min(ts) / min(base):.2f} | {cmed:.1f} | {cmed / cbase:.2f} |"
            )


if __name__ == "__main__":
    main()
