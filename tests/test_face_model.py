"""The multi-task face network (issue 13): generated nets build in real Caffe with heads that fit the priors,
the train net runs forward/backward with finite losses (a stand-in data layer here), ImageNet MobileNetV2
weights load by name, the decoder returns known faces from crafted outputs, caffe and OpenCV DNN agree on a
random-weights model, ``detect-faces`` writes MTCNN's JSON / WIDER outputs, and a short ``train-faces`` run
ends in a model folder ``detect-faces`` runs on."""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from caffe_common.env import import_caffe
from ssd_mobilenet.faces import model as fm
from ssd_mobilenet.faces.targets import (
    FaceTruth,
    encode_boxes,
    encode_landmarks,
    pack_ground_truth,
)

SIZE = 160  # the smallest side the tests build (maps 20, 10, 5, 3, 2)
#: The layout of the tests' nets: the smaller one, faster (the deploy-net test and train-faces cover the other).
ARCH = "compact"
caffe = import_caffe()  # never a plain `import caffe`: OpenBLAS picks its kernels when Caffe first loads


# --------------------------------------------------------------------------- a stand-in data layer
class StandInFaceData(caffe.Layer):
    """``FaceDataLayer``'s interface (param_str ``batch_size``, ``size``, ``seed``; tops ``data``, ``gt``) with
    noise images and two faces per image (one with landmarks, one partial without), a function of
    (seed, iteration) only."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str)
        self.batch, self.size, self.seed = params["batch_size"], params["size"], params["seed"]
        self.iteration = 0

    def set_iteration(self, iteration):
        self.iteration = iteration

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 3, self.size, self.size)
        top[1].reshape(*self._truth().shape)

    def _truth(self) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.iteration))
        truths = []
        for _ in range(self.batch):
            x, y = rng.uniform(0.05, 0.4, 2)
            side = rng.uniform(0.15, 0.5)
            box = [x, y, x + side, y + side]
            marks = np.array([0.3, 0.35, 0.7, 0.35, 0.5, 0.55, 0.35, 0.75, 0.65, 0.75])
            marks = np.tile(box[:2], 5) + marks * side
            partial = [0.6, 0.6, 0.9, 0.95]
            truths.append(FaceTruth(np.array([box, partial]), np.array([1, 2]), np.stack([marks, np.zeros(10)]),
                                    np.array([True, False])))
        return pack_ground_truth(truths)

    def forward(self, bottom, top):
        rng = np.random.default_rng((self.seed, self.iteration, 1))
        top[0].data[...] = rng.normal(size=top[0].data.shape)
        top[1].data[...] = self._truth()
        self.iteration += 1

    def backward(self, top, propagate_down, bottom):
        pass


STAND_IN = ("tests.test_face_model", "StandInFaceData")


def random_bn_weights(net, seed: int = 0, head_std: float = 0.01) -> None:
    """Plausible random weights: BatchNorm statistics near (0, 1), Scale near 1, small head weights (the
    fillers leave BatchNorm's variance at 0, which would blow activations up)."""
    rng = np.random.default_rng(seed)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "BatchNorm":
            layer.blobs[0].data[...] = rng.normal(0, 0.1, layer.blobs[0].data.shape)
            layer.blobs[1].data[...] = rng.uniform(0.5, 2, layer.blobs[1].data.shape)
            layer.blobs[2].data[...] = 1
        elif layer.type == "Scale":
            layer.blobs[0].data[...] = rng.uniform(0.5, 1.5, layer.blobs[0].data.shape)
            layer.blobs[1].data[...] = rng.normal(0, 0.1, layer.blobs[1].data.shape)
        elif layer.type == "Convolution" and "_mbox_" in name:
            for blob in layer.blobs:
                blob.data[...] = rng.normal(0, head_std, blob.data.shape)


def make_model_dir(out: Path, size: int = SIZE, seed: int = 0) -> Path:
    """A face model folder (face_model.json, deploy, caffemodel) with random weights."""
    fm.write_nets(fm.FaceModelConfig(size=size, arch=ARCH), out)
    caffe.set_random_seed(seed)  # the convolutions' fillers
    net = caffe.Net(str(out / fm.DEPLOY_NET), caffe.TEST)
    random_bn_weights(net, seed)
    net.save(str(out / fm.WEIGHTS))
    fm.write_model_description(out, size, arch=ARCH)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, caffe):
    return make_model_dir(tmp_path_factory.mktemp("face_model"))


# --------------------------------------------------------------------------- the nets
@pytest.mark.parametrize("arch", sorted(fm.ARCHS))
def test_prior_design_at_320(arch):
    assert fm.feature_map_sizes(320, arch) == (40, 20, 10, 5, 3)
    assert fm.prior_count(320, arch) == 40 * 40 * 2 + 20 * 20 * 2 + 10 * 10 * 2 + 5 * 5 * 2 + 3 * 3 == 4259
    heads = fm.face_arch(arch).heads
    sides = [s for head in heads for s in head.prior_sizes]
    assert sides == sorted(sides) and max(b / a for a, b in itertools.pairwise(sides)) <= 1.5
    assert all(2 <= s / head.stride <= 3 for head in heads for s in head.prior_sizes)
    for bad in (300, 32, 4096, 320.0):
        with pytest.raises(fm.FaceModelError, match="multiple of 32"):
            fm.check_size(bad)


