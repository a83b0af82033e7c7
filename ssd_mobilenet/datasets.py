"""Detection datasets for SSD: a Pascal VOC folder or a COCO ``instances.json`` read into image records,
and their conversion into the ``AnnotatedDatum`` LMDB, label map and ``name_size`` file Caffe trains
and tests with (``ssd-mobilenet create-data``).

Box conventions are those of SSD's ``create_data`` (``ReadXMLToAnnotatedDatum`` and
``ReadJSONToAnnotatedDatum`` in weiliu89/caffe ``src/caffe/util/io.cpp``):

* VOC: each ``<bndbox>`` value is divided by the image width or height as written (``xmin / W``),
  without shifting VOC's 1-based pixels; the evaluators read the boxes back the same way.
* COCO: ``[x, y, w, h]`` becomes ``x / W, y / H, (x + w) / W, (y + h) / H``; the categories, sorted
  by id, become labels 1..N in that order.

``W`` and ``H`` are the size of the decoded image (SSD uses the annotation's ``<size>``, which can be
wrong); a ``<size>`` (or COCO ``width``/``height``) that disagrees is reported as a note.

COCO ``iscrowd`` boxes are kept as ``difficult`` by default, as SSD does: a crowd region is not one
object, so ``DetectionEvaluate`` then neither counts it as a miss nor a detection on it as a false
positive (COCO's own evaluation ignores crowd regions alike); ``crowd="skip"`` drops them instead.

Nothing aborts the run for one bad file: problems are reported as ``file: object k ('name'): reason``
and the object or image skipped (unknown class, missing or non-numeric coordinates, degenerate box,
box wholly outside the image; malformed XML, missing or corrupt image). Boxes partly outside the image
are clipped to it and counted. An image without usable objects is kept with no boxes unless
``skip_empty``: Caffe reads it, ``DetectionEvaluate`` counts detections on it as false positives
(keep such images in test sets), but under the reference ``MAX_NEGATIVE`` mining it adds no training
loss (negatives are mined per image in proportion to its matched positives). The run is refused
(:class:`DatasetError`) only when the image list or class list cannot be used or no image is usable.
"""
from __future__ import annotations

import functools
import json
import math
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caffe_common.atomic import write_text_atomic
from caffe_common.batch import check_output_dir
from caffe_common.eval.voc import VOC_CLASSES, read_class_names
from caffe_common.images import ImageReadError
from caffe_common.parallel import ordered_map
from caffe_common.textio import AnnotationError, ProblemLog, read_text_lines, read_xml_root

from .annotated_lmdb import AnnotatedImage, LabeledBox, LmdbWriter, annotated_datum, bytes_for_caffe, worker_init
from .labelmap import LabelMapError, LabelMapItem, labelmap_text, load_labelmap, read_labelmap

CROWD_MODES = ("difficult", "skip")
#: Fewest images per worker process: starting one costs about a second, decoding 64 images about as much.
IMAGES_PER_WORKER = 64
BACKGROUND_NAMES = ("none_of_the_above", "background")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class DatasetError(ValueError):
    """Input the run cannot go on with (the message names the file and the fix)."""


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PixelBox:
    """One object as annotated: label, box in pixels, difficult flag, and how messages name it."""

    label: int
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool
    where: str  # "object 3 ('dog')"


@dataclass(frozen=True)
class ImageRecord:
    """One image to convert: its id (the ``name_size`` name), file, annotation (for messages) and boxes."""

    image_id: str
    path: Path
    source: str
    boxes: tuple[PixelBox, ...]
    declared_size: tuple[int, int] | None = None  # (width, height) the annotation states
    objects_skipped: int = 0


@dataclass
class ConversionLog(ProblemLog):
    """Problems (skipped input), notes and the counts of the conversion."""

    counts: Counter = field(default_factory=Counter)

    def skip(self, kind: str, message: str) -> None:
        """Report a skipped ``kind`` ("image" or "object")."""
        self.report(message)
        self.counts[f"{kind}s skipped"] += 1


