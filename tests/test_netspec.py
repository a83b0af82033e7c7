"""The shared NetSpec builders against the reference MobileNet-SSD layers, and in real Caffe."""
from __future__ import annotations

import numpy as np
import pytest

from caffe_common import netspec


def reference_layers(shared_dir, caffe) -> dict:
    """Layers of the reference MobileNetSSD_train.prototxt by name (its data layer cut off: it uses SSD
    augmentation fields our Caffe's proto has not got yet)."""
    from google.protobuf import text_format

    text = (shared_dir / "reference" / "mobilenet_ssd" / "MobileNetSSD_train.prototxt").read_text()
    first = text.index("layer {")
    body = text[text.index("layer {", first + 1):]
    net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge(body, net)
    return {layer.name: layer for layer in net.layer}


def built_layers(n) -> dict:
    return {layer.name: layer for layer in n.to_proto().layer}


@pytest.mark.shared
def test_backbone_blocks_equal_the_reference_layers(shared_dir, caffe):
    reference = reference_layers(shared_dir, caffe)
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, 300, 300]}})
    top = netspec.conv_bn_act(n, "conv0", n.data, 32, 3, stride=2, pad=1)
    netspec.depthwise_separable(n, "conv1", top, 32, 64)
    built = built_layers(n)
    names = ["conv0", "conv0/bn", "conv0/scale", "conv0/relu", "conv1/dw", "conv1/dw/bn", "conv1/dw/scale",
             "conv1/dw/relu", "conv1", "conv1/bn", "conv1/scale", "conv1/relu"]
    for name in names:
        assert built[name] == reference[name], f"layer {name} differs:\n{built[name]}\nvs\n{reference[name]}"


@pytest.mark.shared
def test_multibox_head_equals_the_reference_layers(shared_dir, caffe):
    reference = reference_layers(shared_dir, caffe)
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, 300, 300]}})
    n.conv11 = caffe.layers.Input(input_param={"shape": {"dim": [1, 512, 19, 19]}})
    n.conv13 = caffe.layers.Input(input_param={"shape": {"dim": [1, 1024, 10, 10]}})
    netspec.multibox_head(n, "conv11", n.data, 21, netspec.PriorSpec(60.0, aspect_ratios=(2.0,)))
    netspec.multibox_head(n, "conv13", n.data, 21, netspec.PriorSpec(105.0, 150.0, aspect_ratios=(2.0, 3.0)))
    built = built_layers(n)
    for source in ("conv11", "conv13"):
        for suffix in ("loc", "loc_perm", "loc_flat", "conf", "conf_perm", "conf_flat", "priorbox"):
            name = f"{source}_mbox_{suffix}"
            assert built[name] == reference[name], f"layer {name} differs:\n{built[name]}\nvs\n{reference[name]}"


def test_small_ssd_net_runs_with_consistent_head_shapes(caffe, tmp_path):
    # A tiny MobileNet-style net with heads on two maps: the flat loc/conf sizes must agree with the
    # prior count that PriorBox computes (the classic MultiBox shape check), forward and backward.
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(input_param={"shape": {"dim": [2, 3, 64, 64]}})
    top = netspec.conv_bn_act(n, "conv0", n.data, 8, 3, stride=2, pad=1)
    top = netspec.depthwise_separable(n, "conv1", top, 8, 16, stride=2)
    netspec.depthwise_separable(n, "conv2", top, 16, 16, stride=2, act="relu6")
    specs = {"conv1": netspec.PriorSpec(12.0, aspect_ratios=(2.0,)),
             "conv2": netspec.PriorSpec(24.0, 40.0, aspect_ratios=(2.0, 3.0))}
    heads = [netspec.multibox_head(n, src, n.data, 3, spec, extra_outputs=(("landmark", 10),))
             for src, spec in specs.items()]
    netspec.concat_heads(n, heads, kinds=("loc", "conf", "landmark", "priorbox"))
    path = tmp_path / "net.prototxt"
    path.write_text("force_backward: true\n" + str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(size=(2, 3, 64, 64))
    out = net.forward()
    priors = sum((64 // s) ** 2 * spec.priors_per_cell for s, spec in zip((4, 8), specs.values()))
    assert specs["conv1"].priors_per_cell == 3 and specs["conv2"].priors_per_cell == 6
    assert out["mbox_priorbox"].shape == (1, 2, priors * 4)
    assert out["mbox_loc"].shape == (2, priors * 4)
    assert out["mbox_conf"].shape == (2, priors * 3)
    assert out["mbox_landmark"].shape == (2, priors * 10)
    net.backward()
    assert np.isfinite(net.params["conv0"][0].diff).all()


def test_prelu_block_has_learnable_slopes_without_decay(caffe):
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, 12, 12]}})
    netspec.conv_bn_act(n, "conv1", n.data, 10, 3, act="prelu", bn=False, mults=netspec.FRESH)
    layers = built_layers(n)
    assert layers["conv1"].convolution_param.bias_term and len(layers["conv1"].param) == 2
    assert layers["conv1/prelu"].type == "PReLU" and layers["conv1/prelu"].param[0].decay_mult == 0
    assert list(layers["conv1/prelu"].top) == ["conv1"]
    with pytest.raises(ValueError, match="unknown activation"):
        netspec.activation(n, "x", n.data, "swish")
