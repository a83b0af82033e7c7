"""Faces, partial faces and five landmarks in one pass of the face network, on pycaffe or OpenCV DNN.

A model folder holds ``face_model.json`` (:func:`ssd_mobilenet.faces.model.model_description`), the deploy
prototxt and the caffemodel it names. Both files are checked with Caffe's rules before either backend
reads them (:func:`caffe_common.model_files.load_net_with_weights`: a child-process probe, then the weights
layer by layer; the heads against their priors), so a broken folder is an error naming the file, never
an abort.

Per image: the image brought to the square input as the model folder says (``preprocessing.fit``:
``pad``, keeping its aspect, :func:`ssd_mobilenet.faces.preprocess.fit_to_square`; ``squash`` for folders
that do not say), :func:`ssd_mobilenet.faces.preprocess.to_blob` (the one input convention), one forward pass
(outputs ``mbox_loc``, ``mbox_conf`` probabilities, ``mbox_lmk``, ``mbox_priorbox``), then
:func:`decode_faces`:

1. a prior's face score is ``1 - P(background)`` = ``P(face) + P(partial)`` (a partial face is a face for
   every evaluator); it is marked ``partial`` when ``P(partial) > P(face)``; priors scoring below ``conf``
   are dropped, the best ``top_k`` kept;
2. their boxes and landmarks are decoded from the priors (:func:`~ssd_mobilenet.faces.targets.decode_boxes`,
   :func:`~ssd_mobilenet.faces.targets.decode_landmarks`, variances from the priors blob) and scaled to the
   image (by the extent of the input square in image pixels: the image's own size when squashed);
3. one class-agnostic greedy NMS (:func:`caffe_common.nms.nms`, continuous coordinates) at IoU ``nms``,
   at most ``keep_top_k`` faces, best first.

Faces are returned in MTCNN's convention (:mod:`caffe_common.face_output`): the training boxes are WIDER's
``x, y, x + w, y + h`` (continuous), so a decoded box becomes ``x1, y1, x2 - 1, y2 - 1`` (inclusive pixels:
the WIDER file's ``w = x2 - x1 + 1`` is the annotated width); landmarks stay in the annotations' frame,
as trained. Boxes are not clipped to the image (as MTCNN's).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffe_common.backends import BlobNet, check_backend, opencv_reason, read_opencv_net
from caffe_common.face_output import face_json
from caffe_common.model_files import (
    TEST_PHASE,
    CaffeModelError,
    load_net_with_weights,
    read_net_prototxt,
)
from caffe_common.nms import nms as greedy_nms

from .model import (
    CLASS_NAMES,
    MODEL_FORMAT,
    MODEL_JSON,
    OUTPUTS,
    FaceModelError,
    Thresholds,
    check_face_heads,
    check_size,
)
from .preprocess import UNRECORDED_FIT, check_fit
from .targets import (
    KINDS,
    LANDMARK_VARIANCE,
    NUM_LANDMARKS,
    decode_boxes,
    decode_landmarks,
    priors_from_blob,
)

#: The default model folder (``ssd-mobilenet detect-faces`` without ``--model-dir``): the committed compact model
#: (``models/face_multitask/MANIFEST.json`` says how it was trained and measured).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "face_multitask"
TRAIN_HINT = ("train one with `ssd-mobilenet train-faces --wider-anno wider_face_train_bbx_gt.txt --wider-images "
              "WIDER_train/images --landmarks list.txt --landmark-images DIR --out DIR`, then pass --model-dir DIR")


class FaceModelFilesError(CaffeModelError):
    """A model folder this detector cannot use; the message names the file."""


@dataclass(frozen=True)
class SsdFace:
    """One face: ``box`` x1, y1, x2, y2 and ``landmarks`` (5, 2) in MTCNN's 0-based pixel convention,
    ``score`` (``1 - P(background)``) and ``partial`` (the net sees only part of a face)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)
    partial: bool = False

    def to_json(self) -> dict:
        """As in ``ssd-mobilenet detect-faces --json`` lines: MTCNN's keys plus ``partial``."""
        return face_json(self.box, self.score, self.landmarks, self.partial)