@dataclass
class Dataset:
    """The records to convert, the label map (background first) and what reading skipped."""

    records: list[ImageRecord]
    labelmap: list[LabelMapItem]
    log: ConversionLog


# --------------------------------------------------------------------------- classes
def _labelmap_items(names: Sequence[str]) -> list[LabelMapItem]:
    """Background 0, then ``names`` as labels 1..N (display name = name)."""
    return [LabelMapItem("none_of_the_above", 0, "background"),
            *(LabelMapItem(name, label, name) for label, name in enumerate(names, 1))]


def _check_class_names(names: Sequence[str], source: str) -> None:
    """Refuse duplicate, blank and background names (label numbering is the contract with the model)."""
    first: dict[str, int] = {}
    for label, name in enumerate(names, 1):
        if not name.strip():
            raise DatasetError(f"{source}: class {label} has a blank name")
        if "\ufffd" in name or not name.isprintable():
            raise DatasetError(f"{source}: class {label} ({name!r}) is not printable text; is this a class list "
                               "(UTF-8, one name per line)?")
        if name in BACKGROUND_NAMES:
            raise DatasetError(f"{source}: class {label} is {name!r}; the background is label 0 and added "
                               "automatically: list the object classes only")
        if name in first:
            raise DatasetError(f"{source}: class {name!r} is given twice (classes {first[name]} and {label}); "
                               "each class must be listed once, in label order")
        first[name] = label


def read_labels(labels: str | Path | None, voc_root: str | Path | None = None) -> list[LabelMapItem]:
    """The label map to convert with: ``labels`` (one class per line, or an SSD ``labelmap.prototxt``
    whose items are kept as they are), else ``<voc_root>/labels.txt``, else the 20 VOC classes."""
    if labels is not None and Path(labels).suffix == ".prototxt":
        try:
            items = sorted(load_labelmap(labels), key=lambda item: item.label)
        except LabelMapError as exc:
            raise DatasetError(str(exc)) from None
        _check_class_names([item.name for item in items[1:]], str(labels))
        return items
    source = labels or (Path(voc_root) / "labels.txt" if voc_root and (Path(voc_root) / "labels.txt").is_file()
                        else None)
    try:
        names = read_class_names(source) if source is not None else list(VOC_CLASSES)
    except (ValueError, OSError) as exc:
        raise DatasetError(str(exc)) from None
    _check_class_names(names, str(source or "the 20 VOC classes"))
    return _labelmap_items(names)


def _unknown_class(name: str, label_of: dict[str, int]) -> str:
    near = [known for known in label_of if known.lower() == name.lower()]
    return "unknown class" + (f" (did you mean {near[0]!r}? names are case-sensitive)" if near else "")


# --------------------------------------------------------------------------- VOC
def read_image_ids(voc_root: str | Path, split: str) -> list[str]:
    """Ids of ``<voc_root>/ImageSets/Main/<split>.txt`` (first token per line)."""
    path = Path(voc_root) / "ImageSets" / "Main" / f"{split}.txt"
    try:
        lines = read_text_lines(path, "image set list", missing=DatasetError)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the image set list ({exc.strerror or exc})") from None
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: the image set list is empty; nothing to convert")
    return ids


def _voc_image_path(voc_root: Path, image_id: str, annotation: ET.Element) -> tuple[Path | None, str]:
    """``JPEGImages/<id>.jpg``, else ``JPEGImages/<filename from the XML>``; None and what was tried."""
    candidates = [voc_root / "JPEGImages" / f"{image_id}.jpg"]
    filename = (annotation.findtext("filename") or "").strip()
    if filename:
        candidates.append(voc_root / "JPEGImages" / Path(filename).name)  # never outside JPEGImages/
    for path in candidates:
        if path.is_file():
            return path, ""
    return None, " or ".join(str(p.relative_to(voc_root)) for p in candidates)


