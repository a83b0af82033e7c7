"""MobileNet-SSD train / test / deploy networks and their solvers for ``N`` classes.

Every layer but the ``AnnotatedData`` input comes from the shared NetSpec builders of
:mod:`caffe_common.netspec` (convolution + BatchNorm + Scale + ReLU, depthwise-separable block,
multibox head); nothing is made by substituting text into a template. For ``N = 21`` and the default
options the train and test nets equal the reference MobileNet-SSD (chuanqi305) layer for layer (names,
types, order, every parameter), and the deploy net equals the seed's deploy template (the reference
deploy net differs only in unused learning-rate multipliers and a commented-out ``engine``): 1917
prior boxes at 300x300. The solvers are the reference solver with ``solver_mode: CPU``.

* ``N != 21``: the six ``*_mbox_conf`` convolutions are renamed ``*_mbox_conf_new`` (their tops keep
  their names), the seed's convention, so that fine-tuning from 21-class weights re-initialises
  them instead of failing on their shapes.
* ``width``: MobileNet's depth multiplier; every backbone and extra-layer channel count ``c``
  becomes ``max(8, int(c * width))`` (TensorFlow's rule; exact for 1.0, 0.75 and 0.5).
* ``relu6``: ReLU6 instead of ReLU (TensorFlow's MobileNet; needs a Caffe with a ``ReLU6`` layer,
  as this project's has).
* ``tf_anchors``: TensorFlow's first anchor on conv11, (0.1, 1.0) instead of (0.2, 1.0). Caffe's
  ``PriorBox`` cannot give one map two box scales with only three boxes per cell, so the conv11
  priors are assembled from two ``PriorBox`` layers with Reshape / Slice / Concat (and a Silence
  for the unused slice); ``conv11_mbox_priorbox`` keeps its name and shape.
* ``size``: the square input side; prior sizes scale with it (20%, 35%, ... 95% of the side, as
  60 .. 285 at 300), rounded to whole pixels because Caffe's PriorBox truncates them to integers.
* ``depthwise_type``: the 13 depthwise convolutions as grouped ``Convolution`` (None, the reference
  nets' spelling) or as the native layer ``ConvolutionDepthwise`` of this project's Caffe (much faster
  on the CPU; same weights, see :mod:`caffe_common.depthwise`). ``gen-model`` picks the native layer
  when the Caffe in use has it.

The data layer's augmentation uses SSD's field names (``resize_param``, ``distort_param``,
``expand_param``), which a Caffe without the project's SSD patch cannot parse; that layer is
therefore written as text here (:func:`annotated_data_text`), the rest through protobuf.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from caffe_common import netspec
from caffe_common.atomic import write_text_atomic
from caffe_common.model_files import DEPTHWISE_TYPES
from caffe_common.netspec import BACKBONE, FRESH, Mults, PriorSpec

NET_NAME = "MobileNet-SSD"
TRAIN_NET, TEST_NET, DEPLOY_NET = ("MobileNetSSD_train.prototxt", "MobileNetSSD_test.prototxt",
                                   "MobileNetSSD_deploy.prototxt")
SOLVER_TRAIN, SOLVER_TEST = "solver_train.prototxt", "solver_test.prototxt"
OUTPUT_FILES = (TRAIN_NET, TEST_NET, DEPLOY_NET, SOLVER_TRAIN, SOLVER_TEST)

#: The class count of the reference nets (VOC: 20 classes + background): its head names are kept.
REFERENCE_CLASSES = 21
WIDTHS = (1.0, 0.75, 0.5)
MIN_DEPTH = 8
#: The smallest input whose six feature maps all differ in size (conv16_2 at least 2x2).
MIN_SIZE, MAX_SIZE = 257, 2048
#: (name, output channels, stride) of MobileNet v1's 13 depthwise-separable blocks after conv0.
MOBILENET_BLOCKS = (("conv1", 64, 1), ("conv2", 128, 2), ("conv3", 128, 1), ("conv4", 256, 2),
                    ("conv5", 256, 1), ("conv6", 512, 2), ("conv7", 512, 1), ("conv8", 512, 1),
                    ("conv9", 512, 1), ("conv10", 512, 1), ("conv11", 512, 1), ("conv12", 1024, 2),
                    ("conv13", 1024, 1))
CONV0_CHANNELS = 32
#: SSD's extra feature layers: (name, 1x1 channels, 3x3 stride-2 channels) -> name_1, name_2.
EXTRA_LAYERS = (("conv14", 256, 512), ("conv15", 128, 256), ("conv16", 128, 256), ("conv17", 64, 128))
HEAD_SOURCES = ("conv11", "conv13", "conv14_2", "conv15_2", "conv16_2", "conv17_2")
#: Prior box sides in percent of the input side: map k has min size PRIOR_SCALES[k] and (except
#: conv11) max size PRIOR_SCALES[k + 1]; conv11 has aspect ratio 2 only, the others 2 and 3.
PRIOR_SCALES = (20, 35, 50, 65, 80, 95, 100)
TF_FIRST_ANCHOR_SCALE = 10
VARIANCE = (0.1, 0.1, 0.2, 0.2)
#: Input normalisation (x - 127.5) * 0.007843, BGR.
MEAN_VALUE, INPUT_SCALE = 127.5, 0.007843


class ModelConfigError(ValueError):
    """Options that cannot make a MobileNet-SSD net (the message names the option)."""


@dataclass(frozen=True)
class SsdModelConfig:
    """What ``gen-model`` builds. Paths are written into the nets as given (relative paths are
    resolved by Caffe against the folder it runs in, as in the seed)."""

    num_classes: int
    width: float = 1.0
    relu6: bool = False
    tf_anchors: bool = False
    size: int = 300
    train_lmdb: str = "trainval_lmdb/"
    test_lmdb: str = "test_lmdb"
    labelmap: str = "labelmap.prototxt"
    train_batch_size: int = 24
    test_batch_size: int = 8
    #: Test batches per evaluation (the seed's value; gen-model counts the test LMDB when it is given).
    test_iter: int = 673
    #: Layer type of the depthwise convolutions: None = grouped ``Convolution``, or a native type.
    depthwise_type: str | None = None

    def check(self) -> None:
        """Refuse values no net can be built from."""
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ModelConfigError(f"--classes {self.num_classes}: need at least 2 (the background, label 0, "
                                   "plus one class per object kind; VOC is 21)")
        if self.width not in WIDTHS:
            raise ModelConfigError(f"--width {self.width}: choose one of {', '.join(map(str, WIDTHS))}")
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ModelConfigError(
                f"--size {self.size}: choose a side from {MIN_SIZE} to {MAX_SIZE} (300 is the reference); "
                f"below {MIN_SIZE} the last feature maps collapse to the same 1x1 size, so the net no longer "
                "has six distinct prediction maps")
        if self.depthwise_type is not None and self.depthwise_type not in DEPTHWISE_TYPES:
            raise ModelConfigError(f"depthwise layer type {self.depthwise_type!r}: choose one of "
                                   f"{', '.join(DEPTHWISE_TYPES)} or None (grouped Convolution)")
        for name, value in (("train batch size", self.train_batch_size), ("test batch size", self.test_batch_size),
                            ("test_iter", self.test_iter)):
            if value < 1:
                raise ModelConfigError(f"{name} {value}: must be at least 1")

    def channels(self, reference: int) -> int:
        """A layer's channel count at this width (MobileNet's depth multiplier, at least 8)."""
        return max(MIN_DEPTH, int(reference * self.width))

    @property
    def activation(self) -> str:
        return "relu6" if self.relu6 else "relu"


# --------------------------------------------------------------------------- shapes and priors
def feature_map_sizes(size: int) -> tuple[int, ...]:
    """Sides of the six prediction maps (conv11 .. conv17_2) for a ``size`` input, computed as Caffe
    sizes each stride-2 3x3 convolution with pad 1: ``floor((s - 1) / 2) + 1``."""
    side, sides = size, {}
    strides = [("conv0", 2)] + [(name, stride) for name, _, stride in MOBILENET_BLOCKS]
    strides += [(f"{name}_2", 2) for name, _, _ in EXTRA_LAYERS]
    for name, stride in strides:
        side = (side - 1) // stride + 1
        sides[name] = side
    return tuple(sides[name] for name in HEAD_SOURCES)


def prior_side(size: int, percent: int) -> float:
    """A prior box side in whole pixels (Caffe's PriorBox truncates sizes to integers): ``percent`` of
    ``size``, rounded to the nearest pixel."""
    return float((size * percent + 50) // 100)


def prior_specs(config: SsdModelConfig) -> list[PriorSpec]:
    """The six maps' ``PriorBox`` parameters (the reference's for 300x300)."""
    specs = []
    for k, _ in enumerate(HEAD_SOURCES):
        min_size = prior_side(config.size, PRIOR_SCALES[k])
        if k == 0:
            specs.append(PriorSpec(min_size, None, (2.0,), variance=VARIANCE))
        else:
            specs.append(PriorSpec(min_size, prior_side(config.size, PRIOR_SCALES[k + 1]), (2.0, 3.0),
                                   variance=VARIANCE))
    return specs


def prior_count(config: SsdModelConfig) -> int:
    """Prior boxes per image (1917 at 300x300)."""
    return sum(side * side * spec.priors_per_cell
               for side, spec in zip(feature_map_sizes(config.size), prior_specs(config)))


# --------------------------------------------------------------------------- the network body
def _backbone(n: Any, config: SsdModelConfig, mults: Mults) -> None:
    """conv0, the 13 MobileNet blocks and the extra layers conv14_1 .. conv17_2."""
    act = config.activation
    top = netspec.conv_bn_act(n, "conv0", n.data, config.channels(CONV0_CHANNELS), 3, stride=2, pad=1,
                              act=act, mults=mults)
    channels = config.channels(CONV0_CHANNELS)
    for name, out, stride in MOBILENET_BLOCKS:
        top = netspec.depthwise_separable(n, name, top, channels, config.channels(out), stride, act=act, mults=mults,
                                          depthwise_type=config.depthwise_type)
        channels = config.channels(out)
    for name, reduced, out in EXTRA_LAYERS:
        top = netspec.conv_bn_act(n, f"{name}_1", top, config.channels(reduced), 1, act=act, mults=mults)
        top = netspec.conv_bn_act(n, f"{name}_2", top, config.channels(out), 3, stride=2, pad=1, act=act,
                                  mults=mults)


def _prior_box(n: Any, name: str, source: str, spec: PriorSpec) -> Any:
    L, _ = netspec.caffe_layers()
    n[name] = L.PriorBox(n[source], n.data, prior_box_param=spec.param())
    return n[name]


def _tf_first_anchor_priors(n: Any, source: str, config: SsdModelConfig, ssd_spec: PriorSpec) -> None:
    """Replace ``<source>_mbox_priorbox`` (boxes (0.2, 1), (0.2, 2), (0.2, 0.5) per cell) by TensorFlow's
    (0.1, 1), (0.2, 2), (0.2, 0.5): the square of a 0.1 ``PriorBox`` spliced in per cell, in Caffe layers."""
    L, _ = netspec.caffe_layers()
    name = f"{source}_mbox_priorbox"
    n.tops.pop(name)
    per_cell = ssd_spec.priors_per_cell * 4  # values per cell: 4 coordinates (and 4 variances) per box
    ssd = _prior_box(n, f"{name}_ssd", source, ssd_spec)
    small = _prior_box(n, f"{name}_small", source,
                       PriorSpec(prior_side(config.size, TF_FIRST_ANCHOR_SCALE), None, (), variance=VARIANCE))
    n[f"{name}_ssd_cells"] = L.Reshape(ssd, reshape_param={"shape": {"dim": [0, 2, -1, per_cell]}})
    n[f"{name}_small_cells"] = L.Reshape(small, reshape_param={"shape": {"dim": [0, 2, -1, 4]}})
    n[f"{name}_ssd_square"], n[f"{name}_ssd_rest"] = L.Slice(
        n[f"{name}_ssd_cells"], ntop=2, slice_param={"axis": 3, "slice_point": [4]})
    n[f"{name}_ssd_square_unused"] = L.Silence(n[f"{name}_ssd_square"], ntop=0)
    n[f"{name}_cells"] = L.Concat(n[f"{name}_small_cells"], n[f"{name}_ssd_rest"], concat_param={"axis": 3})
    n[name] = L.Reshape(n[f"{name}_cells"], reshape_param={"shape": {"dim": [0, 2, -1]}})


def _heads(n: Any, config: SsdModelConfig, loc_mults: Mults, conf_mults: Mults) -> None:
    """The six multibox heads and their concatenations ``mbox_loc``, ``mbox_conf``, ``mbox_priorbox``."""
    heads = []
    for source, spec in zip(HEAD_SOURCES, prior_specs(config)):
        head = netspec.multibox_head(n, source, n.data, config.num_classes, spec, loc_mults, conf_mults)
        if config.num_classes != REFERENCE_CLASSES:
            # A layer name is what Caffe matches weights by: a new name makes fine-tuning skip the old conf weights.
            n[f"{source}_mbox_conf"].fn.params["name"] = f"{source}_mbox_conf_new"
        if config.tf_anchors and source == HEAD_SOURCES[0]:
            _tf_first_anchor_priors(n, source, config, spec)
            head["priorbox"] = n[f"{source}_mbox_priorbox"]
        heads.append(head)
    netspec.concat_heads(n, heads)


def _softmax_conf(n: Any, config: SsdModelConfig) -> None:
    """``mbox_conf_flatten``: per-prior class probabilities, as DetectionOutput reads them."""
    L, _ = netspec.caffe_layers()
    n.mbox_conf_reshape = L.Reshape(n.mbox_conf, reshape_param={"shape": {"dim": [0, -1, config.num_classes]}})
    n.mbox_conf_softmax = L.Softmax(n.mbox_conf_reshape, softmax_param={"axis": 2})
    n.mbox_conf_flatten = L.Flatten(n.mbox_conf_softmax, flatten_param={"axis": 1})


@dataclass(frozen=True)
class DetectionSettings:
    """``DetectionOutput``'s NMS and thresholds."""

    nms_threshold: float
    top_k: int
    keep_top_k: int
    confidence_threshold: float


