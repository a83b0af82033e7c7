"""FDDB evaluation, following the official ``evaluate`` program (Jain & Learned-Miller).

Protocol:

* Ground truth: ``FDDB-fold-XX-ellipseList.txt`` (image name, count, then
  ``major_radius minor_radius angle center_x center_y 1`` per face).
* Detections: one file in the same layout with ``x y w h score`` rectangles.
* Overlap of a face and a detection = |E ∩ R| / |E ∪ R| counted in pixels of
  rasterised regions, drawn with OpenCV exactly as the official code draws them:
  ellipse centre rounded, radii truncated to integers, angle in degrees, filled;
  rectangle from ``round(x, y)`` to ``round(x + w, y + h)``, both corners included.
* For every distinct detection score s of an image (ascending in the official
  code, order does not matter), the detections with score >= s are matched
  one-to-one to the faces by the Hungarian algorithm maximising the total
  overlap. Matched pairs with overlap > 0.5 are discrete true positives; the
  continuous true-positive score is the sum of the matched overlaps; false
  positives = kept detections - discrete true positives (the same count in
  both ROCs).
* The image results are summed over all images at every distinct threshold
  (an image contributes its result at its own smallest threshold >= the global
  one); TPR = TP / number of faces. Reported: TPR at 1000 and 2000 false
  positives (largest TPR with FP <= k).

Approximation, stated plainly: the official program draws the regions on a
mask of the image's size, so parts outside the image do not count. The FDDB
images are not needed here: without image sizes the regions are drawn
unclipped; pass ``image_sizes`` (``--images`` on the command line) to clip like
the official program. Results differ only for faces or detections that cross
the image border. OpenCV's ellipse polygon may also differ by a few border
pixels from the OpenCV 1.x/2.x used by the official binary.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..annotations import read_counted_blocks
from caffe_common.eval.common import EvaluationError, ProblemLog, parse_numbers, read_text_lines
from caffe_common.eval.curves import value_at_or_below

FP_MARKS = (1000, 2000)
FOLD_PATTERN = "FDDB-fold-{:02d}-ellipseList.txt"
#: Largest ellipse radius rasterised (px): bounds the memory of one region (about 17 Mpx at most).
MAX_RADIUS = 2048
#: Largest absolute coordinate accepted in a face or detection row (px).
MAX_COORDINATE = 1e6


# --------------------------------------------------------------------------- readers
def _read_blocks(path: Path, columns: int, what: str, problems: ProblemLog, check) -> dict[str, np.ndarray]:
    """Read ``name / count / rows`` blocks (:func:`mtcnn_caffe.annotations.read_counted_blocks`, no dummy
    row after a count of 0); ``check(row)`` raises ValueError on bad rows. A repeated image is reported."""
    def parse_row(tokens: list[str]) -> list[float]:
        row = parse_numbers(tokens, columns, what)
        check(row)
        return row

    blocks: dict[str, np.ndarray] = {}
    for name, rows in read_counted_blocks(path, read_text_lines(path, what), problems, parse_row):
        if name in blocks:
            problems.report(f"{path}: image {name!r} appears twice; its second block is skipped")
            continue
        blocks[name] = np.array(rows, dtype=np.float64).reshape(-1, columns)
    return blocks


def _check_coordinates(values: list[float]) -> None:
    if any(abs(v) > MAX_COORDINATE for v in values):
        raise ValueError(f"coordinate beyond +-{MAX_COORDINATE:g} px: {' '.join(f'{v:g}' for v in values)}")


def _check_ellipse(row: list[float]) -> None:
    if row[0] <= 0 or row[1] <= 0:
        raise ValueError(f"radii must be positive, found {row[0]:g} {row[1]:g}")
    if max(row[0], row[1]) > MAX_RADIUS:
        raise ValueError(f"radius {max(row[0], row[1]):g} px is above the {MAX_RADIUS} px this evaluator rasterises "
                         "(FDDB faces are below 300 px); refused")
    _check_coordinates(row[3:5])


def _check_rectangle(row: list[float]) -> None:
    if row[2] < 0 or row[3] < 0:
        raise ValueError(f"negative size w={row[2]:g} h={row[3]:g}")
    _check_coordinates(row[:4])


def read_ellipse_list(path: str | Path, problems: ProblemLog | None = None) -> dict[str, np.ndarray]:
    """One ``FDDB-fold-XX-ellipseList.txt``: ``{image: (N, 5) major minor angle cx cy}``."""
    return _read_blocks(Path(path), 5, "major_radius minor_radius angle center_x center_y",
                        problems or ProblemLog(), _check_ellipse)


def read_fddb_folds(folds_dir: str | Path, folds: Iterable[int] | None = None,
                    problems: ProblemLog | None = None) -> dict[str, np.ndarray]:
    """All (or the chosen) ``FDDB-fold-XX-ellipseList.txt`` of a folder, in fold order."""
    folds_dir = Path(folds_dir)
    if not folds_dir.is_dir():
        raise EvaluationError(f"FDDB folds folder not found: {folds_dir}")
    if folds is None:
        paths = sorted(p for p in folds_dir.glob("FDDB-fold-*-ellipseList.txt") if re.fullmatch(r"FDDB-fold-\d+-ellipseList\.txt", p.name))
        if not paths:
            raise EvaluationError(f"{folds_dir}: no FDDB-fold-XX-ellipseList.txt files")
    else:
        paths = [folds_dir / FOLD_PATTERN.format(f) for f in folds]
    problems = problems or ProblemLog()
    gt: dict[str, np.ndarray] = {}
    for path in paths:
        for name, ellipses in read_ellipse_list(path, problems).items():
            if name in gt:
                problems.report(f"{path}: image {name!r} is already in another fold; skipped")
                continue
            gt[name] = ellipses
    return gt


def read_fddb_detections(paths: str | Path | Iterable[str | Path], ground_truth: dict[str, np.ndarray],
                         problems: ProblemLog | None = None) -> dict[str, np.ndarray]:
    """Detection file(s) in FDDB format: ``{image: (M, 5) x y w h score}``.

    Blocks for images that are not in ``ground_truth`` are reported and skipped; a file without any
    readable block is an error (an empty detection file is not "no detections").
    """
    problems = problems or ProblemLog()
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    detections: dict[str, np.ndarray] = {}
    for path in paths:
        blocks = _read_blocks(Path(path), 5, "x y w h score", problems, _check_rectangle)
        if not blocks:
            raise EvaluationError(f"{path}: no detection block (name line, count line, 'x y w h score' lines) "
                                  "could be read; nothing to evaluate")
        for name, boxes in blocks.items():
            if name not in ground_truth:
                problems.report(f"{path}: detections for image {name!r}, which is not in the FDDB folds read")
            elif name in detections:
                problems.report(f"{path}: image {name!r} already has detections in another file; skipped")
            else:
                detections[name] = boxes
    return detections


# --------------------------------------------------------------------------- rasterised overlap
def _round32(value: float) -> int:
    """``cvRound`` of a value stored as float32 (``cvPointFrom32f(cvPoint2D32f(...))``)."""
    return int(np.rint(np.float32(value)))


@dataclass
class EllipseMask:
    """A filled, rasterised ellipse: ``mask[y - y0, x - x0]``."""

    x0: int
    y0: int
    mask: np.ndarray

    @property
    def area(self) -> int:
        """Number of pixels of the filled ellipse."""
        return int(np.count_nonzero(self.mask))


def rasterise_ellipse(ellipse: np.ndarray, image_size: tuple[int, int] | None = None) -> EllipseMask:
    """Draw ``major minor angle cx cy`` as the official program does (clipped to
    ``image_size = (width, height)`` when given)."""
    import cv2

    major, minor, theta, cx, cy = (float(v) for v in ellipse[:5])
    centre = (_round32(cx), _round32(cy))
    axes = (int(major), int(minor))
    # Official: the reader stores (pi - theta) in degrees, the drawing uses 180 - that.
    angle = 180 - (math.pi - theta) * 180 / math.pi
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    half_x = math.ceil(math.hypot(axes[0] * c, axes[1] * s)) + 2
    half_y = math.ceil(math.hypot(axes[0] * s, axes[1] * c)) + 2
    x0, x1, y0, y1 = centre[0] - half_x, centre[0] + half_x, centre[1] - half_y, centre[1] + half_y
    if image_size is not None:
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, image_size[0] - 1), min(y1, image_size[1] - 1)
    if x1 < x0 or y1 < y0:
        return EllipseMask(0, 0, np.zeros((0, 0), dtype=bool))
    canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.ellipse(canvas, (centre[0] - x0, centre[1] - y0), axes, angle, 0, 360, 1, thickness=-1)
    return EllipseMask(x0, y0, canvas.astype(bool))


def rectangle_pixels(rect: np.ndarray, image_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Inclusive pixel range ``x1, y1, x2, y2`` of a filled ``x y w h`` rectangle as drawn officially."""
    x, y, w, h = (float(v) for v in rect[:4])
    x1, y1, x2, y2 = _round32(x), _round32(y), _round32(x + w), _round32(y + h)
    if image_size is not None:
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, image_size[0] - 1), min(y2, image_size[1] - 1)
    return x1, y1, x2, y2


