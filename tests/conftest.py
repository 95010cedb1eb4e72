"""Test configuration shared by every test module.

* Triton kernels run on the CPU under its interpreter when this machine has no NVIDIA GPU. The variable must
  be set before anything imports triton (it is read at import), hence here, at the top of conftest. Detecting the
  GPU by its device file keeps CUDA untouched at import.
* Tests marked ``gpu`` skip cleanly without CUDA (checked lazily, at collection time).
"""

from __future__ import annotations

import os

if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def x64():
    """JAX with 64-bit floats for the duration of a test (the JAX tests' float64 oracle checks)."""
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield
