"""MTCNN training layers in real Caffe: finite-difference gradients, blocked back-propagation (zero gradient
for samples without a label for the task), OHEM, and the batch-mixing data layer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtcnn_caffe.data import pack
from mtcnn_caffe.data.landmarks import LandmarkParams
from mtcnn_caffe.data.lmdb_io import RecordReader
from mtcnn_caffe.data.records import LABELS, landmarks_from_net_order, landmarks_to_net_order
from mtcnn_caffe.data.tasks import LandmarkTask, WiderCropTask, generate
from mtcnn_caffe.data.wider import CropParams
from mtcnn_caffe.net_input import images_to_blob
from mtcnn_caffe.train.batches import BatchPlan, BatchPlanError, Mix, split_counts

from .conftest import write_prototxt
from .gradients import analytic_gradient, numeric_gradient, python_loss_net
from .test_data_samples import make_landmarks, make_wider

REPO = Path(__file__).resolve().parents[1]
LAYERS = "caffe_common.loss_layers"
N = 12


def loss_net(tmp_path, caffe, layer: str, params: str, pred_dims, target_dims, name: str = "net.prototxt"):
    target = [] if layer == "OhemSoftmaxLoss" else [("target", target_dims)]
    inputs = [("pred", pred_dims), *target, ("label", (N,))]
    return python_loss_net(tmp_path, caffe, LAYERS, layer, params, inputs, name)


LABEL_CODES = np.array([1, 0, -1, -2, 1, -1, 0, -2, 1, 1, -1, 0], dtype=np.float32)


def test_masked_euclidean_gradient_and_blocked_rows(caffe, tmp_path):
    rng = np.random.default_rng(0)
    net = loss_net(tmp_path, caffe, "MaskedEuclideanLoss", '{"labels": [1, -1]}', (N, 4, 1, 1), (N, 4))
    net.blobs["pred"].data[...] = rng.normal(size=(N, 4, 1, 1))
    net.blobs["target"].data[...] = rng.normal(size=(N, 4))
    net.blobs["label"].data[...] = LABEL_CODES
    mask = np.isin(LABEL_CODES, [1, -1])
    expected = ((net.blobs["pred"].data.reshape(N, 4) - net.blobs["target"].data) ** 2)[mask].sum() / (2 * mask.sum())
    assert net.forward()["loss"][0] == pytest.approx(expected, rel=1e-5)  # the top holds the unweighted loss
    analytic = analytic_gradient(net, "pred")
    np.testing.assert_allclose(analytic, numeric_gradient(net, "pred"), rtol=2e-3, atol=2e-4)
    assert np.all(analytic[~mask] == 0)          # neg and landmark samples: exactly no box gradient
    assert np.all(np.abs(analytic[mask]) > 0)


def test_masked_euclidean_with_no_labelled_rows_is_zero(caffe, tmp_path):
    net = loss_net(tmp_path, caffe, "MaskedEuclideanLoss", '{"labels": [-2]}', (N, 10), (N, 10))
    net.blobs["pred"].data[...] = 1.0
    net.blobs["label"].data[...] = 0
    assert net.forward()["loss"][0] == 0
    assert np.all(analytic_gradient(net, "pred") == 0)


def test_ohem_gradient_keeps_only_the_hardest_labelled_samples(caffe, tmp_path):
    rng = np.random.default_rng(1)
    net = loss_net(tmp_path, caffe, "OhemSoftmaxLoss", '{"keep": 0.7}', (N, 2, 1, 1), (N,))
    net.blobs["pred"].data[...] = rng.normal(scale=2, size=(N, 2, 1, 1))
    cls = np.where(LABEL_CODES >= 0, LABEL_CODES, -1)
    net.blobs["label"].data[...] = cls
    logits = net.blobs["pred"].data.reshape(N, 2).astype(np.float64)
    log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    valid = np.flatnonzero(cls >= 0)
    losses = -log_prob[valid, cls[valid].astype(int)]
    kept = valid[np.argsort(-losses)[:int(np.ceil(0.7 * len(valid)))]]
    assert net.forward()["loss"][0] == pytest.approx(np.sort(losses)[::-1][:len(kept)].mean(), rel=1e-5)
    analytic = analytic_gradient(net, "pred")
    np.testing.assert_allclose(analytic, numeric_gradient(net, "pred"), rtol=2e-3, atol=2e-4)
    dropped = np.setdiff1d(np.arange(N), kept)
    assert np.all(analytic[dropped] == 0) and np.all(np.abs(analytic[kept]) > 0)
    assert np.all(analytic[LABEL_CODES < 0] == 0)   # part and landmark samples: no classification gradient


def test_ohem_keep_all_equals_caffes_softmax_with_ignore_label(caffe, tmp_path):
    rng = np.random.default_rng(2)
    ours = loss_net(tmp_path, caffe, "OhemSoftmaxLoss", '{"keep": 1.0}', (N, 2, 1, 1), (N,))
    text = f"""
