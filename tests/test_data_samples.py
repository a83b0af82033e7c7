"""MTCNN training samples: IoU labelling, regression targets, landmark targets, readers' failure
handling, determinism across -j, resumability. Synthetic datasets are built in tmp_path; a few
tests also run on ../shared (skipped without it)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtcnn_caffe.annotations import FIVE_POINT_MIRROR, read_landmark_list, read_wider_gt
from caffe_common.boxes import iou_matrix, iou_one_to_many
from mtcnn_caffe.data.crops import DISCARD, box_targets, crop_resized, detector_crop_boxes, label_crops
from mtcnn_caffe.data.landmarks import LandmarkParams, landmarks_to_image
from mtcnn_caffe.data.pipeline import STATS_KEYS, EmptyInputError, OutputMismatchError, open_sample_dir
from mtcnn_caffe.data.records import LANDMARK, NEGATIVE, PART, POSITIVE, record_dtype, sample_dtype
from mtcnn_caffe.data.tasks import LandmarkTask, WiderCropTask, generate
from mtcnn_caffe.data.wider import CropParams, select_faces

# --------------------------------------------------------------------------- synthetic datasets
FACES = {  # name -> list of (x, y, w, h, invalid)
    "ev/a.png": [(40, 30, 70, 80, 0), (200, 60, 45, 45, 0), (150, 200, 10, 12, 0), (260, 170, 50, 50, 1)],
    "ev/b.png": [],
    "ev/missing.png": [(10, 10, 40, 40, 0)],
    "ev/corrupt.png": [(10, 10, 40, 40, 0)],
    "ev/e.png": [(20, 20, 90, 90, 0), (180, 100, 60, 66, 0)],
}


def _background(rng: np.random.Generator, h: int = 240, w: int = 320) -> np.ndarray:
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def make_wider(root: Path, broken_line: bool = True) -> tuple[Path, Path]:
    """A WIDER-format annotation + images: tiny and invalid faces, an image with no face,
    a missing and a corrupt image, and (optionally) a line that does not parse."""
    rng = np.random.default_rng(7)
    images = root / "images"
    (images / "ev").mkdir(parents=True, exist_ok=True)
    lines = []
    for name, faces in FACES.items():
        if name.endswith("missing.png"):
            pass
        elif name.endswith("corrupt.png"):
            (images / name).write_bytes(b"this is not a png")
        else:
            cv2.imwrite(str(images / name), _background(rng))
        lines += [name, str(len(faces))]
        lines += [f"{x} {y} {w} {h} 0 0 0 {inv} 0 0" for x, y, w, h, inv in faces] or ["0 0 0 0 0 0 0 0 0 0"]
    if broken_line:
        lines += ["ev/broken.png", "two"]
    anno = root / "wider_face_train_bbx_gt.txt"
    anno.write_text("\n".join(lines) + "\n")
    return anno, images


POINT_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], np.uint8)


def make_landmarks(root: Path, count: int = 4) -> tuple[Path, Path]:
    """5-point list + images whose 5 points are painted as discs of distinct colours."""
    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        image = np.full((260, 240, 3), 90, np.uint8)
        left, top, side = 50 + 5 * i, 60 + 3 * i, 130
        pts = np.array([[0.3, 0.35], [0.7, 0.33], [0.5, 0.55], [0.33, 0.78], [0.68, 0.8]]) * side + [left, top]
        pts += rng.uniform(-4, 4, pts.shape)
        for colour, (x, y) in zip(POINT_COLOURS, pts):
            cv2.circle(image, (int(round(x - 0.5)), int(round(y - 0.5))), 9, colour.tolist(), -1)
        cv2.imwrite(str(root / "img" / f"{i}.png"), image)
        coords = " ".join(f"{v:.3f}" for v in pts.reshape(-1))
        # file order: left right top bottom; a Windows path separator as in the original lists
        lines.append(f"img\\{i}.png {left} {left + side} {top} {top + side} {coords}")
    lines.append("img\\bad.png 1 2 three 4")
    path = root / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, root


def all_samples(out: Path) -> np.ndarray:
    d = open_sample_dir(out)
    parts = list(d.iter_samples())
    return np.concatenate(parts) if parts else np.zeros(0, d.dtype)


# --------------------------------------------------------------------------- geometry units
def test_label_crops_uses_best_face_and_ignored_faces_block_negatives():
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [50, 50, 60, 60]], float)
    usable = np.array([True, True, False])
    crops = np.array([
        [0, 0, 10, 10],      # IoU 1 with face 0 -> pos
        [0, 0, 10, 15],      # 100/150 = 0.667 -> pos
        [0, 0, 10, 20],      # 0.5 -> part
        [0, 0, 10, 30],      # 0.333 -> discarded (between 0.3 and 0.4)
        [200, 200, 230, 230],  # no overlap -> neg
        [50, 50, 60, 60],    # exactly on the ignored face -> neither neg nor pos
    ], float)
    labels, best, ious = label_crops(crops, gt, usable)
    assert labels.tolist() == [POSITIVE, POSITIVE, PART, DISCARD, NEGATIVE, DISCARD]
    np.testing.assert_allclose(ious[:4], [1, 100 / 150, 0.5, 1 / 3])
    assert best[5] == 2
    labels, best, _ = label_crops(crops, np.zeros((0, 4)))
    assert (labels == NEGATIVE).all() and (best == -1).all()


def test_box_targets_invert_to_face_and_square_boxes():
    crops = np.array([[10, 20, 50, 60], [0, 0, 12, 12]], float)
    faces = np.array([[12, 18, 47, 66], [1, -2, 11, 13]], float)
    t = box_targets(crops, faces)
    np.testing.assert_allclose(t[0], [2 / 40, -2 / 40, -3 / 40, 6 / 40], rtol=1e-6)
    np.testing.assert_allclose(crops + t * [[40], [12]], faces, atol=1e-5)  # widths 40 and 12
    # detector boxes: 0-based inclusive pixels, truncated in 1-based coordinates -> continuous crops
    crops = detector_crop_boxes(np.array([[10, 10, 33, 33, 0.9], [-1.5, 4.7, 20.2, 26.9, 0.8]]))
    np.testing.assert_array_equal(crops, [[10, 10, 34, 34], [-1, 4, 21, 27]])


def test_crop_resized_pads_outside_with_zeros():
    image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    patch = crop_resized(image, np.array([-2, -3, 6, 5]), 8)  # 8x8: no resize, so exact pixels
    assert patch.shape == (8, 8, 3)
    assert (patch[:3] == 0).all() and (patch[:, :2] == 0).all()
    np.testing.assert_array_equal(patch[3:, 2:], image[0:5, 0:6])
    np.testing.assert_array_equal(crop_resized(image, np.array([2, 2, 8, 8]), 6), image[2:8, 2:8])


def test_select_faces_drops_invalid_and_small(tmp_path):
    anno, _ = make_wider(tmp_path)
    item = read_wider_gt(anno).items[0]
    sel = select_faces(item, min_face=20)
    assert sel.usable.tolist() == [True, True, False, False]
    assert dict(sel.skipped) == {"too_small": 1, "invalid": 1}
    np.testing.assert_array_equal(sel.boxes[0], [40, 30, 110, 110])
    assert select_faces(item, min_face=5, keep_invalid=True).usable.all()


# --------------------------------------------------------------------------- 12-net generation
def _check_random_samples(samples: np.ndarray, anno: Path, images: Path, size: int, min_face: float) -> None:
    """For every sample: IoU(crop, stored face) and the label rules, the regression targets,
    the crop pixels, and (for negatives) the IoU with every annotated face."""
    items = read_wider_gt(anno).items
    crop, face = samples["crop_box"].astype(np.float64), samples["face_box"].astype(np.float64)
    ious = np.array([iou_one_to_many(c, f[None])[0] for c, f in zip(crop, face)])
    labels = samples["label"]
    assert set(np.unique(labels)) <= {POSITIVE, PART, NEGATIVE}
    assert (ious[labels == POSITIVE] >= 0.65).all()
    assert ((ious[labels == PART] >= 0.4) & (ious[labels == PART] < 0.65)).all()
    assert (ious[labels == NEGATIVE] < 0.3).all()
    np.testing.assert_allclose(ious, samples["iou"], atol=1e-5)
    assert (crop[:, 2] - crop[:, 0] == crop[:, 3] - crop[:, 1]).all()  # square crops
    regress = labels != NEGATIVE
    side = (crop[:, 2] - crop[:, 0])[:, None]
    np.testing.assert_allclose(crop[regress] + samples["bbox"][regress] * side[regress], face[regress], atol=1e-3)
    assert (samples["bbox"][~regress] == 0).all() and (samples["landmark"] == 0).all()
    for idx in np.unique(samples["image_index"]):
        mine = samples[samples["image_index"] == idx]
        sel = select_faces(items[idx], min_face)
        all_ious = iou_matrix(mine["crop_box"], sel.boxes)
        neg = mine["label"] == NEGATIVE
        if len(sel.boxes):
            assert (all_ious[neg].max(axis=1) < 0.3).all()  # a negative overlaps no face at all
            # pos/part come from a usable face, and it is the best-overlapping one
            assert sel.usable[mine["face_index"][~neg]].all()
            np.testing.assert_allclose(all_ious[~neg].max(axis=1), mine["iou"][~neg], atol=1e-5)
        image = cv2.imread(str(images / items[idx].name))
        for s in mine[:: max(len(mine) // 5, 1)]:
            np.testing.assert_array_equal(s["image"], crop_resized(image, s["crop_box"], size))


def test_gen_12net_data_labels_targets_and_failures(tmp_path):
    anno, images = make_wider(tmp_path / "wider")
    task = WiderCropTask(anno, images, 12, CropParams(), limit=None)
    stats = generate(task, tmp_path / "out", seed=1, jobs=1, progress=False)
    saved = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert saved == stats
    assert all(isinstance(stats[k], int) for k in STATS_KEYS)
    samples = all_samples(tmp_path / "out")
    counts = {k: int((samples["label"] == v).sum()) for k, v in (("pos", 1), ("part", -1), ("neg", 0))}
    assert counts == {k: stats[k] for k in counts} and min(counts.values()) > 0
    assert stats["landmark"] == 0
    # the missing and the corrupt image are skipped, counted and named; the bad line is reported
    assert stats["failed_images"] == 2
    assert any("missing.png" in f and "no such file" in f for f in stats["failed_image_list"])
    assert any("corrupt.png" in f and "cannot decode" in f for f in stats["failed_image_list"])
    assert stats["annotation_errors"] == 1 and ":" in stats["annotation_error_list"][0]
    assert stats["skipped_faces_by_reason"] == {"invalid": 1, "too_small": 1}
    assert stats["images"] == 5
    _check_random_samples(samples, anno, images, 12, 20)


def test_gen_48net_random_on_shared_wider(shared_dir, tmp_path):
    root = shared_dir / "data" / "wider_train_subset"
    anno, images = root / "wider_face_split" / "wider_face_train_bbx_gt.txt", root / "WIDER_train" / "images"
    task = WiderCropTask(anno, images, 48, CropParams(), limit=6)
    stats = generate(task, tmp_path / "w48", seed=0, jobs=1, progress=False)
    assert stats["failed_images"] == 0 and stats["pos"] > 0 and stats["neg"] > 0
    _check_random_samples(all_samples(tmp_path / "w48"), anno, images, 48, 20)


def test_empty_annotation_is_refused_before_any_output(tmp_path):
    anno = tmp_path / "empty.txt"
    anno.write_text("")
    with pytest.raises(EmptyInputError, match=r"empty\.txt: no image annotations \(empty file\?\)"):
        WiderCropTask(anno, tmp_path, 12, CropParams())
    anno.write_text("ev/a.png\ntwo\n")
    with pytest.raises(EmptyInputError, match=r"no image annotations \(1 unparsable lines, first: .*empty\.txt:2"):
        WiderCropTask(anno, tmp_path, 12, CropParams())
    assert not (tmp_path / "out").exists()


def test_same_samples_for_any_jobs_and_resume_after_interruption(tmp_path):
    anno, images = make_wider(tmp_path / "wider", broken_line=False)
    task = WiderCropTask(anno, images, 12, CropParams())
    run = dict(seed=5, progress=False, chunk_images=2)
    generate(task, tmp_path / "j1", jobs=1, **run)
    generate(task, tmp_path / "j2", jobs=2, **run)
    shards = sorted(p.name for p in (tmp_path / "j1" / "shards").iterdir())
    assert len([s for s in shards if s.endswith(".bin")]) == 3
    for name in shards:
        if name.endswith(".bin"):
            assert (tmp_path / "j1/shards" / name).read_bytes() == (tmp_path / "j2/shards" / name).read_bytes()
    generate(task, tmp_path / "seed6", jobs=1, seed=6, progress=False, chunk_images=2)
    assert (tmp_path / "seed6/shards/00000.bin").read_bytes() != (tmp_path / "j1/shards/00000.bin").read_bytes()

    # Interrupt: the last chunk was half-written, stats.json not yet there.
    out = tmp_path / "j1"
    reference = (out / "shards" / "00001.bin").read_bytes()
    (out / "shards" / "00001.json").unlink()
    (out / "shards" / "00001.bin").rename(out / "shards" / "00001.bin.partial")
    (out / "shards" / "00001.bin.partial").write_bytes(reference[: len(reference) // 3])
    (out / "stats.json").unlink()
    with pytest.raises(RuntimeError, match="incomplete"):
        open_sample_dir(out)
    stats = generate(task, out, jobs=1, **run)
    assert stats["images_this_run"] == 2  # only the unfinished chunk was redone
    assert (out / "shards" / "00001.bin").read_bytes() == reference
    assert not (out / "shards" / "00001.bin.partial").exists()
    with pytest.raises(OutputMismatchError, match="seed"):
        generate(task, out, jobs=1, seed=99, progress=False, chunk_images=2)
    # a damaged output is an error naming the file and line, not a JSON traceback
    (out / "shards" / "00002.json").write_text('{"labels": {}\n  "images": 1}')
    with pytest.raises(ValueError, match=r"00002\.json:2: not valid JSON"):
        generate(task, out, jobs=1, **run)  # the chunk counts as done; its totals cannot be read
    (out / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match=r"manifest\.json:1: not valid JSON"):
        open_sample_dir(out)


# --------------------------------------------------------------------------- landmark samples
def _check_landmark_samples(samples: np.ndarray, faces, size: int, tol_px: float = 0.05) -> None:
    assert (samples["label"] == LANDMARK).all()
    for s in samples:
        face = faces[s["image_index"]]
        back = landmarks_to_image(s["landmark"], s["crop_box"], s["frame"], bool(s["mirrored"]))
        np.testing.assert_allclose(back, face.points, atol=tol_px)  # exact up to float32 rounding
        assert s["iou"] > 0.65 and iou_one_to_many(s["crop_box"], s["face_box"][None])[0] > 0.65
        assert 0 <= s["landmark"].min() and s["landmark"].max() <= 1


def test_landmark_samples_map_back_and_mirror_swaps_points(tmp_path):
    lst, root = make_landmarks(tmp_path / "lm")
    params = LandmarkParams(tries=12, mirror_prob=0.7, rotate_prob=0.7)
    task = LandmarkTask(lst, root, 48, params)
    stats = generate(task, tmp_path / "out", seed=2, jobs=1, progress=False)
    assert stats["annotation_errors"] == 1 and "list.txt:5:" in stats["annotation_error_list"][0]
    samples = all_samples(tmp_path / "out")
    assert stats["landmark"] == len(samples) > 20 and stats["pos"] == stats["neg"] == stats["part"] == 0
    assert samples["mirrored"].any() and (~samples["mirrored"].astype(bool)).any()
    rotated = ~np.all(np.isclose(samples["frame"], [[1, 0, 0], [0, 1, 0]]), axis=(1, 2))
    assert rotated.any() and (~rotated).any()
    _check_landmark_samples(samples, task.items, 48)
    # The crop pixels agree with the targets: at each target sits the disc painted for that
    # point, and in a mirrored crop the left-eye target sits on the painted *right* eye.
    size = 48
    for s in samples:
        for k, (x, y) in enumerate(s["landmark"].reshape(5, 2)):
            pixel = s["image"][min(int(y * size), size - 1), min(int(x * size), size - 1)].astype(int)
            painted = POINT_COLOURS[FIVE_POINT_MIRROR[k] if s["mirrored"] else k].astype(int)
            assert np.abs(pixel - painted).max() < 60, (k, bool(s["mirrored"]), pixel, painted)


def test_mirrored_sample_is_the_flipped_plain_sample(tmp_path):
    lst, root = make_landmarks(tmp_path / "lm", count=2)
    task = LandmarkTask(lst, root, 24, LandmarkParams(tries=6, mirror_prob=1.0, rotate_prob=0.0))
    generate(task, tmp_path / "out", seed=0, jobs=1, progress=False)
    samples = all_samples(tmp_path / "out")
    plain = samples[samples["mirrored"] == 0]
    mirrored = samples[samples["mirrored"] == 1]
    assert len(plain) == len(mirrored) > 0
    for p, m in zip(plain, mirrored):
        np.testing.assert_array_equal(p["crop_box"], m["crop_box"])
        np.testing.assert_array_equal(m["image"], p["image"][:, ::-1])
        pp, mp = p["landmark"].reshape(5, 2), m["landmark"].reshape(5, 2)
        np.testing.assert_allclose(mp[0], [1 - pp[1, 0], pp[1, 1]], atol=1e-6)  # left eye <- right eye
        np.testing.assert_allclose(mp[2], [1 - pp[2, 0], pp[2, 1]], atol=1e-6)  # nose stays
        np.testing.assert_allclose(mp[3], [1 - pp[4, 0], pp[4, 1]], atol=1e-6)  # mouth corners swap
        np.testing.assert_allclose(m["bbox"], [-p["bbox"][2], p["bbox"][1], -p["bbox"][0], p["bbox"][3]], atol=1e-6)


def test_landmark_samples_on_shared_set(shared_dir, tmp_path):
    root = shared_dir / "data" / "landmarks_5pt"
    task = LandmarkTask(root / "trainImageList.txt", root, 12, LandmarkParams(), limit=8)
    stats = generate(task, tmp_path / "l12", seed=0, jobs=1, progress=False)
    assert stats["failed_images"] == 0 and stats["landmark"] > 8
    _check_landmark_samples(all_samples(tmp_path / "l12"), read_landmark_list(root / "trainImageList.txt").items, 12)


def test_record_and_sample_dtypes_are_packed_and_sized():
    for s in (12, 24, 48):
        record = record_dtype(s)
        assert record.itemsize == 60 + 3 * s * s  # the documented size: no padding
        assert [record.fields[k][1] for k in ("label", "bbox", "landmark", "image")] == [0, 4, 20, 60]
        assert sample_dtype(s)["image"].shape == (s, s, 3)
        assert sample_dtype(s).names[:4] == record.names  # a sample starts with its record's fields


def test_landmark_samples_from_celeba_layout(tmp_path):
    """CelebA's two list files (x y w h boxes + 5 points, joined by image name) feed the same generator."""
    lst, root = make_landmarks(tmp_path / "lm", count=3)
    faces = read_landmark_list(lst).items
    boxes = ["3", "image_id x_1 y_1 width height"]
    marks = ["3", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                  "rightmouth_x rightmouth_y"]
    for f in faces:
        x1, y1, x2, y2 = f.box
        boxes.append(f"{f.image} {x1:g} {y1:g} {x2 - x1:g} {y2 - y1:g}")
        marks.append(f"{f.image} " + " ".join(f"{v:.3f}" for v in f.points.reshape(-1)))
    marks[-1] = marks[-1].rsplit(" ", 1)[0]  # one broken landmark row: that face is reported, not used
    (tmp_path / "bbox.txt").write_text("\n".join(boxes) + "\n")
    (tmp_path / "marks.txt").write_text("\n".join(marks) + "\n")
    task = LandmarkTask(None, root, 24, LandmarkParams(), celeba=(tmp_path / "bbox.txt", tmp_path / "marks.txt"))
    assert len(task) == 2 and len(task.annotation_errors) == 2  # the bad row, and its face without landmarks
    generate(task, tmp_path / "out", seed=0, jobs=1, progress=False)
    _check_landmark_samples(all_samples(tmp_path / "out"), task.items, 24)


class FailingSetupTask:
    """A task whose per-process setup fails (like missing weights in a mining worker)."""

    kind, size = "failing", 12

    def __len__(self):
        return 3

    def config(self):
        return {}

    def setup(self):
        raise FileNotFoundError("det1.prototxt not found")

    def run(self, index, rng):  # pragma: no cover - never reached
        raise AssertionError


def test_worker_setup_error_reaches_the_caller_instead_of_hanging(tmp_path):
    from mtcnn_caffe.data.pipeline import run_generator

    for jobs in (1, 2):
        with pytest.raises(FileNotFoundError, match="det1.prototxt"):
            run_generator(FailingSetupTask(), tmp_path / f"out{jobs}", jobs=jobs, progress=False)
        assert not (tmp_path / f"out{jobs}" / "stats.json").exists()
