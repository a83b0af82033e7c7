"""The project's Caffe patch for SSD training (scripts/caffe_build/patches), in real Caffe.

The reference MobileNet-SSD train/test prototxts parse and run forward and backward; expansion,
photometric distortion, the batch samplers and ``emit_constraint`` of the ``AnnotatedData`` layer
do what SSD documents. Images are synthetic PNGs written with ``ssd_mobilenet.annotated_lmdb``.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssd_mobilenet.annotated_lmdb import AnnotatedImage, LabeledBox, read_annotated_lmdb, write_annotated_lmdb
from tests.conftest import write_prototxt

FILL = (10, 20, 30)          # mean_value: the expansion canvas colour
BACKGROUND = (200, 180, 160)
BOX_COLOURS = {2: (0, 0, 255), 3: (0, 255, 0), 4: (255, 0, 0)}
COLOUR_BOXES = {2: (0.1, 0.1, 0.4, 0.5), 3: (0.5, 0.2, 0.9, 0.45), 4: (0.3, 0.6, 0.7, 0.95)}


@pytest.fixture(scope="module")
def ssd_caffe(caffe):
    """pycaffe built with the SSD patch (fails with the remedy when the build predates it)."""
    fields = caffe.proto.caffe_pb2.TransformationParameter.DESCRIPTOR.fields_by_name
    if not {"resize_param", "distort_param", "expand_param"} <= set(fields):
        pytest.fail("this Caffe was built without scripts/caffe_build/patches: run `make setup`")
    return caffe


def _lmdb(tmp_path: Path, images: list[tuple[np.ndarray, list[LabeledBox]]], name="db") -> str:
    items = []
    for i, (image, boxes) in enumerate(images):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), image)
        items.append(AnnotatedImage(path, boxes))
    out = tmp_path / name
    summary = write_annotated_lmdb(out, items)
    assert summary.written == len(images) and not summary.skipped
    return str(out)


def _data_net(caffe, tmp_path, source, transform, sampler="", batch=16, seed=1):
    caffe.set_random_seed(seed)
    text = f"""
layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ {transform} }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}
  annotated_data_param {{ {sampler} }}
}}"""
    return caffe.Net(write_prototxt(tmp_path, text, "data.prototxt"), caffe.TRAIN)


def _batches(net, count):
    """``count`` batches of (images (N, C, H, W), label rows (K, 8))."""
    for _ in range(count):
        net.forward()
        yield net.blobs["data"].data.copy(), net.blobs["label"].data.reshape(-1, 8).copy()


# --- the reference prototxts -------------------------------------------------------------

def _reference_text(shared_dir, name, source, labelmap):
    text = (shared_dir / "reference" / "mobilenet_ssd" / name).read_text()
    for pattern, value in ((r'source: "[^"]*"', f'source: "{source}"'),
                           (r"batch_size: \d+", "batch_size: 2"),
                           (r'label_map_file: "[^"]*"', f'label_map_file: "{labelmap}"')):
        text, count = re.subn(pattern, value, text)
        assert count == 1, pattern
    return text


def test_reference_train_and_test_prototxts_run_forward_and_backward(ssd_caffe, shared_dir, tmp_path):
    caffe = ssd_caffe
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        image = rng.integers(0, 256, (120 + 20 * i, 160, 3), dtype=np.uint8)
        images.append((image, [LabeledBox(1 + 7 * i, 0.1, 0.2, 0.6, 0.9),
                               LabeledBox(15, 0.5, 0.1, 0.95, 0.5, difficult=i == 1)]))
    source = _lmdb(tmp_path, images)
    # a second copy for the test net: Caffe's DataReader shares one reading thread per layer name
    # and source, and a reader added after that thread started is never served (Caffe hangs)
    test_source = _lmdb(tmp_path, images, name="test_db")
    labelmap = shared_dir / "reference" / "mobilenet_ssd" / "labelmap_example.prototxt"

    caffe.set_random_seed(3)
    train = caffe.Net(write_prototxt(tmp_path, _reference_text(
        shared_dir, "MobileNetSSD_train.prototxt", source, labelmap), "train.prototxt"), caffe.TRAIN)
    loss = float(train.forward()["mbox_loss"])
    assert np.isfinite(loss) and loss > 0
    assert train.blobs["data"].data.shape == (2, 3, 300, 300)
    train.backward()
    grad = train.params["conv0"][0].diff
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0

    test = caffe.Net(write_prototxt(tmp_path, _reference_text(
        shared_dir, "MobileNetSSD_test.prototxt", test_source, labelmap), "test.prototxt"), caffe.TEST)
    out = test.forward()
    assert test.blobs["data"].data.shape == (2, 3, 300, 300)
    evaluation = out["detection_eval"]
    assert evaluation.shape[-1] == 5 and np.all(np.isfinite(evaluation))
    # the per-class rows [-1, label, positives, -1, -1] count the ground truth of the batch's two
    # images: labels 1 and 15 in the first, 8 and a difficult (not evaluated) 15 in the second
    class_rows = evaluation.reshape(-1, 5)
    class_rows = class_rows[class_rows[:, 0] == -1]
    assert {int(c): int(n) for c, n in class_rows[:, 1:3] if n > 0} == {1: 1, 8: 1, 15: 1}


# --- expansion ---------------------------------------------------------------------------

def _colour_image(height=120, width=160):
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    for label, (x1, y1, x2, y2) in COLOUR_BOXES.items():
        image[round(y1 * height):round(y2 * height), round(x1 * width):round(x2 * width)] = BOX_COLOURS[label]
    return image


def _inside(box, size, margin):
    """Pixel index ranges (rows, cols) surely inside the normalised box at output size ``size``."""
    x1, y1, x2, y2 = (v * size for v in box)
    return (slice(max(0, int(np.ceil(y1)) + margin), min(size, int(np.floor(y2)) - margin)),
            slice(max(0, int(np.ceil(x1)) + margin), min(size, int(np.floor(x2)) - margin)))


def test_expansion_keeps_every_box_on_its_image_content(ssd_caffe, tmp_path):
    boxes = [LabeledBox(1, 0.0, 0.0, 1.0, 1.0)]  # the whole image: where it landed on the canvas
    boxes += [LabeledBox(label, *box) for label, box in COLOUR_BOXES.items()]
    source = _lmdb(tmp_path, [(_colour_image(), boxes)])
    transform = """resize_param { resize_mode: WARP height: 300 width: 300 interp_mode: NEAREST }
        mean_value: 10 mean_value: 20 mean_value: 30
        expand_param { prob: 1.0 max_expand_ratio: 4.0 }"""
    net = _data_net(ssd_caffe, tmp_path, source, transform)
    areas = []
    for images, rows in _batches(net, 2):
        for item, image in enumerate(images):
            pixels = image.transpose(1, 2, 0) + np.array(FILL, np.float32)  # back to BGR values
            mine = {int(r[1]): r[3:7] for r in rows if r[0] == item}
            assert sorted(mine) == [1, 2, 3, 4]
            frame = mine[1]
            width, height = frame[2] - frame[0], frame[3] - frame[1]
            assert abs(width - height) < 0.02  # the canvas keeps the aspect ratio
            areas.append(width * height)
            outside = np.ones((300, 300), bool)
            outside[_inside(frame, 300, -2)] = False
            assert np.all(pixels[outside] == FILL), "the canvas must be mean-filled"
            for label, colour in BOX_COLOURS.items():
                region = pixels[_inside(mine[label], 300, 2)]
                assert region.size > 0 and np.all(region == colour), f"box {label} moved off its content"
            region = pixels[_inside(frame, 300, 2)]
            known = np.zeros(region.shape[:2], bool)
            for colour in list(BOX_COLOURS.values()) + [BACKGROUND]:
                known |= np.all(region == colour, axis=-1)
            assert known.all()
    areas = np.array(areas)
    assert areas.min() >= 1 / 16 - 0.01 and areas.max() <= 1.0
    assert np.mean(areas < 0.5) > 0.5, "max_expand_ratio 4 must mostly shrink the image"


# --- photometric distortion --------------------------------------------------------------

def _gradient_image(height=64, width=96):
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([40 + 120 * x / (width - 1), 40 + 120 * y / (height - 1),
                      160 - 100 * x / (width - 1)], axis=-1)
    return np.round(image).astype(np.uint8)


def _distorted(ssd_caffe, tmp_path, distort, batches=2):
    source_image = _gradient_image()
    source = _lmdb(tmp_path, [(source_image, [LabeledBox(1, 0.2, 0.2, 0.8, 0.8)])], name="grad")
    net = _data_net(ssd_caffe, tmp_path, source, f"distort_param {{ {distort} }}")
    outs = [img.transpose(1, 2, 0) for images, _ in _batches(net, batches) for img in images]
    return source_image.astype(np.float32), outs


def test_brightness_adds_one_offset_within_delta(ssd_caffe, tmp_path):
    src, outs = _distorted(ssd_caffe, tmp_path, "brightness_prob: 1 brightness_delta: 32")
    offsets = []
    for out in outs:
        diff = out - src
        assert np.ptp(diff) == 0  # one offset for the whole image
        offsets.append(diff.flat[0])
    assert max(abs(o) for o in offsets) <= 32 and len(set(offsets)) > 5


def test_contrast_scales_by_one_factor_within_range(ssd_caffe, tmp_path):
    src, outs = _distorted(ssd_caffe, tmp_path, "contrast_prob: 1 contrast_lower: 0.5 contrast_upper: 1.5")
    factors = []
    for out in outs:
        factor = float((out * src).sum() / (src * src).sum())
        assert np.abs(out - src * factor).max() <= 0.6  # only rounding to uint8 remains
        factors.append(factor)
    assert 0.49 <= min(factors) and max(factors) <= 1.51 and np.ptp(factors) > 0.3


def _hsv(image):
    return cv2.cvtColor(np.clip(np.round(image), 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)


def test_saturation_and_hue_change_within_range(ssd_caffe, tmp_path):
    src, outs = _distorted(ssd_caffe, tmp_path, "saturation_prob: 1 saturation_lower: 0.5 saturation_upper: 1.5")
    hsv = _hsv(src)
    vivid = (hsv[..., 1] >= 80) & (hsv[..., 2] >= 80)
    ratios = [np.median(_hsv(out)[..., 1][vivid] / hsv[..., 1][vivid]) for out in outs]
    assert 0.45 <= min(ratios) and max(ratios) <= 1.55 and np.ptp(ratios) > 0.3

    (tmp_path / "hue").mkdir()
    src, outs = _distorted(ssd_caffe, tmp_path / "hue", "hue_prob: 1 hue_delta: 18")
    shifts = []
    for out in outs:
        shift = (_hsv(out)[..., 0][vivid] - hsv[..., 0][vivid] + 90) % 180 - 90
        assert np.mean(np.abs(shift - np.median(shift)) <= 2) > 0.95  # one shift for the image
        shifts.append(np.median(shift))
    assert max(abs(s) for s in shifts) <= 18 + 1 and len(set(shifts)) > 5


def test_random_order_permutes_the_channels(ssd_caffe, tmp_path):
    src, outs = _distorted(ssd_caffe, tmp_path, "random_order_prob: 1")
    seen = set()
    for out in outs:
        orders = [p for p in itertools.permutations(range(3)) if np.array_equal(out, src[..., list(p)])]
        assert orders, "the output must be the input with its channels reordered"
        seen.add(orders[0])
    assert len(seen) >= 3


def test_no_distortion_when_probabilities_are_zero(ssd_caffe, tmp_path):
    src, outs = _distorted(ssd_caffe, tmp_path, "brightness_delta: 32 contrast_lower: 0.5 contrast_upper: 1.5",
                           batches=1)
    assert all(np.array_equal(out, src) for out in outs)


# --- batch samplers and emit_constraint --------------------------------------------------

GRID = [(cx, cy) for cy in (0.2, 0.5, 0.8) for cx in (0.2, 0.5, 0.8)]


def _position_image(size=256):
    """B = x, G = y: every output pixel tells where in the source it came from."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def _sampler_boxes():
    boxes = [LabeledBox(1 + i, cx - 0.12, cy - 0.12, cx + 0.12, cy + 0.12) for i, (cx, cy) in enumerate(GRID)]
    return boxes + [LabeledBox(10, 0.1, 0.1, 0.9, 0.9)]


