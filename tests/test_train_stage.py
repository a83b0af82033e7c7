"""``mtcnn-caffe train`` end to end on a small synthetic pack: the loss falls, the deploy pair plugs into the
detector, resume continues the same run, and bad inputs are refused before Caffe sees them."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from mtcnn_caffe.cli import main
from mtcnn_caffe.data import pack
from mtcnn_caffe.data.landmarks import LandmarkParams
from mtcnn_caffe.data.tasks import LandmarkTask, WiderCropTask, generate
from mtcnn_caffe.data.wider import CropParams
from mtcnn_caffe.train.stage import StageError, train_stage

from .test_data_samples import make_landmarks, make_wider


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stagepacks")
    anno, images = make_wider(root / "wider")
    lst, lm_root = make_landmarks(root / "lm")
    for size in (12, 24):
        generate(WiderCropTask(anno, images, size, CropParams()), root / f"w{size}", jobs=1, progress=False)
        generate(LandmarkTask(lst, lm_root, size, LandmarkParams()), root / f"l{size}", jobs=1, progress=False)
        pack.pack_stage(size, [root / f"w{size}", root / f"l{size}"], root / f"p{size}", ratio="all", progress=False)
    pack.pack_stage(12, [root / "w12"], root / "p12_nolandmarks", ratio="all", progress=False)
    return root


def rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_cli_trains_pnet_with_falling_loss_and_a_deploy_pair(packs, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", "12", "--data", str(packs / "p12"), "--out", str(out), "--max-iter", "120",
                   "--batch", "64", "--base-lr", "0.05", "--no-progress"])
    assert status == 0
    log = rows(out / "log.csv")
    assert {"iter", "lr", "loss_cls", "loss_box", "loss_landmark", "samples_per_s", "val_pos_recall",
            "val_neg_acc", "val_box_l2", "val_landmark_nme"} <= set(log[0])
    first = np.mean([float(r["loss_cls"]) for r in log[:10]])
    last = np.mean([float(r["loss_cls"]) for r in log[-10:]])
    assert last < 0.8 * first
    assert "det1: 120 iterations" in capsys.readouterr().out
    from mtcnn_caffe import MtcnnDetector

    detector = MtcnnDetector(weights_dir=out)   # det1 only: stage 1 of the detector
    boxes, _ = detector.detect_arrays(np.full((60, 80, 3), 128, np.uint8), stages=1)
    assert boxes.ndim == 2


def test_interrupted_stage_resumes_with_the_same_losses(packs, tmp_path, monkeypatch):
    from caffe_common.solver import TrainingInterrupted
    from mtcnn_caffe.train import stage

    common = dict(max_iter=12, batch_size=32, seed=4, progress=False, validate_every=6)
    whole = train_stage(12, packs / "p12", tmp_path / "whole", **common)
    real_call = stage.HeldOutValidator.__call__

    def ctrl_c_at_6(self, net, iteration=0):
        if iteration == 6:
            raise KeyboardInterrupt
        return real_call(self, net, iteration)

    monkeypatch.setattr(stage.HeldOutValidator, "__call__", ctrl_c_at_6)
    with pytest.raises(TrainingInterrupted) as info:
        train_stage(12, packs / "p12", tmp_path / "parts", **common)
    assert info.value.resume_from.name == "iter_6.solverstate"
    monkeypatch.setattr(stage.HeldOutValidator, "__call__", real_call)
    resumed = train_stage(12, packs / "p12", tmp_path / "parts", resume=tmp_path / "parts", **common)
    assert resumed.iterations == 12
    a, b = rows(whole.log), rows(resumed.log)
    assert [r["iter"] for r in a] == [r["iter"] for r in b]
    for column in ("lr", "loss_cls", "loss_box", "loss_landmark"):
        np.testing.assert_allclose([float(r[column]) for r in a], [float(r[column]) for r in b], rtol=1e-4)
    np.testing.assert_allclose(float(a[-1]["val_box_l2"]), float(b[-1]["val_box_l2"]), rtol=1e-4)


@pytest.mark.parametrize("case, message", [
    ("wrong stage", "holds 24x24 records, the 12 stage needs 12x12"),
    ("missing", "--data"),
    ("no landmarks", "needs landmark samples"),
    ("bad mix", "--mix"),
])
def test_bad_packs_and_mixes_are_refused_before_training(packs, tmp_path, case, message):
    data = {"wrong stage": packs / "p24", "missing": tmp_path / "nothing", "no landmarks": packs / "p12_nolandmarks",
            "bad mix": packs / "p12"}[case]
    options = {"mix": "3:1:x:2"} if case == "bad mix" else {}
    with pytest.raises(StageError, match=message):
        train_stage(12, data, tmp_path / "out", max_iter=5, batch_size=32, progress=False, **options)
    assert not (tmp_path / "out" / "snapshots").exists()


def test_init_weights_of_another_net_name_the_layer(packs, tmp_path, capsys):
    from mtcnn_caffe.nets.weights import DEFAULT_WEIGHTS_DIR, default_weights_ready

    if not default_weights_ready():
        pytest.skip("default weights not converted (run make setup)")
    status = main(["train", "12", "--data", str(packs / "p12"), "--out", str(tmp_path / "o"), "--max-iter", "3",
                   "--init", str(DEFAULT_WEIGHTS_DIR / "det2.caffemodel"), "--no-progress", "--batch", "32"])
    err = capsys.readouterr().err
    assert status == 2 and "--init weights do not fit" in err and "layer 'conv1'" in err
    # the official P-Net loads (its missing landmark head keeps its fillers) and fine-tunes
    status = main(["train", "12", "--data", str(packs / "p12"), "--out", str(tmp_path / "ok"), "--max-iter", "3",
                   "--init", str(DEFAULT_WEIGHTS_DIR / "det1.caffemodel"), "--no-progress", "--batch", "32"])
    assert status == 0


def test_fine_tuning_without_a_landmark_head_leaves_the_pretrained_layers_to_the_real_tasks(packs, tmp_path, capsys):
    # The official P-Net has no landmark head: fine-tuned from it, the fresh head's loss is off (weight 0, so
    # Caffe sends it no gradient) unless --loss-weights says otherwise; from scratch it trains as usual.
    from caffe_common.model_files import read_net_prototxt
    from mtcnn_caffe.nets.weights import DEFAULT_WEIGHTS_DIR, default_weights_ready

    if not default_weights_ready():
        pytest.skip("default weights not converted (run make setup)")

    def landmark_weight(out):
        layers = {layer.name: layer for layer in read_net_prototxt(out / "train.prototxt").layer}
        return layers["loss_landmark"].loss_weight[0]

    common = ["--data", str(packs / "p12"), "--max-iter", "2", "--no-progress", "--batch", "32"]
    init = ["--init", str(DEFAULT_WEIGHTS_DIR / "det1.caffemodel")]
    assert main(["train", "12", *common, *init, "--out", str(tmp_path / "tuned")]) == 0
    assert "has no landmark head" in capsys.readouterr().err and landmark_weight(tmp_path / "tuned") == 0
    assert main(["train", "12", *common, *init, "--loss-weights", "1", "0.5", "0.25", "--out", str(tmp_path / "asked")]) == 0
    assert "no landmark head" not in capsys.readouterr().err and landmark_weight(tmp_path / "asked") == 0.25
    assert main(["train", "12", *common, "--out", str(tmp_path / "scratch")]) == 0
    assert landmark_weight(tmp_path / "scratch") == 0.5
    assert main(["train", "12", *common, "--loss-weights", "0", "0", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--loss-weights" in capsys.readouterr().err
