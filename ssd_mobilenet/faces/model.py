"""The face network's train and deploy nets, solver and model description, from the shared builders.

**Layouts** (:data:`ARCHS`, ``--arch``): torchvision's MobileNetV2
(:func:`ssd_mobilenet.mobilenet_v2.add_mobilenet_v2`, width 1.0, layer names equal to the converted ImageNet
weights, so ``--init imagenet`` copies them by name), then SSDLite-style extra blocks (inverted residuals with
stride 2). ``mobilenet_v2`` (:data:`FULL_ARCH`, the default) keeps it whole up to ``features.18`` (the 1x1
convolution to 1280 channels; no pooling, no classifier): 2.5 M parameters, a 10 MB caffemodel. ``compact``
(:data:`COMPACT_ARCH`) cuts it after ``features.12`` (stride 16): 0.5 M parameters, a 1.9 MiB caffemodel once
folded, 1.3x faster; it needs longer training (the shipped model: 13,800 iterations in eleven learning-rate
cycles, held-out WIDER AP 0.570 with two passes; bench/RESULTS.md).

**Heads** (:attr:`FaceArch.heads`, the seed's "loss at several depths"): one 1x1 multibox head per map
(:func:`caffe_common.netspec.multibox_head`: conf 3 = background / face / partial face, loc 4, lmk 10 per
prior). The stride-8 and stride-16 heads read *expansion* layers (``features.7/expand``, 192 channels, and
``features.12/expand`` or ``features.14/expand``, 576, after ReLU6), as SSDLite does, not the 32- and
96-channel linear bottlenecks: a 1x1 head on a 32-channel linear projection has too little to read from.

**Priors**: square only (``PriorBox`` with ``min_size`` values, aspect ratio 1, no ``max_size``), variances
0.1 0.1 0.2 0.2, not clipped. Sides 16, 24, 32, 48, 64, 96, 128, 192, 256 pixels of the net input, two per map
(one on the last): consecutive sides differ by 1.5 (1.33 at the end), so a centred square face of any size
from 16 to 320 overlaps its nearest prior with IoU >= 1 / 1.5 = 0.67, well above the 0.5 matching threshold
(with factor-2 steps a face halfway would reach only 0.5); each map's sides are 2 and 3 times its stride,
so neighbouring priors of a size still overlap each other (IoU 0.39 / 0.53 at half a stride off). The
sides are pixels of the net input, tied to the strides, not to the input side: at 320 x 320 (the default)
the largest prior (256) covers 80% of the image, and the same net run at a larger ``--size`` finds
smaller faces with the same priors per stride. Feature maps at 320: 40, 20, 10, 5, 3 -> 3200 + 800 + 200 +
50 + 9 = **4259 priors**. Caffe's ``PriorBox`` computes the step as input side / map side (8, 16, 32, 64,
106.7 at 320); sizes are multiples of 32, so the first three equal the strides exactly.

**Train net**: ``FaceDataLayer`` (``ssd_mobilenet.faces.data_layer``: ``data``, ``gt``) -> backbone -> heads ->
``FacePriorTargetLayer`` (per-prior targets) -> three shared losses (:mod:`caffe_common.loss_layers`). From
ImageNet weights (the default) the backbone is fine-tuned gently: its BatchNorm stays at the stored ImageNet
statistics and affine (batches of 16 on a CPU are too small to estimate statistics). With ``backbone_bn="affine"``
(the default) each such BatchNorm + Scale pair, a fixed per-channel map ``a * x + c``, is held by the Scale
layer alone (no BatchNorm layers; init weights from :func:`caffe_common.merge_bn.batch_norm_into_scale`, the
Scale not learned): the same function and the same gradients as ``backbone_bn="frozen"`` (BatchNorm layers
with ``use_global_stats``, Scale not learned; tested), 1.55x faster per iteration at 320
(``bench/face_train_speed.py``) because Caffe's BatchNorm costs several passes forward and backward.
``backbone_bn="folded"`` computes the same function with the BatchNorm folded into the convolutions (no
BatchNorm/Scale layers in the backbone, biases on its convolutions, init weights from
:mod:`caffe_common.merge_bn`), but SGD then steps each channel's weights at a rate scaled by the square of its
BatchNorm factor, and measured on the shared subset it learned far slower (landmark loss 9.2 vs 4.4 over
iterations 100-200 at the same rate, box loss 2.5 vs 2.1), so it is not the
default. The backbone's convolutions learn at 0.1x the rate of the new layers (MobileNet-SSD's
multiplier; at the full rate of 1e-3 the frozen-BN MobileNetV2 diverges within 20 iterations even on one
repeated batch, at 0.1x it converges), and the stride-2/4 blocks ``features.0-3`` are not trained (without
BatchNorm layers there Caffe then skips their backward pass, a quarter of an iteration; with frozen BatchNorm
layers it still back-propagates through them, measured). From
scratch (``backbone_bn="batch"``, ``frozen_blocks`` 0, ``backbone_lr`` 1) everything learns, with BatchNorm on
the batch statistics. Losses:

* ``loss_conf``: ``OhemSoftmaxLoss`` ``{"neg_pos_ratio": 3, "per_image": true}`` (SSD's hard negatives);
* ``loss_box``: ``MaskedSmoothL1Loss`` on priors matched to any box (face or partial);
* ``loss_lmk``: ``MaskedSmoothL1Loss`` on priors matched to a box with landmarks only. Smooth L1 rather than
  Euclidean: landmark targets (offsets in tenths of the prior side) are often several units for a
  loosely matched prior, and a squared loss would give those priors gradients many times larger than
  the box loss's (smooth L1's gradient is bounded by 1, as RetinaFace trains its landmarks).

With a teacher (``FaceModelConfig.teacher``, a trained face model folder of the same priors, ``train-faces
--teacher``): ``loss_distill``, ``SoftTargetLoss`` of the conf logits against the teacher's per-prior
probabilities on the same batch (``FaceTeacherLayer``), on every prior, normalised by the positives.

Loss weights (:class:`LossWeights`): conf 4, box 1, landmarks 1 (distillation 1). ``OhemSoftmaxLoss`` averages
over the kept rows (positives + 3x as many negatives), while Caffe's ``MultiBoxLoss`` divides the confidence sum
by the positives only; weight ``1 + neg_pos_ratio`` = 4 makes ``loss_conf + loss_box`` exactly SSD's objective.
The box and landmark losses are both averaged over their matched priors, with offsets in comparable units
(variance 0.1 of the prior side for box centres and for points), so both get weight 1.

**Deploy net**: standard layers only (Input, Convolution, BatchNorm, Scale, ReLU6, Eltwise, Permute,
Flatten, Reshape, Softmax, Concat, PriorBox; with ``affine`` the backbone's convolutions are followed by a
Scale alone, as in training, which ``merge_bn`` folds), outputs ``mbox_loc`` (1, P*4), ``mbox_conf`` (1, P*3, softmax
probabilities), ``mbox_lmk`` (1, P*10), ``mbox_priorbox`` (1, 2, P*4); decoding and NMS happen in
:mod:`ssd_mobilenet.faces.detect`. ``face_model.json`` (:func:`model_description`) holds the input size,
the preprocessing, the priors, the variances, the class names and the default thresholds.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caffe_common import netspec
from caffe_common.atomic import write_json_atomic, write_text_atomic
from caffe_common.face_annotations import FIVE_POINT_NAMES
from caffe_common.merge_bn import scale_pairs, without_batch_norm
from caffe_common.netspec import FRESH, Mults, PriorSpec

from ..mobilenet_v2 import add_mobilenet_v2, last_channels, set_batch_norm
from .preprocess import INPUT_SIZE
from .targets import (
    KINDS,
    LANDMARK_VARIANCE,
    NUM_CLASSES,
    NUM_LANDMARKS,
    OVERLAP_THRESHOLD,
    PRIOR_VARIANCE,
)

NET_NAME = "FaceMultitask"
TRAIN_NET, DEPLOY_NET, SOLVER = "face_train.prototxt", "face_deploy.prototxt", "face_solver.prototxt"
WEIGHTS, MODEL_JSON = "face.caffemodel", "face_model.json"
MODEL_FORMAT = 1
DEFAULT_SIZE = INPUT_SIZE
#: Input sides accepted: multiples of 32 (the backbone's stride) in this range.
SIZE_STEP, MIN_SIZE, MAX_SIZE = 32, 64, 2048
DATA_LAYER = ("ssd_mobilenet.faces.data_layer", "FaceDataLayer")
TARGET_LAYER = ("ssd_mobilenet.faces.layers", "FacePriorTargetLayer")
TEACHER_LAYER = ("ssd_mobilenet.faces.layers", "FaceTeacherLayer")
LOSS_MODULE = "caffe_common.loss_layers"
#: Values per prior of each head output (``<map>_mbox_<kind>`` convolutions, ``mbox_<kind>`` blobs).
HEAD_VALUES = {"loc": 4, "conf": NUM_CLASSES, "lmk": 2 * NUM_LANDMARKS}
#: Deploy outputs by role (what :mod:`ssd_mobilenet.faces.detect` reads).
OUTPUTS = {"loc": "mbox_loc", "conf": "mbox_conf", "landmarks": "mbox_lmk", "priors": "mbox_priorbox"}
CLASS_NAMES = tuple(sorted(KINDS, key=KINDS.get))
#: The annotations' point order (the 10 landmark outputs interleave x, y in this order).
LANDMARK_NAMES = FIVE_POINT_NAMES


#: How the backbone's BatchNorm trains (:attr:`FaceModelConfig.backbone_bn`).
BACKBONE_BN = ("affine", "frozen", "folded", "batch")


class FaceModelError(ValueError):
    """Settings no face net can be built from, or a model description that cannot be used."""


@dataclass(frozen=True)
class FaceHead:
    """One prediction map: the feature blob it reads, its stride and its square prior sides (pixels)."""

    source: str
    stride: int
    prior_sizes: tuple[float, ...]

    def prior_spec(self) -> PriorSpec:
        return PriorSpec(self.prior_sizes, None, (), clip=False, variance=PRIOR_VARIANCE)


@dataclass(frozen=True)
class FaceArch:
    """A face-net layout: the MobileNetV2 blocks kept (``features.0`` .. ``features.<last_block>``), the stride-2
    extra blocks after them (name, input channels, output channels, expansion) and the heads."""

    name: str
    last_block: int
    extra_blocks: tuple[tuple[str, int, int, float], ...]
    heads: tuple[FaceHead, ...]


#: The first backbone block a head reads (``features.7/expand``), in every layout.
FIRST_HEAD_BLOCK = 7
#: The whole MobileNetV2 (2.5 M parameters, a 10 MB caffemodel): cut after ``features.18``, heads on the
#: expansions of blocks 7 and 14, on ``features.18`` and on two light extra blocks.
FULL_ARCH = FaceArch(
    "mobilenet_v2", 18, (("extra1", last_channels(), 256, 0.1), ("extra2", 256, 128, 0.25)),
    (FaceHead("features.7/expand", 8, (16.0, 24.0)),
     FaceHead("features.14/expand", 16, (32.0, 48.0)),
     FaceHead("features.18", 32, (64.0, 96.0)),
     FaceHead("extra1/project", 64, (128.0, 192.0)),
     FaceHead("extra2/project", 128, (256.0,))))
#: MobileNetV2 cut after ``features.12`` (stride 16, 96 channels): 0.5 M parameters once folded (a 1.9 MiB
#: caffemodel, under the repository's 2 MB limit for a tracked file). The stride-32 map, which
#: ``features.13-18`` (1.8 M parameters) made in the full layout, is one inverted residual with expansion 1.5,
#: read at its depthwise layer (144 channels after ReLU6) as SSDLite reads expansions; the same priors per
#: stride as the full layout.
COMPACT_ARCH = FaceArch(
    "compact", 12, (("extra1", 96, 128, 1.5), ("extra2", 128, 128, 0.25), ("extra3", 128, 64, 0.25)),
    (FaceHead("features.7/expand", 8, (16.0, 24.0)),
     FaceHead("features.12/expand", 16, (32.0, 48.0)),
     FaceHead("extra1/dw", 32, (64.0, 96.0)),
     FaceHead("extra2/project", 64, (128.0, 192.0)),
     FaceHead("extra3/project", 128, (256.0,))))
ARCHS = {arch.name: arch for arch in (FULL_ARCH, COMPACT_ARCH)}
DEFAULT_ARCH = FULL_ARCH.name


def face_arch(name: str) -> FaceArch:
    """The layout called ``name`` (:data:`ARCHS`), or :class:`FaceModelError` listing them."""
    if name not in ARCHS:
        raise FaceModelError(f"--arch {name!r}: choose from {', '.join(ARCHS)}")
    return ARCHS[name]


@dataclass(frozen=True)
class LossWeights:
    """``loss_weight`` of the three losses and of distillation (see the module docstring for the defaults)."""

    conf: float = 4.0
    box: float = 1.0
    landmark: float = 1.0
    #: ``loss_distill`` (only with a teacher), a sum over every prior per positive one: measured 10-20 (face_c2
    #: against the whole net) where the weighted confidence loss is 2-3, so weight 1 already lets the
    #: teacher lead.
    distill: float = 1.0


@dataclass(frozen=True)
class Thresholds:
    """The detector's defaults: lowest face / partial-face probability kept, NMS IoU, candidates before NMS
    (best first), faces kept after it, and the least fraction of a box's area that must lie inside the
    image (a padded input shows no picture around the image, yet the net fires there: see
    :func:`~ssd_mobilenet.faces.detect.decode_faces`)."""

    conf: float = 0.5
    nms: float = 0.4
    top_k: int = 2000
    keep_top_k: int = 750
    min_inside: float = 0.9
    #: With several input sizes, a pass at a larger size than the first keeps only faces narrower than this
    #: many of its input pixels (the first finds the big ones; enlarged, they set off false alarms).
    enlarged_max_face: float = 96.0


@dataclass(frozen=True)
class FaceModelConfig:
    """What the train net reads: input side, batch, the data layer (``(module, class)``, a Caffe Python layer
    taking :func:`data_layer_params` and giving ``data`` and ``gt``) with its index and seed, augmentation, losses."""

    size: int = DEFAULT_SIZE
    #: The layout (:data:`ARCHS`): "mobilenet_v2" (the whole backbone) or "compact" (a model under 2 MB).
    arch: str = DEFAULT_ARCH
    batch_size: int = 16
    index: str = "face_index.json"
    seed: int = 0
    augment: bool = True
    #: Times each WIDER image appears per epoch (landmark images once): 3 makes the 670 WIDER images of the
    #: shared subset 45% of the samples instead of 21% beside its 2,500 single-face landmark images.
    wider_repeat: int = 3
    neg_pos_ratio: float = 3.0
    loss_weights: LossWeights = field(default_factory=LossWeights)
    data_layer: tuple[str, str] = DATA_LAYER
    #: The backbone's BatchNorm: "frozen" (stored ImageNet statistics and affine, as fine-tuned detectors keep
    #: it with small batches), "affine" (the same map held by the Scale layers alone, no BatchNorm layers: the
    #: same training, faster), "folded" (the same, folded into the convolutions: faster, learns slower) or
    #: "batch" (batch statistics, learned affine: from scratch).
    backbone_bn: str = "affine"
    #: Blocks ``features.0`` .. ``features.<k-1>`` not trained (stride <= 4, generic edges): their backward
    #: pass, a quarter of an iteration at 320, is skipped. 0 when the backbone starts from its fillers.
    frozen_blocks: int = 4
    #: Learning-rate multiplier of the (pretrained) backbone's convolutions; the new layers have 1. 1 from scratch.
    backbone_lr: float = 0.1
    #: Depthwise layer type of the train net: None = grouped ``Convolution``, or the native
    #: ``ConvolutionDepthwise`` (same weights, much faster; :func:`caffe_common.depthwise.resolve_depthwise`).
    #: The deploy net always uses grouped convolution, which every runtime loads.
    depthwise_type: str | None = None
    #: A trained face model folder whose class probabilities the net also learns (distillation, with
    #: ``FaceTeacherLayer`` and ``SoftTargetLoss``); it must have the same priors. None: no teacher.
    teacher: str | None = None
    #: The teacher's inference backend ("opencv", faster, or "caffe").
    teacher_backend: str = "opencv"

    def check(self) -> None:
        check_size(self.size)
        face_arch(self.arch)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FaceModelError(f"--batch {self.batch_size}: must be a whole number >= 1")
        weights = asdict(self.loss_weights)
        if any(not (isinstance(v, (int, float)) and v >= 0) for v in weights.values()) or not any(weights.values()):
            raise FaceModelError(f"loss weights {weights}: must be >= 0, at least one positive")
        if not self.neg_pos_ratio >= 0:
            raise FaceModelError(f"neg_pos_ratio {self.neg_pos_ratio}: must be >= 0")
        if isinstance(self.wider_repeat, bool) or not isinstance(self.wider_repeat, int) or self.wider_repeat < 1:
            raise FaceModelError(f"--wider-repeat {self.wider_repeat}: must be a whole number >= 1")
        if self.backbone_bn not in BACKBONE_BN:
            raise FaceModelError(f"backbone_bn {self.backbone_bn!r}: one of {', '.join(BACKBONE_BN)}")
        if not self.backbone_lr >= 0:
            raise FaceModelError(f"backbone_lr {self.backbone_lr}: must be >= 0")
        if not 0 <= self.frozen_blocks <= FIRST_HEAD_BLOCK:
            raise FaceModelError(f"frozen_blocks {self.frozen_blocks}: must be in 0 .. {FIRST_HEAD_BLOCK} (the "
                                 "first head reads block 7)")


def check_size(size: int) -> int:
    """``size`` when it is a usable input side, else :class:`FaceModelError` saying which are."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE or size % SIZE_STEP:
        raise FaceModelError(f"--size {size}: choose a multiple of {SIZE_STEP} from {MIN_SIZE} to {MAX_SIZE} "
                             f"({DEFAULT_SIZE} is the default)")
    return size


