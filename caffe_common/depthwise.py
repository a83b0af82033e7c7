"""Depthwise convolution in two spellings: grouped ``Convolution`` and the native layer.

A depthwise convolution (one filter per channel, MobileNet's ``*/dw`` layers) is written in a prototxt
either as ``Convolution`` with ``group`` = ``num_output`` = input channels, which every Caffe and
OpenCV DNN run (Caffe slowly: im2col and one GEMM per channel), or as the native layer
``ConvolutionDepthwise`` (also registered as ``DepthwiseConvolution``) that this project's Caffe build
adds (scripts/caffe_build/patches/depthwise_conv). Both keep their weights as ``C x 1 x kh x kw``, so a
``.caffemodel`` works with either spelling unchanged; only the prototxt differs.

* :func:`convert` rewrites a net from one spelling to the other. Going native needs each grouped
  convolution's input channel count, which is read from the prototxt itself (:func:`blob_channels`:
  convolution outputs, net inputs, and layers that keep or concatenate channels), so train and test
  nets convert without their data sources; a grouped convolution whose input cannot be traced that way
  is refused by name rather than guessed.
* :func:`grouped_prototxt` gives OpenCV DNN (which lacks the native type) a file it can read.
* :func:`has_native_depthwise` tells whether the Caffe in use has the native layer;
  :func:`resolve_depthwise` turns ``gen-model --depthwise auto|native|group`` into a layer type.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .model_files import DEPTHWISE_TYPES, CaffeModelError, caffe_pb2, read_net_prototxt

#: The type name :func:`convert` writes (the other one, ``DepthwiseConvolution``, is read as well).
NATIVE_TYPE = DEPTHWISE_TYPES[0]
TARGETS = ("native", "group")
CHOICES = ("auto",) + TARGETS
#: Layers whose output has the channel count of their (first) input.
_SAME_CHANNEL_TYPES = frozenset({
    "BatchNorm", "Scale", "Bias", "ReLU", "ReLU6", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp",
    "Log", "BNLL", "Threshold", "Dropout", "Pooling", "LRN", "MVN", "Normalize", "Upsample", "Eltwise", "Split",
    "HardSwish", "HardSigmoid",
})
_NATIVE_IN_TEXT = re.compile(r'type:\s*"(?:' + "|".join(DEPTHWISE_TYPES) + ')"')


class DepthwiseConversionError(CaffeModelError):
    """A net :func:`convert` cannot rewrite; the message names the file (when known) and the layer."""


def has_native_depthwise() -> bool:
    """Whether the Caffe in use registers the native depthwise layer (this project's build does)."""
    from .env import import_caffe

    return NATIVE_TYPE in set(import_caffe().layer_type_list())


def resolve_depthwise(choice: str) -> str | None:
    """The layer type for depthwise convolutions: ``native`` -> ``ConvolutionDepthwise``, ``group`` -> None
    (grouped ``Convolution``), ``auto`` -> native when the Caffe in use has it."""
    if choice not in CHOICES:
        raise ValueError(f"depthwise must be one of {CHOICES}, not {choice!r}")
    if choice == "auto":
        choice = "native" if has_native_depthwise() else "group"
    return NATIVE_TYPE if choice == "native" else None


def mentions_native_depthwise(text: str) -> bool:
    """Whether prototxt text declares a native depthwise layer (a quick test before parsing)."""
    return bool(_NATIVE_IN_TEXT.search(text))


# --------------------------------------------------------------------------- channel counts
def _input_channels(net: Any) -> dict[str, int | None]:
    """Channels of the ``input:`` header blobs (``input_shape`` or legacy ``input_dim``)."""
    found: dict[str, int | None] = {}
    for k, name in enumerate(net.input):
        dims = None
        if len(net.input_shape) > k:
            dims = list(net.input_shape[k].dim)
        elif len(net.input_dim) >= 4 * (k + 1):
            dims = list(net.input_dim[4 * k: 4 * k + 4])
        found[name] = int(dims[1]) if dims and len(dims) > 1 else None
    return found


def _top_channels(layer: Any, channels: dict[str, int | None]) -> list[int | None]:
    """The channel count of each top of ``layer`` (None where the prototxt alone cannot tell)."""
    known = [channels.get(bottom) for bottom in layer.bottom]
    kind = layer.type
    if kind in ("Convolution", "Deconvolution") + DEPTHWISE_TYPES:
        value = int(layer.convolution_param.num_output) or None
    elif kind == "Input":
        shapes = [list(shape.dim) for shape in layer.input_param.shape]
        values = [int(dims[1]) if len(dims) > 1 else None for dims in shapes]
        return values if len(values) == len(layer.top) else [values[0] if len(values) == 1 else None] * len(layer.top)
    elif kind in _SAME_CHANNEL_TYPES or (kind == "Crop" and layer.crop_param.axis >= 2):
        value = known[0] if known else None
    elif kind == "Concat" and _concat_axis(layer) == 1 and known and None not in known:
        value = sum(known)
    else:
        value = None
    return [value] * len(layer.top)


def _concat_axis(layer: Any) -> int:
    param = layer.concat_param
    return int(param.concat_dim) if param.HasField("concat_dim") else int(param.axis)


def blob_channels(net: Any) -> list[dict[str, int | None]]:
    """For each layer of ``net`` (a ``NetParameter``), the channel count of each blob it reads, as far as
    the prototxt tells (net inputs, convolution outputs, layers that keep or concatenate channels)."""
    channels = _input_channels(net)
    seen = []
    for layer in net.layer:
        seen.append({bottom: channels.get(bottom) for bottom in layer.bottom})
        channels.update(zip(layer.top, _top_channels(layer, channels)))
    return seen


# --------------------------------------------------------------------------- conversion
@dataclass
class Conversion:
    """What :func:`convert` did: the rewritten net and the names of the layers it changed."""

    net: Any
    to: str
    converted: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The rewritten net as prototxt text."""
        from google.protobuf import text_format

        return text_format.MessageToString(self.net)


def _parse(net_or_text: Any, source: str) -> Any:
    if not isinstance(net_or_text, str):
        return net_or_text
    from google.protobuf import text_format

    net = caffe_pb2().NetParameter()
    try:
        text_format.Merge(net_or_text, net)
    except text_format.ParseError as exc:
        raise DepthwiseConversionError(f"{source}: not a valid Caffe prototxt (it does not parse): {exc}") from exc
    return net


def _may_be_depthwise(layer: Any) -> bool:
    """A 2-D grouped ``Convolution`` with one output channel per group (depthwise if each group also
    has one input channel)."""
    param = layer.convolution_param
    two_d = all(len(values) <= 2 for values in (param.kernel_size, param.stride, param.pad, param.dilation))
    return (layer.type == "Convolution" and param.group > 1 and param.group == param.num_output
            and param.axis == 1 and two_d and len(layer.bottom) > 0)


def _to_native(net: Any, source: str) -> list[str]:
    converted, unknown = [], []
    for layer, inputs in zip(net.layer, blob_channels(net)):
        if not _may_be_depthwise(layer):
            continue
        if None in inputs.values():
            unknown.append(f"'{layer.name}' (input '{layer.bottom[0]}')")
        elif set(inputs.values()) == {layer.convolution_param.group}:
            layer.type = NATIVE_TYPE
            converted.append(layer.name)
    if unknown:
        raise DepthwiseConversionError(
            f"{source}: cannot tell the input channel count of grouped convolution(s) {', '.join(unknown)} from "
            "the prototxt (the input comes from a layer whose channel count depends on its data); nothing was "
            "converted. Convert the deploy net instead, or set those layers' type to ConvolutionDepthwise by "
            "hand where group == num_output == input channels")
    return converted


def _to_group(net: Any) -> list[str]:
    converted = []
    for layer in net.layer:
        if layer.type in DEPTHWISE_TYPES:
            layer.type = "Convolution"
            layer.convolution_param.group = layer.convolution_param.num_output
            converted.append(layer.name)
    return converted


def convert(net_or_text: Any, to: str, source: str = "<net>") -> Conversion:
    """Rewrite every depthwise convolution of a net (``NetParameter`` or prototxt text; not modified) as
    the native layer (``to="native"``) or as grouped ``Convolution`` (``to="group"``, with ``group`` set to
    ``num_output``). Only the layer type changes (the native layer ignores ``engine``), so converting back
    gives the original net; the weights the net takes are the same.

    Raises :class:`DepthwiseConversionError` for text that does not parse, nets without layers, legacy V1
    nets, and (going native) grouped convolutions whose input channel count the prototxt does not tell.
    """
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, not {to!r}")
    original = _parse(net_or_text, source)
    if len(original.layers):
        raise DepthwiseConversionError(f"{source}: uses the legacy V1 'layers {{ }}' format; upgrade it to "
                                       "'layer { }' first (Caffe's upgrade_net_proto_text tool)")
    if not len(original.layer):
        raise DepthwiseConversionError(f"{source}: has no layers (an empty file, or not a network prototxt)")
    net = type(original)()
    net.CopyFrom(original)
    converted = _to_native(net, source) if to == "native" else _to_group(net)
    return Conversion(net, to, converted)


def convert_file(model: str | Path, out: str | Path, to: str) -> Conversion:
    """Convert the prototxt ``model`` (see :func:`convert`) and write it to ``out`` atomically."""
    try:
        net = read_net_prototxt(model)
    except CaffeModelError as exc:
        raise DepthwiseConversionError(str(exc)) from exc
    result = convert(net, to, str(model))
    write_text_atomic(out, result.text)
    return result


def grouped_prototxt(path: str | Path) -> str:
    """The prototxt at ``path`` with native depthwise layers written as grouped ``Convolution`` (what
    OpenCV DNN reads); errors name the file."""
    try:
        net = read_net_prototxt(path)
    except CaffeModelError as exc:
        raise DepthwiseConversionError(str(exc)) from exc
    return convert(net, "group", str(path)).text
