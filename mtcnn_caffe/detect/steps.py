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

from caffe_common.boxes import box_area, iou_one_to_many, iou_pairs
from caffe_common.images import crop_resized

from . import defaults

PNET_STRIDE = 2
PNET_CELL = 12
#: From this many boxes on, NMS looks for overlapping boxes among grid neighbours instead of among all boxes.
GRID_NMS_MIN_BOXES = 250
#: Candidate pairs examined at once by the pair-based NMS (bounds its memory to some 100 MB).
PAIR_CHUNK = 1_000_000


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


# --------------------------------------------------------------------------- NMS
def nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression, exactly as the official ``nms.m``.

    Returns the indices of the kept boxes, best first. A box is dropped when its
    overlap with a kept, better-scored box is ``> threshold``; overlaps use the
    inclusive pixel areas ``(x2 - x1 + 1) * (y2 - y1 + 1)``, ``mode`` ``"union"``
    (IoU) or ``"min"`` (intersection over the smaller box). Score ties are
    broken like MATLAB's stable ``sort`` read from the end: the later box first.

    No N x N matrix for large sets. Small sets compute all pairwise overlaps at
    once, then make one greedy pass (no numpy call per kept box). Larger ones (crowded
    images give tens of thousands of P-Net candidates) find the overlapping pairs
    among grid neighbours instead of among all boxes (union mode: vectorised,
    then one greedy pass; min mode: per kept box); every path gives the same
    result as the plain greedy loop (tested).
    """
    mode = _check_mode(mode)
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(boxes[:, 4], kind="stable")[::-1]
    ranked = boxes[order, :4]
    if len(boxes) < GRID_NMS_MIN_BOXES:
        keep = _dense_nms_sorted(ranked, threshold, mode)
    elif mode == "union" and threshold > 0:
        keep = _pairs_nms_sorted(ranked, threshold)
    else:
        keep = _grid_nms_sorted(ranked, threshold, mode)
    return order[keep]


def _check_mode(mode: str) -> str:
    mode = mode.lower()
    if mode not in ("union", "min"):
        raise ValueError(f"NMS mode must be 'union' or 'min', not {mode!r}")
    return mode


def _greedy_nms_sorted(ranked: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Greedy NMS of boxes already sorted best first; compares each kept box with the survivors."""
    # Survivors as one array (x1, y1, x2, y2, area, rank): one boolean selection per kept box.
    rest = np.column_stack([ranked[:, :4], box_area(ranked, pixel_offset=1), np.arange(len(ranked))])
    keep = []
    while len(rest):
        best, rest = rest[0], rest[1:]
        keep.append(int(best[5]))
        overlap = iou_one_to_many(best, rest, mode=mode, pixel_offset=1, boxes_area=rest[:, 4])
        rest = rest[overlap <= threshold]
    return np.array(keep, dtype=np.intp)