def region_overlaps(ellipses: np.ndarray, rects: np.ndarray, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """``(N, M)`` pixel IoU of rasterised ellipses and rectangles."""
    ellipses = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, rects.shape[-1] if np.size(rects) else 4)
    overlaps = np.zeros((len(ellipses), len(rects)))
    if not len(ellipses) or not len(rects):
        return overlaps
    pixels = np.array([rectangle_pixels(r, image_size) for r in rects], dtype=np.int64)
    rect_area = np.maximum(pixels[:, 2] - pixels[:, 0] + 1, 0) * np.maximum(pixels[:, 3] - pixels[:, 1] + 1, 0)
    for i, ellipse in enumerate(ellipses):
        region = rasterise_ellipse(ellipse, image_size)
        if region.mask.size == 0:
            continue
        # integral image: pixel count of the ellipse inside any rectangle in O(1)
        integral = np.zeros((region.mask.shape[0] + 1, region.mask.shape[1] + 1), dtype=np.int64)
        integral[1:, 1:] = region.mask.cumsum(0).cumsum(1)
        h, w = region.mask.shape
        ax1 = np.clip(pixels[:, 0] - region.x0, 0, w)
        ax2 = np.clip(pixels[:, 2] - region.x0 + 1, 0, w)
        ay1 = np.clip(pixels[:, 1] - region.y0, 0, h)
        ay2 = np.clip(pixels[:, 3] - region.y0 + 1, 0, h)
        ax2, ay2 = np.maximum(ax2, ax1), np.maximum(ay2, ay1)
        inter = integral[ay2, ax2] - integral[ay1, ax2] - integral[ay2, ax1] + integral[ay1, ax1]
        union = region.area + rect_area - inter
        overlaps[i] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return overlaps


