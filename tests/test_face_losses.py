"""The face network's loss side in real Caffe: SSD-style mined softmax and masked smooth L1 (finite-difference
gradients, Caffe's own layers as oracles, blocked rows), prior matching and encoding (checked against
Caffe's PriorBox and DetectionOutput), and the target layer feeding the losses in one net."""
from __future__ import annotations

import json

import numpy as np
import pytest

from caffe_common.boxes import iou_matrix
from ssd_mobilenet.faces import targets as T

from .conftest import write_prototxt
from .gradients import LOSS_WEIGHT, analytic_gradient, numeric_gradient, python_loss_net

LOSSES = "caffe_common.loss_layers"
IMAGES, PRIORS, CLASSES = 2, 16, 3
ROWS = IMAGES * PRIORS


def row_losses(logits: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Softmax cross-entropy per row (float64), 0 for ignored rows: the test's own oracle."""
    logits = logits.reshape(len(label), -1).astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return np.array([-log_prob[i, int(c)] if c >= 0 else 0.0 for i, c in enumerate(label)])


def hardest_negatives(losses: np.ndarray, label: np.ndarray, count: int) -> set[int]:
    negatives = [i for i in range(len(label)) if label[i] == 0]
    return set(sorted(negatives, key=lambda i: -losses[i])[:count])


def mined_net(tmp_path, caffe, params: dict, logits_dims=(IMAGES, PRIORS * CLASSES), name="mined.prototxt"):
    return python_loss_net(tmp_path, caffe, LOSSES, "OhemSoftmaxLoss", json.dumps(params),
                           [("pred", logits_dims), ("label", (ROWS,))], name)


def ssd_labels() -> np.ndarray:
    """Image 0: three positives (classes 1, 1, 2); image 1: one positive; two ignored rows; 26 negatives."""
    label = np.zeros(ROWS, dtype=np.float32)
    label[[2, 5, 9]] = [1, 1, 2]
    label[20] = 1
    label[[7, 25]] = -1
    return label


def test_mined_softmax_keeps_positives_and_the_hardest_ratio_of_negatives(caffe, tmp_path):
    rng = np.random.default_rng(3)
    net = mined_net(tmp_path, caffe, {"neg_pos_ratio": 3})
    label = ssd_labels()
    net.blobs["pred"].data[...] = rng.normal(scale=2, size=net.blobs["pred"].data.shape)
    net.blobs["label"].data[...] = label
    losses = row_losses(net.blobs["pred"].data, label)
    positives = set(np.flatnonzero(label > 0))
    count = min(int((label == 0).sum()), 3 * len(positives))          # 12 of 26
    hardest = hardest_negatives(losses, label, count)
    ranked = np.sort(losses[label == 0])[::-1]
    assert ranked[count - 1] - ranked[count] > 0.01   # the selection is stable under the finite differences
    kept = sorted(positives | hardest)
    assert net.forward()["loss"][0] == pytest.approx(losses[kept].mean(), rel=1e-5)   # normalised by the kept count
    analytic = analytic_gradient(net, "pred").reshape(ROWS, CLASSES)
    np.testing.assert_allclose(analytic, numeric_gradient(net, "pred").reshape(ROWS, CLASSES), rtol=2e-3, atol=2e-4)
    with_gradient = set(np.flatnonzero(np.abs(analytic).sum(1) > 0))
    assert with_gradient == set(kept) and len(with_gradient - positives) == count
    assert np.all(analytic[label < 0] == 0) and np.all(analytic[sorted(set(range(ROWS)) - set(kept))] == 0)


def kept_rows(net, label: np.ndarray, logits: np.ndarray) -> set[int]:
    net.blobs["pred"].data[...] = logits
    net.blobs["label"].data[...] = label
    return set(np.flatnonzero(np.abs(analytic_gradient(net, "pred").reshape(len(label), -1)).sum(1) > 0))


def test_mined_softmax_counts_min_neg_and_per_image(caffe, tmp_path):
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=2, size=(IMAGES, PRIORS * CLASSES))
    label = ssd_labels()
    losses = row_losses(logits, label)
    positives = set(np.flatnonzero(label > 0))
    # a ratio beyond the negatives available keeps them all
    assert kept_rows(mined_net(tmp_path, caffe, {"neg_pos_ratio": 10}, name="a.prototxt"), label, logits) == \
        set(np.flatnonzero(label >= 0))
    # no positives: nothing (min_neg 0, loss 0) or the min_neg hardest negatives
    background = np.where(label > 0, 0, label).astype(np.float32)
    none = mined_net(tmp_path, caffe, {"neg_pos_ratio": 3}, name="b.prototxt")
    assert kept_rows(none, background, logits) == set() and none.blobs["loss"].data[0] == 0
    some = mined_net(tmp_path, caffe, {"neg_pos_ratio": 3, "min_neg": 5}, name="c.prototxt")
    assert kept_rows(some, background, logits) == hardest_negatives(row_losses(logits, background), background, 5)
    # per image: image 0 (3 positives) keeps its 9 hardest negatives, image 1 (1 positive) its 3
    per_image = mined_net(tmp_path, caffe, {"neg_pos_ratio": 3, "per_image": True}, name="d.prototxt")
    first = np.where(np.arange(ROWS) < PRIORS, label, -1)
    second = np.where(np.arange(ROWS) >= PRIORS, label, -1)
    expected = positives | hardest_negatives(losses, first, 9) | hardest_negatives(losses, second, 3)
    assert kept_rows(per_image, label, logits) == expected
    # non-integer ratio: floor(1.5 * 4) = 6 negatives
    assert len(kept_rows(mined_net(tmp_path, caffe, {"neg_pos_ratio": 1.5}, name="e.prototxt"), label, logits)
               - positives) == 6


