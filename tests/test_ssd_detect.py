"""SSD detection (ssd_mobilenet.detect, `ssd-mobilenet detect`, the SSD path of scripts/demo.py): the caffe
and opencv backends agree on real weights (OpenCV's res10 face SSD) and on a generated MobileNet-SSD with
random weights; res10 finds the WIDER faces only with its own preprocessing; the JSON lines; bad models
(heads that do not fit the priors, weights of another net, no DetectionOutput) and bad images are refused or
skipped by name, never an abort."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_common.boxes import iou_matrix
from caffe_common.images import read_image
from ssd_mobilenet.cli import main
from ssd_mobilenet.detect import (SsdDetector, SsdModelError, read_label_names, rows_to_detections)

REPO = Path(__file__).resolve().parents[1]
RES10_MEAN = (104.0, 117.0, 123.0)  # res10's training mean (BGR); OpenCV's samples print 177, a typo
WIDER_EVENTS = ("13--Interview", "1--Handshaking", "19--Couple", "20--Family_Group", "4--Dancing")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def res10_files():
    from caffe_common.assets import AssetError
    from ssd_mobilenet.detect import zoo_files

    try:
        return zoo_files("res10")
    except AssetError as exc:  # pragma: no cover - only without network and without `make setup`
        pytest.skip(f"res10 weights unavailable: {exc}")


@pytest.fixture(scope="module")
def res10(res10_files, caffe):
    """res10 on both backends, with its training preprocessing."""
    return {backend: SsdDetector(*res10_files, mean=RES10_MEAN, scale=1.0, backend=backend, conf=0.3,
                                 labels={1: "face"}) for backend in ("caffe", "opencv")}


def large_faces(item) -> np.ndarray:
    """WIDER faces at least 80 px wide, valid, not occluded, typical pose."""
    return (item.boxes[:, 2] >= 80) & (item.attrs[:, 3] == 0) & (item.attrs[:, 4] == 0) & (item.attrs[:, 5] == 0)


@pytest.fixture(scope="module")
def wider_photos(shared_dir):
    """The first image (by name) of each of 5 WIDER events that shows a large face, with its faces x1 y1 x2 y2."""
    from mtcnn_caffe.annotations import read_wider_gt

    root = shared_dir / "data" / "wider_train_subset"
    items = sorted(read_wider_gt(root / "wider_face_split" / "wider_face_train_bbx_gt.txt").items, key=lambda i: i.name)
    chosen = []
    for event in WIDER_EVENTS:
        item = next(i for i in items if i.name.startswith(event + "/") and large_faces(i).any())
        boxes = item.boxes.astype(np.float64)
        boxes[:, 2:] += boxes[:, :2]
        chosen.append((root / "WIDER_train" / "images" / item.name, boxes, large_faces(item)))
    return chosen


def random_weights(caffe, prototxt: Path, target: Path, seed: int = 0) -> Path:
    """He-initialised convolutions, BatchNorm statistics near (0, 1), Scale near 1: activations stay in range."""
    net = caffe.Net(str(prototxt), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 0.1, blobs[0].data.shape)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, blobs[1].data.shape)
            blobs[2].data[...] = 1
        elif kind == "Scale":
            blobs[0].data[...] = rng.uniform(0.8, 1.2, blobs[0].data.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(0, 0.1, blobs[1].data.shape)
        else:
            weights = blobs[0].data
            weights[...] = rng.normal(0, np.sqrt(2.0 / np.prod(weights.shape[1:])), weights.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(0, 0.1, blobs[1].data.shape)
    net.save(str(target))
    return target


@pytest.fixture(scope="module")
def mobilenet_ssd(tmp_path_factory, caffe):
    """A generated 3-class MobileNet-SSD deploy net (ssd_mobilenet.model) with random weights."""
    from ssd_mobilenet.model import SsdModelConfig, net_text

    root = tmp_path_factory.mktemp("mobilenet_ssd")
    prototxt = root / "MobileNetSSD_deploy.prototxt"
    prototxt.write_text(net_text(SsdModelConfig(3), "deploy"))
    return prototxt, random_weights(caffe, prototxt, root / "random.caffemodel")


def canonical_rows(rows: np.ndarray) -> np.ndarray:
    """Detection rows (score > 0) by label, then score (DetectionOutput orders them per backend)."""
    rows = rows[rows[:, 2] > 0]
    return rows[np.lexsort((rows[:, 3], -rows[:, 2], rows[:, 1]))]


def assert_same_detections(first, second, where: str) -> None:
    """Same count; each detection of ``first`` has one in ``second`` with the same label, box within 0.5 px
    and score within 1e-3 (matched by box, as two nearly equal scores may swap places)."""
    assert len(first) == len(second), where
    if not first:
        return
    a = np.array([d.box for d in first])
    b = np.array([d.box for d in second])
    distance = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)
    match = distance.argmin(axis=1)
    assert len(set(match.tolist())) == len(first), where
    assert distance[np.arange(len(first)), match].max() <= 0.5, where
    for k, j in enumerate(match):
        assert first[k].label == second[j].label, where
        assert abs(first[k].score - second[j].score) <= 1e-3, where


# --------------------------------------------------------------------------- real weights
def test_res10_backends_give_the_same_faces_on_real_photos(res10, shared_dir, wider_photos):
    photos = [shared_dir / "reference" / "mtcnn" / name for name in ("test1.jpg", "test2.jpg")]
    photos += [path for path, _, _ in wider_photos[:3]]
    found = 0
    for photo in photos:
        image = read_image(photo)
        faces = {backend: detector.detect(image) for backend, detector in res10.items()}
        assert_same_detections(faces["caffe"], faces["opencv"], photo.name)
        found += len(faces["caffe"])
        for face in faces["caffe"]:
            x1, y1, x2, y2 = face.box
            assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
            assert face.name == "face" and face.label == 1 and 0.3 <= face.score <= 1
    assert found >= 8  # 3 faces in the two test photos, at least 5 large ones in the WIDER images


def test_res10_finds_the_large_wider_faces_only_with_its_own_preprocessing(res10, res10_files, wider_photos):
    detector = res10["caffe"]
    wrong = SsdDetector(*res10_files, conf=0.5)  # MobileNet-SSD's (x - 127.5) * 0.007843: not res10's input
    large_total = large_found = wrong_found = 0
    for path, truth, large in wider_photos:
        image = read_image(path)
        faces = detector.detect(image, conf=0.5)
        boxes = np.array([f.box for f in faces]).reshape(-1, 4)
        assert len(boxes), path.name
        overlap = iou_matrix(truth, boxes)
        large_total += int(large.sum())
        large_found += int((overlap[large].max(axis=1) > 0.5).sum())
        assert (overlap.max(axis=0) > 0.5).all(), f"{path.name}: a detection that is no annotated face"
        others = np.array([f.box for f in wrong.detect(image)]).reshape(-1, 4)
        wrong_found += int((iou_matrix(truth[large], others).max(axis=1, initial=0) > 0.5).sum()) if len(others) else 0
    assert large_total >= 10
    assert large_found == large_total  # every large face found with IoU > 0.5
    assert wrong_found <= large_total // 4


# --------------------------------------------------------------------------- generated MobileNet-SSD
def test_random_mobilenet_ssd_backends_agree_on_the_detection_rows(mobilenet_ssd, shared_dir):
    image = read_image(shared_dir / "reference" / "mtcnn" / "test1.jpg")
    for size in (None, (320, 240)):  # the declared 300x300, and a net rebuilt at another input size
        detectors = {b: SsdDetector(*mobilenet_ssd, backend=b, size=size, conf=0.0) for b in ("caffe", "opencv")}
        caffe_net = detectors["caffe"]
        assert caffe_net.deploy.num_classes == 3 and caffe_net.size == (size or (300, 300))
        np.testing.assert_array_equal(caffe_net.blob(image), detectors["opencv"].blob(image))
        rows = {b: canonical_rows(d.forward_rows(image)) for b, d in detectors.items()}
        assert len(rows["caffe"]) >= 20 and rows["caffe"].shape == rows["opencv"].shape
        np.testing.assert_array_equal(rows["caffe"][:, :2], rows["opencv"][:, :2])  # image id, label
        np.testing.assert_allclose(rows["caffe"][:, 2:], rows["opencv"][:, 2:], atol=1e-4)
        assert_same_detections(caffe_net.detect(image), detectors["opencv"].detect(image), str(size))


def test_detection_rows_become_pixel_boxes():
    rows = np.array([
        [0, 2, 0.6, 0.1, 0.2, 0.5, 0.6],  # kept
        [0, 1, 0.9, -0.2, 0.5, 1.3, 1.1],  # kept, clipped to the image
        [0, -1, -1, -1, -1, -1, -1],  # Caffe's row of an image without detections
        [0, 0, 0, 0, 0, 0, 0],  # OpenCV's padding
        [0, 1, 0.2, 0.1, 0.1, 0.2, 0.2],  # below conf
        [0, 1, np.nan, 0.1, 0.1, 0.2, 0.2],  # not finite
        [0, 1, 0.8, 1.2, 0.1, 1.5, 0.2],  # outside the image
    ], np.float32)
    found = rows_to_detections(rows, 200, 100, conf=0.25, names={1: "face"})
    assert [(d.label, d.name) for d in found] == [(1, "face"), (2, "2")]  # best score first
    np.testing.assert_allclose(found[0].box, (0, 50, 200, 100), atol=1e-4)
    np.testing.assert_allclose(found[1].box, (20, 20, 100, 60), atol=1e-4)
    assert found[1].to_json() == {"label": 2, "name": "2", "score": 0.6, "box": [20.0, 20.0, 100.0, 60.0]}


def test_label_names_from_a_labelmap_or_a_names_file(tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("cat\n# a comment\ndog\n")
    assert read_label_names(names, 3) == {1: "cat", 2: "dog"}
    names.write_text("background\ncat\ndog\n")
    assert read_label_names(names, 3) == {0: "background", 1: "cat", 2: "dog"}
    labelmap = tmp_path / "labelmap.prototxt"
    labelmap.write_text('item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
                        'item { name: "n02121808" label: 1 display_name: "cat" }\n'
                        'item { name: "dog" label: 2 }\n')
    assert read_label_names(labelmap, 3) == {0: "background", 1: "cat", 2: "dog"}
    with pytest.raises(SsdModelError, match=r"labelmap\.prototxt: the label map has 3 classes .* DetectionOutput 21"):
        read_label_names(labelmap, 21)
    with pytest.raises(SsdModelError, match=r"labels\.txt: 3 names for a model with 5 classes"):
        read_label_names(names, 5)


# --------------------------------------------------------------------------- bad models
def _edited(source: Path, target: Path, old: str, new: str, after: str = "") -> Path:
    text = source.read_text()
    start = text.index(after) if after else 0
    at = text.index(old, start)
    target.write_text(text[:at] + new + text[at + len(old):])
    return target


def test_bad_models_are_refused_naming_the_file_and_layer(mobilenet_ssd, caffe, tmp_path):
    from ssd_mobilenet.model import SsdModelConfig, net_text

    prototxt, weights = mobilenet_ssd
    # conv11's conf head predicts 12 values per cell, its PriorBox makes 3 boxes of 3 classes: Caffe's
    # DetectionOutput CHECK would abort. Found in Python (ssd_mobilenet.heads), naming the head.
    heads = _edited(prototxt, tmp_path / "heads.prototxt", "num_output: 9", "num_output: 12",
                    after='name: "conv11_mbox_conf_new"')
    for backend in ("caffe", "opencv"):
        with pytest.raises(SsdModelError, match=rf"^{heads}: confidence head 'conv11_mbox_conf_new' has num_output 12, "
                                                r"but PriorBox 'conv11_mbox_priorbox' .* needs 3 x 3 values"):
            SsdDetector(heads, weights, backend=backend)
    # TensorFlow anchors: conv11's priors come from two PriorBox layers, which the Python check leaves to Caffe;
    # Caffe's own CHECK fails in the probe's child process and names the layer
    tf_net = tmp_path / "tf.prototxt"
    tf_net.write_text(net_text(SsdModelConfig(3, tf_anchors=True), "deploy"))
    tf_heads = _edited(tf_net, tmp_path / "tf_heads.prototxt", "num_output: 9", "num_output: 12",
                       after='name: "conv11_mbox_conf_new"')
    with pytest.raises(SsdModelError) as error:
        SsdDetector(tf_heads, weights, backend="opencv")
    message = str(error.value)
    assert message.startswith(f"{tf_heads}: Caffe cannot build this net: layer 'detection_out' (DetectionOutput)")
    assert "num_priors_ * num_classes_ == bottom[1]->channels() (5751 vs. 6834)" in message
    assert "mbox heads disagree" in message
    # a 4-class net: the conf heads of the 3-class weights do not fit
    four = _edited(prototxt, tmp_path / "four.prototxt", "num_classes: 3", "num_classes: 4")
    four.write_text(four.read_text().replace("num_output: 9\n", "num_output: 12\n").replace(
        "num_output: 18\n", "num_output: 24\n").replace("dim: 3\n    }\n  }\n}", "dim: 4\n    }\n  }\n}"))
    with pytest.raises(SsdModelError, match=rf"random\.caffemodel vs {four}: the weights do not match .*"
                                            r"layer 'conv11_mbox_conf_new' blob 0"):
        SsdDetector(four, weights)
    no_output = tmp_path / "no_output.prototxt"
    no_output.write_text(prototxt.read_text().split('layer {\n  name: "detection_out"')[0])
    with pytest.raises(SsdModelError, match=f"{no_output}: no DetectionOutput layer"):
        SsdDetector(no_output, weights, backend="opencv")
    gray = _edited(prototxt, tmp_path / "gray.prototxt", "dim: 3", "dim: 1")
    with pytest.raises(SsdModelError, match=r"gray\.prototxt: input 'data' has shape \(1, 1, 300, 300\)"):
        SsdDetector(gray, weights)
    with pytest.raises(ValueError, match="mean needs 1 or 3"):
        SsdDetector(prototxt, weights, mean=(1, 2))


# --------------------------------------------------------------------------- the command and the demo
@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, shared_dir):
    """Two good photos and a corrupt one."""
    root = tmp_path_factory.mktemp("ssd_photos")
    for name in ("test1.jpg", "test2.jpg"):
        (root / name).write_bytes((shared_dir / "reference" / "mtcnn" / name).read_bytes())
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def test_detect_command_writes_json_lines_and_drawings_and_skips_a_corrupt_image(res10_files, photo_folder,
                                                                                  tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["detect", "--model", str(res10_files[0]), "--weights", str(res10_files[1]), "--mean", *map(str, RES10_MEAN),
            "--scale", "1", "--conf", "0.5", str(photo_folder), "--json", str(out / "d.jsonl"),
            "--draw", str(out / "drawn"), "--no-progress"]
    assert main(argv) == 2  # the corrupt image failed, the others were done
    err = capsys.readouterr().err
    assert f"{photo_folder / 'corrupt.jpg'}: " in err and "2 images, 3 detections, 1 inputs failed" in err
    records = [json.loads(line) for line in (out / "d.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["test1.jpg", "test2.jpg"]
    for record in records:
        assert set(record) == {"image", "width", "height", "detections"}
        image = cv2.imread(record["image"])
        assert (record["width"], record["height"]) == (image.shape[1], image.shape[0])
        for det in record["detections"]:
            assert set(det) == {"label", "name", "score", "box"} and det["label"] == 1 and det["name"] == "1"
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 < x2 <= record["width"] and 0 <= y1 < y2 <= record["height"] and det["score"] >= 0.5
        drawn = cv2.imread(str(out / "drawn" / Path(record["image"]).name))
        assert drawn.shape == image.shape and np.abs(drawn.astype(int) - image).max() > 100
    assert [len(r["detections"]) for r in records] == [2, 1]
    # --resume: nothing left to do but the corrupt image; --model-zoo res10 names the class
    assert main(argv + ["--resume"]) == 2 and "0 images, 0 detections, 1 inputs failed, 2 already done" in \
        capsys.readouterr().err
    assert main(["detect", "--model-zoo", "res10", "--backend", "opencv", str(photo_folder / "test2.jpg"),
                 "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in line["detections"]] == ["face"]
    np.testing.assert_allclose(line["detections"][0]["box"], records[1]["detections"][0]["box"], atol=0.5)


def test_detect_command_refuses_bad_models_and_options_before_any_work(mobilenet_ssd, res10_files, tmp_path, capsys):
    prototxt, weights = mobilenet_ssd
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 128, np.uint8))
    json_out = tmp_path / "d.jsonl"
    head = ["detect", str(image), "--json", str(json_out), "--no-progress"]
    heads = _edited(prototxt, tmp_path / "heads.prototxt", "num_output: 9", "num_output: 12",
                    after='name: "conv11_mbox_conf_new"')
    assert main(head + ["--model", str(heads), "--weights", str(weights)]) == 1
    assert f"error: {heads}: confidence head 'conv11_mbox_conf_new' has num_output 12" in capsys.readouterr().err
    assert main(head + ["--model", str(prototxt), "--weights", str(res10_files[1])]) == 1  # another net's weights
    assert "the weights do not match the prototxt: layer 'conv0'" in capsys.readouterr().err
    assert main(head + ["--model", str(prototxt)]) == 2
    assert "give --model DEPLOY.prototxt and --weights" in capsys.readouterr().err
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    assert main(head + ["--model", str(prototxt), "--weights", str(weights), "--labels", str(labels)]) == 1
    assert f"--labels {labels}: 4 names for a model with 3 classes" in capsys.readouterr().err
    assert not json_out.exists()
    labels.write_text("cat\ndog\n")
    assert main(head + ["--model", str(prototxt), "--weights", str(weights), "--labels", str(labels), "--size",
                        "200x160", "--conf", "0"]) == 0
    record = json.loads(json_out.read_text())
    assert record["detections"] and {d["name"] for d in record["detections"]} <= {"cat", "dog"}


def test_demo_runs_ssd_with_model_and_mtcnn_otherwise(res10_files, photo_folder, tmp_path):
    demo = [sys.executable, str(REPO / "scripts" / "demo.py")]
    run = subprocess.run(demo + [str(photo_folder / "test1.jpg"), str(photo_folder / "corrupt.jpg"), "--model",
                                 str(res10_files[0]), "--weights", str(res10_files[1]), "--mean", *map(str, RES10_MEAN),
                                 "--scale", "1", "--labels", str(_names(tmp_path)), "--draw", str(tmp_path / "drawn")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "test1.jpg: 2 detections ->" in run.stdout and run.stdout.count("  face (1)  score") == 2
    assert "corrupt.jpg" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "drawn" / "test1.jpg").is_file()
    helps = {flag: subprocess.run(demo + list(flag), capture_output=True, text=True, timeout=120).stdout
             for flag in (("--help",), ("--model", "x", "--help"))}
    assert "--model" in helps[("--help",)] and "--preset" in helps[("--help",)]  # MTCNN demo, says how to get SSD
    assert "--model-zoo" in helps[("--model", "x", "--help")] and "--preset" not in helps[("--model", "x", "--help")]


def _names(tmp_path: Path) -> Path:
    path = tmp_path / "face.txt"
    path.write_text("face\n")
    return path
