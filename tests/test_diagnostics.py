"""crossent.diagnostics against hand-computed values, closed forms, scikit-learn and SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, recall_score, top_k_accuracy_score

from crossent import diagnostics as dg


def _sample_labels(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One class per row drawn from softmax(logits) (inverse-CDF sampling)."""
    p = scipy.special.softmax(logits, axis=1)
    return (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * 2
    return x, _sample_labels(rng, x)


# -- information ------------------------------------------------------------------------------------


def test_entropy_matches_scipy_and_closed_forms(data):
    x, _ = data
    want = scipy.stats.entropy(scipy.special.softmax(x, axis=1), axis=1)
    np.testing.assert_allclose(dg.predictive_entropy(x), want, rtol=1e-12)
    np.testing.assert_allclose(dg.predictive_entropy(x, base=2), want / np.log(2), rtol=1e-12)
    # uniform row: log C; a row with one certain class: 0
    np.testing.assert_allclose(dg.predictive_entropy(np.zeros((1, 8)), base=2), [3.0], rtol=1e-14)
    np.testing.assert_allclose(
        dg.predictive_entropy(np.array([[0.0, -np.inf, -np.inf]])), [0.0], atol=0
    )


def test_ce_decomposition_is_entropy_plus_kl(data):
    x, _ = data
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(6) * 0.5, size=len(x))
    q[0] = [1, 0, 0, 0, 0, 0]  # a zero-probability entry: 0·log 0 = 0
    d = dg.ce_decomposition(x, q)
    p = scipy.special.softmax(x, axis=1)
    np.testing.assert_allclose(d.entropy, scipy.stats.entropy(q, axis=1), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(d.kl, scipy.stats.entropy(q, p, axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d.cross_entropy, -(q * np.log(p)).sum(axis=1), rtol=1e-10)
    np.testing.assert_allclose(d.cross_entropy, d.entropy + d.kl, rtol=1e-10)


def test_ce_decomposition_of_index_targets_has_zero_entropy(data):
    x, y = data
    d = dg.ce_decomposition(torch.from_numpy(x), torch.from_numpy(y))
    assert np.all(d.entropy == 0)
    np.testing.assert_allclose(d.kl, d.cross_entropy, rtol=1e-12)
    np.testing.assert_allclose(
        d.cross_entropy.mean(), log_loss(y, scipy.special.softmax(x, axis=1)), rtol=1e-10
    )


def test_perplexity_and_bits_per_token():
    # a uniform model over C classes has perplexity C and log2(C) bits per token, whatever the targets
    x = np.zeros((5, 16))
    y = np.array([0, 3, 15, 7, -100])  # the ignored position does not count
    assert dg.perplexity(x, y) == pytest.approx(16.0, rel=1e-12)
    assert dg.bits_per_token(x, y) == pytest.approx(4.0, rel=1e-12)
    # (N, C, T) language-model layout, hand-computed: p(y) = 1/2 and 1/4 → perplexity sqrt(8)
    lm = np.log(np.array([[[0.5, 0.25], [0.5, 0.75]]]))  # (1, C=2, T=2)
    assert dg.perplexity(lm, np.array([[0, 1]])) == pytest.approx(
        math.sqrt(1 / (0.5 * 0.75)), rel=1e-12
    )


# -- accuracy and scores -----------------------------------------------------------------------------


def test_accuracy_and_top_k_match_sklearn(data):
    x, y = data
    assert dg.accuracy(x, y) == pytest.approx(np.mean(x.argmax(1) == y))
    for k in (1, 2, 3, 5):
        want = top_k_accuracy_score(y, x, k=k, labels=np.arange(6))
        assert dg.top_k_accuracy(x, y, k) == pytest.approx(want)
    assert dg.top_k_accuracy(x, y, 6) == 1.0


def test_top_k_hand_computed():
    x = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    y = np.array([1, 1, 1])
    assert dg.top_k_accuracy(x, y, 1) == 0.0
    # last row: class 2 beats class 1, and so does class 0 (a tie, won by the lower index): rank 3
    assert dg.top_k_accuracy(x, y, 2) == pytest.approx(2 / 3)
    assert dg.top_k_accuracy(x, y, 3) == 1.0
    # with target 0 the tie goes its way: rank 2
    assert dg.top_k_accuracy(x, np.array([1, 1, 0]), 2) == 1.0


def test_brier_score_matches_sklearn_and_hand_value(data):
    x, y = data
    want = brier_score_loss(
        y, scipy.special.softmax(x, axis=1), labels=np.arange(6), scale_by_half=False
    )
    assert dg.brier_score(x, y) == pytest.approx(want, rel=1e-12)
    # uniform over 2 classes: (1/2)^2 + (1/2)^2 = 1/2
    assert dg.brier_score(np.zeros((3, 2)), np.array([0, 1, 1])) == pytest.approx(0.5)


def test_nll_and_recall_per_class(data):
    x, y = data
    p = scipy.special.softmax(x, axis=1)
    nll = dg.nll_per_class(x, y)
    for c in range(6):
        rows = y == c
        assert nll[c] == pytest.approx(log_loss(y[rows], p[rows], labels=np.arange(6)), rel=1e-10)
    np.testing.assert_allclose(
        dg.recall_per_class(x, y), recall_score(y, x.argmax(1), average=None), rtol=1e-12
    )
    # a class absent from the targets gets NaN
    assert np.isnan(dg.nll_per_class(np.zeros((2, 3)), np.array([0, 0]))[1:]).all()


def test_torch_inputs_equal_numpy_inputs(data):
    x, y = data
    xt = torch.from_numpy(x).float().requires_grad_(True)
    yt = torch.from_numpy(y)
    assert dg.accuracy(xt, yt) == dg.accuracy(x.astype(np.float32), y)
    assert dg.brier_score(xt, yt) == pytest.approx(
        dg.brier_score(x.astype(np.float32), y), rel=1e-12
    )
    assert dg.expected_calibration_error(xt.bfloat16(), yt) == pytest.approx(
        dg.expected_calibration_error(xt.bfloat16().float().detach().numpy(), y), rel=1e-12
    )


def test_bad_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match="logits"):
        dg.accuracy(np.zeros(3), np.zeros(3, dtype=int))
    with pytest.raises(IndexError, match="target"):
        dg.accuracy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="target"):
        dg.accuracy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="strategy"):
        dg.reliability_diagram(np.zeros((2, 3)), np.array([0, 1]), strategy="bogus")


