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

Python cannot foresee every ``CHECK`` of every layer's ``SetUp`` (a Convolution
without ``num_output``, a kernel larger than its input, ...). So before a net is
built in this process, :func:`probe_net` builds it (and loads its weights) in a
short-lived child process: if Caffe aborts there, :class:`NetProbeError` names
the file, the layer and Caffe's own message. Successful probes are remembered on
disk by content hash (:func:`probe_cache_dir`), so a file is probed once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .assets import file_sha256

TRAIN_PHASE, TEST_PHASE = 0, 1  # caffe_pb2.TRAIN, caffe_pb2.TEST
#: The native depthwise convolution's type names (this project's Caffe patch registers both; see
#: :mod:`caffe_common.depthwise`). It takes ``convolution_param`` and the blobs of grouped Convolution.
DEPTHWISE_TYPES = ("ConvolutionDepthwise", "DepthwiseConvolution")
#: Layers with ``convolution_param`` whose learned blobs are weights (+ bias when ``bias_term``).
CONVOLUTION_TYPES = ("Convolution", "Deconvolution") + DEPTHWISE_TYPES
#: Layers the pure-Python blob-count rule knows to have no learned blobs.
_PARAMETERLESS_TYPES = frozenset({
    "ReLU", "ReLU6", "Pooling", "Concat", "Eltwise", "Softmax", "Flatten", "Reshape", "Permute", "PriorBox",
    "DetectionOutput", "Input", "Dropout", "Sigmoid", "TanH", "Split", "Slice", "Crop", "LRN", "Power",
    "Upsample", "Interp", "ArgMax",
})
_MAX_PROBLEMS_SHOWN = 12


class CaffeModelError(ValueError):
    """A prototxt or caffemodel Caffe would refuse (or abort on); the message names the file and layer."""


class NetProbeError(CaffeModelError):
    """Caffe failed (aborted) building a net or loading its weights in the probe's child process.

    ``layer`` is the layer Caffe was setting up (None when unknown); ``stage`` is ``"build"``
    or ``"weights"`` (the net was built, copying the weights failed).
    """

    def __init__(self, message: str, layer: str | None = None, stage: str = "build"):
        super().__init__(message)
        self.layer, self.stage = layer, stage


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


def only_layer(layers: Sequence[Any], kind: str, path: str | Path, hint: str = "",
               error: type[Exception] = CaffeModelError) -> Any:
    """The one layer of type ``kind`` in ``layers`` (one phase of the net in ``path``); else ``error``
    naming the file, how many were found and ``hint`` (what to use instead)."""
    found = [layer for layer in layers if layer.type == kind]
    if len(found) != 1:
        raise error(f"{path}: the net needs exactly one {kind} layer, found {len(found)}"
                    + (f"; {hint}" if hint else ""))
    return found[0]


def path_in_prototxt(value: str, prototxt: Path) -> Path:
    """A path written in a prototxt (an LMDB source, a label map): as given when it exists or is absolute
    (Caffe opens it relative to the working directory), else beside the prototxt when it exists there."""
    path = Path(value)
    if path.is_absolute() or path.exists() or not (prototxt.parent / path).exists():
        return path
    return prototxt.parent / path


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
    """A TEST-phase ``caffe.Net`` of ``prototxt`` (no weights), checked with :func:`check_net_structure`
    and :func:`probe_net` first, so a net Caffe would abort on raises :class:`CaffeModelError` instead.

    ``net`` is the already parsed ``NetParameter`` of the file, if the caller has it.
    """
    from .env import import_caffe

    caffe = import_caffe()
    net = read_net_prototxt(prototxt) if net is None else net
    check_net_structure(net, prototxt)
    probe_net(prototxt, net=net)
    return caffe.Net(str(prototxt), caffe.TEST)


# --------------------------------------------------------------------------- the probe (child process)
#: Seconds a probe child may take (building a big net, or reading big weights, on a busy machine).
PROBE_TIMEOUT_S = 600
_PROBE_FORMAT = "1"  # bump when what a cached probe means changes
_FAILED_PROBES: dict[str, NetProbeError] = {}
_GLOG_FATAL = re.compile(r"^[FE]\d+\s+[\d:.]+\s+\d+\s+(\S+:\d+)\]\s?(.*)$")
_LAYER_IN_MESSAGE = re.compile(r"layer '([^']+)'")
_LAYER_SOURCE = re.compile(r"\[(\w+)_layer\.cpp:\d+\]$")


def probe_cache_dir() -> Path:
    """Where successful probes are remembered (one empty file per content hash)."""
    from .assets import cache_dir

    return cache_dir() / "net-probes"


