"""Backends: how the reference math is computed for PyTorch tensors (eager, Triton, native CPU)."""
