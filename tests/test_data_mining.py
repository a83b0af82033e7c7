"""Hard-example mining: the labelling logic with a stand-in detector (no Caffe claimed), and the
real detector (Caffe, default weights) on shared WIDER images."""
from __future__ import annotations

import numpy as np
import pytest

from mtcnn_caffe.annotations import read_wider_gt
from caffe_common.boxes import iou_matrix
from mtcnn_caffe.data.crops import DISCARD, crop_resized
from mtcnn_caffe.data.mining import MINING_PNET_TILE, MiningParams, label_detections
from mtcnn_caffe.data.pipeline import image_rng, open_sample_dir
from mtcnn_caffe.data.records import NEGATIVE, PART, POSITIVE
from mtcnn_caffe.data.tasks import HardExampleTask, generate
from mtcnn_caffe.data.wider import select_faces

from .test_data_samples import make_wider


class StandInDetector:
    """Returns fixed boxes in the detector's output convention (0-based inclusive pixels, score)
    and records the calls: for testing the labelling logic only, not Caffe."""

    def __init__(self, boxes: np.ndarray):
        self.boxes = np.asarray(boxes, np.float64)
        self.calls: list[int] = []

    def detect_arrays(self, image_bgr, stages=3):
        self.calls.append(stages)
        return self.boxes.copy(), np.zeros((len(self.boxes), 5, 2))


def _detections() -> np.ndarray:
    # face 0 of ev/a.png is x 40..110, y 30..110 (continuous) = pixels 40..109, 30..109
    return np.array([
        [40, 30, 109, 109, 0.99],      # exactly the face -> pos
        [45, 35, 119.6, 114.2, 0.9],   # shifted -> pos or part, truncated like the detector
        [60, 50, 139, 129, 0.8],       # half off -> part or neg region
        [-10, -8, 20, 22, 0.7],        # leaves the image: kept, zero-padded
        [149, 199, 159, 211, 0.7],     # on the tiny (ignored) face -> never a negative
        [5, 5, 10, 10, 0.6],           # smaller than min_box -> dropped
    ] + [[250 + k, 5, 290 + k, 45, 0.5] for k in range(10)])  # background -> negatives


def test_label_detections_rules_and_negative_cap(tmp_path):
    anno, _ = make_wider(tmp_path)
    sel = select_faces(read_wider_gt(anno).items[0], min_face=20)
    params = MiningParams(max_neg_per_image=4, min_box=12)
    crops, labels, best, ious = label_detections(_detections(), sel, np.random.default_rng(0), params)
    assert DISCARD not in labels
    np.testing.assert_array_equal(crops[0], [40, 30, 110, 110])
    assert labels[0] == POSITIVE and ious[0] == pytest.approx(1.0)
    assert not any((c == [149, 199, 160, 212]).all() for c in crops)  # the ignored face gives nothing
    assert not any((c[2] - c[0]) < 12 for c in crops)
    assert (labels == NEGATIVE).sum() == 4  # capped at max_neg_per_image
    full = iou_matrix(crops, sel.boxes).max(axis=1)
    np.testing.assert_allclose(full, ious)
    assert (full[labels == POSITIVE] >= 0.65).all() and (full[labels == NEGATIVE] < 0.3).all()
    assert ((full[labels == PART] >= 0.4) & (full[labels == PART] < 0.65)).all()
    again = label_detections(_detections(), sel, np.random.default_rng(0), params)
    np.testing.assert_array_equal(again[0], crops)  # the negative subset depends on the rng only


def test_hard_example_task_with_stand_in_detector(tmp_path):
    anno, images = make_wider(tmp_path / "wider")
    fake = StandInDetector(_detections())
    task = HardExampleTask(anno, images, 48, MiningParams(max_neg_per_image=100), limit=1, detector=fake)
    stats = generate(task, tmp_path / "h48", seed=0, jobs=1, progress=False)
    assert fake.calls == [2]  # 48-net data comes from P-Net + R-Net (stages=2)
    samples = np.concatenate(list(open_sample_dir(tmp_path / "h48").iter_samples()))
    assert stats["neg"] == 11 and stats["pos"] >= 1 and len(samples) == stats["samples"]
    padded = samples[(samples["crop_box"][:, 0] < 0)]
    assert len(padded) == 1 and (padded["image"][0, :4, :4] == 0).all()  # zero padding outside the image
    regress = samples["label"] != NEGATIVE
    w = (samples["crop_box"][:, 2] - samples["crop_box"][:, 0])[:, None]
    h = (samples["crop_box"][:, 3] - samples["crop_box"][:, 1])[:, None]
    back = samples["crop_box"] + samples["bbox"] * np.hstack([w, h, w, h])
    np.testing.assert_allclose(back[regress], samples["face_box"][regress], atol=1e-3)


def test_mining_detector_tiles_pnet_without_touching_the_default():
    from mtcnn_caffe.detect import cascade as detector_module
    from mtcnn_caffe.data.mining import make_detector

    mining = make_detector(MiningParams())
    assert mining.pnet_tile == MINING_PNET_TILE < detector_module.PNET_TILE
    assert detector_module.MtcnnDetector().pnet_tile == detector_module.PNET_TILE


@pytest.mark.slow
def test_mining_with_the_real_detector_matches_its_crops(shared_dir, caffe, tmp_path):
    """24-net hard examples from the real P-Net (default weights, tiled for memory): exactly the
    labelled detections of the untiled detector, and each crop is the patch the detector itself
    feeds R-Net for that box."""
    import cv2

    from mtcnn_caffe import MtcnnDetector
    from mtcnn_caffe.detect import steps as tools

    root = shared_dir / "data" / "wider_train_subset"
    anno, images = root / "wider_face_split" / "wider_face_train_bbx_gt.txt", root / "WIDER_train" / "images"
    task = HardExampleTask(anno, images, 24, MiningParams(), limit=2)
    stats = generate(task, tmp_path / "h24", seed=0, jobs=1, progress=False)
    assert stats["failed_images"] == 0 and stats["neg"] > 0 and stats["pos"] + stats["part"] > 0
    samples = np.concatenate(list(open_sample_dir(tmp_path / "h24").iter_samples()))
    items = read_wider_gt(anno).items
    untiled = MtcnnDetector()
    for idx in range(2):
        mine = samples[samples["image_index"] == idx]
        image = cv2.imread(str(images / items[idx].name))
        assert max(image.shape[:2]) * 12 / 20 > MINING_PNET_TILE  # first pyramid level really is tiled
        sel = select_faces(items[idx], 20)
        boxes, _ = untiled.detect_arrays(image, stages=1)
        crops, labels, _, ious = label_detections(boxes, sel, image_rng(0, idx), MiningParams())
        np.testing.assert_array_equal(mine["crop_box"], crops)
        np.testing.assert_array_equal(mine["label"], labels)
        best = iou_matrix(mine["crop_box"], sel.boxes).max(axis=1)
        np.testing.assert_allclose(best, ious, rtol=1e-6)
        lab = mine["label"]
        assert (best[lab == NEGATIVE] < 0.3).all() and (best[lab == POSITIVE] >= 0.65).all()
        assert ((best[lab == PART] >= 0.4) & (best[lab == PART] < 0.65)).all()
        # the inclusive 1-based box the detector crops for R-Net = our continuous box + (1, 1, 0, 0)
        one_based = mine["crop_box"].astype(np.float64) + [1, 1, 0, 0]
        np.testing.assert_array_equal(mine["image"], tools.crop_patches(image, one_based, 24))
        np.testing.assert_array_equal(mine["image"][0], crop_resized(image, mine["crop_box"][0], 24))