def check_sizes(sizes: Any, what: str = "--size") -> tuple[int, ...]:
    """A non-empty list of usable input sides (:func:`check_size`) as a sorted tuple without repeats (the
    detector's passes, smallest first), else :class:`FaceModelError` naming ``what``."""
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise FaceModelError(f"{what} must be a non-empty list of input sides, not {sizes!r}")
    for size in sizes:
        check_size(size)
    return tuple(sorted(set(sizes)))


# --------------------------------------------------------------------------- shapes and priors
def _halve(side: int) -> int:
    """A stride-2 3x3 convolution with pad 1, as Caffe sizes it."""
    return (side - 1) // 2 + 1


def feature_map_sizes(size: int, arch: str = DEFAULT_ARCH) -> tuple[int, ...]:
    """Sides of the head maps of layout ``arch`` for a ``size`` x ``size`` input (40, 20, 10, 5, 3 at 320)."""
    check_size(size)
    heads = face_arch(arch).heads
    side, by_stride = size, {}
    for stride in (2, 4, 8, 16, 32, 64, 128):
        side = _halve(side)
        by_stride[stride] = side
    return tuple(by_stride[head.stride] for head in heads)


def prior_count(size: int, arch: str = DEFAULT_ARCH) -> int:
    """Priors per image of layout ``arch`` at input side ``size`` (4259 at 320)."""
    return sum(side * side * head.prior_spec().priors_per_cell
               for side, head in zip(feature_map_sizes(size, arch), face_arch(arch).heads))


