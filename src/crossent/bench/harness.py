"""The timing harness: check each provider against a reference, then time it and measure its memory.

Per case: make the inputs (the case's setup factory), time the floor, compute the reference once, then for
each provider that is available and supports the case:

1. prepare it and make one call (its "first call": compilation happens here and is reported apart);
2. check that call against the reference — relative error of the loss and relative Frobenius-norm error of
   each gradient, within the dtype's tolerance — and that the inputs are untouched; a provider that fails
   is reported as ``wrong`` and not timed;
3. ``warmup`` more untimed calls, then up to ``repeats`` timed calls (at least ``min(3, repeats)``; after
   that, stop once ``max_seconds`` of timed calls have run), reporting the median, min and max.

Interleaved floor (``Settings.interleave``, on by default): each timed call of a provider is preceded by a
timed call of the floor, and the provider's ratio to the floor is the median over these rounds of
(provider time / floor time of the same round). On a shared machine the load drifts within seconds; a
ratio taken round by round cancels most of that drift, where a ratio of two medians taken minutes apart
does not. (Without it, the ratio is the provider's median over the floor's median.)

Timing: CUDA events around each call on the GPU (after a synchronisation); ``time.perf_counter`` on the
CPU. A runner's ``setup`` runs untimed before each call.

Peak extra memory, measured around every timed call (outside the timed interval) and reported as the
largest: the peak during the call beyond what was live before it, minus the bytes of the gradients the
call must return. GPU: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU:
resident set size — before each call the harness runs ``gc.collect()`` and glibc's ``malloc_trim(0)`` (so
freed memory is handed back to the OS and cannot hide reuse), writes ``5`` to ``/proc/self/clear_refs``
(which resets the kernel's peak-RSS counter ``VmHWM`` to the current RSS) and reads ``VmRSS``; after the
call it reads ``VmHWM``. Pages a call touches count, untouched allocations do not (physical memory is
what the number is about). Where ``clear_refs`` cannot be written the CPU memory column stays empty.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..testing import BENCH_TOLERANCES
from .cases import Case, Inputs, class_weight_of_rows, torch_loss
from .providers import Provider, Result, Runner, peer_versions

# Relative tolerances of the correctness check, per input dtype: (loss, gradient) (crossent.testing).
TOLERANCES = BENCH_TOLERANCES
APPROXIMATE_GRAD_TOLERANCE = 0.25  # providers that filter gradients by design (CCE's default)


@dataclass
class Measurement:
    case: Case
    provider: str
    detail: str
    times_s: list[float]
    first_call_s: float
    extra_bytes: int | None
    loss_err: float | None = None
    grad_err: float | None = None
    floor_times_s: list[float] | None = None  # the floor's time in each round, when interleaved

    @property
    def ratio(self) -> float | None:
        """Median over rounds of time / floor time (None when the floor was not interleaved)."""
        if not self.floor_times_s:
            return None
        return statistics.median(t / f for t, f in zip(self.times_s, self.floor_times_s))


@dataclass
class Skip:
    case: Case
    provider: str
    status: str  # "unavailable", "unsupported", "skipped", "wrong" or "error"
    reason: str
    loss_err: float | None = None
    grad_err: float | None = None


@dataclass
class Settings:
    repeats: int = 5
    warmup: int = 0
    max_seconds: float = 30.0
    quick: bool = False
    interleave: bool = True  # a floor call before each timed call; ratios taken round by round
    # provider names asked for explicitly (they override --quick's exclusions)
    requested: tuple[str, ...] = ()


@dataclass
class RunResult:
    environment: dict
    measurements: list[Measurement] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Clocks and memory probes
# ---------------------------------------------------------------------------------------------------


def _timed(call: Callable[[], Result], device: str) -> tuple[Result, float]:
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = call()
        end.record()
        end.synchronize()
        return out, start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    out = call()
    return out, time.perf_counter() - t0


class MemoryProbe:
    """Peak bytes during a call beyond what was live before it (see the module docstring)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.method = (
            "cuda max_memory_allocated" if device == "cuda" else "cpu rss peak (clear_refs)"
        )
        self._libc = None
        self._baseline = 0
        if device == "cpu":
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._read("VmHWM")
            except OSError:
                self.method = ""
            name = ctypes.util.find_library("c")
            try:
                self._libc = ctypes.CDLL(name) if name else None
                getattr(self._libc, "malloc_trim", None)
            except OSError:
                self._libc = None

    @property
    def enabled(self) -> bool:
        return bool(self.method)

    @staticmethod
    def _read(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{key} not in /proc/self/status")

    def start(self) -> None:
        if not self.enabled:
            return
        if self.device == "cuda":
            torch.cuda.synchronize()
            self._baseline = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return
        gc.collect()
        if self._libc is not None and hasattr(self._libc, "malloc_trim"):
            self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self._baseline = self._read("VmRSS")

    def peak_extra(self) -> int | None:
        if not self.enabled:
            return None
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self._baseline
        return self._read("VmHWM") - self._baseline


# ---------------------------------------------------------------------------------------------------
# Reference and check
# ---------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    loss: float
    grads: tuple[torch.Tensor, ...]  # float32 (float64 for float64 cases)


def reference(case: Case, inputs: Inputs) -> Reference:
    """The case's loss and gradients from :func:`crossent.bench.cases.torch_loss`, in chunks of rows.

    Logits: float64 math. Fused linear: the products in float32 (float64 for float64 inputs) — enough to
    separate a right provider from a wrong one at these tolerances, at the cost of one extra set of products.
    """
    own = getattr(case, "reference", None)  # a case of another kind brings its own
    if own is not None:
        return own(inputs)
    wide = torch.float64 if case.kind == "ce" or case.dtype == "fp64" else torch.float32
    keep = torch.float64 if case.dtype == "fp64" else torch.float32
    target, o = inputs.target, case.options
    cw = None if inputs.class_weight is None else inputs.class_weight.to(wide)
    den = class_weight_of_rows(target, inputs.class_weight, torch.float64).sum().to(wide)
    # chunks of ~8M logits (float64) or ~32M (the fused case's float32 products, where bigger is faster)
    rows = max(1, (1 << (23 if case.kind == "ce" else 25)) // case.n_classes)
    total = torch.zeros((), dtype=torch.float64, device=target.device)
    if case.kind == "ce":
        logits = inputs.logits.detach()  # type: ignore[union-attr]
        grad = torch.empty(logits.shape, dtype=keep, device=logits.device)
        for s in range(0, case.n_rows, rows):
            z = logits[s : s + rows].to(wide).requires_grad_()
            part = torch_loss(z, target[s : s + rows], cw, o, denominator=den)
            (g,) = torch.autograd.grad(part, (z,))
            grad[s : s + rows] = g
            total += part.detach().double()
        return Reference(float(total), (grad,))
    x, w = inputs.x.detach(), inputs.w.detach()  # type: ignore[union-attr]
    w_wide = w.to(wide).requires_grad_()
    gx = torch.empty(x.shape, dtype=keep, device=x.device)
    gw = torch.zeros(
        w.shape, dtype=torch.float64 if wide == torch.float64 else torch.float32, device=w.device
    )
    for s in range(0, case.n_rows, rows):
        xc = x[s : s + rows].to(wide).requires_grad_()
        part = torch_loss(xc @ w_wide.t(), target[s : s + rows], cw, o, denominator=den)
        dx, dw = torch.autograd.grad(part, (xc, w_wide))
        gx[s : s + rows] = dx
        gw += dw
        total += part.detach().double()
    return Reference(float(total), (gx, gw.to(keep)))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    num = torch.linalg.vector_norm(a.to(b.dtype) - b).item()
    den = torch.linalg.vector_norm(b).item()
    return num / den if den > 0 else num


def check(
    case: Case, provider: Provider, out: Result, ref: Reference
) -> tuple[bool, str, float, float]:
    """(passed, reason, loss error, gradient error) of one call's result against the reference."""
    loss, grads = out
    loss_val = float(loss.double())
    loss_err = abs(loss_val - ref.loss) / max(abs(ref.loss), 1e-30)
    if len(grads) != len(ref.grads):
        return (
            False,
            f"returned {len(grads)} gradients, expected {len(ref.grads)}",
            loss_err,
            math.inf,
        )
    bad_shape = [tuple(g.shape) for g, r in zip(grads, ref.grads) if g.shape != r.shape]
    if bad_shape:
        return False, f"gradient shapes {bad_shape} differ from the inputs'", loss_err, math.inf
    grad_err = max(_rel_err(g, r) for g, r in zip(grads, ref.grads))
    tol_loss, tol_grad = TOLERANCES[case.dtype]
    if provider.approximate_grad:
        tol_grad = max(tol_grad, APPROXIMATE_GRAD_TOLERANCE)
    if not math.isfinite(loss_val) or not loss_err <= tol_loss:
        return (
            False,
            f"loss {loss_val:.9g} vs reference {ref.loss:.9g} (rel. error {loss_err:.2e} > {tol_loss:g})",
            loss_err,
            grad_err,
        )
    if not grad_err <= tol_grad:
        return False, f"gradient rel. error {grad_err:.2e} > {tol_grad:g}", loss_err, grad_err
    return True, "", loss_err, grad_err


def _fingerprint(inputs: Inputs) -> list[torch.Tensor]:
    # a strided sample of every leaf: enough to see a provider that writes into its input
    return [t.detach().reshape(-1)[::97].clone() for t in inputs.leaves]


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}{'…' if len(text) > 240 else ''}"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_runner(
    runner: Runner,
    device: str,
    settings: Settings,
    probe: MemoryProbe,
    grad_bytes: int,
    floor: Runner | None = None,
) -> tuple[list[float], int | None, list[float]]:
    """Warm-up calls, then the timed calls (each after a timed ``floor`` call, when given).

    Returns the times (s), the largest peak extra memory and the floor's times (empty without ``floor``).
    """
    for _ in range(settings.warmup):
        if runner.setup:
            runner.setup()
        runner.call()
        _sync(device)
    times: list[float] = []
    floor_times: list[float] = []
    extra: int | None = None
    floor_repeats = min(3, settings.repeats)  # the least number of timed calls, whatever the time
    while len(times) < settings.repeats:
        if floor is not None:
            floor_times.append(_timed(floor.call, device)[1])
        probe.start()
        if runner.setup:
            runner.setup()
        out, seconds = _timed(runner.call, device)
        peak = probe.peak_extra()
        del out
        times.append(seconds)
        if peak is not None:
            extra = max(extra if extra is not None else -(1 << 62), peak - grad_bytes)
        if len(times) >= floor_repeats and sum(times) >= settings.max_seconds:
            break
    return times, extra, floor_times


