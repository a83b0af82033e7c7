"""The face network's training set: one JSON-lines index built from WIDER FACE and a 5-point landmark list.

Index format (``*.jsonl``, written atomically; :func:`read_face_index` reads it back)
----------------------------------------------------------------------------------------
The first line is a header object::

    {"face_index": 1, "roots": {"wider": "/abs/WIDER_train/images", "landmarks": "/abs/landmarks_5pt"},
     "min_face": 0.009375, "hold_out": ["Interview"], "part": "train"}

then one object per image::

    {"source": "wider", "path": "1--Handshaking/x.jpg", "width": 1024, "height": 768,
     "faces": [{"box": [x1, y1, x2, y2], "kind": 1, "landmarks": null}, ...]}

``path`` is relative to ``roots[source]`` (an absolute ``path`` is used as it is), so an index is moved
to other machines by editing its header (or with ``read_face_index(..., roots=...)``). Boxes are pixels,
continuous coordinates (width ``x2 - x1``) clipped to the image; ``kind`` is 1 (face; the augmentation
makes the partial faces, kind 2, per sample) or 3 (an ignore region, :data:`~.targets.IGNORE_KIND`: a WIDER
face flagged invalid or below the size floor, which the training neither learns as a face nor as
background); ``landmarks`` are ``x1, y1, ..., x5, y5`` pixels in the annotation point order (left eye,
right eye, nose, left mouth corner, right mouth corner; "left" is the image's left, as in
:data:`caffe_common.face_annotations.FIVE_POINT_NAMES`) or ``null``.

Sources: WIDER FACE (official ``*_bbx_gt.txt``; faces flagged ``invalid`` become ignore regions, boxes
clipped to the image, landmarks ``null``) and a 5-point list (``path l r t b x1 y1 .. x5 y5``, one face per line,
landmarks kept when all five lie in the image). Lines or images that cannot be used are skipped and
reported as ``file:line: reason`` in the summary (``problems``); images left without any face are not
indexed (counted). One WIDER event (default ``Interview``, the event the MTCNN evaluation holds out) is
kept out of training: its images go to ``held_out_index.jsonl`` and, unchanged, to ``held_out_gt.txt`` in
WIDER's own format, so the WIDER evaluator runs on it as on the official file.

The smallest face worth keeping (measured, ``bench/face_data_check.py``)
-----------------------------------------------------------------------
The face priors are square; the smallest is 16 px at stride 8 on the 320 x 320 input (then 32, 64, 128,
256). A face of side ``f < 16`` px overlaps its best prior at most ``f**2 / 256`` (face inside the prior,
centres equal), so no prior reaches the matching IoU 0.35 below ``f = 16 * sqrt(0.35) = 9.5`` px, nor 0.5
below 11.3 px; Caffe's bipartite matching would still give such a face one prior, at an IoU that
teaches noise. Measured on the 6,572 valid faces of ``wider_train_subset`` resized with their image to
320 x 320 (face size ``sqrt(w * h)`` in net pixels, best IoU over all priors): 8-9 px: best 0.32, no
face reaches 0.35; 9-10 px: 24 % reach 0.35; 10-11 px: 65 %; 11-12 px: 91 %, and from 12 px on about
as many as for large faces (95-99 %). So a face must be at least :data:`MIN_FACE_PX` = 10 px in the net
input to be trained; the augmentation drops smaller ones per sample (after its crop and resize). (The floor
uses S3FD's face-matching IoU 0.35; the train net matches at SSD's 0.5, :data:`~.targets.OVERLAP_THRESHOLD`,
where Caffe's bipartite step still gives every kept face its best prior. Matching at 0.35 is untried.)

For the index this means: a face is worth keeping if some training sample can bring it to 10 px. The
most zoomed-in sample is a square crop of :data:`MIN_CROP_SCALE` (0.3) of the image's short side resized
to 320, so the index keeps faces with ``sqrt(w * h) >= MIN_FACE * short side``,
``MIN_FACE = 10 * 0.3 / 320 = 0.0094`` (7.2 px on a 1024 x 768 WIDER image; ``train-faces --size S`` uses
:func:`min_face_fraction` of S, ``10 * 0.3 / S``): a face below it is under
10 px in every sample, one above it reaches 10 px in the deepest crops (it stays in the index as an ignore
region: the priors on it are not mined as background). On the subset this leaves out
91 of the 4,866 faces of the training events (1.9 %) and 38 of the 1,724 held-out ones. In the detector's view (the whole image resized
to 320 x 320) the smallest matchable face is ``10 / 320 = 3.1 %`` of the long side (for a square image;
``sqrt(w * h) * 320 / sqrt(W * H) >= 10`` in general); 34 % of the subset's valid faces are smaller
(median 13.9 px), which is why the training crops zoom in. (The floor is relative to the short side, not
the long one, because the crops are: measured against the long side it would leave out faces that crops
of portrait or landscape images still show at 10 px.)
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffe_common.atomic import to_jsonable, write_json_atomic, write_text_atomic
from caffe_common.face_annotations import (
    AnnotationError,
    WiderImage,
    read_landmark_list,
    read_wider_gt,
    wider_event_matches,
    write_wider_gt,
)
from caffe_common.images import ImageReadError, read_image
from caffe_common.textio import ProblemLog, read_text_lines

from .preprocess import INPUT_SIZE
from .targets import IGNORE_KIND, KINDS, NUM_LANDMARKS

INDEX_VERSION = 1
#: The smallest face (``sqrt(w * h)``, net-input pixels) a 16-px prior can match at IoU >= 0.35 (module doc).
MIN_FACE_PX = 10.0
#: The smallest random crop, as a fraction of the (expanded) image's short side (:mod:`.augment`).
MIN_CROP_SCALE = 0.3


def min_face_fraction(size: int = INPUT_SIZE) -> float:
    """The index floor for a ``size`` x ``size`` net input: faces with ``sqrt(w * h)`` under this fraction of
    the image's short side stay below :data:`MIN_FACE_PX` in every training sample (even the tightest crop)."""
    return MIN_FACE_PX * MIN_CROP_SCALE / size