# -- calibration error -------------------------------------------------------------------------------


def test_ece_and_mce_hand_computed():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right) in 10 equal-width bins:
    # bin (0.8, 0.9]: acc 1/2, conf 0.9 → gap 0.4; bin (0.5, 0.6]: acc 1, conf 0.6 → gap 0.4
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    logits = np.log(np.stack([conf, 1 - conf], axis=1))
    y = np.array([0, 1, 0, 0])
    d = dg.reliability_diagram(logits, y, n_bins=10)
    assert d.count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    np.testing.assert_allclose(d.confidence[[5, 8]], [0.6, 0.9])
    np.testing.assert_allclose(d.accuracy[[5, 8]], [1.0, 0.5])
    assert dg.expected_calibration_error(logits, y, n_bins=10) == pytest.approx(0.4)
    assert dg.max_calibration_error(logits, y, n_bins=10) == pytest.approx(0.4)
    y2 = np.array([0, 0, 0, 1])  # bin 0.9: gap 0.1; bin 0.6: acc 1/2, gap 0.1 → both 0.1
    assert dg.expected_calibration_error(logits, y2, n_bins=10) == pytest.approx(0.1)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_diagram_matches_sklearn_calibration_curve(data, strategy):
    x, y = data
    d = dg.reliability_diagram(x, y, n_bins=8, strategy=strategy)
    p = scipy.special.softmax(x, axis=1)
    correct = (p.argmax(1) == y).astype(int)
    prob_true, prob_pred = calibration_curve(correct, p.max(1), n_bins=8, strategy=strategy)
    full = d.count > 0
    np.testing.assert_allclose(d.accuracy[full], prob_true, rtol=1e-12)
    np.testing.assert_allclose(d.confidence[full], prob_pred, rtol=1e-12)
    assert d.count.sum() == len(y)
    if (
        strategy == "quantile"
    ):  # equal mass: bin sizes differ by at most one (no ties in continuous data)
        assert d.count.max() - d.count.min() <= 1


def test_ece_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 10)) * 1.5
    y = _sample_labels(rng, x)  # labels drawn from the model itself: calibrated by construction
    for strategy in ("uniform", "quantile"):
        assert dg.expected_calibration_error(x, y, 15, strategy) < 0.02
        assert (
            dg.expected_calibration_error(3 * x, y, 15, strategy) > 0.15
        )  # sharpened: over-confident
    assert dg.max_calibration_error(3 * x, y) > dg.max_calibration_error(x, y)


