"""Readers (and the one writer) of the face annotation formats both detectors consume: WIDER FACE ground
truth, 5-point landmark lists, CelebA, dlib imglab XML with 68 points (one parser per format).

Shared core (:mod:`caffe_common`): the MTCNN toolkit and the face SSD read the same files through these
functions; :mod:`mtcnn_caffe.annotations` re-exports them under their old names.

Every reader has two modes. Lenient (default): a line that does not parse is
skipped, and reported as ``file:line: reason`` in :attr:`Parsed.errors`, so a
long job can go on and say at the end what it skipped. Strict: the first such
line raises :class:`AnnotationError` with the same message.

Coordinates are returned as float64 pixels exactly as written in the files;
boxes are converted to ``x1, y1, x2, y2`` where the format says so (noted per
reader).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffe_common.atomic import write_text_atomic
from caffe_common.textio import (  # noqa: F401
    AnnotationError,
    Parsed,
    ProblemLog,
    float_array,
    parse_numbers,
    read_counted_blocks,
    read_text_lines,
    read_xml_root,
)

#: Names of the 5 points, in the order every 5-point array of the toolkit uses.
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
#: Indices of mirrored partners in the 5-point order (for horizontal flips).
FIVE_POINT_MIRROR = (1, 0, 2, 4, 3)
#: WIDER FACE attribute columns that follow ``x y w h``.
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


# --------------------------------------------------------------------------- WIDER FACE
@dataclass
class WiderImage:
    """One image of a WIDER FACE ``*_bbx_gt.txt`` file.

    ``boxes`` are ``(N, 4)`` ``x, y, w, h`` as in the file (not converted);
    ``attrs`` are ``(N, 6)`` ints in :data:`WIDER_ATTRIBUTES` order.
    """

    name: str
    boxes: np.ndarray
    attrs: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Mask of faces not flagged ``invalid``."""
        return self.attrs[:, 3] == 0


def read_wider_gt(path: str | Path, strict: bool = False) -> Parsed[WiderImage]:
    """Read the official WIDER FACE text annotation (name line, count line, face lines).

    A count of 0 is followed by one dummy face line, which is consumed. Face lines
    with fewer than 4 numbers, a negative width or height, or non-numeric attributes
    are reported and left out; a count that does not match its face lines is one
    problem (see :func:`read_counted_blocks`); a face whose attribute columns are
    missing gets zeros (older releases).
    """
    path = Path(path)
    lines = read_text_lines(path)
    result: Parsed[WiderImage] = Parsed()
    problems = ProblemLog(strict, result.errors)

    def face(tokens: list[str]) -> tuple[np.ndarray, list[int]]:
        box = float_array(tokens, 4, "x y w h")
        if box[2] < 0 or box[3] < 0:
            raise ValueError(f"negative size w={box[2]:g} h={box[3]:g}")
        attrs = tokens[4:10]
        flags = parse_numbers(attrs, len(attrs), " ".join(WIDER_ATTRIBUTES[:len(attrs)]))
        return box, [int(v) for v in flags] + [0] * (6 - len(attrs))

    blocks = read_counted_blocks(path, lines, problems, face, dummy_row_when_empty=True,
                                 count_label="face count", rows_label="face lines")
    for name, faces in blocks:
        boxes = np.array([box for box, _ in faces], dtype=np.float64).reshape(-1, 4)
        attrs = np.array([attr for _, attr in faces], dtype=np.int64).reshape(-1, 6)
        result.items.append(WiderImage(name, boxes, attrs))
    return result


def wider_event_matches(name: str, events: Iterable[str]) -> bool:
    """Whether the WIDER image ``name`` (``<event folder>/<file>``) belongs to one of ``events``: a folder name
    such as ``13--Interview`` or its part after ``--`` (``Interview``), case-insensitive."""
    wanted = {e.lower() for e in events}
    event = name.split("/")[0].lower()
    return event in wanted or event.split("--", 1)[-1] in wanted