def _stamp(path: Path) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file, or of each file directly inside a folder (an LMDB)."""
    if path.is_dir():
        return [_stamp(child) for child in sorted(path.iterdir()) if child.is_file()]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _python_layer_inputs(layers: Sequence[Any]) -> list[Any]:
    """What a Python layer's setup may read besides the prototxt: its module's source file and the
    existing paths named in its ``param_str`` (JSON values), stamped by size and mtime."""
    import importlib.util

    stamps: list[Any] = []
    for layer in layers:
        module = layer.python_param.module
        try:
            spec = importlib.util.find_spec(module) if module else None
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            stamps.append(_stamp(Path(spec.origin)))
        try:
            values = json.loads(layer.python_param.param_str or "{}")
        except ValueError:
            continue
        for value in (values.values() if isinstance(values, dict) else ()):
            if isinstance(value, str) and value and os.path.exists(value):
                stamps.append(_stamp(Path(value)))
    return stamps


def _caffe_build_stamp() -> list[Any]:
    """The Caffe extension module in use: a probe made with another build is not reused."""
    from .env import import_caffe

    return _stamp(Path(import_caffe()._caffe.__file__))


def _probe_key(prototxt: Path, weights: Path | None, phase: int, python_layers: Sequence[Any]) -> str:
    parts = [_PROBE_FORMAT, str(phase), file_sha256(prototxt), file_sha256(weights) if weights else "-",
             _caffe_build_stamp(), _python_layer_inputs(python_layers)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def probe_net(prototxt: str | Path, weights: str | Path | None = None, phase: int = TEST_PHASE,
              net: Any | None = None) -> None:
    """Build the net of ``prototxt`` (and copy in ``weights``) in a child process; raise
    :class:`NetProbeError` naming the file, the layer and Caffe's message if Caffe fails there.

    Caffe aborts the whole process on a failed ``CHECK``; the child takes that blow. A success is
    remembered on disk, keyed by the contents of both files, the phase, the Caffe build and (for
    Python layers) their module and data files, so probing the same files again costs no child; a
    failure is remembered for this process only. ``net`` is the parsed prototxt, if the caller has it.
    """
    prototxt = Path(prototxt)
    weights = Path(weights) if weights is not None else None
    net = read_net_prototxt(prototxt) if net is None else net
    if weights is not None and not weights.is_file():
        raise CaffeModelError(f"weights file not found: {weights}")
    layers = phase_layers(net, phase)
    python_layers = [layer for layer in layers if layer.type == "Python"]
    key = _probe_key(prototxt, weights, phase, python_layers)
    failed_key = f"{key} {prototxt} {weights}"  # a remembered failure's message names these paths
    if failed_key in _FAILED_PROBES:
        raise _FAILED_PROBES[failed_key]
    marker = probe_cache_dir() / key
    if marker.is_file():
        return
    try:
        _run_probe(prototxt, weights, phase, net, layers, full_import=bool(python_layers))
    except NetProbeError as exc:
        _FAILED_PROBES[failed_key] = exc
        raise
    from .atomic import write_bytes_atomic

    try:
        write_bytes_atomic(marker, b"")
    except OSError:  # an unwritable cache only costs a probe next time
        pass


def _child_command(phase: int, full_import: bool, weights: Path | None, prototxts: Sequence[Path]) -> list[str]:
    return [sys.executable, "-m", "caffe_common.model_files", "--probe-child", str(phase),
            "full" if full_import else "core", str(weights) if weights else "-", *map(str, prototxts)]


def _child_env() -> dict[str, str]:
    """The parent's environment, its ``sys.path`` (Python layers import like here), quiet Caffe, one thread."""
    env = dict(os.environ)
    paths = [str(Path(__file__).resolve().parents[1])] + [p for p in sys.path if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["GLOG_minloglevel"] = "2"  # this Caffe build has its INFO lines compiled out; keep ERROR and FATAL
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    return env


def _run_child(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, errors="replace", env=_child_env(),
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise NetProbeError(f"{command[-1]}: Caffe did not finish building this net within "
                            f"{PROBE_TIMEOUT_S} s (in a probe process)") from exc


def _caffe_message(run: subprocess.CompletedProcess) -> str:
    """Caffe's own reason from a failed child: its glog FATAL line (``Check failed: ...``), else the
    last line of a Python error, else how the process ended."""
    fatal = [m for m in map(_GLOG_FATAL.match, run.stderr.splitlines()) if m]
    if fatal:
        source, text = fatal[-1].groups()
        text = re.sub(r" \(known types: [^)]*\)", "", text.strip())  # the whole layer registry
        return f"{text} [{source}]"
    lines = [line.strip() for line in run.stderr.splitlines() if line.strip()]
    if lines:
        return lines[-1]
    if run.returncode < 0:
        return f"Caffe crashed ({signal.Signals(-run.returncode).name})"
    return f"the probe process exited with status {run.returncode}"


def _run_probe(prototxt: Path, weights: Path | None, phase: int, net: Any, layers: Sequence[Any],
               full_import: bool) -> None:
    run = _run_child(_child_command(phase, full_import, weights, [prototxt]))
    if run.returncode == 0:
        return
    message = _caffe_message(run)
    named = _LAYER_IN_MESSAGE.search(message)  # some of Caffe's messages name the layer themselves
    if "built 0" in run.stdout.splitlines():
        raise NetProbeError(f"{weights} vs {prototxt}: Caffe cannot load these weights: {message}",
                            named.group(1) if named else None, stage="weights")
    by_name = {layer.name: layer for layer in layers}
    if named and named.group(1) in by_name:
        layer = by_name[named.group(1)]
    else:
        layer = _only_layer_of_source(message, layers) or _failing_layer(net, layers, phase, full_import)
    where = f"layer '{layer.name}' ({layer.type}): " if layer is not None else ""
    raise NetProbeError(f"{prototxt}: Caffe cannot build this net: {where}{message}",
                        layer.name if layer is not None else None)


def _only_layer_of_source(message: str, layers: Sequence[Any]) -> Any | None:
    """The failing layer when Caffe's message names its source file ``<type>_layer.cpp`` (snake case,
    e.g. ``detection_output_layer.cpp``) and exactly one layer of the net has that type; else None.
    Saves the prefix search of :func:`_failing_layer` (one net build per layer) where the answer is certain."""
    match = _LAYER_SOURCE.search(message)
    if not match:
        return None
    kind = match.group(1).replace("_", "")
    candidates = [layer for layer in layers if layer.type.lower() == kind]
    return candidates[0] if len(candidates) == 1 else None


def _failing_layer(net: Any, layers: Sequence[Any], phase: int, full_import: bool) -> Any | None:
    """The first layer whose net prefix Caffe fails to build (one more child builds the prefixes in
    order). This Caffe logs no ``Creating layer`` lines, so the prefixes are what tells the layer."""
    from google.protobuf import text_format

    with tempfile.TemporaryDirectory(prefix="net-probe-") as tmp:
        prefixes = []
        for count in range(1, len(layers) + 1):
            prefix = type(net)()
            prefix.CopyFrom(net)
            del prefix.layer[:]
            del prefix.layers[:]
            target = prefix.layer if len(net.layer) else prefix.layers
            target.extend(layers[:count])
            path = Path(tmp) / f"prefix{count:05d}.prototxt"
            path.write_text(text_format.MessageToString(prefix))
            prefixes.append(path)
        run = _run_child(_child_command(phase, full_import, None, prefixes))
    built = {int(word) for line in run.stdout.splitlines() if line.startswith("built ") for word in line.split()[1:]}
    failed = len(built)
    return layers[failed] if run.returncode != 0 and failed < len(layers) and built == set(range(failed)) else None


def _import_caffe_core(full: bool) -> Any:
    """The Caffe extension for the probe child. Without Python layers only ``caffe._caffe`` is loaded
    (skipping the package's scikit-image imports halves the probe's time); Python layers need the
    whole package (they subclass ``caffe.Layer``), imported through :func:`caffe_common.env.import_caffe`."""
    if full:
        from .env import import_caffe

        return import_caffe()._caffe
    import importlib.util
    import types

    spec = importlib.util.find_spec("caffe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pycaffe is not installed")
    package = types.ModuleType("caffe")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["caffe"] = package
    import caffe._caffe as core  # noqa: WPS433

    core.set_mode_cpu()
    return core


def _probe_child(argv: Sequence[str]) -> int:
    """Child side: build each prototxt in order (printing ``built K`` after each), then copy the weights."""
    phase, mode, weights, *prototxts = argv
    core = _import_caffe_core(mode == "full")
    built = None
    for index, prototxt in enumerate(prototxts):
        built = core.Net(prototxt, int(phase))
        print(f"built {index}", flush=True)
    if weights != "-" and built is not None:
        built.copy_from(weights)
    return 0


# --------------------------------------------------------------------------- weights vs prototxt
def expected_blob_count(layer: Any) -> int | None:
    """Number of learned blobs Caffe creates for ``layer``, or None for types only a built net can tell."""
    kind = layer.type
    if kind in CONVOLUTION_TYPES:
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
    if layer.type in CONVOLUTION_TYPES + ("InnerProduct",) and abs(expected - found) == 1:
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
    from .env import import_caffe

    caffe = import_caffe()
    net = read_net_prototxt(prototxt) if net is None else net
    weights = weights_by_layer(read_caffemodel(caffemodel)) if weights is None else weights
    check_net_structure(net, prototxt)
    try:
        probe_net(prototxt, caffemodel, net=net)
        refused = None
    except NetProbeError as exc:
        if exc.stage != "weights":
            raise
        refused = exc  # the net builds; the Python check below names the problem more precisely
    built = caffe.Net(str(prototxt), caffe.TEST)
    check_weights(net, weights, prototxt, caffemodel, built=built)
    if refused is not None:
        raise refused
    built.copy_from(str(caffemodel))
    return built


if __name__ == "__main__" and sys.argv[1:2] == ["--probe-child"]:
    sys.exit(_probe_child(sys.argv[2:]))
