"""Pascal VOC detection mAP, following the devkit's ``VOCevaldet``.

Detections: one file per class in the prediction folder,
``<prefix>det_<set>_<class>.txt`` (the devkit's ``comp4_det_test_car.txt``), one
detection per line ``image_id score x1 y1 x2 y2`` in VOC pixel coordinates
(1-based, inclusive, as in the XML files).

Per class, detections are sorted by score (descending, stable: ties keep file
order). Each is assigned to the ground-truth object of its image with the
highest IoU (devkit ``+1`` pixel convention). If that IoU is >= 0.5: a
"difficult" object makes the detection neither true nor false positive; an
object not yet detected makes it a true positive; an already detected object
makes it a false positive (duplicate). Otherwise it is a false positive.
Recall counts non-difficult objects only. AP is reported both as VOC2007
11-point and all-point (VOC2010+); mAP averages the classes that have at least
one non-difficult object in the evaluated set (the others are listed with AP
``null``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..textio import read_xml_root
from ..boxes import iou_matrix
from .common import EvaluationError, ProblemLog, parse_numbers, read_text_lines
from .curves import ranked_precision_recall, voc_ap_11_point, voc_ap_all_point

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IOU_THRESHOLD = 0.5


def mean_over_present_classes(classes: Iterable[Any], attr: str) -> float:
    """Mean of ``attr`` over the per-class results whose class has ground-truth objects (``positives``);
    NaN when none has: the VOC mean over the classes present in the test set."""
    values = [getattr(c, attr) for c in classes if c.positives]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class VocObjects:
    """Objects of one image: ``classes`` (N,), ``boxes`` (N, 4) x1 y1 x2 y2, ``difficult`` (N,) bool."""

    classes: list[str]
    boxes: np.ndarray
    difficult: np.ndarray


def read_voc_xml(path: str | Path) -> VocObjects:
    """Objects of a VOC annotation XML (missing ``difficult`` = 0)."""
    path = Path(path)
    root = read_xml_root(path, "VOC annotation", missing=EvaluationError, error=EvaluationError)
    classes, boxes, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        try:
            name = (obj.findtext("name") or "").strip()
            if not name:
                raise ValueError("no <name>")
            bndbox = obj.find("bndbox")
            if bndbox is None:
                raise ValueError("no <bndbox>")
            box = [float(bndbox.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
            if not all(math.isfinite(v) for v in box):
                raise ValueError(f"non-finite coordinate: {box}")
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"xmax < xmin or ymax < ymin: {box}")
            diff = int(float(obj.findtext("difficult") or 0))
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"{path}: object {k + 1}: {exc}") from exc
        classes.append(name)
        boxes.append(box)
        difficult.append(bool(diff))
    return VocObjects(classes, np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(difficult, dtype=bool))


def read_image_set(voc_root: str | Path, image_set: str) -> list[str]:
    """Image ids of ``ImageSets/Main/<image_set>.txt``."""
    path = Path(voc_root) / "ImageSets" / "Main" / f"{image_set}.txt"
    ids = [line.split()[0] for line in read_text_lines(path, "VOC image set") if line.strip()]
    if not ids:
        raise EvaluationError(f"{path}: the image set is empty; nothing to evaluate")
    return ids


def read_class_names(path: str | Path | None, voc_root: str | Path | None = None) -> list[str]:
    """Class names from ``path`` (one per line, or an SSD ``labelmap`` prototxt whose
    background label 0 is dropped), else ``<voc_root>/labels.txt`` if present, else the 20 VOC classes."""
    if path is None and voc_root is not None and (Path(voc_root) / "labels.txt").is_file():
        path = Path(voc_root) / "labels.txt"
    if path is None:
        return list(VOC_CLASSES)
    path = Path(path)
    text = "\n".join(read_text_lines(path, "class list"))
    if path.suffix == ".prototxt":
        items = re.findall(r"item\s*\{(.*?)\}", text, flags=re.S)
        names = []
        for item in items:
            label = re.search(r"label\s*:\s*(\d+)", item)
            name = re.search(r"display_name\s*:\s*\"([^\"]*)\"", item) or re.search(r"\bname\s*:\s*\"([^\"]*)\"", item)
            if name and not (label and int(label.group(1)) == 0):
                names.append(name.group(1))
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise EvaluationError(f"{path}: no class names found")
    return names


@dataclass
class ClassDetections:
    """The detections of one class, in file order: image id, score and ``x1 y1 x2 y2`` box."""

    image_ids: list[str]
    scores: np.ndarray
    boxes: np.ndarray  # (M, 4)


def read_class_detections(path: Path, image_ids: set[str], problems: ProblemLog) -> ClassDetections:
    """One ``*det_<set>_<class>.txt``; lines for unknown images or that do not parse are reported."""
    ids, rows = [], []
    for line_no, line in enumerate(read_text_lines(path, "detection file"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            if tokens[0] not in image_ids:
                raise ValueError(f"image {tokens[0]!r} is not in the image set")
            score, x1, y1, x2, y2 = parse_numbers(tokens[1:], 5, "score x1 y1 x2 y2")
            if len(tokens) > 6:
                raise ValueError(f"expected 6 fields, found {len(tokens)}")
            if x2 < x1 or y2 < y1:
                raise ValueError(f"negative size: x2 < x1 or y2 < y1 ({x1} {y1} {x2} {y2})")
        except ValueError as exc:
            problems.report(f"{path}:{line_no}: {exc}")
            continue
        ids.append(tokens[0])
        rows.append((score, x1, y1, x2, y2))
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return ClassDetections(ids, table[:, 0], table[:, 1:])


def find_detection_files(pred_dir: str | Path, image_set: str, classes: Iterable[str],
                         problems: ProblemLog) -> dict[str, Path | None]:
    """``{class: file or None}``; files for classes not in ``classes`` are reported."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvaluationError(f"prediction folder not found: {pred_dir}")
    classes = list(classes)
    found: dict[str, Path | None] = {c: None for c in classes}
    marker = f"det_{image_set}_"
    for path in sorted(pred_dir.glob(f"*{marker}*.txt")):
        cls = path.name[path.name.rindex(marker) + len(marker):-len(".txt")]
        if cls not in found:
            problems.report(f"{path}: detections for class {cls!r}, which is not in the class list")
        elif found[cls] is not None:
            raise EvaluationError(f"two detection files for class {cls!r}: {found[cls]} and {path}")
        else:
            found[cls] = path
    if not any(found.values()):
        raise EvaluationError(f"{pred_dir}: no *{marker}<class>.txt detection file for any of the {len(classes)} "
                              "classes; nothing to evaluate")
    return found


