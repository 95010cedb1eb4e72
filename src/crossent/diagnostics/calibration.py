r"""Post-hoc calibration: temperature scaling and vector scaling fitted by minimising the NLL.

Temperature scaling (Guo et al., 2017) divides the logits by one :math:`T > 0`; it changes confidence but never
the arg-max, so accuracy is unchanged. Vector scaling fits :math:`x'_{c} = a_c x_c + b_c` per class.

**Temperature.** With :math:`\beta = 1/T` the held-out NLL

.. math:: f(\beta) = \frac{1}{N}\sum_i \operatorname{lse}(\beta x_i) - \beta x_{i,y_i}

is convex in :math:`\beta` (a log-sum-exp of linear functions minus a linear one), with

.. math:: f'(\beta) = \sum_{i,c} G_{ic}\, x_{ic}, \qquad
          f''(\beta) = \frac{1}{N}\sum_i \operatorname{Var}_{c \sim p_i}[x_{ic}] \ge 0,

where :math:`G = \partial f / \partial(\beta x) = (P - Y)/N` is :func:`crossent.numpy.cross_entropy_grad`
and :math:`p_i = \operatorname{softmax}(\beta x_i)`. The minimiser is the root of the increasing
:math:`f'`, found by Newton's method safeguarded by bisection inside a bracket (it converges quadratically
and cannot leave the bracket); the bracket is ``bounds`` on :math:`T`.

**Vector scaling.** The NLL is convex in :math:`(a, b)` as well; damped Newton with a backtracking line search
on the exact gradient (from :func:`crossent.numpy.cross_entropy_grad`) and Hessian
(:math:`\operatorname{diag}(p) - pp^\top` per row). :math:`b` is defined up to a constant shift (the
softmax ignores it); the fit returns the minimum-norm step's solution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import numpy as ref
from ._arrays import as_logits, logits_and_labels
from .metrics import BinStrategy, expected_calibration_error


def _nll(x: np.ndarray, y: np.ndarray) -> float:
    return float(ref.cross_entropy(x, y))


def fit_temperature(
    logits: Any,
    target: Any,
    *,
    bounds: tuple[float, float] = (1e-2, 1e2),
    tol: float = 1e-10,
    max_iter: int = 100,
) -> float:
    """The temperature :math:`T` minimising the mean NLL of ``logits / T`` on ``target`` (module doc).

    Args:
        logits: (N, C) held-out logits (NumPy or torch).
        target: (N,) class indices.
        bounds: ``(T_min, T_max)``; the result is clipped to it (returned when the optimum lies outside,
            e.g. ``T_min`` for perfectly separated data whose NLL keeps falling as T → 0).
        tol: stop when the bracket on :math:`1/T` is narrower than ``tol`` (relative) or :math:`|f'|` < tol.
        max_iter: Newton/bisection steps at most.

    Returns:
        :math:`T` as a float.
    """
    x, y = logits_and_labels(logits, target)
    t_min, t_max = float(bounds[0]), float(bounds[1])
    if not 0 < t_min < t_max:
        raise ValueError(f"argument 'bounds' must satisfy 0 < T_min < T_max, got {bounds!r}")
    if x.shape[0] == 0:
        raise ValueError("argument 'logits' must hold at least one row to fit a temperature")

    def slope_and_curvature(beta: float) -> tuple[float, float]:
        z = beta * x
        d1 = float(np.sum(ref.cross_entropy_grad(z, y) * x))  # f'(β) = Σ (P − Y)/N · x
        p = ref.softmax(z)
        mean = np.sum(p * x, axis=-1)
        d2 = float(np.mean(np.sum(p * x * x, axis=-1) - mean * mean))  # f''(β) = mean Var_p(x)
        return d1, d2

    lo, hi = 1.0 / t_max, 1.0 / t_min  # bracket on β
    if slope_and_curvature(lo)[0] >= 0:
        return t_max
    if slope_and_curvature(hi)[0] <= 0:
        return t_min
    beta = min(max(1.0, lo), hi)
    for _ in range(max_iter):
        d1, d2 = slope_and_curvature(beta)
        if abs(d1) < tol:
            break
        if d1 > 0:
            hi = beta
        else:
            lo = beta
        step = beta - d1 / d2 if d2 > 0 else math.nan
        # safeguard: bisect when the Newton step leaves the bracket (or the curvature vanished)
        beta = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo <= tol * hi:
            break
    return 1.0 / beta


def apply_temperature(logits: Any, temperature: float) -> Any:
    """``logits / temperature``, in the input's own type (NumPy array or torch tensor)."""
    if not temperature > 0:
        raise ValueError(f"argument 'temperature' must be > 0, got {temperature!r}")
    return logits / temperature


