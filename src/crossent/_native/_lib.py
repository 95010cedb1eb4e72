"""Loading the compiled kernel library (``csrc/ce_cpu.cpp``) through ctypes.

The library is built by ``setup.py`` as the extension ``crossent._native._ckernels`` (a plain shared
object with a C ABI; it is never imported as a Python module, only opened with :mod:`ctypes`). It is
found with the import system, so it is located the same way after ``pip install .`` and after an
editable install. Loading happens on first use, never at import time of crossent.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading

_EXTENSION = "crossent._native._ckernels"
_ABI_VERSION = 3

ISA_NAMES = {0: "auto", 1: "generic", 2: "avx2", 3: "avx512"}
ISA_CODES = {name: code for code, name in ISA_NAMES.items()}

FLAG_NO_STREAM = 1  # plain stores for the gradient instead of non-temporal ones (benchmarks)
FLAG_NO_PREFETCH = 2  # no software prefetch of the next row (benchmarks)
FLAG_NO_PIPELINE = 4  # never the pipelined gradient (overrides FLAG_PIPELINE)
FLAG_PREFETCH_SHORT = 8  # software prefetch for rows shorter than 1 KiB too
FLAG_PIPELINE = (
    16  # write each row's gradient during the next row's exps (off by default: slower on Zen 4)
)
FLAG_PIPELINE_SHORT = FLAG_PIPELINE  # the former name
FLAG_STREAM_SHORT = 32  # non-temporal gradient stores for rows shorter than 16 KiB too
FLAG_NO_TILE = 64  # few-class rows one at a time, not through transposed tiles (tests, benchmarks)
FLAG_TILE = 128  # rows through transposed tiles whatever their class count (tests, benchmarks)


class CEArgs(ctypes.Structure):
    """Mirror of ``struct ce_args`` in csrc/ce_cpu.cpp (same order, same types)."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("target", ctypes.c_void_p),
        ("weight", ctypes.c_void_p),
        ("grad_scale", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("lse", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("rows", ctypes.c_int64),
        ("classes", ctypes.c_int64),
        ("ldx", ctypes.c_int64),
        ("ldt", ctypes.c_int64),
        ("ldg", ctypes.c_int64),
        ("ignore_index", ctypes.c_int64),
        ("label_smoothing", ctypes.c_double),
        ("z_loss", ctypes.c_double),
        ("softcap", ctypes.c_double),
        ("grad_scale_value", ctypes.c_double),
        ("prob_target", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("isa", ctypes.c_int32),
        ("flags", ctypes.c_int32),
        ("spatial", ctypes.c_int64),
    ]


class BinArgs(ctypes.Structure):
    """Mirror of ``struct bin_args`` in csrc/ce_cpu.cpp (the element-wise losses)."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("target", ctypes.c_void_p),
        ("weight", ctypes.c_void_p),
        ("pos_weight", ctypes.c_void_p),
        ("grad_scale", ctypes.c_void_p),
        ("loss", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("sum", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("w_period", ctypes.c_int64),
        ("pw_period", ctypes.c_int64),
        ("grad_scale_value", ctypes.c_double),
        ("kind", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("isa", ctypes.c_int32),
        ("flags", ctypes.c_int32),
    ]


# kinds of the element-wise kernel (enum in csrc/ce_cpu.cpp)
BIN_BCE_LOGITS = 0
BIN_KL = 1
BIN_KL_LOG_TARGET = 2

_lock = threading.Lock()
_state: dict[str, object] = {}


def _open() -> ctypes.CDLL:
    spec = importlib.util.find_spec(_EXTENSION)
    if spec is None or not spec.origin:
        raise ImportError(
            f"the compiled kernel {_EXTENSION} is not installed (it is built by `pip install` when a "
            "C++ compiler with OpenMP is present)"
        )
    lib = ctypes.CDLL(spec.origin)  # ctypes.CDLL releases the GIL during calls
    lib.crossent_abi_version.restype = ctypes.c_int
    version = lib.crossent_abi_version()
    if version != _ABI_VERSION:
        raise ImportError(
            f"{spec.origin} has ABI version {version}, expected {_ABI_VERSION}: rebuild it"
        )
    lib.crossent_args_size.restype = ctypes.c_int
    if lib.crossent_args_size() != ctypes.sizeof(CEArgs):
        raise ImportError(
            f"{spec.origin}: struct ce_args does not match crossent._native._lib.CEArgs"
        )
    lib.crossent_binary_args_size.restype = ctypes.c_int
    if lib.crossent_binary_args_size() != ctypes.sizeof(BinArgs):
        raise ImportError(
            f"{spec.origin}: struct bin_args does not match crossent._native._lib.BinArgs"
        )
    for name in ("crossent_binary_f32", "crossent_binary_f64"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.POINTER(BinArgs)]
    for name in ("crossent_best_isa", "crossent_pick_isa"):
        getattr(lib, name).restype = ctypes.c_int
    lib.crossent_pick_isa.argtypes = [ctypes.c_int]
    for name in ("crossent_ce_f32", "crossent_ce_f64"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.POINTER(CEArgs)]
    for name in (
        "crossent_vexp_f32",
        "crossent_vexp_f64",
        "crossent_vlog_f32",
        "crossent_vtanh_f32",
        "crossent_vtanh_f64",
    ):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    return lib


def load() -> ctypes.CDLL | None:
    """The loaded library, or None if it cannot be loaded (the reason is in :func:`error`)."""
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _open()
                _state["error"] = None
            except (ImportError, OSError, AttributeError) as exc:
                _state["lib"] = None
                _state["error"] = str(exc)
        return _state["lib"]  # type: ignore[return-value]


def error() -> str | None:
    """Why the library could not be loaded (None if it loaded or was not tried yet)."""
    load()
    return _state.get("error")  # type: ignore[return-value]
