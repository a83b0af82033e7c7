"""``ssd-mobilenet create-data``: VOC and COCO annotations to the SSD LMDB, label map and name_size file.

On the shared VOC subset every XML object comes back from the LMDB (box = pixel / image size, SSD's
convention, within float32 precision; labels; difficult flags), the name_size lines are the image
sizes, and Caffe's own ``AnnotatedData`` layer reads the records. Synthetic bad inputs are skipped
and named one by one while the run goes on; unusable runs are refused with nothing written.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssd_mobilenet.annotated_lmdb import read_annotated_lmdb
from ssd_mobilenet.cli import main
from ssd_mobilenet.datasets import (DatasetError, OutputFiles, convert, normalise_boxes, read_coco, read_labels,
                                    read_voc)
from ssd_mobilenet.labelmap import load_labelmap
from tests.conftest import write_prototxt


# --------------------------------------------------------------------------- helpers
def _records(lmdb_path: Path) -> list[tuple[str, list[tuple[int, float, float, float, float, bool]]]]:
    """``(key, [(label, xmin, ymin, xmax, ymax, difficult), ...])`` of every record, boxes in stored order."""
    out = []
    for key, anno in read_annotated_lmdb(lmdb_path):
        boxes = [(g.group_label, a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, a.bbox.difficult)
                 for g in anno.annotation_group for a in g.annotation]
        out.append((key, boxes))
    return out


def _xml_boxes(xml: Path, label_of: dict[str, int], width: int, height: int) -> list[tuple]:
    """The XML's objects as SSD stores them (grouped by label in order of first appearance)."""
    groups: dict[int, list[tuple]] = {}
    for obj in ET.parse(xml).getroot().findall("object"):
        label = label_of[obj.findtext("name").strip()]
        x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        groups.setdefault(label, []).append((label, x1 / width, y1 / height, x2 / width, y2 / height,
                                             obj.findtext("difficult") == "1"))
    return [box for boxes in groups.values() for box in boxes]