#: The reference test net's (for mAP: low threshold, many boxes) and deploy net's settings.
TEST_DETECTION = DetectionSettings(0.45, 400, 200, 0.01)
DEPLOY_DETECTION = DetectionSettings(0.45, 100, 100, 0.25)


def _phase(name: str) -> int:
    """Caffe's ``TRAIN`` / ``TEST`` phase value."""
    return getattr(_caffe_pb2(), name)


def _detection_output(n: Any, config: SsdModelConfig, settings: DetectionSettings) -> None:
    L, P = netspec.caffe_layers()
    n.detection_out = L.DetectionOutput(
        n.mbox_loc, n.mbox_conf_flatten, n.mbox_priorbox, include={"phase": _phase("TEST")},
        detection_output_param={
            "num_classes": config.num_classes, "share_location": True, "background_label_id": 0,
            "nms_param": {"nms_threshold": settings.nms_threshold, "top_k": settings.top_k},
            "code_type": P.PriorBox.CENTER_SIZE, "keep_top_k": settings.keep_top_k,
            "confidence_threshold": settings.confidence_threshold})


def _multibox_loss(n: Any, config: SsdModelConfig) -> None:
    """SSD's loss: smooth L1 + softmax, matching at IoU 0.5, hard negatives 3:1 (MAX_NEGATIVE)."""
    L, P = netspec.caffe_layers()
    n.mbox_loss = L.MultiBoxLoss(
        n.mbox_loc, n.mbox_conf, n.mbox_priorbox, n.label, include={"phase": _phase("TRAIN")},
        propagate_down=[True, True, False, False], loss_param={"normalization": P.Loss.VALID},
        multibox_loss_param={
            "loc_loss_type": P.MultiBoxLoss.SMOOTH_L1, "conf_loss_type": P.MultiBoxLoss.SOFTMAX,
            "loc_weight": 1.0, "num_classes": config.num_classes, "share_location": True,
            "match_type": P.MultiBoxLoss.PER_PREDICTION, "overlap_threshold": 0.5,
            "use_prior_for_matching": True, "background_label_id": 0, "use_difficult_gt": True,
            "neg_pos_ratio": 3.0, "neg_overlap": 0.5, "code_type": P.PriorBox.CENTER_SIZE,
            "ignore_cross_boundary_bbox": False, "mining_type": P.MultiBoxLoss.MAX_NEGATIVE})


