"""``crossent check``: does every backend on this machine agree with the float64 NumPy reference?

For each function of the PyTorch API and each case of a small option grid, the loss and its gradient with
respect to the input (for a random ``grad_output``) are computed by every backend available here and compared
with :mod:`crossent.numpy` in float64, evaluated on the same (rounded) inputs:

* the eager torch backend, in float64 and float32, on the CPU (and on CUDA when present);
* the native CPU kernel, when ``crossent._dispatch.native_available()`` and it is registered;
* the Triton kernel, on CUDA tensors when CUDA is present, or on CPU tensors under ``TRITON_INTERPRET=1``
  when ``--triton`` asks for it.

Only functions that take a ``backend=`` argument have more than one backend. Tolerances (our targets):
float64 ``rtol=1e-9, atol=1e-12``; float32 ``rtol=3e-5, atol=3e-6``. The command then prints which backend
``backend="auto"`` picks for each function, and exits 1 if any case disagreed (or raised).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossent import testing
from crossent.testing import TOLERANCES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Verify on this machine that every available backend (eager torch, the native CPU kernel, Triton) "
        "agrees with the float64 NumPy reference, in value and gradient, on a small option grid for each "
        "function; print which backend each function uses for CPU (and CUDA) tensors. Exit status 1 on any "
        "disagreement."
    )
    parser.add_argument(
        "--triton",
        action="store_true",
        help="also run the Triton kernels on CPU tensors (requires TRITON_INTERPRET=1 in the "
        "environment before Python starts; slow). With CUDA they run on the GPU anyway.",
    )
    parser.add_argument(
        "--dtypes",
        default="float64,float32",
        help="comma-separated dtypes to check (float64, float32)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated function names to check (default: all)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print every case, not only failures"
    )


# --------------------------------------------------------------------------------------------------
# The grid: per function, named cases of NumPy inputs and options.
# --------------------------------------------------------------------------------------------------


@dataclass
class Case:
    label: str
    arrays: dict[
        str, np.ndarray | None
    ]  # keyword arrays (float64 / int64); the first one is differentiated
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Function:
    name: str
    cases: Callable[[], Iterator[Case]]
    reference: Callable[..., Any] | None = None  # defaults to crossent.numpy.<name>
    reference_grad: Callable[..., Any] | None = None  # defaults to crossent.numpy.<name>_grad


def _rng(label: str) -> np.random.Generator:
    # a seed from the label's characters: stable across runs (unlike hash()) and distinct per case
    return np.random.default_rng([ord(ch) for ch in label])


def _index_target(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    t = rng.integers(0, num_classes, size=shape)
    t.flat[0] = -100  # one ignored position (the default ignore_index)
    return t


def _prob_target(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    q = rng.random(shape) ** 2
    return q / q.sum(axis=1, keepdims=True)


def _ce_cases() -> Iterator[Case]:
    # the shared option grid (crossent.testing) on (N, C) and (N, C, d) shapes; then the extras
    # (z_loss, softcap), a K-dim input and confident rows (softmax(x_y) → 1)
    for grid_case in testing.cases():
        if grid_case.shape not in ((7, 5), (4, 3, 6)) or grid_case.label_smoothing == 1.0:
            continue
        x, t, w = testing.make_inputs(grid_case)
        options = {
            "label_smoothing": grid_case.label_smoothing,
            "reduction": grid_case.reduction,
            "ignore_index": grid_case.ignore_index,
        }
        yield Case(grid_case.id, {"input": x, "target": t, "weight": w}, options)
    rng = _rng("extras")
    x = rng.normal(size=(7, 9)) * 4
    yield Case(
        "index target, weight, z_loss=1e-3, softcap=5",
        {"input": x, "target": _index_target(rng, (7,), 9), "weight": rng.uniform(0.5, 2.0, 9)},
        {"z_loss": 1e-3, "softcap": 5.0, "label_smoothing": 0.1},
    )
    yield Case(
        "prob target, z_loss=1e-3, softcap=5, sum",
        {"input": x, "target": _prob_target(rng, (7, 9))},
        {"z_loss": 1e-3, "softcap": 5.0, "reduction": "sum"},
    )
    yield Case(
        "K-dim (3, 4, 2) index target",
        {"input": rng.normal(size=(3, 4, 2)), "target": _index_target(rng, (3, 2), 4)},
        {},
    )
    yield Case(
        "K-dim (3, 4, 2) prob target, none",
        {"input": rng.normal(size=(3, 4, 2)), "target": _prob_target(rng, (3, 4, 2))},
        {"reduction": "none"},
    )
    confident = rng.normal(size=(5, 6))
    y = rng.integers(0, 6, size=5)
    confident[np.arange(5), y] += 60.0
    yield Case("confident rows (logit margin 60)", {"input": confident, "target": y}, {})


def _nll_cases() -> Iterator[Case]:
    import crossent.numpy as ref

    for weighted, reduction in itertools.product((False, True), ("mean", "sum", "none")):
        label = f"weight={weighted}, reduction={reduction}"
        rng = _rng("nll " + label)
        logp = ref.log_softmax(rng.normal(size=(6, 5)))
        yield Case(
            label,
            {
                "input": logp,
                "target": _index_target(rng, (6,), 5),
                "weight": rng.uniform(0.5, 2, 5) if weighted else None,
            },
            {"reduction": reduction},
        )


def _focal_cases() -> Iterator[Case]:
    for gamma, alpha, reduction in itertools.product(
        (0.0, 2.0), (None, "vector"), ("mean", "none")
    ):
        label = f"gamma={gamma}, alpha={alpha}, reduction={reduction}"
        rng = _rng("focal " + label)
        yield Case(
            label,
            {
                "input": rng.normal(size=(6, 5)) * 2,
                "target": _index_target(rng, (6,), 5),
                "alpha": rng.uniform(0.2, 1.0, 5) if alpha else None,
                "weight": rng.uniform(0.5, 2, 5),
            },
            {"gamma": gamma, "reduction": reduction},
        )
    rng = _rng("focal prob")
    yield Case(
        "prob target, gamma=1.5",
        {"input": rng.normal(size=(4, 3)), "target": _prob_target(rng, (4, 3))},
        {"gamma": 1.5},
    )


def _binary_cases(logits: bool) -> Callable[[], Iterator[Case]]:
    def cases() -> Iterator[Case]:
        for weighted, reduction in itertools.product((False, True), ("mean", "sum", "none")):
            label = f"weight={weighted}, reduction={reduction}"
            rng = _rng(("bcel " if logits else "bce ") + label)
            x = rng.normal(size=(4, 3)) * 3 if logits else rng.uniform(0.02, 0.98, size=(4, 3))
            arrays = {
                "input": x,
                "target": rng.uniform(0, 1, size=(4, 3)),
                "weight": rng.uniform(0.5, 2, size=(4, 3)) if weighted else None,
            }
            if logits:
                arrays["pos_weight"] = rng.uniform(0.5, 3, size=3) if weighted else None
            yield Case(label, arrays, {"reduction": reduction})

    return cases


def _sigmoid_focal_cases() -> Iterator[Case]:
    for alpha, gamma, reduction in ((0.25, 2.0, "none"), (-1.0, 0.0, "mean"), (0.5, 1.5, "sum")):
        label = f"alpha={alpha}, gamma={gamma}, reduction={reduction}"
        rng = _rng("sfl " + label)
        yield Case(
            label,
            {"inputs": rng.normal(size=(5, 3)) * 3, "targets": (rng.random((5, 3)) < 0.3) * 1.0},
            {"alpha": alpha, "gamma": gamma, "reduction": reduction},
        )


def _kl_cases() -> Iterator[Case]:
    import crossent.numpy as ref

    for log_target, reduction in itertools.product((False, True), ("batchmean", "sum", "none")):
        label = f"log_target={log_target}, reduction={reduction}"
        rng = _rng("kl " + label)
        p = _prob_target(rng, (4, 5))
        yield Case(
            label,
            {
                "input": ref.log_softmax(rng.normal(size=(4, 5))),
                "target": np.log(p) if log_target else p,
            },
            {"log_target": log_target, "reduction": reduction},
        )


def _entropy_cases() -> Iterator[Case]:
    for reduction in ("none", "mean", "sum"):
        rng = _rng("entropy " + reduction)
        yield Case(
            f"reduction={reduction}",
            {"input": rng.normal(size=(5, 7)) * 3},
            {"reduction": reduction},
        )


def _linear_ce_cases() -> Iterator[Case]:
    for eps, reduction in ((0.0, "mean"), (0.1, "sum"), (0.0, "none")):
        label = f"label_smoothing={eps}, reduction={reduction}"
        rng = _rng("lce " + label)
        yield Case(
            label,
            {
                "input": rng.normal(size=(6, 4)),
                "linear_weight": rng.normal(size=(7, 4)),
                "target": _index_target(rng, (6,), 7),
                "linear_bias": rng.normal(size=7),
            },
            {"label_smoothing": eps, "reduction": reduction},
        )


def _linear_ce_reference(input, linear_weight, target, linear_bias=None, **options):  # noqa: ANN001, ANN003
    import crossent.numpy as ref

    logits = input @ linear_weight.T + (0.0 if linear_bias is None else linear_bias)
    return ref.cross_entropy(logits, target, **options)


def _linear_ce_reference_grad(
    input, linear_weight, target, linear_bias=None, *, grad_output, **options
):  # noqa: ANN001, ANN003
    import crossent.numpy as ref

    logits = input @ linear_weight.T + (0.0 if linear_bias is None else linear_bias)
    return (
        ref.cross_entropy_grad(logits, target, grad_output=grad_output, **options) @ linear_weight
    )


FUNCTIONS = [
    Function("cross_entropy", _ce_cases),
    Function("nll_loss", _nll_cases),
    Function("focal_loss", _focal_cases),
    Function("binary_cross_entropy", _binary_cases(False)),
    Function("binary_cross_entropy_with_logits", _binary_cases(True)),
    Function("sigmoid_focal_loss", _sigmoid_focal_cases),
    Function("kl_div", _kl_cases),
    Function("entropy", _entropy_cases),
    Function(
        "linear_cross_entropy", _linear_ce_cases, _linear_ce_reference, _linear_ce_reference_grad
    ),
]


# --------------------------------------------------------------------------------------------------
# Backends and comparison
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One way of computing a function: a backend on a device."""

    backend: str
    device: str