def _floor_runner(case: Case, inputs: Inputs) -> Runner:
    floor_fn = case.floor(inputs)  # its preallocated buffers live as long as the runner

    def call() -> Result:
        floor_fn()
        return torch.zeros(()), ()

    return Runner(call, detail=case.floor_description())


def run_case(
    case: Case,
    providers: list[Provider],
    settings: Settings,
    result: RunResult,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """Measure the floor and every provider on one case, appending to ``result``."""
    probe = MemoryProbe(case.device)
    todo: list[Provider] = []
    for p in providers:
        ok, why = p.available(case.device)
        if ok:
            ok, why = p.supports(case)
            status = "unsupported"
        else:
            status = "unavailable"
        if ok and settings.quick and p.slow_to_prepare and p.name not in settings.requested:
            ok, why, status = (
                False,
                "compiles for tens of seconds: left out of --quick (name it to run it)",
                "skipped",
            )
        if ok:
            todo.append(p)
        else:
            result.skipped.append(Skip(case, p.name, status, why))
            progress(p.name)
    inputs = case.make_inputs()
    progress("floor")
    floor = _floor_runner(case, inputs)
    first = _timed(floor.call, case.device)[1]
    times, extra, _ = time_runner(floor, case.device, settings, probe, 0)
    result.measurements.append(Measurement(case, "floor", floor.detail, times, first, extra))
    if not todo:
        return
    between = floor if settings.interleave else None
    ref = reference(case, inputs)
    before = _fingerprint(inputs)
    for p in todo:
        progress(p.name)
        try:
            runner = p.prepare(case, inputs)
            if runner.setup:
                runner.setup()
            out, first = _timed(runner.call, case.device)
            passed, why, loss_err, grad_err = check(case, p, out, ref)
            del out
            if passed and not all(torch.equal(a, b) for a, b in zip(before, _fingerprint(inputs))):
                passed, why = False, "it wrote into its input tensors"
            if not passed:
                result.skipped.append(Skip(case, p.name, "wrong", why, loss_err, grad_err))
                continue
            times, extra, floor_times = time_runner(
                runner, case.device, settings, probe, inputs.grad_bytes, between
            )
        except Exception as exc:
            # a peer that fails (compile errors, OOM, missing kernels) is reported, not fatal
            result.skipped.append(Skip(case, p.name, "error", _short(exc)))
            continue
        finally:
            gc.collect()
            if case.device == "cuda":
                torch.cuda.empty_cache()
        result.measurements.append(
            Measurement(
                case, p.name, runner.detail, times, first, extra, loss_err, grad_err, floor_times
            )
        )


def run(
    cases: list[Case],
    providers: list[Provider],
    settings: Settings,
    *,
    show_progress: bool = True,
) -> RunResult:
    """Measure every case; a tqdm bar counts (case, provider) pairs."""
    from tqdm.auto import tqdm

    result = RunResult(environment(cases[0].device if cases else "cpu"))
    total = sum(1 + len(providers) for _ in cases)
    with tqdm(
        total=total, disable=not show_progress, unit="run", file=sys.stderr, dynamic_ncols=True
    ) as bar:
        for case in cases:

            def progress(name: str, case: Case = case) -> None:
                bar.set_description(f"{case.name} {name}")
                bar.update(1)

            run_case(case, providers, settings, result, progress)
    result.environment["loadavg_end"] = _loadavg()
    return result


# ---------------------------------------------------------------------------------------------------
# Where and with what the numbers were taken
# ---------------------------------------------------------------------------------------------------


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return ""


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return ""


def environment(device: str) -> dict:
    """Machine, versions, commit, date and the settings that move CPU numbers."""
    versions = peer_versions()
    if device == "cuda":
        machine = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        machine = f"{cpu_model()}, {os.cpu_count()} logical CPUs, {_mem_total()}"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git_commit(),
        "host": platform.node(),
        "machine": machine,
        "device": device,
        "threads": torch.get_num_threads(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
        "python": platform.python_version(),
        **{f"v_{k}": v for k, v in versions.items()},
        "loadavg_start": _loadavg(),
    }


def median(times: list[float]) -> float:
    return statistics.median(times)
