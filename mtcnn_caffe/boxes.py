"""Box geometry shared by the whole toolkit: one IoU, one area, used everywhere.

Boxes are ``(..., 4+)`` arrays ``x1, y1, x2, y2`` (extra columns such as a score
are ignored). Two pixel conventions exist in this field and both are needed:

* ``pixel_offset=0``: continuous coordinates, width ``x2 - x1`` (VOC/WIDER
  style evaluation in this project, SSD, sample generation).
* ``pixel_offset=1``: inclusive integer pixels, width ``x2 - x1 + 1``, as the
  official MTCNN MATLAB code computes areas and overlaps in its NMS.
"""
from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray, pixel_offset: float = 0) -> np.ndarray:
    """Area of each box; degenerate boxes have area 0."""
    boxes = np.asarray(boxes, dtype=np.float64)
    w = np.maximum(boxes[..., 2] - boxes[..., 0] + pixel_offset, 0)
    h = np.maximum(boxes[..., 3] - boxes[..., 1] + pixel_offset, 0)
    return w * h


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray, mode: str = "union", pixel_offset: float = 0) -> np.ndarray:
    """Overlap of one box with each of ``boxes``.

    ``mode="union"``: intersection over union; ``mode="min"``: intersection over
    the smaller area (the official MTCNN "Min" NMS).
    """
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if np.ndim(boxes) else 4)
    iw = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + pixel_offset, 0)
    ih = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + pixel_offset, 0)
    inter = iw * ih
    a = box_area(box, pixel_offset)
    b = box_area(boxes, pixel_offset)
    if mode == "union":
        denom = a + b - inter
    elif mode == "min":
        denom = np.minimum(a, b)
    else:
        raise ValueError(f"mode must be 'union' or 'min', not {mode!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inter / np.where(denom > 0, denom, 1), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray, pixel_offset: float = 0) -> np.ndarray:
    """``(len(a), len(b))`` IoU matrix. For small sets (per-image matching), not for NMS."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1] if np.size(a) else 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, np.shape(b)[-1] if np.size(b) else 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + pixel_offset
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + pixel_offset
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    union = box_area(a, pixel_offset)[:, None] + box_area(b, pixel_offset)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
