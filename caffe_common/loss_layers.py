"""Loss layers shared by both detectors (Caffe Python layers): masked regression and mined softmax.

Blocked back-propagation: every row (sample, or prior box of an SSD-style net) trains only the tasks
it has a label for; a row without one gets exactly zero gradient from that task's loss (tests check it).

Rows: a loss's ``label`` bottom holds one value per row, and the prediction bottom is read as
``label.count`` rows of equal length in memory order. An MTCNN head ``(N, K, 1, 1)`` with labels ``(N,)``
gives ``N`` rows of ``K``; an SSD head ``(N, P * K)`` (permuted and flattened, prior-major) with
row-wise targets ``(N * P,)`` gives one row per prior, so no Reshape layer is needed.

* :class:`MaskedEuclideanLoss`, :class:`MaskedSmoothL1Loss`: regression on the rows whose label is in
  ``param_str`` ``{"labels": [...]}``, normalised by the number of such rows (one base class).
* :class:`OhemSoftmaxLoss`: softmax cross-entropy back-propagated from mined rows only; MTCNN's share
  mode ``{"keep": 0.7}`` or SSD's ratio mode ``{"neg_pos_ratio": 3}``.
* :class:`SoftTargetLoss`: distillation, the KL divergence of every row's softmax from a teacher's
  class probabilities, normalised by the positive rows (as SSD's confidence loss).

Train nets name them as ``python_param { module: "caffe_common.loss_layers" layer: "..." }``.
"""
from __future__ import annotations

import json
import math

import numpy as np

from caffe_common.env import import_caffe

caffe = import_caffe()


def layer_params(layer: str, text: str) -> dict:
    """A Python layer's ``param_str`` parsed as a JSON object (empty -> ``{}``); errors name ``layer``."""
    try:
        params = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{layer}: param_str must be JSON, got {text!r}: {exc}") from exc
    if not isinstance(params, dict):
        raise ValueError(f"{layer}: param_str must be a JSON object, got {text!r}")
    return params


def blob_rows(blob, rows: int) -> np.ndarray:
    """``blob``'s data as ``rows`` rows (a view); a clear error when its size is not a multiple."""
    if rows <= 0 or blob.data.size % rows:
        raise ValueError(f"a blob of shape {blob.data.shape} cannot be read as {rows} rows")
    return blob.data.reshape(rows, -1)


