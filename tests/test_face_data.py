"""The face network's training data (issue 13): the index built from WIDER + the 5-point list (counts,
skip reasons with file:line, the held-out event in WIDER's format), the augmentation (box content kept
through expand, crop and resize; mirror with the landmark swap; the partial-face rule; landmarks dropped
outside the crop), the shared input convention, and ``FaceDataLayer`` in real Caffe (shapes,
reproducibility, resume, the gt blob round trip).

Augmentation tests run on synthetic images; index and layer tests use small subsets of ``../shared``
(skipped without it).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_common.face_annotations import (
    FIVE_POINT_MIRROR,
    read_wider_gt,
    write_wider_gt,
)
from caffe_common.images import header_size
from caffe_common.textio import AnnotationError
from ssd_mobilenet.faces.augment import (
    AugmentConfig,
    augment,
    face_kinds,
    mirror,
    points_inside,
    resize_truth,
    visible_fraction,
)
from ssd_mobilenet.faces.dataset import (
    HELD_OUT_GT,
    HELD_OUT_INDEX,
    MIN_FACE,
    TRAIN_INDEX,
    build_face_index,
    index_report,
    read_face_index,
)
from ssd_mobilenet.faces.preprocess import MEAN_BGR_PIXEL, fit_to_square, render, to_blob
from ssd_mobilenet.faces.targets import (
    IGNORE_KIND,
    KINDS,
    FaceTruth,
    pack_ground_truth,
    unpack_ground_truth,
)
from ssd_mobilenet.mobilenet_v2 import MEAN_RGB, STD_RGB

S = 320
NO_DISTORT = AugmentConfig(distort=False)

# --------------------------------------------------------------------------- a synthetic photo
BACKGROUND = (200, 180, 160)
UNIFORM_FACES = {(20, 40, 200): (30, 40, 110, 130), (40, 160, 40): (130, 150, 190, 220),
                 (160, 40, 120): (20, 200, 100, 290)}
LANDMARK_FACE, LANDMARK_COLOUR = (220, 60, 370, 250), (90, 90, 90)
POINTS = np.array([[255, 140], [335, 140], [295, 180], [265, 215], [325, 215]], float)
POINT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
DOT = 9  # half side of a landmark dot


def synthetic_photo() -> tuple[np.ndarray, FaceTruth]:
    """A 400x300 BGR photo: three uniform faces and one face whose five points are coloured dots."""
    image = np.empty((300, 400, 3), np.uint8)
    image[:] = BACKGROUND
    boxes = []
    for colour, (x1, y1, x2, y2) in UNIFORM_FACES.items():
        image[y1:y2, x1:x2] = colour
        boxes.append((x1, y1, x2, y2))
    x1, y1, x2, y2 = LANDMARK_FACE
    image[y1:y2, x1:x2] = LANDMARK_COLOUR
    for (x, y), colour in zip(POINTS.astype(int), POINT_COLOURS):
        image[y - DOT:y + DOT, x - DOT:x + DOT] = colour
    boxes.append(LANDMARK_FACE)
    landmarks = np.zeros((4, 10))
    landmarks[3] = POINTS.ravel()
    truth = FaceTruth(np.array(boxes, float), np.ones(4, np.int64), landmarks, np.array([False, False, False, True]))
    return image, truth


def interior(box, size=S, margin=2):
    """Pixel index ranges surely inside a normalised box at output ``size``."""
    x1, y1, x2, y2 = (v * size for v in box)
    return (slice(max(0, int(np.ceil(y1)) + margin), min(size, int(np.floor(y2)) - margin)),
            slice(max(0, int(np.ceil(x1)) + margin), min(size, int(np.floor(x2)) - margin)))


def pixel_at(image, x, y):
    """The output pixel holding the normalised point ``(x, y)``."""
    return tuple(int(v) for v in image[min(int(y * S), S - 1), min(int(x * S), S - 1)])


def samples(count=80, config=NO_DISTORT, first_seed=0):
    image, truth = synthetic_photo()
    for seed in range(first_seed, first_seed + count):
        yield augment(image, truth, np.random.default_rng(seed), config)


# --------------------------------------------------------------------------- augmentation
def test_expand_crop_resize_keep_every_box_on_its_own_content():
    # bilinear resizes (up to 3.6x zoom in): a face's pixels are exact 4 output pixels inside its box
    seen = {colour: 0 for colour in UNIFORM_FACES}
    expanded = 0
    for sample, faces, stats in samples(config=AugmentConfig(distort=False, random_interpolation=False)):
        assert sample.shape == (S, S, 3) and sample.dtype == np.uint8
        assert np.all((faces.boxes >= 0) & (faces.boxes <= 1))
        expanded += stats["expanded"]
        colours = []
        for box in faces.boxes:
            region = sample[interior(box, margin=4)]
            assert region.size, f"box {box} too small to check"
            colour = tuple(int(v) for v in region[0, 0])
            if colour in UNIFORM_FACES:
                assert np.all(region == colour), f"box {box} is not on one face's pixels"
                seen[colour] += 1
                colours.append(colour)
            else:  # the landmark face: its own colour or its dots, never the background or another face
                assert np.mean(np.all(region == LANDMARK_COLOUR, axis=-1)) > 0.3
                colours.append(LANDMARK_COLOUR)
        assert len(colours) == len(set(colours)), "two boxes on one face"
    assert all(seen.values()), seen
    assert 20 < expanded < 60  # prob 0.5 of 80


def test_mirror_swaps_the_landmarks_and_flips_the_pixels():
    image, truth = synthetic_photo()
    plain = AugmentConfig(distort=False, mirror_prob=0.0)
    flip = AugmentConfig(distort=False, mirror_prob=1.0)
    checked = 0
    for seed in range(60):
        a, fa, _ = augment(image, truth, np.random.default_rng(seed), plain)
        b, fb, _ = augment(image, truth, np.random.default_rng(seed), flip)
        assert np.array_equal(b, a[:, ::-1])
        np.testing.assert_allclose(fb.boxes[:, [0, 2]], 1 - fa.boxes[:, [2, 0]])
        for k in np.flatnonzero(fa.has_landmarks):
            before, after = fa.landmarks[k].reshape(5, 2), fb.landmarks[k].reshape(5, 2)
            # the mirrored left eye is the original right eye, mirrored (and so on for every pair)
            np.testing.assert_allclose(after[0], [1 - before[1, 0], before[1, 1]])
            np.testing.assert_allclose(after, np.column_stack([1 - before[list(FIVE_POINT_MIRROR), 0],
                                                               before[list(FIVE_POINT_MIRROR), 1]]))
            # each point sits on its dot: in the mirror, point 0 (left eye) is on the right eye's dot
            for j in range(5):
                assert pixel_at(a, *before[j]) == POINT_COLOURS[j]
                assert pixel_at(b, *after[j]) == POINT_COLOURS[FIVE_POINT_MIRROR[j]]
            checked += 1
    assert checked > 10


def test_mirror_function_on_a_known_face():
    truth = FaceTruth(np.array([[0.1, 0.2, 0.4, 0.6]]), np.array([1]),
                      np.array([[0.2, 0.3, 0.35, 0.3, 0.27, 0.4, 0.22, 0.5, 0.33, 0.5]]), np.array([True]))
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 0] = 255
    flipped, out = mirror(image, truth)
    assert np.all(flipped[:, 3] == 255) and np.all(flipped[:, :3] == 0)
    np.testing.assert_allclose(out.boxes, [[0.6, 0.2, 0.9, 0.6]])
    np.testing.assert_allclose(out.landmarks, [[0.65, 0.3, 0.8, 0.3, 0.73, 0.4, 0.67, 0.5, 0.78, 0.5]])


def test_partial_face_rule_by_visible_fraction():
    boxes = np.array([[0, 0, 100, 100]] * 5, float)
    truth = FaceTruth(boxes, np.ones(5, np.int64), np.zeros((5, 10)), np.zeros(5, bool))
    config = AugmentConfig()
    kinds = []
    for right in (100, 70, 59, 50, 26):
        clipped, visible = visible_fraction(boxes[:1], np.array([0, 0, right, 500]))
        assert visible[0] == pytest.approx(right / 100)
        np.testing.assert_allclose(clipped[0], [0, 0, right, 100])
        kinds.append(int(face_kinds(FaceTruth(*[v[:1] for v in (truth.boxes, truth.kinds, truth.landmarks,
                                                                 truth.has_landmarks)]), visible, config)[0]))
    assert kinds == [KINDS["face"], KINDS["face"], KINDS["partial"], KINDS["partial"], KINDS["partial"]]
    _, visible = visible_fraction(boxes[:1], np.array([0, 0, 24, 100]))
    assert face_kinds(FaceTruth(boxes[:1], truth.kinds[:1], truth.landmarks[:1], truth.has_landmarks[:1]),
                      visible, config)[0] == 0
    # a face whose centre is in the crop shows at least 25 %: the centre rule never drops what this keeps
    _, corner = visible_fraction(boxes[:1], np.array([50, 50, 300, 300]))
    assert corner[0] == pytest.approx(0.25)


def test_partial_faces_come_from_crops_and_sit_on_face_pixels():
    partial = 0
    for sample, faces, stats in samples(120):
        assert stats["partial"] == int(np.sum(faces.kinds == KINDS["partial"]))
        for box in faces.boxes[faces.kinds == KINDS["partial"]]:
            touches = min(box[0], box[1]) < 1e-9 or max(box[2], box[3]) > 1 - 1e-9
            assert touches, "a partial face is one the crop cut: its box ends at the sample's border"
            partial += 1
    assert partial > 5


def test_partial_crops_cut_a_single_face_at_the_configured_rate():
    image, truth = synthetic_photo()
    one = FaceTruth(truth.boxes[3:], truth.kinds[3:], truth.landmarks[3:], truth.has_landmarks[3:])
    for prob, low, high in ((0.0, 0, 0), (1.0, 30, 40)):
        config = AugmentConfig(distort=False, partial_crop_prob=prob)
        kinds = [augment(image, one, np.random.default_rng(seed), config)[1].kinds for seed in range(40)]
        partial = sum(int(np.any(k == KINDS["partial"])) for k in kinds)
        assert low <= partial <= high, (prob, partial)
        assert all(len(k) == 1 for k in kinds), "the one face is always kept (whole or partial)"


def test_landmarks_are_dropped_when_a_point_leaves_the_crop():
    dropped = kept = 0
    for sample, faces, stats in samples(150):
        for k, box in enumerate(faces.boxes):
            region = sample[interior(box)]
            if not np.mean(np.all(region == LANDMARK_COLOUR, axis=-1)) > 0.3:
                continue
            if faces.has_landmarks[k]:
                points = faces.landmarks[k].reshape(5, 2)
                assert np.all((points >= 0) & (points <= 1))
                kept += 1
            else:
                assert min(box[0], box[1]) < 1e-9 or max(box[2], box[3]) > 1 - 1e-9, "dropped without a cut"
                assert np.all(faces.landmarks[k] == 0)
                dropped += 1
    assert kept > 20 and dropped > 0
    window = np.array([0, 0, 400, 300])
    inside = POINTS.ravel()[None]
    outside = inside.copy()
    outside[0, 2] = 401  # the right eye leaves the window
    assert points_inside(np.concatenate([inside, outside]), window).tolist() == [True, False]


def test_crop_fallback_pads_the_image_to_a_square_like_the_detector():
    image = np.random.default_rng(5).integers(0, 256, (200, 400, 3), dtype=np.uint8)
    tiny = np.array([[100, 50, 101.5, 51.5]], float)   # 1.5 px: no crop (zoom <= 5.3x) brings it to 10 px
    truth = FaceTruth(tiny, np.ones(1, np.int64), np.zeros((1, 10)), np.zeros(1, bool))
    plain = AugmentConfig(expand_prob=0, mirror_prob=0, distort=False, random_interpolation=False)
    sample, faces, stats = augment(image, truth, np.random.default_rng(0), plain)
    assert stats["crop_fallback"] == 1
    assert np.all(sample[S // 2 + 1:] == MEAN_BGR_PIXEL)   # the 400 x 400 square's lower half: padding
    np.testing.assert_array_equal(sample, fit_to_square(image, S)[0])
    np.testing.assert_allclose(faces.boxes, tiny / 400)   # one scale for x and y: the face keeps its shape
    assert faces.kinds.tolist() == [IGNORE_KIND]


def test_small_faces_become_ignore_regions_after_the_transform():
    image = np.full((1000, 1000, 3), 128, np.uint8)
    boxes = np.array([[100, 100, 140, 140], [500, 500, 520, 520]], float)  # 12.8 and 6.4 px at 320
    marks = np.tile(POINTS.ravel() / 400 * 20 + 500, (2, 1))
    truth = FaceTruth(boxes, np.ones(2, np.int64), marks, np.array([False, True]))
    faces, stats = resize_truth(truth, 1000, 1000)
    np.testing.assert_allclose(faces.boxes, boxes / 1000)
    assert faces.kinds.tolist() == [KINDS["face"], IGNORE_KIND]
    assert not faces.has_landmarks.any() and np.all(faces.landmarks == 0)   # an ignore region has no points
    assert stats["dropped_small"] == 1 and stats["ignored"] == 1 and stats["faces"] == 1
    for seed in range(20):
        _, faces, _ = augment(image, truth, np.random.default_rng(seed), NO_DISTORT)
        side = np.sqrt((faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])) * S
        assert np.all((side >= 10 - 1e-9) | (faces.kinds == IGNORE_KIND))
        assert np.all((side < 10) | (faces.kinds != IGNORE_KIND))
    # an ignore region of the index stays one, however large a crop makes it
    big = FaceTruth(boxes[:1] * 4, np.array([IGNORE_KIND]), np.zeros((1, 10)), np.zeros(1, bool))
    faces, _ = resize_truth(big, 1000, 1000)
    assert faces.kinds.tolist() == [IGNORE_KIND]


def test_augmentation_is_a_function_of_the_generator_seed():
    image, truth = synthetic_photo()
    a = augment(image, truth, np.random.default_rng(5))
    b = augment(image, truth, np.random.default_rng(5))
    c = augment(image, truth, np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1].boxes, b[1].boxes)
    assert not np.array_equal(a[0], c[0])


def test_render_maps_points_onto_their_pixels_and_fills_the_canvas_with_the_mean():
    image, _ = synthetic_photo()
    out, affine = render(image, np.array([-100, -50, 500, 550]), S, cv2.INTER_NEAREST)
    ax, bx, ay, by = affine
    assert np.all(out[0, 0] == MEAN_BGR_PIXEL) and np.all(out[-1, -1] == MEAN_BGR_PIXEL)
    for (x, y), colour in zip(POINTS, POINT_COLOURS):
        assert tuple(int(v) for v in out[int(ay * y + by), int(ax * x + bx)]) == colour


def test_to_blob_is_the_mobilenet_v2_normalisation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    blob = to_blob([image, image[::-1]], 64)
    assert blob.shape == (2, 3, 64, 64) and blob.dtype == np.float32
    resized = cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR)[..., ::-1].astype(np.float64)
    expected = ((resized - np.array(MEAN_RGB)) / np.array(STD_RGB)).transpose(2, 0, 1)
    np.testing.assert_allclose(blob[0], expected, rtol=1e-5, atol=1e-5)
    # a one-number scale still works as before (other callers of to_net_input)
    from caffe_common.images import to_net_input

    single = to_net_input(image, (64, 64), 127.5, 0.0078125)
    np.testing.assert_array_equal(single[0], ((cv2.resize(image, (64, 64)).astype(np.float32) - 127.5)
                                              * np.float32(0.0078125)).transpose(2, 0, 1))
    with pytest.raises(ValueError, match="scale needs 1 or 3"):
        to_net_input(image, (64, 64), 0, (1.0, 2.0))


# --------------------------------------------------------------------------- the index (shared data)
def _first_line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if line.strip() == text)


@pytest.fixture(scope="module")
def sources(shared_dir, tmp_path_factory):
    """A WIDER gt of 20 training images + 4 Interview images + broken entries, and a 5-point list of 10
    lines + broken ones; the index built from them."""
    root = tmp_path_factory.mktemp("face_index")
    wider = shared_dir / "data" / "wider_train_subset"
    images = wider / "WIDER_train" / "images"
    items = read_wider_gt(wider / "wider_face_split" / "wider_face_train_bbx_gt.txt").items
    train = [i for i in items if "Interview" not in i.name][:20]
    held = [i for i in items if "Interview" in i.name][:4]
    spare = [i for i in items if "Interview" not in i.name][20]  # an image of its own for the broken faces
    with open(images / spare.name, "rb") as f:
        width, height = header_size(f.read(1 << 16))
    anno = root / "gt.txt"
    write_wider_gt(anno, train + held)
    broken = ["1--Handshaking/does_not_exist.jpg", "1", "10 10 50 50 0 0 0 0 0 0",
              spare.name, "6",
              "100 100 80 90 0 0 0 0 0 0",              # kept
              "300 100 80 90 0 0 0 1 0 0",              # invalid
              "10 10 2 2 0 0 0 0 0 0",                  # too small
              f"{width - 20} 50 60 60 0 0 0 0 0 0",     # clipped to the image
              f"{width + 10} 50 30 30 0 0 0 0 0 0",     # outside the image
              "1 2 x 4 0 0 0 0 0 0"]                    # does not parse
    anno.write_text(anno.read_text() + "\n".join(broken) + "\n")
    landmarks = shared_dir / "data" / "landmarks_5pt"
    lm_lines = (landmarks / "trainImageList.txt").read_text().splitlines()[:10]
    lm_lines += ["net_7876/missing.jpg 10 60 10 60 20 20 40 20 30 30 25 45 35 45", "net_7876/short.jpg 1 2 3"]
    lm_list = root / "landmarks.txt"
    lm_list.write_text("\n".join(lm_lines) + "\n")
    summary = build_face_index(anno, images, lm_list, landmarks, root / "index")
    return {"root": root, "anno": anno, "images": images, "train": train, "held": held, "spare": spare,
            "size": (width, height), "lm_list": lm_list, "lm_lines": lm_lines, "landmarks": landmarks,
            "summary": summary, "index": root / "index" / TRAIN_INDEX}


def _expected_wider_faces(item, images: Path) -> tuple[np.ndarray, np.ndarray]:
    """The oracle of the WIDER part: ``(faces, ignore regions)``, clipped; faces are the valid ones with
    sqrt(w h) >= MIN_FACE * short side, ignore regions every other face that keeps an area."""
    with open(images / item.name, "rb") as f:
        width, height = header_size(f.read(1 << 16))
    boxes = np.column_stack([item.boxes[:, :2], item.boxes[:, :2] + item.boxes[:, 2:4]])
    boxes = np.clip(boxes, 0, [width, height, width, height])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    has_area = (w > 0) & (h > 0)
    face = item.valid & has_area & (np.sqrt(w * h) >= MIN_FACE * min(width, height))
    return boxes[face], boxes[has_area & ~face]


def test_index_counts_and_skip_reasons(sources):
    summary, anno, lm_list = sources["summary"], sources["anno"], sources["lm_list"]
    wider = summary["counts"]["wider"]
    expected = {item.name: _expected_wider_faces(item, sources["images"]) for item in sources["train"]}
    kept_train = sum(len(faces) for faces, _ in expected.values())
    assert wider["images_read"] == 22 and wider["images_unreadable"] == 1
    assert wider["faces"] == kept_train + 2                 # the spare image: the normal and the clipped face
    assert wider["faces_invalid"] == sum(int((~i.valid).sum()) for i in sources["train"]) + 1
    assert wider["faces_no_area"] == 1 and wider["faces_clipped"] == 1 and wider["lines_skipped"] == 1
    assert wider["faces_small"] >= 1
    assert summary["counts"]["landmarks"]["images"] == 10 and summary["counts"]["landmarks"]["lines_skipped"] == 1
    assert summary["counts"]["landmarks"]["faces_with_landmarks"] == 10
    problems = summary["problems"]
    missing_line = _first_line(anno, "1--Handshaking/does_not_exist.jpg")
    assert any(p.startswith(f"{anno}:{missing_line}: ") and "no such file" in p for p in problems)
    bad_row = _first_line(anno, "1 2 x 4 0 0 0 0 0 0")
    assert any(p.startswith(f"{anno}:{bad_row}: ") for p in problems)
    spare_line = _first_line(anno, sources["spare"].name)
    assert any(p.startswith(f"{anno}:{spare_line}: ") and "no area" in p for p in problems)
    assert any(p.startswith(f"{lm_list}:11: ") and "no such file" in p for p in problems)
    assert any(p.startswith(f"{lm_list}:12: ") for p in problems)
    assert len(problems) == 5
    assert json.loads((anno.parent / "index" / "summary.json").read_text())["problems"] == problems

    index = read_face_index(sources["index"])
    by_path = {r.path: r for r in index.records}
    assert len(index) == 20 + 1 + 10
    ignored = 0
    for name, (faces, ignore) in expected.items():
        record = by_path[sources["images"] / name]
        np.testing.assert_allclose(record.boxes[record.kinds == KINDS["face"]], faces)
        np.testing.assert_allclose(record.boxes[record.kinds == IGNORE_KIND].reshape(-1, 4), ignore.reshape(-1, 4))
        assert set(record.kinds.tolist()) <= {KINDS["face"], IGNORE_KIND}
        assert not record.has_landmarks.any()
        ignored += len(ignore)
    spare = by_path[sources["images"] / sources["spare"].name]
    width = sources["size"][0]
    # the invalid and the too-small face stay as ignore regions, after the faces
    np.testing.assert_allclose(spare.boxes, [[100, 100, 180, 190], [width - 20, 50, width, 110],
                                             [300, 100, 380, 190], [10, 10, 12, 12]])
    assert spare.kinds.tolist() == [1, 1, IGNORE_KIND, IGNORE_KIND]
    assert wider["ignore_regions"] == ignored + 2
    report = index_report(summary)
    assert f"{wider['ignore_regions']} small or invalid faces of indexed images kept as ignore regions" in report[2]
    first = sources["lm_lines"][0].split()
    record = by_path[sources["landmarks"] / first[0]]
    values = np.array(first[1:], float)
    np.testing.assert_allclose(record.boxes[0], values[[0, 2, 1, 3]])      # l r t b -> x1 y1 x2 y2
    np.testing.assert_allclose(record.landmarks[0], values[4:])
    assert record.has_landmarks.tolist() == [True] and record.source == "landmarks"


def test_held_out_event_is_excluded_and_written_in_wider_format(sources):
    from mtcnn_caffe.evaluation.wider import evaluate_wider, load_wider_ground_truth

    index = read_face_index(sources["index"])
    assert not any("Interview" in str(r.path) for r in index.records)
    out = sources["index"].parent
    held = read_wider_gt(out / HELD_OUT_GT, strict=True).items
    assert [i.name for i in held] == [i.name for i in sources["held"]]
    for a, b in zip(held, sources["held"]):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.attrs, b.attrs)
    assert len(read_face_index(out / HELD_OUT_INDEX)) == 4
    gt = load_wider_ground_truth(out / HELD_OUT_GT)
    predictions = {im.key: np.column_stack([im.boxes, np.linspace(1, 0.5, len(im.boxes))]) for im in gt.images}
    assert evaluate_wider(gt, predictions).settings["all"].ap == pytest.approx(1.0)


def test_damaged_index_line_names_file_and_line(sources, tmp_path):
    lines = sources["index"].read_text().splitlines()
    lines[3] = lines[3].replace('"kind": 1', '"kind": 7', 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{bad}:4: face 0: kind must be 1"):
        read_face_index(bad)


# --------------------------------------------------------------------------- the data layer in Caffe
def _data_net(caffe, tmp_path, index, phase=None, **params):
    param = json.dumps({"index": str(index), **params})
    path = tmp_path / f"data_{abs(hash(param))}.prototxt"
    path.write_text(f"""layer {{ name: "data" type: "Python" top: "data" top: "gt"
  python_param {{ module: "ssd_mobilenet.faces.data_layer" layer: "FaceDataLayer" param_str: '{param}' }} }}""")
    return caffe.Net(str(path), caffe.TRAIN if phase is None else phase)


def _batches(net, count):
    out = []
    for _ in range(count):
        net.forward()
        out.append((net.blobs["data"].data.copy(), net.blobs["gt"].data.copy()))
    return out


def test_data_layer_tops_reproducible_and_resumable(caffe, sources, tmp_path):
    net = _data_net(caffe, tmp_path, sources["index"], batch_size=4, seed=7)
    batches = _batches(net, 3)
    for data, gt in batches:
        assert data.shape == (4, 3, S, S) and data.dtype == np.float32
        assert gt.shape[:2] == (1, 1) and gt.shape[3] == 17
        truths = unpack_ground_truth(gt, 4)
        np.testing.assert_array_equal(pack_ground_truth(truths), gt)     # the blob round-trips
        for t in truths:
            assert np.all((t.boxes >= 0) & (t.boxes <= 1)) and set(t.kinds.tolist()) <= {1, 2}
    again = _batches(_data_net(caffe, tmp_path, sources["index"], batch_size=4, seed=7), 3)
    for (d1, g1), (d2, g2) in zip(batches, again):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(g1, g2)
    resumed = _data_net(caffe, tmp_path, sources["index"], batch_size=4, seed=7)
    resumed.layers[0].set_iteration(2)
    data, gt = _batches(resumed, 1)[0]
    np.testing.assert_array_equal(data, batches[2][0])
    np.testing.assert_array_equal(gt, batches[2][1])
    other = _batches(_data_net(caffe, tmp_path, sources["index"], batch_size=4, seed=8), 1)[0]
    assert not np.array_equal(other[0], batches[0][0])


def test_data_layer_test_phase_is_the_detectors_padded_square_in_file_order(caffe, sources, tmp_path):
    from caffe_common.images import read_image

    net = _data_net(caffe, tmp_path, sources["index"], caffe.TEST, batch_size=3, size=160)
    assert net.layers[0].val_batches() == 11 and net.layers[0].val_count == 31   # batches of 3
    data, gt = _batches(net, 1)[0]
    records = read_face_index(sources["index"]).records[:3]
    np.testing.assert_array_equal(data, to_blob([fit_to_square(read_image(r.path), 160)[0] for r in records], 160))
    truths = unpack_ground_truth(gt, 3)
    for record, truth in zip(records, truths):
        frame_w, frame_h = fit_to_square(np.zeros((record.height, record.width, 3), np.uint8), 160)[1]
        scale = np.array([frame_w, frame_h] * 2)
        sides = (record.boxes[:, 2:] - record.boxes[:, :2]) * 160 / scale[:2]
        face = (record.kinds == KINDS["face"]) & (np.sqrt(sides.prod(axis=1)) >= 10)
        np.testing.assert_allclose(truth.boxes[truth.kinds == KINDS["face"]], record.boxes[face] / scale, rtol=1e-6)
        assert (truth.kinds == IGNORE_KIND).sum() == (~face).sum()


def test_data_layer_rejects_bad_params(caffe, sources, tmp_path):
    with pytest.raises(ValueError, match="unknown param_str keys"):
        _data_net(caffe, tmp_path, sources["index"], batch=4)


def test_training_index_floor_follows_the_input_size(sources, tmp_path):
    # A larger net input keeps smaller faces (the floor is MIN_FACE_PX at the tightest crop of that input).
    from ssd_mobilenet.faces.dataset import min_face_fraction
    from ssd_mobilenet.faces.training import _data_index

    faces = {}
    for size in (64, 1024):
        index, _ = _data_index(tmp_path / str(size), False, sources["anno"], sources["images"], None, None,
                               ("Interview",), size)
        faces[size] = sum(len(r.boxes) for r in read_face_index(index).records)
        summary = json.loads((index.parent / "summary.json").read_text())
        assert summary["min_face"] == pytest.approx(min_face_fraction(size)) and summary["input_size"] == size
    assert min_face_fraction(640) == pytest.approx(MIN_FACE / 2)
    assert faces[1024] > faces[64]


def test_epochs_repeat_wider_images_and_stay_reproducible(sources):
    from ssd_mobilenet.faces.data_layer import FaceBatches

    index = read_face_index(sources["index"])
    wider = {k for k, r in enumerate(index.records) if r.source == "wider"}
    batches = FaceBatches(index, batch_size=7, seed=3, wider_repeat=3)
    epoch = len(wider) * 3 + len(index) - len(wider)
    steps = -(-2 * epoch // 7)
    seen = np.concatenate([batches.positions(i) for i in range(steps)])[: 2 * epoch]
    for part in (seen[:epoch], seen[epoch:]):
        counts = np.bincount(part, minlength=len(index))
        assert all(counts[k] == (3 if k in wider else 1) for k in range(len(index)))
    assert not np.array_equal(seen[:epoch], seen[epoch:])           # a new order each epoch
    again = FaceBatches(index, batch_size=7, seed=3, wider_repeat=3)
    assert np.array_equal(again.positions(steps - 1), batches.positions(steps - 1))
    with pytest.raises(ValueError, match="wider_repeat"):
        FaceBatches(index, wider_repeat=0)
