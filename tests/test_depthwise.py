"""The native depthwise convolution layer (the project's Caffe patch) and caffe_common.depthwise, in real Caffe.

The layer equals grouped ``Convolution`` (group = channels) forward and in all three gradients, over the
geometry options; its gradients match finite differences; it refuses what it cannot compute, by name. The
reference MobileNet-SSD deploy nets converted to the native layer give the grouped originals' outputs with
the same caffemodel; the converter round-trips; gen-model, merge_bn and the opencv backend take native nets.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_common import depthwise
from caffe_common.backends import read_opencv_net
from caffe_common.merge_bn import load_caffe_net, merge_bn, verify_nets
from caffe_common.model_files import NetProbeError, probe_net, read_net_prototxt
from ssd_mobilenet import model
from ssd_mobilenet.cli import main
from ssd_mobilenet.detect import SsdDetector
from tests.conftest import write_prototxt
from tests.gradients import central_differences
from tests.test_ssd_detect import assert_same_detections, random_weights

REFERENCE = Path("reference") / "mobilenet_ssd"
NATIVE = depthwise.NATIVE_TYPE


@pytest.fixture(scope="module")
def native_caffe(caffe):
    """pycaffe with the native layer (fails with the remedy when the build predates the patch)."""
    if not depthwise.has_native_depthwise():
        pytest.fail("this Caffe was built without scripts/caffe_build/patches/depthwise_conv: run `make setup`")
    return caffe


# --------------------------------------------------------------------------- the layer against grouped Convolution
def _layer_net(layer_type: str, shape: tuple[int, ...], conv_param: str, bottoms: int = 1) -> str:
    inputs = "".join(f"shape {{ {' '.join(f'dim: {d}' for d in shape)} }} " for _ in range(bottoms))
    tops = "".join(f'top: "x{k}" ' for k in range(bottoms))
    conv_bottoms = "".join(f'bottom: "x{k}" ' for k in range(bottoms))
    conv_tops = "".join(f'top: "y{k}" ' for k in range(bottoms))
    return f"""name: "dw" force_backward: true