# --------------------------------------------------------------------------- the network
#: Layer types with learnable weights in the backbone (the native depthwise types included).
_LEARNING_TYPES = frozenset({"Convolution", "ConvolutionDepthwise", "DepthwiseConvolution", "Scale"})


def in_backbone(name: str, blocks: int | None = None) -> bool:
    """Whether layer ``name`` belongs to the backbone blocks ``features.0`` .. ``features.<blocks-1>`` (all:
    None); the heads reading a backbone map (``features.7/expand_mbox_loc``) do not."""
    head = name.split("/")[0]
    return (head.startswith("features.") and "_mbox_" not in name
            and (blocks is None or int(head.split(".")[1]) < blocks))


def _backbone_layers(n: Any, kinds: frozenset[str], blocks: int | None = None) -> list[Any]:
    """The NetSpec layers of a type in ``kinds`` in blocks ``features.0`` .. ``features.<blocks-1>`` (all: None)."""
    return [top.fn for name, top in n.tops.items() if top.fn.type_name in kinds and in_backbone(name, blocks)]


def _freeze_for_training(n: Any, config: FaceModelConfig) -> None:
    """Stored BatchNorm statistics and fixed Scale layers in the backbone (``backbone_bn`` "frozen" or
    "affine") and no learning in its first ``frozen_blocks`` blocks (lr_mult 0 on every weight and bias)."""
    frozen = _backbone_layers(n, _LEARNING_TYPES, config.frozen_blocks)
    if config.backbone_bn in ("frozen", "affine"):
        for layer in _backbone_layers(n, frozenset({"BatchNorm"})):
            layer.params["batch_norm_param"] = {**layer.params["batch_norm_param"], "use_global_stats": True}
        frozen += _backbone_layers(n, frozenset({"Scale"}))
    for layer in frozen:
        layer.params["param"] = [{"lr_mult": 0, "decay_mult": 0}] * len(layer.params["param"])