def _detection_evaluate(n: Any, config: SsdModelConfig) -> None:
    L, _ = netspec.caffe_layers()
    n.detection_eval = L.DetectionEvaluate(
        n.detection_out, n.label, include={"phase": _phase("TEST")},
        detection_evaluate_param={"num_classes": config.num_classes, "background_label_id": 0,
                                  "overlap_threshold": 0.5, "evaluate_difficult_gt": False})


def _net_with_placeholder_input(phase: str) -> Any:
    """A NetSpec whose first layer only names the input tops (``data``, and ``label`` for train/test);
    :func:`_layers_after_input` drops it again."""
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    n = caffe.NetSpec()
    if phase == "deploy":
        n.data = caffe.layers.Input()
    else:
        n.data, n.label = caffe.layers.AnnotatedData(ntop=2)
    return n


def _layers_after_input(n: Any) -> Any:
    net = n.to_proto()
    assert net.layer[0].name == "data", "the placeholder input must come first"
    del net.layer[0]
    return net


def _body_mults(phase: str) -> tuple[Mults, Mults]:
    """(backbone and loc heads, conf heads): the reference train net fine-tunes the backbone at 0.1x;
    its test net and the seed's deploy template use 1x everywhere (unused outside training)."""
    return (BACKBONE, FRESH) if phase == "train" else (FRESH, FRESH)


