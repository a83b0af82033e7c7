"""Hard examples for R-Net (24) and O-Net (48): what the previous stage(s) detect, labelled by IoU.

The detector runs exactly as at inference (``MtcnnDetector.detect_arrays`` with
``stages=1`` for 24-net data, ``stages=2`` for 48-net data); each detection becomes the
crop the next stage would cut from it (the detector's truncation, zero padding where it
leaves the image, ``INTER_AREA`` resize) and is labelled with the same IoU rules as the
random crops. Negatives per image are capped (a random, seeded subset) since a weak detector
returns many.

Memory: Caffe keeps every blob (and each convolution's im2col buffer) at the largest shape a
net has seen, so a P-Net run over the first pyramid level of a 1024 px WIDER image holds
~250 MiB. Mining runs P-Net in tiles of :data:`MINING_PNET_TILE` px instead (the detector's
exact tiling: same boxes, bit for bit, about the same speed), which caps a Caffe mining
process at about 0.25 GiB (24-net data) / 0.37 GiB (48-net data, R-Net batches included) on
WIDER-sized images, whatever the dataset size (``bench/RESULTS.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..detect import defaults
from .crops import DISCARD, detector_crop_boxes, label_crops
from .records import NEGATIVE
from .wider import FaceSelection, make_samples

#: Output size of a stage -> ``stages`` argument of the detector that feeds it.
STAGES_FOR_SIZE = {24: 1, 48: 2}
#: P-Net input tile side while mining (bounds Caffe's buffers; see the module docstring).
MINING_PNET_TILE = 256


class Detector(Protocol):
    """What mining needs from a detector (``mtcnn_caffe.MtcnnDetector`` satisfies it)."""

    def detect_arrays(self, image_bgr: np.ndarray, stages: int = 3) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class MiningParams:
    """Detector settings and per-image caps for hard-example mining."""

    weights_dir: str | None = None
    min_size: float = defaults.MIN_SIZE
    factor: float = defaults.FACTOR
    thresholds: tuple[float, float, float] = defaults.THRESHOLDS
    backend: str = "caffe"  # or "opencv": the same nets through OpenCV DNN (faster, less memory)
    max_neg_per_image: int = 60
    min_box: int = 12
    min_face: float = 20.0
    keep_invalid: bool = False


def make_detector(params: MiningParams) -> Detector:
    """The project's detector with the mining settings, P-Net tiled (imports Caffe for that backend)."""
    from .. import MtcnnDetector

    return MtcnnDetector(weights_dir=params.weights_dir, min_size=params.min_size, factor=params.factor,
                         thresholds=tuple(params.thresholds), backend=params.backend, pnet_tile=MINING_PNET_TILE)


def label_detections(boxes: np.ndarray, selection: FaceSelection, rng: np.random.Generator,
                     params: MiningParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label the crops the next stage would cut; returns ``crops, labels, best face, IoU`` of kept ones."""
    crops = detector_crop_boxes(boxes)
    crops = crops[np.minimum(crops[:, 2] - crops[:, 0], crops[:, 3] - crops[:, 1]) >= params.min_box]
    labels, best, ious = label_crops(crops, selection.boxes, selection.usable)
    negatives = np.flatnonzero(labels == NEGATIVE)
    if len(negatives) > params.max_neg_per_image:
        chosen = rng.choice(negatives, params.max_neg_per_image, replace=False)
        drop = np.setdiff1d(negatives, chosen)
        labels = labels.copy()
        labels[drop] = DISCARD
    keep = labels != DISCARD
    return crops[keep], labels[keep], best[keep], ious[keep]


def hard_example_samples(image: np.ndarray, selection: FaceSelection, detector: Detector, size: int,
                         rng: np.random.Generator, params: MiningParams, image_index: int = 0) -> np.ndarray:
    """Samples of one image from the detections of the stage(s) before ``size``."""
    if size not in STAGES_FOR_SIZE:
        raise ValueError(f"hard examples are made for 24 or 48 (R-Net/O-Net), not {size}")
    boxes, _ = detector.detect_arrays(image, stages=STAGES_FOR_SIZE[size])
    crops, labels, best, ious = label_detections(boxes, selection, rng, params)
    return make_samples(image, crops, labels, best, ious, selection.boxes, size, image_index)
