"""Fold BatchNorm (+ Scale), or a Scale alone, into the preceding Convolution / Deconvolution / InnerProduct.

In a deploy net Caffe's ``BatchNorm`` computes, for each channel ``c`` of axis 1::

    y = (x - m_c * s) / sqrt(v_c * s + eps),   s = 1 / f   (s = 0 when f == 0)

from its three blobs: the running sums of the mean ``m`` and of the variance ``v``
and the moving-average factor ``f``; ``eps`` comes from ``batch_norm_param``
(default 1e-5). A following ``Scale`` computes ``gamma_c * y (+ beta_c)``. When
``x = W * input + b`` comes from a layer that is linear per output channel, the
two layers collapse exactly into that layer::

    a_c = gamma_c / sqrt(v_c * s + eps)
    W'  = W * a_c   (along the weights' output-channel axis)
    b'  = (b_c - m_c * s) * a_c + beta_c

A Scale alone reading such a layer (a frozen BatchNorm trained as its Scale, see
:func:`batch_norm_into_scale`) folds the same way with ``a_c = gamma_c``, ``b' = b_c * gamma_c + beta_c``.

The fold is applied only where it is exact: the BatchNorm reads the output of a
Convolution (grouped / depthwise included, and the native depthwise layer
``ConvolutionDepthwise`` whose weights have the same layout), Deconvolution or InnerProduct, and
nothing else reads that output. Every other BatchNorm stays in the net and is
reported with its reason; patterns that make the deploy net itself suspect
(``use_global_stats: false``, a Scale over other axes) are refused with
:class:`MergeBNError`. :func:`merge_bn` also runs both nets on the same inputs
(:func:`verify_nets`) and reports the differences of every output blob.

Weights are handled as protobuf messages (``caffe.proto.caffe_pb2``) and checked
against the prototxt in Python first (:mod:`caffe_common.model_files`, the same
checks the detector's weight loading uses), so a mismatch gives an error naming
the layer instead of a Caffe ``CHECK`` abort. Folding is computed in float64 and
stored as float32. Outputs are written atomically (temporary file + rename).
"""
from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .atomic import write_bytes_atomic
from .model_files import (  # noqa: F401  (read_caffemodel, weights_by_layer, blob_shape: part of this API)
    DEPTHWISE_TYPES,
    CaffeModelError,
    PrototxtParseError,
    blob_shape,
    caffe_pb2,
    check_net_structure,
    is_legacy_blob,
    load_net_with_weights,
    mismatch_message,
    probe_net,
    read_caffemodel,
    read_net_prototxt,
    weight_problems,
    weights_by_layer,
)

#: Layers whose output is linear per output channel, hence able to absorb a BatchNorm.
FOLDABLE_TYPES = ("Convolution", "Deconvolution", "InnerProduct") + DEPTHWISE_TYPES
#: Layer types that only exist in train/test nets (data sources, losses, metrics).
DATA_LAYER_TYPES = frozenset(
    {"Data", "AnnotatedData", "ImageData", "HDF5Data", "WindowData", "MemoryData", "VideoData"}
)
METRIC_LAYER_TYPES = frozenset({"Accuracy", "DetectionEvaluate"})
DEFAULT_TOLERANCE = 1e-4
NOBN_SUFFIX = "_nobn"
#: Default image preprocessing for ``--image`` (MobileNet-SSD's): ``(pixel - mean) * scale``.
DEFAULT_IMAGE_MEAN = (127.5, 127.5, 127.5)
DEFAULT_IMAGE_SCALE = 0.007843

Version = tuple[int, int]  # (index of the producing layer or -1 for a net input, top / input index)


