"""Fused linear distillation on the CPU: time and peak extra memory against the matrix-product floor.

Standalone: ``python benchmarks/scripts/distill_cpu.py [--shapes N,D,V ...] [--reps 3] [--no-memory]
[--divergence jsd]``.

Every case is one forward + backward of a mean-reduced distillation loss (the generalised JSD with
β = 0.5, τ = 1 and no hard term by default, so that Liger-Kernel computes the same thing), float32,
student and teacher of the same hidden size D, no ignored rows; only the student gets gradients.

* ``floor``: the four products every exact method needs, into preallocated outputs: the student's and
  the teacher's logits ``X_S·W_Sᵀ``, ``X_T·W_Tᵀ`` and the student's ``dX = G·W_S``, ``dW = Gᵀ·X_S``.
* ``crossent``: ``crossent.linear_distillation_loss`` (default workspace).
* ``crossent_reference_rows``: the same with the block kernel switched off (the reference rows of
  ``crossent.numpy.distillation`` on every block) and the earlier 96 MiB workspace: the fused form as it
  was before the in-place block kernel, for a before/after comparison in one run.
* ``crossent_unfused``: ``crossent.distillation_loss(F.linear(...), F.linear(...))`` (logits materialised).
* ``torch_unfused``: the textbook composition with autograd (``log_softmax``, ``logsumexp`` mixture,
  ``kl_div``).
* ``liger_chunked``: Liger-Kernel's ``LigerFusedLinearJSDLoss`` (``liger_kernel.chunked_loss``, pure
  PyTorch chunks, ``compiled=False``, hard weight 0, soft weight 1), when ``liger-kernel`` is installed.
  (Liger's ``LigerFusedLinearJSD`` in ``liger_kernel.transformers`` launches Triton kernels, which need a
  GPU: it is not run here.)

Timing: one process, the cases interleaved rep by rep (compare ratios within a run), median and min/max of
``--reps`` after one warm-up; correctness (loss and student gradients of each case against
``crossent_unfused``) is printed first. Memory: each (case, shape) in a fresh subprocess warmed up on a
tiny problem; the growth of the peak RSS (``VmHWM``) during one forward + backward, minus the gradients
every method returns (dX + dW), is the "extra" memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import crossent

SHAPES = [(2048, 512, 32000)]
CASES = ["floor", "crossent", "crossent_unfused", "torch_unfused", "liger_chunked"]
BETA = 0.5


def liger_available() -> bool:
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss  # noqa: F401
    except Exception:
        return False
    return True


def make_inputs(n: int, d: int, v: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, d, generator=g)
    ws = torch.randn(v, d, generator=g).div_(d**0.5)
    xt = torch.randn(n, d, generator=g)
    wt = torch.randn(v, d, generator=g).div_(d**0.5 / 2)  # a sharper teacher
    y = torch.randint(0, v, (n,), generator=g)
    return xs, ws, xt, wt, y


def textbook_jsd(zs: torch.Tensor, zt: torch.Tensor, divergence: str) -> torch.Tensor:
    ls, lt = torch.log_softmax(zs, -1), torch.log_softmax(zt, -1)
    if divergence == "forward_kl":
        return F.kl_div(ls, lt, reduction="none", log_target=True).sum(-1).mean()
    if divergence == "reverse_kl":
        return F.kl_div(lt, ls, reduction="none", log_target=True).sum(-1).mean()
    lm = torch.logsumexp(torch.stack([lt + math.log(BETA), ls + math.log(1 - BETA)]), 0)
    kt = F.kl_div(lm, lt, reduction="none", log_target=True).sum(-1)
    ks = F.kl_div(lm, ls, reduction="none", log_target=True).sum(-1)
    return (BETA * kt + (1 - BETA) * ks).mean()


def loss_fn(name: str, divergence: str, xs, ws, xt, wt, y):
    """A callable (student input, student weight) -> loss for case ``name``."""
    if name == "crossent":
        return lambda a, w: crossent.linear_distillation_loss(
            a, w, xt, wt, y, divergence=divergence, beta=BETA
        )
    if name == "crossent_reference_rows":

        def before(a, w):
            return crossent.linear_distillation_loss(
                a, w, xt, wt, y, divergence=divergence, beta=BETA, workspace_bytes=96 << 20,
                backend="torch",
            )

        return before
    if name == "crossent_unfused":
        return lambda a, w: crossent.distillation_loss(
            F.linear(a, w), F.linear(xt, wt), y, divergence=divergence, beta=BETA
        )
    if name == "torch_unfused":
        return lambda a, w: textbook_jsd(F.linear(a, w), F.linear(xt, wt), divergence)
    if name == "liger_chunked":
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        if divergence != "jsd":
            raise ValueError("liger_chunked: only the JSD is benchmarked")
        mod = LigerFusedLinearJSDLoss(
            weight_hard_loss=0.0, weight_soft_loss=1.0, beta=BETA, compiled=False
        )
        return lambda a, w: mod(a, w, xt, wt, y)
    raise ValueError(name)


def make_case(name: str, divergence: str, xs, ws, xt, wt, y):
    """A zero-argument callable running one forward + backward of ``name``."""
    n, v = xs.shape[0], ws.shape[0]
    if name == "floor":
        g = torch.randn(n, v) / v
        zs, zt = torch.empty(n, v), torch.empty(n, v)
        dx, dw = torch.empty_like(xs), torch.empty_like(ws)

        def run() -> None:
            torch.mm(xs, ws.t(), out=zs)
            torch.mm(xt, wt.t(), out=zt)
            torch.mm(g, ws, out=dx)
            torch.mm(g.t(), xs, out=dw)

        return run
    a, w = xs.clone().requires_grad_(True), ws.clone().requires_grad_(True)
    fn = loss_fn(name, divergence, xs, ws, xt, wt, y)

    def run() -> None:
        a.grad = w.grad = None
        fn(a, w).backward()

    return run


def check(divergence: str, cases, xs, ws, xt, wt, y) -> dict[str, float]:
    """Largest relative difference of each case's loss and gradients from ``crossent_unfused``."""
    out = {}
    for name in ["crossent_unfused"] + [c for c in cases if c not in ("floor", "crossent_unfused")]:
        a, w = xs.clone().requires_grad_(True), ws.clone().requires_grad_(True)
        loss = loss_fn(name, divergence, xs, ws, xt, wt, y)(a, w)
        loss.backward()
        out[name] = (loss.detach(), a.grad, w.grad)
    ref = out.pop("crossent_unfused")
    return {
        name: max(
            float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)) for p, q in zip(got, ref)
        )
        for name, got in out.items()
    }