def _crop_of(image, size=256):
    """The normalised source rectangle an output image shows (B = x, G = y; JPEG noise median'ed)."""
    b, g = image[0], image[1]
    x0, x1 = np.median(b[:, 0]), np.median(b[:, -1]) + 1
    y0, y1 = np.median(g[0, :]), np.median(g[-1, :]) + 1
    return np.array([x0, y0, x1, y1]) / size


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _coverage(box, crop):
    w = max(0.0, min(box[2], crop[2]) - max(box[0], crop[0]))
    h = max(0.0, min(box[3], crop[3]) - max(box[1], crop[1]))
    return w * h / ((box[2] - box[0]) * (box[3] - box[1]))


SAMPLER = """batch_sampler {
    sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 }
    sample_constraint { min_jaccard_overlap: 0.5 } max_sample: 1 max_trials: 50 }"""
TOL = 6 / 256  # JPEG noise of the re-encoded crop, in normalised units


@pytest.mark.parametrize("emit", ["emit_type: CENTER", "emit_type: MIN_OVERLAP emit_overlap: 0.5"])
def test_batch_sampler_crops_and_emit_constraint(ssd_caffe, tmp_path, emit):
    boxes = _sampler_boxes()
    source = _lmdb(tmp_path, [(_position_image(), boxes)])
    transform = f"""resize_param {{ resize_mode: WARP height: 300 width: 300 interp_mode: NEAREST }}
        emit_constraint {{ {emit} }}"""
    net = _data_net(ssd_caffe, tmp_path, source, transform, sampler=SAMPLER)
    cropped = 0
    for images, rows in _batches(net, 2):
        for item, image in enumerate(images):
            crop = _crop_of(image)
            w, h = crop[2] - crop[0], crop[3] - crop[1]
            if w * h < 0.95:
                cropped += 1
                assert 0.3 - TOL <= w <= 1 and 0.3 - TOL <= h <= 1
                assert 0.5 - 0.05 <= w / h <= 2 + 0.1  # aspect ratio of a square image's crop
                ious = [_iou(crop, (b.xmin, b.ymin, b.xmax, b.ymax)) for b in boxes]
                assert max(ious) >= 0.5 - 3 * TOL, "sample_constraint min_jaccard_overlap 0.5"
            emitted = {int(r[1]): r[3:7] for r in rows if r[0] == item}
            for b in boxes:
                box = np.array([b.xmin, b.ymin, b.xmax, b.ymax])
                if "CENTER" in emit:
                    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                    margin = min(cx - crop[0], crop[2] - cx, cy - crop[1], crop[3] - cy)
                    if abs(margin) < TOL:
                        continue  # too close to the crop edge to tell
                    expected = margin > 0
                else:
                    coverage = _coverage(box, crop)
                    if abs(coverage - 0.5) < 0.06:
                        continue
                    expected = coverage > 0.5
                assert (b.label in emitted) == expected, (emit, b.label, crop)
                if expected:
                    projected = np.clip((box - crop[[0, 1, 0, 1]]) / np.array([w, h, w, h]), 0, 1)
                    assert np.allclose(emitted[b.label], projected, atol=0.04)
    assert cropped >= 16, "the sampler should crop most images"