def net_layers(config: SsdModelConfig, phase: str) -> Any:
    """The ``NetParameter`` of the train / test / deploy net without its input (layers only)."""
    if phase not in ("train", "test", "deploy"):
        raise ValueError(f"unknown phase {phase!r} (train, test or deploy)")
    config.check()
    n = _net_with_placeholder_input(phase)
    body, conf = _body_mults(phase)
    _backbone(n, config, body)
    _heads(n, config, body, conf)
    if phase == "train":
        _multibox_loss(n, config)
    else:
        _softmax_conf(n, config)
        _detection_output(n, config, TEST_DETECTION if phase == "test" else DEPLOY_DETECTION)
        if phase == "test":
            _detection_evaluate(n, config)
    return _layers_after_input(n)


# --------------------------------------------------------------------------- the data layer (SSD fields)
class EnumValue(str):
    """A protobuf enum value: written without quotes."""


Fields = Sequence[tuple[str, Any]]


def prototxt_text(fields: Fields, indent: int = 0) -> str:
    """Protobuf text format of ``(key, value)`` pairs; a value that is a list of pairs is a nested
    message, a repeated field is a repeated key. Used only where Caffe's proto may lack the fields."""
    pad = "  " * indent
    lines = []
    for key, value in fields:
        if isinstance(value, list):
            lines.append(f"{pad}{key} {{")
            if value:
                lines.append(prototxt_text(value, indent + 1))
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{key}: {_scalar_text(value)}")
    return "\n".join(lines)


