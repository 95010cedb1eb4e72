"""Fused linear + cross-entropy on the CPU: time and peak extra memory against the matrix-product floor.

Standalone: ``python benchmarks/scripts/linear_ce_cpu.py [--shapes N,D,V ...] [--reps 3] [--threads N] [--no-memory]``.

Cases (all forward + backward of a mean-reduced CE with class-index targets, float32, no ignored tokens):

* ``floor``: the three products every exact method needs, into preallocated outputs:
  ``L = X·Wᵀ``, ``dX = G·W``, ``dW = Gᵀ·X`` (N×V, N×D, V×D).
* ``crossent``: ``crossent.linear_cross_entropy`` (default workspace: 96 MiB on the CPU).
* ``crossent_ws256``: the same with ``workspace_bytes=256 MiB`` (not in the default set).
* ``torch_eager``: ``F.cross_entropy(F.linear(X, W), y)``.
* ``torch_lce``: ``F.linear_cross_entropy`` (torch 2.13, reference path, ``options=None``).
* ``torch_lce_chunked``: ``F.linear_cross_entropy(..., options=torch.nn.LinearCrossEntropyOptions())``.

Timing: one process, the cases interleaved rep by rep (these VMs are noisy: compare ratios within a
run), median and min/max of ``--reps`` after one warm-up. Correctness is checked before timing (loss and
gradients of crossent against the eager composition).

Memory: each (case, shape) in a fresh subprocess: the case warmed up on a tiny problem, inputs allocated
and touched, then one forward + backward; the growth of the peak RSS (``VmHWM`` in /proc/self/status) minus the gradients every
method returns (dX + dW) is the "extra" memory. Not set here: ``THP_MEM_ALLOC_ENABLE`` (reported).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import crossent  # imported before any memory measurement starts

TARGET_SHAPES = [(4096, 1024, 32000), (2048, 512, 128256)]
CASES = ["floor", "crossent", "torch_eager", "torch_lce", "torch_lce_chunked"]


def make_inputs(n: int, d: int, v: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g).div_(d**0.5)  # in place: no transient copy in the RSS peak
    y = torch.randint(0, v, (n,), generator=g)
    return x, w, y


def make_case(name: str, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor):
    """A zero-argument callable running one forward + backward of ``name``."""
    n, v = x.shape[0], w.shape[0]
    if name == "floor":
        g = torch.randn(n, v) / v
        logits, dx, dw = torch.empty(n, v), torch.empty_like(x), torch.empty_like(w)

        def run() -> None:
            torch.mm(x, w.t(), out=logits)
            torch.mm(g, w, out=dx)
            torch.mm(g.t(), x, out=dw)

        return run
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

    def loss_fn():
        if name == "crossent":
            return crossent.linear_cross_entropy(xr, wr, y)
        if name == "crossent_ws256":
            return crossent.linear_cross_entropy(xr, wr, y, workspace_bytes=256 << 20)
        if name == "torch_eager":
            return F.cross_entropy(F.linear(xr, wr), y)
        if name == "torch_lce":
            return F.linear_cross_entropy(xr, wr, y)
        if name == "torch_lce_chunked":
            return F.linear_cross_entropy(xr, wr, y, options=torch.nn.LinearCrossEntropyOptions())
        raise ValueError(name)

    def run() -> None:
        xr.grad = wr.grad = None
        loss_fn().backward()

    run.grads = lambda: (loss_fn, xr, wr)  # type: ignore[attr-defined]
    return run


def check(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> float:
    """Largest relative difference of crossent's loss and gradients from the eager composition."""
    out = []
    for fn in (lambda a, b: crossent.linear_cross_entropy(a, b, y), lambda a, b: F.cross_entropy(F.linear(a, b), y)):
        a, b = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        loss = fn(a, b)
        loss.backward()
        out.append((loss.detach(), a.grad, b.grad))
    worst = 0.0
    for p, q in zip(*out):
        worst = max(worst, float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)))
    return worst


def time_cases(shape, cases, reps):
    x, w, y = make_inputs(*shape)
    runs = {c: make_case(c, x, w, y) for c in cases}
    for r in runs.values():
        r()  # warm-up
    times = {c: [] for c in cases}
    for _ in range(reps):
        for c, r in runs.items():
            t0 = time.perf_counter()
            r()
            times[c].append(time.perf_counter() - t0)
    return times


def _maxrss_bytes() -> int:
    """Peak RSS of this process. ``VmHWM`` from /proc (``ru_maxrss`` is inherited from the parent across
    fork + exec on Linux, so a child started by a big parent would report the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(case: str, shape) -> None:
    """(In a fresh process.) Print the peak-RSS growth of one forward + backward, in bytes."""
    torch.set_num_threads(int(os.environ.get("LCE_THREADS", torch.get_num_threads())))
    # one-time costs (lazy imports, kernel library loading, thread pools: ~150 MB for crossent's first
    # call) are paid on a tiny problem first, so the measurement sees the call's own allocations
    make_case(case, *make_inputs(8, 16, 50))()
    x, w, y = make_inputs(*shape)
    run = make_case(case, x, w, y)
    before = _maxrss_bytes()
    run()
    print(json.dumps({"growth": _maxrss_bytes() - before}))


def measure_memory(case: str, shape) -> int:
    cmd = [sys.executable, __file__, "--memory-child", case, ",".join(map(str, shape))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return int(json.loads(out)["growth"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="*", default=None, help="N,D,V (default: the two CPU benchmark shapes)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], tuple(int(s) for s in args.memory_child[1].split(",")))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["LCE_THREADS"] = str(args.threads)  # the memory children use the same count
    shapes = [tuple(int(s) for s in sh.split(",")) for sh in args.shapes] if args.shapes else TARGET_SHAPES
    cases = args.cases.split(",")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, "
          f"load {os.getloadavg()[0]:.1f}")
    for shape in shapes:
        n, d, v = shape
        small = make_inputs(min(n, 256), d, v)
        print(f"\n## N={n} D={d} V={v}  (check on {small[0].shape[0]} rows: max rel diff {check(*small):.2e})")
        times = time_cases(shape, cases, args.reps)
        floor = statistics.median(times["floor"]) if "floor" in times else None
        grads_bytes = 4 * (n * d + v * d)
        print("| case | median ms | min–max ms | × floor | extra MB (peak RSS growth − grads) |")
        print("|---|---|---|---|---|")
        for c in cases:
            med = statistics.median(times[c])
            ratio = f"{med / floor:.3f}" if floor else "—"
            mem = "—"
            if not args.no_memory and c != "floor":
                mem = f"{(measure_memory(c, shape) - grads_bytes) / 1e6:.0f}"
            print(f"| {c} | {med * 1e3:.0f} | {min(times[c]) * 1e3:.0f}–{max(times[c]) * 1e3:.0f} | {ratio} | {mem} |",
                  flush=True)


if __name__ == "__main__":
    main()
