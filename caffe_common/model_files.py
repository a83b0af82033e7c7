"""Reading Caffe model files in Python, and checking them before Caffe sees them.

A prototxt that names an unknown layer type or reads a blob nobody wrote, or a
``.caffemodel`` whose blobs do not fit the prototxt, makes Caffe fail a ``CHECK``,
which aborts the whole process. Everything here runs in Python first and raises
:class:`CaffeModelError` naming the file and the layer instead. The detector's
weight loading (:func:`mtcnn_caffe.nets.weights.check_weights`) and ``merge_bn`` both
use these functions; they re-raise the error as their own type.

Caffe's conventions followed here:

* a ``BlobProto`` that sets any of the legacy ``num/channels/height/width``
  fields is 4-D ``(num, channels, height, width)`` whatever its ``shape`` says,
  and is compared with a net blob right-aligned, padded with 1s
  (``Blob::ShapeEquals``); otherwise its shape is ``shape.dim``;
* values are read from ``double_data`` when it is not empty, else ``data``;
* a layer is in the TEST-phase net unless its ``include``/``exclude`` rules say
  otherwise (``Net::FilterNet`` at level 0 without stages).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

TEST_PHASE = 1  # caffe_pb2.TEST
#: Layers the pure-Python blob-count rule knows to have no learned blobs.
_PARAMETERLESS_TYPES = frozenset({
    "ReLU", "ReLU6", "Pooling", "Concat", "Eltwise", "Softmax", "Flatten", "Reshape", "Permute", "PriorBox",
    "DetectionOutput", "Input", "Dropout", "Sigmoid", "TanH", "Split", "Slice", "Crop", "LRN", "Power",
    "Upsample", "Interp", "ArgMax",
})
_MAX_PROBLEMS_SHOWN = 12


class CaffeModelError(ValueError):
    """A prototxt or caffemodel Caffe would refuse (or abort on); the message names the file and layer."""


class PrototxtParseError(CaffeModelError):
    """A prototxt that protobuf cannot parse; ``text`` keeps the file's text for callers' hints."""

    def __init__(self, message: str, text: str):
        super().__init__(message)
        self.text = text


def caffe_pb2() -> Any:
    """Caffe's protobuf module (imported through :func:`caffe_common.env.import_caffe`)."""
    from .env import import_caffe

    return import_caffe().proto.caffe_pb2


# --------------------------------------------------------------------------- reading files
def _read_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise CaffeModelError(f"{what} file not found: {path}")
    return path.read_bytes()


def read_net_prototxt(path: str | Path) -> Any:
    """Parse a text prototxt into a ``NetParameter``; errors name the file (and the line of a parse error)."""
    from google.protobuf import text_format

    path = Path(path)
    raw = _read_file(path, "prototxt")
    if b"\x00" in raw[:4096]:
        raise CaffeModelError(f"{path}: this is a binary file (a .caffemodel?), not a text prototxt; "
                              "pass the network description as the model and the .caffemodel as the weights")
    text = raw.decode("utf-8", errors="replace")
    net = caffe_pb2().NetParameter()
    try:
        text_format.Merge(text, net)
    except text_format.ParseError as exc:
        raise PrototxtParseError(f"{path}: not a valid Caffe prototxt (it does not parse): {exc}", text) from exc
    return net