def _scalar_text(value: Any) -> str:
    if isinstance(value, EnumValue):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _resize(size: int, interpolations: Sequence[str]) -> list:
    return [("prob", 1.0), ("resize_mode", EnumValue("WARP")), ("height", size), ("width", size)] + [
        ("interp_mode", EnumValue(mode)) for mode in interpolations]


#: SSD's photometric distortion (each step with probability 0.5; channel order never shuffled).
DISTORTION = [("brightness_prob", 0.5), ("brightness_delta", 32.0), ("contrast_prob", 0.5),
              ("contrast_lower", 0.5), ("contrast_upper", 1.5), ("hue_prob", 0.5), ("hue_delta", 18.0),
              ("saturation_prob", 0.5), ("saturation_lower", 0.5), ("saturation_upper", 1.5),
              ("random_order_prob", 0.0)]
#: SSD's zoom-out: half of the images are placed on a canvas up to 4x their side.
EXPANSION = [("prob", 0.5), ("max_expand_ratio", 4.0)]
#: SSD's crop samplers: the whole image, then crops of 0.3-1 of the side (aspect 0.5-2) overlapping an
#: object by at least 0.1, 0.3, 0.5, 0.7, 0.9, or any amount; 50 tries each, one sample kept.
CROP_MIN_OVERLAPS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _batch_samplers() -> list:
    sampler = [("min_scale", 0.3), ("max_scale", 1.0), ("min_aspect_ratio", 0.5), ("max_aspect_ratio", 2.0)]
    samplers = [("batch_sampler", [("max_sample", 1), ("max_trials", 1)])]
    constraints = [[("min_jaccard_overlap", v)] for v in CROP_MIN_OVERLAPS] + [[("max_jaccard_overlap", 1.0)]]
    for constraint in constraints:
        samplers.append(("batch_sampler", [("sampler", sampler), ("sample_constraint", constraint),
                                           ("max_sample", 1), ("max_trials", 50)]))
    return samplers


