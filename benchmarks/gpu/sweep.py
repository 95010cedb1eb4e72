"""Sweep the block/warp table of the Triton cross-entropy kernel (``crossent._backends.triton.configs``).

For each shape (default: the three GPU logits cases of the benchmarks) and each option variant (``plain``;
``allopts`` = class weights, label smoothing 0.1, z-loss 1e-4, softcap 30 and 10% ignored targets, i.e.
``crossent.bench.cases.ALL_OPTIONS``), every point of the grid

    SINGLE_BLOCK_BY_LIVE[live] (with MAX_SINGLE_BLOCK) × MULTI_BLOCK × warps × SPLIT_BELOW_PROGRAMS

is applied by patching the module's attributes (``ce_config``/``split_config`` read them at every launch,
and Triton compiles one kernel per BLOCK/num_warps, so nothing else needs resetting). Grid points that
lead to the same launch (path, BLOCK, num_warps, chunks) are measured once. Per launch config:

1. correctness: one forward + backward of ``crossent.cross_entropy(..., backend="triton")`` (mean) on
   a poisoned allocator (the gradient cannot inherit a right answer from the previous config) against
   the float64 reference of the bench harness (``crossent.bench.harness.reference``); the logits must
   stay untouched. A wrong config is reported and not timed;
2. time of the same forward + backward, ``triton.testing.do_bench`` (median, 20th/80th percentiles; it
   flushes L2 by zeroing a 256 MB buffer before every timed call; warm-up and repeat in ms): "eager"
   (the Python call as users make it: includes launch overhead) and "graph" (the same call captured in a
   CUDA graph and replayed: the kernels alone), ranked by graph time where capture works;
3. peak extra memory: ``torch.cuda.max_memory_allocated`` during one call beyond what was allocated
   before it (the inputs), minus the gradient every implementation returns.

Floors, timed the same way: ``copy`` = ``buf.copy_(logits)`` into a preallocated buffer (one read, one
write: the benchmarks' floor), and ``bytes`` = 2·N·V·itemsize over the bandwidth of a 2 GiB
device-to-device copy (the same floor at the device's best copy rate).

On the CPU (``--device cpu``) the kernels run under ``TRITON_INTERPRET=1`` (set here before Triton is
imported) and are timed with ``time.perf_counter`` (median of ``--cpu-reps``): for exercising this script
at tiny shapes only, e.g. ``--device cpu --shapes 8x3000:fp32 --caps 1024,4096 --multi 256,512``.

Writes ``sweep.csv`` (one row per launch config) and ``sweep.md`` (ranked tables and the best config
per shape, in the form configs.py takes) into ``--out``; prints the short version last.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sweep_report import fmt, write_outputs  # beside this file

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHAPES = "8192x128256:bf16,65536x1000:fp32,16384x32000:bf16"
KEEP = "keep"  # a knob value meaning "leave configs.py's value"

# relative tolerances against the float64 reference: (loss, gradient); fp32 math in the kernel, the
# gradient rounded once to the logits' dtype
TOL = {"fp32": (1e-5, 1e-4), "bf16": (1e-4, 1e-2), "fp16": (1e-4, 2e-3)}


def _ints(text: str) -> list[int | None]:
    return [None if t.strip() == KEEP else int(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time the Triton CE kernel over a grid of block/warp configs against the copy floor.",
        epilog=f"Knob lists are comma-separated; '{KEEP}' means configs.py's current value.",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument(
        "--shapes", default=DEFAULT_SHAPES, help=f"NxV:dtype,... (default {DEFAULT_SHAPES})"
    )
    p.add_argument("--variants", default="plain,allopts", help="plain,allopts (default both)")
    p.add_argument(
        "--caps", default="keep,8192,16384,32768,65536", help="SINGLE_BLOCK_BY_LIVE[live]"
    )
    p.add_argument("--multi", default="keep,4096,8192,16384,32768", help="MULTI_BLOCK")
    p.add_argument("--warps", default="keep,4,8,16,32", help="num_warps ('keep': the _warps rule)")
    p.add_argument(
        "--split",
        default="keep",
        help="SPLIT_BELOW_PROGRAMS (default: keep; rows are split only when there are fewer rows than "
        "this, which no default shape has: try e.g. --shapes 256x128256:bf16 --split keep,0,256,4096)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=170.0,
        help="stop starting new configs after this many seconds (default 170); time left over by "
        "one shape goes to the next; the current config of configs.py is always measured first",
    )
    p.add_argument("--warmup-ms", type=int, default=25, help="do_bench warm-up (ms)")
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench repetition time (ms)")
    p.add_argument("--cpu-reps", type=int, default=3, help="timed calls per config on the CPU")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph timing")
    p.add_argument("--out", default="sweep-out", help="folder for sweep.csv and sweep.md")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the distinct launch configs of the grid per shape and exit (no kernels run)",
    )
    args = p.parse_args(argv)
    args.shape_list = []
    for item in args.shapes.split(","):
        dims, _, dtype = item.strip().partition(":")
        n, v = (int(s) for s in dims.lower().split("x"))
        args.shape_list.append((n, v, dtype or "bf16"))
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    for knob in ("caps", "multi", "warps", "split"):
        setattr(args, knob + "_list", _ints(getattr(args, knob)))
    return args


# ---------------------------------------------------------------------------------------------------
# Configs: patching and the launch a grid point leads to
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    cap: int | None = None  # SINGLE_BLOCK_BY_LIVE[live], and MAX_SINGLE_BLOCK raised/lowered to it
    multi: int | None = None  # MULTI_BLOCK
    warps: int | None = None  # a fixed num_warps instead of configs._warps
    split: int | None = None  # SPLIT_BELOW_PROGRAMS

    def describe(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (
                ("cap", self.cap),
                ("multi", self.multi),
                ("warps", self.warps),
                ("split", self.split),
            )
            if value is not None
        ]
        return ",".join(parts) or "current"


@dataclass(frozen=True)
class Launch:
    path: str  # single (row in registers), multi (two passes), split (rows cut into chunks)
    block: int
    warps: int
    chunks: int
    chunk_size: int


@contextlib.contextmanager
def patched(configs, knobs: Knobs, live: int):  # noqa: ANN001 - the configs module
    """Apply ``knobs`` to the configs module for the duration of the block (restored after)."""
    saved: dict[str, object] = {}

    def put(name: str, value: object) -> None:
        if not hasattr(configs, name):
            raise AttributeError(f"configs.py has no {name} any more: update sweep.py")
        saved.setdefault(name, getattr(configs, name))
        setattr(configs, name, value)

    try:
        if knobs.cap is not None:
            table = dict(configs.SINGLE_BLOCK_BY_LIVE)
            table[min(max(live, 1), 4)] = knobs.cap
            put("SINGLE_BLOCK_BY_LIVE", table)
            put("MAX_SINGLE_BLOCK", knobs.cap)
        if knobs.multi is not None:
            put("MULTI_BLOCK", knobs.multi)
        if knobs.warps is not None:
            put("_warps", lambda block, w=knobs.warps: w)
        if knobs.split is not None:
            put("SPLIT_BELOW_PROGRAMS", knobs.split)
        yield
    finally:
        for name, value in saved.items():
            setattr(configs, name, value)


def launch_of(configs, rows: int, classes: int, itemsize: int, live: int) -> Launch:  # noqa: ANN001
    block, warps = configs.ce_config(classes, itemsize, live)
    chunks, chunk_size = configs.split_config(rows, classes, block)
    path = "single" if block >= classes else ("split" if chunks > 1 else "multi")
    return Launch(path, block, warps, chunks, chunk_size)


def distinct_launches(configs, args, rows, classes, itemsize, live):  # noqa: ANN001
    """{Launch: [Knobs, ...]} for the grid, the current config first, then by distance from it."""
    found: dict[Launch, list[Knobs]] = {}
    base = launch_of(configs, rows, classes, itemsize, live)
    found[base] = [Knobs()]
    grid = itertools.product(args.caps_list, args.multi_list, args.warps_list, args.split_list)
    for cap, multi, warps, split in grid:
        knobs = Knobs(cap, multi, warps, split)
        if knobs == Knobs():
            continue
        with patched(configs, knobs, live):
            launch = launch_of(configs, rows, classes, itemsize, live)
        found.setdefault(launch, []).append(knobs)

    def distance(launch: Launch) -> float:
        return (
            abs(math.log2(launch.block / base.block))
            + abs(math.log2(launch.warps / base.warps))
            + 1.5 * (launch.chunks != base.chunks)
            + 0.5 * (launch.path != base.path)
        )

    def simplicity(knobs: Knobs) -> int:  # the grid point that changes fewest knobs comes first
        return sum(v is not None for v in (knobs.cap, knobs.multi, knobs.warps, knobs.split))

    order = sorted(found, key=distance)  # stable: the current config (distance 0) stays first
    return {launch: sorted(found[launch], key=simplicity) for launch in order}


# ---------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    shape: str
    dtype: str
    variant: str
    live: int
    launch: Launch
    knobs: list[Knobs]
    status: str = "not run"
    pair: int = 0  # index of its (shape, variant) in the arguments' order
    note: str = ""
    loss_err: float | None = None
    grad_err: float | None = None
    first_call_s: float | None = None
    eager_ms: tuple[float, float, float] | None = None  # median, p20, p80
    graph_ms: tuple[float, float, float] | None = None
    extra_mb: float | None = None
    floor_copy_ms: float | None = None
    floor_bytes_ms: float | None = None
    extras: dict = field(default_factory=dict)

    @property
    def best_ms(self) -> float | None:
        t = self.graph_ms or self.eager_ms
        return t[0] if t else None

    @property
    def ratio(self) -> float | None:
        if self.best_ms is None or not self.floor_copy_ms:
            return None
        return self.best_ms / self.floor_copy_ms


class Timer:
    """do_bench on CUDA (median and 20th/80th percentiles, ms); perf_counter medians on the CPU."""

    def __init__(self, device: str, args: argparse.Namespace) -> None:
        self.device, self.args = device, args

    def __call__(self, fn) -> tuple[float, float, float]:  # noqa: ANN001
        if self.device == "cuda":
            from triton.testing import do_bench

            med, p20, p80 = do_bench(
                fn,
                warmup=self.args.warmup_ms,
                rep=self.args.rep_ms,
                quantiles=[0.5, 0.2, 0.8],
            )
            return float(med), float(p20), float(p80)
        fn()
        times = []
        for _ in range(max(1, self.args.cpu_reps)):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return statistics.median(times), times[0], times[-1]


def _rel_err(a, b) -> float:  # noqa: ANN001
    import torch

    num = torch.linalg.vector_norm(a.to(b.dtype) - b).item()
    den = torch.linalg.vector_norm(b).item()
    return num / den if den > 0 else num


def _poison(torch, like) -> None:  # noqa: ANN001
    """Fill a block the size of the gradient with NaN and free it: the next allocation of that size
    (the kernel's gradient buffer) reuses it, so an element the kernel never writes shows as NaN."""
    junk = torch.empty_like(like)
    junk.fill_(float("nan"))
    del junk


@dataclass
class Pair:
    """One (shape, variant) of the sweep and the distinct launches its grid leads to."""

    index: int  # order of the --shapes/--variants arguments (the order of the report)
    rows: int
    classes: int
    dtype: str
    variant: str
    live: int
    launches: dict  # {Launch: [Knobs, ...]}, the current config first


def plan(args: argparse.Namespace) -> list[Pair]:
    import torch

    from crossent._backends.triton import configs
    from crossent.bench import cases as bench_cases

    pairs = []
    for n, v, dtype in args.shape_list:
        for variant in args.variant_list:
            options = bench_cases.ALL_OPTIONS if variant == "allopts" else bench_cases.Options()
            itemsize = torch.empty((), dtype=bench_cases._DTYPES[dtype]).element_size()
            live = configs.live_arrays(
                prob_target=False,
                weighted=options.weight,
                smoothing=options.label_smoothing > 0,
                softcap=options.softcap is not None,
            )
            launches = distinct_launches(configs, args, n, v, itemsize, live)
            pairs.append(Pair(len(pairs), n, v, dtype, variant, live, launches))
    return pairs


def _progress(r: Row) -> None:
    print(
        f"  {r.shape} {r.dtype} {r.variant:<7} {r.launch.path:<6} BLOCK={r.launch.block:<6} "
        f"warps={r.launch.warps:<2} chunks={r.launch.chunks:<3} {r.status:<5} "
        f"{fmt(r.best_ms) or '-'} ms {fmt(r.ratio, 3) or '-'}x {r.note}",
        flush=True,
    )


def _copy_floor(torch, timer, x) -> float:  # noqa: ANN001
    """ms of ``buf.copy_(x)`` into a preallocated (and already touched) buffer, timed like the kernel."""
    buf = torch.empty_like(x)
    buf.copy_(x)
    return timer(lambda: buf.copy_(x))[0]


def measure_pair(args, timer, pair: Pair, deadline, out_rows, bw) -> None:  # noqa: ANN001
    import torch

    import crossent
    from crossent._backends.triton import configs
    from crossent.bench import cases as bench_cases
    from crossent.bench import harness

    dev = args.device
    shape = f"{pair.rows}x{pair.classes}"
    options = bench_cases.ALL_OPTIONS if pair.variant == "allopts" else bench_cases.Options()
    case = bench_cases.Case("ce", dev, pair.dtype, (pair.rows, pair.classes), options=options)
    inputs = case.make_inputs()
    x, t, w = inputs.logits, inputs.target, inputs.class_weight

    floor_copy = _copy_floor(torch, timer, x.detach())
    floor_bytes = 2 * x.numel() * x.element_size() / bw * 1e3 if bw else None
    ref = harness.reference(case, inputs)
    fingerprint = x.detach().reshape(-1)[::97].clone()
    kw = dict(
        ignore_index=bench_cases.IGNORE_INDEX,
        label_smoothing=options.label_smoothing,
        z_loss=options.z_loss,
        softcap=options.softcap,
        backend="triton",
    )

    def call():
        loss = crossent.cross_entropy(x, t, w, **kw)
        (grad,) = torch.autograd.grad(loss, (x,))
        return loss, grad

    tol_loss, tol_grad = TOL.get(pair.dtype, TOL["bf16"])
    # this pair's share of the time left (what it leaves unused goes to the pairs after it);
    # the current config of configs.py (first in the order) always runs
    share = deadline.left() / max(deadline.pairs_left, 1)
    start = time.monotonic()
    for i, (launch, knobs) in enumerate(pair.launches.items()):
        row = Row(shape, pair.dtype, pair.variant, pair.live, launch, knobs, pair=pair.index)
        row.floor_copy_ms, row.floor_bytes_ms = floor_copy, floor_bytes
        out_rows.append(row)
        if i > 0 and (time.monotonic() - start > share or deadline.left() <= 0):
            row.note = "time budget used"
            continue
        try:
            with patched(configs, knobs[0], pair.live):
                run_one(torch, timer, call, row, ref, x, fingerprint, tol_loss, tol_grad, args)
        except Exception as exc:  # OOM, compile failure, a changed configs.py: report, go on
            row.status, row.note = "error", f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            if dev == "cuda":
                torch.cuda.empty_cache()
        _progress(row)


def run_one(torch, timer, call, row, ref, x, fingerprint, tol_loss, tol_grad, args) -> None:  # noqa: ANN001
    cuda = x.is_cuda
    _poison(torch, x)
    t0 = time.perf_counter()
    loss, grad = call()
    if cuda:
        torch.cuda.synchronize()
    row.first_call_s = time.perf_counter() - t0  # includes Triton's compilation of a new config
    row.loss_err = abs(float(loss.detach().double()) - ref.loss) / max(abs(ref.loss), 1e-30)
    row.grad_err = _rel_err(grad, ref.grads[0])
    del loss, grad
    bad = []
    if not row.loss_err <= tol_loss:  # NaN fails too
        bad.append(f"loss rel. error {row.loss_err:.2e} > {tol_loss:g}")
    if not row.grad_err <= tol_grad:
        bad.append(f"gradient rel. error {row.grad_err:.2e} > {tol_grad:g}")
    if not torch.equal(fingerprint, x.detach().reshape(-1)[::97]):
        bad.append("the logits were modified")
    if bad:
        row.status, row.note = "wrong", "; ".join(bad)
        return
    row.eager_ms = timer(call)
    if cuda:
        grad_bytes = x.numel() * x.element_size()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = call()
        torch.cuda.synchronize()
        row.extra_mb = (torch.cuda.max_memory_allocated() - base - grad_bytes) / 2**20
        del out
        if not args.no_graph:
            try:
                row.graph_ms = timer(_graphed(torch, call))
            except Exception as exc:  # capture can fail (a host sync, an allocator limit)
                row.note = f"no graph: {type(exc).__name__}: {str(exc)[:120]}"
    row.status = "ok"


def _graphed(torch, call):  # noqa: ANN001
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


class Deadline:
    def __init__(self, seconds: float, pairs: int) -> None:
        self.end = time.monotonic() + seconds
        self.pairs_left = pairs  # (shape, variant) pairs not yet finished

    def left(self) -> float:
        return self.end - time.monotonic()


def copy_bandwidth(torch, timer, device: str) -> float | None:  # noqa: ANN001
    """Bytes read + written per second by a large device-to-device copy (the device's copy ceiling)."""
    if device != "cuda":
        return None
    n = 1 << 31
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    a.random_()  # never time on zeros
    b = torch.empty_like(a)
    ms = timer(lambda: b.copy_(a))[0]
    return 2 * n / (ms / 1e3)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
        if os.environ["TRITON_INTERPRET"] != "1" and not args.dry_run:
            print("sweep.py: --device cpu needs TRITON_INTERPRET=1", file=sys.stderr)
            return 2
    elif os.environ.get("TRITON_INTERPRET") == "1" and not args.dry_run:
        print("sweep.py: --device cuda with TRITON_INTERPRET=1: unset it", file=sys.stderr)
        return 2
    if importlib.util.find_spec("crossent") is None:
        sys.path.insert(0, str(ROOT / "src"))  # the package need not be installed
    import torch
    import triton

    if args.device == "cuda" and not args.dry_run and not torch.cuda.is_available():
        print("sweep.py: skipped: no CUDA (use --device cpu under TRITON_INTERPRET=1)")
        return 0
    deadline = Deadline(args.budget_s, len(args.shape_list) * len(args.variant_list))
    timer = Timer(args.device, args)
    on_gpu = args.device == "cuda" and torch.cuda.is_available()
    if on_gpu:
        props = torch.cuda.get_device_properties(0)
        l2 = getattr(props, "L2_cache_size", 0) / 2**20
        device = f"{props.name}, {props.multi_processor_count} SMs, L2 {l2:.0f} MB"
        timing = "triton.testing.do_bench, median (p20–p80), L2 flushed before each timed call"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}), TRITON_INTERPRET=1"
        timing = f"time.perf_counter, median of {args.cpu_reps} after one warm-up call"
    bw = copy_bandwidth(torch, timer, "cuda") if on_gpu and not args.dry_run else None
    if on_gpu:
        torch.cuda.empty_cache()
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "timing": timing,
        "bw": f"{bw / 1e12:.2f} TB/s read+write" if bw else "not measured",
    }
    print(
        f"sweep on {device}; torch {env['torch']}, triton {env['triton']}; {env['bw']}", flush=True
    )
    rows: list[Row] = []
    pairs = plan(args)
    if args.dry_run:
        for p in pairs:
            for launch, knobs in p.launches.items():
                shape = f"{p.rows}x{p.classes}"
                rows.append(
                    Row(
                        shape,
                        p.dtype,
                        p.variant,
                        p.live,
                        launch,
                        knobs,
                        status="dry run",
                        pair=p.index,
                    )
                )
    # fewest launches first: small grids finish inside their share and pass the rest on
    todo = [] if args.dry_run else sorted(pairs, key=lambda p: len(p.launches))
    for k, p in enumerate(todo):
        deadline.pairs_left = len(todo) - k
        try:
            measure_pair(args, timer, p, deadline, rows, bw)
            if on_gpu:
                torch.cuda.empty_cache()  # the pair's inputs and reference are gone
        except Exception as exc:  # inputs that do not fit, a broken reference: report the pair
            print(f"{p.rows}x{p.classes} {p.dtype} {p.variant}: {type(exc).__name__}: {exc}")
        write_outputs(Path(args.out), rows, env, args.dry_run)  # a run cut short keeps its rows
    page = write_outputs(Path(args.out), rows, env, args.dry_run)
    out = Path(args.out)
    if args.dry_run:
        for r in rows:
            print(
                f"{r.shape} {r.dtype} {r.variant:<7} live={r.live} {r.launch.path:<6} "
                f"BLOCK={r.launch.block:<6} warps={r.launch.warps:<2} chunks={r.launch.chunks:<3} "
                f"from {len(r.knobs)} grid point(s), e.g. {r.knobs[0].describe()}"
            )
    print(page[page.index("## Best config") :])
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