# --------------------------------------------------------------------------- decoding
def decode_faces(loc: np.ndarray, conf: np.ndarray, lmk: np.ndarray, priors_blob: np.ndarray, width: float,
                 height: float, thresholds: Thresholds | None = None,
                 landmark_variance: float = LANDMARK_VARIANCE) -> list[SsdFace]:
    """The faces of one image from the net's four outputs (any shapes holding ``P * 4``, ``P * 3``,
    ``P * 10`` values and PriorBox's ``(1, 2, P * 4)``), for an input square that spans ``width`` x
    ``height`` image pixels (the image's size when it was squashed into it); see the module
    docstring (``thresholds``: :class:`~ssd_mobilenet.faces.model.Thresholds`' defaults when None). Raises
    ValueError when the outputs do not fit the priors."""
    thresholds = thresholds or Thresholds()
    priors, variances = priors_from_blob(priors_blob)
    count = len(priors)
    values = {"loc": (loc, 4), "conf": (conf, len(CLASS_NAMES)), "landmarks": (lmk, 2 * NUM_LANDMARKS)}
    rows = {}
    for name, (blob, per_prior) in values.items():
        array = np.asarray(blob, dtype=np.float64)
        if array.size != count * per_prior:
            raise ValueError(f"{OUTPUTS[name]} holds {array.size} values, {count} priors need "
                             f"{count * per_prior}")
        rows[name] = array.reshape(count, per_prior)
    probs = rows["conf"]
    score = 1.0 - probs[:, KINDS["background"]]
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(np.isfinite(score) & (score >= thresholds.conf))
    candidates = candidates[np.argsort(-score[candidates], kind="stable")[:thresholds.top_k]]
    scale = np.array([width, height] * 2, np.float64)
    boxes = decode_boxes(priors[candidates], rows["loc"][candidates], variances[candidates]) * scale
    points = decode_landmarks(priors[candidates], rows["landmarks"][candidates], landmark_variance)
    points = points * np.tile([width, height], NUM_LANDMARKS)
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(points).all(axis=1)
    boxes, points, candidates = boxes[finite], points[finite], candidates[finite]
    keep = greedy_nms(np.column_stack([boxes, score[candidates]]), thresholds.nms, "union",
                      pixel_offset=0)[:thresholds.keep_top_k]
    partial = probs[candidates, KINDS["partial"]] > probs[candidates, KINDS["face"]]
    return [SsdFace(to_inclusive_pixels(boxes[k]), float(score[candidates[k]]),
                    points[k].reshape(NUM_LANDMARKS, 2), bool(partial[k])) for k in keep]