@pytest.mark.parametrize("arch", sorted(fm.ARCHS))
def test_deploy_net_builds_with_standard_layers_and_heads_fitting_the_priors(caffe, tmp_path, arch):
    from caffe_common.model_files import TEST_PHASE, read_net_prototxt

    files = fm.write_nets(fm.FaceModelConfig(size=SIZE, arch=arch), tmp_path).files
    files[fm.MODEL_JSON] = fm.write_model_description(tmp_path, SIZE, arch=arch)
    net = caffe.Net(str(files[fm.DEPLOY_NET]), caffe.TEST)
    priors = fm.prior_count(SIZE, arch)
    layout = fm.face_arch(arch)
    assert [net.blobs[head.source].data.shape[2] for head in layout.heads] == list(fm.feature_map_sizes(SIZE, arch))
    # The backbone ends where the layout says (the ImageNet weights copy by name into what is there).
    blocks = {name.split("/")[0] for name, layer in zip(net._layer_names, net.layers)
              if name.startswith("features.") and "_mbox_" not in name and layer.type != "Split"}
    assert blocks == {f"features.{k}" for k in range(layout.last_block + 1)}
    assert net.blobs["mbox_priorbox"].data.shape == (1, 2, priors * 4)
    assert net.blobs["mbox_loc"].data.shape == (1, priors * 4)
    assert net.blobs["mbox_conf"].data.shape == (1, priors * 3)
    assert net.blobs["mbox_lmk"].data.shape == (1, priors * 10)
    standard = {"Input", "Convolution", "BatchNorm", "Scale", "ReLU6", "Eltwise", "Permute", "Flatten", "Reshape",
                "Softmax", "Concat", "PriorBox", "Split"}  # Split: Caffe's own, inserted for blobs read twice
    assert {layer.type for layer in net.layers} <= standard
    param = read_net_prototxt(files[fm.DEPLOY_NET])
    fm.check_face_heads(param, files[fm.DEPLOY_NET], TEST_PHASE)
    description = json.loads(files[fm.MODEL_JSON].read_text())
    assert description["priors"]["count"] == priors and description["classes"] == ["background", "face", "partial"]
    assert description["arch"] == arch
    # A head that predicts for another number of priors is named before Caffe sees the net.
    from ssd_mobilenet.heads import HeadMismatchError

    head = f"{layout.heads[1].source}_mbox_lmk"
    conv = next(layer for layer in param.layer if layer.name == head)
    conv.convolution_param.num_output = 30
    with pytest.raises(HeadMismatchError, match=rf"{re.escape(head)}.*2 boxes per cell.*20"):
        fm.check_face_heads(param, "deploy", TEST_PHASE)