def annotated_data_fields(config: SsdModelConfig, phase: str) -> list:
    """The ``AnnotatedData`` layer of the train net (SSD augmentation, mirror) or the test net (resize only)."""
    mean = [("mean_value", MEAN_VALUE)] * 3
    if phase == "train":
        transform = ([("scale", INPUT_SCALE), ("mirror", True)] + mean
                     + [("resize_param", _resize(config.size, ("LINEAR", "AREA", "NEAREST", "CUBIC", "LANCZOS4"))),
                        ("emit_constraint", [("emit_type", EnumValue("CENTER"))]),
                        ("distort_param", DISTORTION), ("expand_param", EXPANSION)])
        source, batch, samplers = config.train_lmdb, config.train_batch_size, _batch_samplers()
    elif phase == "test":
        transform = [("scale", INPUT_SCALE)] + mean + [("resize_param", _resize(config.size, ("LINEAR",)))]
        source, batch, samplers = config.test_lmdb, config.test_batch_size, [("batch_sampler", [])]
    else:
        raise ValueError(f"no data layer in the {phase} net")
    return [("name", "data"), ("type", "AnnotatedData"), ("top", "data"), ("top", "label"),
            ("include", [("phase", EnumValue(phase.upper()))]),
            ("transform_param", transform),
            ("data_param", [("source", source), ("batch_size", batch), ("backend", EnumValue("LMDB"))]),
            ("annotated_data_param", samplers + [("label_map_file", config.labelmap)])]


def annotated_data_text(config: SsdModelConfig, phase: str) -> str:
    return prototxt_text([("layer", annotated_data_fields(config, phase))]) + "\n"