class MergeBNError(ValueError):
    """The model was refused; the message names the file and layer and says how to proceed."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Fold:
    """One BatchNorm (and maybe its Scale), or a Scale alone, folded into ``layer``."""

    layer: str
    layer_type: str
    batch_norm: str | None
    scale: str | None
    top: str  # the blob the folded layer writes afterwards


@dataclass(frozen=True)
class LeftInPlace:
    """A BatchNorm or Scale kept in the folded net, and why."""

    layer: str
    reason: str


@dataclass
class FoldPlan:
    """What :func:`plan_folds` found: the exact folds, and the BatchNorm/Scale layers that stay."""

    folds: list[Fold] = field(default_factory=list)
    left_in_place: list[LeftInPlace] = field(default_factory=list)


@dataclass(frozen=True)
class BlobDiff:
    """Largest difference of one blob between the original and the folded net for one input."""

    input_name: str
    blob: str
    is_output: bool
    max_abs: float
    max_rel: float  # max |a - b| / max |a| over the blob
    shape_before: tuple[int, ...]
    shape_after: tuple[int, ...]

    @property
    def same_shape(self) -> bool:
        """Whether both nets produce this blob with the same shape."""
        return self.shape_before == self.shape_after


@dataclass
class Verification:
    """Both nets run on the same inputs: differences, tolerance and forward times."""

    diffs: list[BlobDiff]
    tolerance: float
    inputs: list[str]
    seconds_before: float | None = None
    seconds_after: float | None = None

    def failures(self) -> list[BlobDiff]:
        """Comparisons above the tolerance, with a different shape, or NaN."""
        return [d for d in self.diffs if not d.same_shape or not d.max_rel <= self.tolerance]

    @property
    def passed(self) -> bool:
        """True when every compared blob agrees within the tolerance."""
        return not self.failures()

    @property
    def speedup(self) -> float | None:
        """Median forward time before / after (None when not timed)."""
        if not self.seconds_before or not self.seconds_after:
            return None
        return self.seconds_before / self.seconds_after


@dataclass
class MergeResult:
    """Outcome of :func:`merge_bn`: paths, plan, layer counts, verification, and whether files were written."""

    model: Path
    weights: Path
    out_model: Path
    out_weights: Path
    plan: FoldPlan
    layers_before: int
    layers_after: int
    verification: Verification | None
    written: bool


# --------------------------------------------------------------------------- protobuf I/O
@contextmanager
def _refused() -> Iterator[None]:
    """Re-raise the checks of :mod:`caffe_common.model_files` as :class:`MergeBNError`."""
    try:
        yield
    except CaffeModelError as exc:
        raise MergeBNError(str(exc)) from exc


def read_prototxt(path: str | Path) -> Any:
    """Parse a text prototxt into a ``NetParameter``; a parse error names the file and line, and says
    first when the file looks like a train/test net (those often use fields this Caffe lacks)."""
    try:
        return read_net_prototxt(path)
    except PrototxtParseError as exc:
        signs = _train_test_signs_in_text(exc.text)
        if signs:
            raise MergeBNError(_train_test_message(path, signs) + f" (This file does not parse here either: "
                               f"{exc.__cause__})") from exc
        raise MergeBNError(str(exc)) from exc
    except CaffeModelError as exc:
        raise MergeBNError(str(exc)) from exc


def blob_to_array(blob: Any) -> np.ndarray:
    """The data of a ``BlobProto`` as a float64 array of its stored shape."""
    values = np.array(blob.double_data, dtype=np.float64) if len(blob.double_data) else np.array(blob.data, np.float64)
    shape = blob_shape(blob)
    if values.size != math.prod(shape):
        raise ValueError(f"blob holds {values.size} values for shape {shape}")
    return values.reshape(shape)


def array_to_blob(array: np.ndarray, like: Any | None = None) -> Any:
    """A float32 ``BlobProto`` holding ``array``, with the same shape style (legacy or not) as ``like``."""
    blob = caffe_pb2().BlobProto()
    data = np.ascontiguousarray(array, dtype=np.float32)
    if like is not None and is_legacy_blob(like):
        blob.num, blob.channels, blob.height, blob.width = blob_shape(like)
    else:
        blob.shape.dim.extend(int(d) for d in data.shape)
    blob.data.extend(data.ravel().tolist())
    return blob


def net_to_text(net: Any) -> str:
    """A ``NetParameter`` as prototxt text."""
    from google.protobuf import text_format

    return text_format.MessageToString(net)


# --------------------------------------------------------------------------- deploy-net checks
def _input_names(net: Any) -> list[str]:
    names = list(net.input)
    for layer in net.layer:
        if layer.type == "Input":
            names.extend(layer.top)
    return names


def _train_test_signs(net: Any) -> list[str]:
    """Layers that only belong in a train/test net, described for an error message."""
    signs = []
    for layer in net.layer:
        kind = None
        if layer.type in DATA_LAYER_TYPES or (layer.type == "Python" and not len(layer.bottom)):
            kind = "data layer"
        elif layer.type.endswith("Loss") or layer.type in METRIC_LAYER_TYPES or any(w != 0 for w in layer.loss_weight):
            kind = "loss/metric layer"
        elif (any(rule.HasField("phase") and rule.phase == 0 for rule in layer.include)  # 0 == TRAIN, 1 == TEST
              or any(rule.HasField("phase") and rule.phase == 1 for rule in layer.exclude)):
            kind = "TRAIN-phase layer"
        if kind:
            signs.append(f"{kind} '{layer.name}' ({layer.type})")
    return signs


def _train_test_signs_in_text(text: str) -> list[str]:
    """The same signs as :func:`_train_test_signs`, found in prototxt text that does not parse."""
    import re

    signs = []
    for kind in re.findall(r'\btype:\s*"(\w+)"', text):
        if kind in DATA_LAYER_TYPES:
            signs.append(f"data layer type {kind}")
        elif kind.endswith("Loss") or kind in METRIC_LAYER_TYPES:
            signs.append(f"loss/metric layer type {kind}")
    return list(dict.fromkeys(signs))


def _train_test_message(path: str | Path, signs: list[str]) -> str:
    shown = ", ".join(signs[:4]) + (f" and {len(signs) - 4} more" if len(signs) > 4 else "")
    return (f"{path}: this is a train/test network, not a deploy network ({shown}). "
            "merge_bn needs the deploy prototxt that goes with these weights: the same layers, with the "
            "input declared by an Input layer or an 'input:' + 'input_shape' header and no data or loss "
            "layers. The .caffemodel trained with the train/test net works with it unchanged (Caffe matches "
            "weights by layer name); pass that deploy prototxt with --model.")


def check_deploy_net(net: Any, path: str | Path) -> None:
    """Refuse nets merge_bn cannot treat as a deploy net, saying what to pass instead."""
    if len(net.layers):
        raise MergeBNError(
            f"{path}: uses the legacy V1 'layers {{ }}' format; upgrade it to 'layer {{ }}' first "
            "(Caffe's upgrade_net_proto_text tool, or load and re-save it with a current Caffe)")
    signs = _train_test_signs(net)
    if signs:
        raise MergeBNError(_train_test_message(path, signs))
    if not _input_names(net):
        raise MergeBNError(f"{path}: declares no network input (no Input layer, no 'input:' header); "
                           "merge_bn needs a deploy prototxt")


# --------------------------------------------------------------------------- dataflow
def _dataflow(net: Any, path: str | Path) -> tuple[list[list[Version]], dict[Version, list[int]]]:
    """Which version of a blob each bottom reads, and which layers read each version.

    In-place layers (``bottom == top``) make one blob name hold several successive
    values; a version is the value written by one (layer, top) pair.
    """
    current: dict[str, Version] = {name: (-1, k) for k, name in enumerate(net.input)}
    reads: list[list[Version]] = []
    readers: dict[Version, list[int]] = defaultdict(list)
    for i, layer in enumerate(net.layer):
        versions = []
        for bottom in layer.bottom:
            if bottom not in current:
                raise MergeBNError(f"{path}: layer '{layer.name}' reads blob '{bottom}', "
                                   "which no earlier layer or input produces")
            versions.append(current[bottom])
            readers[current[bottom]].append(i)
        reads.append(versions)
        for k, top in enumerate(layer.top):
            current[top] = (i, k)
    return reads, readers


def _channel_axis(layer: Any) -> int:
    if layer.type == "InnerProduct":
        return int(layer.inner_product_param.axis)
    return int(layer.convolution_param.axis)


def _shares_params(layer: Any) -> str | None:
    named = [p.name for p in layer.param if p.name]
    return named[0] if named else None


def _why_not_foldable(net: Any, i_bn: int, reads: list[list[Version]], readers: dict[Version, list[int]]) -> str | None:
    """Reason why BatchNorm number ``i_bn`` cannot absorb into its producer, or None if it can."""
    layers = net.layer
    bn = layers[i_bn]
    if len(bn.bottom) != 1 or len(bn.top) != 1:
        return "it does not have exactly one bottom and one top"
    producer, _ = version = reads[i_bn][0]
    if producer < 0 or layers[producer].type == "Input":
        return f"its input '{bn.bottom[0]}' is a network input, not the output of a Convolution/Deconvolution/InnerProduct"
    conv = layers[producer]
    if conv.type not in FOLDABLE_TYPES:
        return (f"its input '{bn.bottom[0]}' comes from '{conv.name}' ({conv.type}), "
                "not from a Convolution, Deconvolution or InnerProduct")
    others = [layers[j].name for j in readers[version] if j != i_bn]
    if others:
        return (f"the output of '{conv.name}' is also read by {', '.join(repr(n) for n in others)}; "
                "folding would change what those layers see")
    if len(conv.top) != 1:
        return f"'{conv.name}' has several bottom/top pairs sharing its weights"
    if _channel_axis(conv) != 1:
        return f"'{conv.name}' uses axis: {_channel_axis(conv)} but BatchNorm normalises axis 1"
    shared = _shares_params(conv)
    if shared:
        return f"'{conv.name}' shares its parameters ('{shared}') with other layers"
    return None


def _scale_to_fold(net: Any, i_bn: int, readers: dict[Version, list[int]], path: str | Path,
                   problems: list[str], notes: list[LeftInPlace]) -> int | None:
    """Index of the Scale that can fold together with BatchNorm ``i_bn``, if any."""
    layers = net.layer
    bn = layers[i_bn]
    after = readers[(i_bn, 0)]
    if len(after) != 1 or layers[after[0]].type != "Scale":
        return None
    i_scale = after[0]
    scale = layers[i_scale]
    if len(scale.bottom) != 1:
        notes.append(LeftInPlace(scale.name, "it takes its factors from a second input blob; "
                                 f"only BatchNorm '{bn.name}' was folded"))
        return None
    param = scale.scale_param
    if param.axis != 1 or param.num_axes != 1:
        problems.append(
            f"{path}: Scale '{scale.name}' after BatchNorm '{bn.name}' has axis: {param.axis}, num_axes: "
            f"{param.num_axes}; merge_bn folds only a per-channel Scale (axis: 1, num_axes: 1, the defaults). "
            "Remove these settings from the prototxt if they are redundant, otherwise this net cannot be folded")
        return None
    shared = _shares_params(scale)
    if shared:
        notes.append(LeftInPlace(scale.name, f"it shares its parameters ('{shared}') with other layers; "
                                 f"only BatchNorm '{bn.name}' was folded"))
        return None
    return i_scale


def _blob_name_reused(net: Any, first: int, last: int, chain: set[int], name: str) -> str | None:
    """A layer strictly between ``first`` and ``last`` (not in the chain) that uses blob ``name``."""
    for j in range(first + 1, last):
        layer = net.layer[j]
        if j not in chain and (name in layer.bottom or name in layer.top):
            return layer.name
    return None


def plan_folds(net: Any, path: str | Path = "<net>") -> FoldPlan:
    """Find every exact Convolution/Deconvolution/InnerProduct -> BatchNorm [-> Scale] chain.

    Raises :class:`MergeBNError` listing every refused pattern (BatchNorm with
    ``use_global_stats: false``, a foldable BatchNorm followed by a Scale over other axes).
    """
    reads, readers = _dataflow(net, path)
    plan = FoldPlan()
    problems: list[str] = []
    layers = net.layer
    for i, bn in enumerate(layers):
        if bn.type != "BatchNorm":
            continue
        param = bn.batch_norm_param
        if param.HasField("use_global_stats") and not param.use_global_stats:
            problems.append(
                f"{path}: BatchNorm '{bn.name}' has use_global_stats: false (training mode): it normalises "
                "with the statistics of each input batch, so it is not a fixed per-channel affine map and "
                "cannot be folded. Deploy nets use the stored statistics: delete that line (Caffe then uses "
                "them in the TEST phase) and run merge_bn again")
            continue
        reason = _why_not_foldable(net, i, reads, readers)
        if reason:
            plan.left_in_place.append(LeftInPlace(bn.name, reason))
            continue
        notes: list[LeftInPlace] = []
        i_scale = _scale_to_fold(net, i, readers, path, problems, notes)
        i_conv = reads[i][0][0]
        conv = layers[i_conv]
        last = i_scale if i_scale is not None else i
        top = layers[last].top[0]
        if top != conv.top[0]:
            clash = _blob_name_reused(net, i_conv, last, {i_conv, i, last}, top)
            if clash or top in conv.bottom:
                where = f"'{clash}'" if clash else f"'{conv.name}' itself as its input"
                plan.left_in_place.append(LeftInPlace(
                    bn.name, f"its output blob '{top}' is also used by {where}; renaming it would be ambiguous"))
                continue
        plan.left_in_place.extend(notes)
        scale_name = layers[i_scale].name if i_scale is not None else None
        plan.folds.append(Fold(conv.name, conv.type, bn.name, scale_name, top))
    plan.folds.extend(_lone_scale_folds(net, reads, readers, {f.scale for f in plan.folds}))
    if problems:
        raise MergeBNError("\n".join(problems))
    return plan


def _lone_scale_folds(net: Any, reads: list[list[Version]], readers: dict[Version, list[int]],
                      taken: set[str | None]) -> list[Fold]:
    """Per-channel Scale layers reading a foldable layer's output directly (a frozen BatchNorm trained as its
    Scale alone, :func:`batch_norm_into_scale`): folded like a BatchNorm with mean 0 and variance 1."""
    folds = []
    layers = net.layer
    for i, scale in enumerate(layers):
        param = scale.scale_param
        if (scale.type != "Scale" or scale.name in taken or len(scale.bottom) != 1 or len(scale.top) != 1
                or (param.axis, param.num_axes) != (1, 1) or _shares_params(scale)
                or _why_not_foldable(net, i, reads, readers)):
            continue
        i_conv = reads[i][0][0]
        conv, top = layers[i_conv], scale.top[0]
        if top != conv.top[0] and (_blob_name_reused(net, i_conv, i, {i_conv, i}, top) or top in conv.bottom):
            continue
        folds.append(Fold(conv.name, conv.type, None, scale.name, top))
    return folds


# --------------------------------------------------------------------------- weight checks
def check_fold_weights(net: Any, weights: dict[str, list[Any]], model_path: str | Path, weights_path: str | Path,
                       plan: FoldPlan | None = None) -> None:
    """Check in Python that ``weights`` belong to ``net`` (:func:`caffe_common.model_files.weight_problems`:
    every learned layer present, blob counts right) and, given a ``plan``, that the shapes the folds rely on
    are consistent. Raises :class:`MergeBNError` listing the problems."""
    problems = weight_problems(net, weights)
    if not problems and plan is not None:
        by_name = {layer.name: layer for layer in net.layer}
        for fold in plan.folds:
            problems.extend(_fold_shape_problems(fold, by_name, weights))
    if problems:
        raise MergeBNError(mismatch_message(model_path, weights_path, problems))


def _output_channels(layer: Any) -> int:
    if layer.type == "InnerProduct":
        return int(layer.inner_product_param.num_output)
    return int(layer.convolution_param.num_output)


def _weight_output_channels(layer: Any, shape: tuple[int, ...]) -> int | None:
    """Output channels implied by a weight blob's shape (None if the shape cannot be read that way)."""
    if layer.type in ("Convolution",) + DEPTHWISE_TYPES:
        return shape[0] if len(shape) >= 3 else None
    if layer.type == "Deconvolution":
        return shape[1] * max(int(layer.convolution_param.group), 1) if len(shape) >= 3 else None
    dims = [d for d in shape]
    while len(dims) > 2 and dims[0] == 1:  # legacy (1, 1, out, in)
        dims.pop(0)
    if len(dims) != 2:
        return None
    return dims[1] if layer.inner_product_param.transpose else dims[0]