def backend_status(name: str, function: str = "cross_entropy") -> str | None:
    """None when ``backend=name`` can run ``function`` here, else the reason it cannot."""
    import torch

    from crossent import _dispatch

    if name == "native" and not _dispatch.native_available():
        return "not built (crossent._dispatch.native_available() is False)"
    if name == "triton" and not _dispatch.triton_available():
        return "triton is not installed"
    try:
        _dispatch.resolve(function, name, torch.empty(0))
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
        return f"not usable: {exc}"
    return None


def targets_for(fn: Any, want_triton_cpu: bool, notes: list[str]) -> list[Target]:
    import torch

    from crossent import _dispatch

    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    out = [Target("torch", d) for d in devices]
    for backend in ("native", "triton"):
        if backend not in _dispatch.kernels(fn.__name__):
            continue
        reason = backend_status(backend, fn.__name__)
        if reason is not None:
            notes.append(f"{backend}: {reason}")
            continue
        if backend == "native":
            out.append(Target("native", "cpu"))
        elif cuda:
            out.append(Target("triton", "cuda"))
        if backend == "triton" and want_triton_cpu:
            if os.environ.get("TRITON_INTERPRET") == "1":
                out.append(Target("triton", "cpu"))
            else:
                notes.append("triton on CPU: set TRITON_INTERPRET=1 before starting Python")
    return out