layer {{ name: "data" type: "Input" {tops} input_param {{ {inputs} }} }}
layer {{ name: "conv" type: "{layer_type}" {conv_bottoms} {conv_tops}
  convolution_param {{ {conv_param} weight_filler {{ type: "gaussian" std: 0.5 }}
                       bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
"""


def _nets(caffe, tmp_path, shape, conv_param, bottoms=1, native_type=NATIVE):
    """(grouped Convolution net, native net) with the same random parameters."""
    grouped_param = conv_param if "group:" in conv_param else f"group: {shape[1]} {conv_param}"
    grouped = caffe.Net(write_prototxt(tmp_path, _layer_net("Convolution", shape, grouped_param, bottoms),
                                       "grouped.prototxt"), caffe.TRAIN)
    native = caffe.Net(write_prototxt(tmp_path, _layer_net(native_type, shape, conv_param, bottoms),
                                      "native.prototxt"), caffe.TRAIN)
    for theirs, ours in zip(grouped.params["conv"], native.params["conv"]):
        assert theirs.data.shape == ours.data.shape
        ours.data[...] = theirs.data
    return grouped, native


def _run(net, inputs, top_diffs):
    """Forward + backward with the given inputs and top gradients; data, top and every gradient."""
    for k, x in enumerate(inputs):
        net.blobs[f"x{k}"].data[...] = x
    for blob in net.params["conv"]:
        blob.diff[...] = 0
    net.forward()
    for k, g in enumerate(top_diffs):
        net.blobs[f"y{k}"].diff[...] = g
    net.backward()
    found = {f"y{k}": net.blobs[f"y{k}"].data.copy() for k in range(len(inputs))}
    found.update({f"dx{k}": net.blobs[f"x{k}"].diff.copy() for k in range(len(inputs))})
    found.update({f"dparam{k}": blob.diff.copy() for k, blob in enumerate(net.params["conv"])})
    return found


def _assert_relative(found, expected, rtol=1e-5):
    assert found.keys() == expected.keys()
    for name in expected:
        assert found[name].shape == expected[name].shape, name
        scale = np.max(np.abs(expected[name]))
        assert scale > 0, name
        assert np.max(np.abs(found[name] - expected[name])) <= rtol * scale, name


def _compare(caffe, tmp_path, shape, conv_param, bottoms=1, seed=0, native_type=NATIVE):
    grouped, native = _nets(caffe, tmp_path, shape, conv_param, bottoms, native_type)
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=shape).astype(np.float32) for _ in range(bottoms)]
    grouped_out = grouped.forward(**{f"x{k}": x for k, x in enumerate(inputs)})
    top_diffs = [rng.normal(size=grouped_out[f"y{k}"].shape).astype(np.float32) for k in range(bottoms)]
    _assert_relative(_run(native, inputs, top_diffs), _run(grouped, inputs, top_diffs))


GEOMETRY = list(itertools.product((3, 5), (1, 2), (0, 1, 2), (1, 2)))  # kernel, stride, pad, dilation


@pytest.mark.parametrize("kernel, stride, pad, dilation", GEOMETRY)
def test_layer_equals_grouped_convolution(native_caffe, tmp_path, kernel, stride, pad, dilation):
    for batch, bias in ((1, True), (4, False), (4, True)):
        shape = (batch, 5, 13, 11)  # odd sizes, height != width
        param = (f"num_output: 5 kernel_size: {kernel} stride: {stride} pad: {pad} dilation: {dilation} "
                 f"bias_term: {str(bias).lower()}")
        _compare(native_caffe, tmp_path, shape, param, seed=batch)


@pytest.mark.parametrize("param", [
    "kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 2",
    "kernel_size: 1 kernel_size: 3 stride: 3 stride: 2 pad: 1 pad: 0 dilation: 2 dilation: 1",
    "kernel_size: 7 stride: 3 pad: 3",            # a stride the inner loop does not special-case
    "kernel_size: 3 pad: 1 group: 6",             # group may be given, equal to the channels
])
def test_layer_equals_grouped_convolution_with_other_geometry(native_caffe, tmp_path, param):
    _compare(native_caffe, tmp_path, (2, 6, 9, 8), f"num_output: 6 {param}")


def test_both_type_names_and_several_bottoms(native_caffe, tmp_path):
    assert {NATIVE, "DepthwiseConvolution"} <= set(native_caffe.layer_type_list())
    _compare(native_caffe, tmp_path, (2, 4, 7, 9), "num_output: 4 kernel_size: 3 pad: 1", bottoms=2,
             native_type="DepthwiseConvolution")
    net = native_caffe.Net(write_prototxt(tmp_path, _layer_net("DepthwiseConvolution", (1, 4, 5, 5),
                                                               "num_output: 4 kernel_size: 3")), native_caffe.TEST)
    assert net.layers[1].type == "DepthwiseConvolution"  # the type the prototxt named


def test_big_planes_split_over_threads_equal_grouped_convolution(native_caffe, tmp_path):
    # enough work per call to use every thread OpenBLAS has (the tests run with the default count)
    _compare(native_caffe, tmp_path, (3, 32, 75, 75), "num_output: 32 kernel_size: 3 stride: 2 pad: 1")


def test_gradients_match_finite_differences(native_caffe, tmp_path):
    # loss = sum(top * G) is linear in the data, the weights and the bias: central differences are exact
    # up to float rounding, so every entry is checked.
    net = native_caffe.Net(write_prototxt(tmp_path, _layer_net(NATIVE, (2, 3, 7, 6),
                                                               "num_output: 3 kernel_size: 3 stride: 2 pad: 1")),
                           native_caffe.TRAIN)
    rng = np.random.default_rng(3)
    net.blobs["x0"].data[...] = rng.normal(size=net.blobs["x0"].data.shape)
    gradient = rng.normal(size=net.forward()["y0"].shape)
    analytic = _run(net, [net.blobs["x0"].data.copy()], [gradient])

    def loss() -> float:
        return float(np.sum(net.forward()["y0"].astype(np.float64) * gradient))

    eps = 1e-2
    for name, values in [("dx0", net.blobs["x0"].data)] + [(f"dparam{k}", b.data) for k, b in
                                                             enumerate(net.params["conv"])]:
        numeric = central_differences(loss, values, eps)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-3, atol=1e-3, err_msg=name)


@pytest.mark.parametrize("param, message", [
    ("num_output: 8 kernel_size: 3", "num_output 8 must equal the input channel count 4"),
    ("num_output: 4 group: 2 kernel_size: 3", "group 2 must equal the input channel count 4"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", "give either kernel or kernel_h/_w"),
    ("num_output: 4", "kernel_size (or kernel_h and kernel_w) must be positive"),
    ("num_output: 4 kernel_size: 9", "with pad is smaller than the kernel"),
    ("num_output: 4 kernel_size: 3 stride: 1 stride: 1 stride: 1", "stride has 3 values"),
])
def test_layer_refuses_what_it_cannot_compute_by_name(native_caffe, tmp_path, param, message):
    path = write_prototxt(tmp_path, _layer_net(NATIVE, (1, 4, 6, 6), param))
    with pytest.raises(NetProbeError) as caught:  # Caffe aborts: the probe's child process takes the blow
        probe_net(path)
    assert message in str(caught.value)
    assert "layer 'conv' (ConvolutionDepthwise): " in str(caught.value)  # the probe read the layer's name


def test_layer_refuses_to_run_in_place(native_caffe, tmp_path):
    text = _layer_net(NATIVE, (1, 4, 6, 6), "num_output: 4 kernel_size: 3 pad: 1").replace('top: "y0"', 'top: "x0"')
    with pytest.raises(NetProbeError, match="ConvolutionDepthwise layer 'conv': cannot run in place"):
        probe_net(write_prototxt(tmp_path, text))


# --------------------------------------------------------------------------- whole nets: the reference MobileNet-SSD
def _reference(shared_dir: Path, name: str) -> Path:
    return shared_dir / REFERENCE / name


def _converted(source: Path, to: str, target: Path) -> Path:
    result = depthwise.convert_file(source, target, to)
    assert result.converted, source
    return target


def _assert_same_outputs(caffe, grouped: Path, native: Path, weights: Path, tolerance: float = 1e-5) -> None:
    before, after = load_caffe_net(grouped, weights), load_caffe_net(native, weights)
    assert sum(layer.type == NATIVE for layer in after.layers) == 13
    check = verify_nets(before, after, tolerance=tolerance, timing_runs=0)
    assert check.passed, [(d.blob, d.max_rel) for d in check.failures()]
    assert any(d.blob == "detection_out" for d in check.diffs)


@pytest.mark.parametrize("name", ["MobileNetSSD_deploy_bn.prototxt", "MobileNetSSD_deploy_nobn.prototxt"])
def test_reference_deploy_nets_converted_to_native_give_the_same_outputs(native_caffe, shared_dir, tmp_path, name):
    grouped = _reference(shared_dir, name)
    native = _converted(grouped, "native", tmp_path / "native.prototxt")
    weights = random_weights(native_caffe, grouped, tmp_path / "random.caffemodel")  # saved by the grouped net
    _assert_same_outputs(native_caffe, grouped, native, weights)


@pytest.mark.parametrize("name", ["MobileNetSSD_deploy_bn.prototxt", "MobileNetSSD_deploy_nobn.prototxt",
                                  "MobileNetSSD_train.prototxt", "MobileNetSSD_test.prototxt"])
def test_reference_nets_round_trip(native_caffe, shared_dir, name):
    original = read_net_prototxt(_reference(shared_dir, name))
    native = depthwise.convert(original, "native")
    assert native.converted == [f"conv{k}/dw" for k in range(1, 14)]
    assert all(layer.type == NATIVE for layer in native.net.layer if layer.name.endswith("/dw"))
    back = depthwise.convert(native.text, "group")
    assert back.converted == native.converted
    assert back.net == original
    assert depthwise.convert(original, "group").net == original  # nothing native: nothing to do


def test_converter_refuses_what_it_cannot_trace_or_read(native_caffe, tmp_path):
    untraceable = """name: "n" layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 12 } } }
layer { name: "grid" type: "Reshape" bottom: "data" top: "grid"
  reshape_param { shape { dim: 1 dim: 3 dim: 2 dim: 2 } } }
layer { name: "dw" type: "Convolution" bottom: "grid" top: "dw"
  convolution_param { num_output: 3 group: 3 kernel_size: 1 } }
"""
    with pytest.raises(depthwise.DepthwiseConversionError, match="input channel count of grouped convolution.*'dw'"):
        depthwise.convert(untraceable, "native", "n.prototxt")
    assert depthwise.convert(untraceable, "group").converted == []  # going back needs no channel counts
    with pytest.raises(depthwise.DepthwiseConversionError, match="bad.prototxt: not a valid Caffe prototxt"):
        depthwise.convert("layer { name: ", "native", "bad.prototxt")
    with pytest.raises(depthwise.DepthwiseConversionError, match="legacy V1"):
        depthwise.convert('layers { name: "a" type: CONVOLUTION }', "group")
    # a grouped convolution with several input channels per group ('g': 8 inputs, 4 groups) is not depthwise
    # and stays grouped; the Concat of two 4-channel blobs makes 'dw' depthwise
    grouped = """name: "n" input: "data" input_shape { dim: 1 dim: 8 dim: 5 dim: 5 }
layer { name: "g" type: "Convolution" bottom: "data" top: "g"
  convolution_param { num_output: 4 group: 4 kernel_size: 3 } }
layer { name: "c" type: "Concat" bottom: "g" bottom: "g" top: "c" }
layer { name: "dw" type: "Convolution" bottom: "c" top: "dw"
  convolution_param { num_output: 8 group: 8 kernel_size: 3 } }
"""
    assert depthwise.convert(grouped, "native").converted == ["dw"]


# --------------------------------------------------------------------------- gen-model, merge_bn, opencv
@pytest.fixture(scope="module")
def generated(native_caffe, tmp_path_factory):
    """gen-model's 21-class deploy net in both spellings (BatchNorm kept) and random weights for both."""
    root = tmp_path_factory.mktemp("generated")
    paths = {}
    for kind, layer_type in (("group", None), ("native", NATIVE)):
        paths[kind] = root / f"deploy_{kind}.prototxt"
        paths[kind].write_text(model.net_text(model.SsdModelConfig(21, depthwise_type=layer_type), "deploy"))
    paths["weights"] = random_weights(native_caffe, paths["native"], root / "random.caffemodel")
    return paths


def test_gen_model_native_is_the_converted_grouped_net_with_the_same_outputs(native_caffe, generated, tmp_path):
    assert generated["native"].read_text() == depthwise.convert(generated["group"].read_text(), "native").text
    back = depthwise.convert(read_net_prototxt(generated["native"]), "group")
    assert back.net == read_net_prototxt(generated["group"])
    _assert_same_outputs(native_caffe, generated["group"], generated["native"], generated["weights"])


@pytest.mark.parametrize("choice, native", [("auto", True), ("native", True), ("group", False)])
def test_gen_model_cli_depthwise_option(native_caffe, tmp_path, capsys, choice, native):
    assert main(["gen-model", "--classes", "3", "--depthwise", choice, "--out", str(tmp_path)]) == 0
    layer_type = NATIVE if native else "grouped Convolution"
    assert f"depthwise layers {layer_type}" in capsys.readouterr().out
    for name in (model.TRAIN_NET, model.TEST_NET, model.DEPLOY_NET):
        text = (tmp_path / name).read_text()
        assert text.count(f'type: "{NATIVE}"') == (13 if native else 0), name


def test_merge_bn_folds_into_the_native_layer(native_caffe, generated, tmp_path):
    out_model, out_weights = tmp_path / "nobn.prototxt", tmp_path / "nobn.caffemodel"
    result = merge_bn(generated["native"], generated["weights"], out_model, out_weights, timing_runs=0)
    assert result.written and result.verification.passed
    folded = {fold.layer: fold.layer_type for fold in result.plan.folds}
    assert sum(kind == NATIVE for kind in folded.values()) == 13 and len(folded) == 35
    net = read_net_prototxt(out_model)
    assert all(layer.convolution_param.bias_term for layer in net.layer if layer.type == NATIVE)
    assert not any(layer.type in ("BatchNorm", "Scale") for layer in net.layer)


def test_opencv_backend_reads_native_nets_as_grouped_convolution(native_caffe, generated):
    grouped = read_opencv_net(generated["group"], generated["weights"])
    native = read_opencv_net(generated["native"], generated["weights"])
    blob = np.random.default_rng(0).normal(size=(1, 3, 300, 300)).astype(np.float32)
    outputs = []
    for net in (grouped, native):
        net.setInput(blob)
        outputs.append(net.forward(["mbox_loc", "mbox_conf_flatten"]))
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


def test_detect_takes_the_same_native_files_on_both_backends(native_caffe, generated):
    detectors = {backend: SsdDetector(generated["native"], generated["weights"], backend=backend, conf=0.0)
                 for backend in ("caffe", "opencv")}
    image = cv2.resize(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8), (320, 240))
    assert_same_detections(detectors["caffe"].detect(image), detectors["opencv"].detect(image), "native files")