def _body(n: Any, data: Any, config: FaceModelConfig, deploy: bool) -> list[dict[str, Any]]:
    """Backbone, extra blocks and the heads (per map: ``loc``, ``conf``, ``lmk``, ``priorbox`` tops) of the
    train or the deploy net of ``config``."""
    rate = 1.0 if deploy else config.backbone_lr
    depthwise_type = None if deploy else config.depthwise_type
    arch = face_arch(config.arch)
    tops = add_mobilenet_v2(n, data, num_classes=None, deploy=deploy, mults=Mults(rate, rate, 2 * rate, 0.0),
                            pool=False, depthwise_type=depthwise_type, bn=config.backbone_bn != "folded",
                            last_block=arch.last_block)
    top = tops[f"features.{arch.last_block}"]
    for name, in_channels, out_channels, expansion in arch.extra_blocks:
        top = netspec.inverted_residual(n, name, top, in_channels, out_channels, 2, expansion, act="relu6",
                                        mults=FRESH, depthwise_type=depthwise_type)
    set_batch_norm(n, deploy)
    if not deploy:
        _freeze_for_training(n, config)
    extra = [(kind, values) for kind, values in HEAD_VALUES.items() if kind not in ("loc", "conf")]
    return [netspec.multibox_head(n, head.source, data, NUM_CLASSES, head.prior_spec(), FRESH, FRESH,
                                  extra_outputs=extra) for head in arch.heads]


