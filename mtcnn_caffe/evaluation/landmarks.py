"""5-point landmark evaluation: NME, failure rate, CED, per-point errors.

Predictions are the ``mtcnn-caffe detect --json`` output: one JSON object per
line, ``{"image": path, "width": W, "height": H, "faces": [{"box": [x1, y1,
x2, y2], "score": s, "landmarks": [[x, y] x 5]}]}``. Ground truth is a 5-point
list (``path left right top bottom x1 y1 ... x5 y5``) or a dlib imglab XML with
68 points, mapped to 5 points by :func:`mtcnn_caffe.annotations.landmarks_68_to_5`.

Each annotated face is matched to the detection of its image with the highest
box IoU (at least ``min_iou``; otherwise the face is *missed*, i.e. a detection
failure, reported separately and not part of the NME). For a matched face:

    NME = mean over the 5 points of |p_k - g_k| / d

with ``d`` the inter-ocular distance (distance of the two ground-truth eye
points; for 68-point sets the eye centres) or, with ``normalise="box"``, the
ground-truth box size ``sqrt(w * h)``. Failure rate = fraction of matched
faces with NME > 0.1; CED = fraction of matched faces with NME <= x.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..annotations import (AnnotationError, inter_ocular_distance, landmarks_68_to_5, read_imglab_xml,
                           read_landmark_list)
from caffe_common.boxes import iou_one_to_many
from caffe_common.eval.common import EvaluationError, ProblemLog

FAILURE_THRESHOLD = 0.1
MIN_IOU = 0.3
POINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


@dataclass
class GtFace:
    """One annotated face of the ground truth."""

    image: str  # path relative to the images root, posix
    box: np.ndarray  # x1 y1 x2 y2
    points: np.ndarray  # (5, 2)


@dataclass
class DetectionRecord:
    """One line of the ``detect --json`` output; ``source:line`` locates it in messages."""

    line: int
    image: str
    boxes: np.ndarray  # (M, 4)
    points: np.ndarray  # (M, 5, 2), NaN where a face has no landmarks
    source: str = ""  # the .jsonl file

    @property
    def where(self) -> str:
        """``file:line`` of this record (``line N`` when the file is unknown)."""
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"


def _posix_key(path: str) -> str:
    return PurePosixPath(os.path.normpath(path.replace("\\", "/")).replace("\\", "/")).as_posix()


def load_landmark_ground_truth(path: str | Path, problems: ProblemLog) -> dict[str, list[GtFace]]:
    """A 5-point list or an imglab XML (68 points -> 5): ``{image: [faces]}``."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"landmark ground truth not found: {path}")
    faces: dict[str, list[GtFace]] = {}
    try:
        if path.suffix.lower() == ".xml":
            parsed = read_imglab_xml(path, strict=problems.strict)
            for image in parsed:
                points5 = landmarks_68_to_5(image.points)
                for box, pts in zip(image.boxes, points5):
                    if not np.all(np.isfinite(pts)):
                        problems.report(f"{path}: image {image.file!r}: a face lacks some of the 68 points; skipped")
                        continue
                    faces.setdefault(_posix_key(image.file), []).append(GtFace(_posix_key(image.file), box, pts))
        else:
            parsed = read_landmark_list(path, strict=problems.strict)
            for face in parsed:
                faces.setdefault(_posix_key(face.image), []).append(GtFace(_posix_key(face.image), face.box, face.points))
    except AnnotationError as exc:
        raise EvaluationError(str(exc)) from exc
    for message in parsed.errors:
        problems.report(message)
    return faces


def read_detections_jsonl(path: str | Path, problems: ProblemLog) -> list[DetectionRecord]:
    """Read the ``detect --json`` output; malformed lines are reported as ``file:line``."""
    path = Path(path)
    if path.is_dir():
        raise EvaluationError(f"prediction file is a folder, not a file: {path}")
    if not path.is_file():
        raise EvaluationError(f"prediction file not found: {path}")
    records = []
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image = record["image"]
                if not isinstance(image, str):
                    raise ValueError("'image' is not a string")
                boxes, points = [], []
                for k, face in enumerate(record.get("faces", [])):
                    box = np.asarray(face["box"], dtype=np.float64)
                    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
                        raise ValueError(f"face {k}: box must be 4 finite numbers x1 y1 x2 y2 with x2 >= x1, y2 >= y1")
                    marks = face.get("landmarks")
                    pts = np.full((5, 2), np.nan) if marks is None else np.asarray(marks, dtype=np.float64)
                    if pts.shape != (5, 2) or (marks is not None and not np.all(np.isfinite(pts))):
                        raise ValueError(f"face {k}: landmarks must be 5 finite [x, y] pairs")
                    boxes.append(box)
                    points.append(pts)
            except (ValueError, KeyError, TypeError) as exc:
                problems.report(f"{path}:{line_no}: {type(exc).__name__}: {exc}")
                continue
            records.append(DetectionRecord(line_no, image, np.array(boxes).reshape(-1, 4),
                                           np.array(points).reshape(-1, 5, 2), str(path)))
    return records


def _gt_key_for(image: str, root: Path, gt_keys: set[str]) -> str | None:
    """The ground-truth key of a detection record's image path.

    First the path relative to ``root``; otherwise the longest trailing part of
    the path that names a ground-truth image.
    """
    absolute = Path(os.path.abspath(image))
    try:
        relative = _posix_key(str(absolute.relative_to(Path(os.path.abspath(root)))))
        if relative in gt_keys:
            return relative
    except ValueError:
        pass
    parts = PurePosixPath(_posix_key(image)).parts
    for start in range(len(parts)):
        suffix = "/".join(parts[start:])
        if suffix in gt_keys:
            return suffix
    return None