# --------------------------------------------------------------------------- the CLI
def test_convert_depthwise_cli(native_caffe, generated, tmp_path, capsys):
    out = tmp_path / "sub" / "native.prototxt"
    args = ["convert-depthwise", "--to", "native", "--model", str(generated["group"]), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "13 depthwise layer(s) written as ConvolutionDepthwise" in printed and f"wrote {out}" in printed
    assert out.read_text() == generated["native"].read_text()
    back = tmp_path / "grouped.prototxt"
    assert main(["convert-depthwise", "--to", "group", "--model", str(out), "--out", str(back)]) == 0
    layers = read_net_prototxt(back).layer
    assert sum(layer.type == "Convolution" and layer.convolution_param.group > 1 for layer in layers) == 13
    assert not any(layer.type == NATIVE for layer in layers)


@pytest.mark.parametrize("model_arg, out_arg, message", [
    ("missing.prototxt", "out.prototxt", "--model missing.prototxt: not found"),
    ("bad.prototxt", "out.prototxt", "bad.prototxt: not a valid Caffe prototxt (it does not parse)"),
    ("bad.prototxt", "bad.prototxt", "--out bad.prototxt: is the input file"),
    ("bad.prototxt", ".", "--out .: is a folder"),
    ("folder", "out.prototxt", "--model folder: is a folder, expected a file"),
])
def test_convert_depthwise_cli_refuses_bad_files(native_caffe, tmp_path, capsys, monkeypatch, model_arg, out_arg,
                                                 message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.prototxt").write_text('layer { name: "a" type: \n')
    (tmp_path / "folder").mkdir()
    assert main(["convert-depthwise", "--to", "native", "--model", model_arg, "--out", out_arg]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.prototxt").exists()
