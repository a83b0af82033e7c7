"""The MTCNN detector on real Caffe (and OpenCV DNN): reference parity, backends, inputs, acceptance."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_caffe import detector as detector_module
from mtcnn_caffe import weights
from mtcnn_caffe.detector import PRESETS, Face, MtcnnDetector
from mtcnn_caffe.tools_loop import detect_face_loop

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_weights(caffe):
    """The converted default weights (what `make setup` leaves in prototxt/mtcnn; converted here if missing)."""
    weights.convert_default_weights()
    return weights.DEFAULT_WEIGHTS_DIR


@pytest.fixture(scope="module")
def det(default_weights):
    return MtcnnDetector(weights_dir=default_weights)


@pytest.fixture(scope="module")
def astronaut():
    """scikit-image's astronaut photo (one frontal face), as BGR."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])


@pytest.fixture(scope="module")
def small_face(astronaut):
    """The astronaut photo at 256 x 256 (a ~45 px face): cheap to run many times."""
    return cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def group(astronaut):
    """Four faces of different sizes on one canvas (built from the astronaut photo)."""
    canvas = np.full((420, 640, 3), 90, np.uint8)
    canvas[:256, :256] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    canvas[260:388, 20:148] = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    canvas[30:350, 300:620] = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    canvas[300:396, 180:276] = cv2.resize(astronaut[:, ::-1], (96, 96), interpolation=cv2.INTER_AREA)
    return canvas


def _faces_68pt(shared_dir):
    from mtcnn_caffe.annotations import read_imglab_xml

    root = shared_dir / "data" / "faces_68pt"
    for xml in ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml"):
        for item in read_imglab_xml(root / xml):
            yield root / item.file, item


def test_astronaut_face_and_landmarks(det, astronaut):
    faces = det.detect(astronaut)
    assert len(faces) == 1 and isinstance(faces[0], Face)
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert face.score > 0.99
    assert 150 < x1 < 210 and 30 < y1 < 90 and 240 < x2 < 300 and 150 < y2 < 200  # the face in the photo
    pts = face.landmarks
    assert pts.shape == (5, 2)
    assert np.all((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2))
    left_eye, right_eye, nose, left_mouth, right_mouth = pts
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert json.loads(json.dumps(face.to_json()))["landmarks"][2] == pytest.approx(nose.tolist(), abs=1e-3)


def test_group_finds_four_faces_best_first(det, group):
    boxes, points = det.detect_arrays(group)
    assert boxes.shape == (4, 5) and points.shape == (4, 5, 2)
    assert np.all(np.diff(boxes[:, 4]) <= 0)
    widths = np.sort(boxes[:, 2] - boxes[:, 0])
    assert widths[0] < widths[1] < widths[2] < widths[3]


def test_loop_reference_cascade_equals_vectorised(det, group, small_face):
    for image in (small_face, group):
        boxes, points = det.detect_arrays(image)
        ref_boxes, ref_points = detect_face_loop(det, image)
        assert len(boxes) > 0
        np.testing.assert_array_equal(boxes, ref_boxes)
        np.testing.assert_array_equal(points, ref_points)


@pytest.mark.shared
def test_loop_reference_equals_vectorised_on_photos(det, shared_dir):
    for path in (shared_dir / "reference" / "mtcnn" / "test1.jpg",):
        image = cv2.imread(str(path))
        boxes, points = det.detect_arrays(image)
        ref_boxes, ref_points = detect_face_loop(det, image)
        assert len(boxes) >= 2
        np.testing.assert_array_equal(boxes, ref_boxes)
        np.testing.assert_array_equal(points, ref_points)


def test_opencv_backend_agrees_with_caffe(det, default_weights, group, astronaut):
    cv_det = MtcnnDetector(weights_dir=default_weights, backend="opencv")
    for image in (astronaut, group):
        boxes, points = det.detect_arrays(image)
        cv_boxes, cv_points = cv_det.detect_arrays(image)
        assert cv_boxes.shape == boxes.shape
        np.testing.assert_allclose(cv_boxes[:, :4], boxes[:, :4], rtol=0, atol=1e-3)
        np.testing.assert_allclose(cv_boxes[:, 4], boxes[:, 4], rtol=0, atol=1e-4)
        np.testing.assert_allclose(cv_points, points, rtol=0, atol=1e-3)


def test_intermediate_stages(det, group):
    b1, p1 = det.detect_arrays(group, stages=1)
    b2, p2 = det.detect_arrays(group, stages=2)
    b3, _ = det.detect_arrays(group, stages=3)
    assert len(b1) >= len(b2) >= len(b3) == 4
    assert np.array_equal(b1[:, :4], np.trunc(b1[:, :4]))  # truncated, as cropped for R-Net
    assert np.all(np.abs((b1[:, 2] - b1[:, 0]) - (b1[:, 3] - b1[:, 1])) <= 1)  # squares (rerec), then truncated
    np.testing.assert_allclose(b2[:, 2] - b2[:, 0], b2[:, 3] - b2[:, 1])
    assert p1.shape == (len(b1), 5, 2) and not p1.any() and not p2.any()
    with pytest.raises(ValueError):
        det.detect_arrays(group, stages=4)


def test_only_the_needed_stages_must_exist(default_weights, group, tmp_path):
    """Hard-example mining with a partly trained cascade: det1 alone is enough for stages=1."""
    import shutil

    for ext in ("prototxt", "caffemodel"):
        shutil.copy(default_weights / f"det1.{ext}", tmp_path / f"det1.{ext}")
    partial = MtcnnDetector(weights_dir=tmp_path)
    boxes, _ = partial.detect_arrays(group, stages=1)
    assert len(boxes) > 4
    with pytest.raises(weights.WeightsNotFoundError, match="det2"):
        partial.detect_arrays(group, stages=2)


