"""The one VOC AP implementation (all-point and 11-point) and the ROC read-out helper."""
from __future__ import annotations

import numpy as np
import pytest

from caffe_common.eval.curves import (
    ranked_precision_recall,
    value_at_or_below,
    voc_ap,
    voc_ap_11_point,
    voc_ap_all_point,
)


def test_all_point_ap_hand_computed():
    # recall steps .25 at precision 1, .5 at precision .5 (after monotone interpolation)
    recall = np.array([0.25, 0.25, 0.5, 0.75])
    precision = np.array([1.0, 0.5, 0.4, 0.6])
    # interpolated precision: 1 up to .25, then max(.4,.6)=.6 up to .75, 0 after
    assert voc_ap_all_point(recall, precision) == pytest.approx(0.25 * 1 + 0.25 * 0.6 + 0.25 * 0.6)


def test_nan_precision_is_ignored_like_matlab_max():
    recall = np.array([0.0, 0.0, 0.5, 1.0])
    precision = np.array([np.nan, np.nan, 1.0, 0.5])
    assert voc_ap_all_point(recall, precision) == pytest.approx(0.5 + 0.25)
    assert voc_ap_11_point(recall, precision) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_11_point_counts_recall_exactly_on_a_threshold():
    # recall 3/10 must count for t = 0.3 (k/10, not 0.1 * 3 = 0.30000000000000004)
    assert voc_ap_11_point(np.array([3 / 10]), np.array([1.0])) == pytest.approx(4 / 11)
    assert voc_ap(np.array([3 / 10]), np.array([1.0]), "11point") == pytest.approx(4 / 11)
    with pytest.raises(ValueError, match="AP method"):
        voc_ap(np.array([1.0]), np.array([1.0]), "coco")


def test_perfect_and_empty_curves():
    assert voc_ap_all_point(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    assert voc_ap_11_point(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert voc_ap_all_point(np.zeros(0), np.zeros(0)) == 0.0
    assert voc_ap_11_point(np.zeros(0), np.zeros(0)) == 0.0


def test_ranked_precision_recall_and_ignored_detections():
    recall, precision = ranked_precision_recall(np.array([1, 0, 0, 1]), np.array([0, 0, 1, 0]), 4)
    np.testing.assert_allclose(recall, [0.25, 0.25, 0.25, 0.5])
    np.testing.assert_allclose(precision, [1, 1, 0.5, 2 / 3])
    recall, _ = ranked_precision_recall(np.array([0]), np.array([1]), 0)
    assert np.isnan(recall).all()


def test_value_at_or_below():
    fp = np.array([0, 0, 1, 1, 5])
    tpr = np.array([0, 0.2, 0.2, 0.6, 0.9])
    assert value_at_or_below(fp, tpr, 0) == 0.2
    assert value_at_or_below(fp, tpr, 4) == 0.6
    assert value_at_or_below(fp, tpr, 1000) == 0.9
    assert value_at_or_below(np.array([3]), np.array([0.5]), 2) == 0.0
