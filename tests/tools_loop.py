"""Plain, loop-based reference of the MTCNN cascade (read this one to understand each step).

Same steps and conventions as the vectorised :mod:`mtcnn_caffe.detect.steps` (1-based
inclusive MATLAB pixels), written one box and one pixel at a time, like the
official MATLAB functions. :func:`detect_face_loop` runs the whole cascade
with these functions and the detector's nets; the tests check that it gives
exactly the detector's output. Too slow for production use.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from caffe_common.boxes import iou_one_to_many


def pyramid_scales(height: int, width: int, min_size: float, factor: float) -> list[float]:
    """``m * factor**k`` (``m = 12 / min_size``) while the scaled short side is at least 12 px."""
    m = 12.0 / min_size
    scales = []
    min_len = min(height, width) * m
    count = 0
    while min_len >= 12:
        scales.append(m * factor**count)
        min_len = min_len * factor
        count += 1
    return scales


def generate_boxes(face_prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """Every map cell (x index i, y index j) with ``prob >= threshold`` -> one ``(9,)`` row, x varying fastest."""
    rows = []
    size_x, size_y = face_prob.shape
    for j in range(size_y):
        for i in range(size_x):
            score = float(face_prob[i, j])
            if score >= threshold:
                x1 = math.trunc((2 * i + 1) / scale)
                y1 = math.trunc((2 * j + 1) / scale)
                x2 = math.trunc((2 * i + 12) / scale)
                y2 = math.trunc((2 * j + 12) / scale)
                rows.append([x1, y1, x2, y2, score] + [float(reg[c, i, j]) for c in range(4)])
    return np.array(rows, dtype=np.float64).reshape(-1, 9)


def nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """The official greedy ``nms.m``: repeatedly take the best remaining box, drop those overlapping it."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.intp)
    # MATLAB: [~, I] = sort(s) (stable, ascending); the loop always takes the last one.
    remaining = sorted(range(len(boxes)), key=lambda k: boxes[k, 4])
    pick = []
    while remaining:
        best = remaining.pop()
        pick.append(best)
        survivors = []
        for other in remaining:
            overlap = iou_one_to_many(boxes[best, :4], boxes[other:other + 1, :4], mode=mode, pixel_offset=1)[0]
            if overlap <= threshold:
                survivors.append(other)
        remaining = survivors
    return np.array(pick, dtype=np.intp)


def regress_pnet(boxes: np.ndarray) -> np.ndarray:
    """P-Net's own offsets with ``w = x2 - x1``."""
    out = []
    for b in boxes:
        w, h = b[2] - b[0], b[3] - b[1]
        out.append([b[0] + b[5] * w, b[1] + b[6] * h, b[2] + b[7] * w, b[3] + b[8] * h, b[4]])
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """R-/O-Net offsets with ``w = x2 - x1 + 1``."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    for k in range(len(out)):
        w = out[k, 2] - out[k, 0] + 1
        h = out[k, 3] - out[k, 1] + 1
        out[k, 0] += reg[k][0] * w
        out[k, 1] += reg[k][1] * h
        out[k, 2] += reg[k][2] * w
        out[k, 3] += reg[k][3] * h
    return out


def rerec(boxes: np.ndarray) -> np.ndarray:
    """Make each box a square around its centre."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    for b in out:
        w, h = b[2] - b[0], b[3] - b[1]
        side = max(w, h)
        b[0] = b[0] + (w * 0.5 - side * 0.5)
        b[1] = b[1] + (h * 0.5 - side * 0.5)
        b[2] = b[0] + side
        b[3] = b[1] + side
    return out


def pad_one(box: np.ndarray, width: int, height: int) -> tuple[int, ...]:
    """``dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph`` of one integer box, as ``pad.m``."""
    x, y, ex, ey = (int(v) for v in box[:4])
    tmpw, tmph = ex - x + 1, ey - y + 1
    dx, dy, edx, edy = 1, 1, tmpw, tmph
    if ex > width:
        edx = -ex + width + tmpw
        ex = width
    if ey > height:
        edy = -ey + height + tmph
        ey = height
    if x < 1:
        dx = 2 - x
        x = 1
    if y < 1:
        dy = 2 - y
        y = 1
    return dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph


def crop_patch(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """One zero-padded crop, copied pixel row by pixel row, resized to ``size x size``."""
    height, width = image.shape[:2]
    dy, edy, dx, edx, y, ey, x, ex, tmpw, tmph = pad_one(box, width, height)
    patch = np.zeros((tmph, tmpw, 3), dtype=image.dtype)
    for row in range(ey - y + 1):
        patch[dy - 1 + row, dx - 1:edx] = image[y - 1 + row, x - 1:ex]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def has_pixels(box: np.ndarray) -> bool:
    return math.trunc(box[2]) - math.trunc(box[0]) + 1 >= 1 and math.trunc(box[3]) - math.trunc(box[1]) + 1 >= 1


def onet_landmarks(box: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(5, 2)`` 1-based points of one box before regression."""
    w = box[2] - box[0] + 1
    h = box[3] - box[1] + 1
    return np.array([[w * points[k] + box[0] - 1, h * points[5 + k] + box[1] - 1] for k in range(5)])


def detect_face_loop(detector, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole cascade with the loop functions and ``detector``'s nets and settings (0-based output)."""
    from mtcnn_caffe.detect.cascade import to_bgr_uint8, to_zero_based

    image = to_bgr_uint8(image_bgr)
    t1, t2, t3 = detector.thresholds
    n_scale, n_all, n_rnet, n_onet = detector.nms_thresholds
    height, width = image.shape[:2]
    total = []
    for scale in pyramid_scales(height, width, detector.min_size, detector.factor):
        hs, ws = int(math.ceil(height * scale)), int(math.ceil(width * scale))
        prob, reg = detector.pnet_maps(cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA))
        boxes = generate_boxes(prob, reg, scale, t1)
        total.extend(boxes[k] for k in nms(boxes, n_scale, "union"))
    if not total:
        return to_zero_based(np.zeros((0, 5)), np.zeros((0, 5, 2)))
    total = np.array(total)
    total = rerec(regress_pnet(total[nms(total, n_all, "union")]))
    total[:, :4] = np.trunc(total[:, :4])

    total = np.array([b for b in total if has_pixels(b)]).reshape(-1, 5)
    crops = np.array([crop_patch(image, b, 24) for b in total])
    out = detector.net("det2").forward_images(crops) if len(total) else {}
    kept, offsets = [], []
    for k, b in enumerate(total):
        score = float(out["prob1"][k, 1])
        if score > t2:
            kept.append([b[0], b[1], b[2], b[3], score])
            offsets.append(out["conv5-2"][k])
    if not kept:
        return to_zero_based(np.zeros((0, 5)), np.zeros((0, 5, 2)))
    kept = np.array(kept)
    pick = nms(kept, n_rnet, "union")
    total = rerec(bbreg(kept[pick], [offsets[k] for k in pick]))

    total = np.trunc(total)
    total = np.array([b for b in total if has_pixels(b)]).reshape(-1, 5)
    crops = np.array([crop_patch(image, b, 48) for b in total])
    out = detector.net("det3").forward_images(crops) if len(total) else {}
    kept, offsets, points = [], [], []
    for k, b in enumerate(total):
        score = float(out["prob1"][k, 1])
        if score > t3:
            kept.append([b[0], b[1], b[2], b[3], score])
            offsets.append(out["conv6-2"][k])
            points.append(onet_landmarks(b, out["conv6-3"][k]))
    if not kept:
        return to_zero_based(np.zeros((0, 5)), np.zeros((0, 5, 2)))
    final = bbreg(np.array(kept), offsets)
    pick = nms(final, n_onet, "min")
    return to_zero_based(final[pick], np.array(points)[pick])