def _wider_number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def format_wider_gt(images: Iterable[WiderImage]) -> str:
    """The text of a WIDER FACE ``*_bbx_gt.txt`` holding ``images`` (what :func:`read_wider_gt` reads back):
    name line, count line, ``x y w h`` and the six attribute flags per face; an image without faces gets
    the official dummy line of zeros."""
    lines: list[str] = []
    for item in images:
        lines += [item.name, str(len(item.boxes))]
        lines += [" ".join(_wider_number(v) for v in (*box, *attrs)) for box, attrs in zip(item.boxes, item.attrs)]
        if not len(item.boxes):
            lines.append("0 0 0 0 0 0 0 0 0 0")
    return "\n".join(lines) + "\n" if lines else ""


def write_wider_gt(path: str | Path, images: Iterable[WiderImage]) -> Path:
    """Write ``images`` as a WIDER FACE ground-truth text file, atomically (:func:`format_wider_gt`)."""
    return write_text_atomic(path, format_wider_gt(images))


def split_wider_annotations(anno: Path, held_out_events: Sequence[str], out_dir: Path) -> tuple[Path, Path | None]:
    """Write the WIDER annotation without (``train_gt.txt``) and with only (``held_out_gt.txt``) the images of
    ``held_out_events`` (see :func:`wider_event_matches`); without events, ``(anno, None)``."""
    if not held_out_events:
        return anno, None
    parsed = read_wider_gt(anno)
    held = [wider_event_matches(item.name, held_out_events) for item in parsed.items]
    if not any(held):
        raise ValueError(f"{anno}: no image of the held-out events {list(held_out_events)}")
    train = write_wider_gt(Path(out_dir) / "train_gt.txt", [i for i, h in zip(parsed.items, held) if not h])
    test = write_wider_gt(Path(out_dir) / "held_out_gt.txt", [i for i, h in zip(parsed.items, held) if h])
    return train, test


# --------------------------------------------------------------------------- 5-point lists
@dataclass
class LandmarkFace:
    """One face of a 5-point landmark set: ``box`` is ``x1, y1, x2, y2``; ``points`` ``(5, 2)``."""

    image: str
    box: np.ndarray
    points: np.ndarray