# --------------------------------------------------------------------------- per image and dataset
def image_roc_steps(overlaps: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct score s (descending): discrete TP, continuous TP and FP of the
    detections with score >= s, matched one-to-one by maximum total overlap."""
    from scipy.optimize import linear_sum_assignment

    levels = np.unique(scores)[::-1]
    tp_disc = np.zeros(len(levels))
    tp_cont = np.zeros(len(levels))
    fp = np.zeros(len(levels))
    for k, level in enumerate(levels):
        valid = scores >= level
        sub = overlaps[:, valid]
        matched = np.zeros(0)
        if sub.size and sub.max() > 0:
            rows, cols = linear_sum_assignment(sub, maximize=True)
            matched = sub[rows, cols]
            matched = matched[matched > 0]
        tp_cont[k] = matched.sum()
        tp_disc[k] = np.count_nonzero(matched > 0.5)
        fp[k] = np.count_nonzero(valid) - tp_disc[k]
    return levels, tp_disc, tp_cont, fp


@dataclass
class FddbResult:
    """Discrete and continuous ROC (one point per distinct score, first at threshold inf) and TPR read-outs."""

    thresholds: np.ndarray
    false_positives: np.ndarray
    tpr_discrete: np.ndarray
    tpr_continuous: np.ndarray
    faces: int
    images: int
    detections: int
    clipped_to_images: bool
    tpr_at: dict[str, dict[int, float]] = field(default_factory=dict)

    def summary_line(self) -> str:
        """The one-line summary the CLI prints: TPR at each false-positive mark, both ROCs."""
        parts = []
        for kind in ("discrete", "continuous"):
            parts.append(kind + " " + " ".join(f"TPR@{k}FP {v:.4f}" for k, v in self.tpr_at[kind].items()))
        return " | ".join(parts)

    def as_dict(self) -> dict:
        """The JSON summary, curves included."""
        return {
            "tpr_at_fp": self.tpr_at,
            "faces": self.faces,
            "images": self.images,
            "detections": self.detections,
            "clipped_to_images": self.clipped_to_images,
            "roc": {"threshold": self.thresholds, "false_positives": self.false_positives,
                    "tpr_discrete": self.tpr_discrete, "tpr_continuous": self.tpr_continuous},
        }


def evaluate_fddb(ground_truth: dict[str, np.ndarray], detections: dict[str, np.ndarray],
                  image_sizes: dict[str, tuple[int, int]] | None = None,
                  fp_marks: Iterable[int] = FP_MARKS) -> FddbResult:
    """Discrete and continuous ROC of ``detections`` against the ellipse ground truth.

    Images of ``ground_truth`` without detections count as having none.
    """
    from tqdm import tqdm

    all_levels, all_disc, all_cont, all_fp = [], [], [], []
    faces = 0
    for name, ellipses in tqdm(ground_truth.items(), desc="FDDB images", unit="img", disable=None, leave=False):
        faces += len(ellipses)
        dets = detections.get(name)
        if dets is None or not len(dets):
            continue
        size = image_sizes.get(name) if image_sizes else None
        levels, disc, cont, fp = image_roc_steps(region_overlaps(ellipses, dets, size), dets[:, 4])
        # the global curve is a sum of per-image step functions: store their increments
        all_levels.append(levels)
        all_disc.append(np.diff(disc, prepend=0.0))
        all_cont.append(np.diff(cont, prepend=0.0))
        all_fp.append(np.diff(fp, prepend=0.0))
    if all_levels:
        levels = np.concatenate(all_levels)
        order, index = np.unique(-levels, return_inverse=True)
        thresholds = -order
        disc = np.cumsum(np.bincount(index, np.concatenate(all_disc), len(order)))
        cont = np.cumsum(np.bincount(index, np.concatenate(all_cont), len(order)))
        fp = np.cumsum(np.bincount(index, np.concatenate(all_fp), len(order)))
    else:
        thresholds = disc = cont = fp = np.zeros(0)
    # the official curve starts at an "infinite" threshold with nothing detected
    thresholds = np.concatenate(([np.inf], thresholds))
    fp = np.concatenate(([0.0], fp))
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr_disc = np.concatenate(([0.0], disc)) / faces if faces else np.zeros(len(fp))
        tpr_cont = np.concatenate(([0.0], cont)) / faces if faces else np.zeros(len(fp))
    result = FddbResult(thresholds, fp, tpr_disc, tpr_cont, faces, len(ground_truth),
                        int(sum(len(detections[n]) for n in ground_truth if n in detections)), image_sizes is not None)
    result.tpr_at = {
        "discrete": {k: value_at_or_below(fp, tpr_disc, k) for k in fp_marks},
        "continuous": {k: value_at_or_below(fp, tpr_cont, k) for k in fp_marks},
    }
    return result


def read_image_sizes(images_dir: str | Path, names: Iterable[str], problems: ProblemLog,
                     extension: str = ".jpg") -> dict[str, tuple[int, int]]:
    """``{name: (width, height)}`` of ``images_dir/<name>.jpg`` (missing images are reported)."""
    import cv2
    from tqdm import tqdm

    sizes = {}
    for name in tqdm(list(names), desc="image sizes", unit="img", disable=None, leave=False):
        path = Path(images_dir) / f"{name}{extension}"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
        if image is None:
            problems.report(f"{path}: image missing or unreadable; its regions are not clipped")
            continue
        sizes[name] = (image.shape[1], image.shape[0])
    return sizes