def test_softmax_output_is_a_distribution_per_prior(model_dir, caffe):
    net = caffe.Net(str(model_dir / fm.DEPLOY_NET), str(model_dir / fm.WEIGHTS), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(1).normal(size=net.blobs["data"].data.shape)
    out = net.forward()
    probs = out["mbox_conf"].reshape(-1, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert np.isfinite(out["mbox_loc"]).all() and np.isfinite(out["mbox_lmk"]).all()


def train_net(caffe, tmp_path, batch=2, **options):
    """The train net on the stand-in data, with plausible random weights (BatchNorm statistics, which the
    fillers leave at zero, where the net has BatchNorm)."""
    config = fm.FaceModelConfig(**{"size": SIZE, "batch_size": batch, "data_layer": STAND_IN, "arch": ARCH, **options})
    files = fm.write_nets(config, tmp_path).files
    net = caffe.Net(str(files[fm.TRAIN_NET]), caffe.TRAIN)
    random_bn_weights(net)
    return net, files


def test_train_net_runs_forward_and_backward_with_finite_losses(caffe, tmp_path):
    from caffe_common.model_files import TRAIN_PHASE, read_net_prototxt

    net, files = train_net(caffe, tmp_path)
    param = read_net_prototxt(files[fm.TRAIN_NET])
    layers = {layer.name: layer for layer in param.layer}
    assert [layers[name].loss_weight[0] for name in ("loss_conf", "loss_box", "loss_lmk")] == [4.0, 1.0, 1.0]
    assert json.loads(layers["loss_conf"].python_param.param_str) == {"neg_pos_ratio": 3.0, "per_image": True}
    fm.check_face_heads(param, files[fm.TRAIN_NET], TRAIN_PHASE)
    out = net.forward()
    for name in ("loss_conf", "loss_box", "loss_lmk"):
        assert np.isfinite(out[name]).all() and out[name].item() > 0, (name, out[name])
    # Both faces of each image are matched: landmarks only for the one that has them.
    assert net.blobs["box_label"].data.sum() >= 2 * 2 and 0 < net.blobs["lmk_label"].data.sum() < net.blobs[
        "box_label"].data.sum()
    assert set(np.unique(net.blobs["cls_label"].data)) == {0, 1, 2}
    net.backward()
    grads = {name: np.abs(params[0].diff) for name, params in net.params.items() if len(params)}
    assert all(np.isfinite(g).all() for g in grads.values())
    for name in ("features.4/expand", "features.7/expand", "features.12/expand_mbox_conf", "features.12/expand_mbox_loc"):
        assert grads[name].max() > 0, name
    assert max(g.max() for name, g in grads.items() if name.endswith("_mbox_lmk")) > 0
    # The first 4 blocks are frozen: no weight or bias there learns. The backbone's BatchNorm uses its stored
    # statistics and its Scale layers do not learn; the extra blocks keep BatchNorm on the batch statistics.
    frozen = [name for name in net.params if name.split("/")[0] in {f"features.{k}" for k in range(4)}]
    assert len(frozen) > 8 and all(np.abs(net.params[name][k].diff).max() == 0 for name in frozen
                                   for k in range(len(net.params[name])) if len(net.params[name][k].diff.shape))
    assert grads["features.4/dw"].max() > 0
    # The default "affine": no BatchNorm layer in the backbone, whose fixed Scale layers read the convolutions;
    # Caffe then skips the frozen blocks' backward pass (features.4's input gets no gradient).
    layers = {layer.name: layer for layer in param.layer}
    assert not any(layer.type == "BatchNorm" and layer.name.startswith("features.") for layer in param.layer)
    assert list(layers["features.5/dw/scale"].bottom) == ["features.5/dw"]
    assert [spec.lr_mult for spec in layers["features.5/dw/scale"].param] == [0, 0]
    assert not layers["extra1/dw/bn"].batch_norm_param.HasField("use_global_stats")
    assert np.abs(net.blobs["features.3/sum"].diff).max() == 0
    # "frozen": BatchNorm layers at their stored statistics, Scale layers fixed.
    _, files = train_net(caffe, tmp_path / "frozen", backbone_bn="frozen")
    layers = {layer.name: layer for layer in read_net_prototxt(files[fm.TRAIN_NET]).layer}
    assert layers["features.5/dw/bn"].batch_norm_param.use_global_stats
    assert [spec.lr_mult for spec in layers["features.5/dw/scale"].param] == [0, 0]
    # Folded: no BatchNorm/Scale in the backbone, biases on its convolutions, the deploy net alike; Caffe then
    # skips the frozen blocks' backward pass entirely (features.4's input gets no gradient).
    folded_net, files = train_net(caffe, tmp_path / "folded", backbone_bn="folded")
    folded_net.forward()
    folded_net.backward()
    assert np.abs(folded_net.blobs["features.3/sum"].diff).max() == 0
    folded = read_net_prototxt(files[fm.TRAIN_NET])
    assert not any(layer.name.startswith("features.") and layer.type in ("BatchNorm", "Scale") for layer in folded.layer)
    assert {layer.name for layer in read_net_prototxt(files[fm.DEPLOY_NET]).layer if layer.type == "BatchNorm"} == {
        layer.name for layer in folded.layer if layer.type == "BatchNorm"}
    scratch, files = train_net(caffe, tmp_path / "scratch", backbone_bn="batch", frozen_blocks=0)
    scratch.forward()
    scratch.backward()
    assert np.abs(scratch.params["features.0"][0].diff).max() > 0
    scratch_param = read_net_prototxt(files[fm.TRAIN_NET])
    assert "features.5/dw/bn" in {layer.name for layer in scratch_param.layer}
    assert not any(layer.batch_norm_param.use_global_stats for layer in scratch_param.layer
                   if layer.type == "BatchNorm")
    with pytest.raises(fm.FaceModelError, match="backbone_bn"):
        fm.FaceModelConfig(backbone_bn="fused").check()
    with pytest.raises(fm.FaceModelError, match="--arch 'mobilenet_v3'.*compact"):
        fm.FaceModelConfig(arch="mobilenet_v3").check()


def test_a_student_taught_by_itself_gets_no_distillation_loss(caffe, tmp_path):
    """The teacher's rows pair with the student's: a teacher folder exported from the student's own weights
    gives a distillation loss of 0 (TEST phase: BatchNorm on stored statistics, as the deploy net), another
    teacher a positive loss whose gradient reaches the conf heads only; the teacher layer refuses a teacher
    of other priors, and check_teacher a folder that records other priors."""
    from ssd_mobilenet.faces.detect import FaceDetector
    from ssd_mobilenet.faces.training import check_teacher, export_weights

    student, files = train_net(caffe, tmp_path / "student")
    student.save(str(tmp_path / "student.caffemodel"))
    teacher_dir = tmp_path / "teacher"
    fm.write_nets(fm.FaceModelConfig(size=SIZE, arch=ARCH), teacher_dir)
    export_weights(teacher_dir / fm.DEPLOY_NET, tmp_path / "student.caffemodel", teacher_dir / fm.WEIGHTS)
    fm.write_model_description(teacher_dir, SIZE, arch=ARCH)
    assert check_teacher(teacher_dir, SIZE, "mobilenet_v2") == str(teacher_dir.resolve())  # same priors

    def taught_net(teacher: Path, phase):
        config = fm.FaceModelConfig(size=SIZE, batch_size=2, data_layer=STAND_IN, arch=ARCH, teacher=str(teacher),
                                    teacher_backend="caffe")
        net = caffe.Net(str(fm.write_nets(config, tmp_path / "taught").files[fm.TRAIN_NET]), phase)
        net.copy_from(str(tmp_path / "student.caffemodel"))
        return net

    net = taught_net(teacher_dir, caffe.TEST)
    out = net.forward()
    assert out["loss_conf"].item() > 0.1 and abs(out["loss_distill"].item()) < 1e-4
    expected = FaceDetector(teacher_dir).forward_blob(net.blobs["data"].data)["conf"]
    np.testing.assert_allclose(net.blobs["teacher_conf"].data, expected.reshape(-1, 3), rtol=1e-5, atol=1e-6)

    other_dir = make_model_dir(tmp_path / "other", seed=3)
    net = taught_net(other_dir, caffe.TRAIN)
    out = net.forward()
    assert out["loss_distill"].item() > 0.01
    # The distillation's own gradient (Caffe starts backward from each loss top's diff, its loss weight):
    # it reaches the conf heads, never a box or landmark head.
    for name in ("loss_conf", "loss_box", "loss_lmk"):
        net.blobs[name].diff[...] = 0
    assert net.blobs["loss_distill"].diff[0] == 1
    net.backward()
    heads = {name: np.abs(params[0].diff).max() for name, params in net.params.items() if "_mbox_" in name}
    assert all(value > 0 for name, value in heads.items() if name.endswith("_mbox_conf"))
    assert all(value == 0 for name, value in heads.items() if not name.endswith("_mbox_conf"))

    moved = tmp_path / "moved"
    shutil.copytree(other_dir, moved)
    deploy = (moved / fm.DEPLOY_NET).read_text()
    (moved / fm.DEPLOY_NET).write_text(deploy.replace("min_size: 16", "min_size: 20", 1))
    with pytest.raises(Exception, match="other priors"):
        taught_net(moved, caffe.TEST).forward()
    description = json.loads((moved / fm.MODEL_JSON).read_text())
    description["priors"]["maps"][0]["min_sizes"] = [20.0, 24.0]
    (moved / fm.MODEL_JSON).write_text(json.dumps(description))
    with pytest.raises(fm.FaceModelError, match="--teacher .*differ from this net"):
        check_teacher(moved, SIZE, ARCH)


def test_affine_backbone_trains_exactly_like_frozen_batch_norm(caffe, tmp_path):
    """"affine" holds each frozen BatchNorm + Scale as its Scale alone: given the frozen net's weights joined by
    caffe_common.merge_bn, the same batch gives the same losses and the same parameter gradients."""
    from caffe_common.merge_bn import read_caffemodel, scale_pairs, scale_weights, weights_by_layer
    from caffe_common.model_files import read_net_prototxt

    caffe.set_random_seed(0)  # the fillers
    # Every negative prior kept: with near-zero random heads, which negatives count as the "hardest" would
    # otherwise be decided by rounding.
    frozen, files = train_net(caffe, tmp_path / "frozen", backbone_bn="frozen", neg_pos_ratio=1e6)
    frozen.save(str(tmp_path / "frozen.caffemodel"))
    frozen_param = read_net_prototxt(files[fm.TRAIN_NET])
    pairs = scale_pairs(frozen_param, lambda name: name.startswith("features."))
    joined = scale_weights(frozen_param, weights_by_layer(read_caffemodel(tmp_path / "frozen.caffemodel")), pairs)
    (tmp_path / "affine.caffemodel").write_bytes(joined.SerializeToString())
    affine, files = train_net(caffe, tmp_path / "affine", backbone_bn="affine", neg_pos_ratio=1e6)
    affine_param = read_net_prototxt(files[fm.TRAIN_NET])
    removed = {layer.name for layer in frozen_param.layer} - {layer.name for layer in affine_param.layer}
    assert len(pairs) == 36 and removed == {bn for bn, _ in pairs}
    affine.copy_from(str(tmp_path / "affine.caffemodel"))
    losses = [net.forward() for net in (frozen, affine)]
    for name in ("loss_conf", "loss_box", "loss_lmk"):
        np.testing.assert_allclose(losses[1][name], losses[0][name], rtol=1e-5, err_msg=name)
    for blob in ("features.7/expand", "features.12/sum", "mbox_conf"):
        theirs = frozen.blobs[blob].data
        assert np.abs(affine.blobs[blob].data - theirs).max() <= 1e-4 * np.abs(theirs).max(), blob
    for net in (frozen, affine):
        net.backward()
    learned = [(name, k) for name, params in affine.params.items() for k in range(len(params))
               if not (name.startswith("features.") and "/scale" in name)]  # a Scale holds a * x + c, fixed
    assert len(learned) > 100
    # The heads' gradients match to rounding. Deeper, an activation within rounding of a ReLU6 bound can take
    # the other side of it in one net (a few of 10^5 values), which changes single gradient entries, so the
    # backbone is compared as a whole: relative L2 error (a wrong map gives errors of order 1).
    for name, k in learned:
        if "_mbox_" in name:
            theirs = frozen.params[name][k].diff
            assert np.abs(affine.params[name][k].diff - theirs).max() <= 1e-4 * np.abs(theirs).max(), name
    mine = np.concatenate([affine.params[name][k].diff.ravel() for name, k in learned]).astype(np.float64)
    theirs = np.concatenate([frozen.params[name][k].diff.ravel() for name, k in learned]).astype(np.float64)
    assert np.linalg.norm(mine - theirs) <= 1e-2 * np.linalg.norm(theirs)


@pytest.mark.parametrize("backbone_bn", ["affine", "folded"])
def test_transformed_imagenet_weights_load_by_name_and_keep_the_features(caffe, tmp_path, backbone_bn):
    from caffe_common.assets import AssetError, asset_path
    from caffe_common.solver import weight_fit_problems
    from ssd_mobilenet.mobilenet_v2 import IMAGENET_ASSET

    try:
        asset_path(*IMAGENET_ASSET)
    except AssetError as exc:  # pragma: no cover - only without network and without `make setup`
        pytest.skip(f"ImageNet MobileNetV2 weights unavailable: {exc}")
    from ssd_mobilenet.faces.training import imagenet_init

    transformed = imagenet_init(tmp_path, backbone_bn)
    converted = tmp_path / "init" / "mobilenet_v2_imagenet.caffemodel"
    assert transformed != converted and imagenet_init(tmp_path, "frozen") == converted
    net, files = train_net(caffe, tmp_path / "nets", backbone_bn=backbone_bn)
    assert weight_fit_problems(net, transformed, require_all=False) == []
    frozen_net, _ = train_net(caffe, tmp_path / "frozen", backbone_bn="frozen")  # the converted weights fit
    assert weight_fit_problems(frozen_net, converted, require_all=False) == []
    net.copy_from(str(transformed))
    # The transformed backbone of the face net computes the converted ImageNet net's features.
    deploy = caffe.Net(str(files[fm.DEPLOY_NET]), str(transformed), caffe.TEST)
    reference = caffe.Net(str(converted.with_suffix(".prototxt")), str(converted), caffe.TEST)
    reference.blobs["data"].reshape(*deploy.blobs["data"].data.shape)
    reference.reshape()
    image = np.random.default_rng(0).normal(0, 1, deploy.blobs["data"].data.shape).astype(np.float32)
    for model in (deploy, reference):
        model.blobs["data"].data[...] = image
        model.forward()
    for blob in ("features.7/expand", "features.12/expand", "features.12/sum"):
        mine, theirs = deploy.blobs[blob].data, reference.blobs[blob].data
        assert np.abs(mine - theirs).max() <= 1e-4 * np.abs(theirs).max(), blob
    backbone = [name for name in net.params if name.startswith("features.") and "_mbox_" not in name]
    assert len(backbone) >= 36  # the convolutions of features.0-12 (and their Scale layers)
    for name in backbone:
        for mine, theirs in zip(net.params[name], deploy.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


# --------------------------------------------------------------------------- decoding
def crafted_outputs(priors: np.ndarray, faces: dict[int, tuple[list[float], np.ndarray, int, float]]):
    """Net outputs whose prior ``k`` predicts ``faces[k] = (box, landmarks, kind, probability)`` exactly
    (normalised coordinates; the rest of the probability is background's); every other prior is background
    with probability 0.99."""
    count = len(priors)
    loc, lmk = np.zeros((count, 4)), np.zeros((count, 10))
    conf = np.tile([0.99, 0.005, 0.005], (count, 1))
    for k, (box, marks, kind, prob) in faces.items():
        loc[k] = encode_boxes(priors[k:k + 1], np.array([box]))[0]
        lmk[k] = encode_landmarks(priors[k:k + 1], marks[None])[0]
        conf[k] = (1 - prob, 0, 0)
        conf[k, kind] = prob
    blob = np.stack([priors.reshape(-1), np.tile([0.1, 0.1, 0.2, 0.2], count)])[None]
    return loc.reshape(1, -1), conf.reshape(1, -1), lmk.reshape(1, -1), blob


def test_decoder_returns_known_faces_in_mtcnn_pixels():
    from ssd_mobilenet.faces.detect import decode_faces

    priors = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.5, 0.5, 0.9, 0.9], [0.0, 0.6, 0.2, 0.8],
                       [0.6, 0.0, 0.8, 0.2]])
    face = ([0.1, 0.15, 0.35, 0.4], np.linspace(0.15, 0.35, 10), 1, 0.95)
    duplicate = ([0.11, 0.15, 0.36, 0.41], np.linspace(0.15, 0.35, 10), 1, 0.9)  # suppressed by NMS
    partial = ([0.55, 0.5, 1.0, 0.95], np.linspace(0.6, 0.9, 10), 2, 0.8)
    weak = ([0.0, 0.6, 0.2, 0.8], np.zeros(10), 1, 0.3)                           # below conf
    outputs = crafted_outputs(priors, {0: face, 1: duplicate, 2: partial, 3: weak})
    width, height = 200, 100
    faces = decode_faces(*outputs, width, height)
    assert [f.partial for f in faces] == [False, True]
    np.testing.assert_allclose(faces[0].box, (20, 15, 70 - 1, 40 - 1), atol=1e-6)
    np.testing.assert_allclose(faces[1].box, (110, 50, 200 - 1, 95 - 1), atol=1e-6)
    np.testing.assert_allclose(faces[0].landmarks, (face[1].reshape(5, 2) * [width, height]), atol=1e-6)
    np.testing.assert_allclose([f.score for f in faces], [0.95, 0.8], atol=1e-9)
    assert faces[1].to_json()["partial"] is True and set(faces[0].to_json()) == {"box", "score", "landmarks", "partial"}
    # A lower threshold keeps the weak face; a lenient NMS the duplicate; keep_top_k caps the count.
    low = decode_faces(*outputs, width, height, fm.Thresholds(conf=0.2, nms=0.95))
    assert len(low) == 4
    assert len(decode_faces(*outputs, width, height, fm.Thresholds(conf=0.2, nms=0.95, keep_top_k=2))) == 2
    with pytest.raises(ValueError, match="mbox_lmk holds"):
        decode_faces(outputs[0], outputs[1], outputs[2][:, :-1], outputs[3], width, height)