def read_landmark_list(path: str | Path, strict: bool = False) -> Parsed[LandmarkFace]:
    """Read the 5-point list format ``path left right top bottom x1 y1 ... x5 y5``.

    Note the box order of the file (left, right, top, bottom); it is returned as
    ``x1, y1, x2, y2``. Backslashes in image paths become ``/``.
    """
    path = Path(path)
    result: Parsed[LandmarkFace] = Parsed()
    problems = ProblemLog(strict, result.errors)
    for line_no, line in enumerate(read_text_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = float_array(tokens[1:], 14, "box (l r t b) and 5 points")
            if len(tokens) > 15:
                raise ValueError(f"expected 15 fields, found {len(tokens)}")
        except ValueError as exc:
            problems.report_line(path, line_no, str(exc))
            continue
        left, right, top, bottom = values[:4]
        if right <= left or bottom <= top:
            problems.report_line(path, line_no, f"empty box l={left} r={right} t={top} b={bottom}")
            continue
        result.items.append(
            LandmarkFace(tokens[0].replace("\\", "/"), np.array([left, top, right, bottom]), values[4:].reshape(5, 2))
        )
    return result


def _celeba_table(path: Path, columns: int, problems: ProblemLog) -> dict[str, tuple[int, np.ndarray]]:
    """CelebA list file: count line, header line, then ``image v1 .. vK`` rows."""
    table: dict[str, tuple[int, np.ndarray]] = {}
    for line_no, line in enumerate(read_text_lines(path), start=1):
        tokens = line.split()
        if line_no <= 2 or not tokens:  # count and column header
            continue
        try:
            if len(tokens) != columns + 1:
                raise ValueError(f"expected {columns + 1} fields, found {len(tokens)}")
            table[tokens[0]] = (line_no, float_array(tokens[1:], columns, "values"))
        except ValueError as exc:
            problems.report_line(path, line_no, str(exc))
    return table


def read_celeba(bbox_path: str | Path, landmarks_path: str | Path, strict: bool = False) -> Parsed[LandmarkFace]:
    """Read CelebA's in-the-wild ``list_bbox_celeba.txt`` (``x y w h``) and
    ``list_landmarks_celeba.txt`` (5 points, same order as ours), joined by image name."""
    bbox_path, landmarks_path = Path(bbox_path), Path(landmarks_path)
    result: Parsed[LandmarkFace] = Parsed()
    problems = ProblemLog(strict, result.errors)
    boxes = _celeba_table(bbox_path, 4, problems)
    points = _celeba_table(landmarks_path, 10, problems)
    for name, (line_no, xywh) in boxes.items():
        if name not in points:
            problems.report_line(bbox_path, line_no, f"image {name!r} has no row in {landmarks_path.name}")
            continue
        x, y, w, h = xywh
        if w <= 0 or h <= 0:
            problems.report_line(bbox_path, line_no, f"empty box w={w} h={h}")
            continue
        result.items.append(LandmarkFace(name, np.array([x, y, x + w, y + h]), points[name][1].reshape(5, 2)))
    return result


# --------------------------------------------------------------------------- imglab XML (68 points)
@dataclass
class ImglabImage:
    """One image of a dlib imglab XML: ``boxes`` ``(N, 4)`` ``x1, y1, x2, y2``;
    ``points`` ``(N, 68, 2)`` with NaN where a part is absent."""

    file: str
    width: int | None
    height: int | None
    boxes: np.ndarray
    points: np.ndarray


def _optional_int(text: str | None) -> int | None:
    """An XML size attribute: None when absent, else a non-negative integer (ValueError otherwise)."""
    if not text:
        return None
    if not text.strip().isdecimal():
        raise ValueError(f"size {text!r} is not a non-negative integer")
    return int(text)


def read_imglab_xml(path: str | Path, strict: bool = False) -> Parsed[ImglabImage]:
    """Read an imglab XML with 68-point faces (iBUG 300-W numbering, parts ``00``..``67``)."""
    path = Path(path)
    result: Parsed[ImglabImage] = Parsed()
    problems = ProblemLog(strict, result.errors)
    root = read_xml_root(path)
    for image in root.iter("image"):
        boxes, points = [], []
        for box in image.iter("box"):
            try:
                left, top = float(box.get("left")), float(box.get("top"))
                width, height = float(box.get("width")), float(box.get("height"))
                pts = np.full((68, 2), np.nan)
                for part in box.iter("part"):
                    idx = int(part.get("name"))
                    if not 0 <= idx < 68:
                        raise ValueError(f"part name {idx} outside 0..67")
                    pts[idx] = float(part.get("x")), float(part.get("y"))
            except (TypeError, ValueError) as exc:
                problems.report_line(path, getattr(box, "sourceline", 0) or 0, f"image {image.get('file')!r}: bad box: {exc}")
                continue
            boxes.append([left, top, left + width, top + height])
            points.append(pts)
        try:
            width, height = (_optional_int(image.get(key)) for key in ("width", "height"))
        except ValueError as exc:
            problems.report_line(path, getattr(image, "sourceline", 0) or 0, f"image {image.get('file')!r}: {exc}")
            width = height = None
        result.items.append(
            ImglabImage(
                image.get("file", ""),
                width,
                height,
                np.array(boxes, dtype=np.float64).reshape(-1, 4),
                np.array(points, dtype=np.float64).reshape(-1, 68, 2),
            )
        )
    return result


def landmarks_68_to_5(points68: np.ndarray) -> np.ndarray:
    """Map 68-point faces ``(..., 68, 2)`` to the 5 points ``(..., 5, 2)``.

    1-based iBUG indices: left eye = mean of 37-42, right eye = mean of 43-48
    (the subject's right/left as seen in the image: image-left first), nose tip 31,
    mouth corners 49 and 55.
    """
    p = np.asarray(points68, dtype=np.float64)
    left_eye = p[..., 36:42, :].mean(axis=-2)
    right_eye = p[..., 42:48, :].mean(axis=-2)
    return np.stack([left_eye, right_eye, p[..., 30, :], p[..., 48, :], p[..., 54, :]], axis=-2)


def inter_ocular_distance(points5: np.ndarray) -> np.ndarray:
    """Distance between the two eye points of ``(..., 5, 2)`` arrays."""
    p = np.asarray(points5, dtype=np.float64)
    return np.linalg.norm(p[..., 0, :] - p[..., 1, :], axis=-1)