def _fold_shape_problems(fold: Fold, by_name: dict[str, Any], weights: dict[str, list[Any]]) -> list[str]:
    conv = by_name[fold.layer]
    channels = _output_channels(conv)
    problems = []
    shape = blob_shape(weights[fold.layer][0])
    if _weight_output_channels(conv, shape) != channels:
        problems.append(f"layer '{fold.layer}' ({conv.type}): num_output {channels} but weight blob shape {shape}")
    if len(weights[fold.layer]) > 1 and math.prod(blob_shape(weights[fold.layer][1])) != channels:
        problems.append(f"layer '{fold.layer}': bias blob shape {blob_shape(weights[fold.layer][1])}, "
                        f"num_output {channels}")
    mean, var, factor = ((math.prod(blob_shape(b)) for b in weights[fold.batch_norm]) if fold.batch_norm
                         else (channels, channels, 1))
    if (mean, var, factor) != (channels, channels, 1):
        problems.append(f"BatchNorm '{fold.batch_norm}': blobs hold {mean}, {var}, {factor} values; "
                        f"expected {channels}, {channels}, 1 for the {channels} channels of '{fold.layer}'")
    if fold.scale:
        sizes = [math.prod(blob_shape(b)) for b in weights[fold.scale]]
        if any(s != channels for s in sizes):
            problems.append(f"Scale '{fold.scale}': blobs hold {sizes} values; expected {channels} each")
    return problems


