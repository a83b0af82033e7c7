"""The cascade's geometry: hand-checked values, and vectorised (tools) == loop reference (tools_loop)."""
import math
import os
import tempfile

import numpy as np
import pytest

from mtcnn_caffe.detect import steps as tools
from tests import tools_loop
from caffe_common.boxes import box_area, iou_one_to_many


def _random_boxes(rng, n, max_xy=400, min_side=4, max_side=60, square=False, score_levels=None):
    xy = rng.uniform(0, max_xy, (n, 2))
    w = rng.uniform(min_side, max_side, n)
    h = w if square else rng.uniform(min_side, max_side, n)
    if score_levels:  # few distinct scores: many ties
        score = rng.integers(0, score_levels, n) / score_levels
    else:
        score = rng.uniform(0, 1, n)
    return np.column_stack([xy, xy[:, 0] + w, xy[:, 1] + h, score]).round(1)


def test_pyramid_scales_and_level_sizes():
    # 100 x 200, min size 20: m = 0.6, short side 60 -> 60, 42.5, 30.2, 21.4, 15.2 (>= 12), 10.7 stops.
    scales = tools.pyramid_scales(100, 200, 20, 0.709)
    np.testing.assert_allclose(scales, [0.6 * 0.709**k for k in range(5)])
    assert tools.scaled_size(100, 200, scales[1]) == (math.ceil(100 * 0.6 * 0.709), math.ceil(200 * 0.6 * 0.709))
    assert tools.pyramid_scales(11, 500, 12, 0.709) == []  # too small for one 12 px window
    assert tools_loop.pyramid_scales(333, 517, 10, 0.79) == tools.pyramid_scales(333, 517, 10, 0.79)
    assert len(tools.pyramid_scales(12, 12, 12, 0.709)) == 1
    with pytest.raises(ValueError):
        tools.pyramid_scales(100, 100, 20, 1.2)


def test_pnet_output_size_matches_caffe(caffe):
    """Valid convolutions + ceil-mode pooling: the formula equals what Caffe's P-Net produces."""
    from mtcnn_caffe.nets.deploy import deploy_net

    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(str(deploy_net("det1")))
    try:
        net = caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)
    for length in [11, 12, 13, 14, 25, 30, 31]:
        net.blobs["data"].reshape(1, 3, length, 17)
        net.reshape()
        assert net.blobs["prob1"].data.shape[2:] == (tools.pnet_output_size(length), tools.pnet_output_size(17))


def test_generate_boxes_hand_values_and_loop_equivalence():
    prob = np.zeros((6, 8), np.float32)  # (X, Y)
    prob[3, 5] = 0.9
    prob[1, 0] = 0.6  # exactly at the threshold: kept (>=)
    reg = np.zeros((4, 6, 8), np.float32)
    reg[:, 3, 5] = [0.1, -0.2, 0.3, 0.4]
    boxes = tools.generate_boxes(prob, reg, 0.5, 0.6)
    # Order: x fastest, then y -> (1, 0) before (3, 5).
    np.testing.assert_allclose(boxes[0, :5], [math.trunc(3 / 0.5), math.trunc(1 / 0.5), math.trunc(14 / 0.5),
                                              math.trunc(12 / 0.5), 0.6], rtol=1e-6)
    np.testing.assert_allclose(boxes[1], [14, 22, 36, 44, 0.9, 0.1, -0.2, 0.3, 0.4], rtol=1e-6)
    rng = np.random.default_rng(0)
    prob = rng.uniform(0, 1, (37, 23)).astype(np.float32)
    reg = rng.normal(0, 0.1, (4, 37, 23)).astype(np.float32)
    np.testing.assert_array_equal(tools.generate_boxes(prob, reg, 0.37, 0.7), tools_loop.generate_boxes(prob, reg, 0.37, 0.7))
    assert tools.generate_boxes(prob, reg, 0.37, 1.5).shape == (0, 9)


def test_nms_hand_example_union_and_min():
    boxes = np.array([
        [0, 0, 9, 9, 0.9],     # kept
        [1, 1, 10, 10, 0.8],   # IoU (9*9)/(100+100-81) = 0.68 with box 0
        [2, 2, 5, 5, 0.95],    # inside box 0: IoU 0.16, min-overlap 1.0
        [50, 50, 60, 60, 0.1],
    ])
    assert tools.nms(boxes, 0.5, "union").tolist() == [2, 0, 3]
    assert tools.nms(boxes, 0.7, "union").tolist() == [2, 0, 1, 3]
    assert tools.nms(boxes, 0.7, "min").tolist() == [2, 3]  # boxes 0 and 1 contain box 2: dropped
    with pytest.raises(ValueError):
        tools.nms(boxes, 0.5, "max")


