"""Vectorised geometry of the MTCNN cascade: one implementation of each step.

Everything here follows the official MATLAB ``detect_face`` (Zhang et al. 2016)
step by step, including its **1-based inclusive pixel convention**: a box
``x1, y1, x2, y2`` covers the MATLAB pixels ``x1..x2`` (width ``x2 - x1 + 1``),
i.e. the numpy columns ``x1 - 1 .. x2 - 1``. The detector converts to 0-based
coordinates only when it returns results (:mod:`mtcnn_caffe.detect.cascade`).

Box arrays are ``(N, 5+)`` float64: ``x1, y1, x2, y2, score`` and, for P-Net
candidates, the four regression offsets ``dx1, dy1, dx2, dy2`` in columns 5..8.

:mod:`tests.tools_loop` holds a plain loop version of the same steps;
the tests check that both give identical results.
"""
from __future__ import annotations

import math

import numpy as np

from caffe_common.images import crop_resized

# NMS is shared with the SSD face detector (one implementation, :mod:`caffe_common.nms`); its default box
# convention is this module's (inclusive pixels). The private paths are re-exported for the tests.
from caffe_common.nms import (  # noqa: F401
    GRID_NMS_MIN_BOXES,
    PAIR_CHUNK,
    _dense_nms_sorted,
    _greedy_nms_sorted,
    _grid_nms_sorted,
    _pairs_nms_sorted,
    nms,
)

from . import defaults

PNET_STRIDE = 2
PNET_CELL = 12


# --------------------------------------------------------------------------- settings bounds
#: Smallest ``min_size`` accepted (px): P-Net's 12 px window on a pyramid upsampled at most 3x. Far below
#: 12 px the first level explodes (a 4000 x 3000 photo at ``min_size=1`` asks for a 5 GB level).
MIN_SIZE_FLOOR = 4
#: Largest ``factor`` accepted: the pyramid then holds about ``1 / (1 - 0.95**2)`` ~ 10 times its first
#: level. Closer to 1 it runs away (0.9999 on a 500 x 375 photo: 29 000 levels, 340 Mpx).
MAX_FACTOR = 0.95


def min_size_problem(value: float) -> str | None:
    """Why ``value`` is no usable ``min_size`` (None when it is): a number of at least :data:`MIN_SIZE_FLOOR`."""
    if not (math.isfinite(value) and value >= MIN_SIZE_FLOOR):
        return f"must be at least {MIN_SIZE_FLOOR} px (smaller faces need a runaway upsampled pyramid), not {value:g}"
    return None


def factor_problem(value: float) -> str | None:
    """Why ``value`` is no usable pyramid ``factor`` (None when it is): in ``(0, MAX_FACTOR]``."""
    if not 0 < value <= MAX_FACTOR:  # NaN fails too
        return f"must be in (0, {MAX_FACTOR}] (closer to 1 the pyramid gets thousands of levels), not {value:g}"
    return None


def threshold_problem(value: float) -> str | None:
    """Why ``value`` is no usable score or overlap threshold (None when it is): in ``[0, 1]``."""
    if not 0 <= value <= 1:  # NaN fails too
        return f"must be in [0, 1], not {value:g}"
    return None


def check_pyramid_settings(min_size: float, factor: float) -> None:
    """Raise ValueError naming the parameter unless ``min_size`` and ``factor`` give a pyramid that ends."""
    for name, value, problem in (("min_size", min_size, min_size_problem), ("factor", factor, factor_problem)):
        reason = problem(float(value))
        if reason:
            raise ValueError(f"{name} {reason}")


# --------------------------------------------------------------------------- image pyramid
def pyramid_scales(height: int, width: int, min_size: float = defaults.MIN_SIZE,
                   factor: float = defaults.FACTOR) -> list[float]:
    """Scales of the P-Net pyramid: ``m * factor**k`` while the scaled short side stays >= 12 px.

    ``m = 12 / min_size`` maps the smallest face to detect onto P-Net's 12 px window. Settings outside
    the bounds (:func:`check_pyramid_settings`) raise ValueError.
    """
    check_pyramid_settings(min_size, factor)
    m = PNET_CELL / float(min_size)
    min_len = min(height, width) * m
    scales = []
    k = 0
    while min_len >= PNET_CELL:
        scales.append(m * factor**k)
        min_len *= factor
        k += 1
    return scales


