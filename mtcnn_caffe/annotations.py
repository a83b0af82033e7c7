"""Readers of the annotation formats the toolkit consumes (one parser per format).

Every reader has two modes. Lenient (default): a line that does not parse is
skipped, and reported as ``file:line: reason`` in :attr:`Parsed.errors`, so a
long job can go on and say at the end what it skipped. Strict: the first such
line raises :class:`AnnotationError` with the same message.

Coordinates are returned as float64 pixels exactly as written in the files;
boxes are converted to ``x1, y1, x2, y2`` where the format says so (noted per
reader).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Iterator, TypeVar

import numpy as np

T = TypeVar("T")

#: Names of the 5 points, in the order every 5-point array of the toolkit uses.
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
#: Indices of mirrored partners in the 5-point order (for horizontal flips).
FIVE_POINT_MIRROR = (1, 0, 2, 4, 3)
#: WIDER FACE attribute columns that follow ``x y w h``.
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


class AnnotationError(ValueError):
    """An annotation line that cannot be parsed (message starts with ``file:line:``)."""


@dataclass
class Parsed(Generic[T]):
    """Records read from a file plus the ``file:line: reason`` of every skipped line."""

    items: list[T] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _Problems:
    """Collects or raises parse problems depending on strictness."""

    def __init__(self, path: Path, strict: bool, errors: list[str]):
        self.path, self.strict, self.errors = path, strict, errors

    def report(self, line_no: int, reason: str) -> None:
        message = f"{self.path}:{line_no}: {reason}"
        if self.strict:
            raise AnnotationError(message)
        self.errors.append(message)


def _floats(tokens: list[str], count: int, what: str) -> np.ndarray:
    if len(tokens) < count:
        raise ValueError(f"expected {count} numbers for {what}, found {len(tokens)}")
    values = np.array([float(t) for t in tokens[:count]], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"non-finite number in {what}")
    return values


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


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
    with fewer than 4 numbers, or a count that does not parse, are reported; a
    face whose attribute columns are missing gets zeros (older releases).
    """
    path = Path(path)
    lines = _read_lines(path)
    result: Parsed[WiderImage] = Parsed()
    problems = _Problems(path, strict, result.errors)
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        i += 1
        if not name:
            continue
        if i >= len(lines):
            problems.report(i, f"image {name!r} has no face-count line")
            break
        try:
            count = int(lines[i].strip())
            if count < 0:
                raise ValueError
        except ValueError:
            problems.report(i + 1, f"face count {lines[i].strip()!r} of image {name!r} is not a non-negative integer")
            i += 1
            continue
        i += 1
        boxes, attrs = [], []
        for _ in range(max(count, 1)):  # count 0 still has one dummy line
            if i >= len(lines):
                problems.report(i, f"image {name!r}: file ends before its {count} face lines")
                break
            tokens = lines[i].split()
            line_no = i + 1
            i += 1
            if count == 0:
                continue
            try:
                box = _floats(tokens, 4, "x y w h")
                attr = [int(float(t)) for t in tokens[4:10]] + [0] * (6 - len(tokens[4:10]))
            except ValueError as exc:
                problems.report(line_no, f"image {name!r}: {exc}")
                continue
            boxes.append(box)
            attrs.append(attr)
        result.items.append(
            WiderImage(name, np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(attrs, dtype=np.int64).reshape(-1, 6))
        )
    return result


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
    problems = _Problems(path, strict, result.errors)
    for line_no, line in enumerate(_read_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = _floats(tokens[1:], 14, "box (l r t b) and 5 points")
            if len(tokens) > 15:
                raise ValueError(f"expected 15 fields, found {len(tokens)}")
        except ValueError as exc:
            problems.report(line_no, str(exc))
            continue
        left, right, top, bottom = values[:4]
        if right <= left or bottom <= top:
            problems.report(line_no, f"empty box l={left} r={right} t={top} b={bottom}")
            continue
        result.items.append(
            LandmarkFace(tokens[0].replace("\\", "/"), np.array([left, top, right, bottom]), values[4:].reshape(5, 2))
        )
    return result


def _celeba_table(path: Path, columns: int, problems: _Problems) -> dict[str, tuple[int, np.ndarray]]:
    """CelebA list file: count line, header line, then ``image v1 .. vK`` rows."""
    table: dict[str, tuple[int, np.ndarray]] = {}
    for line_no, line in enumerate(_read_lines(path), start=1):
        tokens = line.split()
        if line_no <= 2 or not tokens:  # count and column header
            continue
        try:
            if len(tokens) != columns + 1:
                raise ValueError(f"expected {columns + 1} fields, found {len(tokens)}")
            table[tokens[0]] = (line_no, _floats(tokens[1:], columns, "values"))
        except ValueError as exc:
            problems.report(line_no, str(exc))
    return table


def read_celeba(bbox_path: str | Path, landmarks_path: str | Path, strict: bool = False) -> Parsed[LandmarkFace]:
    """Read CelebA's in-the-wild ``list_bbox_celeba.txt`` (``x y w h``) and
    ``list_landmarks_celeba.txt`` (5 points, same order as ours), joined by image name."""
    bbox_path, landmarks_path = Path(bbox_path), Path(landmarks_path)
    result: Parsed[LandmarkFace] = Parsed()
    box_problems = _Problems(bbox_path, strict, result.errors)
    boxes = _celeba_table(bbox_path, 4, box_problems)
    points = _celeba_table(landmarks_path, 10, _Problems(landmarks_path, strict, result.errors))
    for name, (line_no, xywh) in boxes.items():
        if name not in points:
            box_problems.report(line_no, f"image {name!r} has no row in {landmarks_path.name}")
            continue
        x, y, w, h = xywh
        if w <= 0 or h <= 0:
            box_problems.report(line_no, f"empty box w={w} h={h}")
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


def read_imglab_xml(path: str | Path, strict: bool = False) -> Parsed[ImglabImage]:
    """Read an imglab XML with 68-point faces (iBUG 300-W numbering, parts ``00``..``67``)."""
    path = Path(path)
    result: Parsed[ImglabImage] = Parsed()
    problems = _Problems(path, strict, result.errors)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}:{exc.position[0]}: XML does not parse: {exc}") from exc
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
                problems.report(getattr(box, "sourceline", 0) or 0, f"image {image.get('file')!r}: bad box: {exc}")
                continue
            boxes.append([left, top, left + width, top + height])
            points.append(pts)
        width, height = image.get("width"), image.get("height")
        result.items.append(
            ImglabImage(
                image.get("file", ""),
                int(width) if width else None,
                int(height) if height else None,
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