# --------------------------------------------------------------------------- whole files
def net_text(config: SsdModelConfig, phase: str) -> str:
    """The prototxt of the ``train``, ``test`` or ``deploy`` net."""
    from google.protobuf import text_format

    layers = net_layers(config, phase)
    header = f'name: "{NET_NAME}"\n'
    if phase == "deploy":
        layers.input.append("data")
        layers.input_shape.add().dim.extend([1, 3, config.size, config.size])
        return header + text_format.MessageToString(layers)
    return header + annotated_data_text(config, phase) + text_format.MessageToString(layers)


@dataclass(frozen=True)
class SolverSettings:
    """The reference solver (RMSProp, lr 5e-4 halved at 20k and 40k iterations, VOC07 11-point mAP)."""

    base_lr: float = 0.0005
    max_iter: int = 120000
    stepvalues: tuple[int, ...] = (20000, 40000)
    gamma: float = 0.5
    weight_decay: float = 0.00005
    test_interval: int = 10000
    snapshot: int = 1000
    display: int = 10
    average_loss: int = 10


def solver_text(config: SsdModelConfig, train_net: str, test_net: str, snapshot_prefix: str,
                evaluate_only: bool = False, settings: SolverSettings = SolverSettings()) -> str:
    """``solver_train.prototxt`` or, with ``evaluate_only``, ``solver_test.prototxt`` (no iterations,
    no snapshot: ``caffe train --solver solver_test.prototxt --weights W`` runs one test pass, the mAP)."""
    from google.protobuf import text_format

    pb2 = _caffe_pb2()
    solver = pb2.SolverParameter()
    solver.train_net = train_net
    solver.test_net.append(test_net)
    solver.test_iter.append(config.test_iter)
    solver.test_interval = settings.test_interval
    solver.base_lr = settings.base_lr
    solver.display = settings.display
    solver.max_iter = 0 if evaluate_only else settings.max_iter
    solver.lr_policy = "multistep"
    solver.gamma = settings.gamma
    solver.weight_decay = settings.weight_decay
    solver.snapshot = settings.snapshot
    solver.snapshot_prefix = snapshot_prefix
    solver.solver_mode = pb2.SolverParameter.CPU
    solver.debug_info = False
    solver.snapshot_after_train = not evaluate_only
    solver.test_initialization = False
    solver.average_loss = settings.average_loss
    solver.stepvalue.extend(settings.stepvalues)
    solver.iter_size = 1
    solver.type = "RMSProp"
    solver.eval_type = "detection"
    solver.ap_version = "11point"
    return text_format.MessageToString(solver)


# --------------------------------------------------------------------------- checking inputs, writing
def lmdb_record_count(path: str | Path, option: str) -> int:
    """Records in the LMDB folder ``path``. Refuses a folder that is not a readable, non-empty LMDB
    of ``AnnotatedDatum`` records (its first record is decoded): Caffe would abort on it, or wait."""
    import lmdb
    from google.protobuf.message import DecodeError

    folder = Path(path)
    if not (folder / "data.mdb").is_file():
        raise ModelConfigError(f"{option} {path}: no LMDB there (expected a folder with data.mdb); create it "
                               "first, or leave the option out to write the seed's default path")
    try:
        with lmdb.open(str(folder), readonly=True, lock=False, subdir=True) as env, env.begin() as txn:
            count = env.stat()["entries"]
            first = next(iter(txn.cursor()), None)
    except lmdb.Error as exc:
        raise ModelConfigError(f"{option} {path}: not a readable LMDB: {exc}") from exc
    if first is None:
        raise ModelConfigError(f"{option} {path}: the LMDB holds no records")
    datum = _caffe_pb2().AnnotatedDatum()
    try:
        datum.ParseFromString(first[1])
    except (DecodeError, RuntimeError, ValueError):  # the pure-Python or the C++ protobuf backend
        datum.Clear()
    if not datum.HasField("type"):
        raise ModelConfigError(f"{option} {path}: its records are not SSD AnnotatedDatum (first key "
                               f"{first[0][:40]!r}); Caffe's AnnotatedData layer cannot read this LMDB")
    return count


