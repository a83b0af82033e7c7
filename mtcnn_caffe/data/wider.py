"""Random positive / part / negative crops around WIDER FACE annotations (P-Net style sampling).

The sampling follows the reference recipe (reference_constants.md): per image, random
negatives anywhere; per usable face, a few negatives that overlap it and ~20 jittered
crops of side ``[0.8 min(w, h), 1.25 max(w, h)]`` with centre jitter ``+-0.2 w/h``. Every
candidate is labelled by :func:`~mtcnn_caffe.data.crops.label_crops` against *all* faces of
the image, so a "negative" never covers an ignored (invalid or tiny) face.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..annotations import WiderImage
from .crops import DISCARD, box_targets, crop_resized, inside_image, label_crops
from .records import NEGATIVE, empty_samples


@dataclass(frozen=True)
class CropParams:
    """How many random crops to draw (defaults: the reference recipe)."""

    neg_per_image: int = 50
    neg_per_face: int = 5
    tries_per_face: int = 20
    min_face: float = 20.0
    jitter: float = 0.2
    side_min: float = 0.8
    side_max: float = 1.25
    keep_invalid: bool = False


@dataclass
class FaceSelection:
    """All annotated faces of an image (``boxes`` x1y1x2y2) and which ones samples may come from."""

    boxes: np.ndarray
    usable: np.ndarray
    skipped: Counter


def select_faces(image: WiderImage, min_face: float, keep_invalid: bool = False) -> FaceSelection:
    """Convert WIDER ``x y w h`` to boxes and mark faces that are invalid, empty or tiny.

    Skipped faces are counted by reason (``invalid``, ``empty_box``, ``too_small``);
    they stay in ``boxes`` so that no negative is cut on them.
    """
    xywh = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    skipped: Counter = Counter()
    empty = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    invalid = ~image.valid & ~empty if not keep_invalid else np.zeros(len(xywh), bool)
    small = ~empty & ~invalid & (np.minimum(xywh[:, 2], xywh[:, 3]) < min_face)
    skipped.update({"empty_box": int(empty.sum()), "invalid": int(invalid.sum()), "too_small": int(small.sum())})
    usable = ~(empty | invalid | small)
    return FaceSelection(boxes, usable, +skipped)


def _random_negative_boxes(rng: np.random.Generator, count: int, size: int, width: int, height: int) -> np.ndarray:
    top = min(width, height) // 2
    if top <= size:
        return np.zeros((0, 4))
    sides = rng.integers(size, top, count)
    x1 = rng.integers(0, width - sides + 1)  # inclusive upper end keeps the box inside
    y1 = rng.integers(0, height - sides + 1)
    return np.stack([x1, y1, x1 + sides, y1 + sides], axis=1).astype(np.float64)


def _overlapping_negative_boxes(rng: np.random.Generator, faces: np.ndarray, per_face: int, size: int,
                                width: int, height: int) -> np.ndarray:
    top = min(width, height) // 2
    if top <= size or per_face <= 0 or len(faces) == 0:
        return np.zeros((0, 4))
    f = np.repeat(faces, per_face, axis=0)
    sides = rng.integers(size, top, len(f))
    w = np.maximum(f[:, 2] - f[:, 0], 1)
    h = np.maximum(f[:, 3] - f[:, 1], 1)
    # Shift the corner by up to one crop side before the face and up to the face size after it.
    dx = rng.uniform(np.maximum(-sides, -f[:, 0]), w)
    dy = rng.uniform(np.maximum(-sides, -f[:, 1]), h)
    x1 = np.floor(np.maximum(0, f[:, 0] + dx))
    y1 = np.floor(np.maximum(0, f[:, 1] + dy))
    return np.stack([x1, y1, x1 + sides, y1 + sides], axis=1)


def jittered_face_boxes(rng: np.random.Generator, faces: np.ndarray, tries: int, params: CropParams) -> np.ndarray:
    """``tries`` square boxes per face: side in ``[side_min min(w,h), side_max max(w,h)]``, centre jitter."""
    if tries <= 0 or len(faces) == 0:
        return np.zeros((0, 4))
    f = np.repeat(np.asarray(faces, np.float64), tries, axis=0)
    w = f[:, 2] - f[:, 0]
    h = f[:, 3] - f[:, 1]
    low = np.maximum(np.floor(params.side_min * np.minimum(w, h)), 1)
    high = np.maximum(np.ceil(params.side_max * np.maximum(w, h)), low + 1)
    sides = np.floor(rng.uniform(low, high))
    cx = f[:, 0] + w / 2 + rng.uniform(-params.jitter, params.jitter, len(f)) * w
    cy = f[:, 1] + h / 2 + rng.uniform(-params.jitter, params.jitter, len(f)) * h
    x1 = np.floor(np.maximum(cx - sides / 2, 0))
    y1 = np.floor(np.maximum(cy - sides / 2, 0))
    return np.stack([x1, y1, x1 + sides, y1 + sides], axis=1)


def make_samples(image: np.ndarray, crops: np.ndarray, labels: np.ndarray, best: np.ndarray, ious: np.ndarray,
                 gt_boxes: np.ndarray, size: int, image_index: int) -> np.ndarray:
    """Cut, resize and annotate the given crop boxes (labels already decided)."""
    samples = empty_samples(size, len(crops))
    if len(crops) == 0:
        return samples
    samples["label"] = labels
    samples["image_index"] = image_index
    samples["crop_box"] = crops
    samples["iou"] = ious
    has_face = best >= 0
    samples["face_index"][has_face] = best[has_face]
    if len(gt_boxes):
        faces = gt_boxes[np.maximum(best, 0)]
        samples["face_box"][has_face] = faces[has_face]
        regress = labels != NEGATIVE
        samples["bbox"][regress] = box_targets(crops[regress], faces[regress])
    for i, box in enumerate(crops):
        samples["image"][i] = crop_resized(image, box, size)
    return samples


def random_crop_samples(image: np.ndarray, selection: FaceSelection, rng: np.random.Generator, size: int,
                        params: CropParams, image_index: int = 0) -> np.ndarray:
    """All random samples of one image: negatives, overlapping negatives, positives and parts."""
    height, width = image.shape[:2]
    gt, usable = selection.boxes, selection.usable
    faces = gt[usable]
    pieces = []

    # Random negatives: draw in rounds until enough are found (bounded number of rounds).
    needed, rounds = params.neg_per_image, 0
    while needed > 0 and rounds < 10:
        cand = _random_negative_boxes(rng, 2 * needed, size, width, height)
        if len(cand) == 0:
            break
        labels, best, ious = label_crops(cand, gt, usable)
        keep = np.flatnonzero(labels == NEGATIVE)[:needed]
        pieces.append((cand[keep], labels[keep], best[keep], ious[keep]))
        needed -= len(keep)
        rounds += 1

    cand = _overlapping_negative_boxes(rng, faces, params.neg_per_face, size, width, height)
    cand = cand[inside_image(cand, width, height)]
    labels, best, ious = label_crops(cand, gt, usable)
    keep = labels == NEGATIVE
    pieces.append((cand[keep], labels[keep], best[keep], ious[keep]))

    cand = jittered_face_boxes(rng, faces, params.tries_per_face, params)
    cand = cand[inside_image(cand, width, height) & (cand[:, 2] - cand[:, 0] >= 1)]
    labels, best, ious = label_crops(cand, gt, usable)
    keep = (labels != DISCARD) & (labels != NEGATIVE)  # negatives come from the two passes above
    pieces.append((cand[keep], labels[keep], best[keep], ious[keep]))

    crops, labels, best, ious = (np.concatenate(column) for column in zip(*pieces))  # pieces is never empty
    return make_samples(image, crops, labels, best, ious, gt, size, image_index)