# -- temperature and vector scaling ------------------------------------------------------------------


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(true_t):
    rng = np.random.default_rng(int(true_t * 10))
    x = rng.normal(size=(20000, 8)) * 2
    y = _sample_labels(rng, x / true_t)
    t = dg.fit_temperature(x, y)
    assert t == pytest.approx(true_t, rel=0.05)
    # it is the minimiser: the NLL is higher on both sides
    nll = lambda temp: log_loss(y, scipy.special.softmax(x / temp, axis=1), labels=np.arange(8))  # noqa: E731
    assert nll(t) < nll(t * 1.01) and nll(t) < nll(t / 1.01)


def test_fit_temperature_is_exact_stationary_point_and_respects_bounds():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 4)) * 3
    y = _sample_labels(rng, x / 1.7)
    t = dg.fit_temperature(torch.from_numpy(x), torch.from_numpy(y))
    # d NLL / d(1/T) = mean over rows of (E_p[x] - x_y) at p = softmax(x / T): zero at the optimum
    p = scipy.special.softmax(x / t, axis=1)
    assert abs(np.mean((p * x).sum(1) - x[np.arange(len(y)), y])) < 1e-8
    # perfectly separated data: NLL keeps falling as T → 0, so the lower bound is returned
    sep = np.array([[2.0, -2.0], [-2.0, 2.0]])
    assert dg.fit_temperature(sep, np.array([0, 1]), bounds=(0.1, 10)) == 0.1


def test_calibrate_reports_before_and_after():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(4000, 5)) * 2
    y = _sample_labels(rng, x / 2.0)  # the model is over-confident by a factor 2
    val, test = slice(0, 2000), slice(2000, None)
    r = dg.calibrate(x[val], y[val], x[test], y[test], n_bins=10)
    p = scipy.special.softmax(x[test], axis=1)
    assert r.nll_before == pytest.approx(log_loss(y[test], p, labels=np.arange(5)), rel=1e-10)
    assert r.nll_after < r.nll_before and r.ece_after < r.ece_before
    assert r.ece_after < 0.03 < r.ece_before
    np.testing.assert_allclose(r.apply(x[:3]), x[:3] / r.temperature)
    assert dg.apply_temperature(torch.ones(2), 2.0).tolist() == [0.5, 0.5]


def test_fit_vector_scaling_recovers_scale_and_bias():
    rng = np.random.default_rng(13)
    c = 4
    x = rng.normal(size=(30000, c)) * 1.5
    a0, b0 = np.array([0.5, 1.0, 1.5, 2.0]), np.array([0.3, -0.2, 0.0, 0.4])
    y = _sample_labels(rng, a0 * x + b0)
    a, b = dg.fit_vector_scaling(x, y)
    np.testing.assert_allclose(a, a0, atol=0.08)
    np.testing.assert_allclose(
        b - b.mean(), b0 - b0.mean(), atol=0.08
    )  # b is defined up to a shift
    r = dg.calibrate(x, y, method="vector")
    assert r.nll_after <= r.nll_before
    np.testing.assert_allclose(r.apply(x[:2]), a * x[:2] + b, rtol=1e-6, atol=1e-9)


# -- plots ---------------------------------------------------------------------------------------------


def test_plots_write_non_empty_pngs(tmp_path, data):
    from crossent.diagnostics import plots

    x, y = data
    d = dg.reliability_diagram(x, y, 10)
    paths = [
        plots.reliability_diagram({"a": d, "b": d, "c": d}, tmp_path / "rel.png", after={"a": d}),
        plots.loss_curves({"train": [3.0, 2.0, 1.0]}, tmp_path / "loss.png", log_y=True),
        plots.per_class_bars(
            {"CE": dg.nll_per_class(x, y)}, tmp_path / "sub" / "bars.png", highlight=[1]
        ),
        plots.confidence_histogram({"CE": dg.top_label(x)[0]}, tmp_path / "conf.png"),
    ]
    for path in paths:
        assert path.exists()
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_importing_diagnostics_loads_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = (
        "import sys, crossent.diagnostics, crossent.diagnostics.plots; "
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_docstring_examples():
    import doctest

    from crossent.diagnostics import calibration, metrics

    for module in (metrics, calibration):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(calibration).attempted > 0
