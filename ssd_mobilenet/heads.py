"""Check an SSD net's prediction heads against its prior boxes, before Caffe does.

``MultiBoxLoss`` and ``DetectionOutput`` abort the process (``CHECK_EQ(num_priors_ * num_classes_,
bottom[1]->channels())``) when a confidence or location head predicts for a different number of
boxes per cell than the ``PriorBox`` on the same feature map makes: the classic result of changing
``num_classes`` or the aspect ratios in one place only. This check pairs every head convolution with
the ``PriorBox`` layer that reads the same feature map and names the layer and the number to change.

Boxes per cell follow ``PriorBoxLayer::LayerSetUp``: aspect ratio 1 first, each listed ratio once
(within 1e-6) plus its inverse when ``flip``, times the ``min_size`` count, plus one box per
``max_size``. A feature map with several ``PriorBox`` layers (assembled priors, e.g. TensorFlow's
anchors) is not checked per head; Caffe's own check still runs in a child process then.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from caffe_common.model_files import phase_layers

#: Layers a head's output passes through on its way to the concatenation (one bottom each).
_PASS_THROUGH = {"Permute", "Flatten", "Reshape", "Softmax", "Sigmoid"}
_HEAD_CONSUMERS = ("MultiBoxLoss", "DetectionOutput")


class HeadMismatchError(ValueError):
    """Heads and priors that do not fit (the message names the layers and the fix)."""


def priors_per_cell(prior_box: Any) -> int:
    """Boxes per feature-map cell of one ``PriorBox`` layer."""
    param = prior_box.prior_box_param
    ratios = [1.0]
    for ratio in param.aspect_ratio:
        if any(abs(ratio - seen) < 1e-6 for seen in ratios):
            continue
        ratios.append(ratio)
        if param.flip:
            ratios.append(1.0 / ratio)
    return len(ratios) * len(param.min_size) + len(param.max_size)


def _producers(layers: Sequence[Any]) -> dict[str, Any]:
    """Blob name -> the last layer writing it (in-place layers overwrite their input)."""
    made = {}
    for layer in layers:
        for top in layer.top:
            made[top] = layer
    return made


def _head_convolutions(blob: str, made: dict[str, Any]) -> Iterator[Any]:
    """The convolutions whose outputs end up in ``blob`` through Concat and reshaping layers."""
    layer = made.get(blob)
    if layer is None:
        return
    if layer.type == "Concat":
        for bottom in layer.bottom:
            yield from _head_convolutions(bottom, made)
    elif layer.type in _PASS_THROUGH and layer.bottom and layer.bottom[0] != blob:
        yield from _head_convolutions(layer.bottom[0], made)
    elif "Convolution" in layer.type:
        yield layer


def _class_param(layer: Any) -> Any:
    return layer.multibox_loss_param if layer.type == "MultiBoxLoss" else layer.detection_output_param


def _priors_by_map(layers: Sequence[Any]) -> dict[str, list[Any]]:
    """Feature-map blob -> the ``PriorBox`` layers reading it."""
    priors: dict[str, list[Any]] = {}
    for layer in layers:
        if layer.type == "PriorBox" and layer.bottom:
            priors.setdefault(layer.bottom[0], []).append(layer)
    return priors


def check_heads_match_priors(net: Any, path: str | Path, phase: int) -> None:
    """Raise :class:`HeadMismatchError` when a head convolution's ``num_output`` is not boxes-per-cell
    times 4 (location) or times ``num_classes`` (confidence) of the priors on its feature map."""
    layers = phase_layers(net, phase)
    priors = _priors_by_map(layers)
    for index, consumer in enumerate(layers):
        if consumer.type not in _HEAD_CONSUMERS or len(consumer.bottom) < 2:
            continue
        made = _producers(layers[:index])
        param = _class_param(consumer)
        num_classes = int(param.num_classes)
        loc_classes = 1 if param.share_location else num_classes
        for bottom, per_box, what in ((consumer.bottom[0], 4 * loc_classes, "location"),
                                      (consumer.bottom[1], num_classes, "confidence")):
            for conv in _head_convolutions(bottom, made):
                _check_head(conv, priors.get(conv.bottom[0], []), per_box, what, path,
                            _class_hint(consumer, num_classes) if what == "confidence" else None)


def check_head_outputs(net: Any, path: str | Path, phase: int, outputs: Mapping[str, tuple[int, str]]) -> None:
    """The same check for a net without ``MultiBoxLoss`` / ``DetectionOutput`` (e.g. the face network,
    decoded outside Caffe): ``outputs`` maps each concatenated head blob to ``(values per box, what)``,
    e.g. ``{"mbox_loc": (4, "location")}``. Raises :class:`HeadMismatchError` when no head convolution
    feeds such a blob or one of them does not fit the priors of its feature map."""
    layers = phase_layers(net, phase)
    priors, made = _priors_by_map(layers), _producers(layers)
    for blob, (per_box, what) in outputs.items():
        convs = list(_head_convolutions(blob, made))
        if not convs:
            raise HeadMismatchError(f"{path}: no head convolution feeds the {what} output '{blob}'")
        for conv in convs:
            _check_head(conv, priors.get(conv.bottom[0], []), per_box, what, path)


def _class_hint(consumer: Any, num_classes: int) -> Callable[[int, int], str]:
    """The extra advice for a confidence head predicting another class count than ``consumer`` has."""
    def hint(outputs: int, boxes: int) -> str:
        if outputs % boxes:
            return ""
        return (f"; it predicts {outputs // boxes} classes per box but layer '{consumer.name}' has num_classes "
                f"{num_classes}: regenerate the nets with gen-model --classes, or make both agree")
    return hint


def _check_head(conv: Any, prior_layers: Sequence[Any], per_box: int, what: str, path: str | Path,
                hint: Callable[[int, int], str] | None = None) -> None:
    if len(prior_layers) != 1:
        return
    boxes = priors_per_cell(prior_layers[0])
    outputs = int(conv.convolution_param.num_output)
    if outputs == boxes * per_box:
        return
    unit = "4 box offsets" if what == "location" and per_box == 4 else (
        f"{per_box} values ({per_box} classes)" if what == "confidence" else f"{per_box} values")
    raise HeadMismatchError(
        f"{path}: {what} head '{conv.name}' has num_output {outputs}, but PriorBox '{prior_layers[0].name}' on "
        f"the same feature map '{conv.bottom[0]}' makes {boxes} boxes per cell, so it needs {boxes} x {unit} = "
        f"{boxes * per_box}{hint(outputs, boxes) if hint else ''}")