def read_caffemodel(path: str | Path) -> Any:
    """Parse a binary ``.caffemodel`` into a ``NetParameter``; refuses files that are not one."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    raw = _read_file(path, "weights")
    net = caffe_pb2().NetParameter()
    try:
        net.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:  # DecodeError, or the C++ backend's errors
        hint = " (it looks like a text prototxt)" if raw[:200].lstrip().startswith((b"name", b"layer", b"input")) else ""
        raise CaffeModelError(f"{path}: not a binary Caffe .caffemodel{hint}: {exc}") from exc
    if not len(net.layer) and not len(net.layers):
        raise CaffeModelError(f"{path}: no layers in this weights file (empty or not a .caffemodel)")
    return net


def weights_by_layer(weights_net: Any) -> dict[str, list[Any]]:
    """Layer name -> its ``BlobProto`` list (new-style ``layer`` and legacy V1 ``layers``).

    When a name repeats, the last one wins, as in Caffe's ``CopyTrainedLayersFrom``.
    """
    found: dict[str, list[Any]] = {}
    for layer in list(weights_net.layers) + list(weights_net.layer):
        found[layer.name] = list(layer.blobs)
    return found


# --------------------------------------------------------------------------- blobs
def is_legacy_blob(blob: Any) -> bool:
    """Caffe's rule: a blob that sets any of num/channels/height/width is a legacy 4-D blob."""
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blob_shape(blob: Any) -> tuple[int, ...]:
    """Shape stored in a ``BlobProto``, read as Caffe reads it (see :func:`is_legacy_blob`)."""
    if is_legacy_blob(blob):
        return (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
    return tuple(int(d) for d in blob.shape.dim)


def blob_value_count(blob: Any) -> int:
    """Number of stored values (``double_data`` when present, else ``data``, as Caffe reads them)."""
    return len(blob.double_data) or len(blob.data)


def shape_equals(net_shape: Sequence[int], blob: Any) -> bool:
    """Caffe's ``Blob::ShapeEquals``: legacy blobs compare right-aligned, padded with 1s to 4-D."""
    net_shape = tuple(int(d) for d in net_shape)
    if is_legacy_blob(blob):
        return len(net_shape) <= 4 and (1,) * (4 - len(net_shape)) + net_shape == blob_shape(blob)
    return net_shape == blob_shape(blob)


# --------------------------------------------------------------------------- the net structure
def _rule_met(rule: Any, phase: int) -> bool:
    """``Net::StateMeetsRule`` for the state ``phase``, level 0, no stages."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    return not len(rule.stage)  # a required stage is never set here; not_stage never excludes


def phase_layers(net: Any, phase: int = TEST_PHASE) -> list[Any]:
    """The layers Caffe keeps in a net of ``phase`` (``layer``, or legacy V1 ``layers``)."""
    layers = list(net.layer) or list(net.layers)
    kept = []
    for layer in layers:
        if len(layer.include):
            included = any(_rule_met(rule, phase) for rule in layer.include)
        else:
            included = not any(_rule_met(rule, phase) for rule in layer.exclude)
        if included:
            kept.append(layer)
    return kept


def check_net_structure(net: Any, path: str | Path, phase: int = TEST_PHASE) -> None:
    """Raise :class:`CaffeModelError` when Caffe would abort building ``net``: an unknown layer type,
    or a bottom blob that no earlier layer (or net input) produces."""
    from .env import import_caffe

    layers = phase_layers(net, phase)
    if len(net.layer):  # V1 ``layers`` store enum types, upgraded by Caffe itself
        known = set(import_caffe().layer_type_list())
        unknown = list(dict.fromkeys(f"'{layer.name}' ({layer.type})" for layer in layers if layer.type not in known))
        if unknown:
            raise CaffeModelError(f"{path}: layer type(s) this Caffe build does not have: {', '.join(unknown)}")
    available = set(net.input)
    for layer in layers:
        for bottom in layer.bottom:
            if bottom not in available:
                raise CaffeModelError(f"{path}: layer '{layer.name}' reads blob '{bottom}', "
                                      "which no earlier layer or input produces")
        available.update(layer.top)


def load_net(prototxt: str | Path, net: Any | None = None) -> Any:
    """A TEST-phase ``caffe.Net`` of ``prototxt`` (no weights), checked with :func:`check_net_structure` first.

    ``net`` is the already parsed ``NetParameter`` of the file, if the caller has it.
    """
    from .env import import_caffe

    caffe = import_caffe()
    net = read_net_prototxt(prototxt) if net is None else net
    check_net_structure(net, prototxt)
    return caffe.Net(str(prototxt), caffe.TEST)


# --------------------------------------------------------------------------- weights vs prototxt
def expected_blob_count(layer: Any) -> int | None:
    """Number of learned blobs Caffe creates for ``layer``, or None for types only a built net can tell."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        return 1 + int(layer.convolution_param.bias_term)
    if kind == "InnerProduct":
        return 1 + int(layer.inner_product_param.bias_term)
    if kind == "BatchNorm":
        return 3
    if kind == "Scale":
        return int(len(layer.bottom) == 1) + int(layer.scale_param.bias_term)
    if kind == "Bias":
        return int(len(layer.bottom) == 1)
    if kind in ("PReLU", "Normalize"):
        return 1
    if kind in _PARAMETERLESS_TYPES:
        return 0
    return None


def _count_hint(layer: Any, expected: int, found: int) -> str:
    if layer.type in ("Convolution", "Deconvolution", "InnerProduct") and abs(expected - found) == 1:
        field_name = "convolution_param" if layer.type != "InnerProduct" else "inner_product_param"
        has_bias = expected == 2
        return (f" (the prototxt says {field_name} bias_term: {str(has_bias).lower()}, the weights "
                f"{'have no' if has_bias else 'have a'} bias)")
    if layer.type == "Scale" and abs(expected - found) == 1:
        return " (check scale_param bias_term)"
    return ""


def weight_problems(net: Any, weights: dict[str, list[Any]], built: Any | None = None) -> list[str]:
    """Every way ``weights`` (:func:`weights_by_layer`) do not fit the TEST-phase ``net``, one line each.

    Without ``built`` the blob counts come from the layer types
    (:func:`expected_blob_count`); with ``built`` (the ``caffe.Net`` of the same
    prototxt, from :func:`load_net`) the counts and shapes Caffe created are
    checked with Caffe's own rule (:func:`shape_equals`). A learned layer absent
    from the weights is a problem too (Caffe would keep its random fillers).
    """
    created = None
    if built is not None:
        created = {name: [tuple(b.data.shape) for b in layer.blobs] for name, layer in zip(built._layer_names, built.layers)}
    problems = []
    for layer in phase_layers(net):
        shapes = created.get(layer.name, []) if created is not None else None
        expected = len(shapes) if shapes is not None else expected_blob_count(layer)
        blobs = weights.get(layer.name)
        if expected and not blobs:
            problems.append(f"layer '{layer.name}' ({layer.type}) has no weights in the .caffemodel "
                            "(renamed layer, or weights of another network?)")
            continue
        if blobs is not None and expected is not None and len(blobs) != expected:
            problems.append(f"layer '{layer.name}' ({layer.type}): the prototxt expects {expected} blob(s), the "
                            f".caffemodel has {len(blobs)}{_count_hint(layer, expected, len(blobs))}")
            continue
        for k, blob in enumerate(blobs or ()):
            stored, shape = blob_value_count(blob), blob_shape(blob)
            if stored != math.prod(shape):
                problems.append(f"layer '{layer.name}' blob {k}: {stored} values for shape {shape}")
            elif shapes is not None and not shape_equals(shapes[k], blob):
                problems.append(f"layer '{layer.name}' blob {k}: the prototxt gives shape {shapes[k]}, "
                                f"the .caffemodel {shape}")
    return problems


def mismatch_message(prototxt: str | Path, caffemodel: str | Path, problems: Sequence[str]) -> str:
    """One error message for weight problems: the files and the first problem on the first line."""
    shown = list(problems[:_MAX_PROBLEMS_SHOWN])
    if len(problems) > _MAX_PROBLEMS_SHOWN:
        shown.append(f"... and {len(problems) - _MAX_PROBLEMS_SHOWN} more")
    return f"{caffemodel} vs {prototxt}: the weights do not match the prototxt: " + "\n  ".join(shown)


def check_weights(net: Any, weights: dict[str, list[Any]], prototxt: str | Path, caffemodel: str | Path,
                  built: Any | None = None) -> None:
    """Raise :class:`CaffeModelError` listing :func:`weight_problems` (naming each layer), if any."""
    problems = weight_problems(net, weights, built)
    if problems:
        raise CaffeModelError(mismatch_message(prototxt, caffemodel, problems))


def check_weight_files(prototxt: str | Path, caffemodel: str | Path) -> None:
    """Parse both files, build the net of ``prototxt`` (structure checked first) and check the weights
    against the blobs Caffe created, all without letting Caffe read ``caffemodel``."""
    net = read_net_prototxt(prototxt)
    weights = weights_by_layer(read_caffemodel(caffemodel))
    check_weights(net, weights, prototxt, caffemodel, built=load_net(prototxt, net))


def load_net_with_weights(prototxt: str | Path, caffemodel: str | Path, net: Any | None = None,
                          weights: dict[str, list[Any]] | None = None) -> Any:
    """A TEST-phase ``caffe.Net`` with the weights of ``caffemodel``, every check done in Python first.

    ``net`` / ``weights`` are the already parsed files, if the caller has them.
    """
    net = read_net_prototxt(prototxt) if net is None else net
    weights = weights_by_layer(read_caffemodel(caffemodel)) if weights is None else weights
    built = load_net(prototxt, net)
    check_weights(net, weights, prototxt, caffemodel, built=built)
    built.copy_from(str(caffemodel))
    return built
