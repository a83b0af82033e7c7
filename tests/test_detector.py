"""The MTCNN detector on real Caffe (and OpenCV DNN): reference parity, backends, inputs, acceptance."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_caffe.nets import weights
from mtcnn_caffe.detect.cascade import PRESETS, Face, MtcnnDetector
from tests.tools_loop import detect_face_loop

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


def test_pnet_tiles_reproduce_the_whole_image_maps(det, group, small_face, default_weights):
    """P-Net on tiles (even starts, 10 px overlap) gives the whole-image maps: same cells, same values."""
    scaled = cv2.resize(group, (333, 257), interpolation=cv2.INTER_AREA)
    prob, reg = det.pnet_maps(scaled)
    boxes, _ = det.detect_arrays(small_face)
    tiled = MtcnnDetector(weights_dir=default_weights, pnet_tile=64)
    tiled_prob, tiled_reg = tiled.pnet_maps(scaled)
    assert tiled_prob.shape == prob.shape == (162, 124)
    np.testing.assert_allclose(tiled_prob, prob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiled_reg, reg, rtol=0, atol=1e-5)
    tiled_boxes, _ = tiled.detect_arrays(small_face)
    np.testing.assert_allclose(tiled_boxes, boxes, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="pnet_tile"):
        MtcnnDetector(weights_dir=default_weights, pnet_tile=8)


@pytest.mark.parametrize("tile", [25, 37])
def test_odd_pnet_tiles_give_the_untiled_detections_bit_for_bit(det, small_face, default_weights, tile):
    """An odd ``pnet_tile`` is used as the even size below it: tiles start on P-Net's stride-2 grid."""
    from mtcnn_caffe.detect.cascade import _tile_starts

    ranges = _tile_starts(100, tile)
    assert all(start % 2 == 0 for start, _ in ranges) and all((end - start) % 2 == 0 for start, end in ranges[:-1])
    assert ranges[0][0] == 0 and ranges[-1][1] == 100
    boxes, points = det.detect_arrays(small_face)
    tiled_boxes, tiled_points = MtcnnDetector(weights_dir=default_weights, pnet_tile=tile).detect_arrays(small_face)
    assert len(boxes) == 1
    np.testing.assert_array_equal(tiled_boxes, boxes)
    np.testing.assert_array_equal(tiled_points, points)


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
    from caffe_common.boxes import iou_matrix

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


def test_opencv_crop_chunks_give_the_same_outputs_as_one_batch(default_weights):
    """The opencv backend runs R-/O-Net crops in small chunks (backends.BATCH_LIMITS): a crop's outputs are
    bit for bit those of one batch of all crops (and of the crop alone), so chunking never changes results."""
    from mtcnn_caffe.detect import backends

    rng = np.random.default_rng(5)
    for stage, size in (("det2", 24), ("det3", 48)):
        net = backends.StageNet(default_weights, stage, "opencv")
        crops = rng.integers(0, 256, (37, size, size, 3), dtype=np.uint8)
        chunked = net.forward_images(crops)
        assert backends.BATCH_LIMITS["opencv"][stage] < len(crops)
        net.batch_limit = 512
        whole = net.forward_images(crops)
        alone = net.forward_images(crops[5:6])
        for name in net.outputs:
            assert chunked[name].shape[0] == len(crops)
            np.testing.assert_array_equal(chunked[name], whole[name])
            np.testing.assert_array_equal(chunked[name][5:6], alone[name])


PLAIN_PATHS = """
import json, sys
import cv2, numpy as np
from mtcnn_caffe.detect import backends
from mtcnn_caffe.detect.cascade import MtcnnDetector
backends.BATCH_LIMITS["opencv"] = {"det2": 512, "det3": 256}
import caffe_common.nms
caffe_common.nms._dense_nms_sorted = caffe_common.nms._greedy_nms_sorted
out = {}
for backend in ("caffe", "opencv"):
    det = MtcnnDetector(weights_dir=sys.argv[1], backend=backend, retain_memory=False)
    det.resize_ahead = False
    boxes, points = det.detect_arrays(np.load(sys.argv[2]))
    out[backend] = [boxes.tolist(), points.tolist()]
print(json.dumps(out))
"""


