"""Caffe Python data layer of the face network: batches of a face index (:mod:`.dataset`).

``FaceDataLayer`` tops: ``data`` ``(N, 3, S, S)`` float32 (:func:`.preprocess.to_blob`, the detector's
input convention) and ``gt``, the ground-truth blob of :mod:`.targets` (``(1, 1, rows, 17)``,
:data:`~.targets.GT_COLUMNS`, boxes and landmarks normalised to the sample), the bottom that
:class:`~.layers.FacePriorTargetLayer` reads. ``param_str`` (JSON)::

    {"index": "DIR/train_index.jsonl", "batch_size": 16, "size": 320, "seed": 0,
     "augment": true, "phase": "train", "wider_repeat": 1}

``index`` is required; ``phase`` ``"train"`` (default in a TRAIN net) walks the index in a new seeded
order each epoch and augments (:func:`.augment.augment`); an epoch holds each WIDER image
``wider_repeat`` times (each a differently augmented sample) and each landmark image once, so the many
small faces of crowded photos are not outnumbered by the single large faces of a landmark set; ``"test"`` (default in a TEST net) walks it in
file order with the test transform (``augment`` defaults to false there). Batch ``i`` depends only on
``(seed, i)``: item ``j`` of it is the image at position ``i * N + j`` of the epoch orders and is
augmented with a generator seeded by ``(seed, i, j)``, so a resumed run (the solver calls
``set_iteration``) gets the batches an uninterrupted one would have. For evaluation passes the layer
has MTCNN's protocol: ``set_iteration(0)``, then ``val_batches()`` forwards cover ``val_count`` images.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caffe_common.env import import_caffe
from caffe_common.images import read_image
from caffe_common.loss_layers import layer_params

from .augment import AugmentConfig, augment, record_truth, resize_truth
from .dataset import FaceIndex, FaceRecord, read_face_index
from .preprocess import INPUT_SIZE, fit_to_square, to_blob
from .targets import GT_WIDTH, FaceTruth, pack_ground_truth

caffe = import_caffe()

TOP_NAMES = ("data", "gt")
PARAM_KEYS = ("index", "batch_size", "size", "seed", "augment", "phase", "wider_repeat")
PHASES = ("train", "test")


def load_sample(record: FaceRecord, rng: np.random.Generator | None, config: AugmentConfig
                ) -> tuple[np.ndarray, FaceTruth, Counter]:
    """One image of the index as a ``S x S`` sample: augmented when ``rng`` is given, else as the detector
    sees it (:func:`~.preprocess.fit_to_square`, faces normalised to the square)."""
    image = read_image(record.path)
    if image.shape[:2] != (record.height, record.width):
        raise ValueError(f"{record.path}: image is {image.shape[1]}x{image.shape[0]}, the index says "
                         f"{record.width}x{record.height} (rebuild the index)")
    if rng is None:
        square, (frame_w, frame_h) = fit_to_square(image, config.size)
        truth, stats = resize_truth(record_truth(record), frame_w, frame_h, config)
        return square, truth, stats
    return augment(image, record_truth(record), rng, config)


@dataclass
class FaceBatches:
    """The batches of an index (no Caffe needed): :meth:`batch` ``(data, gt, counts)`` of an iteration."""

    index: FaceIndex
    batch_size: int = 16
    seed: int = 0
    train: bool = True
    augment: bool = True
    config: AugmentConfig = field(default_factory=AugmentConfig)
    #: Times each WIDER image appears in a training epoch (landmark images: once).
    wider_repeat: int = 1
    _order: tuple[int, np.ndarray] | None = field(default=None, init=False, repr=False)  # (epoch, permutation)

    def __post_init__(self) -> None:
        if not len(self.index):
            raise ValueError("the face index holds no image")
        if self.batch_size < 1 or self.seed < 0:
            raise ValueError(f"batch_size must be >= 1 and seed >= 0, got {self.batch_size} and {self.seed}")
        if isinstance(self.wider_repeat, bool) or not isinstance(self.wider_repeat, int) or self.wider_repeat < 1:
            raise ValueError(f"wider_repeat must be a whole number >= 1, got {self.wider_repeat!r}")
        repeats = [self.wider_repeat if r.source == "wider" else 1 for r in self.index.records]
        self._epoch_items = np.repeat(np.arange(len(self.index)), repeats)  # index positions of one epoch

    def positions(self, iteration: int) -> np.ndarray:
        """Index positions of the images of batch ``iteration``."""
        steps = iteration * self.batch_size + np.arange(self.batch_size)
        if not self.train:
            return steps % len(self.index)
        count = len(self._epoch_items)
        out = np.empty(self.batch_size, np.int64)
        for j, step in enumerate(steps):
            epoch, pos = divmod(int(step), count)
            if self._order is None or self._order[0] != epoch:
                self._order = (epoch, self._epoch_items[np.random.default_rng([self.seed, epoch]).permutation(count)])
            out[j] = self._order[1][pos]
        return out

    def passes(self) -> int:
        """Batches that cover the index once (the last one wraps around)."""
        return math.ceil(len(self.index) / self.batch_size)

    def samples(self, iteration: int) -> tuple[list[np.ndarray], list[FaceTruth], Counter]:
        """The images (augmented ``S x S``, or as read for the test transform) and faces of a batch."""
        images, truths, counts = [], [], Counter()
        for j, pos in enumerate(self.positions(iteration)):
            rng = np.random.default_rng([self.seed, iteration, j]) if self.augment else None
            image, truth, stats = load_sample(self.index.records[pos], rng, self.config)
            images.append(image)
            truths.append(truth)
            counts.update(stats)
        return images, truths, counts

    def batch(self, iteration: int) -> tuple[np.ndarray, np.ndarray, Counter]:
        """``(data (N, 3, S, S), gt (1, 1, rows, 17), counts)`` of batch ``iteration``."""
        images, truths, counts = self.samples(iteration)
        return to_blob(images, self.config.size), pack_ground_truth(truths), counts


def _batches_from_params(text: str, caffe_phase: int) -> FaceBatches:
    params = layer_params("FaceDataLayer", text)
    unknown = set(params) - set(PARAM_KEYS)
    if unknown:
        raise ValueError(f"FaceDataLayer: unknown param_str keys {sorted(unknown)} (known: {', '.join(PARAM_KEYS)})")
    if "index" not in params:
        raise ValueError("FaceDataLayer: param_str needs 'index' (a train_index.jsonl of build_face_index)")
    phase = params.get("phase", "train" if caffe_phase == caffe.TRAIN else "test")
    if phase not in PHASES:
        raise ValueError(f"FaceDataLayer: phase must be 'train' or 'test', got {phase!r}")
    size = int(params.get("size", INPUT_SIZE))
    if size < 32:
        raise ValueError(f"FaceDataLayer: size must be at least 32, got {size}")
    return FaceBatches(read_face_index(Path(params["index"])), int(params.get("batch_size", 16)),
                       int(params.get("seed", 0)), phase == "train", bool(params.get("augment", phase == "train")),
                       AugmentConfig(size=size), params.get("wider_repeat", 1))


class FaceDataLayer(caffe.Layer):
    """Face training batches (``data``, ``gt``) from a face index; see the module doc."""

    def setup(self, bottom, top):
        if len(bottom):
            raise ValueError("FaceDataLayer takes no bottoms")
        if len(top) != len(TOP_NAMES):
            raise ValueError(f"FaceDataLayer has {len(TOP_NAMES)} tops ({', '.join(TOP_NAMES)}), got {len(top)}")
        self.batches = _batches_from_params(self.param_str, self.phase)
        self.iteration = 0
        self.counts: Counter = Counter()
        self._ready: tuple[int, np.ndarray, np.ndarray] | None = None

    def set_iteration(self, iteration: int) -> None:
        """Continue with the batch of ``iteration`` (resume; ``0`` restarts a test pass)."""
        self.iteration = int(iteration)

    def val_batches(self) -> int:
        """Forward passes that cover the index once (the last batch wraps around; MTCNN's layer protocol)."""
        return self.batches.passes()

    @property
    def val_count(self) -> int:
        """Images in the index (the rows of :meth:`val_batches` passes that are not wrap-around)."""
        return len(self.batches.index)

    def reshape(self, bottom, top):
        # The batch is made here, so the ground-truth rows are known when Caffe sizes the tops.
        if self._ready is None or self._ready[0] != self.iteration:
            data, gt, counts = self.batches.batch(self.iteration)
            self.counts.update(counts)
            self._ready = (self.iteration, data, gt)
        top[0].reshape(*self._ready[1].shape)
        top[1].reshape(*self._ready[2].shape)

    def forward(self, bottom, top):
        _, data, gt = self._ready
        top[0].data[...] = data
        top[1].data[...] = gt
        self.iteration += 1

    def backward(self, top, propagate_down, bottom):
        pass


__all__ = ["GT_WIDTH", "PARAM_KEYS", "TOP_NAMES", "FaceBatches", "FaceDataLayer", "load_sample"]
