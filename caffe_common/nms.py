"""Greedy non-maximum suppression, shared by both detectors: one implementation, fast on crowded images.

The result is exactly the official MTCNN ``nms.m``'s (and Caffe SSD's ``ApplyNMSFast`` without its
``top_k``/``eta``): boxes in decreasing score order, each kept unless a kept box overlaps it by more than the
threshold. Overlaps are :mod:`caffe_common.boxes`' (``pixel_offset`` 1: inclusive pixels, MTCNN; 0:
continuous coordinates, SSD). Small sets compare all pairs at once; crowded images (tens of thousands of
P-Net candidates) look for overlapping boxes among grid neighbours of the same size class only (the
side used to bucket boxes is ``max(w, h) + 1`` in both conventions: never below the real side, so the
grid always finds every overlapping pair). Every path gives the plain greedy loop's result (tested in
``tests/test_detect_steps.py``).
"""
from __future__ import annotations

import math

import numpy as np

from .boxes import box_area, iou_one_to_many, iou_pairs

#: From this many boxes on, NMS looks for overlapping boxes among grid neighbours instead of among all boxes.
GRID_NMS_MIN_BOXES = 250
#: Candidate pairs examined at once by the pair-based NMS (bounds its memory to some 100 MB).
PAIR_CHUNK = 1_000_000


def nms(boxes: np.ndarray, threshold: float, mode: str = "union", pixel_offset: float = 1) -> np.ndarray:
    """Greedy non-maximum suppression, exactly as the official MTCNN ``nms.m``.

    ``boxes``: ``(N, 5+)`` ``x1, y1, x2, y2, score``. Returns the indices of the kept boxes, best first.
    A box is dropped when its overlap with a kept, better-scored box is ``> threshold``; ``mode``
    ``"union"`` (IoU) or ``"min"`` (intersection over the smaller box). ``pixel_offset`` is the box
    convention of :mod:`caffe_common.boxes`: 1 (the default, MTCNN's) for inclusive pixel areas
    ``(x2 - x1 + 1) * (y2 - y1 + 1)``, 0 for continuous coordinates (SSD, as Caffe's ``ApplyNMSFast``). Score ties are
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
        keep = _dense_nms_sorted(ranked, threshold, mode, pixel_offset)
    elif mode == "union" and threshold > 0:
        keep = _pairs_nms_sorted(ranked, threshold, pixel_offset)
    else:
        keep = _grid_nms_sorted(ranked, threshold, mode, pixel_offset)
    return order[keep]


def _check_mode(mode: str) -> str:
    mode = mode.lower()
    if mode not in ("union", "min"):
        raise ValueError(f"NMS mode must be 'union' or 'min', not {mode!r}")
    return mode


def _greedy_nms_sorted(ranked: np.ndarray, threshold: float, mode: str, pixel_offset: float = 1) -> np.ndarray:
    """Greedy NMS of boxes already sorted best first; compares each kept box with the survivors."""
    # Survivors as one array (x1, y1, x2, y2, area, rank): one boolean selection per kept box.
    rest = np.column_stack([ranked[:, :4], box_area(ranked, pixel_offset), np.arange(len(ranked))])
    keep = []
    while len(rest):
        best, rest = rest[0], rest[1:]
        keep.append(int(best[5]))
        overlap = iou_one_to_many(best, rest, mode=mode, pixel_offset=pixel_offset, boxes_area=rest[:, 4])
        rest = rest[overlap <= threshold]
    return np.array(keep, dtype=np.intp)


def _dense_nms_sorted(ranked: np.ndarray, threshold: float, mode: str, pixel_offset: float = 1) -> np.ndarray:
    """Greedy NMS of a small set sorted best first: every pair's overlap in one vectorised call, then
    one pass in rank order. Same overlaps bit for bit as :func:`_greedy_nms_sorted` (same
    :func:`~caffe_common.boxes.iou_pairs` arithmetic, symmetric), hence the same picks."""
    n = len(ranked)
    areas = box_area(ranked, pixel_offset)
    first, second = np.triu_indices(n, 1)
    overlap = iou_pairs(ranked[first], ranked[second], mode=mode, pixel_offset=pixel_offset,
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

    def __init__(self, ranks: np.ndarray, ranked: np.ndarray, level: int, margin: float = 0,
                 pixel_offset: float = 1):
        self.cell = 2.0 ** (level + 1) + margin
        cx = np.floor(ranked[ranks, 0] / self.cell).astype(np.int64)
        cy = np.floor(ranked[ranks, 1] / self.cell).astype(np.int64)
        self.cx0, self.cy0 = int(cx.min()), int(cy.min())
        self.ncols = int(cx.max()) - self.cx0 + 1
        self.nrows = int(cy.max()) - self.cy0 + 1
        keys = (cy - self.cy0) * self.ncols + (cx - self.cx0)
        order = np.argsort(keys, kind="stable")
        self.keys, self.ranks = keys[order], ranks[order]
        areas = box_area(ranked[ranks], pixel_offset)
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


def _grid_nms_sorted(ranked: np.ndarray, threshold: float, mode: str, pixel_offset: float = 1) -> np.ndarray:
    """Greedy NMS of boxes sorted best first, comparing each kept box only with grid neighbours."""
    n = len(ranked)
    side = np.maximum(ranked[:, 2] - ranked[:, 0], ranked[:, 3] - ranked[:, 1]) + 1
    level = np.floor(np.log2(np.maximum(side, 1))).astype(np.int64)
    grids = [_SizeClassGrid(np.flatnonzero(level == k), ranked, int(k), pixel_offset=pixel_offset)
             for k in np.unique(level)]
    areas = box_area(ranked, pixel_offset)
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
                overlap = iou_one_to_many(box, ranked[cand], mode=mode, pixel_offset=pixel_offset,
                                          boxes_area=areas[cand])
                alive[cand[overlap > threshold]] = False
    return np.array(keep, dtype=np.intp)


def _pairs_nms_sorted(ranked: np.ndarray, threshold: float, pixel_offset: float = 1) -> np.ndarray:
    """Greedy union-mode NMS of boxes sorted best first, from the sparse list of overlapping pairs
    (:func:`_overlapping_pairs`): one pass in rank order keeps a box unless a kept box overlaps it."""
    n = len(ranked)
    first, second = _overlapping_pairs(ranked, threshold, pixel_offset)
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


def _overlapping_pairs(ranked: np.ndarray, threshold: float, pixel_offset: float = 1) -> tuple[np.ndarray, np.ndarray]:
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
    grids = {k: _SizeClassGrid(np.flatnonzero(level == k), ranked, k, margin=2, pixel_offset=pixel_offset)
             for k in levels}
    reach = max(0, math.ceil(math.log2(1 / threshold) - 1e-12)) if threshold < 1 else 0
    areas = box_area(ranked, pixel_offset)
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
                    over = iou_pairs(ranked[a], ranked[b], pixel_offset=pixel_offset, a_area=areas[a],
                                     b_area=areas[b]) > threshold
                    firsts.append(np.minimum(a[over], b[over]))
                    seconds.append(np.maximum(a[over], b[over]))
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)
