"""A transformers training step, stock vs ``crossent.integrations.transformers.patch``: peak memory and time.

Standalone: ``python benchmarks/scripts/transformers_step.py [--tokens 512 2048] [--steps 5] [--threads N]``.

The model is a tiny randomly initialised Llama (hidden 64, 2 layers) with Llama 3's vocabulary size,
128,256, so the output layer dominates: the float32 logits of N tokens take N × 128,256 × 4 bytes. Each
(mode, tokens) runs in a fresh process: one warm-up step, then ``--steps`` timed steps (forward with
labels, backward, SGD update); the growth of the peak resident set (``VmHWM``) from just before the first
full-size step to the end is the step's peak extra memory (the gradients already exist: the warm-up made
them). Printed as a Markdown table with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

VOCAB = 128256


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, tokens: int, steps: int, threads: int) -> dict:
    import torch
    import transformers

    from crossent.integrations.transformers import patch

    torch.set_num_threads(threads)
    seq = 256
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=seq,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).train()
    if mode == "patched":
        patch(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    ids = torch.randint(2, VOCAB, (tokens // seq, seq))

    def step(x: torch.Tensor) -> float:
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        return float(loss)

    step(ids[:1, :16])  # warm-up: gradients and optimizer state allocated, lazy imports done
    before = _hwm_bytes()
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(step(ids))
        times.append(time.perf_counter() - t0)
    return {
        "peak_growth_bytes": _hwm_bytes() - before,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "first_loss": losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, tokens = args.child
        print(json.dumps(child(mode, int(tokens), args.steps, args.threads)))
        return

    import torch
    import transformers

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({args.threads} threads), transformers {transformers.__version__}; "
        f"tiny Llama (hidden 64, 2 layers), vocabulary {VOCAB}, float32, {args.steps} timed steps\n"
    )
    print(
        "| tokens | logits (MB) | stock peak (MB) | patched peak (MB) | stock s/step | patched s/step |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for tokens in args.tokens:
        row = {}
        for mode in ("stock", "patched"):
            cmd = [sys.executable, __file__, "--child", mode, str(tokens)]
            cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        s, p = row["stock"], row["patched"]
        if abs(s["first_loss"] - p["first_loss"]) > 1e-4 * abs(s["first_loss"]):
            raise SystemExit(f"losses differ: stock {s['first_loss']}, patched {p['first_loss']}")
        mb = 1e6
        print(
            f"| {tokens} | {tokens * VOCAB * 4 / mb:.0f} | {s['peak_growth_bytes'] / mb:.0f} | "
            f"{p['peak_growth_bytes'] / mb:.0f} | {s['median_s']:.3f} ({s['min_s']:.3f}–{s['max_s']:.3f}) | "
            f"{p['median_s']:.3f} ({p['min_s']:.3f}–{p['max_s']:.3f}) |"
        )


if __name__ == "__main__":
    main()
