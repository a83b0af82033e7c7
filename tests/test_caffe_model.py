"""caffe_model: the one prototxt-vs-caffemodel validation (blob shapes, net structure), against real Caffe."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from caffe_common import model_files as cm
from caffe_common import merge_bn as mb
from mtcnn_caffe.nets import weights as mw
from tests.conftest import REPO_ROOT, write_prototxt

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param { num_output: 5 } }
"""


def saved_weights(caffe, prototxt: str, path) -> str:
    net = caffe.Net(prototxt, caffe.TEST)
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(size=blob.data.shape)
    net.save(str(path))
    return str(path)


def test_legacy_blob_rule_is_caffes(caffe):
    pb2 = cm.caffe_pb2()
    modern = pb2.BlobProto()
    modern.shape.dim.extend([5, 36])
    legacy = pb2.BlobProto(num=1, channels=1, height=5, width=36)
    both = pb2.BlobProto(num=1, channels=1, height=5, width=36)
    both.shape.dim.extend([7])  # Caffe reads the legacy fields whenever one of them is set
    empty = pb2.BlobProto()  # no shape and no legacy field: a 0-D blob (one value) for Caffe
    assert cm.blob_shape(modern) == (5, 36) and not cm.is_legacy_blob(modern)
    assert cm.blob_shape(legacy) == cm.blob_shape(both) == (1, 1, 5, 36)
    assert cm.blob_shape(empty) == ()
    assert cm.shape_equals((5, 36), legacy) and cm.shape_equals((5, 36), both)  # right-aligned, padded with 1s
    assert not cm.shape_equals((36, 5), legacy) and not cm.shape_equals((1, 5, 36), modern)
    assert not cm.shape_equals((2, 1, 1, 5, 36), legacy)  # more than 4 axes never match a legacy blob


def test_structure_is_checked_before_caffe_builds_the_net(caffe, tmp_path):
    bad_bottom = write_prototxt(tmp_path, NET.replace('bottom: "c" top: "fc"', 'bottom: "nope" top: "fc"'), "b.prototxt")
    with pytest.raises(cm.CaffeModelError, match=r"b\.prototxt: layer 'fc' reads blob 'nope'"):
        cm.load_net(bad_bottom)
    unknown = write_prototxt(tmp_path, NET.replace('type: "ReLU"', 'type: "NoSuchLayer"'), "u.prototxt")
    with pytest.raises(cm.CaffeModelError, match=r"u\.prototxt: .*'relu' \(NoSuchLayer\)"):
        cm.load_net(unknown)
    # A blob written only by a TRAIN-phase layer does not exist in the TEST net Caffe builds.
    train_only = NET.replace('layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }',
                             'layer { name: "side" type: "ReLU" bottom: "c" top: "s" include { phase: TRAIN } }\n'
                             'layer { name: "use" type: "ReLU" bottom: "s" top: "t" }')
    with pytest.raises(cm.CaffeModelError, match="layer 'use' reads blob 's'"):
        cm.load_net(write_prototxt(tmp_path, train_only, "t.prototxt"))
    excluded = train_only.replace('bottom: "s" top: "t" }', 'bottom: "s" top: "t" include { phase: TRAIN } }')
    net = cm.load_net(write_prototxt(tmp_path, excluded, "ok.prototxt"))  # both layers left out in TEST
    assert "side" not in net._layer_names and "use" not in net._layer_names and "fc" in net.blobs


def test_caffe_itself_aborts_on_what_load_net_refuses(caffe, tmp_path):
    """The reason for the Python checks: real Caffe kills the process on an unknown bottom blob."""
    bad = write_prototxt(tmp_path, NET.replace('bottom: "c" top: "fc"', 'bottom: "nope" top: "fc"'))
    code = ("from caffe_common.env import import_caffe; caffe = import_caffe(); "
            f"caffe.Net({bad!r}, caffe.TEST); print('built')")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "built" not in run.stdout


def test_weight_problems_follow_caffes_loading_rules(caffe, tmp_path):
    prototxt = write_prototxt(tmp_path, NET)
    model_path = saved_weights(caffe, prototxt, tmp_path / "w.caffemodel")
    net = cm.read_net_prototxt(prototxt)
    built = cm.load_net(prototxt, net)
    good = cm.weights_by_layer(cm.read_caffemodel(model_path))
    assert cm.weight_problems(net, good, built) == []
    assert cm.weight_problems(net, good) == []

    loaded = cm.load_net_with_weights(prototxt, model_path)  # (legacy 4-D caffemodels: tests/test_merge_bn.py)
    reference = caffe.Net(prototxt, caffe.TEST, weights=model_path)
    np.testing.assert_array_equal(loaded.params["fc"][0].data, reference.params["fc"][0].data)

    # Blobs for a layer that has none (Caffe: "Incompatible number of blobs"), a short blob, a missing layer.
    broken = cm.read_caffemodel(model_path)
    relu = broken.layer.add(name="relu", type="ReLU")
    relu.blobs.add().CopyFrom(broken.layer[1].blobs[1])
    fc = next(layer for layer in broken.layer if layer.name == "fc")
    del fc.blobs[1].data[-1]
    conv = next(layer for layer in broken.layer if layer.name == "conv")
    conv.name = "conv_old"
    problems = cm.weight_problems(net, cm.weights_by_layer(broken), built)
    assert problems == [
        "layer 'conv' (Convolution) has no weights in the .caffemodel (renamed layer, or weights of another network?)",
        "layer 'relu' (ReLU): the prototxt expects 0 blob(s), the .caffemodel has 1",
        "layer 'fc' blob 1: 4 values for shape (5,)",
    ]


def test_detector_weights_and_merge_bn_give_the_same_verdict(caffe, tmp_path):
    """Both callers use the one implementation: the same mismatch, the same message, their own error type."""
    prototxt = write_prototxt(tmp_path, NET)
    model_path = saved_weights(caffe, prototxt, tmp_path / "w.caffemodel")
    wider = write_prototxt(tmp_path, NET.replace("num_output: 4", "num_output: 6"), "wide.prototxt")
    with pytest.raises(mw.WeightsMismatchError) as from_weights:
        mw.check_weights(wider, model_path)
    with pytest.raises(mb.MergeBNError) as from_merge:
        mb.load_caffe_net(wider, model_path)
    message = str(from_weights.value)
    assert message == str(from_merge.value)
    assert "layer 'conv' blob 0: the prototxt gives shape (6, 3, 3, 3), the .caffemodel (4, 3, 3, 3)" in message
    assert message.startswith(f"{model_path} vs {wider}")
    assert isinstance(from_weights.value, cm.CaffeModelError) and isinstance(from_weights.value, ValueError)