def _deploy_outputs(n: Any, heads: Sequence[dict[str, Any]]) -> None:
    """``mbox_loc``, ``mbox_lmk``, ``mbox_priorbox`` concatenated; ``mbox_conf`` the per-prior softmax of the
    concatenated logits (``mbox_conf_logits``), flattened as SSD's ``mbox_conf_flatten``."""
    L, _ = netspec.caffe_layers()
    netspec.concat_heads(n, heads, kinds=("loc", "lmk", "priorbox"))
    n["mbox_conf_logits"] = L.Concat(*[head["conf"] for head in heads], concat_param={"axis": 1})
    n["mbox_conf_reshape"] = L.Reshape(n["mbox_conf_logits"],
                                       reshape_param={"shape": {"dim": [0, -1, NUM_CLASSES]}})
    n["mbox_conf_softmax"] = L.Softmax(n["mbox_conf_reshape"], softmax_param={"axis": 2})
    n["mbox_conf"] = L.Flatten(n["mbox_conf_softmax"], flatten_param={"axis": 1})


def _python(module_layer: tuple[str, str], *bottoms: Any, params: Mapping[str, Any] | None = None,
            **kwargs: Any) -> Any:
    L, _ = netspec.caffe_layers()
    module, layer = module_layer
    python_param = {"module": module, "layer": layer}
    if params is not None:
        python_param["param_str"] = json.dumps(dict(params), sort_keys=True)
    return L.Python(*bottoms, python_param=python_param, **kwargs)


