"""Diagnostics: what cross-entropy measures, made visible.

* :mod:`~crossent.diagnostics.metrics`: predictive entropy, CE = H + KL, perplexity and bits per token,
  accuracy and top-k, Brier score, NLL and recall per class, ECE/MCE and reliability-diagram data.
* :mod:`~crossent.diagnostics.calibration`: temperature and vector scaling fitted by minimising the NLL.
* :mod:`~crossent.diagnostics.plots`: the PNGs (matplotlib, imported only when a plot is drawn).

Inputs are NumPy arrays or torch tensors (converted to float64 NumPy at the boundary); the math is
:mod:`crossent.numpy`'s.
"""

from .calibration import (
    CalibrationReport,
    apply_temperature,
    calibrate,
    fit_temperature,
    fit_vector_scaling,
)
from .metrics import (
    CEDecomposition,
    ReliabilityDiagram,
    accuracy,
    bits_per_token,
    brier_score,
    ce_decomposition,
    expected_calibration_error,
    max_calibration_error,
    nll_per_class,
    perplexity,
    predictive_entropy,
    recall_per_class,
    reliability_diagram,
    top_k_accuracy,
    top_label,
)

__all__ = [
    "CEDecomposition",
    "CalibrationReport",
    "ReliabilityDiagram",
    "accuracy",
    "apply_temperature",
    "bits_per_token",
    "brier_score",
    "calibrate",
    "ce_decomposition",
    "expected_calibration_error",
    "fit_temperature",
    "fit_vector_scaling",
    "max_calibration_error",
    "nll_per_class",
    "perplexity",
    "predictive_entropy",
    "recall_per_class",
    "reliability_diagram",
    "top_k_accuracy",
    "top_label",
]
