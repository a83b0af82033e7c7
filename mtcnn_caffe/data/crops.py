"""Crop geometry shared by every sample generator: labelling by IoU, targets, crop + resize.

Boxes here are ``x1, y1, x2, y2`` in continuous pixels (``pixel_offset=0`` of
:mod:`caffe_common.boxes`, the one IoU implementation of the project).
"""
from __future__ import annotations

import numpy as np

from caffe_common.boxes import iou_matrix
from caffe_common.images import crop_resized  # noqa: F401  (the one crop, used by the sample generators)
from .records import NEG_IOU_MAX, NEGATIVE, PART, PART_IOU_MIN, POS_IOU_MIN, POSITIVE

#: Label of a crop that is neither negative, part nor positive (IoU in [0.3, 0.4), or the
#: best-matching face is one we do not learn from): such crops are dropped.
DISCARD = 99


def label_crops(crops: np.ndarray, gt_boxes: np.ndarray, usable: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label crop boxes by their best IoU with *all* annotated faces.

    ``usable`` marks the faces a positive/part sample may come from (valid, large enough);
    the others still count for negatives (a crop on an ignored face is never a negative).
    Returns ``labels`` (``POSITIVE``/``PART``/``NEGATIVE``/:data:`DISCARD`), the index of the
    best face (``-1`` when there are no faces) and that IoU.
    """
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    n = len(crops)
    if len(gt_boxes) == 0:
        return np.full(n, NEGATIVE, np.int64), np.full(n, -1, np.int64), np.zeros(n)
    usable = np.ones(len(gt_boxes), bool) if usable is None else np.asarray(usable, bool)
    ious = iou_matrix(crops, gt_boxes)
    best = ious.argmax(axis=1)
    best_iou = ious[np.arange(n), best]
    labels = np.full(n, DISCARD, np.int64)
    labels[best_iou < NEG_IOU_MAX] = NEGATIVE
    from_usable = usable[best]
    labels[from_usable & (best_iou >= PART_IOU_MIN)] = PART
    labels[from_usable & (best_iou >= POS_IOU_MIN)] = POSITIVE
    return labels, best, best_iou


def box_targets(crops: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Regression targets ``((gx1-x1)/w, (gy1-y1)/h, (gx2-x2)/w, (gy2-y2)/h)`` per crop/face pair."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    w = crops[:, 2] - crops[:, 0]
    h = crops[:, 3] - crops[:, 1]
    scale = np.stack([w, h, w, h], axis=1)
    return ((faces - crops) / scale).astype(np.float32)


def detector_crop_boxes(boxes: np.ndarray) -> np.ndarray:
    """The pixels the next stage crops for detector boxes, as continuous ``x1, y1, x2, y2``.

    ``MtcnnDetector.detect_arrays`` returns 0-based *inclusive* pixel boxes; before
    cropping, the next stage truncates them in MATLAB's 1-based coordinates. The crop
    covers pixels ``x1..x2`` inclusive, i.e. the continuous box ``[x1, x2 + 1)``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)[:, :4]
    pixels = np.trunc(b + 1) - 1
    return np.concatenate([pixels[:, :2], pixels[:, 2:] + 1], axis=1)


def inside_image(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Mask of boxes lying entirely inside a ``width x height`` image."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