def data_layer_params(config: FaceModelConfig) -> dict[str, Any]:
    """The ``FaceDataLayer`` ``param_str`` of ``config``."""
    return {"index": config.index, "batch_size": config.batch_size, "size": config.size, "seed": config.seed,
            "augment": config.augment, "wider_repeat": config.wider_repeat}


def _losses(n: Any, config: FaceModelConfig) -> None:
    """Targets per prior, then the three losses (module docstring)."""
    n.cls_label, n.box_target, n.box_label, n.lmk_target, n.lmk_label = _python(
        TARGET_LAYER, n.mbox_priorbox, n.gt, n.data, ntop=5, params={"overlap": OVERLAP_THRESHOLD})
    weights = config.loss_weights
    n.loss_conf = _python((LOSS_MODULE, "OhemSoftmaxLoss"), n.mbox_conf, n.cls_label, loss_weight=weights.conf,
                          propagate_down=[True, False],
                          params={"neg_pos_ratio": config.neg_pos_ratio, "per_image": True})
    n.loss_box = _python((LOSS_MODULE, "MaskedSmoothL1Loss"), n.mbox_loc, n.box_target, n.box_label,
                         loss_weight=weights.box, propagate_down=[True, False, False], params={"labels": [1]})
    n.loss_lmk = _python((LOSS_MODULE, "MaskedSmoothL1Loss"), n.mbox_lmk, n.lmk_target, n.lmk_label,
                         loss_weight=weights.landmark, propagate_down=[True, False, False], params={"labels": [1]})
    if config.teacher is not None:
        n.teacher_conf = _python(TEACHER_LAYER, n.data, n.mbox_priorbox,
                                 params={"model_dir": config.teacher, "backend": config.teacher_backend})
        n.loss_distill = _python((LOSS_MODULE, "SoftTargetLoss"), n.mbox_conf, n.teacher_conf, n.cls_label,
                                 loss_weight=weights.distill, propagate_down=[True, False, False])