def _maxrss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child(case: str, divergence: str, shape) -> None:
    if os.environ.get("DISTILL_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["DISTILL_BENCH_THREADS"]))
    make_case(case, divergence, *make_inputs(8, 16, 50))()  # one-time costs on a tiny problem
    inputs = make_inputs(*shape)
    run = make_case(case, divergence, *inputs)
    before = _maxrss_bytes()
    run()
    print(json.dumps({"growth": _maxrss_bytes() - before}))


def measure_memory(case: str, divergence: str, shape) -> int:
    cmd = [sys.executable, __file__, "--memory-child", case, divergence, ",".join(map(str, shape))]
    out = (
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return int(json.loads(out)["growth"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="*", default=None, help="N,D,V (default 2048,512,32000)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--divergence", default="jsd")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["DISTILL_BENCH_THREADS"] = str(args.threads)  # for the memory subprocesses
    if args.memory_child:
        case, div, shape = args.memory_child
        memory_child(case, div, tuple(int(s) for s in shape.split(",")))
        return
    shapes = [tuple(int(s) for s in sh.split(",")) for sh in args.shapes] if args.shapes else SHAPES
    cases = [c for c in args.cases.split(",") if c != "liger_chunked" or liger_available()]
    if "liger_chunked" in args.cases and "liger_chunked" not in cases:
        print("# liger_chunked skipped: liger-kernel is not installed")
    print(
        f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}, divergence {args.divergence}"
    )
    for shape in shapes:
        n, d, v = shape
        small = make_inputs(min(n, 256), d, v)
        diffs = check(args.divergence, cases, *small)
        print(
            f"\n## N={n} D={d} V={v}  (check on 256 rows, max rel diff vs crossent_unfused: "
            + ", ".join(f"{k} {e:.1e}" for k, e in diffs.items())
            + ")"
        )
        inputs = make_inputs(*shape)
        runs = {c: make_case(c, args.divergence, *inputs) for c in cases}
        for r in runs.values():
            r()  # warm-up
        times: dict[str, list[float]] = {c: [] for c in cases}
        for _ in range(args.reps):
            for c, r in runs.items():
                t0 = time.perf_counter()
                r()
                times[c].append(time.perf_counter() - t0)
        del runs, inputs
        floor = statistics.median(times["floor"]) if "floor" in times else None
        grads = 4 * (n * d + v * d)
        print("| case | median ms | min–max ms | × floor | extra MB (peak RSS growth − dX − dW) |")
        print("|---|---|---|---|---|")
        for c in cases:
            med = statistics.median(times[c])
            ratio = f"{med / floor:.2f}" if floor else "—"
            mem = "—"
            if not args.no_memory and c != "floor":
                mem = f"{(measure_memory(c, args.divergence, shape) - grads) / 1e6:.0f}"
            print(
                f"| {c} | {med * 1e3:.0f} | {min(times[c]) * 1e3:.0f}–{max(times[c]) * 1e3:.0f} | {ratio} | {mem} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