# --- the LMDB writer ---------------------------------------------------------------------

def test_annotated_lmdb_groups_boxes_and_skips_bad_images(ssd_caffe, tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _colour_image())
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), np.full((30, 40), 77, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    items = [AnnotatedImage(good, [LabeledBox(3, 0.1, 0.1, 0.5, 0.5), LabeledBox(5, 0, 0, 1, 1),
                                   LabeledBox(3, 0.2, 0.3, 0.4, 0.9, difficult=True)]),
             AnnotatedImage(broken, [LabeledBox(1, 0.1, 0.1, 0.5, 0.5)]),
             AnnotatedImage(gray, []),
             AnnotatedImage(good, [LabeledBox(0, 0.1, 0.1, 0.5, 0.5)]),
             AnnotatedImage(good, [LabeledBox(2, 0.5, 0.1, 0.4, 0.5)])]
    summary = write_annotated_lmdb(tmp_path / "db", items)
    assert summary.written == 2
    reasons = dict(summary.skipped)
    assert [path for path, _ in summary.skipped] == [str(broken), str(good), str(good)]
    assert "cannot decode" in reasons[str(broken)]
    assert "label 0" in summary.skipped[1][1] and "empty" in summary.skipped[2][1]
    entries = list(read_annotated_lmdb(tmp_path / "db"))
    assert [key for key, _ in entries] == ["00000000_good", "00000002_gray"]
    first = entries[0][1]
    assert first.datum.encoded and first.datum.data == good.read_bytes()  # stored as is
    assert [(g.group_label, [a.instance_id for a in g.annotation]) for g in first.annotation_group] == \
        [(3, [0, 1]), (5, [0])]
    assert first.annotation_group[0].annotation[1].bbox.difficult
    gray_datum = entries[1][1].datum
    decoded = cv2.imdecode(np.frombuffer(gray_datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (30, 40, 3) and np.all(decoded == 77)  # re-encoded as 3-channel PNG
    with pytest.raises(FileExistsError):
        write_annotated_lmdb(tmp_path / "db", items)
    with pytest.raises(ValueError, match="no usable image"):
        write_annotated_lmdb(tmp_path / "none", [items[1]])
    assert not (tmp_path / "none").exists() and not (tmp_path / "none.partial").exists()