class _MaskedRowLoss(caffe.Layer):
    """``sum over selected rows of f(pred - target) / n_selected``, the rows selected by their label;
    other rows get zero gradient; the loss is 0 when no row is selected.

    Bottoms: prediction (``label.count`` rows of ``K``), target (same size), label (one per row).
    Subclasses give the elementwise ``f`` and its derivative.
    """

    def _loss(self, diff: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _gradient(self, diff: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def setup(self, bottom, top):
        name = type(self).__name__
        if len(bottom) != 3:
            raise ValueError(f"{name} takes prediction, target and label bottoms")
        labels = layer_params(name, self.param_str).get("labels")
        if not labels:
            raise ValueError(f"{name}: param_str needs 'labels', e.g. {{\"labels\": [1, -1]}}")
        self.labels = np.array(labels, dtype=np.float32)

    def reshape(self, bottom, top):
        if bottom[0].data.size != bottom[1].data.size or bottom[0].data.size % max(bottom[2].data.size, 1):
            raise ValueError(f"{type(self).__name__}: prediction {bottom[0].data.shape}, target "
                             f"{bottom[1].data.shape} and label {bottom[2].data.shape} do not give equal rows")
        top[0].reshape(1)

    def forward(self, bottom, top):
        label = bottom[2].data.reshape(-1)
        self.mask = np.isin(label, self.labels)
        self.count = int(self.mask.sum())
        rows = len(label)
        self.diff = (blob_rows(bottom[0], rows) - blob_rows(bottom[1], rows)) * self.mask[:, None]
        top[0].data[0] = self._loss(self.diff).sum() / self.count if self.count else 0.0

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            scale = top[0].diff[0] / self.count if self.count else 0.0
            bottom[0].diff[...] = (self._gradient(self.diff) * scale).reshape(bottom[0].diff.shape)
        for k in (1, 2):
            if propagate_down[k]:
                bottom[k].diff[...] = 0


class MaskedEuclideanLoss(_MaskedRowLoss):
    """``sum over selected rows of ||pred - target||^2 / (2 n_selected)``: Caffe's EuclideanLoss on the rows
    whose label is in ``param_str`` ``{"labels": [...]}`` (MTCNN's box and landmark losses)."""

    def _loss(self, diff):
        return 0.5 * diff ** 2

    def _gradient(self, diff):
        return diff


class MaskedSmoothL1Loss(_MaskedRowLoss):
    """SSD's box loss on the selected rows: ``sum of smoothL1(pred - target) / n_selected`` with
    ``smoothL1(d) = 0.5 d^2`` for ``|d| < 1`` else ``|d| - 0.5`` (Caffe's SmoothL1Loss, sigma 1). With
    labels ``{"labels": [1]}`` on matched priors this is MultiBoxLoss's loc loss (VALID normalisation:
    divided by the number of matched priors)."""

    def _loss(self, diff):
        absolute = np.abs(diff)
        return np.where(absolute < 1, 0.5 * diff ** 2, absolute - 0.5)

    def _gradient(self, diff):
        return np.clip(diff, -1, 1)


def hardest_share(losses: np.ndarray, label: np.ndarray, keep: float) -> np.ndarray:
    """Indices of the hardest ``ceil(keep * n)`` of the ``n`` rows with ``label >= 0`` (MTCNN's OHEM)."""
    valid = np.flatnonzero(label >= 0)
    order = np.argsort(-losses[valid], kind="stable")
    return valid[order[:math.ceil(keep * len(valid))]]


def positives_and_hardest_negatives(losses: np.ndarray, label: np.ndarray, ratio: float, min_neg: int = 0,
                                    groups: int = 1) -> np.ndarray:
    """Indices of all rows with ``label > 0`` and of the hardest rows with ``label == 0`` (highest loss
    first, ties by index), ``min(n_neg, max(floor(ratio * n_pos), min_neg))`` of them (SSD's MAX_NEGATIVE
    mining); rows with ``label < 0`` are never chosen. ``groups > 1`` mines in that many equal consecutive
    blocks of rows independently (per image, as Caffe's MultiBoxLoss does)."""
    if len(label) % groups:
        raise ValueError(f"{len(label)} rows do not split into {groups} equal groups")
    label = label.reshape(groups, -1)
    negative = label == 0
    wanted = np.maximum(np.floor(ratio * (label > 0).sum(axis=1)).astype(np.int64), int(min_neg))
    chosen = np.minimum(wanted, negative.sum(axis=1))
    hardness = np.where(negative, losses.reshape(groups, -1), -np.inf)
    rank = np.argsort(np.argsort(-hardness, axis=1, kind="stable"), axis=1)  # 0 = hardest negative of its group
    keep = (label > 0) | (negative & (rank < chosen[:, None]))
    return np.flatnonzero(keep.reshape(-1))


class OhemSoftmaxLoss(caffe.Layer):
    """Softmax cross-entropy back-propagated from mined rows only; the loss is the mean over the kept rows.

    Bottoms: logits (``label.count`` rows of ``C`` classes, e.g. ``(N, C, 1, 1)`` or SSD's ``(N, P * C)``),
    label (one per row; ``-1`` = ignored). ``param_str`` chooses the mining, one of:

    * ``{"keep": 0.7}`` (default): the hardest ``keep`` share of the rows with ``label >= 0`` (MTCNN's
      online hard example mining, the paper's 0.7);
    * ``{"neg_pos_ratio": 3, "min_neg": 0, "per_image": false}``: every row with ``label > 0`` (any
      class), plus the hardest background rows (label 0), at most ``ratio`` times as many as the
      positives (SSD's MAX_NEGATIVE mining) but at least ``min_neg`` (default 0: a batch without
      positives then has loss 0, as in MultiBoxLoss; set it to train on face-free images too).
      ``per_image``: mine per image (the logits' first axis), as Caffe's MultiBoxLoss does, instead of
      over the whole batch.

    Normalisation is by the number of kept rows (positives and negatives); MultiBoxLoss divides its
    confidence loss by the positives only, i.e. gives ``1 + ratio`` times this value.
    """

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError("OhemSoftmaxLoss takes logits and label bottoms")
        params = layer_params("OhemSoftmaxLoss", self.param_str)
        unknown = set(params) - {"keep", "neg_pos_ratio", "min_neg", "per_image"}
        if unknown:
            raise ValueError(f"OhemSoftmaxLoss: unknown param_str keys {sorted(unknown)}")
        if "neg_pos_ratio" in params:
            if "keep" in params:
                raise ValueError("OhemSoftmaxLoss: give 'keep' (share mining) or 'neg_pos_ratio' (SSD mining), "
                                 "not both")
            self.ratio = float(params["neg_pos_ratio"])
            self.min_neg = int(params.get("min_neg", 0))
            self.per_image = bool(params.get("per_image", False))
            if not self.ratio >= 0 or self.min_neg < 0:
                raise ValueError(f"OhemSoftmaxLoss: neg_pos_ratio and min_neg must be >= 0, got {params}")
            self.keep = None
        else:
            if set(params) & {"min_neg", "per_image"}:
                raise ValueError("OhemSoftmaxLoss: 'min_neg' and 'per_image' go with 'neg_pos_ratio'")
            self.keep = float(params.get("keep", 0.7))
            if not 0 < self.keep <= 1:
                raise ValueError(f"OhemSoftmaxLoss: keep must be in (0, 1], got {self.keep}")

    def reshape(self, bottom, top):
        if bottom[0].data.size % max(bottom[1].data.size, 1):
            raise ValueError(f"OhemSoftmaxLoss: logits {bottom[0].data.shape} do not split into "
                             f"{bottom[1].data.size} rows (label {bottom[1].data.shape})")
        top[0].reshape(1)

    def _mine(self, losses: np.ndarray, label: np.ndarray, images: int) -> np.ndarray:
        if self.keep is not None:
            return hardest_share(losses, label, self.keep)
        return positives_and_hardest_negatives(losses, label, self.ratio, self.min_neg,
                                               images if self.per_image else 1)

    def forward(self, bottom, top):
        label = bottom[1].data.reshape(-1).astype(np.int64)
        logits = blob_rows(bottom[0], len(label)).astype(np.float64)
        if len(label) and label.max() >= logits.shape[1]:
            raise ValueError(f"OhemSoftmaxLoss: label {label.max()} but only {logits.shape[1]} classes")
        log_prob = log_softmax(logits)
        self.prob = np.exp(log_prob)
        losses = np.where(label >= 0, -log_prob[np.arange(len(label)), np.maximum(label, 0)], 0.0)
        self.kept, self.label = self._mine(losses, label, bottom[0].data.shape[0]), label
        top[0].data[0] = losses[self.kept].mean() if len(self.kept) else 0.0

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            grad = np.zeros_like(self.prob)
            if len(self.kept):
                grad[self.kept] = self.prob[self.kept]
                grad[self.kept, self.label[self.kept]] -= 1
                grad *= top[0].diff[0] / len(self.kept)
            bottom[0].diff[...] = grad.reshape(bottom[0].diff.shape)
        if propagate_down[1]:
            bottom[1].diff[...] = 0


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(logits))`` in float64, shifted by each row's maximum (no overflow)."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class SoftTargetLoss(caffe.Layer):
    """Knowledge distillation: ``sum over rows of KL(target_row || softmax(logits_row)) / max(1, n_pos)``.

    Bottoms: logits (``label.count`` rows of ``C``), target probabilities (same size; each row a
    distribution, e.g. a teacher net's softmax), label (one per row). Every row is trained, background
    included (that is where a student's false positives are: its gradient ``softmax - target`` is
    zero wherever it already agrees with the teacher); ``n_pos`` counts the rows with ``label > 0``, so
    the loss is in the units of SSD's confidence loss and may take the same ``loss_weight``. KL rather than
    cross-entropy: the same gradient, and 0 when the student equals the teacher.
    """

    def setup(self, bottom, top):
        if len(bottom) != 3:
            raise ValueError("SoftTargetLoss takes logits, target probabilities and label bottoms")
        if layer_params("SoftTargetLoss", self.param_str):
            raise ValueError(f"SoftTargetLoss takes no param_str, got {self.param_str!r}")

    def reshape(self, bottom, top):
        rows = max(bottom[2].data.size, 1)
        if bottom[0].data.size != bottom[1].data.size or bottom[0].data.size % rows:
            raise ValueError(f"SoftTargetLoss: logits {bottom[0].data.shape}, targets {bottom[1].data.shape} and "
                             f"label {bottom[2].data.shape} do not give equal rows")
        top[0].reshape(1)

    def forward(self, bottom, top):
        rows = bottom[2].data.size
        target = blob_rows(bottom[1], rows).astype(np.float64)
        if (target < 0).any() or not np.allclose(target.sum(axis=1), 1, atol=1e-3):
            raise ValueError("SoftTargetLoss: every target row must be a probability distribution (>= 0, sum 1)")
        log_prob = log_softmax(blob_rows(bottom[0], rows))
        self.prob, self.target = np.exp(log_prob), target
        self.norm = max(1, int((bottom[2].data > 0).sum()))
        log_target = np.log(np.where(target > 0, target, 1.0))   # 0 * log 0 = 0
        top[0].data[0] = (target * (log_target - log_prob)).sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            grad = (self.prob - self.target) * (top[0].diff[0] / self.norm)
            bottom[0].diff[...] = grad.reshape(bottom[0].diff.shape)
        for k in (1, 2):
            if propagate_down[k]:
                bottom[k].diff[...] = 0