def test_image_formats_give_the_same_faces(det, small_face):
    boxes, points = det.detect_arrays(small_face)
    assert len(boxes) == 1
    bgra = np.dstack([small_face, np.full(small_face.shape[:2], 200, np.uint8)])
    for variant in (bgra, small_face.astype(np.uint16) * 257, small_face.astype(np.float64)):
        b, p = det.detect_arrays(variant)
        np.testing.assert_array_equal(b, boxes)
        np.testing.assert_array_equal(p, points)
    gray = cv2.cvtColor(small_face, cv2.COLOR_BGR2GRAY)
    for variant in (gray, gray[..., None]):
        b, _ = det.detect_arrays(variant)
        assert len(b) == 1 and abs(b[0, 0] - boxes[0, 0]) < 5
    with pytest.raises(ValueError):
        det.detect_arrays(np.zeros((10, 10, 2), np.uint8))


@pytest.mark.parametrize("size", [(1, 1), (8, 11), (11, 300), (12, 12), (20, 20)])
def test_tiny_images_give_no_faces(det, size):
    boxes, points = det.detect_arrays(np.full(size + (3,), 128, np.uint8))
    assert boxes.shape == (0, 5) and points.shape == (0, 5, 2)
    assert det.detect(np.zeros(size, np.uint8)) == []


def test_pnet_tiles_reproduce_the_whole_image_maps(det, group, small_face, monkeypatch):
    """P-Net on tiles (even starts, 10 px overlap) gives the whole-image maps: same cells, same values."""
    scaled = cv2.resize(group, (333, 257), interpolation=cv2.INTER_AREA)
    prob, reg = det.pnet_maps(scaled)
    boxes, _ = det.detect_arrays(small_face)
    monkeypatch.setattr(detector_module, "PNET_TILE", 64)
    tiled_prob, tiled_reg = det.pnet_maps(scaled)
    assert tiled_prob.shape == prob.shape == (162, 124)
    np.testing.assert_allclose(tiled_prob, prob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiled_reg, reg, rtol=0, atol=1e-5)
    tiled_boxes, _ = det.detect_arrays(small_face)
    np.testing.assert_allclose(tiled_boxes, boxes, rtol=0, atol=1e-3)


def test_presets_and_parameters(default_weights):
    wider = MtcnnDetector(weights_dir=default_weights, preset="wider")
    assert (wider.min_size, wider.factor, wider.thresholds) == (10, 0.79, (0.5, 0.5, 0.3))
    custom = MtcnnDetector(weights_dir=default_weights, preset="wider", min_size=40)
    assert custom.min_size == 40 and custom.factor == 0.79
    official = MtcnnDetector(weights_dir=default_weights)
    assert (official.min_size, official.factor, official.thresholds) == (20, 0.709, (0.6, 0.7, 0.7))
    assert PRESETS["official"]["thresholds"] == (0.6, 0.7, 0.7)
    for bad in ({"preset": "nope"}, {"factor": 1.5}, {"min_size": 0}, {"thresholds": (0.5, 0.5)},
                {"backend": "tensorrt"}):
        with pytest.raises(ValueError):
            MtcnnDetector(weights_dir=default_weights, **bad)


@pytest.mark.slow
def test_very_large_image_stays_under_2_gib(default_weights, tmp_path):
    """A 6000 x 4000 photo with default settings: peak memory of the whole process < 2 GiB."""
    script = tmp_path / "large.py"
    script.write_text(
        "import resource, sys, numpy as np, cv2, skimage.data\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from mtcnn_caffe import MtcnnDetector\n"
        "face = skimage.data.astronaut()[..., ::-1]\n"
        "img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), np.uint8), (0, 0), 3)\n"
        "img[1000:1512, 2000:2512] = face\n"
        "boxes, _ = MtcnnDetector(min_size=40).detect_arrays(img)\n"
        "print(len(boxes), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    faces, peak_mib = (int(v) for v in proc.stdout.split())
    assert faces == 1
    assert peak_mib < 2048


@pytest.mark.shared
def test_acceptance_on_faces_68pt(det, shared_dir):
    """Default settings find >= 41 of the 43 annotated faces (IoU >= 0.5); 5-point error <= 0.10 of the
    inter-ocular distance against points derived from the 68-point annotation."""
    from mtcnn_caffe.annotations import inter_ocular_distance, landmarks_68_to_5
    from mtcnn_caffe.boxes import iou_matrix

    found, total, errors = 0, 0, []
    for path, item in _faces_68pt(shared_dir):
        boxes, points = det.detect_arrays(cv2.imread(str(path)))
        truth = landmarks_68_to_5(item.points)
        total += len(item.boxes)
        if not len(boxes):
            continue
        iou = iou_matrix(item.boxes, boxes[:, :4])
        for g, j in enumerate(iou.argmax(axis=1)):
            if iou[g, j] >= 0.5:
                found += 1
                errors.append(np.linalg.norm(points[j] - truth[g], axis=1).mean() / inter_ocular_distance(truth[g]))
    assert total == 43
    assert found >= 41
    assert np.mean(errors) <= 0.10


def test_fast_resize_option_finds_the_same_faces(default_weights, group):
    """The official fastresize option (each level from the previous one) changes pixels slightly, not faces."""
    boxes, _ = MtcnnDetector(weights_dir=default_weights).detect_arrays(group)
    fast, _ = MtcnnDetector(weights_dir=default_weights, fast_resize=True).detect_arrays(group)
    assert len(fast) == len(boxes) == 4
    order = np.argsort(fast[:, 0]), np.argsort(boxes[:, 0])
    np.testing.assert_allclose(fast[order[0], :4], boxes[order[1], :4], atol=4)