def _assert_same_boxes(stored: list[tuple], expected: list[tuple]) -> None:
    assert [(b[0], b[5]) for b in stored] == [(b[0], b[5]) for b in expected]
    np.testing.assert_allclose(np.array([b[1:5] for b in stored]).reshape(-1, 4),
                               np.array([b[1:5] for b in expected], np.float32).reshape(-1, 4), rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def voc_mini(shared_dir):
    return shared_dir / "data" / "voc_mini"


@pytest.fixture(scope="module")
def converted(voc_mini, tmp_path_factory, caffe):
    """voc_mini trainval (2 worker processes) and test (in-process) converted into one folder."""
    out = tmp_path_factory.mktemp("voc_mini_out")
    results = {"trainval": convert(read_voc(voc_mini, "trainval"), out, "trainval", workers=2),
               "test": convert(read_voc(voc_mini, "test"), out, "test", workers=1)}
    return out, results


# --------------------------------------------------------------------------- voc_mini
@pytest.mark.parametrize("split", ["trainval", "test"])
def test_voc_mini_round_trips_every_object(voc_mini, converted, split):
    out, results = converted
    ids = (voc_mini / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    names = (voc_mini / "labels.txt").read_text().split()
    label_of = {name: i + 1 for i, name in enumerate(names)}
    records = _records(out / f"{split}_lmdb")
    assert [key for key, _ in records] == [f"{i:08d}_{image_id}" for i, image_id in enumerate(ids)]
    sizes, objects, difficult = [], 0, 0
    for (key, stored), image_id in zip(records, ids):
        height, width = cv2.imread(str(voc_mini / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        expected = _xml_boxes(voc_mini / "Annotations" / f"{image_id}.xml", label_of, width, height)
        _assert_same_boxes(stored, expected)
        sizes.append(f"{image_id} {height} {width}")
        objects += len(expected)
        difficult += sum(b[5] for b in expected)
    assert (out / f"{split}_name_size.txt").read_text().splitlines() == sizes
    result = results[split]
    assert (result.images, result.objects, result.difficult) == (len(ids), objects, difficult)
    assert not result.log.problems and not result.log.notes
    assert (out / f"{split}_problems.txt").read_text() == ""
    if split == "test":
        assert difficult == 3  # the official VOC2007 test flags are kept


def test_voc_mini_labelmap_and_stored_images(voc_mini, converted):
    out, _ = converted
    items = load_labelmap(out / "labelmap.prototxt", 21)
    assert [item.name for item in items[1:]] == (voc_mini / "labels.txt").read_text().split()
    assert [item.label for item in items] == list(range(21))
    _, anno = next(read_annotated_lmdb(out / "test_lmdb"))
    assert anno.datum.encoded and anno.datum.data == (voc_mini / "JPEGImages" / "000001.jpg").read_bytes()
    assert (anno.datum.height, anno.datum.width, anno.datum.channels) == (500, 353, 3)


def test_caffe_annotated_data_layer_reads_the_lmdb(caffe, converted, tmp_path):
    out, results = converted
    source = out / "test_lmdb"
    stored = _records(source)
    batch = results["test"].images
    net = caffe.Net(write_prototxt(tmp_path, f"""
layer {{ name: "data" type: "AnnotatedData" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ resize_param {{ resize_mode: WARP height: 300 width: 300 }} }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}
  annotated_data_param {{ label_map_file: "{out / 'labelmap.prototxt'}" }}
}}"""), caffe.TEST)
    net.forward()
    rows = net.blobs["label"].data.reshape(-1, 8)
    assert net.blobs["data"].data.shape == (batch, 3, 300, 300)
    assert len(rows) == results["test"].objects == sum(len(boxes) for _, boxes in stored)
    expected = np.array([(item, *box) for item, (_, boxes) in enumerate(stored) for box in boxes], np.float64)
    # label row: item, label, instance, xmin, ymin, xmax, ymax, difficult (WARP keeps normalised boxes)
    np.testing.assert_array_equal(rows[:, [0, 1]], expected[:, [0, 1]])
    np.testing.assert_allclose(rows[:, 3:7], expected[:, 2:6], atol=1e-6)
    np.testing.assert_array_equal(rows[:, 7], expected[:, 6])


def test_cli_refuses_to_replace_outputs_without_overwrite(voc_mini, tmp_path, capsys):
    argv = ["create-data", "--voc", str(voc_mini), "--split", "test", "--out", str(tmp_path), "--workers", "1",
            "--no-progress"]
    assert main(argv) == 0
    assert "7 images, 20 objects (3 difficult)" in capsys.readouterr().out
    assert main(argv) == 2
    assert "test_lmdb: already exists; pass --overwrite" in capsys.readouterr().err
    labels = tmp_path / "mine.txt"
    labels.write_text("dog\ncat\nperson\n")
    assert main(argv + ["--overwrite", "--labels", str(labels)]) == 0  # other classes skipped, the run goes on
    captured = capsys.readouterr()
    assert "unknown class, skipped" in captured.err
    assert [item.name for item in load_labelmap(tmp_path / "labelmap.prototxt")] == \
        ["none_of_the_above", "dog", "cat", "person"]
    files = OutputFiles.of(tmp_path, "test")
    stored = {label for _, boxes in _records(files.lmdb) for label, *_ in boxes}
    assert stored <= {1, 2, 3}
    lines = files.problems.read_text().splitlines()
    problems = [line for line in lines if not line.startswith("note: ")]
    assert len(problems) == 20 - sum(len(boxes) for _, boxes in _records(files.lmdb))
    assert all(line.endswith("unknown class, skipped") for line in problems)
    assert [line for line in lines if line.startswith("note: ")] == \
        ["note: Annotations/000067.xml: no usable objects (1 skipped); kept as an image without boxes"]
    # the folder's label map now has 3 classes: a conversion with the 20 VOC classes is refused there
    import shutil

    shutil.rmtree(files.lmdb)
    files.name_size.unlink()
    assert main(argv) == 2
    assert "labelmap.prototxt: exists with other classes" in capsys.readouterr().err
    assert not files.lmdb.exists() and not files.name_size.exists()


# --------------------------------------------------------------------------- synthetic bad input
W, H = 100, 80


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def _obj(name: str, box, difficult: str = "0") -> str:
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"


def _xml(*objects: str, size=(W, H)) -> str:
    return (f"<annotation><filename>x.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>")


SYNTHETIC = {  # image id: XML (None: no XML file)
    "good": _xml(_obj("dog", (10, 10, 50, 40)), _obj("cat", (5, 5, 30, 30), "1")),
    "unknown": _xml(_obj("dragon", (1, 1, 20, 20)), _obj("Dog", (1, 1, 20, 20)), _obj("dog", (10, 10, 50, 40))),
    "degenerate": _xml(_obj("dog", (50, 10, 10, 40)), _obj("cat", (10, 10, 50, 40))),
    "outside": _xml(_obj("dog", (150, 10, 190, 40)), _obj("cat", (10, 10, 50, 40))),
    "clipped": _xml(_obj("dog", (-5, 10, 120, 40))),
    "empty": _xml(),
    "nan": _xml(_obj("dog", ("nan", 10, 50, 40)), _obj("cat", (10, 10, 50, 40), "yes")),
    "missing_image": _xml(_obj("dog", (10, 10, 50, 40))),
    "corrupt": _xml(_obj("dog", (10, 10, 50, 40))),
    "malformed": "<annotation><object><name>dog</name>",
    "mismatch": _xml(_obj("dog", (10, 10, 50, 40)), size=(200, 200)),
    "no_xml": None,
}


@pytest.fixture()
def bad_voc(tmp_path) -> Path:
    root = tmp_path / "voc"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "labels.txt").write_text("dog\ncat\n")
    for seed, (image_id, xml) in enumerate(SYNTHETIC.items()):
        if xml is not None:
            (root / "Annotations" / f"{image_id}.xml").write_text(xml)
        if image_id != "missing_image":
            _image(root / "JPEGImages" / f"{image_id}.jpg", seed)
    corrupt = root / "JPEGImages" / "corrupt.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join([*SYNTHETIC, "good"]) + "\n")
    return root


def test_bad_voc_input_is_skipped_and_named_while_the_run_goes_on(bad_voc, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["create-data", "--voc", str(bad_voc), "--split", "train", "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    files = OutputFiles.of(out, "train")
    lines = files.problems.read_text().splitlines()
    problems = [line for line in lines if not line.startswith("note: ")]
    notes = [line[len("note: "):] for line in lines if line.startswith("note: ")]
    expected_problems = [
        "Annotations/unknown.xml: object 1 ('dragon'): unknown class, skipped",
        "Annotations/unknown.xml: object 2 ('Dog'): unknown class (did you mean 'dog'? names are case-sensitive), "
        "skipped",
        "Annotations/degenerate.xml: object 1 ('dog'): degenerate box (xmin 50 >= xmax 10), skipped",
        "Annotations/nan.xml: object 1 ('dog'): <xmin> 'nan' is not a finite number, skipped",
        "Annotations/nan.xml: object 2 ('cat'): <difficult> 'yes' is not 0 or 1, skipped",
        "Annotations/missing_image.xml: image not found (JPEGImages/missing_image.jpg or JPEGImages/x.jpg); "
        "image skipped",
        "Annotations/no_xml.xml: not found; image skipped",
        "ImageSets/Main/train.txt: image good is listed again; repeat skipped",
        "Annotations/outside.xml: object 1 ('dog'): box (150, 10, 190, 40) lies outside the 100x80 image, skipped",
    ]
    for expected in expected_problems:
        assert expected in problems
    assert any(p.startswith("Annotations/malformed.xml:1: XML does not parse") and p.endswith("image skipped")
               for p in problems)
    assert any(p.startswith("Annotations/corrupt.xml: ") and "corrupt.jpg" in p and p.endswith("image skipped")
               for p in problems)
    assert len(problems) == len(expected_problems) + 2
    assert notes == [
        "Annotations/clipped.xml: object 1 ('dog'): box (-5, 10, 120, 40) clipped to the 100x80 image",
        "Annotations/empty.xml: no objects; kept as an image without boxes",
        "Annotations/nan.xml: no usable objects (2 skipped); kept as an image without boxes",
        "Annotations/mismatch.xml: the annotation gives the size 200x200 but mismatch.jpg is 100x80; boxes are "
        "normalised by the image's own size",
    ]
    assert expected_problems[0] in captured.err  # the first problems are printed too
    assert "skipped 5 images and 6 objects; 1 boxes clipped" in captured.out

    records = dict(_records(files.lmdb))
    ids = [key.split("_", 1)[1] for key in records]
    assert ids == ["good", "unknown", "degenerate", "outside", "clipped", "empty", "nan", "mismatch"]
    key = {image_id: k for image_id, k in zip(ids, records)}
    _assert_same_boxes(records[key["good"]], [(1, .1, .125, .5, .5, False), (2, .05, .0625, .3, .375, True)])
    _assert_same_boxes(records[key["clipped"]], [(1, 0, .125, 1, .5, False)])
    _assert_same_boxes(records[key["outside"]], [(2, .1, .125, .5, .5, False)])
    assert records[key["empty"]] == [] and records[key["nan"]] == []
    assert files.name_size.read_text().splitlines() == [f"{i} {H} {W}" for i in ids]

    # the same in two worker processes, without the empty images: identical records
    from caffe_common.parallel import ordered_map

    pools = []
    monkeypatch.setattr("ssd_mobilenet.datasets.IMAGES_PER_WORKER", 1)  # a pool even for a few images
    monkeypatch.setattr("ssd_mobilenet.datasets.ordered_map",
                        lambda func, items, workers, **kw: pools.append(workers) or ordered_map(func, items, workers, **kw))
    parallel = convert(read_voc(bad_voc, "train"), tmp_path / "parallel", "train", workers=2, skip_empty=True)
    again = dict(_records(OutputFiles.of(tmp_path / "parallel", "train").lmdb))
    assert set(again) == set(records) - {key["empty"], key["nan"]}
    assert all(again[k] == records[k] for k in again)
    assert parallel.log.counts["empty images skipped"] == 2 and parallel.images == 6 and pools == [2]


def test_unusable_runs_are_refused_with_nothing_written(bad_voc, tmp_path, capsys):
    out = tmp_path / "out"

    def refused(*args: str) -> str:
        assert main(["create-data", "--voc", str(bad_voc), "--out", str(out), "--workers", "1", "--no-progress",
                     *args]) == 2
        assert not out.exists() or not any(out.iterdir())
        return capsys.readouterr().err

    assert "image set list not found" in refused("--split", "nope")
    (bad_voc / "ImageSets" / "Main" / "broken.txt").write_text("malformed\nno_xml\ncorrupt\n")
    err = refused("--split", "broken")
    assert "no usable image (3 problems, 0 notes)" in err and "malformed.xml:1: XML does not parse" in err
    (bad_voc / "twice.txt").write_text("dog\ncat\n\ndog\n")
    assert "class 'dog' is given twice (classes 1 and 3)" in refused("--split", "train", "--labels",
                                                                       str(bad_voc / "twice.txt"))
    (bad_voc / "bg.txt").write_text("background\ndog\n")
    assert "the background is label 0 and added automatically" in refused("--split", "train", "--labels",
                                                                            str(bad_voc / "bg.txt"))
    assert "split '../x'" in refused("--split", "../x")
    assert "--crowd is for --coco" in refused("--split", "train", "--crowd", "skip")


# --------------------------------------------------------------------------- COCO
def test_coco_instances_convert_with_categories_sorted_by_id(tmp_path, capsys):
    images = tmp_path / "images"
    for i in (1, 2, 3):
        _image(images / f"{i:012d}.jpg", i)
    coco = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": W, "height": H} for i in (1, 2, 3)]
        + [{"id": 4, "file_name": "missing.jpg", "width": W, "height": H}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 18, "bbox": [0, 0, 50, 50], "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [60, 10, 60, 20], "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 99, "bbox": [1, 1, 5, 5]},
            {"id": 14, "image_id": 2, "category_id": 3, "bbox": [1, 1, 0, 5]},
            {"id": 15, "image_id": 42, "category_id": 3, "bbox": [1, 1, 5, 5]},
        ],
    }
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert main(["create-data", "--coco", str(instances), "--images", str(images), "--split", "val", "--out",
                 str(out), "--workers", "1", "--no-progress"]) == 0
    files = OutputFiles.of(out, "val")
    assert [item.name for item in load_labelmap(files.labelmap, 4)] == ["none_of_the_above", "person", "car", "dog"]
    records = _records(files.lmdb)
    assert [key for key, _ in records] == ["00000000_1", "00000001_2", "00000002_3"]
    _assert_same_boxes(records[0][1], [(1, .1, .25, .4, .75, False), (3, 0, 0, .5, .625, True)])  # crowd: difficult
    _assert_same_boxes(records[1][1], [(2, .6, .125, 1, .375, False)])  # x + w = 120 clipped to 100
    assert records[2][1] == []
    assert files.name_size.read_text() == f"1 {H} {W}\n2 {H} {W}\n3 {H} {W}\n"
    problems = files.problems.read_text().splitlines()
    assert "instances.json: image 2 ('000000000002.jpg'): annotation 13: category_id 99 is not in \"categories\", " \
           "skipped" in problems
    assert "instances.json: image 2 ('000000000002.jpg'): annotation 14 ('car'): degenerate box (width 0, height 5), " \
           "skipped" in problems
    assert "instances.json: annotation 15 ('car'): image_id 42 is not among the usable images, skipped" in problems
    assert any(line.startswith("instances.json: image 4 ('missing.jpg'): image file") for line in problems)
    assert "note: instances.json: image 3 ('000000000003.jpg'): no objects; kept as an image without boxes" in problems

    skipped = read_coco(instances, images, crowd="skip")
    assert [len(r.boxes) for r in skipped.records] == [1, 1, 0] and skipped.log.counts["crowd boxes skipped"] == 1
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DatasetError, match="broken.json: not JSON"):
        read_coco(broken, images)
    broken.write_text('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}')
    with pytest.raises(DatasetError, match="class 'a' is given twice"):
        read_coco(broken, images)


# --------------------------------------------------------------------------- pieces
def test_normalise_boxes_clips_and_marks_outside():
    pixels = [[-10, 5, 50, 90], [0, 0, 100, 80], [100, 0, 120, 10], [10, 10, 20, 20], [-30, -20, 0, 10]]
    normalised, outside, clipped = normalise_boxes(np.array(pixels, float), 100, 80)
    np.testing.assert_array_equal(outside, [False, False, True, False, True])
    np.testing.assert_array_equal(clipped, [True, False, False, False, False])
    np.testing.assert_allclose(normalised[[0, 1, 3]], [[0, 5 / 80, .5, 1], [0, 0, 1, 1], [.1, .125, .2, .25]])


def test_labels_from_a_labelmap_prototxt(shared_dir, tmp_path):
    items = read_labels(shared_dir / "reference" / "mobilenet_ssd" / "labelmap_example.prototxt")
    assert [(item.name, item.label) for item in items[1:3]] == [("car", 1), ("bus", 2)] and len(items) == 6
    mine = tmp_path / "labelmap.prototxt"  # items in any order, display names kept
    mine.write_text('item { name: "cat" label: 2 display_name: "Cat" }\n'
                    'item { name: "bg" label: 0 display_name: "background" }\n'
                    'item { name: "dog" label: 1 display_name: "Dog" }\n')
    assert [(item.name, item.label, item.display_name) for item in read_labels(mine)[1:]] == \
        [("dog", 1, "Dog"), ("cat", 2, "Cat")]
    assert [item.name for item in read_labels(None)[1:3]] == ["aeroplane", "bicycle"]
    with pytest.raises(DatasetError, match="label map not found"):
        read_labels(tmp_path / "missing.prototxt")


def test_lmdb_writer_grows_its_map_and_keeps_every_record(tmp_path, monkeypatch):
    # a small first map that must be doubled several times, mid-batch and at a commit
    import ssd_mobilenet.annotated_lmdb as annotated_lmdb

    monkeypatch.setattr(annotated_lmdb, "_INITIAL_MAP_SIZE", 1 << 16)
    monkeypatch.setattr(annotated_lmdb, "_COMMIT_EVERY", 7)
    rng = np.random.default_rng(0)
    values = {f"{i:05d}".encode(): rng.bytes(3000 + 37 * i) for i in range(120)}
    with annotated_lmdb.LmdbWriter(tmp_path / "db") as writer:
        for key, value in values.items():
            writer.put(key, value)
    assert writer.map_size > 1 << 16 and writer.written == len(values)
    import lmdb

    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    with env.begin() as txn:
        assert dict(txn.cursor()) == values
    env.close()
    assert not (tmp_path / "db.partial").exists()
    with pytest.raises(RuntimeError), annotated_lmdb.LmdbWriter(tmp_path / "db2") as writer:
        writer.put(b"a", b"b")
        raise RuntimeError("interrupted")
    assert not (tmp_path / "db2").exists() and not (tmp_path / "db2.partial").exists()


def test_shell_wrapper_runs_the_command(voc_mini, tmp_path):
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "create_data.sh"
    done = subprocess.run([str(script), "--voc", str(voc_mini), "--split", "test", "--out", str(tmp_path),
                           "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "7 images, 20 objects (3 difficult)" in done.stdout
    assert len((tmp_path / "test_name_size.txt").read_text().splitlines()) == 7