def normalising_distance(faces: list[GtFace], normalise: str) -> np.ndarray:
    """Inter-ocular distance (``"inter-ocular"``) or ``sqrt(w*h)`` of the box (``"box"``)."""
    if normalise == "inter-ocular":
        return inter_ocular_distance(np.array([f.points for f in faces]).reshape(-1, 5, 2))
    if normalise == "box":
        boxes = np.array([f.box for f in faces]).reshape(-1, 4)
        return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    raise ValueError(f"normalise must be 'inter-ocular' or 'box', not {normalise!r}")


def point_errors(pred: np.ndarray, gt: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """``(F, 5)`` point-to-point errors divided by each face's normalising distance."""
    return np.linalg.norm(np.asarray(pred, float) - np.asarray(gt, float), axis=-1) / np.asarray(distance, float)[:, None]


def ced_curve(nme: np.ndarray, max_error: float = 2 * FAILURE_THRESHOLD, steps: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution on ``steps`` points of ``[0, max_error]``."""
    x = np.linspace(0.0, max_error, steps)
    nme = np.sort(np.asarray(nme, float))
    fraction = np.searchsorted(nme, x, side="right") / len(nme) if len(nme) else np.zeros(steps)
    return x, fraction


def ced_auc(nme: np.ndarray, limit: float = FAILURE_THRESHOLD) -> float:
    """Area under the CED on ``[0, limit]``, divided by ``limit`` (1 = every error 0)."""
    nme = np.asarray(nme, float)
    if not len(nme):
        return float("nan")
    # exact area of the step function: mean over faces of (limit - min(e, limit)) / limit
    return float(np.mean(limit - np.minimum(nme, limit)) / limit)


@dataclass
class LandmarkResult:
    """Per-face and per-point errors of the matched faces, with the counts of faces left out."""

    nme: np.ndarray  # per matched face
    point_nme: np.ndarray  # (F, 5)
    normalise: str
    annotated: int
    missed: int
    not_in_predictions: int
    failure_threshold: float = FAILURE_THRESHOLD

    @property
    def mean_nme(self) -> float:
        """Mean NME over the matched faces (NaN when none)."""
        return float(self.nme.mean()) if len(self.nme) else float("nan")

    @property
    def failure_rate(self) -> float:
        """Fraction of matched faces with NME above the failure threshold (NaN when none)."""
        return float(np.mean(self.nme > self.failure_threshold)) if len(self.nme) else float("nan")

    def summary_line(self) -> str:
        """The one-line summary the CLI prints."""
        return (f"NME {self.mean_nme:.4f} failure@{self.failure_threshold:g} {self.failure_rate:.4f} "
                f"faces {len(self.nme)} missed {self.missed} ({self.normalise})")

    def as_dict(self) -> dict:
        """The JSON summary: figures, per-point NME, counts and the CED curve."""
        x, fraction = ced_curve(self.nme)
        return {
            "nme": self.mean_nme,
            "normalise": self.normalise,
            "failure_threshold": self.failure_threshold,
            "failure_rate": self.failure_rate,
            "auc_at_failure_threshold": ced_auc(self.nme, self.failure_threshold),
            "per_point_nme": {n: float(v) for n, v in zip(POINT_NAMES, self.point_nme.mean(0))} if len(self.nme) else {},
            "faces_annotated": self.annotated,
            "faces_evaluated": int(len(self.nme)),
            "faces_missed_by_detector": self.missed,
            "faces_in_images_without_prediction": self.not_in_predictions,
            "ced": {"error": x, "fraction": fraction},
        }


def evaluate_landmarks(records: list[DetectionRecord], ground_truth: dict[str, list[GtFace]], images_root: str | Path,
                       problems: ProblemLog, normalise: str = "inter-ocular", min_iou: float = MIN_IOU,
                       failure_threshold: float = FAILURE_THRESHOLD) -> LandmarkResult:
    """Match every annotated face to its best detection and compute the errors."""
    gt_keys = set(ground_truth)
    seen: set[str] = set()
    pred_points, gt_faces = [], []
    missed = 0
    for record in records:
        key = _gt_key_for(record.image, Path(images_root), gt_keys)
        if key is None:
            problems.report(f"{record.where}: image {record.image!r} is not in the ground truth")
            continue
        if key in seen:
            problems.report(f"{record.where}: image {record.image!r} appears twice; later record skipped")
            continue
        seen.add(key)
        for face in ground_truth[key]:
            if not len(record.boxes):
                missed += 1
                continue
            overlaps = iou_one_to_many(face.box, record.boxes)
            best = int(np.argmax(overlaps))
            if overlaps[best] < min_iou:
                missed += 1
                continue
            if not np.all(np.isfinite(record.points[best])):
                problems.report(f"{record.where}: image {record.image!r}: matched detection has no landmarks")
                continue
            pred_points.append(record.points[best])
            gt_faces.append(face)
    not_in_predictions = sum(len(ground_truth[k]) for k in gt_keys - seen)
    if not_in_predictions:
        problems.note(f"{len(gt_keys - seen)} annotated image(s) ({not_in_predictions} faces) have no record in the "
                      "predictions and are left out")
    distance = normalising_distance(gt_faces, normalise)
    usable = distance > 0
    if not np.all(usable):
        problems.report(f"{int(np.sum(~usable))} face(s) have a zero normalising distance ({normalise}); skipped")
    pred = np.array(pred_points).reshape(-1, 5, 2)[usable]
    gt = np.array([f.points for f in gt_faces]).reshape(-1, 5, 2)[usable]
    errors = point_errors(pred, gt, distance[usable])
    return LandmarkResult(errors.mean(axis=1), errors, normalise, sum(len(v) for v in ground_truth.values()),
                          missed, not_in_predictions, failure_threshold)
