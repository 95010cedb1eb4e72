"""Time crossent's eager CPU paths against torch.nn.functional, forward + backward, in one run.

Usage (standalone; torch and crossent importable, e.g. from the repository's virtual environment):

    python benchmarks/scripts/eager_cpu.py [--shape 8192x4000] [--reps 3] [--threads N] [--cases bce,nll]

Each case times ``loss = f(x, ...); loss.backward()`` on a fresh leaf gradient, for crossent and for its
torch peer on the same tensors. Torch has no softmax focal loss nor (without torchvision) a sigmoid focal
loss: their peers are the usual torch compositions (written below). The two providers are interleaved
rep by rep (crossent, torch, crossent, torch, …) so load from other processes hits both alike; the
printed ratio is the median over reps of (crossent time / torch time in the same rep). Results are
checked against each other before timing.

Prints a Markdown table (ms: median and min of the reps) with the machine, date, load average, thread
count and whether ``THP_MEM_ALLOC_ENABLE`` is set (it changes torch's allocation cost).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import torch
import torch.nn.functional as F

import crossent
import crossent.functional as CF


def _torch_focal(x, y, gamma=2.0):
    lp = F.log_softmax(x, dim=-1).gather(1, y[:, None])[:, 0]
    return (-((1 - lp.exp()) ** gamma) * lp).mean()


def _torch_sigmoid_focal(x, t, alpha=0.25, gamma=2.0):  # torchvision.ops.sigmoid_focal_loss
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    return ((alpha * t + (1 - alpha) * (1 - t)) * loss).mean()


def cases(n: int, c: int) -> dict:
    """name -> (crossent fn, torch fn, leaf tensor that gets the gradient)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, c, generator=g) * 3).requires_grad_()
    xb = x.detach().bfloat16().requires_grad_()
    y = torch.randint(0, c, (n,), generator=g)
    t = torch.rand(n, c, generator=g)
    lp = F.log_softmax(x.detach(), -1).requires_grad_()
    q = F.softmax(torch.randn(n, c, generator=g), -1)
    return {
        "ce bf16": (lambda: CF.cross_entropy(xb, y), lambda: F.cross_entropy(xb, y), xb),
        "bce_with_logits": (
            lambda: CF.binary_cross_entropy_with_logits(x, t),
            lambda: F.binary_cross_entropy_with_logits(x, t),
            x,
        ),
        "sigmoid_focal (mean)": (
            lambda: CF.sigmoid_focal_loss(x, t, reduction="mean"),
            lambda: _torch_sigmoid_focal(x, t),
            x,
        ),
        "nll_loss": (lambda: CF.nll_loss(lp, y), lambda: F.nll_loss(lp, y), lp),
        "kl_div batchmean": (
            lambda: CF.kl_div(lp, q, reduction="batchmean"),
            lambda: F.kl_div(lp, q, reduction="batchmean"),
            lp,
        ),
        "focal_loss γ=2": (
            lambda: CF.focal_loss(x, y, gamma=2.0),
            lambda: _torch_focal(x, y),
            x,
        ),
    }


def _step(fn, leaf) -> tuple[float, torch.Tensor]:
    leaf.grad = None
    t0 = time.perf_counter()
    loss = fn()
    loss.backward()
    return (time.perf_counter() - t0) * 1e3, loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="8192x4000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, c = (int(v) for v in args.shape.split("x"))
    wanted = [s for s in args.cases.split(",") if s]
    load = os.getloadavg()
    print(
        f"# eager CPU paths, {n}x{c}, {torch.get_num_threads()} threads, {args.reps} reps — "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"crossent {crossent.__file__}, torch {torch.__version__}, "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print("| case | crossent ms (median / min) | torch ms (median / min) | ratio (median) |")
    print("|---|---|---|---|")
    for name, (ours, theirs, leaf) in cases(n, c).items():
        if wanted and not any(w in name for w in wanted):
            continue
        _, a = _step(ours, leaf)  # warm-up, and a correctness check against the peer
        ga = leaf.grad.float()
        _, b = _step(theirs, leaf)
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=1e-5)
        torch.testing.assert_close(ga, leaf.grad.float(), rtol=2e-2, atol=1e-6)
        mine, peer = [], []
        for _ in range(args.reps):
            mine.append(_step(ours, leaf)[0])
            peer.append(_step(theirs, leaf)[0])
        ratio = statistics.median(m / p for m, p in zip(mine, peer))
        print(
            f"| {name} | {statistics.median(mine):.0f} / {min(mine):.0f} | "
            f"{statistics.median(peer):.0f} / {min(peer):.0f} | {ratio:.2f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
