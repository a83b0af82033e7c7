"""Plots of the evaluators (matplotlib, Agg canvas: no display or global backend needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .outputs import save_figure_atomic


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def plot_pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str) -> Path:
    """Precision-recall curves, one per name: ``{name: (recall, precision, ap)}``.

    Points with undefined precision (no prediction kept) are left out.
    """
    figure, axes = _figure(title, "recall", "precision")
    for name, (recall, precision, ap) in curves.items():
        recall, precision = np.asarray(recall, float), np.asarray(precision, float)
        ok = ~(np.isnan(recall) | np.isnan(precision))
        label = f"{name} (AP {ap:.4f})" if ap == ap else f"{name} (AP n/a)"
        axes.plot(recall[ok], precision[ok], label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    if curves:
        axes.legend(loc="lower left", fontsize="small", ncol=2 if len(curves) > 8 else 1)
    return save_figure_atomic(figure, path)


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
             marks: Sequence[float] = ()) -> Path:
    """ROC curves ``{name: (false_positives, true_positive_rate)}``; vertical lines at ``marks``."""
    figure, axes = _figure(title, "false positives", "true positive rate")
    for name, (fp, tpr) in curves.items():
        axes.step(np.asarray(fp, float), np.asarray(tpr, float), where="post", label=name)
    for mark in marks:
        axes.axvline(mark, color="grey", linestyle=":", linewidth=1)
    axes.set_ylim(0, 1.02)
    axes.set_xlim(left=0)
    if curves:
        axes.legend(loc="lower right", fontsize="small")
    return save_figure_atomic(figure, path)


def plot_ced(x: np.ndarray, fraction: np.ndarray, path: str | Path, title: str, label: str,
             failure_threshold: float | None = None) -> Path:
    """Cumulative error distribution: fraction of faces with error <= x."""
    figure, axes = _figure(title, "normalised mean error", "fraction of faces")
    axes.plot(np.asarray(x, float), np.asarray(fraction, float), label=label)
    if failure_threshold is not None:
        axes.axvline(failure_threshold, color="grey", linestyle=":", linewidth=1)
    axes.set_xlim(float(np.min(x)), float(np.max(x)))
    axes.set_ylim(0, 1.02)
    axes.legend(loc="lower right", fontsize="small")
    return save_figure_atomic(figure, path)
