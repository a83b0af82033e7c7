"""Training and inference agree: the official weights, run by the *training* nets on freshly generated
validation records, score high; a deliberately wrong convention scores clearly worse."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mtcnn_caffe.data import pack
from mtcnn_caffe.data.landmarks import LandmarkParams
from mtcnn_caffe.data.records import landmarks_from_net_order
from mtcnn_caffe.data.tasks import LandmarkTask, WiderCropTask, generate
from mtcnn_caffe.data.wider import CropParams
from mtcnn_caffe.nets.train import RECIPES, train_net
from mtcnn_caffe.nets.weights import DEFAULT_WEIGHTS_DIR, default_weights_ready
from mtcnn_caffe.train.stage import HeldOutValidator, held_out_figures

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def official(shared_dir):
    if not default_weights_ready():
        pytest.skip("default weights not converted (run make setup)")
    return shared_dir


def validator_for(tmp_path, shared_dir, size: int, limit: int, transform=None) -> HeldOutValidator:
    wider = shared_dir / "data" / "wider_train_subset"
    marks = shared_dir / "data" / "landmarks_5pt"
    task = WiderCropTask(wider / "wider_face_split" / "wider_face_train_bbx_gt.txt", wider / "WIDER_train" / "images",
                         size, CropParams(), limit)
    generate(task, tmp_path / "random", jobs=1, progress=False)
    generate(LandmarkTask(marks / "testImageList.txt", marks, size, LandmarkParams(), 150), tmp_path / "marks",
             jobs=1, progress=False)
    pack.pack_stage(size, [tmp_path / "random", tmp_path / "marks"], tmp_path / "pack", ratio="all", progress=False)
    recipe = RECIPES[size].with_options(source=str(tmp_path / "pack"), batch_size=64)
    val = tmp_path / "val.prototxt"
    val.write_text(str(train_net(recipe, "val")))
    return HeldOutValidator(val, recipe.stage, transform)


def untransposed(blob: np.ndarray) -> np.ndarray:
    return blob.transpose(0, 1, 3, 2).copy()   # the row-major layout the official weights were not trained on


def test_pnet_official_weights_score_high_only_with_the_right_convention(official, tmp_path):
    right = validator_for(tmp_path / "a", official, 12, 40).figures_of_weights(DEFAULT_WEIGHTS_DIR / "det1.caffemodel")
    wrong = validator_for(tmp_path / "b", official, 12, 40, untransposed).figures_of_weights(
        DEFAULT_WEIGHTS_DIR / "det1.caffemodel")
    assert right["val_pos_recall"] > 0.75 and right["val_neg_acc"] > 0.97 and right["val_box_l2"] < 0.3
    assert wrong["val_pos_recall"] < right["val_pos_recall"] - 0.2
    assert wrong["val_box_l2"] > right["val_box_l2"] + 0.05


def test_onet_official_landmarks_need_the_net_order_and_the_transpose(official, tmp_path):
    validator = validator_for(tmp_path / "a", official, 48, 25)
    validator.figures_of_weights(DEFAULT_WEIGHTS_DIR / "det3.caffemodel")
    stacked = validator.collect()
    right = held_out_figures(stacked)
    interleaved = held_out_figures({**stacked, "pts": landmarks_from_net_order(stacked["pts"])})
    wrong = validator_for(tmp_path / "b", official, 48, 25, untransposed).figures_of_weights(
        DEFAULT_WEIGHTS_DIR / "det3.caffemodel")
    assert right["val_pos_recall"] > 0.9 and right["val_neg_acc"] > 0.9
    assert math.isfinite(right["val_landmark_nme"]) and right["val_landmark_nme"] < 0.15
    assert interleaved["val_landmark_nme"] > 3 * right["val_landmark_nme"]
    assert wrong["val_landmark_nme"] > 2 * right["val_landmark_nme"]
