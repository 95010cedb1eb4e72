"""``crossent bench``: time crossent against its peers and the floor of each case.

Examples::

    crossent bench --quick --device cpu                 # CI smoke run: tiny shapes, a few repeats
    crossent bench --device cpu --cases ce- --out out/  # the CPU logits cases, results in out/
    crossent bench --device cuda --providers crossent,liger,torch-compile
    crossent bench --list                               # cases and providers, with availability
    crossent bench --suite cpu-shapes --threads 2       # crossent vs torch over the CPU grid

Writes ``results.csv`` (timed rows), ``results.skipped.csv``, ``results.json`` and ``results.png`` into
``--out``; ``python -m crossent.bench.report --regenerate`` rebuilds benchmarks/RESULTS.md from the CSVs.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="auto",
        help="where to run (auto: cuda when available)",
    )
    parser.add_argument(
        "--cases",
        default="",
        metavar="FILTER",
        help="comma-separated substrings or globs of case names (e.g. 'ce-,*allopts')",
    )
    parser.add_argument(
        "--providers",
        default="",
        metavar="FILTER",
        help="comma-separated provider names or globs (the floor always runs)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny shapes and 2 repeats, compiling providers left out (CI smoke)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per provider (default 5 CPU, 20 GPU, 2 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls after the checked first call (default 0 CPU, 3 GPU)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop repeating once this much was timed, after 3 calls (default 30 CPU, 10 GPU)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="write results.csv/.json/.png here"
    )
    parser.add_argument(
        "--name", default="results", help="file stem of the outputs (default: results)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument(
        "--no-interleave",
        action="store_true",
        help="do not time a floor call before each timed call (ratios then from the two medians)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--suite",
        choices=("default", "cpu-shapes"),
        default="default",
        help="cpu-shapes: crossent vs torch over the everyday CPU grid (crossent.bench.cpu_shapes)",
    )
    parser.add_argument("--list", action="store_true", help="list cases and providers, then exit")


def _matches(name: str, spec: str) -> bool:
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        return True
    return any(
        fnmatch.fnmatchcase(name, t) if any(c in t for c in "*?[") else t in name for t in tokens
    )


def _exact_or_glob(name: str, spec: str) -> bool:
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    return not tokens or any(fnmatch.fnmatchcase(name, t) for t in tokens)


def run(args: argparse.Namespace) -> int:
    if args.suite == "cpu-shapes":
        from ..bench import cpu_shapes

        return cpu_shapes.run(cpu_shapes.options_from(args))
    import torch

    from ..bench import cases as bench_cases
    from ..bench import distill_cases, harness, providers, report

    def all_cases() -> list:
        return bench_cases.all_cases(device, quick=args.quick) + distill_cases.distill_cases(
            device, quick=args.quick
        )

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("crossent bench: --device cuda, but CUDA is not available here", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [c for c in all_cases() if _matches(c.name, args.cases)]
    provs = [p for p in providers.all_providers() if _exact_or_glob(p.name, args.providers)]
    if args.list:
        for c in all_cases():
            print(f"case      {c.name:<34} {c.describe()}; floor: {c.floor_description()}")
        for p in providers.all_providers():
            ok, why = p.available(device)
            print(
                f"provider  {p.name:<18} {'available' if ok else 'unavailable: ' + why} — {p.description}"
            )
        return 0
    if not cases:
        print(f"crossent bench: no case matches --cases {args.cases!r}", file=sys.stderr)
        return 2
    gpu = device == "cuda"
    settings = harness.Settings(
        repeats=args.repeats or (2 if args.quick else 20 if gpu else 5),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3) if gpu else 0,
        max_seconds=args.max_seconds or (0.5 if args.quick else 10.0 if gpu else 30.0),
        quick=args.quick,
        interleave=not args.no_interleave,
        requested=tuple(t.strip() for t in args.providers.split(",") if t.strip()),
    )
    result = harness.run(cases, provs, settings, show_progress=not args.no_progress)
    timed, skipped = report.rows_of(result)
    env = result.environment
    print(
        f"crossent bench on {env['machine']} ({device}), torch {env['v_torch']}, {env['threads']} threads, "
        f"THP_MEM_ALLOC_ENABLE={env['THP_MEM_ALLOC_ENABLE']}, commit {env['commit'] or '?'}, {env['date']}"
    )
    print(report.format_table(timed, skipped))
    if args.out:
        paths = report.write_outputs(result, args.out, args.name)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    wrong = [s for s in skipped if s["status"] == "wrong"]
    if wrong:
        print(
            f"{len(wrong)} provider/case pair(s) failed the correctness check (not timed).",
            file=sys.stderr,
        )
    return 0