def test_inside_fraction_measures_the_part_of_a_box_in_the_image():
    from ssd_mobilenet.faces.detect import inside_fraction

    boxes = np.array([[10, 10, 30, 30], [-10, 0, 10, 10], [90, 40, 110, 60], [0, 60, 20, 80], [5, 5, 5, 9]], float)
    np.testing.assert_allclose(inside_fraction(boxes, 100, 50), [1.0, 0.5, 0.25, 0.0, 0.0])


def test_decoder_drops_boxes_in_the_padding_before_the_top_k_cut():
    """A padded input (the image fills the square's top 0.5): a confident box in the margin below the
    image and one hanging half out of it go; with top_k=1 the face in the image is what is kept, though
    the margin's box scores higher. Without image_size nothing is dropped."""
    from ssd_mobilenet.faces.detect import decode_faces

    priors = np.array([[0.1, 0.1, 0.3, 0.3], [0.4, 0.6, 0.8, 0.95], [0.5, 0.3, 0.7, 0.7]])
    face = ([0.1, 0.1, 0.3, 0.3], np.linspace(0.15, 0.25, 10), 1, 0.8)
    in_margin = ([0.4, 0.6, 0.8, 0.95], np.linspace(0.6, 0.9, 10), 1, 0.99)
    across_edge = ([0.5, 0.3, 0.7, 0.72], np.linspace(0.3, 0.7, 10), 1, 0.9)   # 0.476 of it inside
    outputs = crafted_outputs(priors, {0: face, 1: in_margin, 2: across_edge})
    side = 400                          # the square spans 400 x 400 image pixels; the image is 400 x 200
    assert len(decode_faces(*outputs, side, side, fm.Thresholds(nms=0.99))) == 3
    kept = decode_faces(*outputs, side, side, fm.Thresholds(nms=0.99, top_k=1), image_size=(400, 200))
    assert [f.score for f in kept] == pytest.approx([0.8])
    lenient = decode_faces(*outputs, side, side, fm.Thresholds(nms=0.99, min_inside=0.4), image_size=(400, 200))
    assert [f.score for f in lenient] == pytest.approx([0.9, 0.8])