#: The index floor at the default input side.
MIN_FACE = min_face_fraction()
DEFAULT_HOLD_OUT = ("Interview",)
SOURCES = ("wider", "landmarks")
TRAIN_INDEX, HELD_OUT_INDEX, HELD_OUT_GT, SUMMARY = ("train_index.jsonl", "held_out_index.jsonl",
                                                     "held_out_gt.txt", "summary.json")


@dataclass(frozen=True)
class FaceRecord:
    """One indexed image: ``boxes (G, 4)`` pixels, ``kinds (G,)``, ``landmarks (G, 10)`` pixels (zeros where
    ``has_landmarks (G,)`` is False)."""

    path: Path
    source: str
    width: int
    height: int
    boxes: np.ndarray
    kinds: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray


@dataclass
class FaceIndex:
    """A read index: its header object and its records, in file order."""

    header: dict[str, Any]
    records: list[FaceRecord]

    def __len__(self) -> int:
        return len(self.records)


# --------------------------------------------------------------------------- index lines
def _face_entry(box: np.ndarray, landmarks: np.ndarray | None, kind: int = KINDS["face"]) -> dict[str, Any]:
    return {"box": [float(v) for v in box], "kind": kind,
            "landmarks": None if landmarks is None else [float(v) for v in np.ravel(landmarks)]}


def _image_line(source: str, path: str, width: int, height: int, faces: list[dict[str, Any]]) -> str:
    return json.dumps({"source": source, "path": path, "width": width, "height": height, "faces": faces})


def _record(entry: Any, roots: dict[str, str]) -> FaceRecord:
    """A record from one parsed image line; ValueError saying what is wrong."""
    if not isinstance(entry, dict):
        raise TypeError("an image line must be a JSON object")
    missing = {"source", "path", "width", "height", "faces"} - set(entry)
    if missing:
        raise ValueError(f"missing keys {sorted(missing)}")
    source, width, height = entry["source"], entry["width"], entry["height"]
    if source not in roots and not Path(entry["path"]).is_absolute():
        raise ValueError(f"source {source!r} has no root in the header (roots: {sorted(roots)})")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive integers, got {width!r} x {height!r}")
    faces = entry["faces"]
    if not isinstance(faces, list):
        raise TypeError("faces must be a list")
    boxes = np.zeros((len(faces), 4))
    kinds = np.zeros(len(faces), np.int64)
    marks = np.zeros((len(faces), 2 * NUM_LANDMARKS))
    has = np.zeros(len(faces), bool)
    for k, face in enumerate(faces):
        box = np.asarray(face.get("box"), dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"face {k}: box must be 4 finite numbers x1 < x2, y1 < y2, got {face.get('box')!r}")
        if face.get("kind") not in (KINDS["face"], KINDS["partial"], IGNORE_KIND):
            raise ValueError(f"face {k}: kind must be 1 (face), 2 (partial) or 3 (ignore region), "
                             f"got {face.get('kind')!r}")
        boxes[k], kinds[k] = box, face["kind"]
        if face.get("landmarks") is not None:
            points = np.asarray(face["landmarks"], dtype=np.float64)
            if points.shape != (2 * NUM_LANDMARKS,) or not np.isfinite(points).all():
                raise ValueError(f"face {k}: landmarks must be null or {2 * NUM_LANDMARKS} finite numbers")
            marks[k], has[k] = points, True
    path = Path(roots.get(source, "")) / entry["path"]
    return FaceRecord(path, source, width, height, boxes, kinds, marks, has)