def _declared_size(annotation: ET.Element) -> tuple[int, int] | None:
    try:
        width, height = (int(float(annotation.findtext(f"size/{tag}"))) for tag in ("width", "height"))
    except (TypeError, ValueError, OverflowError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _number(text: str | None, tag: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"<{tag}> {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"<{tag}> {text!r} is not a finite number")
    return value


def check_pixel_box(xmin: float, ymin: float, xmax: float, ymax: float) -> None:
    """Raise ``ValueError`` for a degenerate box (no area)."""
    if xmin >= xmax:
        raise ValueError(f"degenerate box (xmin {xmin:g} >= xmax {xmax:g})")
    if ymin >= ymax:
        raise ValueError(f"degenerate box (ymin {ymin:g} >= ymax {ymax:g})")


def _voc_object(obj: ET.Element, k: int, label_of: dict[str, int]) -> PixelBox:
    """The box of the ``k``-th ``<object>``; ``ValueError`` (prefixed with the object) when unusable."""
    name = (obj.findtext("name") or "").strip()
    where = f"object {k} ({name!r})" if name else f"object {k}"
    try:
        if not name:
            raise ValueError("no <name>")
        if name not in label_of:
            raise ValueError(_unknown_class(name, label_of))
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError("no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox.findtext(tag), tag) for tag in ("xmin", "ymin", "xmax", "ymax"))
        check_pixel_box(xmin, ymin, xmax, ymax)
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise ValueError(f"<difficult> {flag!r} is not 0 or 1")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return PixelBox(label_of[name], xmin, ymin, xmax, ymax, flag == "1", where)


def _voc_record(voc_root: Path, image_id: str, label_of: dict[str, int], log: ConversionLog) -> ImageRecord | None:
    xml = voc_root / "Annotations" / f"{image_id}.xml"
    source = f"Annotations/{image_id}.xml"
    try:
        annotation = read_xml_root(xml, "annotation")
    except FileNotFoundError:
        log.skip("image", f"{source}: not found; image skipped")
        return None
    except AnnotationError as exc:
        log.skip("image", f"{str(exc).replace(str(xml), source, 1)}; image skipped")
        return None
    except OSError as exc:
        log.skip("image", f"{source}: cannot read ({exc.strerror or exc}); image skipped")
        return None
    if annotation.tag != "annotation":
        log.skip("image", f"{source}: the root element is <{annotation.tag}>, not <annotation>; image skipped")
        return None
    path, tried = _voc_image_path(voc_root, image_id, annotation)
    if path is None:
        log.skip("image", f"{source}: image not found ({tried}); image skipped")
        return None
    boxes, skipped = [], 0
    for k, obj in enumerate(annotation.findall("object"), 1):
        try:
            boxes.append(_voc_object(obj, k, label_of))
        except ValueError as exc:
            log.skip("object", f"{source}: {exc}, skipped")
            skipped += 1
    return ImageRecord(image_id, path, source, tuple(boxes), _declared_size(annotation), skipped)


def read_voc(voc_root: str | Path, split: str, labels: str | Path | None = None) -> Dataset:
    """The records of ``<voc_root>/ImageSets/Main/<split>.txt`` (see the module docstring)."""
    voc_root = Path(voc_root)
    if not voc_root.is_dir():
        raise DatasetError(f"{voc_root}: VOC folder not found (expected Annotations/, ImageSets/Main/, JPEGImages/)")
    labelmap = read_labels(labels, voc_root)
    label_of = {item.name: item.label for item in labelmap[1:]}
    log = ConversionLog()
    records, seen = [], set()
    for image_id in read_image_ids(voc_root, split):
        if image_id in seen:
            log.skip("image", f"ImageSets/Main/{split}.txt: image {image_id} is listed again; repeat skipped")
            continue
        seen.add(image_id)
        record = _voc_record(voc_root, image_id, label_of, log)
        if record is not None:
            records.append(record)
    return Dataset(records, labelmap, log)


# --------------------------------------------------------------------------- COCO
def _coco_categories(data: dict, source: str) -> list[tuple[int, str]]:
    """``(id, name)`` of the categories, sorted by id; refused when missing or ambiguous."""
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{source}: no \"categories\" list; a COCO instances file names its classes there")
    pairs = []
    for k, category in enumerate(categories):
        if (not isinstance(category, dict) or not isinstance(category.get("id"), int)
                or isinstance(category.get("id"), bool) or not isinstance(category.get("name"), str)):
            raise DatasetError(f"{source}: categories[{k}] needs an integer \"id\" and a string \"name\"")
        pairs.append((category["id"], category["name"].strip()))
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{source}: a category id is given twice")
    return sorted(pairs)


def _coco_image(entry: object, k: int, images_dir: Path) -> tuple[str, Path, tuple[int, int] | None]:
    """``(id, file, declared size)`` of ``images[k]``; ``ValueError`` when unusable."""
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    image_id, file_name = entry.get("id"), entry.get("file_name")
    if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or not str(image_id).strip() \
            or any(c.isspace() for c in str(image_id)):
        raise ValueError(f"id {image_id!r} is not an integer or a name without spaces")
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError("no \"file_name\"")
    relative = Path(file_name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"file_name {file_name!r} is not a path inside --images")
    width, height = entry.get("width"), entry.get("height")
    declared = (width, height) if all(isinstance(v, int) and v > 0 for v in (width, height)) else None
    return str(image_id), images_dir / relative, declared


def _coco_box(ann: dict, label: int, crowd: str, where: str) -> PixelBox | None:
    """The box of one annotation (None: a crowd box with ``crowd="skip"``); ``ValueError`` when unusable."""
    bbox = ann.get("bbox")
    if (not isinstance(bbox, list) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        raise ValueError(f"bbox {bbox!r} is not 4 finite numbers [x, y, w, h]")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"degenerate box (width {w:g}, height {h:g})")
    crowded = bool(ann.get("iscrowd", 0))
    if crowded and crowd == "skip":
        return None
    return PixelBox(label, x, y, x + w, y + h, crowded, where)


def _load_instances(instances: Path) -> dict:
    try:
        data = json.loads(instances.read_bytes())
    except FileNotFoundError:
        raise DatasetError(f"{instances}: COCO instances file not found") from None
    except OSError as exc:
        raise DatasetError(f"{instances}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DatasetError(f"{instances}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{instances}: not a COCO instances file (no \"images\" list)")
    return data


@dataclass
class _CocoImage:
    path: Path
    declared: tuple[int, int] | None
    source: str  # "instances.json: image 42 ('000000000042.jpg')"
    boxes: list[PixelBox] = field(default_factory=list)
    skipped: int = 0


def _coco_images(entries: list, images_dir: Path, source: str, log: ConversionLog) -> dict[str, _CocoImage]:
    images: dict[str, _CocoImage] = {}
    for k, entry in enumerate(entries):
        try:
            image_id, path, declared = _coco_image(entry, k, images_dir)
            if image_id in images:
                raise ValueError(f"id {image_id} is given to an earlier image too")
        except ValueError as exc:
            log.skip("image", f"{source}: images[{k}]: {exc}; image skipped")
            continue
        images[image_id] = _CocoImage(path, declared, f"{source}: image {image_id} ({path.name!r})")
    return images


def _add_coco_annotation(ann: dict, k: int, images: dict[str, _CocoImage], name_of: dict[int, str],
                         label_of: dict[str, int], crowd: str, source: str, log: ConversionLog) -> None:
    """File one annotation's box under its image, or report why it is skipped."""
    image = images.get(str(ann.get("image_id")))
    category = ann.get("category_id")
    name = name_of.get(category) if isinstance(category, int) else None
    where = f"annotation {ann.get('id', f'[{k}]')}" + (f" ({name!r})" if name else "")
    try:
        if image is None:
            raise ValueError(f"image_id {ann.get('image_id')!r} is not among the usable images")
        if name is None:
            raise ValueError(f"category_id {category!r} is not in \"categories\"")
        if name not in label_of:
            raise ValueError(_unknown_class(name, label_of))
        box = _coco_box(ann, label_of[name], crowd, where)
    except ValueError as exc:
        log.skip("object", f"{image.source if image else source}: {where}: {exc}, skipped")
        if image is not None:
            image.skipped += 1
        return
    if box is None:
        log.counts["crowd boxes skipped"] += 1
    else:
        image.boxes.append(box)


def read_coco(instances: str | Path, images_dir: str | Path, labels: str | Path | None = None,
              crowd: str = "difficult") -> Dataset:
    """The records of a COCO ``instances.json`` (images in its ``"images"`` order; see the module docstring)."""
    instances, images_dir = Path(instances), Path(images_dir)
    if crowd not in CROWD_MODES:
        raise DatasetError(f"crowd must be one of {', '.join(CROWD_MODES)}, not {crowd!r}")
    source = instances.name
    data = _load_instances(instances)
    categories = _coco_categories(data, str(instances))
    if labels is None:
        names = [name for _, name in categories]
        _check_class_names(names, f"{instances} categories")
        labelmap = _labelmap_items(names)
    else:
        labelmap = read_labels(labels)
    label_of = {item.name: item.label for item in labelmap[1:]}
    log = ConversionLog()
    images = _coco_images(data["images"], images_dir, source, log)
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        log.note(f"{source}: no \"annotations\" list; every image has no objects")
        annotations = []
    for k, ann in enumerate(annotations):
        if isinstance(ann, dict):
            _add_coco_annotation(ann, k, images, dict(categories), label_of, crowd, source, log)
        else:
            log.skip("object", f"{source}: annotations[{k}]: not an object, skipped")
    records = []
    for image_id, image in images.items():
        if not image.path.is_file():
            log.skip("image", f"{image.source}: image file {image.path} not found; image skipped")
            continue
        records.append(ImageRecord(image_id, image.path, image.source, tuple(image.boxes), image.declared,
                                   image.skipped))
    return Dataset(records, labelmap, log)


# --------------------------------------------------------------------------- one image (worker)
def normalise_boxes(pixels: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel boxes ``(N, 4)`` ``x1 y1 x2 y2`` -> ``(normalised, outside, clipped)``.

    ``normalised`` is the box clipped to ``[0, W] x [0, H]`` and divided by ``(W, H, W, H)``;
    ``outside`` marks boxes with no part inside the image, ``clipped`` those that were cut to it.
    """
    pixels = np.asarray(pixels, np.float64).reshape(-1, 4)
    limits = np.array([width, height, width, height], np.float64)
    outside = (pixels[:, 0] >= width) | (pixels[:, 1] >= height) | (pixels[:, 2] <= 0) | (pixels[:, 3] <= 0)
    inside = np.clip(pixels, 0.0, limits)
    clipped = ~outside & np.any(inside != pixels, axis=1)
    return inside / limits, outside, clipped


@dataclass
class EncodedImage:
    """What a worker made of one record: the serialised datum (None: skipped), size and log entries."""

    value: bytes | None
    height: int = 0
    width: int = 0
    boxes: int = 0
    difficult: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def _box_text(box: PixelBox) -> str:
    return f"({box.xmin:g}, {box.ymin:g}, {box.xmax:g}, {box.ymax:g})"


def encode_record(record: ImageRecord, skip_empty: bool = False) -> EncodedImage:
    """Decode the image, normalise (clip, drop outside) its boxes and serialise the ``AnnotatedDatum``."""
    try:
        data, image = bytes_for_caffe(record.path)
    except ImageReadError as exc:
        return EncodedImage(None, problems=[f"{record.source}: {exc}; image skipped"],
                            counts=Counter({"images skipped": 1}))
    height, width = image.shape[:2]
    result = EncodedImage(None, height, width)
    if record.declared_size is not None and record.declared_size != (width, height):
        result.notes.append(f"{record.source}: the annotation gives the size {record.declared_size[0]}x"
                            f"{record.declared_size[1]} but {record.path.name} is {width}x{height}; boxes are "
                            "normalised by the image's own size")
        result.counts["size mismatches"] += 1
    pixels = np.array([(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes], np.float64).reshape(-1, 4)
    normalised, outside, clipped = normalise_boxes(pixels, width, height)
    boxes = []
    for box, coords, out, cut in zip(record.boxes, normalised, outside, clipped):
        if out:
            result.problems.append(f"{record.source}: {box.where}: box {_box_text(box)} lies outside the "
                                   f"{width}x{height} image, skipped")
            result.counts["objects skipped"] += 1
            continue
        if cut:
            result.notes.append(f"{record.source}: {box.where}: box {_box_text(box)} clipped to the "
                                f"{width}x{height} image")
            result.counts["boxes clipped"] += 1
        boxes.append(LabeledBox(box.label, *map(float, coords), difficult=box.difficult))
    if not boxes:
        skipped = record.objects_skipped + int(outside.sum())
        what = f"no usable objects ({skipped} skipped)" if skipped else "no objects"
        if skip_empty:
            result.notes.append(f"{record.source}: {what}; image skipped (--skip-empty)")
            result.counts["empty images skipped"] += 1
            return result
        result.notes.append(f"{record.source}: {what}; kept as an image without boxes")
        result.counts["images without objects"] += 1
    try:
        anno = annotated_datum(AnnotatedImage(record.path, boxes), encoded=(data, image))
    except ValueError as exc:  # a box check failed: not expected after the checks above
        return EncodedImage(None, problems=[f"{record.source}: {exc}; image skipped"],
                            counts=Counter({"images skipped": 1}))
    result.value = anno.SerializeToString()
    result.boxes, result.difficult = len(boxes), sum(b.difficult for b in boxes)
    return result


# --------------------------------------------------------------------------- the outputs
@dataclass(frozen=True)
class OutputFiles:
    """The files ``create-data`` writes for one split into one folder."""

    lmdb: Path
    labelmap: Path
    name_size: Path
    problems: Path

    @classmethod
    def of(cls, out_dir: str | Path, split: str) -> "OutputFiles":
        out_dir = Path(out_dir)
        return cls(out_dir / f"{split}_lmdb", out_dir / "labelmap.prototxt", out_dir / f"{split}_name_size.txt",
                   out_dir / f"{split}_problems.txt")


@dataclass
class ConversionResult:
    """What :func:`convert` wrote."""

    files: OutputFiles
    images: int
    objects: int
    difficult: int
    log: ConversionLog
    seconds: float
    labelmap_written: bool


def check_split_name(split: str) -> None:
    """Refuse a split name that is no plain file name (it names the set list and the outputs)."""
    if not _SPLIT_NAME.fullmatch(split):
        raise DatasetError(f"split {split!r}: use letters, digits, '_', '-' and '.' only (e.g. trainval)")


def _same_labelmap(path: Path, items: Sequence[LabelMapItem]) -> bool:
    """Whether ``path`` holds the same object classes (names, labels, display names) and a background 0."""
    try:
        existing = read_labelmap(path)
    except LabelMapError:
        return False
    objects = sorted((item for item in existing if item.label != 0), key=lambda item: item.label)
    return any(item.label == 0 for item in existing) and objects == [item for item in items if item.label != 0]


def check_outputs(files: OutputFiles, labelmap: Sequence[LabelMapItem] | None, overwrite: bool) -> bool:
    """Refuse (before any work) outputs that cannot or must not be written; whether to write the label map
    (``labelmap`` None: check everything else, e.g. before reading a large dataset)."""
    check_output_dir(files.lmdb.parent, "--out")
    if files.lmdb.exists() and not files.lmdb.is_dir():
        raise DatasetError(f"{files.lmdb}: exists and is not an LMDB folder; remove it or choose another --out")
    for path in (files.labelmap, files.name_size, files.problems):
        if path.is_dir():
            raise DatasetError(f"{path}: is a folder; cannot write that file there")
    if not overwrite:
        for path in (files.lmdb, files.name_size):
            if path.exists():
                raise DatasetError(f"{path}: already exists; pass --overwrite to replace it")
    if labelmap is None or not files.labelmap.exists():
        return True
    if _same_labelmap(files.labelmap, labelmap):
        return False
    if not overwrite:
        raise DatasetError(f"{files.labelmap}: exists with other classes than this conversion's "
                           f"({len(labelmap) - 1} + background); another split converted with other labels "
                           "would not fit one model. Pass the same --labels, or --overwrite to replace it")
    return True


def _nothing_usable(log: ConversionLog) -> str:
    first = "; ".join([*log.problems, *log.notes][:3]) or "the image list is empty"
    return f"no usable image ({len(log.problems)} problems, {len(log.notes)} notes): {first}"


def _problems_text(log: ConversionLog) -> str:
    return "".join(f"{line}\n" for line in log.problems) + "".join(f"note: {line}\n" for line in log.notes)


def convert(dataset: Dataset, out_dir: str | Path, split: str, *, workers: int = 1, skip_empty: bool = False,
            overwrite: bool = False, progress: bool = False) -> ConversionResult:
    """Write ``<split>_lmdb``, ``labelmap.prototxt``, ``<split>_name_size.txt`` (``image_id height width``
    per written image, in LMDB order: ``DetectionEvaluate``'s ``name_size_file``) and
    ``<split>_problems.txt`` into ``out_dir``. Raises :class:`DatasetError` (writing nothing) when the
    outputs are refused or no image is usable. ``workers > 1``: images are decoded and serialised in
    up to that many processes (one per :data:`IMAGES_PER_WORKER` images); the LMDB is written here,
    in input order."""
    from tqdm import tqdm

    started = time.monotonic()
    check_split_name(split)
    files = OutputFiles.of(out_dir, split)
    write_labelmap = check_outputs(files, dataset.labelmap, overwrite)
    log = ConversionLog(problems=list(dataset.log.problems), notes=list(dataset.log.notes),
                        counts=Counter(dataset.log.counts))
    if not dataset.records:
        raise DatasetError(_nothing_usable(log))
    sizes, objects, difficult = [], 0, 0
    encode = functools.partial(encode_record, skip_empty=skip_empty)
    workers = min(workers, -(-len(dataset.records) // IMAGES_PER_WORKER))  # 1: in this process
    results = ordered_map(encode, dataset.records, workers, initializer=worker_init)
    with closing(results), LmdbWriter(files.lmdb, overwrite=overwrite) as writer:
        for index, (record, result) in enumerate(zip(dataset.records, tqdm(
                results, total=len(dataset.records), desc="create-data", unit="img", disable=not progress))):
            log.problems.extend(result.problems)
            log.notes.extend(result.notes)
            log.counts.update(result.counts)
            if result.value is None:
                continue
            writer.put(f"{index:08d}_{record.image_id}".encode(), result.value)
            sizes.append(f"{record.image_id} {result.height} {result.width}\n")
            objects += result.boxes
            difficult += result.difficult
        if not sizes:
            writer.abort()
            raise DatasetError(_nothing_usable(log))
        write_text_atomic(files.name_size, "".join(sizes))
        if write_labelmap:
            names, displays = zip(*((item.name, item.display_name) for item in dataset.labelmap[1:]))
            write_text_atomic(files.labelmap, labelmap_text(names, displays))
        write_text_atomic(files.problems, _problems_text(log))
    return ConversionResult(files, len(sizes), objects, difficult, log, time.monotonic() - started, write_labelmap)