def net_param(config: FaceModelConfig, phase: str) -> Any:
    """The ``NetParameter`` of the ``train`` or ``deploy`` net."""
    from caffe_common.env import import_caffe

    config.check()
    caffe = import_caffe()
    n = caffe.NetSpec()
    if phase == "train":
        n.data, n.gt = _python(config.data_layer, ntop=2, params=data_layer_params(config))
        heads = _body(n, n.data, config, deploy=False)
        netspec.concat_heads(n, heads, kinds=("loc", "conf", "lmk", "priorbox"))
        _losses(n, config)
    elif phase == "deploy":
        n.data = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, config.size, config.size]}})
        _deploy_outputs(n, _body(n, n.data, config, deploy=True))
    else:
        raise ValueError(f"unknown phase {phase!r} (train or deploy)")
    net = n.to_proto()
    if config.backbone_bn == "affine":  # the backbone's BatchNorm as its Scale alone (caffe_common.merge_bn)
        net = without_batch_norm(net, scale_pairs(net, in_backbone))
    net.name = NET_NAME
    return net


def net_text(config: FaceModelConfig, phase: str) -> str:
    """The prototxt of the ``train`` or ``deploy`` net."""
    return str(net_param(config, phase))


def check_face_heads(net: Any, path: str | Path, phase: int) -> None:
    """Refuse a face net whose head convolutions do not fit the priors of their maps (names the layer;
    :class:`~ssd_mobilenet.heads.HeadMismatchError`). Deploy nets: the conf head ends in ``mbox_conf_logits``."""
    from .. import heads

    conf = "mbox_conf" if any(layer.name == "loss_conf" for layer in net.layer) else "mbox_conf_logits"
    heads.check_head_outputs(net, path, phase, {"mbox_loc": (HEAD_VALUES["loc"], "location"),
                                                conf: (HEAD_VALUES["conf"], "confidence"),
                                                "mbox_lmk": (HEAD_VALUES["lmk"], "landmark")})


# --------------------------------------------------------------------------- solver
@dataclass(frozen=True)
class SolverSettings:
    """SGD with momentum 0.9 at 1e-3 (SSD's and RetinaFace's rate; 1e-2 diverges within a few iterations),
    divided by 10 at 2/3 and 8/9 of the run, weight decay 5e-4."""

    base_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    gamma: float = 0.1
    steps: tuple[float, ...] = (2 / 3, 8 / 9)
    #: Caffe's ``clip_gradients``: the global L2 norm of all parameter gradients is scaled down to this
    #: when larger (0: off). Early iterations of a fresh head on a pretrained backbone give rare huge
    #: gradients (landmark offsets of loosely matched priors); clipping them lets a higher rate be used.
    clip_gradients: float = 0.0


