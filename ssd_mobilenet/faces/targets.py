"""Prior matching and target encoding of the face network, and the decoder (numpy, vectorised per image).

Coordinates are normalised to the input image (``[0, 1]``), boxes ``x1, y1, x2, y2``, the five landmarks
interleaved ``x1, y1, x2, y2, ..., x5, y5`` in the annotations' point order (the 10 landmark outputs of
a prior follow the same order).

* Matching (:func:`match_priors`, :func:`bipartite_match`) is Caffe's ``MatchBBox`` with
  ``PER_PREDICTION``, as MultiBoxLoss runs it: first bipartite (repeatedly the globally best-overlapping pair of a still unmatched ground-truth
  box and a still unmatched prior, over pairs with IoU > 1e-6), so every box gets its best free prior
  even below the threshold; then each remaining prior takes its best box if their IoU >= ``overlap``
  (0.5). IoU is :func:`caffe_common.boxes.iou_matrix` (continuous coordinates, as Caffe's
  ``JaccardOverlap`` for normalised boxes).
* Boxes (:func:`encode_boxes`) are Caffe's ``CENTER_SIZE`` code with the variance in the encoding
  (``variance_encoded_in_target: false``): ``((gcx - pcx) / pw / v0, (gcy - pcy) / ph / v1,
  log(gw / pw) / v2, log(gh / ph) / v3)`` with the prior variances ``(0.1, 0.1, 0.2, 0.2)``;
  ``DetectionOutput`` decodes them (a test checks it).
* Landmarks (:func:`encode_landmarks`): each point relative to the prior centre and size with variance
  0.1: ``((lx - pcx) / (pw * 0.1), (ly - pcy) / (ph * 0.1))``.
* Faces too small to learn from (:data:`IGNORE_KIND`, see :mod:`.augment`) are matched to no prior; a prior
  left unmatched that overlaps one at IoU >= :data:`IGNORE_OVERLAP` gets ``cls_label`` -1, so it is neither a
  positive nor a (mined) negative: a face the net cannot resolve is not taught as background.
* Per prior targets (:data:`TARGET_NAMES`): ``cls_label`` 0 background, -1 ignored, or the matched box's kind
  (1 face, 2 partial face); ``box_target`` and ``box_label`` (1 when matched); ``lmk_target`` and ``lmk_label``
  (1 when matched to a box with landmarks). Unmatched rows hold zero targets; their losses are masked.

Ground truth travels through the net as one blob (:data:`GT_COLUMNS`, made by :func:`pack_ground_truth`,
read by :func:`unpack_ground_truth`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from caffe_common.boxes import iou_matrix

from ..model import VARIANCE

#: Prior-box variances of the box code (the PriorBox layers' ``variance``; the priors blob carries them).
PRIOR_VARIANCE = VARIANCE
LANDMARK_VARIANCE = 0.1
OVERLAP_THRESHOLD = 0.5
#: Class per prior: background, face, partial face (a box holding only part of a face).
KINDS = {"background": 0, "face": 1, "partial": 2}
NUM_CLASSES = len(KINDS)
#: The ground-truth kind of a face that is only an "ignore" region (too small, or WIDER's invalid): not a class.
IGNORE_KIND = 3
#: A prior unmatched to a face but overlapping an ignore region at least this much (IoU) is left out of the
#: confidence loss. A 16 px prior around a face of 5 px (about the least that still shows a face) has IoU 0.1.
IGNORE_OVERLAP = 0.1
NUM_LANDMARKS = 5
#: Ground-truth blob, shape ``(1, 1, rows, len(GT_COLUMNS))`` like Caffe's AnnotatedData label (which has
#: 8 columns without landmarks): one row per box, ``item`` the image's index in the batch, ``kind``
#: 1 face / 2 partial face / 3 ignore region (:data:`IGNORE_KIND`), the box, ``has_landmarks`` 0 / 1 and the
#: landmarks (ignored when 0).
#: A batch without any box holds one row of -1 (``item`` -1 marks padding), as AnnotatedData does.
GT_COLUMNS = ("item", "kind", "x1", "y1", "x2", "y2", "has_landmarks",
              *(f"{axis}{k}" for k in range(1, NUM_LANDMARKS + 1) for axis in ("lx", "ly")))
GT_WIDTH = len(GT_COLUMNS)
_BOX, _LMK = slice(2, 6), slice(7, 7 + 2 * NUM_LANDMARKS)
#: Per-prior target arrays, in the order of :class:`~ssd_mobilenet.faces.layers.FacePriorTargetLayer`'s tops.
TARGET_NAMES = ("cls_label", "box_target", "box_label", "lmk_target", "lmk_label")


@dataclass(frozen=True)
class FaceTruth:
    """The ground truth of one image: ``boxes (G, 4)``, ``kinds (G,)`` (1, 2 or 3 = :data:`IGNORE_KIND`),
    ``landmarks (G, 10)`` and ``has_landmarks (G,)`` (bool), normalised coordinates."""

    boxes: np.ndarray
    kinds: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray

    @classmethod
    def empty(cls) -> FaceTruth:
        """An image without faces."""
        return cls(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros((0, 2 * NUM_LANDMARKS)), np.zeros(0, bool))


def pack_ground_truth(images: Sequence[FaceTruth]) -> np.ndarray:
    """The ground-truth blob (float32, :data:`GT_COLUMNS`) of a batch of images."""
    rows = [np.column_stack([np.full(len(t.kinds), item), t.kinds, t.boxes, t.has_landmarks, t.landmarks])
            for item, t in enumerate(images) if len(t.kinds)]
    table = np.concatenate(rows) if rows else np.full((1, GT_WIDTH), -1.0)
    return table.astype(np.float32).reshape(1, 1, -1, GT_WIDTH)


def unpack_ground_truth(blob: np.ndarray, num_images: int) -> list[FaceTruth]:
    """The per-image ground truth of a ground-truth blob; a clear error naming the row on bad values."""
    blob = np.asarray(blob, dtype=np.float64)
    if blob.ndim != 4 or blob.shape[:2] != (1, 1) or blob.shape[3] != GT_WIDTH:
        raise ValueError(f"ground-truth blob must be (1, 1, rows, {GT_WIDTH}) ({', '.join(GT_COLUMNS)}), "
                         f"got {blob.shape}")
    rows = np.flatnonzero(blob[0, 0, :, 0] != -1)   # item -1: padding
    table = blob[0, 0, rows]
    item = table[:, 0]
    checks = [((item != np.round(item)) | (item < 0) | (item >= num_images), "item is not an image of the batch"),
              (~np.isin(table[:, 1], (KINDS["face"], KINDS["partial"], IGNORE_KIND)),
               "kind is not 1 (face), 2 (partial) or 3 (ignore)"),
              (~np.isin(table[:, 6], (0, 1)), "has_landmarks is not 0 or 1"),
              (~np.isfinite(table).all(axis=1), "a value is not finite"),
              (~((table[:, 4] > table[:, 2]) & (table[:, 5] > table[:, 3])), "box has no area (x2 <= x1 or y2 <= y1)")]
    for bad, what in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"ground-truth row {rows[row]}: {what}: {table[row].tolist()} (batch of {num_images})")
    return [FaceTruth(t[:, _BOX], t[:, 1].astype(np.int64), t[:, _LMK], t[:, 6] == 1)
            for t in (table[item == i] for i in range(num_images))]


def priors_from_blob(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(priors (P, 4), variances (P, 4))`` from a PriorBox (or concatenated ``mbox_priorbox``) top
    ``(1, 2, P * 4)``: channel 0 the boxes, channel 1 their variances."""
    blob = np.asarray(blob, dtype=np.float64)
    if blob.ndim != 3 or blob.shape[:2] != (1, 2) or blob.shape[2] % 4:
        raise ValueError(f"priors blob must be PriorBox's (1, 2, P * 4), got {blob.shape}")
    return blob[0, 0].reshape(-1, 4), blob[0, 1].reshape(-1, 4)