force_backward: true
layer {{ name: "in" type: "Input" top: "pred" top: "label" input_param {{ shape {{ dim: {N} dim: 2 dim: 1 dim: 1 }} shape {{ dim: {N} }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "pred" bottom: "label" top: "loss" loss_weight: 0.5
  loss_param {{ ignore_label: -1 normalization: VALID }} }}
"""
    theirs = caffe.Net(write_prototxt(tmp_path, text, "caffe.prototxt"), caffe.TRAIN)
    logits = rng.normal(scale=3, size=(N, 2, 1, 1))
    cls = np.where(LABEL_CODES >= 0, LABEL_CODES, -1)
    for net in (ours, theirs):
        net.blobs["pred"].data[...] = logits
        net.blobs["label"].data[...] = cls
    assert ours.forward()["loss"].flat[0] == pytest.approx(theirs.forward()["loss"].flat[0], rel=1e-5)
    np.testing.assert_allclose(analytic_gradient(ours, "pred"), analytic_gradient(theirs, "pred"), rtol=1e-5, atol=1e-7)


def test_landmark_order_conversion_is_one_permutation():
    interleaved = np.arange(10, dtype=np.float32)  # x1 y1 x2 y2 ... x5 y5 = 0 1 2 ... 9
    net_order = landmarks_to_net_order(interleaved)
    np.testing.assert_array_equal(net_order, [0, 2, 4, 6, 8, 1, 3, 5, 7, 9])
    np.testing.assert_array_equal(landmarks_from_net_order(net_order), interleaved)


def test_mix_counts_and_parse_errors():
    assert Mix().counts(384) == {"neg": 164, "pos": 55, "part": 55, "landmark": 110}  # largest remainders
    assert sum(Mix.parse("3:1:1:0").counts(7).values()) == 7
    for bad in ("3:1:1", "a:1:1:1", "0:0:0:0", "-1:1:1:1", "nan:1:1:1"):
        with pytest.raises(BatchPlanError):
            Mix.parse(bad)


def test_batch_plan_is_a_function_of_seed_and_iteration():
    labels = np.repeat(np.array([0, 1, -1, -2], dtype=np.float32), [30, 10, 12, 20])
    plan = BatchPlan(labels, len(labels), Mix(), 14, seed=5)
    first = [plan.indices(i) for i in range(20)]
    again = BatchPlan(labels, len(labels), Mix(), 14, seed=5)
    assert all(np.array_equal(a, again.indices(i)) for i, a in reversed(list(enumerate(first))))
    batch = first[0]
    assert [int(np.sum(labels[batch] == LABELS[t])) for t in ("neg", "pos", "part", "landmark")] == [6, 2, 2, 4]
    # one pass over the 10 positives takes 5 iterations and shows each exactly once
    seen = np.concatenate([b[6:8] for b in first[:5]])
    assert sorted(seen) == list(range(30, 40))
    with pytest.raises(BatchPlanError, match="needs landmark samples"):
        BatchPlan(labels[:52], 52, Mix(), 14)


@pytest.fixture(scope="module")
def pack12(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainpack")
    anno, images = make_wider(root / "wider")
    lst, lm_root = make_landmarks(root / "lm")
    generate(WiderCropTask(anno, images, 12, CropParams()), root / "w12", jobs=1, progress=False)
    generate(LandmarkTask(lst, lm_root, 12, LandmarkParams()), root / "l12", jobs=1, progress=False)
    pack.pack_stage(12, [root / "w12", root / "l12"], root / "p12", ratio="all", progress=False)
    return root / "p12"


DATA_NET = """
layer {{ name: "data" type: "Python" top: "data" top: "label" top: "cls_label" top: "roi" top: "pts"
  python_param {{ module: "mtcnn_caffe.train.layers" layer: "MtcnnBatchLayer" param_str: '{params}' }} }}
"""


def test_batch_layer_feeds_mixed_batches_and_held_out_records(caffe, pack12, tmp_path):
    params = {"source": str(pack12), "batch_size": 35, "mix": "3:1:1:2", "seed": 3}
    net = caffe.Net(write_prototxt(tmp_path, DATA_NET.format(params=json.dumps(params))), caffe.TRAIN)
    with RecordReader(pack12) as reader:
        train_count, val_count = split_counts(len(reader))
        plan = BatchPlan(reader.read_labels(), train_count, Mix(), 35, seed=3)
        for iteration in range(3):
            net.forward()
            want = reader.read_indices(plan.indices(iteration))
            assert plan.indices(iteration).max() < train_count   # never a held-out record
            np.testing.assert_allclose(net.blobs["data"].data, images_to_blob(want["image"]), atol=1e-6)
            np.testing.assert_array_equal(net.blobs["label"].data, want["label"])
            np.testing.assert_allclose(net.blobs["pts"].data, landmarks_to_net_order(want["landmark"]))
            cls = net.blobs["cls_label"].data
            assert set(np.unique(cls)) <= {-1, 0, 1} and np.all(cls[want["label"] < 0] == -1)
            assert np.all(cls[want["label"] >= 0] == want["label"][want["label"] >= 0])
        layer = next(l for l in net.layers if hasattr(l, "set_iteration"))
        layer.set_iteration(1)   # a resumed run continues with the very batch of that iteration
        net.forward()
        np.testing.assert_array_equal(net.blobs["label"].data, reader.read_indices(plan.indices(1))["label"])
        val = {"source": str(pack12), "batch_size": 50, "split": "val"}
        vnet = caffe.Net(write_prototxt(tmp_path, DATA_NET.format(params=json.dumps(val)), "val.prototxt"), caffe.TEST)
        vnet.forward()
        expected = reader.read_indices(train_count + np.arange(50) % val_count)
        np.testing.assert_array_equal(vnet.blobs["label"].data, expected["label"])


def test_batch_layer_parameters_are_checked_with_clear_errors(tmp_path):
    from caffe_common.loss_layers import layer_params

    with pytest.raises(ValueError, match="must be JSON"):
        layer_params("MtcnnBatchLayer", "source: x")
    with pytest.raises(ValueError, match="must be a JSON object"):
        layer_params("MtcnnBatchLayer", "[1, 2]")
    with pytest.raises(FileNotFoundError, match="no data.mdb"):
        RecordReader(tmp_path)


def test_losses_moved_to_the_shared_module_still_load_from_the_mtcnn_module():
    # train nets written before the move name mtcnn_caffe.train.layers; the committed ones the shared module
    from caffe_common import loss_layers
    from mtcnn_caffe.train import layers

    assert layers.OhemSoftmaxLoss is loss_layers.OhemSoftmaxLoss
    assert layers.MaskedEuclideanLoss is loss_layers.MaskedEuclideanLoss


def test_committed_training_prototxts_equal_generator(caffe, tmp_path):
    from mtcnn_caffe.nets.train import committed_training_files

    committed = REPO / "prototxt" / "mtcnn"
    for path in committed_training_files(tmp_path):
        assert path.read_text() == (committed / path.name).read_text(), "regenerate with `python -m mtcnn_caffe.nets`"