# --------------------------------------------------------------------------- folding math
def batch_norm_affine(mean: np.ndarray, variance: np.ndarray, factor: float, eps: float,
                      gamma: np.ndarray | None = None, beta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(a, c)`` with ``Scale(BatchNorm(x)) == a * x + c`` as Caffe computes it in TEST phase.

    ``mean``/``variance`` are BatchNorm's stored sums, divided by the moving-average
    ``factor`` (a factor of 0 means no statistics: mean and variance 0, as in Caffe).
    """
    mean = np.asarray(mean, np.float64).ravel()
    variance = np.asarray(variance, np.float64).ravel()
    inv = 0.0 if float(factor) == 0 else 1.0 / float(factor)
    denom = variance * inv + float(eps)
    if np.any(~(denom > 0)):
        raise ValueError(f"variance / factor + eps is not positive for channel(s) {np.flatnonzero(~(denom > 0))[:5]}")
    a = 1.0 / np.sqrt(denom)
    if gamma is not None:
        a = a * np.asarray(gamma, np.float64).ravel()
    c = -mean * inv * a
    if beta is not None:
        c = c + np.asarray(beta, np.float64).ravel()
    return a, c


def fold_weights(layer_type: str, weight: np.ndarray, bias: np.ndarray | None, a: np.ndarray, c: np.ndarray,
                 group: int = 1, transpose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` of a layer followed by the per-output-channel map ``y -> a * y + c``.

    Output channels lie on axis 0 of Convolution weights ``(out, in/g, k...)`` (native depthwise layers:
    ``(C, 1, k...)``, the same layout); on
    axis 1 of Deconvolution weights ``(in, out/g, k...)``, where input channel ``i``
    of group ``g = i // (in/g)`` feeds output channels ``g*out/g ...``; on axis 0 of
    InnerProduct weights ``(out, in)`` (axis 1 with ``transpose: true``).
    """
    w = np.asarray(weight, np.float64)
    a = np.asarray(a, np.float64).ravel()
    n_out = a.size
    b = np.zeros(n_out) if bias is None else np.asarray(bias, np.float64).ravel()
    if layer_type in ("Convolution",) + DEPTHWISE_TYPES:
        factor = a.reshape((n_out,) + (1,) * (w.ndim - 1))
        folded = w * factor
    elif layer_type == "Deconvolution":
        n_in, out_per_group = w.shape[0], w.shape[1]
        if out_per_group * group != n_out or n_in % group:
            raise ValueError(f"Deconvolution weights {w.shape} do not fit {n_out} outputs in {group} groups")
        per_input = np.repeat(a.reshape(group, out_per_group), n_in // group, axis=0)  # (in, out/g)
        folded = w * per_input.reshape(per_input.shape + (1,) * (w.ndim - 2))
    elif layer_type == "InnerProduct":
        matrix = w.reshape(-1, n_out) if transpose else w.reshape(n_out, -1)
        matrix = matrix * (a[None, :] if transpose else a[:, None])
        folded = matrix.reshape(w.shape)
    else:
        raise ValueError(f"cannot fold into a {layer_type} layer")
    return folded, b * a + c


def _fold_blobs(conv: Any, bn: Any | None, scale: Any | None, weights: dict[str, list[Any]]) -> list[Any]:
    """The two new blobs (weights, bias) of ``conv`` with ``bn`` and ``scale`` folded in (``bn`` None: a Scale
    alone)."""
    conv_blobs = weights[conv.name]
    gamma = beta = None
    if scale is not None:
        scale_blobs = [blob_to_array(b) for b in weights[scale.name]]
        gamma = scale_blobs[0]
        beta = scale_blobs[1] if scale.scale_param.bias_term else None
    if bn is None:
        a = np.asarray(gamma, np.float64).ravel()
        c = np.zeros_like(a) if beta is None else np.asarray(beta, np.float64).ravel()
    else:
        mean, variance, factor = (blob_to_array(b) for b in weights[bn.name])
        try:
            a, c = batch_norm_affine(mean, variance, float(factor.ravel()[0]), bn.batch_norm_param.eps, gamma, beta)
        except ValueError as exc:
            raise MergeBNError(f"BatchNorm '{bn.name}': {exc}") from exc
    weight = blob_to_array(conv_blobs[0])
    bias = blob_to_array(conv_blobs[1]) if len(conv_blobs) > 1 else None
    group = int(conv.convolution_param.group) if conv.type != "InnerProduct" else 1
    transpose = conv.type == "InnerProduct" and conv.inner_product_param.transpose
    new_w, new_b = fold_weights(conv.type, weight, bias, a, c, group=group, transpose=transpose)
    bias_like = conv_blobs[1] if len(conv_blobs) > 1 else None
    return [array_to_blob(new_w, like=conv_blobs[0]), array_to_blob(new_b.reshape(-1), like=bias_like)]


def fold_net(net: Any, weights: dict[str, list[Any]], plan: FoldPlan) -> tuple[Any, Any]:
    """Apply ``plan``: the folded deploy ``NetParameter`` and the folded weights ``NetParameter``."""
    pb2 = caffe_pb2()
    removed = {f.batch_norm for f in plan.folds if f.batch_norm} | {f.scale for f in plan.folds if f.scale}
    folds = {f.layer: f for f in plan.folds}
    by_name = {layer.name: layer for layer in net.layer}
    new_net = pb2.NetParameter()
    new_net.CopyFrom(net)
    del new_net.layer[:]
    new_weights = pb2.NetParameter(name=net.name)
    for layer in net.layer:
        if layer.name in removed:
            continue
        kept = new_net.layer.add()
        kept.CopyFrom(layer)
        fold = folds.get(layer.name)
        if fold:
            kept.top[0] = fold.top
            if layer.type == "InnerProduct":
                kept.inner_product_param.bias_term = True
            else:
                kept.convolution_param.bias_term = True
            scale = by_name[fold.scale] if fold.scale else None
            blobs = _fold_blobs(layer, by_name[fold.batch_norm] if fold.batch_norm else None, scale, weights)
        else:
            blobs = weights.get(layer.name, [])
        if blobs:
            stored = new_weights.layer.add(name=layer.name, type=layer.type)
            stored.bottom.extend(kept.bottom)
            stored.top.extend(kept.top)
            stored.blobs.extend(blobs)
    return new_net, new_weights


# --------------------------------------------------------------------------- BatchNorm into its Scale
# A frozen BatchNorm (stored statistics) followed by its Scale is one fixed per-channel map a * x + c. Keeping
# that map as the Scale alone (``gamma' = a``, ``beta' = c``) computes the same function at the cost of one pass
# instead of BatchNorm's several (its backward pass too), while the convolution keeps its own weights. That is
# the difference from the fold above: SGD on a folded weight ``a * W`` moves each channel at ``1 / a^2`` the rate
# of SGD on ``W``, so a net trained with a frozen BatchNorm should see it as a Scale, not folded.
def scale_pairs(net: Any, select: Callable[[str], bool] = lambda name: True,
                path: str | Path = "<net>") -> list[tuple[str, str]]:
    """``(BatchNorm, Scale)`` names where a BatchNorm chosen by ``select`` (by name) and not set to batch
    statistics (``use_global_stats: false``) is read by exactly one per-channel Scale (one bottom, axis 1, one
    axis) and nothing else: the pairs that can become one Scale."""
    _, readers = _dataflow(net, path)
    layers = net.layer
    pairs = []
    for i, bn in enumerate(layers):
        if bn.type != "BatchNorm" or not select(bn.name) or len(bn.bottom) != 1 or len(bn.top) != 1:
            continue
        if bn.batch_norm_param.HasField("use_global_stats") and not bn.batch_norm_param.use_global_stats:
            continue
        after = readers[(i, 0)]
        if len(after) != 1 or layers[after[0]].type != "Scale":
            continue
        scale = layers[after[0]]
        if len(scale.bottom) == 1 and scale.scale_param.axis == 1 and scale.scale_param.num_axes == 1:
            pairs.append((bn.name, scale.name))
    return pairs


def without_batch_norm(net: Any, pairs: Sequence[tuple[str, str]]) -> Any:
    """``net`` with the BatchNorm of each pair removed and its Scale reading the BatchNorm's input, with a bias
    (the ``NetParameter`` of :func:`batch_norm_into_scale`; train nets are built the same way). A Scale that had
    no bias and one ``param`` spec gets the same spec for its new bias (a fixed Scale stays fixed)."""
    pb2 = caffe_pb2()
    removed = {bn: scale for bn, scale in pairs}
    bottoms: dict[str, str] = {}
    by_name = {layer.name: layer for layer in net.layer}
    new_net = pb2.NetParameter()
    new_net.CopyFrom(net)
    del new_net.layer[:]
    for layer in net.layer:
        if layer.name in removed:
            bottoms[removed[layer.name]] = by_name[layer.name].bottom[0]
            continue
        kept = new_net.layer.add()
        kept.CopyFrom(layer)
        if layer.name in bottoms:
            kept.bottom[0] = bottoms[layer.name]
            if not kept.scale_param.bias_term and len(kept.param) == 1:
                kept.param.add().CopyFrom(kept.param[0])
            kept.scale_param.bias_term = True
    return new_net


def scale_weights(net: Any, weights: dict[str, list[Any]], pairs: Sequence[tuple[str, str]]) -> Any:
    """The weights ``NetParameter`` of ``without_batch_norm(net, pairs)``: each pair's Scale holds the pair's
    map ``a * x + c`` (:func:`batch_norm_affine`); every other layer keeps its blobs."""
    pb2 = caffe_pb2()
    by_name = {layer.name: layer for layer in net.layer}
    folded = {}
    for bn_name, scale_name in pairs:
        bn, scale = by_name[bn_name], by_name[scale_name]
        mean, variance, factor = (blob_to_array(b) for b in weights[bn_name])
        blobs = [blob_to_array(b) for b in weights[scale_name]]
        beta = blobs[1] if scale.scale_param.bias_term and len(blobs) > 1 else None
        try:
            a, c = batch_norm_affine(mean, variance, float(factor.ravel()[0]), bn.batch_norm_param.eps, blobs[0], beta)
        except ValueError as exc:
            raise MergeBNError(f"BatchNorm '{bn_name}': {exc}") from exc
        folded[scale_name] = [array_to_blob(a.reshape(blobs[0].shape), like=weights[scale_name][0]),
                              array_to_blob(c.reshape(blobs[0].shape), like=weights[scale_name][0])]
    new_weights = pb2.NetParameter(name=net.name)
    for layer in without_batch_norm(net, pairs).layer:
        blobs = folded.get(layer.name, weights.get(layer.name, []))
        if blobs:
            stored = new_weights.layer.add(name=layer.name, type=layer.type)
            stored.bottom.extend(layer.bottom)
            stored.top.extend(layer.top)
            stored.blobs.extend(blobs)
    return new_weights


def batch_norm_into_scale(model: str | Path, weights: str | Path, out_model: str | Path, out_weights: str | Path,
                          select: Callable[[str], bool] = lambda name: True,
                          tolerance: float = DEFAULT_TOLERANCE) -> MergeResult:
    """Write ``model`` with each BatchNorm chosen by ``select`` joined into its Scale (section comment above),
    after checking on a random input that both nets give the same outputs (within ``tolerance``); nothing is
    written when they differ (``result.written`` False). ``result.plan.folds`` lists the pairs (``layer``: the
    Scale)."""
    model, weights, out_model, out_weights = Path(model), Path(weights), Path(out_model), Path(out_weights)
    net, blobs = _checked_inputs(model, weights, out_model, out_weights)
    pairs = scale_pairs(net, select, model)
    new_net, new_weights = without_batch_norm(net, pairs), scale_weights(net, blobs, pairs)
    scale_tops = {layer.name: layer.top[0] for layer in new_net.layer}
    plan = FoldPlan([Fold(scale, "Scale", bn, None, scale_tops[scale]) for bn, scale in pairs])
    result = MergeResult(model, weights, out_model, out_weights, plan, len(net.layer), len(new_net.layer), None, False)
    return _write_if_verified(result, net, blobs, new_net, new_weights,
                              lambda before, after: verify_nets(before, after, tolerance=tolerance, timing_runs=0))


# --------------------------------------------------------------------------- Caffe nets
def load_caffe_net(model: str | Path, weights: str | Path, net: Any | None = None,
                   weight_blobs: dict[str, list[Any]] | None = None) -> Any:
    """A ``caffe.Net`` (TEST phase) with its weights, checked in Python before Caffe sees them
    (:func:`caffe_common.model_files.load_net_with_weights`); a problem raises :class:`MergeBNError`."""
    net = read_prototxt(model) if net is None else net
    with _refused():
        return load_net_with_weights(model, weights, net, weight_blobs)


def image_input(path: str | Path, shape: Sequence[int], mean: float | Sequence[float] = DEFAULT_IMAGE_MEAN,
                scale: float = DEFAULT_IMAGE_SCALE) -> np.ndarray:
    """A photo as a net input of ``shape`` ``(N, C, H, W)``: resized, ``(pixel - mean) * scale``, BGR or gray."""
    import cv2

    from .images import to_net_input

    n, channels, height, width = (int(d) for d in shape)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise MergeBNError(f"{path}: cannot read this image")
    try:
        blob = to_net_input(image, (width, height), mean, scale)
    except ValueError as exc:
        raise MergeBNError(f"image {exc}") from exc
    return np.broadcast_to(blob, (n, channels, height, width)).astype(np.float32)


def _image_input_name(net: Any) -> str:
    for name in net.inputs:
        shape = net.blobs[name].data.shape
        if len(shape) == 4 and shape[1] in (1, 3):
            return name
    raise MergeBNError("--image needs a 4-D network input with 1 or 3 channels; this net has "
                       + ", ".join(f"'{n}' {tuple(net.blobs[n].data.shape)}" for n in net.inputs))


def _detection_tops(net: Any) -> set[str]:
    """Blobs written by DetectionOutput layers (rows ``image, label, score, x1, y1, x2, y2``)."""
    return {top for layer, tops in zip(net.layers, net.top_names.values()) if layer.type == "DetectionOutput"
            for top in tops}


def _canonical_detections(blob: np.ndarray) -> np.ndarray:
    """Detection rows in a fixed order: DetectionOutput sorts by score, and two nearly equal scores may
    swap places between two equivalent nets; sorting by image, label, box, score makes the order stable."""
    rows = blob.reshape(-1, blob.shape[-1])
    keys = [rows[:, k] for k in (2, 6, 5, 4, 3, 1, 0) if k < rows.shape[1]]  # lexsort: last key first
    return rows[np.lexsort(keys)].reshape(blob.shape)


def _compare(name: str, output_names: set[str], label: str, before: np.ndarray, after: np.ndarray) -> BlobDiff:
    if before.shape != after.shape:
        return BlobDiff(label, name, name in output_names, math.inf, math.inf, before.shape, after.shape)
    a = before.astype(np.float64)
    b = after.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN anywhere -> NaN -> fails the tolerance
        max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return BlobDiff(label, name, name in output_names, max_abs, max_rel, before.shape, after.shape)


def _timed_forward(net: Any, feed: dict[str, np.ndarray]) -> float:
    for name, value in feed.items():
        net.blobs[name].data[...] = value
    start = time.perf_counter()
    net.forward()
    return time.perf_counter() - start


def verify_nets(before: Any, after: Any, images: Iterable[str | Path] = (), tolerance: float = DEFAULT_TOLERANCE,
                timing_runs: int = 5, seed: int = 0, image_mean: float | Sequence[float] = DEFAULT_IMAGE_MEAN,
                image_scale: float = DEFAULT_IMAGE_SCALE, progress: bool = False) -> Verification:
    """Run two loaded ``caffe.Net`` on the same inputs and compare their blobs.

    Inputs: one random input (normal, seeded), then each image (resized, ``(pixel
    - mean) * scale``) in the first 1- or 3-channel input, the other inputs random.
    Every output blob of ``before`` is compared, and every other blob name both nets
    share (in-place chains end with the same value in both). ``timing_runs``
    alternating forwards of each net on the random input give the median times.
    """
    from tqdm import tqdm

    missing = [name for name in before.outputs if name not in after.blobs]
    if missing or list(before.inputs) != list(after.inputs):
        raise MergeBNError(f"the folded net lacks output(s) {missing} or has other inputs "
                           f"({list(before.inputs)} vs {list(after.inputs)})")
    rng = np.random.default_rng(seed)
    random_feed = {name: rng.standard_normal(before.blobs[name].data.shape).astype(np.float32)
                   for name in before.inputs}
    feeds = [("random", random_feed)]
    for path in images:
        target = _image_input_name(before)
        feed = dict(random_feed)
        feed[target] = image_input(path, before.blobs[target].data.shape, image_mean, image_scale)
        feeds.append((Path(path).name, feed))
    outputs = set(before.outputs)
    shared = [n for n in before.blobs if n in after.blobs and n not in before.inputs]
    detections = _detection_tops(before) & _detection_tops(after)

    def values_of(net: Any) -> dict[str, np.ndarray]:
        return {n: _canonical_detections(net.blobs[n].data) if n in detections else net.blobs[n].data.copy()
                for n in shared}

    diffs = []
    for label, feed in tqdm(feeds, desc="verify", unit="input", disable=not progress):
        _timed_forward(before, feed)
        values = values_of(before)
        _timed_forward(after, feed)
        values_after = values_of(after)
        diffs.extend(_compare(n, outputs, label, values[n], values_after[n]) for n in shared)
    result = Verification(diffs, tolerance, [label for label, _ in feeds])
    if timing_runs > 0:
        times_before, times_after = [], []
        for _ in tqdm(range(timing_runs), desc="timing", unit="run", disable=not progress):
            times_before.append(_timed_forward(before, random_feed))
            times_after.append(_timed_forward(after, random_feed))
        result.seconds_before = float(np.median(times_before))
        result.seconds_after = float(np.median(times_after))
    return result


# --------------------------------------------------------------------------- the whole step
def _strip_suffixes(path: Path) -> str:
    name = path.name
    for suffix in (".txt", ".prototxt", ".pt", ".caffemodel"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def default_output_paths(model: str | Path, weights: str | Path) -> tuple[Path, Path]:
    """``<model stem>_nobn.prototxt`` and ``<weights stem>_nobn.caffemodel`` beside the inputs."""
    model, weights = Path(model), Path(weights)
    return (model.with_name(_strip_suffixes(model) + NOBN_SUFFIX + ".prototxt"),
            weights.with_name(_strip_suffixes(weights) + NOBN_SUFFIX + ".caffemodel"))


def _check_output_paths(model: Path, weights: Path, out_model: Path, out_weights: Path) -> None:
    resolved = {p.resolve() for p in (model, weights)}
    for out in (out_model, out_weights):
        if out.resolve() in resolved:
            raise MergeBNError(f"{out}: refusing to overwrite an input file; choose another output path")
    if out_model.resolve() == out_weights.resolve():
        raise MergeBNError(f"{out_model}: the output prototxt and caffemodel need different paths")
    for out in (out_model, out_weights):
        _check_writable(out)


def _check_writable(out: Path) -> None:
    """Refuse (one line, before any work) an output path that cannot become a file: an existing folder,
    a path under a file, or a read-only folder (also one without any write bit when running as root,
    who could still write: a read-only folder of reference models is not the place for new files)."""
    hint = "; choose where to write the folded model with --out-model / --out-weights"
    if out.is_dir():
        raise MergeBNError(f"{out}: is a directory, not a file path{hint}")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest existing ancestor: the output's folders are created in it
    if not folder.is_dir():
        raise MergeBNError(f"{out}: {folder} is not a directory{hint}")
    if not os.access(folder, os.W_OK | os.X_OK) or not folder.stat().st_mode & 0o222:
        raise MergeBNError(f"{out}: the directory {folder} is read-only{hint}")


def merge_bn(model: str | Path, weights: str | Path, out_model: str | Path | None = None,
             out_weights: str | Path | None = None, *, verify: bool = True, images: Sequence[str | Path] = (),
             tolerance: float = DEFAULT_TOLERANCE, timing_runs: int = 5, seed: int = 0,
             image_mean: float | Sequence[float] = DEFAULT_IMAGE_MEAN, image_scale: float = DEFAULT_IMAGE_SCALE,
             progress: bool = False) -> MergeResult:
    """Fold every exact BatchNorm [+ Scale] of a deploy model and write the folded prototxt + caffemodel.

    With ``verify`` both nets run on the same inputs first; the outputs are moved
    into place only when every compared blob agrees within ``tolerance`` (relative
    to the blob's largest magnitude); otherwise nothing is written and
    ``result.written`` is False. Refused inputs raise :class:`MergeBNError`.
    """
    model, weights = Path(model), Path(weights)
    default_model, default_weights = default_output_paths(model, weights)
    out_model = Path(out_model) if out_model else default_model
    out_weights = Path(out_weights) if out_weights else default_weights
    net, blobs = _checked_inputs(model, weights, out_model, out_weights)
    plan = plan_folds(net, model)
    check_fold_weights(net, blobs, model, weights, plan)
    new_net, new_weights = fold_net(net, blobs, plan)
    result = MergeResult(model, weights, out_model, out_weights, plan, len(net.layer), len(new_net.layer), None, False)
    return _write_if_verified(result, net, blobs, new_net, new_weights,
                              (lambda before, after: verify_nets(before, after, images, tolerance, timing_runs, seed,
                                                                 image_mean, image_scale, progress))
                              if verify else None)


def _checked_inputs(model: Path, weights: Path, out_model: Path, out_weights: Path) -> tuple[Any, dict[str, list[Any]]]:
    """The deploy ``NetParameter`` and its weight blobs by layer, after every check that can be made before
    Caffe sees them (the paths too); a refused input raises :class:`MergeBNError`."""
    net = read_prototxt(model)
    check_deploy_net(net, model)
    _check_output_paths(model, weights, out_model, out_weights)
    with _refused():
        blobs = weights_by_layer(read_caffemodel(weights))
    check_fold_weights(net, blobs, model, weights)
    with _refused():  # Caffe builds the input model in a probe process first: a CHECK there is an error here
        check_net_structure(net, model)
        probe_net(model, net=net)
    return net, blobs


def _write_if_verified(result: MergeResult, net: Any, blobs: dict[str, list[Any]], new_net: Any, new_weights: Any,
                       verify: Callable[[Any, Any], Verification] | None) -> MergeResult:
    """Stage ``result``'s two outputs, compare the loaded nets with ``verify`` (None: no comparison) and move
    the outputs into place only when they agree; staged files never outlive the call."""
    staged = _staging_paths(result.out_model, result.out_weights)
    try:
        _stage_outputs(staged, new_net, new_weights)
        if verify is not None:
            before = load_caffe_net(result.model, result.weights, net, blobs)
            after = load_caffe_net(staged[0], staged[1], new_net, weights_by_layer(new_weights))
            result.verification = verify(before, after)
            if not result.verification.passed:
                return result
        os.replace(staged[0], result.out_model)
        os.replace(staged[1], result.out_weights)
        result.written = True
        return result
    finally:
        for tmp in staged:
            if tmp.exists():
                tmp.unlink()


def _staging_paths(out_model: Path, out_weights: Path) -> tuple[Path, Path]:
    """Temporary names beside the destinations (hidden, this process's id), removed on any failure."""
    return tuple(path.with_name(f".{path.name}.{os.getpid()}.partial") for path in (out_model, out_weights))


def _stage_outputs(staged: tuple[Path, Path], new_net: Any, new_weights: Any) -> None:
    """Write both outputs under their staging names (renamed into place once verified)."""
    write_bytes_atomic(staged[0], net_to_text(new_net).encode())
    write_bytes_atomic(staged[1], new_weights.SerializeToString())


# --------------------------------------------------------------------------- report
def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2e}"


def _plan_lines(result: MergeResult, verbose: bool) -> list[str]:
    """What was folded (per folded layer type) and what was left in place, with reasons."""
    plan = result.plan
    if plan.folds:
        batch_norms = [f for f in plan.folds if f.batch_norm]
        with_scale = sum(1 for f in batch_norms if f.scale)
        lone = len(plan.folds) - len(batch_norms)
        kinds = defaultdict(int)
        for f in plan.folds:
            kinds[f.layer_type] += 1
        kinds_text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        what = f"{len(batch_norms)} BatchNorm ({with_scale} with their Scale)" + (f" and {lone} Scale" if lone else "")
        lines = [f"folded {what} into {kinds_text}: {result.layers_before} -> {result.layers_after} layers"]
    else:
        lines = ["nothing to fold: no BatchNorm directly after a Convolution/Deconvolution/InnerProduct"]
    if verbose:
        lines += [f"  {f.layer} <- " + " + ".join(n for n in (f.batch_norm, f.scale) if n) for f in plan.folds]
    if plan.left_in_place:
        lines.append(f"left in place ({len(plan.left_in_place)}):")
        lines += [f"  {item.layer}: {item.reason}" for item in plan.left_in_place]
    return lines


def _verification_lines(v: Verification) -> list[str]:
    """Table of output-blob differences, the worst intermediate blob, failures, timing and verdict."""
    lines = [f"verification on {', '.join(v.inputs)} (tolerance {v.tolerance:g} relative to each blob's "
             "largest magnitude):",
             f"  {'input':<18} {'output blob':<28} {'max abs diff':>12} {'max rel diff':>12}"]
    for d in v.diffs:
        if d.is_output:
            shape_note = "" if d.same_shape else f"  SHAPE {d.shape_before} != {d.shape_after}"
            lines.append(f"  {d.input_name:<18} {d.blob:<28} {_fmt(d.max_abs):>12} {_fmt(d.max_rel):>12}{shape_note}")
    inner = [d for d in v.diffs if not d.is_output]
    if inner:
        worst = max(inner, key=lambda d: d.max_rel)
        lines.append(f"  {len({d.blob for d in inner})} intermediate blobs: largest rel diff {_fmt(worst.max_rel)} "
                     f"('{worst.blob}', {worst.input_name})")
    lines += [f"  ABOVE TOLERANCE: '{d.blob}' on {d.input_name}: rel {_fmt(d.max_rel)}"
              for d in v.failures() if not d.is_output]
    if v.speedup is not None:
        lines.append(f"forward time (median of runs): {v.seconds_before * 1e3:.1f} ms -> "
                     f"{v.seconds_after * 1e3:.1f} ms ({v.speedup:.2f}x)")
    lines.append("verification PASSED" if v.passed else
                 f"verification FAILED: {len(v.failures())} blob comparison(s) above tolerance; nothing written")
    return lines


def format_report(result: MergeResult, verbose: bool = False) -> str:
    """Human-readable summary of a :func:`merge_bn` run (what the CLI prints)."""
    lines = [f"model   {result.model}", f"weights {result.weights}", *_plan_lines(result, verbose)]
    if result.verification is not None:
        lines += _verification_lines(result.verification)
    if result.written:
        lines += [f"wrote {result.out_model}", f"wrote {result.out_weights}"]
    return "\n".join(lines)