def test_nms_ties_follow_matlab_order():
    # Equal scores: MATLAB's stable ascending sort read from the end takes the later box first.
    boxes = np.array([[0, 0, 10, 10, 0.5], [1, 0, 11, 10, 0.5], [2, 0, 12, 10, 0.5]])
    assert tools.nms(boxes, 0.3, "union").tolist() == [2]
    assert tools_loop.nms(boxes, 0.3, "union").tolist() == [2]


@pytest.mark.parametrize("mode,threshold", [("union", 0.5), ("union", 0.7), ("min", 0.7)])
def test_nms_vectorised_equals_loop(mode, threshold):
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 150, max_xy=120, score_levels=20)
    np.testing.assert_array_equal(tools.nms(boxes, threshold, mode), tools_loop.nms(boxes, threshold, mode))


@pytest.mark.parametrize("mode,threshold", [("union", 0.5), ("union", 0.7), ("union", 0.3), ("min", 0.7)])
def test_large_set_nms_paths_equal_greedy_nms(mode, threshold):
    """The paths for large sets (spatial grid; sparse overlapping pairs in union mode) pick exactly
    what the plain greedy loop picks."""
    rng = np.random.default_rng(2)
    mixed = _random_boxes(rng, 3000, max_xy=600, min_side=3, max_side=300, score_levels=50)
    # A P-Net-like set: same-size squares on a stride-2/s grid, as one pyramid level gives.
    s = 0.83
    xs, ys = np.meshgrid(np.arange(60), np.arange(50))
    grid = np.column_stack([np.trunc((2 * xs.ravel() + 1) / s), np.trunc((2 * ys.ravel() + 1) / s),
                            np.trunc((2 * xs.ravel() + 12) / s), np.trunc((2 * ys.ravel() + 12) / s),
                            rng.uniform(0.6, 1, xs.size)])
    degenerate = np.array([[5, 5, 2, 2, 0.99], [7, 7, 7, 7, 0.98]])  # zero area: never overlap
    for boxes in (mixed, grid, np.concatenate([grid, degenerate])):
        order = np.argsort(boxes[:, 4], kind="stable")[::-1]
        ranked = boxes[order, :4]
        greedy = tools._greedy_nms_sorted(ranked, threshold, mode)
        np.testing.assert_array_equal(tools._grid_nms_sorted(ranked, threshold, mode), greedy)
        if mode == "union":
            np.testing.assert_array_equal(tools._pairs_nms_sorted(ranked, threshold), greedy)
        assert len(boxes) >= tools.GRID_NMS_MIN_BOXES  # nms() itself takes the grid path here


def test_crowded_nms_is_exact_and_memory_light():
    """More P-Net-like candidates than a 16-bit index can count (66,560): the result is a valid greedy
    NMS (every dropped box overlaps a better kept one, no two kept boxes overlap), and the peak memory
    stays far below that of an N x N matrix (35 GB as float64, 4.4 GB even as bool)."""
    import tracemalloc

    rng = np.random.default_rng(3)
    s = 1.2
    xs, ys = np.meshgrid(np.arange(260), np.arange(256))
    boxes = np.column_stack([np.trunc((2 * xs.ravel() + 1) / s), np.trunc((2 * ys.ravel() + 1) / s),
                             np.trunc((2 * xs.ravel() + 12) / s), np.trunc((2 * ys.ravel() + 12) / s),
                             rng.uniform(0.5, 1, xs.size)])
    assert len(boxes) > 2**16
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        keep = tools.nms(boxes, 0.5, "union")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 512 * 2**20
    assert keep.max() >= 2**16  # indices past 16 bits come back intact (checked below like the others)
    assert 0 < len(keep) < len(boxes) and len(np.unique(keep)) == len(keep)
    kept = boxes[keep]
    for k in rng.choice(len(keep), 200, replace=False):  # kept boxes do not overlap better kept ones
        assert np.all(iou_one_to_many(kept[k], kept[:k], pixel_offset=1) <= 0.5)
    dropped = np.setdiff1d(np.arange(len(boxes)), keep)
    for d in rng.choice(dropped, 200, replace=False):
        better = kept[kept[:, 4] >= boxes[d, 4]]
        assert np.any(iou_one_to_many(boxes[d], better, pixel_offset=1) > 0.5)


def test_regression_rerec_pad_hand_values():
    b = np.array([[10, 20, 30, 60, 0.9, 0.1, 0.0, -0.1, 0.5]])
    # P-Net: w = x2 - x1 = 20, h = 40.
    np.testing.assert_allclose(tools.regress_pnet(b), [[12, 20, 28, 80, 0.9]])
    # R/O-Net: w = x2 - x1 + 1 = 21, h = 41.
    np.testing.assert_allclose(tools.bbreg(b[:, :5], [[0.1, 0.0, -0.1, 0.5]]), [[12.1, 20, 27.9, 80.5, 0.9]])
    # rerec: 20 x 40 box -> 40 x 40 square on the same centre (20, 40).
    np.testing.assert_allclose(tools.rerec(b[:, :5]), [[0, 20, 40, 60, 0.9]])
    # pad (the official pad.m, which the loop oracle's crops follow): a box sticking out left/top and
    # right/bottom of a 50 x 40 image.
    dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = tools_loop.pad_one(np.array([-4, 0, 54, 45, 1.0]), 50, 40)
    assert (tmpw, tmph) == (59, 46)
    assert (dx, x, edx, ex) == (6, 1, 55, 50)
    assert (dy, y, edy, ey) == (2, 1, 41, 40)
    assert edx - dx == ex - x and edy - dy == ey - y


