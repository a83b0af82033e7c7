"""Precision/recall and ROC helpers: the ONE VOC AP implementation of the toolkit.

Both WIDER FACE (all-point AP of its 1000-threshold PR curve) and Pascal VOC
(11-point VOC07 AP and all-point AP) use these functions.

Conventions (as in the VOC devkit / WIDER MATLAB code):

* ``recall`` is non-decreasing along the arrays (detections ranked by score).
* A ``NaN`` precision (a threshold where no prediction is kept: 0/0) is treated
  as missing, like MATLAB's ``max`` which ignores NaN.
"""
from __future__ import annotations

import numpy as np


def voc_ap_all_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated PR curve (VOC2010+ ``VOCap``).

    Precision is made monotone (running maximum from the right), then summed
    over the recall steps, with sentinels recall 0 -> precision 0 and recall 1
    -> precision 0 at the ends.
    """
    rec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    prec = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    prec = np.fmax.accumulate(prec[::-1])[::-1]  # fmax ignores NaN
    steps = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return float(np.sum((rec[steps] - rec[steps - 1]) * prec[steps]))


def voc_ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point AP: mean over t = 0, 0.1, ..., 1 of max precision at recall >= t.

    The thresholds are ``k / 10`` (correctly rounded), so a recall of exactly
    3/10 counts for t = 0.3.
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    total = 0.0
    for k in range(11):
        kept = prec[(rec >= k / 10) & ~np.isnan(prec)]
        total += float(kept.max()) if kept.size else 0.0
    return total / 11


def voc_ap(recall: np.ndarray, precision: np.ndarray, method: str = "all") -> float:
    """``method="all"`` (all-point) or ``"11point"`` (VOC2007)."""
    if method == "all":
        return voc_ap_all_point(recall, precision)
    if method == "11point":
        return voc_ap_11_point(recall, precision)
    raise ValueError(f"AP method must be 'all' or '11point', not {method!r}")


def ranked_precision_recall(tp: np.ndarray, fp: np.ndarray, n_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision of detections already sorted by score.

    ``tp``/``fp`` are 0/1 flags per detection (a detection that is neither, e.g.
    one matching a "difficult" object, has both 0). Recall is NaN when there
    are no positives.
    """
    tp_cum = np.cumsum(np.asarray(tp, dtype=np.float64))
    fp_cum = np.cumsum(np.asarray(fp, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp_cum / n_positive if n_positive > 0 else np.full_like(tp_cum, np.nan)
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    return recall, precision


def value_at_or_below(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Largest ``y`` over the curve points with ``x <= x_max`` (0 if none).

    Used for "TPR at k false positives" on a ROC curve.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    kept = y[x <= x_max]
    return float(kept.max()) if kept.size else 0.0