# --------------------------------------------------------------------------- the detector
def test_caffe_and_opencv_agree_on_a_random_weights_model(model_dir):
    from ssd_mobilenet.faces.detect import FaceDetector

    image = np.random.default_rng(3).integers(0, 256, (120, 180, 3), dtype=np.uint8)
    detectors = {b: FaceDetector(model_dir, backend=b, conf=0.05) for b in ("caffe", "opencv")}
    outputs = {b: d.forward(image) for b, d in detectors.items()}
    for role in ("loc", "conf", "landmarks", "priors"):
        np.testing.assert_allclose(outputs["opencv"][role], outputs["caffe"][role], rtol=1e-3, atol=1e-4)
    faces = {b: d.detect(image) for b, d in detectors.items()}
    assert len(faces["caffe"]) > 0 and len(faces["caffe"]) == len(faces["opencv"])
    for a in faces["caffe"]:  # random weights give near-equal scores: the order may differ, not the faces
        distance = [np.abs(np.subtract(a.box, b.box)).max() for b in faces["opencv"]]
        match = faces["opencv"][int(np.argmin(distance))]
        assert min(distance) < 1e-2 and match.partial == a.partial and abs(match.score - a.score) < 1e-4
    # Another input side runs on the same files (the nets reshape; priors follow the maps).
    bigger = FaceDetector(model_dir, size=SIZE + 64).forward(image)
    assert bigger["priors"].shape[2] == 4 * fm.prior_count(SIZE + 64)


def test_padded_square_keeps_the_aspect_and_maps_points_back():
    from ssd_mobilenet.faces.preprocess import MEAN_BGR_PIXEL, fit_to_square

    image = np.zeros((100, 250, 3), np.uint8)
    image[40:60, 100:150] = 255                        # a white block, x 100-150, y 40-60
    square, (frame_w, frame_h) = fit_to_square(image, 100)
    assert square.shape == (100, 100, 3) and (frame_w, frame_h) == (250, 250)
    assert np.all(square[41:100] == MEAN_BGR_PIXEL)     # below the image (40 rows): the mean colour
    white = np.argwhere(square[:40].min(axis=2) > 200)
    # the block's pixels land at (image pixel) * 100 / 250 in the square
    assert white[:, 0].min() == 16 and white[:, 0].max() == 23 and white[:, 1].min() == 40 and white[:, 1].max() == 59
    portrait, frame = fit_to_square(np.zeros((90, 30, 3), np.uint8), 64)
    assert frame == (64 * 30 / 21, 90) and np.all(portrait[:, 21:] == MEAN_BGR_PIXEL)


