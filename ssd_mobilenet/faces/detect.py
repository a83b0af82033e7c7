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
   are dropped;
2. their boxes and landmarks are decoded from the priors (:func:`~ssd_mobilenet.faces.targets.decode_boxes`,
   :func:`~ssd_mobilenet.faces.targets.decode_landmarks`, variances from the priors blob) and scaled to the
   image (by the extent of the input square in image pixels: the image's own size when squashed);
   boxes with less than ``min_inside`` (0.9) of their area inside the image are dropped, and the best
   ``top_k`` kept. Why: on a padded input the net fires on the flat mean-colour margin and across the
   image's edge (large boxes below a landscape photo; on the held-out WIDER event a sixth of all boxes
   lay wholly in the margin), and such boxes would also take the ``keep_top_k`` places of real faces.
   The net never learns a box beyond its input (training boxes are clipped to the crop, a cut face
   becoming a partial face), so 0.9 leaves room for regression error only. On the held-out event at
   320 the rule raised the AP from 0.310 to 0.335 (at 0.5) and 0.345 (at 0.9);
3. one class-agnostic greedy NMS (:func:`caffe_common.nms.nms`, continuous coordinates) at IoU ``nms``,
   at most ``keep_top_k`` faces, best first;
4. with several input sizes (face_model.json's ``input.detect_sizes``: the trained side and twice it), steps
   1-2 run once per size and step 3 once over all their faces. The smallest pass keeps every face; a larger
   one only faces narrower than ``enlarged_max_face`` (96) of its input pixels, because the net, trained on
   faces at about the first size's scale, finds small faces when the image is enlarged, but big enlarged
   structures (shirts, lecterns) then look like faces to its largest priors. On the held-out WIDER event,
   passes at 320 and 640 found 0.36 of the faces 48-64 px wide where 320 alone found 0.15
   (``bench/RESULTS.md``).

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
from typing import Any, Sequence

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
    check_sizes,
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
def inside_fraction(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """The fraction of each continuous box's area ``(N, 4)`` that lies inside the image ``[0, width) x
    [0, height)`` (0 for an empty box)."""
    inside_w = np.clip(np.minimum(boxes[:, 2], width) - np.maximum(boxes[:, 0], 0), 0, None)
    inside_h = np.clip(np.minimum(boxes[:, 3], height) - np.maximum(boxes[:, 1], 0), 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return np.divide(inside_w * inside_h, area, out=np.zeros(len(boxes)), where=area > 0)


@dataclass(frozen=True)
class FaceCandidates:
    """Decoded faces before NMS, in image pixels: continuous boxes ``(N, 4)``, landmarks ``(N, 10)``, scores
    ``(N,)`` and partial-face marks ``(N,)``; from one input size or several merged (:meth:`merge`)."""

    boxes: np.ndarray
    points: np.ndarray
    scores: np.ndarray
    partial: np.ndarray

    @staticmethod
    def merge(parts: list[FaceCandidates]) -> FaceCandidates:
        """All candidates of ``parts`` in one set."""
        return FaceCandidates(*(np.concatenate([getattr(c, f) for c in parts]) for f in
                                ("boxes", "points", "scores", "partial")))


def face_candidates(loc: np.ndarray, conf: np.ndarray, lmk: np.ndarray, priors_blob: np.ndarray, width: float,
                    height: float, thresholds: Thresholds | None = None,
                    landmark_variance: float = LANDMARK_VARIANCE, image_size: tuple[float, float] | None = None,
                    max_face: float | None = None) -> FaceCandidates:
    """Steps 1 and 2 of the module docstring: the best ``top_k`` decoded faces of one forward pass (the net's
    four outputs, any shapes holding ``P * 4``, ``P * 3``, ``P * 10`` values and PriorBox's ``(1, 2, P * 4)``),
    for an input square that spans ``width`` x ``height`` image pixels (the image's size when it was squashed
    into it). ``image_size`` (width, height), when given, drops boxes with less than ``thresholds.min_inside``
    of their area inside the image; ``max_face``, when given, boxes at least that wide as a fraction of the
    input's side (an enlarged pass keeps only the small faces, step 4). Raises ValueError when the outputs
    do not fit the priors."""
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
        kept = np.flatnonzero(np.isfinite(score) & (score >= thresholds.conf))
    normalised = decode_boxes(priors[kept], rows["loc"][kept], variances[kept])
    boxes = normalised * np.array([width, height] * 2, np.float64)
    points = decode_landmarks(priors[kept], rows["landmarks"][kept], landmark_variance)
    points = points * np.tile([width, height], NUM_LANDMARKS)
    usable = np.isfinite(boxes).all(axis=1) & np.isfinite(points).all(axis=1)
    with np.errstate(invalid="ignore"):
        if image_size is not None:
            usable &= inside_fraction(boxes, *image_size) >= thresholds.min_inside
        if max_face is not None:
            usable &= normalised[:, 2] - normalised[:, 0] < max_face
    kept, boxes, points = kept[usable], boxes[usable], points[usable]
    best = np.argsort(-score[kept], kind="stable")[:thresholds.top_k]
    partial = probs[kept, KINDS["partial"]] > probs[kept, KINDS["face"]]
    return FaceCandidates(boxes[best], points[best], score[kept][best], partial[best])


def select_faces(candidates: FaceCandidates, thresholds: Thresholds | None = None) -> list[SsdFace]:
    """Step 3 of the module docstring: one class-agnostic NMS over ``candidates``, at most ``keep_top_k``
    faces, best first."""
    thresholds = thresholds or Thresholds()
    keep = greedy_nms(np.column_stack([candidates.boxes, candidates.scores]), thresholds.nms, "union",
                      pixel_offset=0)[:thresholds.keep_top_k]
    return [SsdFace(to_inclusive_pixels(candidates.boxes[k]), float(candidates.scores[k]),
                    candidates.points[k].reshape(NUM_LANDMARKS, 2), bool(candidates.partial[k])) for k in keep]


def decode_faces(loc: np.ndarray, conf: np.ndarray, lmk: np.ndarray, priors_blob: np.ndarray, width: float,
                 height: float, thresholds: Thresholds | None = None,
                 landmark_variance: float = LANDMARK_VARIANCE,
                 image_size: tuple[float, float] | None = None) -> list[SsdFace]:
    """The faces of one forward pass: :func:`face_candidates` (same arguments), then :func:`select_faces`."""
    return select_faces(face_candidates(loc, conf, lmk, priors_blob, width, height, thresholds, landmark_variance,
                                        image_size), thresholds)


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
    #: the input sides a detector runs by default, smallest first (``input.detect_sizes``; older folders:
    #: the trained side alone)
    detect_sizes: tuple[int, ...] = ()


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
        detect_sizes = check_sizes(data["input"].get("detect_sizes", [side]), "input.detect_sizes")
        limit = thresholds.enlarged_max_face
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 <= limit < math.inf:
            raise ValueError(f"thresholds.enlarged_max_face must be a number of pixels >= 0, not {limit!r}")
    except (FaceModelError, TypeError, ValueError) as exc:
        raise FaceModelFilesError(f"{path}: {exc}") from exc
    return FaceModelInfo(directory, directory / str(_field(data, path, "deploy")),
                         directory / str(_field(data, path, "weights")), str(_field(data, path, "input", "blob")),
                         side, {k: str(outputs[k]) for k in OUTPUTS}, thresholds, variance, fit, detect_sizes)


# --------------------------------------------------------------------------- the detector
def _check_setting(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be in [0, 1], not {value!r}")
    return float(value)


class FaceDetector:
    """The face network of ``model_dir`` (default: :data:`DEFAULT_MODEL_DIR`) on ``backend`` (``caffe`` or
    ``opencv``). ``conf`` (lowest face score kept) and ``nms`` (IoU) default to face_model.json's;
    ``size`` is the square input side or several (default: face_model.json's ``detect_sizes``, else the side
    trained; multiples of 32 — a larger side finds smaller faces, at a cost growing with its square). With
    several, the net runs at each and one NMS merges their faces (step 4 of the module docstring);
    ``fit`` how an image becomes that square
    (:data:`~ssd_mobilenet.faces.preprocess.FITS`; default: face_model.json's). Raises :class:`FaceModelFilesError` (a
    :class:`~caffe_common.model_files.CaffeModelError`) for an unusable folder, ValueError for bad settings.
    """

    def __init__(self, model_dir: str | Path | None = None, backend: str = "caffe", conf: float | None = None,
                 nms: float | None = None, size: int | Sequence[int] | None = None, fit: str | None = None):
        self.info = read_model_info(DEFAULT_MODEL_DIR if model_dir is None else model_dir)
        self.backend = check_backend(backend)
        defaults = self.info.thresholds
        self.thresholds = Thresholds(_check_setting("conf", defaults.conf if conf is None else conf),
                                     _check_setting("nms", defaults.nms if nms is None else nms),
                                     defaults.top_k, defaults.keep_top_k,
                                     _check_setting("min_inside", defaults.min_inside), defaults.enlarged_max_face)
        if size is None:
            self.sizes = self.info.detect_sizes or (self.info.size,)
        else:
            self.sizes = check_sizes([size] if isinstance(size, int) else list(size))
        #: the first (smallest) input side, the one pass that keeps faces of every size
        self.size = self.sizes[0]
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

    def net_input(self, image: np.ndarray, size: int | None = None) -> tuple[np.ndarray, tuple[float, float]]:
        """The input blob of one BGR uint8 image at side ``size`` (default: the first) and the extent
        ``(width, height)`` of the input square in image pixels (what normalised outputs are multiplied by)."""
        from .preprocess import fit_to_square, to_blob

        size = self.size if size is None else size
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image (height, width, 3), got shape {image.shape}")
        if self.fit == "pad":
            square, frame = fit_to_square(image, size)
            return to_blob([square], size), frame
        return to_blob([image], size), (float(image.shape[1]), float(image.shape[0]))

    def forward(self, image: np.ndarray, size: int | None = None) -> dict[str, np.ndarray]:
        """The four raw outputs of one BGR uint8 image at side ``size`` (default: the first), by role
        (``loc``, ``conf``, ``landmarks``, ``priors``)."""
        return self.forward_blob(self.net_input(image, size)[0])

    def forward_blob(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        """The four raw outputs, by role, of an input blob ``(N, 3, S, S)`` already in the input convention
        (:func:`~ssd_mobilenet.faces.preprocess.to_blob`; a batch: a teacher net in training)."""
        out = self._net.forward(blob, self._outputs)
        return dict(zip(("loc", "conf", "landmarks", "priors"), (out[name] for name in self._outputs)))

    def candidates(self, image: np.ndarray, size: int) -> FaceCandidates:
        """The decoded faces of one pass at side ``size``, before NMS (steps 1, 2 and 4 of the module
        docstring: a pass larger than the first keeps only faces narrower than ``enlarged_max_face``)."""
        blob, (width, height) = self.net_input(image, size)
        out = self.forward_blob(blob)
        max_face = self.thresholds.enlarged_max_face / size if size != self.sizes[0] else None
        return face_candidates(out["loc"], out["conf"], out["landmarks"], out["priors"], width, height,
                               self.thresholds, self.info.landmark_variance, (image.shape[1], image.shape[0]),
                               max_face)

    def detect(self, image: np.ndarray) -> list[SsdFace]:
        """Faces in a BGR uint8 ``(H, W, 3)`` image, best score first (module docstring)."""
        return select_faces(FaceCandidates.merge([self.candidates(image, size) for size in self.sizes]),
                            self.thresholds)
