"""Caffe Python layers of MTCNN training: the batch-mixing data layer here, the two losses Caffe lacks in
:mod:`caffe_common.loss_layers` (shared with the face SSD; re-exported here so that train nets written
before the move, which name this module, still load).

Blocked back-propagation: every sample trains only the tasks it has labels for. Classification uses
pos (1) and neg (0) and ignores part/landmark samples (the data layer's ``cls_label`` is -1 for them, so
Caffe's own ``SoftmaxWithLoss { ignore_label: -1 }`` fits when OHEM is off); box regression uses pos and
part; landmarks use landmark samples. A sample without a label for a task gets exactly zero gradient
from that task's loss (tests check it).

``MtcnnBatchLayer`` tops, in order: ``data`` ``(N, 3, s, s)`` (:func:`mtcnn_caffe.net_input.images_to_blob`,
the detector's convention), ``label`` ``(N,)`` (1 pos, 0 neg, -1 part, -2 landmark), ``cls_label`` ``(N,)``
(1, 0, or -1 = ignored), ``roi`` ``(N, 4)`` box targets and ``pts`` ``(N, 10)`` landmark targets in the
nets' output order ``x1..x5, y1..y5`` (:func:`mtcnn_caffe.data.records.landmarks_to_net_order`).
``param_str`` (JSON): ``source`` (pack folder or data.lmdb), ``batch_size``, ``mix`` (``"3:1:1:2"``),
``seed``, ``split`` (``train`` or ``val``: the held-out tail of the pack, read in order).
"""
from __future__ import annotations

import math

import numpy as np

from caffe_common.env import import_caffe
from caffe_common.loss_layers import MaskedEuclideanLoss, OhemSoftmaxLoss, layer_params

from ..data.lmdb_io import RecordReader
from ..data.records import LABELS, landmarks_to_net_order
from ..net_input import images_to_blob
from .batches import DEFAULT_MIX, BatchPlan, Mix, split_counts

caffe = import_caffe()

TOP_NAMES = ("data", "label", "cls_label", "roi", "pts")
__all__ = ["TOP_NAMES", "MaskedEuclideanLoss", "MtcnnBatchLayer", "OhemSoftmaxLoss", "records_to_tops"]


def records_to_tops(records: np.ndarray) -> dict[str, np.ndarray]:
    """Decoded records -> the five top arrays (float32); the one place targets meet the nets' layout."""
    label = records["label"].astype(np.float32)
    cls_label = np.where((label == LABELS["pos"]) | (label == LABELS["neg"]), label, -1).astype(np.float32)
    return {"data": images_to_blob(records["image"]), "label": label, "cls_label": cls_label,
            "roi": records["bbox"].astype(np.float32),
            "pts": landmarks_to_net_order(records["landmark"]).astype(np.float32)}


class MtcnnBatchLayer(caffe.Layer):
    """Mixed training batches (or the held-out records in order) from a packed stage LMDB."""

    def setup(self, bottom, top):
        if len(bottom):
            raise ValueError("MtcnnBatchLayer takes no bottoms")
        if not 1 <= len(top) <= len(TOP_NAMES):
            raise ValueError(f"MtcnnBatchLayer has 1 to 5 tops ({', '.join(TOP_NAMES)}), got {len(top)}")
        params = layer_params("MtcnnBatchLayer", self.param_str)
        if "source" not in params:
            raise ValueError("MtcnnBatchLayer: param_str needs 'source' (the pack folder of gen_net_imdb.py)")
        self.reader = RecordReader(params["source"])
        self.batch_size = int(params.get("batch_size", 64))
        self.split = params.get("split", "train")
        train_count, self.val_count = split_counts(len(self.reader))
        self.val_start = train_count
        self.iteration = 0
        if self.split == "train":
            self.plan = BatchPlan(self.reader.read_labels(), train_count, Mix.parse(params.get("mix", DEFAULT_MIX)),
                                  self.batch_size, int(params.get("seed", 0)), source=str(self.reader.path))
        elif self.split == "val":
            if not self.val_count:
                raise ValueError(f"{self.reader.path}: too few records ({len(self.reader)}) to hold out a validation set")
        else:
            raise ValueError(f"MtcnnBatchLayer: split must be 'train' or 'val', got {self.split!r}")

    def set_iteration(self, iteration: int) -> None:
        """Continue with the batch of ``iteration`` (resume; ``0`` restarts the held-out pass)."""
        self.iteration = int(iteration)

    def val_batches(self) -> int:
        """Forward passes that cover the held-out records once (the last batch wraps around)."""
        return math.ceil(self.val_count / self.batch_size)

    def reshape(self, bottom, top):
        n, s = self.batch_size, self.reader.size
        shapes = ((n, 3, s, s), (n,), (n,), (n, 4), (n, 10))
        for i in range(len(top)):
            top[i].reshape(*shapes[i])

    def next_indices(self) -> np.ndarray:
        if self.split == "train":
            return self.plan.indices(self.iteration)
        first = self.iteration * self.batch_size
        return self.val_start + (first + np.arange(self.batch_size)) % self.val_count

    def forward(self, bottom, top):
        tops = records_to_tops(self.reader.read_indices(self.next_indices()))
        self.iteration += 1
        for i in range(len(top)):
            top[i].data[...] = tops[TOP_NAMES[i]]

    def backward(self, top, propagate_down, bottom):
        pass