def to_inclusive_pixels(box: np.ndarray) -> tuple[float, float, float, float]:
    """A continuous box ``[x1, x2) x [y1, y2)`` as MTCNN's inclusive pixel box ``x1, y1, x2 - 1, y2 - 1``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2 - 1.0, y2 - 1.0


# --------------------------------------------------------------------------- the model folder
@dataclass(frozen=True)
class FaceModelInfo:
    """What ``face_model.json`` says: the files, the input side, the outputs and the default thresholds."""

    directory: Path
    deploy: Path
    weights: Path
    input_blob: str
    size: int
    outputs: dict[str, str]
    thresholds: Thresholds
    landmark_variance: float
    fit: str


def _field(data: dict, path: Path, *keys: str) -> Any:
    value: Any = data
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise FaceModelFilesError(f"{path}: no '{'.'.join(keys[:depth + 1])}' (is this a face_model.json "
                                      "written by `ssd-mobilenet train-faces`?)")
        value = value[key]
    return value


def read_model_info(model_dir: str | Path) -> FaceModelInfo:
    """Read and check ``<model_dir>/face_model.json``; :class:`FaceModelFilesError` naming the file (and,
    for a missing folder, how to train a model)."""
    directory = Path(model_dir)
    path = directory / MODEL_JSON
    if not path.is_file():
        where = ("the default folder, committed with the repository: restore it with `git checkout "
                 "models/face_multitask`"
                 if directory.resolve() == DEFAULT_MODEL_DIR else "give the folder `train-faces --out` wrote")
        raise FaceModelFilesError(f"{path}: not found, so {directory} is not a face model folder ({where}); "
                                  f"{TRAIN_HINT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FaceModelFilesError(f"{path}: not a readable JSON file: {exc}") from exc
    if _field(data, path, "format") != MODEL_FORMAT:
        raise FaceModelFilesError(f"{path}: format {data['format']!r}, this toolkit reads format {MODEL_FORMAT}")
    outputs = _field(data, path, "outputs")
    missing = sorted(set(OUTPUTS) - set(outputs)) if isinstance(outputs, dict) else sorted(OUTPUTS)
    if missing:
        raise FaceModelFilesError(f"{path}: 'outputs' lacks {missing}")
    size = _field(data, path, "input", "size")
    side = size[0] if isinstance(size, list) and len(size) == 2 and size[0] == size[1] else size
    try:
        check_size(side)
        fit = check_fit(data.get("preprocessing", {}).get("fit", UNRECORDED_FIT))
        raw = dict(_field(data, path, "thresholds"))
        thresholds = Thresholds(**{k: raw[k] for k in Thresholds.__dataclass_fields__ if k in raw})
        variance = float(_field(data, path, "priors", "landmark_variance"))
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(f"priors.landmark_variance must be a positive number, not {variance}")
    except (FaceModelError, TypeError, ValueError) as exc:
        raise FaceModelFilesError(f"{path}: {exc}") from exc
    return FaceModelInfo(directory, directory / str(_field(data, path, "deploy")),
                         directory / str(_field(data, path, "weights")), str(_field(data, path, "input", "blob")),
                         side, {k: str(outputs[k]) for k in OUTPUTS}, thresholds, variance, fit)


# --------------------------------------------------------------------------- the detector
def _check_setting(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be in [0, 1], not {value!r}")
    return float(value)


class FaceDetector:
    """The face network of ``model_dir`` (default: :data:`DEFAULT_MODEL_DIR`) on ``backend`` (``caffe`` or
    ``opencv``). ``conf`` (lowest face score kept) and ``nms`` (IoU) default to face_model.json's;
    ``size`` is the square input side (default: the one trained; a multiple of 32 — a larger side finds
    smaller faces, at a cost growing with its square); ``fit`` how an image becomes that square
    (:data:`~ssd_mobilenet.faces.preprocess.FITS`; default: face_model.json's). Raises :class:`FaceModelFilesError` (a
    :class:`~caffe_common.model_files.CaffeModelError`) for an unusable folder, ValueError for bad settings.
    """

    def __init__(self, model_dir: str | Path | None = None, backend: str = "caffe", conf: float | None = None,
                 nms: float | None = None, size: int | None = None, fit: str | None = None):
        self.info = read_model_info(DEFAULT_MODEL_DIR if model_dir is None else model_dir)
        self.backend = check_backend(backend)
        defaults = self.info.thresholds
        self.thresholds = Thresholds(_check_setting("conf", defaults.conf if conf is None else conf),
                                     _check_setting("nms", defaults.nms if nms is None else nms),
                                     defaults.top_k, defaults.keep_top_k)
        self.size = check_size(self.info.size if size is None else size)
        self.fit = check_fit(self.info.fit if fit is None else fit)
        self._outputs = [self.info.outputs[k] for k in ("loc", "conf", "landmarks", "priors")]
        self._net = self._load()

    def _load(self) -> BlobNet:
        """Check the files with Caffe's rules, then load them on the chosen backend; OpenCV runs one blank
        input so that what it cannot run fails here, not on the first image."""
        deploy, weights = self.info.deploy, self.info.weights
        try:
            net = read_net_prototxt(deploy)
            check_face_heads(net, deploy, TEST_PHASE)
            caffe_net = load_net_with_weights(deploy, weights, net)
        except (CaffeModelError, ValueError) as exc:
            raise FaceModelFilesError(str(exc)) from exc
        missing = [name for name in self._outputs + [self.info.input_blob] if name not in caffe_net.blobs]
        if missing:
            raise FaceModelFilesError(f"{deploy}: no blob {missing[0]!r}, which {MODEL_JSON} names")
        if self.backend == "caffe":
            return BlobNet(caffe_net, "caffe", self.info.input_blob)
        del caffe_net
        try:
            opencv = BlobNet(read_opencv_net(deploy, weights), "opencv", self.info.input_blob)
        except CaffeModelError as exc:
            raise FaceModelFilesError(str(exc)) from exc
        self._run_blank(opencv)
        return opencv

    def _run_blank(self, net: BlobNet) -> None:
        import cv2

        try:
            net.forward(np.zeros((1, 3, self.size, self.size), np.float32), self._outputs)
        except cv2.error as exc:
            raise FaceModelFilesError(f"{self.info.weights} vs {self.info.deploy}: OpenCV DNN cannot run this "
                                      f"model: {opencv_reason(exc)}") from exc

    def net_input(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The input blob of one BGR uint8 image and the extent ``(width, height)`` of the input square in
        image pixels (what normalised outputs are multiplied by)."""
        from .preprocess import fit_to_square, to_blob

        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image (height, width, 3), got shape {image.shape}")
        if self.fit == "pad":
            square, frame = fit_to_square(image, self.size)
            return to_blob([square], self.size), frame
        return to_blob([image], self.size), (float(image.shape[1]), float(image.shape[0]))

    def forward(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The four raw outputs of one BGR uint8 image, by role (``loc``, ``conf``, ``landmarks``, ``priors``)."""
        return self.forward_blob(self.net_input(image)[0])

    def forward_blob(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        """The four raw outputs, by role, of an input blob ``(N, 3, S, S)`` already in the input convention
        (:func:`~ssd_mobilenet.faces.preprocess.to_blob`; a batch: a teacher net in training)."""
        out = self._net.forward(blob, self._outputs)
        return dict(zip(("loc", "conf", "landmarks", "priors"), (out[name] for name in self._outputs)))

    def detect(self, image: np.ndarray) -> list[SsdFace]:
        """Faces in a BGR uint8 ``(H, W, 3)`` image, best score first (module docstring)."""
        blob, (width, height) = self.net_input(image)
        out = self.forward_blob(blob)
        return decode_faces(out["loc"], out["conf"], out["landmarks"], out["priors"], width, height,
                            self.thresholds, self.info.landmark_variance)