@dataclass
class ClassResult:
    """AP (VOC07 11-point and all-point), the ranked PR curve and the counts of one class."""

    ap_07: float
    ap_all: float
    recall: np.ndarray
    precision: np.ndarray
    positives: int
    detections: int
    true_positives: int


def evaluate_class(ground_truth: dict[str, VocObjects], cls: str, detections: ClassDetections,
                   iou_threshold: float = IOU_THRESHOLD) -> ClassResult:
    """Devkit matching and AP for one class."""
    gt_boxes = {}
    for image_id, objects in ground_truth.items():
        mask = np.array([c == cls for c in objects.classes], dtype=bool)
        gt_boxes[image_id] = (objects.boxes[mask], objects.difficult[mask], np.zeros(int(mask.sum()), dtype=bool))
    positives = int(sum(int((~d).sum()) for _, d, _ in gt_boxes.values()))
    order = np.argsort(-detections.scores, kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, d in enumerate(order):
        boxes, difficult, detected = gt_boxes[detections.image_ids[d]]
        if not len(boxes):
            fp[rank] = 1
            continue
        overlaps = iou_matrix(detections.boxes[d][None], boxes, pixel_offset=1)[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            if difficult[best]:
                continue
            if not detected[best]:
                tp[rank] = 1
                detected[best] = True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    recall, precision = ranked_precision_recall(tp, fp, positives)
    if positives:
        ap_07, ap_all = voc_ap_11_point(recall, precision), voc_ap_all_point(recall, precision)
    else:
        ap_07 = ap_all = float("nan")
    return ClassResult(ap_07, ap_all, recall, precision, positives, len(order), int(tp.sum()))


@dataclass
class VocResult:
    """Per-class results; mAPs average the classes with at least one non-difficult object."""

    classes: dict[str, ClassResult]
    images: int

    def _mean(self, attr: str) -> float:
        return mean_over_present_classes(self.classes.values(), attr)

    @property
    def map_07(self) -> float:
        """Mean VOC07 11-point AP."""
        return self._mean("ap_07")

    @property
    def map_all(self) -> float:
        """Mean all-point AP."""
        return self._mean("ap_all")

    def summary_line(self) -> str:
        """The one-line summary the CLI prints."""
        used = sum(1 for r in self.classes.values() if r.positives)
        return f"mAP VOC07-11point {self.map_07:.4f} all-point {self.map_all:.4f} ({used} classes, {self.images} images)"

    def as_dict(self) -> dict:
        """The JSON summary; classes without objects have AP ``null``."""
        return {
            "map_voc07_11point": self.map_07,
            "map_all_point": self.map_all,
            "images": self.images,
            "iou_threshold": IOU_THRESHOLD,
            "classes": {
                cls: {"ap_voc07_11point": r.ap_07 if r.positives else None, "ap_all_point": r.ap_all if r.positives else None,
                      "positives": r.positives, "detections": r.detections, "true_positives": r.true_positives,
                      "recall": r.recall, "precision": r.precision}
                for cls, r in self.classes.items()
            },
        }


def evaluate_voc(pred_dir: str | Path, voc_root: str | Path, image_set: str, classes: list[str],
                 problems: ProblemLog, iou_threshold: float = IOU_THRESHOLD) -> VocResult:
    """Read the set's annotations and the per-class detection files, evaluate every class."""
    voc_root = Path(voc_root)
    ids = read_image_set(voc_root, image_set)
    ground_truth = {i: read_voc_xml(voc_root / "Annotations" / f"{i}.xml") for i in ids}
    unknown = sorted({c for g in ground_truth.values() for c in g.classes} - set(classes))
    if unknown:
        problems.note(f"annotated classes not in the class list (not evaluated): {', '.join(unknown)}")
    files = find_detection_files(pred_dir, image_set, classes, problems)
    results = {}
    for cls in classes:
        if files[cls] is None:
            detections = ClassDetections([], np.zeros(0), np.zeros((0, 4)))
            if any(cls in g.classes for g in ground_truth.values()):
                problems.note(f"no detection file for class {cls!r} (counted as no detections)")
        else:
            detections = read_class_detections(files[cls], set(ids), problems)
        results[cls] = evaluate_class(ground_truth, cls, detections, iou_threshold)
    return VocResult(results, len(ids))