def fit_vector_scaling(
    logits: Any, target: Any, *, tol: float = 1e-9, max_iter: int = 100, damping: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scale ``a`` and bias ``b`` minimising the mean NLL of ``a * logits + b`` (module doc).

    Memory is O(N·C²) (the exact Hessian), meant for classifiers with up to a few hundred classes.

    Returns:
        ``(a, b)``, two (C,) float64 arrays.
    """
    x, y = logits_and_labels(logits, target)
    n, c = x.shape
    if n == 0:
        raise ValueError("argument 'logits' must hold at least one row to fit vector scaling")
    theta = np.concatenate([np.ones(c), np.zeros(c)])

    def objective(th: np.ndarray) -> float:
        return _nll(th[:c] * x + th[c:], y)

    f = objective(theta)
    for _ in range(max_iter):
        z = theta[:c] * x + theta[c:]
        g_z = ref.cross_entropy_grad(z, y)  # (P − Y)/N
        grad = np.concatenate([np.sum(g_z * x, axis=0), np.sum(g_z, axis=0)])
        if np.max(np.abs(grad)) < tol:
            break
        p = ref.softmax(z)
        # per-row Hessian wrt z: (diag(p) − p pᵀ)/N; chain rule through z_c = a_c x_c + b_c
        h_rows = (p[:, :, None] * np.eye(c)[None] - p[:, :, None] * p[:, None, :]) / n
        h_aa = np.einsum("nc,ncd,nd->cd", x, h_rows, x)
        h_ab = np.einsum("nc,ncd->cd", x, h_rows)
        h_bb = h_rows.sum(axis=0)
        hess = np.block([[h_aa, h_ab], [h_ab.T, h_bb]])
        step = np.linalg.lstsq(hess + damping * np.eye(2 * c), -grad, rcond=None)[0]
        t = 1.0
        while t > 1e-10:  # backtracking (Armijo) line search
            candidate = theta + t * step
            f_new = objective(candidate)
            if f_new <= f + 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        else:
            break
        theta, f_prev, f = candidate, f, f_new
        if abs(f_prev - f) <= tol * max(1.0, abs(f)):
            break
    return theta[:c].copy(), theta[c:].copy()


@dataclass(frozen=True)
class CalibrationReport:
    """A fitted calibration map and the NLL / ECE it gives, before and after, on the evaluation data.

    ``temperature`` is set for ``method="temperature"``; ``scale`` and ``bias`` for ``method="vector"``.
    The evaluation data is the test data when given to :func:`calibrate`, else the fitting data.
    """

    method: str
    temperature: float | None
    scale: np.ndarray | None
    bias: np.ndarray | None
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def apply(self, logits: Any) -> np.ndarray:
        """The calibrated logits (float64 NumPy)."""
        x = as_logits(logits)
        if self.method == "temperature":
            assert self.temperature is not None
            return x / self.temperature
        assert self.scale is not None and self.bias is not None
        return self.scale * x + self.bias


def calibrate(
    logits: Any,
    target: Any,
    test_logits: Any = None,
    test_target: Any = None,
    *,
    method: str = "temperature",
    n_bins: int = 15,
    strategy: BinStrategy = "uniform",
) -> CalibrationReport:
    """Fit ``method`` ("temperature" or "vector") on held-out ``logits``/``target`` and report NLL and ECE.

    Example:
        >>> import numpy as np
        >>> x = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
        >>> r = calibrate(x, np.array([0, 1, 1, 0]))  # half right at confidence 0.98: T grows without bound
        >>> r.temperature
        100.0
    """
    x, y = logits_and_labels(logits, target)
    if (test_logits is None) != (test_target is None):
        raise ValueError("arguments 'test_logits' and 'test_target' must be given together")
    ex, ey = (x, y) if test_logits is None else logits_and_labels(test_logits, test_target)
    temperature = scale = bias = None
    if method == "temperature":
        temperature = fit_temperature(x, y)
        after = ex / temperature
    elif method == "vector":
        scale, bias = fit_vector_scaling(x, y)
        after = scale * ex + bias
    else:
        raise ValueError(f"argument 'method' must be 'temperature' or 'vector', got {method!r}")
    return CalibrationReport(
        method=method,
        temperature=temperature,
        scale=scale,
        bias=bias,
        nll_before=_nll(ex, ey),
        nll_after=_nll(after, ey),
        ece_before=expected_calibration_error(ex, ey, n_bins, strategy),
        ece_after=expected_calibration_error(after, ey, n_bins, strategy),
    )
