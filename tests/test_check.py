"""``crossent check``: every available backend agrees with the reference, and a wrong one is caught."""

from __future__ import annotations

import os

import pytest

import crossent
from crossent.cli import main


def test_check_passes_on_this_machine(capsys):
    code = main(["check"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "FAIL" not in printed
    for name in (
        "cross_entropy",
        "focal_loss",
        "kl_div",
        "binary_cross_entropy_with_logits",
        "entropy",
    ):
        assert name in printed
    assert "backend used by default" in printed


def test_check_catches_a_wrong_value(monkeypatch, capsys):
    real = crossent.cross_entropy
    monkeypatch.setattr(crossent, "cross_entropy", lambda *a, **k: real(*a, **k) * (1 + 1e-4))
    assert main(["check", "--only", "cross_entropy", "--dtypes", "float64"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_catches_a_wrong_gradient(monkeypatch, capsys):
    real = crossent.focal_loss

    def shifted(input, *args, **kwargs):  # same value, gradient off by 1e-3 per element
        loss = real(input, *args, **kwargs)
        return loss + 1e-3 * (input.sum() - input.sum().detach())

    monkeypatch.setattr(crossent, "focal_loss", shifted)
    assert main(["check", "--only", "focal_loss", "--dtypes", "float32"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_rejects_unknown_names(capsys):
    assert main(["check", "--only", "no_such_loss"]) == 2
    assert main(["check", "--dtypes", "float8"]) == 2


@pytest.mark.triton
def test_triton_backend_agrees_on_a_few_cases():
    """A slice of the grid through the Triton kernel (on the CPU under TRITON_INTERPRET=1, set by conftest)."""
    import torch

    from crossent.cli import check

    if check.backend_status("triton") is not None:
        pytest.skip(f"triton backend: {check.backend_status('triton')}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 before triton is imported")
    function = check.FUNCTIONS[0]
    cases = list(function.cases())
    for case in (
        cases[0],
        cases[21],
        cases[-5],
        cases[-1],
    ):  # index/mean, prob/weight/smoothing, extras, confident
        ok, message = check.run_case(
            crossent.cross_entropy, function, case, check.Target("triton", device), "float32"
        )
        assert ok, f"{case.label}: {message}"


def test_check_catches_a_wrong_native_kernel(monkeypatch, capsys):
    """The reference is pure: a native kernel off by 1e-3 disagrees with it (it would not if the
    reference called the kernel)."""
    from crossent import _dispatch, _native

    if not _dispatch.native_available():
        pytest.skip("the native kernel is not built")
    real = _native.ce_rows_native_torch

    def off(*args, **kwargs):
        loss, lse = real(*args, **kwargs)
        return loss + 1e-3, lse

    monkeypatch.setattr(_native, "ce_rows_native_torch", off)
    assert main(["check", "--only", "cross_entropy", "--dtypes", "float64"]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "native" in printed
