"""SSD training and testing in real Caffe: ``ssd-mobilenet train`` / ``test``, the mAP from Caffe's
``DetectionEvaluate`` against the Python VOC evaluator, the head/prior check, and refused inputs."""
from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_common.eval.voc import read_image_set, read_voc_xml
from caffe_common.model_files import TEST_PHASE, TRAIN_PHASE, read_net_prototxt
from ssd_mobilenet.annotated_lmdb import AnnotatedImage, LabeledBox, write_annotated_lmdb
from ssd_mobilenet.cli import main as ssd_main
from ssd_mobilenet.heads import HeadMismatchError, check_heads_match_priors, priors_per_cell
from ssd_mobilenet.labelmap import write_labelmap
from tests.conftest import write_prototxt


# --------------------------------------------------------------------------- fixtures
def _voc_lmdb(voc: Path, split: str, out: Path, limit: int | None = None) -> Path:
    """An AnnotatedDatum LMDB of a VOC split, boxes normalised as SSD's converter does (pixel / size)."""
    names = [n.strip() for n in (voc / "labels.txt").read_text().splitlines() if n.strip()]
    items = []
    for image_id in read_image_set(voc, split)[:limit]:
        objects = read_voc_xml(voc / "Annotations" / f"{image_id}.xml")
        path = voc / "JPEGImages" / f"{image_id}.jpg"
        h, w = cv2.imread(str(path)).shape[:2]
        items.append(AnnotatedImage(path, [
            LabeledBox(names.index(c) + 1, b[0] / w, b[1] / h, min(b[2] / w, 1.0), min(b[3] / h, 1.0), bool(d))
            for c, b, d in zip(objects.classes, objects.boxes, objects.difficult)]))
    write_annotated_lmdb(out, items)
    return out


@pytest.fixture(scope="module")
def voc_data(shared_dir, tmp_path_factory):
    """voc_mini as LMDBs: 24 trainval images, the 7 test images, and the label map."""
    voc = shared_dir / "data" / "voc_mini"
    root = tmp_path_factory.mktemp("voc_lmdb")
    names = [n.strip() for n in (voc / "labels.txt").read_text().splitlines() if n.strip()]
    return {"voc": voc, "train": _voc_lmdb(voc, "trainval", root / "trainval_lmdb", limit=24),
            "test": _voc_lmdb(voc, "test", root / "test_lmdb"),
            "labelmap": write_labelmap(root / "labelmap.prototxt", names), "root": root}


@pytest.fixture(scope="module")
def small_model(voc_data, tmp_path_factory):
    """A width-0.5 MobileNet-SSD (21 classes) reading the voc_mini LMDBs, batch 2."""
    from ssd_mobilenet.model import resolve_config, write_model

    config, notes = resolve_config(21, train_lmdb=voc_data["train"], test_lmdb=voc_data["test"],
                                   labelmap=voc_data["labelmap"], width=0.5)
    out = tmp_path_factory.mktemp("small_model")
    write_model(replace(config, train_batch_size=2), out, notes)
    return out


# --------------------------------------------------------------------------- heads vs priors
@pytest.mark.parametrize("params", [
    'min_size: 30 aspect_ratio: 2 flip: true',
    'min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true',
    'min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 2 aspect_ratio: 1 flip: false',
    'min_size: 20 min_size: 40 max_size: 50 max_size: 80 aspect_ratio: 3 flip: true',
])
def test_priors_per_cell_equals_caffe_prior_box(caffe, tmp_path, params):
    text = f"""input: "data" input_shape {{ dim: 1 dim: 3 dim: 60 dim: 60 }}
input: "feat" input_shape {{ dim: 1 dim: 8 dim: 5 dim: 7 }}
layer {{ name: "p" type: "PriorBox" bottom: "feat" bottom: "data" top: "p"
  prior_box_param {{ {params} variance: 0.1 }} }}"""
    path = write_prototxt(tmp_path, text)
    net = caffe.Net(path, caffe.TEST)
    layer = next(layer for layer in read_net_prototxt(path).layer if layer.type == "PriorBox")
    assert net.blobs["p"].data.shape[2] == 5 * 7 * priors_per_cell(layer) * 4


def test_reference_and_generated_heads_match_their_priors(shared_dir, small_model):
    ref = shared_dir / "reference" / "mobilenet_ssd"
    for path in [*ref.glob("MobileNetSSD_*.prototxt"), *small_model.glob("MobileNetSSD_*.prototxt")]:
        for phase in (TRAIN_PHASE, TEST_PHASE):
            check_heads_match_priors(read_net_prototxt(path), path, phase)