def _dense_nms_sorted(ranked: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Greedy NMS of a small set sorted best first: every pair's overlap in one vectorised call, then
    one pass in rank order. Same overlaps bit for bit as :func:`_greedy_nms_sorted` (same
    :func:`~caffe_common.boxes.iou_pairs` arithmetic, symmetric), hence the same picks."""
    n = len(ranked)
    areas = box_area(ranked, pixel_offset=1)
    first, second = np.triu_indices(n, 1)
    overlap = iou_pairs(ranked[first], ranked[second], mode=mode, pixel_offset=1,
                        a_area=areas[first], b_area=areas[second])
    suppresses = np.zeros((n, n), dtype=bool)
    hit = ~(overlap <= threshold)  # the greedy loop keeps a box only while overlap <= threshold
    suppresses[first[hit], second[hit]] = True
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for rank in range(n):
        if not suppressed[rank]:
            keep.append(rank)
            suppressed |= suppresses[rank]
    return np.array(keep, dtype=np.intp)


class _SizeClassGrid:
    """Boxes whose longest side lies in ``[2**k, 2**(k+1))`` bucketed in cells of ``2**(k+1)`` px.

    A box of this class that overlaps a query box has its ``x1`` within one
    cell of the query's extent, so the candidates of a query are a few
    contiguous runs of the (row, column)-sorted bucket keys.
    """

    def __init__(self, ranks: np.ndarray, ranked: np.ndarray, level: int, margin: float = 0):
        self.cell = 2.0 ** (level + 1) + margin
        cx = np.floor(ranked[ranks, 0] / self.cell).astype(np.int64)
        cy = np.floor(ranked[ranks, 1] / self.cell).astype(np.int64)
        self.cx0, self.cy0 = int(cx.min()), int(cy.min())
        self.ncols = int(cx.max()) - self.cx0 + 1
        self.nrows = int(cy.max()) - self.cy0 + 1
        keys = (cy - self.cy0) * self.ncols + (cx - self.cx0)
        order = np.argsort(keys, kind="stable")
        self.keys, self.ranks = keys[order], ranks[order]
        areas = box_area(ranked[ranks], pixel_offset=1)
        self.min_area, self.max_area = float(areas.min()), float(areas.max())

    def may_exceed(self, area: float, threshold: float, mode: str) -> bool:
        """False when no box of this class can have IoU > threshold with a box of ``area``."""
        if mode != "union" or area <= 0:
            return mode != "union"
        best_ratio = 1.0
        if area < self.min_area:
            best_ratio = area / self.min_area
        elif area > self.max_area:
            best_ratio = self.max_area / area
        # IoU <= smaller area / larger area; keep a margin for rounding.
        return best_ratio > threshold * (1 - 1e-9)

    def candidates(self, box: np.ndarray) -> np.ndarray:
        """Ranks of the boxes of this class that may intersect ``box`` (a superset)."""
        c = self.cell
        x_lo = max(math.floor((box[0] - c - 1) / c) - self.cx0, 0)
        x_hi = min(math.floor((box[2] + 1) / c) - self.cx0, self.ncols - 1)
        y_lo = max(math.floor((box[1] - c - 1) / c) - self.cy0, 0)
        y_hi = min(math.floor((box[3] + 1) / c) - self.cy0, self.nrows - 1)
        if x_lo > x_hi or y_lo > y_hi:
            return self.ranks[:0]
        rows = np.arange(y_lo, y_hi + 1) * self.ncols
        starts = np.searchsorted(self.keys, rows + x_lo, side="left")
        ends = np.searchsorted(self.keys, rows + x_hi, side="right")
        runs = [self.ranks[s:e] for s, e in zip(starts.tolist(), ends.tolist()) if e > s]
        if not runs:
            return self.ranks[:0]
        return runs[0] if len(runs) == 1 else np.concatenate(runs)

    def neighbour_pairs(self, query_ranks: np.ndarray, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All ``(query, member)`` rank pairs where the member's cell is within one cell of the query's
        (vectorised). With ``margin >= 2`` and queries no larger than this class, that covers every
        intersecting pair."""
        c = self.cell
        qx = np.floor(ranked[query_ranks, 0] / c).astype(np.int64) - self.cx0
        qy = np.floor(ranked[query_ranks, 1] / c).astype(np.int64) - self.cy0
        firsts, seconds = [], []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                cx, cy = qx + dx, qy + dy
                inside = (cx >= 0) & (cx < self.ncols) & (cy >= 0) & (cy < self.nrows)
                key = cy[inside] * self.ncols + cx[inside]
                start = np.searchsorted(self.keys, key, side="left")
                count = np.searchsorted(self.keys, key, side="right") - start
                total = int(count.sum())
                if total == 0:
                    continue
                # Expand each query's run [start, start + count) of members into pairs.
                offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
                firsts.append(np.repeat(query_ranks[inside], count))
                seconds.append(self.ranks[np.repeat(start, count) + offsets])
        if not firsts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(firsts), np.concatenate(seconds)


def _grid_nms_sorted(ranked: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Greedy NMS of boxes sorted best first, comparing each kept box only with grid neighbours."""
    n = len(ranked)
    side = np.maximum(ranked[:, 2] - ranked[:, 0], ranked[:, 3] - ranked[:, 1]) + 1
    level = np.floor(np.log2(np.maximum(side, 1))).astype(np.int64)
    grids = [_SizeClassGrid(np.flatnonzero(level == k), ranked, int(k)) for k in np.unique(level)]
    areas = box_area(ranked, pixel_offset=1)
    alive = np.ones(n, dtype=bool)
    keep = []
    for rank in range(n):
        if not alive[rank]:
            continue
        keep.append(rank)
        box = ranked[rank]
        for grid in grids:
            if not grid.may_exceed(areas[rank], threshold, mode):
                continue
            cand = grid.candidates(box)
            cand = cand[cand > rank]
            cand = cand[alive[cand]]
            if cand.size:
                overlap = iou_one_to_many(box, ranked[cand], mode=mode, pixel_offset=1, boxes_area=areas[cand])
                alive[cand[overlap > threshold]] = False
    return np.array(keep, dtype=np.intp)


def _pairs_nms_sorted(ranked: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy union-mode NMS of boxes sorted best first, from the sparse list of overlapping pairs
    (:func:`_overlapping_pairs`): one pass in rank order keeps a box unless a kept box overlaps it."""
    n = len(ranked)
    first, second = _overlapping_pairs(ranked, threshold)
    order = np.argsort(first, kind="stable")
    first, second = first[order], second[order]
    bounds = np.searchsorted(first, np.arange(n + 1)).tolist()
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for rank in range(n):  # the greedy pass: cheap per box, the overlaps are already known
        if suppressed[rank]:
            continue
        keep.append(rank)
        if bounds[rank + 1] > bounds[rank]:
            suppressed[second[bounds[rank]:bounds[rank + 1]]] = True
    return np.array(keep, dtype=np.intp)


def _overlapping_pairs(ranked: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rank pairs ``(better, worse)`` of boxes with IoU > ``threshold`` (union mode, ``threshold > 0``).

    IoU > t needs both widths and both heights within a factor 1/t, so only size
    classes at most ``log2(1/t)`` apart can interact; their candidate pairs come
    from neighbouring grid cells (vectorised) and their IoUs are computed in chunks
    (:data:`PAIR_CHUNK`); only the overlapping pairs are kept, never an N x N matrix.
    """
    side = np.maximum(ranked[:, 2] - ranked[:, 0], ranked[:, 3] - ranked[:, 1]) + 1
    level = np.floor(np.log2(np.maximum(side, 1))).astype(np.int64)
    levels = np.unique(level).tolist()
    # margin 2: with inclusive pixels (+1) an intersecting box's x1 is less than one cell away.
    grids = {k: _SizeClassGrid(np.flatnonzero(level == k), ranked, k, margin=2) for k in levels}
    reach = max(0, math.ceil(math.log2(1 / threshold) - 1e-12)) if threshold < 1 else 0
    areas = box_area(ranked, pixel_offset=1)
    firsts, seconds = [], []
    for k in levels:
        queries = grids[k].ranks
        for k2 in levels:
            if not k <= k2 <= k + reach:
                continue
            for lo in range(0, len(queries), max(1, PAIR_CHUNK // 200)):
                i, j = grids[k2].neighbour_pairs(queries[lo:lo + PAIR_CHUNK // 200], ranked)
                if k2 == k:  # within a class each pair shows up twice: keep it once
                    i, j = i[i < j], j[i < j]
                for s in range(0, len(i), PAIR_CHUNK):
                    a, b = i[s:s + PAIR_CHUNK], j[s:s + PAIR_CHUNK]
                    over = iou_pairs(ranked[a], ranked[b], pixel_offset=1, a_area=areas[a], b_area=areas[b]) > threshold
                    firsts.append(np.minimum(a[over], b[over]))
                    seconds.append(np.maximum(a[over], b[over]))
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


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