def test_mined_softmax_with_every_negative_kept_equals_caffes_softmax(caffe, tmp_path):
    rng = np.random.default_rng(5)
    ours = mined_net(tmp_path, caffe, {"neg_pos_ratio": 100}, (ROWS, CLASSES))
    text = f"""
force_backward: true
layer {{ name: "in" type: "Input" top: "pred" top: "label"
  input_param {{ shape {{ dim: {ROWS} dim: {CLASSES} }} shape {{ dim: {ROWS} }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "pred" bottom: "label" top: "loss" loss_weight: {LOSS_WEIGHT}
  loss_param {{ ignore_label: -1 normalization: VALID }} }}
"""
    theirs = caffe.Net(write_prototxt(tmp_path, text, "caffe.prototxt"), caffe.TRAIN)
    logits = rng.normal(scale=3, size=(ROWS, CLASSES))
    for net in (ours, theirs):
        net.blobs["pred"].data[...] = logits
        net.blobs["label"].data[...] = ssd_labels()
    assert ours.forward()["loss"].flat[0] == pytest.approx(theirs.forward()["loss"].flat[0], rel=1e-5)
    np.testing.assert_allclose(analytic_gradient(ours, "pred"), analytic_gradient(theirs, "pred"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("params, message", [('{"keep": 0.7, "neg_pos_ratio": 3}', "not both"),
                                             ('{"min_neg": 2}', "go with 'neg_pos_ratio'"),
                                             ('{"neg_pos_ratio": -1}', "must be >= 0"),
                                             ('{"ratio": 3}', "unknown param_str keys")])
def test_mined_softmax_parameters_are_checked(caffe, tmp_path, params, message):
    with pytest.raises(ValueError, match=message):
        python_loss_net(tmp_path, caffe, LOSSES, "OhemSoftmaxLoss", params,
                        [("pred", (ROWS, CLASSES)), ("label", (ROWS,))])


def smooth_l1_inputs(rng, width: int):
    """Predictions whose differences to the targets stay away from the kink at |d| = 1 (finite differences)."""
    dims = (ROWS, width)
    size = np.where(rng.random(dims) < 0.5, rng.uniform(0.05, 0.9, dims), rng.uniform(1.1, 3, dims))
    label = np.where(rng.random(ROWS) < 0.4, 1, np.where(rng.random(ROWS) < 0.5, 0, -1)).astype(np.float32)
    target = rng.normal(size=dims)
    return target + size * rng.choice([-1, 1], dims), target, label


def test_masked_smooth_l1_gradient_and_blocked_rows(caffe, tmp_path):
    rng = np.random.default_rng(6)
    pred, target, label = smooth_l1_inputs(rng, 4)
    net = python_loss_net(tmp_path, caffe, LOSSES, "MaskedSmoothL1Loss", '{"labels": [1]}',
                          [("pred", (IMAGES, PRIORS * 4)), ("target", (ROWS, 4)), ("label", (ROWS,))])
    net.blobs["pred"].data[...] = pred.reshape(IMAGES, -1)   # an SSD head (N, P * 4) against row-wise targets
    net.blobs["target"].data[...] = target
    net.blobs["label"].data[...] = label
    mask = label == 1
    d = np.abs(net.blobs["pred"].data.reshape(ROWS, 4) - net.blobs["target"].data)
    expected = np.where(d < 1, 0.5 * d ** 2, d - 0.5)[mask].sum() / mask.sum()
    assert net.forward()["loss"][0] == pytest.approx(expected, rel=1e-5)
    analytic = analytic_gradient(net, "pred").reshape(ROWS, 4)
    np.testing.assert_allclose(analytic, numeric_gradient(net, "pred").reshape(ROWS, 4), rtol=2e-3, atol=2e-4)
    assert np.all(analytic[~mask] == 0) and np.all(np.abs(analytic[mask]) > 0)


def soft_target_net(caffe, tmp_path, rng, params: str = ""):
    """``SoftTargetLoss`` on SSD-shaped logits with random teacher distributions and :func:`ssd_labels`."""
    net = python_loss_net(tmp_path, caffe, LOSSES, "SoftTargetLoss", params,
                          [("pred", (IMAGES, PRIORS * 3)), ("target", (ROWS, 3)), ("label", (ROWS,))])
    net.blobs["pred"].data[...] = rng.normal(0, 2, (IMAGES, PRIORS * 3))
    target = rng.dirichlet([0.5, 0.5, 0.5], ROWS)
    target[3] = [1, 0, 0]                                   # a one-hot row (0 * log 0)
    net.blobs["target"].data[...] = target
    net.blobs["label"].data[...] = ssd_labels()
    return net


def test_soft_target_loss_is_kl_per_positive_with_its_gradient(caffe, tmp_path):
    net = soft_target_net(caffe, tmp_path, np.random.default_rng(11))
    logits = net.blobs["pred"].data.reshape(ROWS, 3).astype(np.float64)
    log_student = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = net.blobs["target"].data.astype(np.float64)
    kl = np.where(target > 0, target * (np.log(np.where(target > 0, target, 1)) - log_student), 0).sum()
    positives = int((ssd_labels() > 0).sum())
    assert positives == 4 and net.forward()["loss"][0] == pytest.approx(kl / positives, rel=1e-5)
    analytic = analytic_gradient(net, "pred").reshape(ROWS, 3)
    # float32 top: a loss summed over every row needs a wider step than eps 1e-3 (central differences: O(eps^2))
    numeric = numeric_gradient(net, "pred", eps=1e-2).reshape(ROWS, 3)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-4)
    assert np.all(np.abs(analytic).sum(1) > 0)              # every row, ignored and background ones too
    assert np.all(net.blobs["target"].diff == 0) and np.all(net.blobs["label"].diff == 0)
    # A student equal to its teacher: loss 0, no gradient.
    net.blobs["target"].data[...] = np.exp(log_student)
    assert abs(net.forward()["loss"][0]) < 1e-6
    assert np.abs(analytic_gradient(net, "pred")).max() < 1e-7
    # No positive row: normalised by 1, not divided by zero.
    net.blobs["label"].data[...] = 0
    assert np.isfinite(net.forward()["loss"][0])


def test_soft_target_loss_refuses_targets_that_are_not_distributions_and_params(caffe, tmp_path):
    net = soft_target_net(caffe, tmp_path, np.random.default_rng(12))
    net.blobs["target"].data[5] = [0.5, 0.7, 0.1]
    with pytest.raises(Exception, match="probability distribution"):
        net.forward()
    with pytest.raises(Exception, match="takes no param_str"):
        soft_target_net(caffe, tmp_path, np.random.default_rng(12), '{"temperature": 2}')


def test_masked_smooth_l1_equals_caffes_smooth_l1_with_mask_weights(caffe, tmp_path):
    """Caffe's SmoothL1Loss (two bottoms in this Caffe: no weights) on the selected rows (the others given
    their target, so zero difference) divides by all rows; ours by the selected rows."""
    rng = np.random.default_rng(7)
    pred, target, label = smooth_l1_inputs(rng, 10)
    inputs = [("pred", (ROWS, 10)), ("target", (ROWS, 10)), ("label", (ROWS,))]
    ours = python_loss_net(tmp_path, caffe, LOSSES, "MaskedSmoothL1Loss", '{"labels": [1]}', inputs)
    text = f"""
force_backward: true
layer {{ name: "in" type: "Input" top: "pred" top: "target"
  input_param {{ shape {{ dim: {ROWS} dim: 10 }} shape {{ dim: {ROWS} dim: 10 }} }} }}
layer {{ name: "loss" type: "SmoothL1Loss" bottom: "pred" bottom: "target" top: "loss"
  loss_weight: {LOSS_WEIGHT} propagate_down: true propagate_down: false }}
"""
    theirs = caffe.Net(write_prototxt(tmp_path, text, "caffe.prototxt"), caffe.TRAIN)
    for net in (ours, theirs):
        net.blobs["target"].data[...] = target
    ours.blobs["pred"].data[...] = pred
    ours.blobs["label"].data[...] = label
    theirs.blobs["pred"].data[...] = np.where((label == 1)[:, None], pred, target)
    share = (label == 1).sum() / ROWS
    assert ours.forward()["loss"][0] * share == pytest.approx(theirs.forward()["loss"].flat[0], rel=1e-5)
    np.testing.assert_allclose(analytic_gradient(ours, "pred") * share, analytic_gradient(theirs, "pred"),
                               rtol=1e-5, atol=1e-7)


# ---- matching and encoding (numpy) --------------------------------------------------------------------

def test_matching_is_bipartite_then_per_prediction():
    priors = np.array([[0.0, 0.0, 0.2, 0.2],      # 0: the tiny face's best prior (IoU 0.09)
                       [0.1, 0.1, 0.3, 0.3],      # 1: overlaps nothing
                       [0.5, 0.5, 0.7, 0.7],      # 2: both faces' best prior; the exact face takes it
                       [0.55, 0.55, 0.75, 0.75],  # 3: the second face's best free prior (IoU 0.566)
                       [0.49, 0.49, 0.69, 0.69],  # 4: IoU 0.822 with face 1, 0.566 with face 2 -> face 1
                       [0.6, 0.5, 0.8, 0.7]])     # 5: IoU 0.33 and 0.37: background
    faces = np.array([[0.02, 0.02, 0.08, 0.08], [0.5, 0.5, 0.7, 0.7], [0.52, 0.52, 0.72, 0.72],
                      [0.9, 0.0, 0.95, 0.05]])    # face 3 overlaps no prior: unmatched, as in Caffe
    np.testing.assert_array_equal(T.match_priors(priors, faces), [0, -1, 1, 2, 1, -1])
    np.testing.assert_array_equal(T.match_priors(priors, faces[:0]), [-1] * 6)


def greedy_bipartite(iou: np.ndarray) -> np.ndarray:
    """The definition, slowly: the best remaining pair (first in prior-major order on ties) until none overlaps."""
    pool = np.where(iou > 1e-6, iou, -1.0)
    matched = np.full(iou.shape[0], -1)
    while pool.size and pool.max() > 0:
        prior, box = np.unravel_index(np.argmax(pool), pool.shape)
        matched[prior] = box
        pool[prior, :] = pool[:, box] = -1
    return matched


def test_bipartite_pass_equals_the_greedy_definition_with_ties():
    rng = np.random.default_rng(11)
    for trial in range(200):
        priors, boxes = rng.integers(1, 30), rng.integers(1, 12)
        iou = np.round(rng.random((priors, boxes)) * rng.integers(2, 6), 0) / 5     # few values: many ties, zeros
        np.testing.assert_array_equal(T.bipartite_match(iou), greedy_bipartite(iou), err_msg=f"trial {trial}")
    assert np.all(T.bipartite_match(np.zeros((4, 0))) == -1) and T.bipartite_match(np.zeros((0, 3))).shape == (0,)


def test_every_face_gets_a_prior_and_every_good_prior_a_face():
    rng = np.random.default_rng(8)
    priors, faces = random_boxes(rng, 300, 0.05, 0.3), random_boxes(rng, 12, 0.02, 0.3)
    matched = T.match_priors(priors, faces)
    iou = iou_matrix(priors, faces)
    assert set(matched[matched >= 0]) == set(range(len(faces)))        # enough priors here for every face
    good = iou.max(1) >= 0.5
    assert np.all(matched[good] >= 0)
    below = matched[~good & (matched >= 0)]                             # matched below 0.5: the bipartite pass,
    assert len(below) == len(set(below))                                # at most one prior per face
    # a good prior takes its best face unless the bipartite pass gave it another (at most one per face)
    assert (matched[good] != iou.argmax(1)[good]).sum() <= len(faces) and (matched[good] == iou.argmax(1)[good]).any()


def random_boxes(rng, count: int, low: float, high: float) -> np.ndarray:
    centre = rng.uniform(0.1, 0.9, (count, 2))
    size = rng.uniform(low, high, (count, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def test_encode_decode_round_trip_and_the_documented_landmark_code():
    rng = np.random.default_rng(9)
    priors, boxes = random_boxes(rng, 50, 0.05, 0.5), random_boxes(rng, 50, 0.02, 0.6)
    variances = rng.uniform(0.05, 0.3, (50, 4))
    for v in (T.PRIOR_VARIANCE, variances):
        np.testing.assert_allclose(T.decode_boxes(priors, T.encode_boxes(priors, boxes, v), v), boxes, atol=1e-12)
    marks = rng.uniform(-0.1, 1.1, (50, 10))
    np.testing.assert_allclose(T.decode_landmarks(priors, T.encode_landmarks(priors, marks)), marks, atol=1e-12)
    prior = np.array([[0.2, 0.2, 0.4, 0.6]])     # centre (0.3, 0.4), size (0.2, 0.4)
    point = np.tile([0.35, 0.3], 5)[None]
    expected = np.tile([0.05 / 0.02, -0.1 / 0.04], 5)[None]   # (lx - pcx) / (pw * 0.1), (ly - pcy) / (ph * 0.1)
    np.testing.assert_allclose(T.encode_landmarks(prior, point), expected)


def face_truths() -> list[T.FaceTruth]:
    marks = np.array([[0.15, 0.2, 0.3, 0.2, 0.22, 0.27, 0.17, 0.33, 0.28, 0.33]])
    return [T.FaceTruth(np.array([[0.1, 0.1, 0.35, 0.4], [0.55, 0.5, 0.9, 0.95], [0.7, 0.05, 0.76, 0.12]]),
                        np.array([1, 2, 1]), np.vstack([marks, np.zeros((1, 10)), marks * 0.2 + 0.66]),
                        np.array([True, False, True])),
            T.FaceTruth.empty(),
            T.FaceTruth(np.array([[0.3, 0.3, 0.7, 0.75]]), np.array([1]), marks + 0.2, np.array([True]))]


def test_ground_truth_blob_round_trip_and_errors():
    truths = face_truths()
    blob = T.pack_ground_truth(truths)
    assert blob.shape == (1, 1, 4, T.GT_WIDTH) and T.GT_WIDTH == 17
    for mine, back in zip(truths, T.unpack_ground_truth(blob, 3)):
        np.testing.assert_allclose(back.boxes, mine.boxes, atol=1e-7)
        np.testing.assert_array_equal(back.kinds, mine.kinds)
        np.testing.assert_array_equal(back.has_landmarks, mine.has_landmarks)
        np.testing.assert_allclose(back.landmarks[back.has_landmarks], mine.landmarks[mine.has_landmarks], atol=1e-7)
    empty = T.pack_ground_truth([T.FaceTruth.empty()] * 2)
    assert empty.shape == (1, 1, 1, 17) and [len(t.kinds) for t in T.unpack_ground_truth(empty, 2)] == [0, 0]
    for column, value, message in ((0, 3, "row 2: item is not an image"), (1, 0, "row 2: kind is not"),
                                   (6, 0.5, "row 2: has_landmarks"), (4, 0.7, "row 2: box has no area"),
                                   (9, np.nan, "row 2: a value is not finite")):
        bad = blob.copy()
        bad[0, 0, 2, column] = value
        with pytest.raises(ValueError, match=message):
            T.unpack_ground_truth(bad, 3)
    with pytest.raises(ValueError, match=r"\(1, 1, rows, 17\)"):
        T.unpack_ground_truth(blob[..., :8], 3)


# ---- against Caffe's PriorBox and DetectionOutput ------------------------------------------------------

PRIOR_LAYERS = """
layer {{ name: "in" type: "Input" top: "data" top: "feature" {extra_tops}
  input_param {{ shape {{ dim: {n} dim: 3 dim: 64 dim: 64 }} shape {{ dim: {n} dim: 1 dim: 4 dim: 4 }}
                 {extra_shapes} }} }}
layer {{ name: "priors" type: "PriorBox" bottom: "feature" bottom: "data" top: "priors"
  prior_box_param {{ min_size: 16 max_size: 32 aspect_ratio: 2 flip: true clip: false
                     variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }} }}
"""
NUM_PRIORS = 4 * 4 * 4     # 4x4 cells, 4 boxes each (ratio 1, 2, 1/2, and sqrt(min * max))


def shape(*dims: int) -> str:
    return "shape { " + " ".join(f"dim: {d}" for d in dims) + " }"


def test_detection_output_decodes_the_encoded_boxes_to_the_ground_truth(caffe, tmp_path):
    text = PRIOR_LAYERS.format(n=1, extra_tops='top: "loc" top: "conf"',
                               extra_shapes=shape(1, NUM_PRIORS * 4) + shape(1, NUM_PRIORS * T.NUM_CLASSES)) + f"""
layer {{ name: "out" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "priors" top: "out"
  detection_output_param {{ num_classes: {T.NUM_CLASSES} share_location: true background_label_id: 0
    nms_param {{ nms_threshold: 0.45 top_k: 100 }} code_type: CENTER_SIZE keep_top_k: 50 confidence_threshold: 0.5 }} }}
"""
    net = caffe.Net(write_prototxt(tmp_path, text), caffe.TEST)
    net.forward()
    priors, variances = T.priors_from_blob(net.blobs["priors"].data)
    assert len(priors) == NUM_PRIORS and np.allclose(variances, T.PRIOR_VARIANCE)
    truth = face_truths()[0]
    target = T.prior_targets(priors, truth)
    matched = T.match_priors(priors, truth.boxes)
    assert (matched == 2).sum() == 1 and iou_matrix(priors, truth.boxes[2:]).max() < 0.5  # the tiny face: one prior
    conf = np.eye(T.NUM_CLASSES)[target["cls_label"].astype(int)] * 0.9 + 0.1 / T.NUM_CLASSES
    net.blobs["loc"].data[...] = target["box_target"].reshape(1, -1)
    net.blobs["conf"].data[...] = conf.reshape(1, -1)
    rows = net.forward()["out"][0, 0]
    rows = rows[np.lexsort((rows[:, 3], rows[:, 1]))]             # by label, then x1
    order = np.lexsort((truth.boxes[:, 0], truth.kinds))
    np.testing.assert_array_equal(rows[:, 1], truth.kinds[order])
    np.testing.assert_allclose(rows[:, 3:7], truth.boxes[order], atol=1e-5)


TARGET_NET = """
force_backward: true
layer {{ name: "targets" type: "Python" bottom: "priors" bottom: "gt" bottom: "data"
  top: "cls_label" top: "box_target" top: "box_label" top: "lmk_target" top: "lmk_label"
  python_param {{ module: "ssd_mobilenet.faces.layers" layer: "FacePriorTargetLayer"
                  param_str: '{{"overlap": 0.5}}' }} }}
layer {{ name: "loss_cls" type: "Python" bottom: "conf" bottom: "cls_label" top: "loss_cls"
  python_param {{ module: "{losses}" layer: "OhemSoftmaxLoss" param_str: '{{"neg_pos_ratio": 3}}' }} loss_weight: 1 }}
layer {{ name: "loss_box" type: "Python" bottom: "loc" bottom: "box_target" bottom: "box_label" top: "loss_box"
  python_param {{ module: "{losses}" layer: "MaskedSmoothL1Loss" param_str: '{{"labels": [1]}}' }} loss_weight: 1 }}
layer {{ name: "loss_lmk" type: "Python" bottom: "lmk" bottom: "lmk_target" bottom: "lmk_label" top: "loss_lmk"
  python_param {{ module: "{losses}" layer: "MaskedSmoothL1Loss" param_str: '{{"labels": [1]}}' }} loss_weight: 1 }}
"""


def target_net(caffe, tmp_path, truths: list[T.FaceTruth]):
    """The target layer and the three losses in one net, ground truth ``truths``, random head outputs."""
    gt = T.pack_ground_truth(truths)
    n = len(truths)
    tops = 'top: "gt" top: "conf" top: "loc" top: "lmk"'
    shapes = shape(*gt.shape) + shape(n, NUM_PRIORS * 3) + shape(n, NUM_PRIORS * 4) + shape(n, NUM_PRIORS * 10)
    text = PRIOR_LAYERS.format(n=n, extra_tops=tops, extra_shapes=shapes) + TARGET_NET.format(losses=LOSSES)
    net = caffe.Net(write_prototxt(tmp_path, text), caffe.TRAIN)
    rng = np.random.default_rng(10)
    net.blobs["gt"].data[...] = gt
    for blob in ("conf", "loc", "lmk"):
        net.blobs[blob].data[...] = rng.normal(size=net.blobs[blob].data.shape)
    return net


def test_target_layer_in_a_net_equals_the_numpy_targets_and_blocks_landmarks(caffe, tmp_path):
    truths = face_truths()
    n = len(truths)
    net = target_net(caffe, tmp_path, truths)
    net.forward()
    net.backward()
    priors, variances = T.priors_from_blob(net.blobs["priors"].data)
    gt = T.pack_ground_truth(truths)
    expected = T.batch_targets(priors, T.unpack_ground_truth(gt, n), variances)   # the float32 values the net saw
    for name in T.TARGET_NAMES:
        assert net.blobs[name].data.shape[0] == n * NUM_PRIORS
        np.testing.assert_array_equal(net.blobs[name].data, expected[name])
    cls, box, lmk = (expected[k] for k in ("cls_label", "box_label", "lmk_label"))
    assert set(np.unique(cls)) == {0, 1, 2} and box.sum() > lmk.sum() > 0   # the partial face has no landmarks
    assert np.all(cls[NUM_PRIORS:2 * NUM_PRIORS] == 0)                        # the image without faces
    has = {k: np.abs(net.blobs[k].diff.reshape(n * NUM_PRIORS, -1)).sum(1) > 0 for k in ("conf", "loc", "lmk")}
    np.testing.assert_array_equal(has["loc"], box == 1)
    np.testing.assert_array_equal(has["lmk"], lmk == 1)       # blocked: no landmark gradient elsewhere
    assert has["conf"].sum() == (cls > 0).sum() * 4 and np.all(has["conf"][cls > 0])


def with_ignore_region(truth: T.FaceTruth, box) -> T.FaceTruth:
    return T.FaceTruth(np.vstack([truth.boxes, [box]]), np.append(truth.kinds, T.IGNORE_KIND),
                       np.vstack([truth.landmarks, np.zeros((1, 10))]), np.append(truth.has_landmarks, False))


def test_ignore_regions_match_no_prior_and_only_take_unmatched_priors_out_of_the_loss():
    rng = np.random.default_rng(11)
    priors = random_boxes(rng, 400, 0.05, 0.3)
    truth = face_truths()[0]
    ignore_box = [0.05, 0.6, 0.12, 0.67]                         # far from the faces
    plain, ignored = T.prior_targets(priors, truth), T.prior_targets(priors, with_ignore_region(truth, ignore_box))
    near = iou_matrix(priors, np.array([ignore_box]))[:, 0] >= T.IGNORE_OVERLAP
    assert (near & (plain["cls_label"] == 0)).sum() >= 2
    matched = plain["cls_label"] > 0
    np.testing.assert_array_equal(ignored["cls_label"], np.where(near & ~matched, -1, plain["cls_label"]))
    for name in T.TARGET_NAMES[1:]:                             # boxes and landmarks: as without the region
        np.testing.assert_array_equal(ignored[name], plain[name])
    # a prior matched to a face keeps its label even where an ignore region overlaps it
    on_face = T.prior_targets(priors, with_ignore_region(truth, truth.boxes[0] + [0.02, 0.02, 0.0, 0.0]))
    assert np.all(on_face["cls_label"][matched] == plain["cls_label"][matched])
    assert (on_face["cls_label"] == -1).any()
    # an image holding only ignore regions has no positive and no box target
    alone = T.prior_targets(priors, T.FaceTruth(np.array([ignore_box]), np.array([T.IGNORE_KIND]),
                                                np.zeros((1, 10)), np.zeros(1, bool)))
    assert set(np.unique(alone["cls_label"])) == {-1, 0} and not alone["box_label"].any()


def test_ignored_priors_are_never_mined_as_negatives_in_caffe(caffe, tmp_path):
    truths = face_truths()
    truths[0] = with_ignore_region(truths[0], [0.02, 0.55, 0.14, 0.67])
    net = target_net(caffe, tmp_path, truths)
    net.forward()
    cls = net.blobs["cls_label"].data.copy()
    assert (cls == -1).sum() >= 2
    conf = net.blobs["conf"].data.reshape(-1, 3)
    conf[cls == -1] = [-20.0, 20.0, 0.0]   # the most face-like rows: the hardest negatives, were they negatives
    net.forward()
    net.backward()
    touched = np.abs(net.blobs["conf"].diff.reshape(-1, 3)).sum(1) > 0
    assert not touched[cls == -1].any()
    assert touched.sum() == (cls > 0).sum() * 4            # positives and three times as many negatives


def test_target_layer_refuses_a_bad_ground_truth_row(caffe, tmp_path):
    truths = face_truths()
    gt = T.pack_ground_truth(truths)
    gt[0, 0, 1, 1] = 5
    text = PRIOR_LAYERS.format(n=3, extra_tops='top: "gt"', extra_shapes=shape(*gt.shape)) + """
layer { name: "targets" type: "Python" bottom: "priors" bottom: "gt" bottom: "data"
  top: "cls_label" top: "box_target" top: "box_label" top: "lmk_target" top: "lmk_label"
  python_param { module: "ssd_mobilenet.faces.layers" layer: "FacePriorTargetLayer" } }
"""
    net = caffe.Net(write_prototxt(tmp_path, text), caffe.TRAIN)
    net.blobs["gt"].data[...] = gt
    with pytest.raises(ValueError, match="ground-truth row 1: kind is not 1"):
        net.forward()