@pytest.mark.parametrize("layer, outputs, expected", [
    ("conv13_mbox_conf", 6 * 22, r"'conv13_mbox_conf' has num_output 132.*6 boxes per cell.*126.*predicts 22 classes"),
    ("conv11_mbox_loc", 16, r"location head 'conv11_mbox_loc' has num_output 16.*3 boxes per cell.*= 12"),
])
def test_a_head_that_does_not_fit_its_priors_is_named(shared_dir, layer, outputs, expected):
    path = shared_dir / "reference" / "mobilenet_ssd" / "MobileNetSSD_deploy_nobn.prototxt"
    net = read_net_prototxt(path)
    next(item for item in net.layer if item.name == layer).convolution_param.num_output = outputs
    with pytest.raises(HeadMismatchError, match=expected):
        check_heads_match_priors(net, path, TEST_PHASE)


# --------------------------------------------------------------------------- DetectionEvaluate vs VOC
def test_detection_evaluate_and_python_voc_agree_on_a_detector_with_hits_misses_and_duplicates(
        caffe, voc_data, tmp_path):
    """Jittered ground truth as detections (tests.caffe_test_layers): Caffe marks them, the devkit
    evaluation of the same detections in pixels must give the same AP per class within 0.001."""
    from ssd_mobilenet.evaluation import SsdTester, TestNetLayout, class_names, read_test_set, run_test_pass, \
        write_name_size

    images = read_test_set(voc_data["test"])
    name_size = write_name_size(tmp_path / "name_size.txt", images)
    text = f"""
layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ resize_param {{ prob: 1 resize_mode: WARP height: 64 width: 64 interp_mode: LINEAR }} }}
  data_param {{ source: "{voc_data['test']}" batch_size: 1 backend: LMDB }} }}
layer {{ name: "det" type: "Python" bottom: "label" top: "detection_out"
  python_param {{ module: "tests.caffe_test_layers" layer: "JitteredGroundTruthDetections" }} }}
layer {{ name: "eval" type: "DetectionEvaluate" bottom: "detection_out" bottom: "label" top: "detection_eval"
  detection_evaluate_param {{ num_classes: 21 background_label_id: 0 overlap_threshold: 0.5
    evaluate_difficult_gt: false name_size_file: "{name_size}" }} }}
layer {{ name: "silence" type: "Silence" bottom: "data" }}"""
    net = caffe.Net(write_prototxt(tmp_path, text), caffe.TEST)
    layout = TestNetLayout("data", voc_data["test"], voc_data["labelmap"], "detection_out", "detection_eval",
                           21, 0, 0.5, False)
    names = class_names(voc_data["labelmap"], 21, 0)
    for ground_truth in (voc_data["voc"], None):          # the XML files, then the LMDB's own boxes
        for _ in range(2):                                  # different jitter on the second pass
            result = run_test_pass(net, layout, images, names, voc_root=ground_truth)
            scored = [c for c in result.classes.values() if c.positives]
            assert len(scored) == 8
            for c in scored:
                assert abs(c.caffe_ap - c.python_ap) <= 1e-3, (c.name, c.caffe_ap, c.python_ap)
            assert 0.2 < result.caffe_map < 0.999 and abs(result.caffe_map - result.python_map) <= 1e-3
            assert any(0 < c.python_ap < 1 for c in scored)
            assert result.caffe_solver_map == pytest.approx(sum(c.caffe_ap for c in result.classes.values()) / 20)
    assert SsdTester  # the class the CLI uses is importable with the functions above