def bipartite_match(iou: np.ndarray) -> np.ndarray:
    """Caffe's bipartite pass on an IoU matrix ``(P, G)``: repeatedly the best pair (ties: lowest prior, then
    lowest box) of a free prior and a free box with IoU > 1e-6; per prior its box or -1.

    Each box keeps its best free prior; only boxes whose best prior was just taken look again, so a
    crowded image costs about ``G * G`` plus ``P`` per such conflict instead of ``G * P * G``.
    """
    prior_count, box_count = iou.shape
    pool = np.where(iou > 1e-6, iou, -1.0)
    matched = np.full(prior_count, -1, dtype=np.int64)
    if not prior_count or not box_count:
        return matched
    boxes = np.arange(box_count)
    best_prior = pool.argmax(axis=0)
    best = pool[best_prior, boxes]
    free = np.ones(box_count, dtype=bool)
    for _ in range(box_count):
        value = np.where(free, best, -1.0)
        top = value.max()
        if top <= 0:
            break
        tied = np.flatnonzero(value == top)
        pick = tied[np.lexsort((tied, best_prior[tied]))[0]]
        prior = best_prior[pick]
        matched[prior], free[pick] = pick, False
        pool[prior, :] = -1
        stale = np.flatnonzero(free & (best_prior == prior))
        if len(stale):
            best_prior[stale] = pool[:, stale].argmax(axis=0)
            best[stale] = pool[best_prior[stale], stale]
    return matched


def match_priors(priors: np.ndarray, boxes: np.ndarray, overlap: float = OVERLAP_THRESHOLD) -> np.ndarray:
    """For each prior, the index of its matched box or -1 (see the module: bipartite, then per prediction)."""
    if not len(boxes):
        return np.full(len(priors), -1, dtype=np.int64)
    iou = iou_matrix(priors, boxes)                  # (P, G)
    matched = bipartite_match(iou)
    best, best_iou = iou.argmax(axis=1), iou.max(axis=1)
    rest = (matched < 0) & (best_iou >= overlap) & (best_iou > 1e-6)
    matched[rest] = best[rest]
    return matched


