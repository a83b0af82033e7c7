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


def iou_pairs(a: np.ndarray, b: np.ndarray, mode: str = "union", pixel_offset: float = 0,
              a_area: np.ndarray | None = None, b_area: np.ndarray | None = None) -> np.ndarray:
    """Overlap of ``a[k]`` with ``b[k]`` for every row ``k`` (a single row broadcasts against many).

    ``mode="union"``: intersection over union; ``mode="min"``: intersection over
    the smaller area (the official MTCNN "Min" NMS). ``a_area``/``b_area`` may pass
    precomputed :func:`box_area` values (hot loops such as NMS). Pairs whose
    denominator is 0 (degenerate boxes) overlap 0. The result is symmetric in
    ``a`` and ``b`` bit for bit.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"mode must be 'union' or 'min', not {mode!r}")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a.reshape(-1, a.shape[-1] if a.ndim else 4)
    b = b.reshape(-1, b.shape[-1] if b.ndim else 4)
    iw = np.minimum(a[:, 2], b[:, 2])
    iw -= np.maximum(a[:, 0], b[:, 0])
    iw += pixel_offset
    ih = np.minimum(a[:, 3], b[:, 3])
    ih -= np.maximum(a[:, 1], b[:, 1])
    ih += pixel_offset
    inter = np.maximum(iw, 0, out=iw)
    inter *= np.maximum(ih, 0, out=ih)
    area_a = box_area(a, pixel_offset) if a_area is None else a_area
    area_b = box_area(b, pixel_offset) if b_area is None else b_area
    denom = (area_a + area_b) - inter if mode == "union" else np.minimum(area_a, area_b)
    # denom >= inter >= 0, and denom == 0 only when inter == 0: then the overlap is 0, not NaN.
    inter /= np.maximum(denom, np.finfo(np.float64).tiny)
    return inter


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray, mode: str = "union", pixel_offset: float = 0,
                    boxes_area: np.ndarray | None = None) -> np.ndarray:
    """Overlap of one box with each of ``boxes`` (see :func:`iou_pairs` for ``mode``);
    ``boxes_area`` may pass the precomputed :func:`box_area` of ``boxes``."""
    box = np.asarray(box, dtype=np.float64).reshape(1, -1)
    return iou_pairs(box, boxes, mode=mode, pixel_offset=pixel_offset, b_area=boxes_area)


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