def read_face_index(path: str | Path, roots: dict[str, str] | None = None) -> FaceIndex:
    """Read an index written by :func:`build_face_index`; ``roots`` replaces header roots (moved images).

    A line that does not fit the format raises :class:`~caffe_common.textio.AnnotationError` naming
    ``file:line`` (an index is this toolkit's own output: a bad line means a damaged file, not data to skip).
    """
    path = Path(path)
    lines = read_text_lines(path, "face index")
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:1: header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("face_index") != INDEX_VERSION:
        raise AnnotationError(f"{path}:1: not a face index (version {INDEX_VERSION} header expected)")
    all_roots = {**header.get("roots", {}), **(roots or {})}
    records = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            records.append(_record(json.loads(line), all_roots))
        except (ValueError, TypeError, AttributeError) as exc:
            raise AnnotationError(f"{path}:{line_no}: {exc}") from exc
    return FaceIndex(header, records)


def write_face_index(path: str | Path, header: dict[str, Any], lines: Sequence[str]) -> Path:
    """Write the header and the image lines atomically."""
    text = json.dumps(to_jsonable({"face_index": INDEX_VERSION, **header})) + "\n"
    return write_text_atomic(path, text + "".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- building
#: The summary's counts per source (``lines_skipped``: annotation lines that do not parse).
COUNT_KEYS = ("lines_skipped", "images_read", "images_unreadable", "images_without_faces", "images", "faces_read",
              "faces_invalid", "faces_no_area", "faces_clipped", "faces_small", "faces", "faces_with_landmarks",
              "landmarks_outside_image", "ignore_regions")


@dataclass
class _Counts:
    """What the builder kept and dropped for one source (the summary's ``counts``)."""

    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))

    def add(self, key: str, n: int = 1) -> None:
        self.values[key] += n


def _image_size(path: Path, where: str, problems: ProblemLog) -> tuple[int, int] | None:
    """``(width, height)`` of a decodable image (read with the toolkit's reader), else a reported problem."""
    try:
        image = read_image(path)
    except ImageReadError as exc:
        problems.report(f"{where}: {exc}")
        return None
    return image.shape[1], image.shape[0]