def _centre_size(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64)
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w, h


def encode_boxes(priors: np.ndarray, boxes: np.ndarray, variances=PRIOR_VARIANCE) -> np.ndarray:
    """``(P, 4)`` offsets of ``boxes[k]`` from ``priors[k]`` (CENTER_SIZE; ``variances`` (4,) or (P, 4))."""
    pcx, pcy, pw, ph = _centre_size(priors)
    gcx, gcy, gw, gh = _centre_size(boxes)
    v = np.asarray(variances, dtype=np.float64)
    return np.stack([(gcx - pcx) / pw, (gcy - pcy) / ph, np.log(gw / pw), np.log(gh / ph)], axis=-1) / v


def decode_boxes(priors: np.ndarray, offsets: np.ndarray, variances=PRIOR_VARIANCE) -> np.ndarray:
    """The boxes ``(P, 4)`` that :func:`encode_boxes` offsets describe (as Caffe's ``DecodeBBox``)."""
    pcx, pcy, pw, ph = _centre_size(priors)
    t = np.asarray(offsets, dtype=np.float64) * np.asarray(variances, dtype=np.float64)
    cx, cy = pcx + t[..., 0] * pw, pcy + t[..., 1] * ph
    w, h = pw * np.exp(t[..., 2]), ph * np.exp(t[..., 3])
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _landmark_frame(priors: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """Per prior, the origin and the unit of each interleaved landmark coordinate, ``(P, 10)`` each."""
    pcx, pcy, pw, ph = _centre_size(priors)
    return (np.tile(np.stack([pcx, pcy], axis=-1), NUM_LANDMARKS),
            np.tile(np.stack([pw, ph], axis=-1), NUM_LANDMARKS) * variance)


def encode_landmarks(priors: np.ndarray, landmarks: np.ndarray, variance: float = LANDMARK_VARIANCE) -> np.ndarray:
    """``(P, 10)`` offsets of ``landmarks[k]`` from ``priors[k]``: ``(lx - pcx) / (pw * variance)``, same in y."""
    origin, unit = _landmark_frame(priors, variance)
    return (np.asarray(landmarks, dtype=np.float64) - origin) / unit


def decode_landmarks(priors: np.ndarray, offsets: np.ndarray, variance: float = LANDMARK_VARIANCE) -> np.ndarray:
    """The landmarks ``(P, 10)`` that :func:`encode_landmarks` offsets describe."""
    origin, unit = _landmark_frame(priors, variance)
    return np.asarray(offsets, dtype=np.float64) * unit + origin


def prior_targets(priors: np.ndarray, truth: FaceTruth, variances=PRIOR_VARIANCE,
                  overlap: float = OVERLAP_THRESHOLD) -> dict[str, np.ndarray]:
    """One image's per-prior targets (:data:`TARGET_NAMES`, float32, ``P`` rows each)."""
    real = truth.kinds != IGNORE_KIND
    boxes, kinds = truth.boxes[real], truth.kinds[real]
    landmarks, has_landmarks = truth.landmarks[real], truth.has_landmarks[real]
    matched = match_priors(priors, boxes, overlap)
    hit = matched >= 0
    gt = matched[hit]
    variances = np.broadcast_to(np.asarray(variances, dtype=np.float64), (len(priors), 4))
    out = {"cls_label": np.zeros(len(priors)), "box_target": np.zeros((len(priors), 4)),
           "lmk_target": np.zeros((len(priors), 2 * NUM_LANDMARKS))}
    out["cls_label"][hit] = kinds[gt]
    if not real.all():
        near_ignored = iou_matrix(priors, truth.boxes[~real]).max(axis=1) >= IGNORE_OVERLAP
        out["cls_label"][~hit & near_ignored] = -1
    out["box_target"][hit] = encode_boxes(priors[hit], boxes[gt], variances[hit])
    out["box_label"] = hit.astype(np.float64)
    with_marks = np.zeros(len(priors), bool)
    with_marks[hit] = has_landmarks[gt]
    out["lmk_target"][with_marks] = encode_landmarks(priors[with_marks], landmarks[matched[with_marks]])
    out["lmk_label"] = with_marks.astype(np.float64)
    return {name: out[name].astype(np.float32) for name in TARGET_NAMES}


def batch_targets(priors: np.ndarray, truths: Sequence[FaceTruth], variances=PRIOR_VARIANCE,
                  overlap: float = OVERLAP_THRESHOLD) -> dict[str, np.ndarray]:
    """The targets of a batch, image after image (``N * P`` rows), the row order of the SSD heads."""
    per_image = [prior_targets(priors, truth, variances, overlap) for truth in truths]
    return {name: np.concatenate([t[name] for t in per_image]) for name in TARGET_NAMES}
