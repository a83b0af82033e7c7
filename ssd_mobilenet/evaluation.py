"""One pass of an SSD test net over its whole test LMDB, and its mAP computed two ways.

* **Caffe**: the net's own ``DetectionEvaluate`` layer marks every detection true or false positive
  (and counts the positives per class); the rows are gathered exactly as ``Solver::TestDetection``
  does (rows matching a difficult object, tp = fp = 0, are dropped) and ranked by score into an
  11-point AP per class (``ComputeAP``'s ``"11point"``, which is the VOC07 definition).
* **Python**: the same forward pass's ``DetectionOutput`` rows, in pixels, written as VOC devkit
  detection files and scored by :mod:`caffe_common.eval.voc` against the ground truth (the VOC
  XML files when given, else the LMDB's own boxes).

Both see the same detections and, because ``DetectionEvaluate`` is given a ``name_size_file`` with
every image's size, the same pixel boxes and the devkit's ``+1`` IoU, so they agree (a test holds
them within 0.001). Caffe's solver divides the sum of APs by *all* object classes; the VOC
convention, used for ``map`` here, averages the classes that have objects in the test set. Both
are reported.

The test net is run with batch size 1 and as many iterations as the LMDB has records: one exact
pass, whatever the test set's size (Caffe's data layer wraps around at the end, so a batch that
does not divide the set would count some images twice).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from caffe_common.eval.curves import ranked_precision_recall, voc_ap_11_point
from caffe_common.eval.voc import (ClassDetections, VocObjects, evaluate_class, mean_over_present_classes,
                                   read_voc_xml)
from caffe_common.model_files import (TEST_PHASE, CaffeModelError, only_layer, path_in_prototxt, phase_layers,
                                      read_net_prototxt)

DETECTION_FILE = "comp4_det_{split}_{name}.txt"
_NETS_MADE = 0
_KEY_INDEX = re.compile(r"^\d{8}_")
_IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "ppm", "pgm"}
_TEST_NET_HINT = "counting the TEST-phase layers; use the MobileNetSSD_test.prototxt that gen-model writes"


class SsdTestError(ValueError):
    """A test net or test set that cannot be evaluated (the message names the file and the fix)."""


# --------------------------------------------------------------------------- the test set
@dataclass
class TestImage:
    """One LMDB record: the image id (file stem), its size, and its ground truth in pixels."""

    image_id: str
    width: int
    height: int
    labels: np.ndarray          # (N,) int
    boxes: np.ndarray           # (N, 4) x1 y1 x2 y2 pixels (normalised box x image size)
    difficult: np.ndarray       # (N,) bool


def image_id_of_key(key: str) -> str:
    """``00000012_VOC2007/JPEGImages/000005.jpg`` (SSD's converter) or ``00000012_000005`` (ours) -> ``000005``;
    an id with a dot (``00000012_a.b``) keeps it, only an image file extension is dropped."""
    name = Path(_KEY_INDEX.sub("", key, count=1)).name
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and ext.lower() in _IMAGE_EXTENSIONS else name


def _datum_size(anno: Any) -> tuple[int, int]:
    datum = anno.datum
    if datum.width > 0 and datum.height > 0:
        return int(datum.width), int(datum.height)
    import cv2

    image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR) if datum.encoded else None
    if image is None:
        raise SsdTestError("a record stores neither its size nor a decodable image")
    return image.shape[1], image.shape[0]


def read_test_set(lmdb_path: str | Path) -> list[TestImage]:
    """Every record of an ``AnnotatedDatum`` LMDB, in the order Caffe reads them."""
    from .annotated_lmdb import read_annotated_lmdb

    images, seen = [], set()
    for key, anno in read_annotated_lmdb(lmdb_path):
        try:
            width, height = _datum_size(anno)
        except SsdTestError as exc:
            raise SsdTestError(f"{lmdb_path}: record {key}: {exc}") from None
        labels, boxes, difficult = [], [], []
        for group in anno.annotation_group:
            for annotation in group.annotation:
                b = annotation.bbox
                labels.append(group.group_label)
                boxes.append((b.xmin * width, b.ymin * height, b.xmax * width, b.ymax * height))
                difficult.append(b.difficult)
        image_id = image_id_of_key(key)
        if image_id in seen:  # two files with one stem: keep them apart
            image_id = key
        seen.add(image_id)
        images.append(TestImage(image_id, width, height, np.array(labels, int),
                                np.array(boxes, np.float64).reshape(-1, 4), np.array(difficult, bool)))
    if not images:
        raise SsdTestError(f"{lmdb_path}: the test LMDB has no records")
    return images


def write_name_size(path: Path, images: Sequence[TestImage]) -> Path:
    """``image_id height width`` per record, the ``name_size_file`` of ``DetectionEvaluate``."""
    path.write_text("".join(f"{im.image_id} {im.height} {im.width}\n" for im in images))
    return path


# --------------------------------------------------------------------------- the test net
@dataclass
class TestNetLayout:
    """What this module needs to know of a test net: its layers and settings."""

    data_layer: str
    lmdb: Path
    labelmap: Path | None
    output_top: str              # DetectionOutput top
    evaluate_top: str            # DetectionEvaluate top
    num_classes: int
    background: int
    overlap_threshold: float
    evaluate_difficult: bool


def test_net_layout(net: Any, path: Path) -> TestNetLayout:
    """Find the data, output and evaluation layers of a parsed test net; refuse nets we cannot run."""
    layers = phase_layers(net, TEST_PHASE)
    data = only_layer(layers, "AnnotatedData", path, _TEST_NET_HINT, SsdTestError)
    output = only_layer(layers, "DetectionOutput", path, _TEST_NET_HINT, SsdTestError)
    evaluate = only_layer(layers, "DetectionEvaluate", path, _TEST_NET_HINT, SsdTestError)
    if evaluate.bottom[0] != output.top[0]:
        raise SsdTestError(f"{path}: layer '{evaluate.name}' evaluates '{evaluate.bottom[0]}', not the "
                           f"DetectionOutput top '{output.top[0]}'")
    ev = evaluate.detection_evaluate_param
    if ev.num_classes != output.detection_output_param.num_classes:
        raise SsdTestError(f"{path}: DetectionEvaluate has num_classes {ev.num_classes} but DetectionOutput "
                           f"{output.detection_output_param.num_classes}; they must be equal")
    labelmap = data.annotated_data_param.label_map_file
    return TestNetLayout(data.name, path_in_prototxt(data.data_param.source, path),
                         path_in_prototxt(labelmap, path) if labelmap else None,
                         output.top[0], evaluate.top[0], int(ev.num_classes), int(ev.background_label_id),
                         float(ev.overlap_threshold), bool(ev.evaluate_difficult_gt))


def single_pass_net(net: Any, layout: TestNetLayout, name_size: Path) -> Any:
    """A copy of the test net reading its LMDB one image at a time, with ``name_size`` for the evaluator."""
    out = type(net)()
    out.CopyFrom(net)
    for layer in out.layer:
        if layer.name == layout.data_layer:
            layer.data_param.batch_size = 1
            layer.data_param.source = str(Path(layout.lmdb).absolute())
            if layout.labelmap:
                layer.annotated_data_param.label_map_file = str(Path(layout.labelmap).absolute())
        elif layer.type == "DetectionEvaluate":
            layer.detection_evaluate_param.name_size_file = str(name_size)
    return out


# --------------------------------------------------------------------------- results
@dataclass
class ClassAp:
    """One class: positives in the test set, detections, and the AP of each side."""

    name: str
    positives: int
    detections: int
    caffe_ap: float
    python_ap: float
    python_ap_all_point: float
    recall: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    precision: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


@dataclass
class SsdTestResult:
    """A whole test pass."""

    images: int
    classes: dict[int, ClassAp]
    caffe_solver_map: float       # Caffe's solver convention: sum of APs / number of object classes
    detection_files: list[Path] = field(default_factory=list)

    def _mean(self, attr: str) -> float:
        return mean_over_present_classes(self.classes.values(), attr)

    @property
    def caffe_map(self) -> float:
        """VOC07 11-point mAP from ``DetectionEvaluate``, over the classes with objects in the test set."""
        return self._mean("caffe_ap")

    @property
    def python_map(self) -> float:
        """VOC07 11-point mAP of the devkit evaluation of the written detections."""
        return self._mean("python_ap")

    def summary_line(self) -> str:
        used = sum(1 for c in self.classes.values() if c.positives)
        return (f"mAP (VOC07 11-point, {used} classes with objects, {self.images} images): "
                f"DetectionEvaluate {self.caffe_map:.4f}, Python VOC {self.python_map:.4f} "
                f"(Caffe solver convention, /{len(self.classes)} classes: {self.caffe_solver_map:.4f})")

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "map_voc07_11point": {"detection_evaluate": self.caffe_map, "python_voc": self.python_map},
            "caffe_solver_map": self.caffe_solver_map,
            "classes": {c.name: {"label": label, "positives": c.positives, "detections": c.detections,
                                 "ap_detection_evaluate": c.caffe_ap if c.positives else None,
                                 "ap_python_voc": c.python_ap if c.positives else None,
                                 "ap_python_all_point": c.python_ap_all_point if c.positives else None}
                        for label, c in self.classes.items()},
        }


class DetectionTally:
    """The ``DetectionEvaluate`` rows of many forward passes, gathered like ``Solver::TestDetection``."""

    def __init__(self) -> None:
        self.positives: dict[int, int] = {}
        self.rows: dict[int, list[tuple[float, int, int]]] = {}

    def add(self, rows: np.ndarray) -> None:
        """Rows ``[image, label, score|num_pos, tp, fp]`` of one forward pass."""
        for image, label, value, tp, fp in np.asarray(rows, dtype=np.float64).reshape(-1, 5):
            label = int(label)
            if int(image) == -1:
                self.positives[label] = self.positives.get(label, 0) + int(value)
            elif not (int(tp) == 0 and int(fp) == 0):   # matched a difficult object: not counted
                self.rows.setdefault(label, []).append((float(value), int(tp), int(fp)))

    def average_precision(self, label: int) -> float:
        """``ComputeAP(..., "11point")``: 0 when the class has no positives or no detections."""
        rows, positives = self.rows.get(label, []), self.positives.get(label, 0)
        if not rows or not positives:
            return 0.0
        table = np.array(rows, dtype=np.float64)
        order = np.argsort(-table[:, 0], kind="stable")
        recall, precision = ranked_precision_recall(table[order, 1], table[order, 2], positives)
        return voc_ap_11_point(recall, precision)


# --------------------------------------------------------------------------- the pass
def class_names(labelmap: Path | None, num_classes: int, background: int) -> dict[int, str]:
    """Label -> display name for the object classes (``class_<k>`` when there is no label map)."""
    names = {k: f"class_{k}" for k in range(num_classes) if k != background}
    if labelmap is not None:
        from .labelmap import read_labelmap

        for item in read_labelmap(labelmap):
            if item.label in names:
                names[item.label] = item.display_name or item.name
    return names


def _pixel_detections(rows: np.ndarray, image: TestImage) -> np.ndarray:
    """``DetectionOutput`` rows -> ``(label, score, x1, y1, x2, y2)`` in pixels (``ScaleBBox``'s scaling)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    rows = rows[(rows[:, 0] >= 0) & (rows[:, 1] >= 0)]  # "no detection" rows have label -1
    scale = np.array([image.width, image.height, image.width, image.height], np.float64)
    return np.column_stack([rows[:, 1], rows[:, 2], rows[:, 3:7] * scale])


def _ground_truth(images: Sequence[TestImage], names: dict[int, str], voc_root: Path | None,
                  evaluate_difficult: bool) -> dict[str, VocObjects]:
    truth = {}
    for image in images:
        if voc_root is not None:
            objects = read_voc_xml(Path(voc_root) / "Annotations" / f"{image.image_id}.xml")
        else:
            objects = VocObjects([names.get(int(k), f"class_{k}") for k in image.labels], image.boxes,
                                 image.difficult.copy())
        if evaluate_difficult:
            objects = VocObjects(objects.classes, objects.boxes, np.zeros(len(objects.classes), bool))
        truth[image.image_id] = objects
    return truth


def _write_detection_files(out_dir: Path, split: str, names: dict[int, str],
                           per_class: dict[int, list[tuple[str, float, np.ndarray]]]) -> list[Path]:
    from caffe_common.atomic import write_text_atomic

    files = []
    for label, name in names.items():
        lines = "".join(f"{image_id} {score:.6f} {' '.join(f'{v:.2f}' for v in box)}\n"
                        for image_id, score, box in per_class.get(label, []))
        files.append(write_text_atomic(out_dir / DETECTION_FILE.format(split=split, name=name), lines))
    return files


def run_test_pass(net: Any, layout: TestNetLayout, images: Sequence[TestImage], names: dict[int, str], *,
                  voc_root: Path | None = None, detections_dir: Path | None = None, split: str = "test",
                  progress: Callable[[int], Any] | None = None) -> SsdTestResult:
    """Forward ``net`` (a :func:`single_pass_net`) once per image; both evaluations of the pass."""
    tally = DetectionTally()
    per_class: dict[int, list[tuple[str, float, np.ndarray]]] = {}
    bar = progress(len(images)) if progress else None
    for image in images:
        net.forward()
        tally.add(net.blobs[layout.evaluate_top].data)
        for label, score, *box in _pixel_detections(net.blobs[layout.output_top].data, image):
            per_class.setdefault(int(label), []).append((image.image_id, float(score), np.array(box)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    truth = _ground_truth(images, names, voc_root, layout.evaluate_difficult)
    classes = {}
    for label, name in names.items():
        found = per_class.get(label, [])
        detections = ClassDetections([d[0] for d in found], np.array([d[1] for d in found], np.float64),
                                     np.array([d[2] for d in found], np.float64).reshape(-1, 4))
        python = evaluate_class(truth, name, detections, layout.overlap_threshold)
        classes[label] = ClassAp(name, python.positives, len(found), tally.average_precision(label),
                                 python.ap_07 if python.positives else float("nan"),
                                 python.ap_all if python.positives else float("nan"),
                                 python.recall, python.precision)
        if python.positives != tally.positives.get(label, 0):
            raise SsdTestError(f"class {name!r}: {tally.positives.get(label, 0)} objects in the test LMDB but "
                               f"{python.positives} in the ground truth given (--voc); they must describe the "
                               "same images (was the LMDB made from another split?)")
    solver_map = sum(c.caffe_ap for c in classes.values()) / max(1, len(classes))
    files = _write_detection_files(detections_dir, split, names, per_class) if detections_dir else []
    return SsdTestResult(len(images), classes, solver_map, files)


class SsdTester:
    """A test net ready for repeated exact passes over its test LMDB (e.g. during training)."""

    def __init__(self, test_prototxt: str | Path, *, lmdb: str | Path | None = None,
                 labelmap: str | Path | None = None, voc_root: str | Path | None = None) -> None:
        path = Path(test_prototxt)
        try:
            net = read_net_prototxt(path)
        except CaffeModelError as exc:
            raise SsdTestError(str(exc)) from exc
        self.layout = test_net_layout(net, path)
        if lmdb is not None:
            self.layout.lmdb = Path(lmdb)
        if labelmap is not None:
            self.layout.labelmap = Path(labelmap)
        self._check_inputs(path)
        self.images = read_test_set(self.layout.lmdb)
        self._check_labels()
        self.names = class_names(self.layout.labelmap, self.layout.num_classes, self.layout.background)
        self.voc_root = Path(voc_root) if voc_root else None
        self._scratch = tempfile.TemporaryDirectory(prefix="ssd-test-")
        scratch = Path(self._scratch.name)
        self._name_size = write_name_size(scratch / "name_size.txt", self.images)
        self._net = net

    def _check_inputs(self, path: Path) -> None:
        from .labelmap import LabelMapError, load_labelmap
        from .model import ModelConfigError, lmdb_record_count

        try:
            lmdb_record_count(self.layout.lmdb, f"{path}: layer '{self.layout.data_layer}' source")
            if self.layout.labelmap is not None:
                load_labelmap(self.layout.labelmap, self.layout.num_classes)
        except (ModelConfigError, LabelMapError) as exc:
            raise SsdTestError(str(exc)) from exc

    def _check_labels(self) -> None:
        labels = {int(k) for image in self.images for k in image.labels}
        bad = sorted(k for k in labels if not 0 < k < self.layout.num_classes or k == self.layout.background)
        if bad:
            raise SsdTestError(f"{self.layout.lmdb}: object labels {bad} do not fit the test net's "
                               f"{self.layout.num_classes} classes (labels 1 .. {self.layout.num_classes - 1}); "
                               "regenerate the nets with the right --classes or the LMDB with the right labels")

    def make_net(self, weights: str | Path | None = None, share_with: Any = None) -> Any:
        """The single-pass Caffe net (probed in a child first), with ``weights`` or sharing a train net's."""
        from caffe_common.env import import_caffe
        from caffe_common.model_files import load_net_with_weights, probe_net

        caffe = import_caffe()
        param, path = self._single_pass_file()
        try:
            if weights is not None:
                return load_net_with_weights(path, weights, net=param)
            probe_net(path, net=param)
        except CaffeModelError as exc:
            raise SsdTestError(str(exc)) from exc
        net = caffe.Net(str(path), caffe.TEST)
        if share_with is not None:
            net.share_with(share_with)
        return net

    def _single_pass_file(self) -> tuple[Any, Path]:
        """A new single-pass prototxt whose data layer has a name no other net in this process uses.

        Caffe's ``DataReader`` shares one reading thread between data layers with the same name and
        source; a second net on the test LMDB (the training's test net still alive, say) would wait
        on it forever, so every net built here gets its own layer name."""
        global _NETS_MADE
        _NETS_MADE += 1
        param = single_pass_net(self._net, self.layout, self._name_size)
        for layer in param.layer:
            if layer.name == self.layout.data_layer:
                layer.name = f"{layer.name}_single_pass_{_NETS_MADE}"
        path = Path(self._scratch.name) / f"test_single_pass_{_NETS_MADE}.prototxt"
        path.write_text(str(param))
        return param, path

    def run(self, net: Any, detections_dir: Path | None = None, split: str = "test",
            progress: Callable[[int], Any] | None = None) -> SsdTestResult:
        return run_test_pass(net, self.layout, self.images, self.names, voc_root=self.voc_root,
                             detections_dir=detections_dir, split=split, progress=progress)