def test_refinement_steps_vectorised_equal_loop():
    rng = np.random.default_rng(4)
    boxes = _random_boxes(rng, 300, max_xy=300, max_side=120)
    reg = rng.normal(0, 0.2, (300, 4))
    pnet = np.column_stack([boxes, reg])
    np.testing.assert_array_equal(tools.regress_pnet(pnet), tools_loop.regress_pnet(pnet))
    np.testing.assert_array_equal(tools.bbreg(boxes, reg), tools_loop.bbreg(boxes, reg))
    np.testing.assert_array_equal(tools.rerec(boxes), tools_loop.rerec(boxes))
    points = rng.uniform(0, 1, (300, 10))
    np.testing.assert_allclose(tools.onet_landmarks(boxes, points),
                               [tools_loop.onet_landmarks(b, p) for b, p in zip(boxes, points)], rtol=0, atol=1e-12)


def test_crop_patches_pad_with_zeros_and_equal_loop():
    rng = np.random.default_rng(5)
    image = rng.integers(1, 256, (40, 50, 3), dtype=np.uint8)  # no zero pixels: padding is visible
    boxes = np.array([[1, 1, 50, 40, 1], [-9, -9, 10, 10, 1], [41, 31, 60, 50, 1], [100, 100, 119, 119, 1],
                      [5, 7, 5, 7, 1]], dtype=np.float64)
    patches = tools.crop_patches(image, boxes, 24)
    assert patches.shape == (5, 24, 24, 3) and patches.dtype == np.uint8
    whole = tools.crop_patches(image, boxes[:1], 50)[0]
    assert np.array_equal(tools.crop_patches(image, np.array([[1, 1, 50, 40, 1]]), 24)[0], patches[0])
    assert whole.shape == (50, 50, 3)
    # Box 1 starts 10 px above/left of the image: the top-left quarter of its patch is padding (0).
    assert np.all(patches[1, :10, :10] == 0) and np.all(patches[1, 14:, 14:] > 0)
    assert np.all(patches[3] == 0)  # entirely outside the image
    assert np.all(patches[4] == image[6, 4])  # a single pixel, upsampled
    for k, b in enumerate(boxes):
        np.testing.assert_array_equal(patches[k], tools_loop.crop_patch(image, b, 24))
    assert tools.valid_crop_mask(np.array([[5, 5, 3, 9, 1], [5, 5, 5, 5, 1]])).tolist() == [False, True]


def test_iou_with_precomputed_areas_is_the_same():
    rng = np.random.default_rng(6)
    boxes = _random_boxes(rng, 50)
    for mode in ("union", "min"):
        a = iou_one_to_many(boxes[0], boxes, mode=mode, pixel_offset=1)
        b = iou_one_to_many(boxes[0], boxes, mode=mode, pixel_offset=1, boxes_area=box_area(boxes, 1))
        np.testing.assert_array_equal(a, b)
        assert a[0] == 1.0


@pytest.mark.parametrize("mode,threshold", [("union", 0.5), ("union", 0.7), ("union", 0.0), ("min", 0.7)])
def test_small_set_dense_nms_equals_greedy_loop(mode, threshold):
    """The all-pairs path for small sets (what nms() runs below GRID_NMS_MIN_BOXES) picks exactly what the
    greedy loop with one overlap call per kept box picks, ties and degenerate boxes included."""
    rng = np.random.default_rng(4)
    for n in (1, 2, 17, 120, tools.GRID_NMS_MIN_BOXES - 1):
        boxes = _random_boxes(rng, n, max_xy=100, score_levels=8)
        boxes = np.concatenate([boxes, [[5, 5, 2, 2, 0.5], [7, 7, 7, 7, 0.5]]])  # zero / one-pixel areas
        ranked = boxes[np.argsort(boxes[:, 4], kind="stable")[::-1], :4]
        dense = tools._dense_nms_sorted(ranked, threshold, mode)
        np.testing.assert_array_equal(dense, tools._greedy_nms_sorted(ranked, threshold, mode))
        if len(boxes) < tools.GRID_NMS_MIN_BOXES:
            np.testing.assert_array_equal(tools.nms(boxes, threshold, mode), tools_loop.nms(boxes, threshold, mode))
