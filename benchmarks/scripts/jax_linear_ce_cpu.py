"""crossent.jax.linear_cross_entropy against optax on materialised logits: time and compiled memory (CPU).

Both sides are ``jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))`` of a mean cross-entropy with class
index targets; the memory is XLA's own analysis of the compiled program (``temp_size_in_bytes``: the
temporaries beyond the arguments and outputs). Time: median of ``--repeat`` calls after one warm-up,
each waited for with ``block_until_ready``.

Usage::

    python benchmarks/scripts/jax_linear_ce_cpu.py                       # N=4096, D=256, V=32000, float32
    python benchmarks/scripts/jax_linear_ce_cpu.py --n 512 --v 4096 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import crossent.jax as cj

MiB = 1 << 20


def _inputs(n: int, d: int, v: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, d), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((v, d), dtype=np.float32) / np.sqrt(d))
    y = jnp.asarray(rng.integers(0, v, n).astype(np.int32))
    return x, w, y


def providers(workspace_bytes: int | None) -> dict:
    def crossent_fused(x, w, y):
        return cj.linear_cross_entropy(x, w, y, workspace_bytes=workspace_bytes)

    def optax_logits(x, w, y):
        return optax.softmax_cross_entropy_with_integer_labels(x @ w.T, y).mean()

    return {"crossent.jax fused": crossent_fused, "optax (logits)": optax_logits}


def measure(fn, x, w, y, repeat: int) -> dict:
    step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    compiled = step.lower(x, w, y).compile()
    mem = compiled.memory_analysis()
    out = jax.block_until_ready(compiled(x, w, y))  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(x, w, y))
        times.append(time.perf_counter() - t0)
    return {
        "temp_mib": mem.temp_size_in_bytes / MiB,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "loss": float(out[0]),
        "grads": out[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--v", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workspace-mib", type=float, default=None)
    parser.add_argument("--memory-only", action="store_true", help="compile and report memory only")
    args = parser.parse_args()
    ws = None if args.workspace_mib is None else int(args.workspace_mib * MiB)
    x, w, y = _inputs(args.n, args.d, args.v)
    logits_mib = args.n * args.v * 4 / MiB
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    print(f"N={args.n} D={args.d} V={args.v} float32; logits {logits_mib:.0f} MiB")
    results = {}
    for name, fn in providers(ws).items():
        if args.memory_only:
            step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
            mem = step.lower(x, w, y).compile().memory_analysis()
            print(f"{name:22s} temp {mem.temp_size_in_bytes / MiB:8.1f} MiB")
            continue
        r = results[name] = measure(fn, x, w, y, args.repeat)
        print(
            f"{name:22s} temp {r['temp_mib']:8.1f} MiB  time median {r['median_s'] * 1e3:8.1f} ms "
            f"(min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f})  loss {r['loss']:.6f}"
        )
    if len(results) == 2:
        a, b = results.values()
        err = max(float(jnp.max(jnp.abs(g - h))) for g, h in zip(a["grads"], b["grads"]))
        print(
            f"time ratio fused/optax {a['median_s'] / b['median_s']:.2f}; max |grad diff| {err:.2e}"
        )


if __name__ == "__main__":
    main()
