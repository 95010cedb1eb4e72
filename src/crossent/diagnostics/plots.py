"""PNG plots of the diagnostics: reliability diagrams, loss curves, per-class losses, confidence histograms.

matplotlib is an optional dependency (``pip install crossent[demo]``) imported only when a plot is drawn.
Figures are rendered with the Agg canvas directly (``matplotlib.figure.Figure``), so nothing here touches
pyplot's global state or the caller's backend. Every function takes a mapping ``label -> data`` (one panel
or one series per label), writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import ReliabilityDiagram


def _figure(
    ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.0, 3.6)
) -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("crossent's plots need matplotlib: pip install 'crossent[demo]'") from exc
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def reliability_diagram(
    diagrams: Mapping[str, ReliabilityDiagram],
    path: str | Path,
    *,
    after: Mapping[str, ReliabilityDiagram] | None = None,
    title: str = "Reliability diagram",
) -> Path:
    """One panel per label: accuracy per confidence bin (bars) against the diagonal, with the bin gaps and
    the ECE in the legend; ``after`` (same labels) overlays the diagram after calibration as a line."""
    labels = list(diagrams)
    ncols = len(labels) if len(labels) <= 2 else 2
    nrows = math.ceil(len(labels) / ncols)
    fig, axes = _figure(ncols, nrows)
    for ax, label in zip(axes.flat, labels):
        d = diagrams[label]
        left, width = d.edges[:-1], np.diff(d.edges)
        full = d.count > 0
        ax.bar(
            left[full],
            d.accuracy[full],
            width=width[full],
            align="edge",
            color="tab:blue",
            edgecolor="white",
            label=f"accuracy (ECE {d.ece:.3f})",
        )
        ax.bar(
            left[full],
            d.confidence[full] - d.accuracy[full],
            bottom=d.accuracy[full],
            width=width[full],
            align="edge",
            fill=False,
            hatch="///",
            edgecolor="tab:red",
            lw=0.8,
            label="gap to mean confidence",
        )
        if after is not None and label in after:
            a = after[label]
            ok = a.count > 0
            ax.plot(
                a.confidence[ok],
                a.accuracy[ok],
                "o-",
                color="tab:green",
                ms=3,
                label=f"after temperature (ECE {a.ece:.3f})",
            )
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=label)
        ax.legend(loc="upper left", fontsize=7)
    for ax in list(axes.flat)[len(labels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _save(fig, path)


def loss_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "Training loss",
    ylabel: str = "loss",
    log_y: bool = False,
) -> Path:
    """One line per label: a loss per epoch (or per step)."""
    fig, axes = _figure(size=(6.0, 4.0))
    ax = axes[0, 0]
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), np.asarray(values, dtype=float), label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def per_class_bars(
    values: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    *,
    title: str = "Test NLL per class",
    ylabel: str = "mean NLL (nats)",
    highlight: Sequence[int] = (),
) -> Path:
    """Grouped bars: one group per class, one bar per label; classes in ``highlight`` get a shaded band."""
    labels = list(values)
    arrays = [np.asarray(values[k], dtype=float) for k in labels]
    num_classes = max((len(a) for a in arrays), default=0)
    fig, axes = _figure(size=(max(6.0, 0.6 * num_classes + 2), 4.0))
    ax = axes[0, 0]
    width = 0.8 / max(len(labels), 1)
    for c in highlight:
        ax.axvspan(c - 0.45, c + 0.45, color="gold", alpha=0.25, lw=0)
    for j, (label, a) in enumerate(zip(labels, arrays)):
        ax.bar(
            np.arange(len(a)) - 0.4 + (j + 0.5) * width, np.nan_to_num(a), width=width, label=label
        )
    ax.set(xlabel="class", ylabel=ylabel, title=title, xticks=np.arange(num_classes))
    ax.legend(fontsize=8)
    return _save(fig, path)


def confidence_histogram(
    confidences: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    *,
    bins: int = 20,
    title: str = "Top-label confidence",
) -> Path:
    """Overlaid histograms of the top-label confidence, one per label (a mean marker for each)."""
    fig, axes = _figure(size=(6.0, 4.0))
    ax = axes[0, 0]
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, values in confidences.items():
        conf = np.asarray(values, dtype=float)
        line = ax.hist(
            conf, bins=edges, histtype="step", lw=1.5, label=f"{label} (mean {conf.mean():.3f})"
        )
        ax.axvline(conf.mean(), color=line[2][0].get_edgecolor(), ls=":", lw=1)
    ax.set(xlabel="confidence", ylabel="rows", title=title, xlim=(0, 1))
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