def _clip_faces(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the image and the mask of those keeping an area."""
    clipped = np.clip(boxes, 0, [width, height, width, height])
    return clipped, (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])


def _big_enough(boxes: np.ndarray, width: int, height: int, min_face: float) -> np.ndarray:
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return side >= min_face * min(width, height)


def _name_lines(path: Path, names: set[str]) -> dict[str, int]:
    """The line number of each name's line in a WIDER gt file (for ``file:line`` messages)."""
    found: dict[str, int] = {}
    for line_no, line in enumerate(read_text_lines(path), start=1):
        text = line.strip()
        if text in names and text not in found:
            found[text] = line_no
    return found


def _wider_lines(items: list[WiderImage], anno: Path, images: Path, min_face: float,
                 problems: ProblemLog, counts: _Counts) -> list[str]:
    """Index lines of WIDER images (boxes clipped; invalid and small faces as ignore regions)."""
    lines_of = _name_lines(anno, {item.name for item in items})
    out = []
    for item in items:
        where = f"{anno}:{lines_of.get(item.name, 0)}"
        counts.add("images_read")
        counts.add("faces_read", len(item.boxes))
        size = _image_size(images / item.name, where, problems)
        if size is None:
            counts.add("images_unreadable")
            continue
        width, height = size
        boxes = np.column_stack([item.boxes[:, :2], item.boxes[:, :2] + item.boxes[:, 2:4]])
        valid = item.valid
        counts.add("faces_invalid", int((~valid).sum()))
        clipped, has_area = _clip_faces(boxes, width, height)
        for k in np.flatnonzero(valid & ~has_area):
            problems.report(f"{where}: image {item.name!r}: face {k} ({' '.join(f'{v:g}' for v in item.boxes[k])}) "
                            f"has no area inside the {width}x{height} image")
        counts.add("faces_no_area", int((valid & ~has_area).sum()))
        keep = valid & has_area
        counts.add("faces_clipped", int((keep & (clipped != boxes).any(axis=1)).sum()))
        small = keep & ~_big_enough(clipped, width, height, min_face)
        counts.add("faces_small", int(small.sum()))
        keep &= ~small
        if not keep.any():
            counts.add("images_without_faces")
            continue
        counts.add("images")
        counts.add("faces", int(keep.sum()))
        ignored = has_area & ~keep     # invalid or too small: still faces, so ignore regions, not background
        counts.add("ignore_regions", int(ignored.sum()))
        entries = [_face_entry(b, None) for b in clipped[keep]]
        entries += [_face_entry(b, None, IGNORE_KIND) for b in clipped[ignored]]
        out.append(_image_line("wider", item.name, width, height, entries))
    return out


def _landmark_lines(landmark_list: Path, images: Path, min_face: float, problems: ProblemLog,
                    counts: _Counts) -> list[str]:
    """Index lines of a 5-point list, the faces of one image grouped on one line."""
    parsed = read_landmark_list(landmark_list)
    for message in parsed.errors:
        problems.report(message)
    counts.add("lines_skipped", len(parsed.errors))
    line_nos: dict[str, list[int]] = defaultdict(list)
    for line_no, line in enumerate(read_text_lines(landmark_list), start=1):
        tokens = line.split()
        if tokens:
            line_nos[tokens[0].replace("\\", "/")].append(line_no)
    per_image: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
    for face in parsed.items:
        per_image[face.image].append((line_nos[face.image].pop(0) if line_nos[face.image] else 0,
                                      face.box, face.points))
    out = []
    for name, faces in per_image.items():
        first = f"{landmark_list}:{faces[0][0]}"
        counts.add("images_read")
        counts.add("faces_read", len(faces))
        size = _image_size(images / name, first, problems)
        if size is None:
            counts.add("images_unreadable")
            continue
        width, height = size
        entries = []
        for line_no, box, points in faces:
            clipped, has_area = _clip_faces(box[None], width, height)
            if not has_area[0]:
                problems.report(f"{landmark_list}:{line_no}: face box has no area inside the {width}x{height} image")
                counts.add("faces_no_area")
                continue
            if not _big_enough(clipped, width, height, min_face)[0]:
                counts.add("faces_small")
                continue
            counts.add("faces_clipped", int((clipped[0] != box).any()))
            inside = bool(np.all((points >= 0) & (points <= [width, height])))
            counts.add("landmarks_outside_image", int(not inside))
            entries.append(_face_entry(clipped[0], points if inside else None))
        if not entries:
            counts.add("images_without_faces")
            continue
        counts.add("images")
        counts.add("faces", len(entries))
        counts.add("faces_with_landmarks", sum(e["landmarks"] is not None for e in entries))
        out.append(_image_line("landmarks", name, width, height, entries))
    return out


def build_face_index(wider_anno: str | Path | None, wider_images: str | Path | None,
                     landmark_list: str | Path | None, landmark_images: str | Path | None, out_dir: str | Path,
                     hold_out: Sequence[str] = DEFAULT_HOLD_OUT, min_face: float = MIN_FACE) -> dict[str, Any]:
    """Build ``out_dir/train_index.jsonl`` (WIDER minus the ``hold_out`` events, plus the 5-point list),
    ``held_out_index.jsonl`` and ``held_out_gt.txt`` (WIDER format) of the held-out events, and
    ``summary.json``; returns the summary (counts per source, ``problems`` as ``file:line: reason``).

    ``min_face``: faces with ``sqrt(w * h) < min_face * short side`` are left out (module doc: why
    :data:`MIN_FACE`). Either source may be ``None``. Every image is decoded once with the toolkit's
    reader, so an index never names an image that training cannot read.
    """
    if wider_anno is None and landmark_list is None:
        raise ValueError("build_face_index needs a WIDER annotation, a landmark list or both")
    if not 0 <= min_face < 1:
        raise ValueError(f"min_face is a fraction of the image's short side, in [0, 1): got {min_face}")
    out = Path(out_dir)
    problems = ProblemLog()
    roots: dict[str, str] = {}
    counts = {source: _Counts() for source in SOURCES}
    held_counts = _Counts()
    train_lines: list[str] = []
    held_lines: list[str] = []
    outputs: dict[str, str] = {}
    if wider_anno is not None:
        if wider_images is None:
            raise ValueError("a WIDER annotation needs its images folder (wider_images)")
        anno, images = Path(wider_anno), Path(wider_images)
        roots["wider"] = str(images.resolve())
        parsed = read_wider_gt(anno)
        for message in parsed.errors:
            problems.report(message)
        counts["wider"].add("lines_skipped", len(parsed.errors))
        held = [wider_event_matches(item.name, hold_out) for item in parsed.items]
        if hold_out and not any(held):
            raise ValueError(f"{anno}: no image of the held-out events {list(hold_out)}")
        train_items = [item for item, h in zip(parsed.items, held) if not h]
        held_items = [item for item, h in zip(parsed.items, held) if h]
        train_lines += _wider_lines(train_items, anno, images, min_face, problems, counts["wider"])
        if held_items:
            held_lines = _wider_lines(held_items, anno, images, min_face, problems, held_counts)
            outputs["held_out_gt"] = str(write_wider_gt(out / HELD_OUT_GT, held_items))
    if landmark_list is not None:
        if landmark_images is None:
            raise ValueError("a landmark list needs its images folder (landmark_images)")
        roots["landmarks"] = str(Path(landmark_images).resolve())
        train_lines += _landmark_lines(Path(landmark_list), Path(landmark_images), min_face, problems,
                                       counts["landmarks"])
    header = {"roots": roots, "min_face": min_face, "hold_out": list(hold_out)}
    outputs["train_index"] = str(write_face_index(out / TRAIN_INDEX, {**header, "part": "train"}, train_lines))
    if held_lines:
        outputs["held_out_index"] = str(write_face_index(out / HELD_OUT_INDEX, {**header, "part": "held_out"},
                                                         held_lines))
    input_size = round(MIN_FACE_PX * MIN_CROP_SCALE / min_face) if min_face else None  # the input the floor is for
    summary = {"min_face": min_face, "min_face_px_at_input": MIN_FACE_PX, "input_size": input_size,
               "hold_out": list(hold_out), "outputs": outputs,
               "counts": {**{s: counts[s].values for s in roots}, "held_out": held_counts.values},
               "train_images": len(train_lines), "held_out_images": len(held_lines),
               "problems": problems.problems}
    write_json_atomic(out / SUMMARY, summary)
    return summary



def index_report(summary: dict[str, Any], summary_path: str | Path | None = None, examples: int = 3) -> list[str]:
    """Lines telling what :func:`build_face_index` kept and skipped (its ``summary``): images and faces per
    source, faces left out and why, and the problems (file:line, reason) with the first ``examples`` quoted."""
    counts = summary["counts"]
    parts = []
    for source in ("wider", "landmarks"):
        if source in counts:
            c = counts[source]
            parts.append(f"{source}: {c['images']} images, {c['faces']} faces"
                         + (f" ({c['faces_with_landmarks']} with landmarks)" if c["faces_with_landmarks"] else ""))
    lines = [f"face index: {summary['train_images']} training images ({'; '.join(parts)}), "
             f"{summary['held_out_images']} held out"]
    left_out = {key: sum(c.get(key, 0) for c in counts.values())
                for key in ("faces_small", "faces_invalid", "faces_no_area", "images_unreadable", "lines_skipped")}
    if any(left_out.values()):
        lines.append("not trained as faces: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                          for k, v in left_out.items() if v))
    ignored = sum(c.get("ignore_regions", 0) for c in counts.values())
    if ignored:
        lines.append(f"{ignored} small or invalid faces of indexed images kept as ignore regions (neither face nor "
                     "background)")
    problems = summary["problems"]
    if problems:
        where = f" (all in {summary_path})" if summary_path else ""
        lines.append(f"{len(problems)} input problem(s) skipped{where}, e.g.:")
        lines += [f"  {problem}" for problem in problems[:examples]]
    return lines


__all__ = ["DEFAULT_HOLD_OUT", "HELD_OUT_GT", "HELD_OUT_INDEX", "MIN_CROP_SCALE", "MIN_FACE", "MIN_FACE_PX", "min_face_fraction",
           "SUMMARY", "TRAIN_INDEX", "FaceIndex", "FaceRecord", "build_face_index", "index_report",
           "read_face_index", "write_face_index"]