def test_detector_pads_to_a_square_by_default_and_squashes_old_folders(model_dir, tmp_path):
    from ssd_mobilenet.faces.detect import FaceDetector, inside_fraction
    from ssd_mobilenet.faces.preprocess import MEAN_BGR_PIXEL

    description = json.loads((model_dir / fm.MODEL_JSON).read_text())
    assert description["preprocessing"]["fit"] == "pad"
    # long side = the input side: no resampling, so padding by hand gives the same input and the same faces
    height = SIZE * 3 // 5
    image = np.random.default_rng(4).integers(0, 256, (height, SIZE, 3), dtype=np.uint8)
    canvas = np.empty((SIZE, SIZE, 3), np.uint8)
    canvas[:] = MEAN_BGR_PIXEL
    canvas[:height] = image
    padded, by_hand_detector = FaceDetector(model_dir, conf=0.05, size=SIZE), FaceDetector(model_dir, conf=0.05,
                                                                                             fit="squash", size=SIZE)
    assert padded.fit == "pad"
    # the same faces, as long as the margin rule (which knows the image ends at `height`) is off
    in_image = padded.detect(image)
    assert in_image and all(inside_fraction(np.array([[*f.box[:2], f.box[2] + 1, f.box[3] + 1]]), SIZE, height)[0]
                            >= padded.thresholds.min_inside == 0.9 for f in in_image)
    for detector in (padded, by_hand_detector):
        detector.thresholds = dataclasses.replace(detector.thresholds, min_inside=0.0)
    mine, by_hand = padded.detect(image), by_hand_detector.detect(canvas)
    assert len(mine) > len(in_image) and len(mine) == len(by_hand)
    for a, b in zip(mine, by_hand):
        np.testing.assert_allclose(a.box, b.box, atol=1e-6)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-6)
        assert a.score == b.score
    squashed = FaceDetector(model_dir, conf=0.05, fit="squash").detect(image)
    assert [f.box for f in squashed] != [f.box for f in mine]
    # a folder written before "fit" existed is read as it was made: squashed
    old = tmp_path / "old"
    old.mkdir()
    for name in (fm.DEPLOY_NET, fm.WEIGHTS):
        (old / name).write_bytes((model_dir / name).read_bytes())
    del description["preprocessing"]["fit"]
    (old / fm.MODEL_JSON).write_text(json.dumps(description))
    assert FaceDetector(old).fit == "squash"
    with pytest.raises(ValueError, match="fit must be one of"):
        FaceDetector(model_dir, fit="crop")