def solver_text(train_net: str | Path, max_iter: int, seed: int = 0, settings: SolverSettings = SolverSettings()) -> str:
    """The solver prototxt (CPU) of ``max_iter`` iterations of ``train_net`` (snapshots beside it when Caffe's
    own ``caffe train`` runs it; the toolkit's loop writes its own into ``snapshots/``)."""
    if max_iter < 1:
        raise FaceModelError(f"--iters {max_iter}: must be at least 1")
    lines = [f"net: {json.dumps(str(train_net))}", 'type: "SGD"', f"base_lr: {settings.base_lr:g}",
             'lr_policy: "multistep"', f"gamma: {settings.gamma:g}"]
    lines += [f"stepvalue: {max(1, round(max_iter * s))}" for s in settings.steps]
    if settings.clip_gradients > 0:
        lines.append(f"clip_gradients: {settings.clip_gradients:g}")
    lines += [f"momentum: {settings.momentum:g}", f"weight_decay: {settings.weight_decay:g}", f"max_iter: {max_iter}",
              f"snapshot: {max(1, min(1000, max_iter // 10))}",
              f"snapshot_prefix: {json.dumps(str(Path(train_net).parent / 'face'))}", f"random_seed: {seed}",
              "solver_mode: CPU", "display: 0"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- face_model.json
def preprocessing() -> dict[str, Any]:
    """The input convention (:mod:`ssd_mobilenet.faces.preprocess`, the one place that applies it), as
    face_model.json records it for readers outside this toolkit."""
    from .preprocess import DEFAULT_FIT, MEAN_BGR_PIXEL, MEAN_RGB, STD_RGB

    return {"module": "ssd_mobilenet.faces.preprocess", "fit": DEFAULT_FIT,
            "resize": ("bilinear, keeping the aspect, long side to the input size, at the top-left of a square "
                       f"filled with the mean colour (BGR {list(MEAN_BGR_PIXEL)})"),
            "channels": "RGB", "mean": [round(v, 4) for v in MEAN_RGB], "std": [round(v, 4) for v in STD_RGB],
            "formula": "(pixel - mean) / std"}


def default_detect_sizes(size: int) -> list[int]:
    """The input sizes a detector runs by default for a model trained at ``size``: that size, then twice it
    (within :data:`MAX_SIZE`) for the faces too small for it. On the held-out WIDER event the second pass
    raised the compact model's AP from 0.345 to 0.427 (bench/RESULTS.md)."""
    return [size] + ([2 * size] if 2 * size <= MAX_SIZE else [])


def model_description(size: int, thresholds: Thresholds = Thresholds(), arch: str = DEFAULT_ARCH) -> dict[str, Any]:
    """The contents of ``face_model.json`` for layout ``arch``."""
    check_size(size)
    return {
        "format": MODEL_FORMAT,
        "name": NET_NAME,
        "arch": face_arch(arch).name,
        "deploy": DEPLOY_NET,
        "weights": WEIGHTS,
        "input": {"blob": "data", "size": [size, size], "detect_sizes": default_detect_sizes(size)},
        "preprocessing": preprocessing(),
        "outputs": dict(OUTPUTS),
        "classes": list(CLASS_NAMES),
        "landmarks": list(LANDMARK_NAMES),
        "priors": {"count": prior_count(size, arch),
                   "maps": [{"source": head.source, "stride": head.stride, "side": side,
                             "min_sizes": list(head.prior_sizes)}
                            for head, side in zip(face_arch(arch).heads, feature_map_sizes(size, arch))],
                   "variance": list(PRIOR_VARIANCE), "landmark_variance": LANDMARK_VARIANCE, "clip": False,
                   "code": "CENTER_SIZE"},
        "thresholds": asdict(thresholds),
    }


@dataclass
class GeneratedFaceModel:
    """What :func:`write_nets` wrote."""

    files: dict[str, Path]
    priors: int
    feature_maps: tuple[int, ...]


def _checked_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FaceModelError(f"{out_dir}: exists and is not a folder")
    return out.resolve()


def write_nets(config: FaceModelConfig, out_dir: str | Path, max_iter: int = 1000,
               solver: SolverSettings = SolverSettings()) -> GeneratedFaceModel:
    """Write the train and deploy nets and the solver (naming the train net by absolute path) into
    ``out_dir``, each atomically, all built before the first is written. ``face_model.json`` comes with
    the weights (:func:`write_model_description`), so a folder holding it is a complete model."""
    config.check()
    root = _checked_dir(out_dir)
    texts = {TRAIN_NET: net_text(config, "train"), DEPLOY_NET: net_text(config, "deploy"),
             SOLVER: solver_text(root / TRAIN_NET, max_iter, config.seed, solver)}
    try:
        root.mkdir(parents=True, exist_ok=True)
        files = {name: write_text_atomic(root / name, text) for name, text in texts.items()}
    except OSError as exc:
        raise FaceModelError(f"{out_dir}: cannot write there: {exc}") from exc
    return GeneratedFaceModel(files, prior_count(config.size, config.arch), feature_map_sizes(config.size, config.arch))


def write_model_description(out_dir: str | Path, size: int, thresholds: Thresholds = Thresholds(),
                            arch: str = DEFAULT_ARCH) -> Path:
    """Write ``out_dir/face_model.json`` (:func:`model_description`) atomically."""
    root = _checked_dir(out_dir)
    try:
        return write_json_atomic(root / MODEL_JSON, model_description(size, thresholds, arch))
    except OSError as exc:
        raise FaceModelError(f"{out_dir}: cannot write there: {exc}") from exc