def test_fast_paths_give_the_same_faces_as_the_plain_paths(default_weights, group, tmp_path):
    """The speed-ups (retained allocator memory, opencv's 16-crop chunks, all-pairs NMS for small sets,
    pyramid resized ahead on a thread) against the straightforward paths in a fresh process (the
    allocator setting is process-wide): identical boxes, scores and points, bit for bit, both backends."""
    from mtcnn_caffe.detect.backends import retain_freed_memory

    image_file = tmp_path / "group.npy"
    np.save(image_file, group)
    run = subprocess.run([sys.executable, "-c", PLAIN_PATHS, str(default_weights), str(image_file)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    plain = json.loads(run.stdout)
    assert retain_freed_memory()  # glibc: applied (and idempotent)
    for backend in ("caffe", "opencv"):
        boxes, points = MtcnnDetector(weights_dir=default_weights, backend=backend).detect_arrays(group)
        assert len(boxes) == 4
        assert boxes.tolist() == plain[backend][0]
        assert points.tolist() == plain[backend][1]


@pytest.mark.parametrize("fast_resize", [False, True])
def test_pyramid_resized_ahead_equals_one_by_one(default_weights, group, fast_resize):
    """Levels resized ahead on the worker thread are the levels resized one by one (same scales, same
    pixels), also for the fastresize chain; stopping early leaves nothing running."""
    det = MtcnnDetector(weights_dir=default_weights, fast_resize=fast_resize)
    ahead = list(det.pyramid(group))
    det.resize_ahead = False
    plain = list(det.pyramid(group))
    assert len(ahead) == len(plain) == len(det_scales(det, group)) > 5
    for (s1, a), (s2, b) in zip(ahead, plain):
        assert s1 == s2 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    det.resize_ahead = True
    levels = det.pyramid(group)
    next(levels)
    levels.close()  # the queued levels are cancelled, a running one awaited
    assert det._resizer.submit(lambda: 7).result(timeout=10) == 7


def det_scales(det, image):
    from mtcnn_caffe.detect import steps as tools

    return tools.pyramid_scales(image.shape[0], image.shape[1], det.min_size, det.factor)


def test_detector_works_in_a_forked_child(default_weights, small_face):
    """The resize thread does not survive fork(): a child process gets a new one instead of waiting forever."""
    import multiprocessing

    det = MtcnnDetector(weights_dir=default_weights, backend="opencv")
    boxes, _ = det.detect_arrays(small_face)  # the parent's resize thread now exists
    context = multiprocessing.get_context("fork")  # fork: the child inherits det as it is (no pickling)
    queue = context.Queue()
    child = context.Process(target=lambda: queue.put(len(det.detect_arrays(small_face)[0])))
    child.start()
    try:
        assert queue.get(timeout=120) == len(boxes) == 1
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()


def test_a_worker_error_reaches_the_caller_and_the_detector_goes_on(default_weights, group, monkeypatch):
    """An exception while cropping on the resize thread is raised by detect itself (same type and
    message); the next call on the same detector works and gives the usual faces."""
    from mtcnn_caffe.detect import steps as tools

    det = MtcnnDetector(weights_dir=default_weights, backend="opencv")
    boxes, points = det.detect_arrays(group)

    def broken_crop(*args):
        raise RuntimeError("crop failed on the worker")

    monkeypatch.setattr(tools, "crop_patches", broken_crop)
    with pytest.raises(RuntimeError, match="crop failed on the worker"):
        det.detect_arrays(group)
    monkeypatch.undo()
    again, again_points = det.detect_arrays(group)
    np.testing.assert_array_equal(again, boxes)
    np.testing.assert_array_equal(again_points, points)


def test_an_error_midway_cancels_the_queued_pyramid_levels(default_weights, group, monkeypatch):
    """P-Net failing on the first level: detect raises at once, the levels still queued on the resize
    thread are dropped (not computed for nothing), and the thread stays usable."""
    import threading

    from mtcnn_caffe.detect import cascade as detector_module

    det = MtcnnDetector(weights_dir=default_weights)
    resized, release = [], threading.Event()
    real_resize, real_wait = cv2.resize, detector_module.wait

    def counting_resize(*args, **kwargs):
        resized.append(args[1])
        if len(resized) == 2:
            release.wait(30)  # the worker holds level 1 until the caller has cancelled the rest
        return real_resize(*args, **kwargs)

    def wait_after_cancelling(futures):  # _run_ahead calls wait() right after cancelling
        release.set()
        return real_wait(futures)

    def failing_pnet(*args):
        raise RuntimeError("P-Net failed")

    monkeypatch.setattr(detector_module.cv2, "resize", counting_resize)
    monkeypatch.setattr(detector_module, "wait", wait_after_cancelling)
    monkeypatch.setattr(det, "pnet_maps", failing_pnet)
    with pytest.raises(RuntimeError, match="P-Net failed") as failure:  # its traceback keeps the frames alive
        det.detect_arrays(group)
    assert det._worker().submit(len, "ok").result(timeout=10) == 2  # runs after every earlier task
    assert len(det_scales(det, group)) > 5 and len(resized) <= 2
    assert failure.traceback  # (cleanup must not rely on the failed call's frames being freed)


def test_detectors_and_threads_do_not_interfere_or_leak(default_weights, small_face, group):
    """Two detectors have a resize thread each; detect calls from several threads on one detector
    give the single-thread results (they are serialised); a detector's thread ends with the detector."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    first = MtcnnDetector(weights_dir=default_weights, backend="opencv")
    second = MtcnnDetector(weights_dir=default_weights, backend="opencv")
    images = [small_face, group] * 3
    expected = [first.detect_arrays(image) for image in images[:2]]
    assert second.detect_arrays(group)[0].tolist() == expected[1][0].tolist()
    assert first._resizer is not second._resizer
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(first.detect_arrays, images))
    for k, (boxes, points) in enumerate(results):
        np.testing.assert_array_equal(boxes, expected[k % 2][0])
        np.testing.assert_array_equal(points, expected[k % 2][1])
    threads = [t for det in (first, second) for t in det._resizer._threads]
    assert len(threads) == 2 and all(t.is_alive() for t in threads)
    del first, second, results
    gc.collect()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