def test_detector_merges_an_enlarged_pass_that_keeps_only_small_faces(model_dir):
    """Sizes (S, 2S), face_model.json's default: the faces are the S pass's plus faces of the 2S pass narrower
    than enlarged_max_face input pixels, after one NMS; with that limit at 0 the result is the S pass alone."""
    from ssd_mobilenet.faces.detect import FaceDetector

    description = json.loads((model_dir / fm.MODEL_JSON).read_text())
    assert description["input"]["detect_sizes"] == [SIZE, 2 * SIZE]
    image = np.random.default_rng(6).integers(0, 256, (SIZE * 3 // 4, SIZE * 3 // 2, 3), dtype=np.uint8)
    both, single = FaceDetector(model_dir, conf=0.05), FaceDetector(model_dir, conf=0.05, size=SIZE)
    assert both.sizes == (SIZE, 2 * SIZE) and FaceDetector(model_dir, size=[2 * SIZE, SIZE]).sizes == both.sizes
    single_faces, merged = single.detect(image), both.detect(image)
    single_boxes = {f.box for f in single_faces}
    added = [f for f in merged if f.box not in single_boxes]
    assert added, "the enlarged pass should add faces on this image"
    frame = image.shape[1]                          # padded: the square spans the long side
    limit = both.thresholds.enlarged_max_face * frame / (2 * SIZE)
    assert all(f.box[2] + 1 - f.box[0] < limit for f in added)
    assert max(f.box[2] + 1 - f.box[0] for f in single_faces) >= limit   # the S pass keeps wide faces
    both.thresholds = dataclasses.replace(both.thresholds, enlarged_max_face=0.0)
    assert [(f.box, f.score) for f in both.detect(image)] == [(f.box, f.score) for f in single_faces]
    with pytest.raises(fm.FaceModelError, match="multiple of"):
        FaceDetector(model_dir, size=[SIZE, SIZE + 1])


def test_unusable_model_folders_are_named(tmp_path, model_dir):
    from ssd_mobilenet.faces.detect import FaceDetector, FaceModelFilesError

    with pytest.raises(FaceModelFilesError, match="train-faces"):
        FaceDetector(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (fm.MODEL_JSON, fm.DEPLOY_NET):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    (broken / fm.WEIGHTS).write_bytes(b"not a caffemodel")
    with pytest.raises(FaceModelFilesError, match="caffemodel"):
        FaceDetector(broken)
    description = json.loads((model_dir / fm.MODEL_JSON).read_text())
    del description["outputs"]["landmarks"]
    (broken / fm.MODEL_JSON).write_text(json.dumps(description))
    with pytest.raises(FaceModelFilesError, match="landmarks"):
        FaceDetector(broken)
    with pytest.raises(ValueError, match="conf"):
        FaceDetector(model_dir, conf=1.5)


# --------------------------------------------------------------------------- detect-faces
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for event, name in (("0--Parade", "a.jpg"), ("1--Handshaking", "b.png")):
        (root / "images" / event).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / event / name), rng.integers(0, 256, (90, 130, 3), dtype=np.uint8))
    (root / "corrupt.jpg").write_bytes(b"no image")
    return root


def test_detect_faces_writes_mtcnn_json_lines_and_wider_files(model_dir, photos, tmp_path, capsys):
    from mtcnn_caffe.detect.cascade import Face
    from ssd_mobilenet.cli import main

    out = tmp_path / "out"
    status = main(["detect-faces", str(photos / "images"), "--model-dir", str(model_dir), "--conf", "0.05",
                   "--json", str(out / "faces.jsonl"), "--wider-out", str(out / "wider"), "--draw", str(out / "drawn"),
                   "--no-progress"])
    assert status == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["a.jpg", "b.png"]
    mtcnn_face = Face((1.0, 2.0, 3.0, 4.0), 0.5, np.zeros((5, 2))).to_json()
    for record in records:
        assert set(record) == {"image", "width", "height", "faces"} and record["faces"]
        for face in record["faces"]:
            assert set(face) == set(mtcnn_face) | {"partial"} and len(face["landmarks"]) == 5
    wider = (out / "wider" / "0--Parade" / "a.txt").read_text().splitlines()
    first = records[0]["faces"][0]
    x1, y1, x2, y2 = first["box"]
    assert wider[0] == "a" and int(wider[1]) == len(records[0]["faces"])
    assert wider[2] == f"{x1:.1f} {y1:.1f} {x2 - x1 + 1:.1f} {y2 - y1 + 1:.1f} {first['score']:.6f}"
    assert (out / "drawn" / "0--Parade" / "a.jpg").is_file()
    # --resume skips the images already done; a bad input is named and gives status 2.
    status = main(["detect-faces", str(photos / "images"), str(photos / "corrupt.jpg"), "--model-dir", str(model_dir),
                   "--json", str(out / "faces.jsonl"), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "corrupt.jpg" in err and "2 already done" in err
    # --fit squash reaches the detector: other boxes than the model's padding
    status = main(["detect-faces", str(photos / "images" / "0--Parade" / "a.jpg"), "--model-dir", str(model_dir),
                   "--conf", "0.05", "--fit", "squash", "--json", str(out / "squashed.jsonl"), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    squashed = json.loads((out / "squashed.jsonl").read_text())
    assert squashed["faces"] and squashed["faces"][0]["box"] != first["box"]


def test_detect_faces_without_a_model_says_how_to_train_one(photos, tmp_path, capsys):
    from ssd_mobilenet.cli import main

    status = main(["detect-faces", str(photos / "images"), "--model-dir", str(tmp_path / "none")])
    assert status == 1 and "ssd-mobilenet train-faces" in capsys.readouterr().err
    assert main(["detect-faces", str(photos / "images"), "--model-dir", str(tmp_path), "--size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


# --------------------------------------------------------------------------- train-faces
@pytest.fixture(scope="module")
def tiny_face_data(tmp_path_factory):
    """A WIDER-format set of 6 images (one in the held-out event Interview) and a 5-point list of 3 images:
    noise pictures with plausible boxes, enough to run the whole pipeline."""
    import cv2

    root = tmp_path_factory.mktemp("face_data")
    rng = np.random.default_rng(7)
    wider = []
    for k, event in enumerate(["0--Parade"] * 3 + ["1--Handshaking"] * 2 + ["13--Interview"]):
        name = f"{event}/{k}.jpg"
        (root / "wider" / event).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "wider" / name), rng.integers(0, 256, (180, 240, 3), dtype=np.uint8))
        wider += [name, "2", "20 30 60 70 0 0 0 0 0 0", "140 40 50 50 0 0 0 0 0 0"]
    (root / "wider_gt.txt").write_text("\n".join(wider) + "\n")
    (root / "lm" / "net").mkdir(parents=True)
    lines = []
    for k in range(3):
        cv2.imwrite(str(root / "lm" / "net" / f"{k}.jpg"), rng.integers(0, 256, (120, 120, 3), dtype=np.uint8))
        lines.append(f"net/{k}.jpg 20 100 15 105 45 50 75 50 60 65 48 85 72 85")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root


def test_train_faces_makes_a_model_folder_detect_faces_runs_on(tiny_face_data, tmp_path, capsys):
    from ssd_mobilenet.cli import main

    data, out = tiny_face_data, tmp_path / "model"
    args = ["train-faces", "--wider-anno", str(data / "wider_gt.txt"), "--wider-images", str(data / "wider"),
            "--landmarks", str(data / "list.txt"), "--landmark-images", str(data / "lm"), "--out", str(out),
            "--size", str(SIZE), "--batch", "2", "--no-progress"]
    assert main([*args, "--iters", "2"]) == 0, capsys.readouterr().err
    assert "trained 2 iterations on 8 images" in capsys.readouterr().out
    assert json.loads((out / fm.MODEL_JSON).read_text())["arch"] == fm.DEFAULT_ARCH == "mobilenet_v2"
    for name in (fm.MODEL_JSON, fm.DEPLOY_NET, fm.WEIGHTS, "log.csv", "data/held_out_gt.txt"):
        assert (out / name).is_file(), name
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:6] == ["iter", "lr", "loss", "loss_box", "loss_conf", "loss_lmk"] and len(log) == 3
    # A second run into the same folder is refused; --resume continues to the new --iters.
    assert main([*args, "--iters", "3"]) == 2 and "--resume" in capsys.readouterr().err
    assert main([*args, "--iters", "3", "--resume"]) == 0
    assert "trained 3 iterations" in capsys.readouterr().out
    assert (out / "log.csv").read_text().splitlines()[-1].startswith("3,")
    status = main(["detect-faces", str(data / "wider" / "0--Parade"), "--model-dir", str(out), "--conf", "0",
                   "--json", str(tmp_path / "faces.jsonl"), "--backend", "opencv", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "faces.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["faces"] for r in records)
    # Fine-tuning that model with itself as the teacher: the distillation loss is logged, and the weights start
    # from the model's (at a rate of 1e-12 the heads keep them).
    from caffe_common.model_files import read_caffemodel, weights_by_layer

    tuned = [*args[:args.index("--out")], "--out", str(tmp_path / "tuned"), *args[args.index("--out") + 2:]]
    assert main([*tuned, "--iters", "1", "--init", str(out), "--teacher", str(out), "--base-lr", "1e-12"]) == 0, \
        capsys.readouterr().err
    header, first = (tmp_path / "tuned" / "log.csv").read_text().splitlines()[:2]
    assert np.isfinite(dict(zip(header.split(","), map(float, first.split(",")))).get("loss_distill", np.nan))
    before, after = (weights_by_layer(read_caffemodel(folder / fm.WEIGHTS)) for folder in (out, tmp_path / "tuned"))
    heads = [name for name in before if "_mbox_" in name and before[name]]
    assert len(heads) == 15 and all(np.allclose(np.array(before[name][0].data), np.array(after[name][0].data),
                                                rtol=0, atol=1e-7) for name in heads)
    capsys.readouterr()
    assert main([*tuned, "--iters", "1", "--init", str(out), "--arch", "compact"]) == 2
    assert "layout 'mobilenet_v2'" in capsys.readouterr().err
    assert main([*tuned, "--iters", "1", "--distill-weight", "2"]) == 2
    assert "--distill-weight goes with --teacher" in capsys.readouterr().err


def test_train_faces_refuses_missing_inputs(tmp_path, capsys):
    from ssd_mobilenet.cli import main

    assert main(["train-faces", "--out", str(tmp_path / "m")]) == 2
    assert "--wider-anno" in capsys.readouterr().err
    assert main(["train-faces", "--wider-anno", str(tmp_path / "none.txt"), "--wider-images", str(tmp_path),
                 "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    assert "none.txt" in capsys.readouterr().err


# --------------------------------------------------------------------------- shipping a model
def test_shipped_face_model_matches_its_manifest_and_finds_faces(shared_dir):
    """models/face_multitask: the files its manifest names, under the repository's 2 MB limit, padded input,
    and the default of FaceDetector: on a group photo it finds faces above its threshold, each overlapping
    an annotated face."""
    import hashlib

    import cv2

    from caffe_common.boxes import iou_matrix
    from caffe_common.face_annotations import read_imglab_xml
    from ssd_mobilenet.faces.detect import DEFAULT_MODEL_DIR, FaceDetector

    manifest = json.loads((DEFAULT_MODEL_DIR / "MANIFEST.json").read_text())
    for name, digest in manifest["files_sha256"].items():
        assert hashlib.sha256((DEFAULT_MODEL_DIR / name).read_bytes()).hexdigest() == digest, name
        assert (DEFAULT_MODEL_DIR / name).stat().st_size < 2 * 1024 * 1024, name
    assert "train-faces" in manifest["command"] and manifest["training"]["iterations"] > 0
    detector = FaceDetector(backend="opencv")
    assert detector.fit == "pad" and detector.thresholds.conf == manifest_conf(manifest)
    xml = shared_dir / "data" / "faces_68pt" / "testing_with_face_landmarks.xml"
    photo = next(item for item in read_imglab_xml(xml) if item.file == "2009_004587.jpg")
    faces = detector.detect(cv2.imread(str(xml.parent / photo.file)))
    assert faces and all(f.score >= detector.thresholds.conf for f in faces)
    assert iou_matrix(np.array([f.box for f in faces]), photo.boxes).max(axis=1).min() >= 0.4


def manifest_conf(manifest: dict) -> float:
    """The default threshold a shipped model's evaluation records (``default_conf_<C>``)."""
    key = next(k for k in manifest["evaluation"] if k.startswith("default_conf_"))
    return float(key.removeprefix("default_conf_"))


def test_ship_face_model_copies_the_model_with_a_manifest(model_dir, tmp_path):
    import subprocess
    import sys

    from caffe_common.assets import file_sha256
    from caffe_common.model_files import read_net_prototxt
    from ssd_mobilenet.faces.detect import FaceDetector

    from tests.conftest import REPO_ROOT

    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    old_style = json.loads((run / fm.MODEL_JSON).read_text())   # a run of a toolkit before these settings
    del old_style["input"]["detect_sizes"], old_style["thresholds"]["min_inside"]
    (run / fm.MODEL_JSON).write_text(json.dumps(old_style))
    rows = ["iter,lr,loss,loss_box,loss_conf,loss_lmk,samples_per_s"]
    rows += [f"{10 * k},0.001,{20 - k},{3 - 0.1 * k},{2 - 0.1 * k},{15 - k},{6 + k % 2}" for k in range(1, 13)]
    (run / "log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "eval.json").write_text('{"wider_ap": 0.5}')
    target = tmp_path / "models" / "face"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "ship_face_model.py"), str(run), str(target),
                           "--command", "train-faces ...", "--revision", "abc", "--evaluation",
                           str(tmp_path / "eval.json")], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert set(manifest["files_sha256"]) == {fm.MODEL_JSON, fm.DEPLOY_NET, fm.WEIGHTS}
    assert all(file_sha256(target / name) == digest for name, digest in manifest["files_sha256"].items())
    assert all(file_sha256(target / name) == file_sha256(run / name) for name in (fm.DEPLOY_NET, fm.WEIGHTS))
    shipped = json.loads((target / fm.MODEL_JSON).read_text())   # the old run's, with today's defaults added
    assert shipped["input"]["detect_sizes"] == [SIZE, 2 * SIZE] and shipped["thresholds"]["min_inside"] == 0.9
    assert {k: v for k, v in shipped.items() if k not in ("input", "thresholds")} == {
        k: v for k, v in old_style.items() if k not in ("input", "thresholds")}
    training = manifest["training"]
    assert training["iterations"] == 120 and training["samples_per_s_median"] == 6.5
    assert training["losses_mean_of_last_10_logged"]["loss"] == pytest.approx(sum(20 - k for k in range(3, 13)) / 10)
    assert manifest["evaluation"] == {"wider_ap": 0.5} and manifest["revision"] == "abc"
    FaceDetector(target)  # a complete model folder
    # --merge-bn ships the folded net under the same names: no BatchNorm / Scale left, the same outputs.
    folded = tmp_path / "models" / "face_nobn"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "ship_face_model.py"), str(run), str(folded),
                           "--command", "train-faces ...", "--merge-bn", "--conf", "0.3", "--detect-sizes",
                           str(SIZE)], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert FaceDetector(folded).thresholds.conf == 0.3 and FaceDetector(run).thresholds.conf == 0.5
    assert FaceDetector(folded).sizes == (SIZE,) and FaceDetector(run).sizes == (SIZE,)
    manifest = json.loads((folded / "MANIFEST.json").read_text())
    assert manifest["merge_bn"]["folds"] > 40 and manifest["merge_bn"]["max_relative_difference"] < 1e-4
    assert all(file_sha256(folded / name) == digest for name, digest in manifest["files_sha256"].items())
    kinds = {layer.type for layer in read_net_prototxt(folded / fm.DEPLOY_NET).layer}
    assert not kinds & {"BatchNorm", "Scale"}
    # The shipped layout's folded weights fit the repository's 2 MB limit for a tracked file.
    assert (folded / fm.WEIGHTS).stat().st_size < 2 * 2**20
    nets = [caffe.Net(str(d / fm.DEPLOY_NET), str(d / fm.WEIGHTS), caffe.TEST) for d in (target, folded)]
    image = np.random.default_rng(3).normal(0, 1, nets[0].blobs["data"].data.shape).astype(np.float32)
    outputs = []
    for net in nets:
        net.blobs["data"].data[...] = image
        outputs.append({name: blob.copy() for name, blob in net.forward().items()})
    for name in ("mbox_loc", "mbox_conf", "mbox_lmk"):
        theirs = outputs[0][name]
        assert np.abs(outputs[1][name] - theirs).max() <= 1e-4 * np.abs(theirs).max(), name