def _compare(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> tuple[bool, float]:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, float("inf")
    same_nan = np.isnan(got) == np.isnan(want)
    finite = ~np.isnan(want)
    err = np.abs(got[finite] - want[finite])
    ok = bool(same_nan.all() and np.all(err <= atol + rtol * np.abs(want[finite])))
    return ok, float(err.max()) if err.size else 0.0


def run_case(
    fn: Any, function: Function, case: Case, target: Target, dtype_name: str
) -> tuple[bool, str]:
    """Compare one case on one backend/device/dtype with the float64 reference; (ok, message)."""
    import torch

    import crossent.numpy as ref

    dtype = getattr(torch, dtype_name)
    tensors: dict[str, Any] = {}
    rounded: dict[str, Any] = {}
    for key, a in case.arrays.items():
        if a is None:
            tensors[key] = rounded[key] = None
            continue
        t = torch.from_numpy(np.asarray(a))
        t = t.to(dtype) if t.is_floating_point() else t.to(torch.int64)
        tensors[key] = t.to(target.device)
        rounded[key] = t.to(torch.float64).numpy() if t.is_floating_point() else t.numpy()
    first = next(iter(case.arrays))
    tensors[first].requires_grad_(True)
    kwargs = dict(case.options)
    if target.backend != "torch" or "backend" in inspect.signature(fn).parameters:
        kwargs["backend"] = target.backend
    reference = function.reference or getattr(ref, function.name)
    reference_grad = function.reference_grad or getattr(ref, function.name + "_grad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.asarray(reference(**rounded, **case.options))
        g = np.random.default_rng(7).uniform(0.5, 1.5, size=want.shape)
        want_grad = reference_grad(
            **rounded, **case.options, grad_output=g if want.ndim else float(g)
        )
        try:
            out = fn(**tensors, **kwargs)
            out.backward(torch.as_tensor(g, dtype=out.dtype, device=out.device))
        except Exception as exc:  # noqa: BLE001 - reported as a disagreement
            return False, f"raised {type(exc).__name__}: {exc}"
    rtol, atol = TOLERANCES[dtype_name]
    ok_v, err_v = _compare(out.detach().cpu().double().numpy(), want, rtol, atol)
    grad = tensors[first].grad
    ok_g, err_g = (
        (False, float("inf"))
        if grad is None
        else _compare(grad.cpu().double().numpy(), want_grad, rtol, atol)
    )
    return ok_v and ok_g, f"max |err| value {err_v:.1e}, gradient {err_g:.1e}"


def chosen_backends(
    only: frozenset[str] | set[str] = frozenset(),
) -> list[tuple[str, dict[str, str]]]:
    """Which backend ``backend="auto"`` picks per function, for CPU (and CUDA) float32/bfloat16 tensors."""
    import torch

    from crossent import _dispatch

    columns = [("cpu", torch.float32), ("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        columns += [("cuda", torch.float32), ("cuda", torch.bfloat16)]
    rows = []
    for function in FUNCTIONS:
        if only and function.name not in only:
            continue
        picks = {}
        for device, dtype in columns:
            key = f"{device} {str(dtype).replace('torch.', '')}"
            # linear_cross_entropy runs the fused chunked backend; its per-chunk CE kernel varies
            if function.name == "linear_cross_entropy":
                from crossent._backends import linear_ce
                from crossent._contract import CEOptions

                like = torch.empty(2, 3, dtype=dtype, device=device)
                spec = linear_ce.LinearCESpec(CEOptions(), False, 1)
                picks[key] = f"fused/{linear_ce.chunk_kernel(spec, like)}"
                continue
            try:
                picks[key] = _dispatch.auto_backend(
                    function.name, torch.empty(2, 3, dtype=dtype, device=device)
                )
            except Exception as exc:  # noqa: BLE001
                picks[key] = f"error: {exc}"
        rows.append((function.name, picks))
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    import crossent

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in TOLERANCES]
    if bad:
        print(
            f"crossent check: unknown dtype(s) {bad}; choose from {sorted(TOLERANCES)}",
            file=sys.stderr,
        )
        return 2
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {f.name for f in FUNCTIONS}
    if unknown:
        print(f"crossent check: unknown function(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    print(
        f"crossent {crossent.__version__}, torch {torch.__version__}, numpy {np.__version__}; "
        f"CUDA: {'yes, ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}"
    )
    failures = 0
    total = 0
    notes: list[str] = []
    for function in FUNCTIONS:
        if only and function.name not in only:
            continue
        fn = getattr(crossent, function.name)
        targets = targets_for(fn, args.triton, notes)
        summary = []
        for target in targets:
            passed = count = 0
            for dtype_name in dtypes:
                for case in function.cases():
                    ok, message = run_case(fn, function, case, target, dtype_name)
                    count += 1
                    passed += ok
                    if not ok or args.verbose:
                        status = "ok  " if ok else "FAIL"
                        print(
                            f"  {status} {function.name} [{target.backend} {target.device} {dtype_name}] "
                            f"{case.label}: {message}"
                        )
            failures += count - passed
            total += count
            summary.append(f"{target.backend}/{target.device} {passed}/{count}")
        print(f"{function.name:<33} {'; '.join(summary)}")
    for note in dict.fromkeys(notes):
        print(f"  note: {note}")
    print(
        f"\n{total - failures}/{total} checks agree with the float64 reference "
        f"(tolerances: float64 rtol 1e-9 atol 1e-12, float32 rtol 3e-5 atol 3e-6)."
    )
    print("\nbackend used by default (backend='auto'):")
    rows = chosen_backends(only)
    keys = list(rows[0][1]) if rows else []
    print(f"  {'function':<33} " + " ".join(f"{k:<14}" for k in keys))
    for name, picks in rows:
        print(f"  {name:<33} " + " ".join(f"{picks[k]:<14}" for k in keys))
    if failures:
        print(f"\n{failures} disagreement(s): see FAIL lines above.", file=sys.stderr)
        return 1
    return 0
