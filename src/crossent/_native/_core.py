"""The kernel library's loading, instruction-set choice and the one ctypes call every entry point makes
(shared by the row entry points in :mod:`crossent._native` and the spatial ones in :mod:`._spatial`)."""

from __future__ import annotations

import ctypes
import os
import warnings

from .._contract import CEOptions, CrossentTypeError, CrossentValueError
from . import _lib

_warned = False


def available() -> bool:
    """True if the compiled kernel can be used. The first call that finds it missing warns once."""
    global _warned
    if _lib.load() is not None:
        return True
    if not _warned:
        _warned = True
        warnings.warn(
            "crossent: the compiled CPU kernel is not available "
            f"({_lib.error()}); using the pure NumPy/PyTorch path, which is several times slower. "
            "Reinstall crossent on a machine with a C++ compiler that supports OpenMP to build it.",
            RuntimeWarning,
            stacklevel=2,
        )
    return False


def unavailable_reason() -> str | None:
    """Why the kernel cannot be loaded, or None when it can."""
    return _lib.error()


def best_isa() -> str:
    """The instruction set the kernel uses on this CPU: ``"avx512"``, ``"avx2"`` or ``"generic"``."""
    return _lib.ISA_NAMES[require_library().crossent_best_isa()]


def active_isa(isa: str | None = None) -> str:
    """The instruction set a call with ``isa`` (None: ``"auto"``) runs, after ``CROSSENT_ISA`` and the
    CPU's limits: ``"avx512"``, ``"avx2"`` or ``"generic"``."""
    return _lib.ISA_NAMES[require_library().crossent_pick_isa(isa_code(resolve_isa(isa)))]


def default_num_threads() -> int:
    """Threads for NumPy callers: ``CROSSENT_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs
    this process may run on. (The torch entry uses ``torch.get_num_threads()`` instead.)"""
    for name in ("CROSSENT_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def require_library() -> ctypes.CDLL:
    lib = _lib.load()
    if lib is None:
        raise RuntimeError(f"crossent's compiled CPU kernel is not available: {_lib.error()}")
    return lib


def resolve_isa(isa: str | None) -> str:
    """The ISA a call asks for: ``isa`` unless it is None or ``"auto"``, else ``CROSSENT_ISA`` when set
    (``avx512``, ``avx2``, ``generic``; ``auto`` or empty means the best one), else ``"auto"``."""
    if isa is not None and isa != "auto":
        return isa
    env = os.environ.get("CROSSENT_ISA", "").strip().lower()
    if not env:
        return "auto"
    if env not in _lib.ISA_CODES:
        raise CrossentValueError(
            f"environment variable CROSSENT_ISA must be one of {sorted(_lib.ISA_CODES)}, got {env!r}"
        )
    return env


def isa_code(isa: str) -> int:
    if isa not in _lib.ISA_CODES:
        raise CrossentValueError(
            f"argument 'isa' must be one of {sorted(_lib.ISA_CODES)}, got {isa!r}"
        )
    return _lib.ISA_CODES[isa]


# --------------------------------------------------------------------------------------------------
# The call shared by the NumPy and the torch entries: raw pointers, element strides, options.
# --------------------------------------------------------------------------------------------------


def call(
    double: bool,
    rows: int,
    classes: int,
    x: tuple[int, int],
    target: tuple[int, int],
    weight: int | None,
    grad_scale: int | float,
    loss: int,
    lse: int,
    grad: tuple[int, int] | None,
    options: CEOptions,
    prob_target: bool,
    num_threads: int,
    isa: str,
    flags: int,
    spatial: int = 0,
) -> int:
    """Run the kernel; pointer arguments are ``(address, row stride in elements)`` (with ``spatial``
    = S > 0: ``(address, batch stride)`` of (rows, classes, S) arrays). Returns the first row (position
    of the flattened (rows, S) grid) whose class index is out of range, or -1."""
    lib = require_library()
    a = _lib.CEArgs()
    a.x, a.ldx = x
    a.target, a.ldt = target
    a.weight = weight
    if isinstance(grad_scale, float):
        a.grad_scale, a.grad_scale_value = None, grad_scale
    else:
        a.grad_scale, a.grad_scale_value = grad_scale, 0.0
    a.loss, a.lse = loss, lse
    a.grad, a.ldg = grad if grad is not None else (None, classes)
    a.rows, a.classes = rows, classes
    a.ignore_index = int(options.ignore_index)
    a.label_smoothing = float(options.label_smoothing)
    a.z_loss = float(options.z_loss)
    a.softcap = float(options.softcap) if options.softcap is not None else 0.0
    a.prob_target = int(bool(prob_target))
    a.num_threads = int(num_threads)
    a.isa = isa_code(resolve_isa(isa))
    a.flags = int(flags)
    a.spatial = int(spatial)
    code = (lib.crossent_ce_f64 if double else lib.crossent_ce_f32)(ctypes.byref(a))
    if code == -1:
        raise CrossentValueError(
            "crossent._native: malformed kernel arguments (a bug in the caller)"
        )
    if code == -2:
        raise MemoryError("crossent._native: could not allocate a scratch row")
    return int(code) - 1


def check_options(options: object, classes: int) -> CEOptions:
    if not isinstance(options, CEOptions):
        raise CrossentTypeError(
            f"argument 'options' must be a CEOptions, got {type(options).__name__}"
        )
    if classes < 1:
        raise CrossentValueError(
            f"argument 'x' must have at least one class (got shape with C={classes})"
        )
    return options


# --------------------------------------------------------------------------------------------------
# NumPy entry.
# --------------------------------------------------------------------------------------------------
