r"""What a classifier's logits say, measured: information, accuracy, proper scores and calibration.

Every function takes logits :math:`x \in \mathbb{R}^{N \times C}` (NumPy arrays or torch tensors, converted
to float64 NumPy at the boundary) and, where there is one, the target as class indices :math:`y_i` (or class
probabilities where stated). :math:`p = \operatorname{softmax}(x)` row-wise. The math is
:mod:`crossent.numpy`'s (log-softmax, cross-entropy, entropy, KL); this module only reduces and bins it.

Conventions: logarithms are natural (nats) unless a function says otherwise; :math:`0 \log 0 = 0`; the
*top-label* confidence of a row is :math:`\max_c p_c` and its prediction :math:`\arg\max_c p_c`.
To score probabilities instead of logits, pass ``np.log(probs)``: the log-softmax of a log-probability
vector is itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .. import numpy as ref
from ._arrays import as_logits, logits_and_labels, to_numpy

BinStrategy = Literal["uniform", "quantile"]


# --------------------------------------------------------------------------------------------------
# Information: entropy, CE = H + KL, perplexity.
# --------------------------------------------------------------------------------------------------


def predictive_entropy(logits: Any, *, base: float | None = None) -> np.ndarray:
    r"""Entropy of each row's predictive distribution, :math:`H(p_i) = -\sum_c p_{ic}\log p_{ic}`.

    Float64 NumPy per row, in nats or another ``base``; the differentiable, reducible form of the same
    quantity is ``crossent.entropy`` (torch) or ``crossent.numpy.entropy``.

    Args:
        logits: (N, C) logits.
        base: logarithm base (None: nats; 2: bits).

    Returns:
        (N,) float64 entropies, in ``[0, log C]``.
    """
    x = as_logits(logits)
    with np.errstate(invalid="ignore"):  # -inf logits: 0·(-inf) is replaced by 0 in the reference
        h = ref.entropy(x, reduction="none")
    return h if base is None else h / math.log(base)


@dataclass(frozen=True)
class CEDecomposition:
    r"""Per-row :math:`\mathrm{CE}(q, p) = H(q) + \mathrm{KL}(q \,\|\, p)`, each an (N,) float64 array (nats).

    ``entropy`` is the irreducible part (the target's own uncertainty; 0 for class-index targets) and
    ``kl`` the part the model can still remove.
    """

    cross_entropy: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray


def ce_decomposition(logits: Any, target: Any) -> CEDecomposition:
    r"""Split the cross-entropy of each row into the target's entropy and the KL divergence to the model.

    Args:
        logits: (N, C) logits of the model distribution :math:`p`.
        target: (N,) class indices, or (N, C) class probabilities :math:`q`.

    Returns:
        :class:`CEDecomposition` with ``cross_entropy == entropy + kl`` (to rounding).
    """
    x = as_logits(logits)
    t = to_numpy(target)
    if t.ndim == 1:
        _, y = logits_and_labels(x, t)
        q = np.zeros_like(x)
        q[np.arange(x.shape[0]), y] = 1.0
    elif t.shape == x.shape:
        q = t.astype(np.float64)
    else:
        raise ValueError(
            f"argument 'target' must have shape ({x.shape[0]},) or {tuple(x.shape)}, got {tuple(t.shape)}"
        )
    ce = ref.cross_entropy(x, q, reduction="none")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = ref.entropy(
            np.log(q), reduction="none"
        )  # log_softmax(log q) = log q; 0·log 0 = 0 there
    kl = np.sum(ref.kl_div(ref.log_softmax(x), q, reduction="none"), axis=-1)
    return CEDecomposition(cross_entropy=ce, entropy=h, kl=kl)


def perplexity(logits: Any, target: Any, *, ignore_index: int = -100) -> float:
    r"""Perplexity :math:`\exp(\frac{1}{N}\sum_i -\log p_{i, y_i})` over the non-ignored positions.

    ``logits`` may have any shape :func:`crossent.numpy.cross_entropy` accepts ((N, C) or (N, C, T) …).
    """
    return math.exp(_mean_nll(logits, target, ignore_index))


def bits_per_token(logits: Any, target: Any, *, ignore_index: int = -100) -> float:
    r"""Mean negative log-likelihood in bits: :math:`\frac{1}{N \ln 2}\sum_i -\ln p_{i, y_i}`."""
    return _mean_nll(logits, target, ignore_index) / math.log(2.0)


def _mean_nll(logits: Any, target: Any, ignore_index: int) -> float:
    x = to_numpy(logits).astype(np.float64)
    y = to_numpy(target).astype(np.int64)
    return float(ref.cross_entropy(x, y, ignore_index=ignore_index))


# --------------------------------------------------------------------------------------------------
# Accuracy and proper scores.
# --------------------------------------------------------------------------------------------------


def top_label(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, prediction)``: each row's largest softmax probability and its class, both (N,)."""
    x = as_logits(logits)
    pred = np.argmax(x, axis=-1)
    conf = np.exp(np.take_along_axis(ref.log_softmax(x), pred[:, None], axis=-1)[:, 0])
    return conf, pred


def accuracy(logits: Any, target: Any) -> float:
    """Fraction of rows whose arg-max class is the target."""
    x, y = logits_and_labels(logits, target)
    return float(np.mean(np.argmax(x, axis=-1) == y)) if len(y) else math.nan


def top_k_accuracy(logits: Any, target: Any, k: int = 5) -> float:
    """Fraction of rows whose target is among the ``k`` highest logits (ties: the lower class index wins)."""
    x, y = logits_and_labels(logits, target)
    if not 1 <= k:
        raise ValueError(f"argument 'k' must be >= 1, got {k}")
    # rank of the target = number of classes that beat it (strictly larger, or equal with a lower index)
    xy = np.take_along_axis(x, y[:, None], axis=-1)
    idx = np.arange(x.shape[1])[None, :]
    beats = (x > xy) | ((x == xy) & (idx < y[:, None]))
    return float(np.mean(np.sum(beats, axis=-1) < k)) if len(y) else math.nan


def brier_score(logits: Any, target: Any) -> float:
    r"""Multi-class Brier score :math:`\frac{1}{N}\sum_i \sum_c (p_{ic} - [c = y_i])^2`, in ``[0, 2]``."""
    x, y = logits_and_labels(logits, target)
    p = ref.softmax(x)
    p[np.arange(len(y)), y] -= 1.0
    return float(np.mean(np.sum(p * p, axis=-1))) if len(y) else math.nan


def nll_per_class(logits: Any, target: Any) -> np.ndarray:
    r"""(C,) mean negative log-likelihood :math:`-\log p_{i,y_i}` over the rows of each true class (NaN if none)."""
    x, y = logits_and_labels(logits, target)
    nll = ref.cross_entropy(x, y, reduction="none")
    return _per_class_mean(nll, y, x.shape[1])


def recall_per_class(logits: Any, target: Any) -> np.ndarray:
    """(C,) fraction of each true class's rows predicted as that class (NaN for a class with no rows)."""
    x, y = logits_and_labels(logits, target)
    return _per_class_mean((np.argmax(x, axis=-1) == y).astype(np.float64), y, x.shape[1])


def _per_class_mean(values: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    total = np.bincount(y, weights=values, minlength=num_classes)
    count = np.bincount(y, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# --------------------------------------------------------------------------------------------------
# Calibration: reliability diagrams, ECE and MCE of the top label.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityDiagram:
    r"""Top-label reliability data: B bins of confidence, each with its mean confidence and accuracy.

    Bin :math:`b` holds the rows whose confidence lies in :math:`(e_b, e_{b+1}]` (the first bin also takes
    :math:`e_0`). Empty bins have NaN ``confidence`` and ``accuracy``.

    Attributes:
        edges: (B+1,) bin edges (equal width on [0, 1], or confidence quantiles for equal mass).
        count: (B,) rows per bin.
        confidence: (B,) mean top-label confidence per bin.
        accuracy: (B,) fraction of correct top labels per bin.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        """(B,) |accuracy − confidence| per bin (NaN for empty bins)."""
        return np.abs(self.accuracy - self.confidence)

    @property
    def ece(self) -> float:
        r"""Expected calibration error :math:`\sum_b \frac{n_b}{N}\,|\mathrm{acc}_b - \mathrm{conf}_b|`."""
        n = self.count.sum()
        if n == 0:
            return math.nan
        full = self.count > 0
        return float(np.sum(self.count[full] * self.gaps[full]) / n)

    @property
    def mce(self) -> float:
        r"""Maximum calibration error :math:`\max_{b: n_b > 0} |\mathrm{acc}_b - \mathrm{conf}_b|`."""
        full = self.count > 0
        return float(np.max(self.gaps[full])) if full.any() else math.nan


def reliability_diagram(
    logits: Any, target: Any, n_bins: int = 15, strategy: BinStrategy = "uniform"
) -> ReliabilityDiagram:
    """Bin the top-label confidences (``"uniform"``: equal-width bins; ``"quantile"``: equal-mass bins).

    Binning follows :func:`sklearn.calibration.calibration_curve` (right-closed bins, quantile edges from
    ``np.quantile``), so its ``prob_true``/``prob_pred`` are this diagram's non-empty ``accuracy``/``confidence``.
    """
    x, y = logits_and_labels(logits, target)
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"argument 'n_bins' must be a positive integer, got {n_bins!r}")
    conf, pred = top_label(x)
    correct = (pred == y).astype(np.float64)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = (
            np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1))
            if len(conf)
            else np.linspace(0, 1, n_bins + 1)
        )
    else:
        raise ValueError(f"argument 'strategy' must be 'uniform' or 'quantile', got {strategy!r}")
    bins = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    empty = count == 0
    mean_conf[empty] = np.nan
    mean_acc[empty] = np.nan
    return ReliabilityDiagram(edges=edges, count=count, confidence=mean_conf, accuracy=mean_acc)


def expected_calibration_error(
    logits: Any, target: Any, n_bins: int = 15, strategy: BinStrategy = "uniform"
) -> float:
    """Top-label ECE (see :class:`ReliabilityDiagram`); ``strategy="quantile"`` gives equal-mass bins."""
    return reliability_diagram(logits, target, n_bins, strategy).ece


def max_calibration_error(
    logits: Any, target: Any, n_bins: int = 15, strategy: BinStrategy = "uniform"
) -> float:
    """Top-label MCE (see :class:`ReliabilityDiagram`): the worst non-empty bin's gap."""
    return reliability_diagram(logits, target, n_bins, strategy).mce