# --------------------------------------------------------------------------- the commands
def _log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_resume_and_test_commands(small_model, voc_data, tmp_path, capsys):
    out = tmp_path / "run"
    solver = small_model / "solver_train.prototxt"
    assert ssd_main(["train", "--solver", str(solver), "--out", str(out), "--max-iter", "10", "--test-every", "5",
                     "--seed", "3", "--base-lr", "0.001", "--no-progress"]) == 0
    rows = _log(out / "log.csv")
    assert [int(r["iter"]) for r in rows] == list(range(1, 11))
    assert [r["map"] != "" for r in rows] == [i in (5, 10) for i in range(1, 11)]
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])           # it learns from the first iterations on
    assert float(rows[0]["samples_per_s"]) > 0 and (out / "loss.png").is_file()
    assert ssd_main(["train", "--solver", str(solver), "--out", str(out), "--resume", str(out), "--max-iter", "12",
                     "--test-every", "5", "--no-progress"]) == 0
    assert [int(r["iter"]) for r in _log(out / "log.csv")][-3:] == [10, 11, 12]
    weights = out / "snapshots" / "iter_12.caffemodel"
    assert weights.is_file()

    capsys.readouterr()
    test_out = tmp_path / "test"
    assert ssd_main(["test", "--model", str(small_model / "MobileNetSSD_test.prototxt"), "--weights", str(weights),
                     "--voc", str(voc_data["voc"]), "--out", str(test_out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "DetectionEvaluate" in printed and "Python VOC" in printed
    report = json.loads((test_out / "test.json").read_text())
    assert report["images"] == 7
    maps = report["map_voc07_11point"]
    assert abs(maps["detection_evaluate"] - maps["python_voc"]) <= 1e-3
    files = sorted(p.name for p in (test_out / "detections").iterdir())
    assert len(files) == 20 and "comp4_det_test_person.txt" in files
    first = (test_out / "detections" / "comp4_det_test_person.txt").read_text().split("\n")[0].split()
    assert first[0] in read_image_set(voc_data["voc"], "test") and len(first) == 6


# --------------------------------------------------------------------------- refused inputs
def _edited(src: Path, dst: Path, *replacements: tuple[str, str]) -> Path:
    """Copy a generated model folder with text replacements in every prototxt."""
    dst.mkdir()
    for path in src.glob("*.prototxt"):
        text = path.read_text()
        for old, new in replacements:
            text = re.sub(old, new, text)
        (dst / path.name).write_text(text.replace(str(src), str(dst)))
    return dst


def _train_error(solver: Path, out: Path, capsys) -> str:
    capsys.readouterr()
    assert ssd_main(["train", "--solver", str(solver), "--out", str(out), "--max-iter", "1", "--no-progress"]) == 2
    return capsys.readouterr().err


def test_a_label_map_with_another_class_count_is_refused_naming_the_file(small_model, voc_data, tmp_path, capsys):
    labelmap = write_labelmap(tmp_path / "labelmap19.prototxt", [f"c{k}" for k in range(19)])
    model = _edited(small_model, tmp_path / "m", (r'label_map_file: "[^"]*"', f'label_map_file: "{labelmap}"'))
    err = _train_error(model / "solver_train.prototxt", tmp_path / "out", capsys)
    assert str(labelmap) in err and "20 classes" in err and "--classes 20" in err


def test_lmdb_labels_outside_the_classes_are_refused(small_model, voc_data, tmp_path, capsys):
    model = _edited(small_model, tmp_path / "m", (r"num_classes: 21", "num_classes: 5"),
                    (r"num_output: 126", "num_output: 30"), (r"num_output: 63", "num_output: 15"),
                    (r'label_map_file: "[^"]*"\n', ""))
    err = _train_error(model / "solver_train.prototxt", tmp_path / "out", capsys)
    assert "object labels" in err and "outside 1 .. 4" in err and str(voc_data["train"]) in err


def test_heads_that_do_not_fit_the_priors_are_refused_before_caffe(small_model, tmp_path, capsys):
    model = _edited(small_model, tmp_path / "m", (r"num_output: 126", "num_output: 132"))
    err = _train_error(model / "solver_train.prototxt", tmp_path / "out", capsys)
    assert "confidence head 'conv13_mbox_conf'" in err and "needs 6 x 21" in err


def test_a_test_net_on_the_train_lmdb_is_refused(small_model, voc_data, tmp_path, capsys):
    model = _edited(small_model, tmp_path / "m", (str(voc_data["test"]), str(voc_data["train"])))
    err = _train_error(model / "solver_train.prototxt", tmp_path / "out", capsys)
    assert "reads the train LMDB" in err and "--test-every 0" in err


def test_test_refuses_weights_that_do_not_fit(small_model, tmp_path, capsys, caffe):
    other = tmp_path / "other.caffemodel"
    net = caffe.Net(str(other_conv0_net(tmp_path)), caffe.TEST)
    net.save(str(other))
    capsys.readouterr()
    assert ssd_main(["test", "--model", str(small_model / "MobileNetSSD_test.prototxt"), "--weights", str(other),
                     "--out", str(tmp_path / "t"), "--no-progress"]) == 2
    assert "conv0" in capsys.readouterr().err
    assert ssd_main(["test", "--model", str(small_model / "MobileNetSSD_test.prototxt"), "--weights",
                     str(tmp_path / "missing.caffemodel"), "--out", str(tmp_path / "t"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def other_conv0_net(tmp_path: Path) -> str:
    """A net with a 'conv0' of another shape than MobileNet-SSD's."""
    return write_prototxt(tmp_path, """input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv0" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 5 kernel_size: 3 } }""",
                          "other.prototxt")