def _caffe_pb2() -> Any:
    from caffe_common.env import import_caffe

    return import_caffe().proto.caffe_pb2


def resolve_config(num_classes: int, *, train_lmdb: str | Path | None = None, test_lmdb: str | Path | None = None,
                   labelmap: str | Path | None = None, **options: Any) -> tuple[SsdModelConfig, list[str]]:
    """A checked config and notes for the user. Given paths are checked (LMDBs exist and hold records,
    the label map fits ``num_classes``) and written as absolute paths (symbolic links kept); omitted ones
    get the seed's relative defaults. Train and test LMDB must be different paths (see the error). The test LMDB's record count sets ``test_iter`` (one pass over the test set).
    Without ``labelmap``, the seed's ``labelmap.prototxt`` is checked if the current folder has one."""
    from .labelmap import load_labelmap

    config = SsdModelConfig(num_classes, **options)
    config.check()
    notes = []
    changes: dict[str, Any] = {}
    if train_lmdb is not None:
        lmdb_record_count(train_lmdb, "--train-lmdb")
        changes["train_lmdb"] = str(Path(train_lmdb).absolute())
    if test_lmdb is not None:
        count = lmdb_record_count(test_lmdb, "--test-lmdb")
        changes["test_lmdb"] = str(Path(test_lmdb).absolute())
        changes["test_iter"] = math.ceil(count / config.test_batch_size)
        notes.append(f"test_iter {changes['test_iter']}: {count} test images in batches of {config.test_batch_size}")
    if labelmap is not None:
        load_labelmap(labelmap, num_classes)
        changes["labelmap"] = str(Path(labelmap).absolute())
    elif Path(config.labelmap).is_file():
        load_labelmap(config.labelmap, num_classes)
        notes.append(f"checked ./{config.labelmap} (the seed's default label map, read when training runs here)")
    if changes.get("train_lmdb", config.train_lmdb) == changes.get("test_lmdb", config.test_lmdb):
        raise ModelConfigError(
            f"--train-lmdb and --test-lmdb are the same path ({changes['train_lmdb']}): Caffe shares one reader "
            "between data layers with the same name and source, and the test net would wait for ever; to test "
            "on the training set, pass a symbolic link to it as --test-lmdb")
    return replace(config, **changes), notes


@dataclass
class GeneratedModel:
    """What :func:`write_model` wrote."""

    config: SsdModelConfig
    files: dict[str, Path]
    feature_maps: tuple[int, ...]
    priors: int
    notes: list[str] = field(default_factory=list)


def write_model(config: SsdModelConfig, out_dir: str | Path, notes: Sequence[str] = ()) -> GeneratedModel:
    """Write the three nets and two solvers into ``out_dir`` (each file atomically; all are built
    before the first is written). The solvers name the nets and ``out_dir/snapshot/mobilenet`` by
    absolute path, so training can start from any folder."""
    config.check()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelConfigError(f"--out {out_dir}: exists and is not a folder")
    root = out.resolve()
    train, test = str(root / TRAIN_NET), str(root / TEST_NET)
    snapshot_prefix = str(root / "snapshot" / "mobilenet")
    texts = {TRAIN_NET: net_text(config, "train"), TEST_NET: net_text(config, "test"),
             DEPLOY_NET: net_text(config, "deploy"),
             SOLVER_TRAIN: solver_text(config, train, test, snapshot_prefix),
             SOLVER_TEST: solver_text(config, train, test, snapshot_prefix, evaluate_only=True)}
    try:
        (root / "snapshot").mkdir(parents=True, exist_ok=True)
        files = {name: write_text_atomic(root / name, text) for name, text in texts.items()}
    except OSError as exc:
        raise ModelConfigError(f"--out {out_dir}: cannot write there: {exc}") from exc
    return GeneratedModel(config, files, feature_map_sizes(config.size), prior_count(config), list(notes))