def pyramid_pixels(height: int, width: int, min_size: float = defaults.MIN_SIZE,
                   factor: float = defaults.FACTOR) -> int:
    """Pixels of all pyramid levels of a ``height x width`` image together (computed, nothing allocated)."""
    return sum(h * w for h, w in (scaled_size(height, width, s) for s in pyramid_scales(height, width, min_size, factor)))


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(ceil(h * s), ceil(w * s))``: the size of one pyramid level, as the official code rounds it."""
    return int(math.ceil(height * scale)), int(math.ceil(width * scale))


def pnet_output_size(length: int) -> int:
    """Length of a P-Net output map for an input of ``length`` px (valid convs, ceil-mode pooling)."""
    pooled = -(-(length - 4) // 2) + 1 if length >= 4 else 0
    return max(pooled - 4, 0)


# --------------------------------------------------------------------------- P-Net candidates
def generate_boxes(face_prob: np.ndarray, reg: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net map -> candidate boxes in the input image (``(N, 9)``: box, score, 4 offsets).

    ``face_prob`` is the face-probability map and ``reg`` the ``(4, X, Y)`` offsets,
    both in the nets' transposed layout (first spatial axis = image x). A cell
    ``(i, j)`` maps back to ``x1 = fix((2i + 1) / s)``, ``x2 = fix((2i + 12) / s)``
    (1-based). Cells with ``prob >= threshold`` are kept, listed with x varying
    fastest (the order MATLAB's ``find`` gives; it only matters for score ties in NMS).
    """
    prob_yx = np.asarray(face_prob).T          # (Y, X)
    ys, xs = np.nonzero(prob_yx >= threshold)  # row-major: x fastest
    if ys.size == 0:
        return np.zeros((0, 9))
    score = prob_yx[ys, xs].astype(np.float64)
    offsets = np.asarray(reg)[:, xs, ys].T.astype(np.float64)
    x1 = np.trunc((PNET_STRIDE * xs + 1) / scale)
    y1 = np.trunc((PNET_STRIDE * ys + 1) / scale)
    x2 = np.trunc((PNET_STRIDE * xs + PNET_CELL) / scale)
    y2 = np.trunc((PNET_STRIDE * ys + PNET_CELL) / scale)
    return np.column_stack([x1, y1, x2, y2, score, offsets])


# --------------------------------------------------------------------------- box refinement
def regress_pnet(boxes: np.ndarray) -> np.ndarray:
    """Apply P-Net's own offsets (columns 5..8) with ``w = x2 - x1`` (no +1, as the official first stage)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    scale = np.column_stack([w, h, w, h])
    return np.column_stack([boxes[:, :4] + boxes[:, 5:9] * scale, boxes[:, 4]])


def bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Calibrate boxes with R-/O-Net offsets ``(N, 4)``, box size ``x2 - x1 + 1`` (official ``bbreg.m``)."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    reg = np.asarray(reg, dtype=np.float64).reshape(-1, 4)
    w = out[:, 2] - out[:, 0] + 1
    h = out[:, 3] - out[:, 1] + 1
    out[:, :4] += reg * np.column_stack([w, h, w, h])
    return out


def rerec(boxes: np.ndarray) -> np.ndarray:
    """Square each box on its centre, side = the longer of ``x2 - x1`` and ``y2 - y1`` (official ``rerec.m``)."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    w = out[:, 2] - out[:, 0]
    h = out[:, 3] - out[:, 1]
    side = np.maximum(w, h)
    out[:, 0] += w * 0.5 - side * 0.5
    out[:, 1] += h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``(N, size, size, 3)`` patches of integer boxes, zero outside the image, resized (INTER_AREA).

    ``image`` is ``(H, W, 3)``; patches have its dtype. Boxes are the official 1-based inclusive ones
    (``trunc`` as MATLAB's ``pad``) and must have ``tmpw, tmph >= 1`` (:func:`valid_crop_mask`); pixels
    ``x1..x2`` 1-based are the half-open 0-based ``[x1 - 1, x2)`` that :func:`crop_resized` cuts.
    """
    b = np.trunc(np.asarray(boxes, dtype=np.float64)[:, :4])
    half_open = np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]], axis=1).astype(np.int64).tolist()
    patches = np.empty((len(half_open), size, size, 3), dtype=image.dtype)
    for k, box in enumerate(half_open):  # the resize of each patch is inherently per box
        crop_resized(image, box, size, out=patches[k])
    return patches


def valid_crop_mask(boxes: np.ndarray) -> np.ndarray:
    """Boxes whose patch has at least one pixel each way (degenerate regressions are dropped)."""
    b = np.asarray(boxes, dtype=np.float64)
    return (np.trunc(b[:, 2]) - np.trunc(b[:, 0]) + 1 >= 1) & (np.trunc(b[:, 3]) - np.trunc(b[:, 1]) + 1 >= 1)


def onet_landmarks(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """O-Net's 10 outputs (5 x then 5 y, relative) -> ``(N, 5, 2)`` 1-based image points.

    Uses the box *before* O-Net's regression: ``x = w * p + x1 - 1``, ``w = x2 - x1 + 1``.
    """
    b = np.asarray(boxes, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 10)
    w = (b[:, 2] - b[:, 0] + 1)[:, None]
    h = (b[:, 3] - b[:, 1] + 1)[:, None]
    xs = w * p[:, :5] + b[:, 0:1] - 1
    ys = h * p[:, 5:] + b[:, 1:2] - 1
    return np.stack([xs, ys], axis=-1)
