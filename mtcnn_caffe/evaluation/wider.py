"""WIDER FACE evaluation, following the official MATLAB ``wider_eval`` protocol.

Protocol (what the benchmark's owners compute; each step is in a function below):

1. Predictions are read from the submission layout ``PRED/<event>/<name>.txt``
   (image name line, count line, then ``x y w h score`` lines) and sorted by
   score, descending (stable: ties keep file order, like MATLAB's ``sort``).
   A ground-truth image without a prediction file counts as "no detections".
2. Scores are min-max normalised over *all* evaluated predictions.
3. Per image, in score order, each prediction is compared with every
   ground-truth face (IoU with the MATLAB ``+1`` pixel convention, boxes
   ``x, y, x + w, y + h``) and assigned to the face of highest IoU. If that IoU
   is >= 0.5: a face outside the setting's keep list ("ignored") makes the
   prediction not count as a proposal at all; a kept face is recalled the
   first time. There is no fall-back to the second-best face, so a second
   detection of an already recalled face is a false positive.
4. For 1000 thresholds ``1 - t/1000`` (t = 1..1000) the number of proposals and
   of recalled kept faces among predictions with normalised score >= threshold
   is summed over images. Images without any ground-truth face, or without
   predictions, add nothing to these sums (as in the official code), but their
   kept faces still count in the recall denominator.
5. precision = recalled / proposals, recall = recalled / kept faces, and AP is
   the VOC all-point area of that curve (:func:`.curves.voc_ap_all_point`).

Differences from the MATLAB code, on purpose: when every prediction has the
same score, min-max normalisation is 0/0 (the MATLAB code then yields NaN and
AP 0); here all scores become 1.0 and a note says so.

Ground truth: the official ``wider_face_<split>.mat`` plus
``wider_{easy,medium,hard}_<split>.mat`` keep lists (read with scipy), or a
plain ``wider_face_*_bbx_gt.txt`` with a single setting ``all`` that keeps
every face not flagged ``invalid``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from ..annotations import read_wider_gt
from caffe_common.boxes import iou_matrix
from caffe_common.eval.common import EvaluationError, ProblemLog, parse_numbers, read_text_lines
from caffe_common.eval.curves import voc_ap_all_point

OFFICIAL_SETTINGS = ("easy", "medium", "hard")
TXT_SETTING = "all"
IOU_THRESHOLD = 0.5
THRESHOLD_COUNT = 1000


# --------------------------------------------------------------------------- ground truth
@dataclass
class WiderGtImage:
    """One ground-truth image: ``boxes`` ``(N, 4)`` as ``x, y, w, h``; ``keep`` maps
    each setting to a boolean mask of the faces it evaluates (the others are ignored)."""

    event: str
    name: str
    boxes: np.ndarray
    keep: dict[str, np.ndarray]

    @property
    def key(self) -> str:
        """``event/name`` (the prediction file is ``PRED/<key>.txt``)."""
        return f"{self.event}/{self.name}" if self.event else self.name


@dataclass
class WiderGroundTruth:
    """All ground-truth images, the settings their keep masks define, and the file they came from."""

    images: list[WiderGtImage]
    settings: tuple[str, ...]
    source: str

    def restrict(self, keys: set[str]) -> "WiderGroundTruth":
        """Only the images whose ``event/name`` key is in ``keys`` (``--subset``)."""
        return WiderGroundTruth([im for im in self.images if im.key in keys], self.settings, self.source)


def _mat_string(value) -> str:
    """A MATLAB char array as loaded by scipy (nested object/str arrays) -> str."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        value = value.ravel()[0]
    return str(value)


def _mat_cells(value) -> list:
    """A MATLAB cell array as loaded by scipy -> flat Python list of its elements."""
    return list(np.asarray(value, dtype=object).ravel())


def _load_mat(path: Path, names: Iterable[str]) -> dict:
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt or v7.3 files
        raise EvaluationError(f"{path}: cannot read MATLAB file ({exc})") from exc
    missing = [n for n in names if n not in data]
    if missing:
        raise EvaluationError(f"{path}: variable(s) {', '.join(missing)} missing (found {', '.join(k for k in data if not k.startswith('__'))})")
    return data


def read_wider_mat(face_mat: str | Path, settings: Iterable[str] = OFFICIAL_SETTINGS) -> WiderGroundTruth:
    """Read the official ground truth: ``wider_face_<split>.mat`` (``event_list``,
    ``file_list``, ``face_bbx_list``) and its sibling ``wider_<setting>_<split>.mat``
    files (``gt_list``: 1-based indices of the faces each setting keeps)."""
    face_mat = Path(face_mat)
    split = face_mat.stem[len("wider_face_"):] if face_mat.stem.startswith("wider_face_") else "val"
    data = _load_mat(face_mat, ("event_list", "file_list", "face_bbx_list"))
    try:
        events = [_mat_string(e) for e in _mat_cells(data["event_list"])]
        files = [[_mat_string(f) for f in _mat_cells(cell)] for cell in _mat_cells(data["file_list"])]
        boxes = [[np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in _mat_cells(cell)]
                 for cell in _mat_cells(data["face_bbx_list"])]
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{face_mat}: not the layout of the official WIDER FACE ground truth ({exc})") from exc
    for e, event_boxes in enumerate(boxes):
        for b in event_boxes:
            if not np.all(np.isfinite(b)) or np.any(b[:, 2:] < 0):
                raise EvaluationError(f"{face_mat}: event {e + 1}: a box with a negative size or a non-finite value")
    if not (len(events) == len(files) == len(boxes)):
        raise EvaluationError(f"{face_mat}: event_list, file_list and face_bbx_list have different lengths")
    for e, (f, b) in enumerate(zip(files, boxes)):
        if len(f) != len(b):
            raise EvaluationError(f"{face_mat}: event {events[e]!r} has {len(f)} files but {len(b)} box lists")

    settings = tuple(settings)
    keep_lists: dict[str, list[list[np.ndarray]]] = {}
    for setting in settings:
        path = face_mat.with_name(f"wider_{setting}_{split}.mat")
        if not path.is_file():
            raise EvaluationError(f"setting file not found: {path} (needed next to {face_mat.name})")
        try:
            cells = [[np.asarray(k, dtype=np.float64).ravel() for k in _mat_cells(cell)]
                     for cell in _mat_cells(_load_mat(path, ("gt_list",))["gt_list"])]
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"{path}: gt_list is not a cell array of face indices ({exc})") from exc
        if [len(c) for c in cells] != [len(f) for f in files]:
            raise EvaluationError(f"{path}: gt_list does not have the events/images of {face_mat.name}")
        keep_lists[setting] = cells

    images = []
    for e, event in enumerate(events):
        for j, name in enumerate(files[e]):
            n = len(boxes[e][j])
            keep = {}
            for setting in settings:
                index = keep_lists[setting][e][j]
                mask = np.zeros(n, dtype=bool)
                if index.size:
                    if not np.all(np.isfinite(index)) or np.any(index < 1) or np.any(index > n) \
                            or np.any(index != np.round(index)):
                        raise EvaluationError(
                            f"wider_{setting}_{split}.mat: image {event}/{name}: keep index outside 1..{n}: {index.tolist()}")
                    mask[index.astype(np.int64) - 1] = True
                keep[setting] = mask
            images.append(WiderGtImage(event, PurePosixPath(name).stem if name.endswith(".jpg") else name, boxes[e][j], keep))
    return WiderGroundTruth(images, settings, str(face_mat))


def read_wider_txt(path: str | Path, problems: ProblemLog | None = None) -> WiderGroundTruth:
    """Read a ``wider_face_*_bbx_gt.txt``: one setting ``all`` keeping the faces not flagged invalid.

    Unparseable lines are reported to ``problems`` (or raise in strict mode)."""
    problems = problems or ProblemLog()
    parsed = read_wider_gt(path, strict=problems.strict)
    for message in parsed.errors:
        problems.report(message)
    images = []
    for item in parsed:
        rel = PurePosixPath(item.name.replace("\\", "/"))
        event = rel.parent.as_posix() if rel.parent.as_posix() != "." else ""
        images.append(WiderGtImage(event, rel.stem, item.boxes, {TXT_SETTING: item.valid.copy()}))
    return WiderGroundTruth(images, (TXT_SETTING,), str(path))


def load_wider_ground_truth(path: str | Path, problems: ProblemLog | None = None) -> WiderGroundTruth:
    """``path``: the official ``.mat`` folder (or ``wider_face_<split>.mat``), a folder with
    one ``wider_face_*_bbx_gt.txt``, or that text file itself."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".mat":
            return read_wider_mat(path)
        return read_wider_txt(path, problems)
    if not path.is_dir():
        raise EvaluationError(f"WIDER FACE ground truth not found: {path}")
    # official .mat ground truth: wider_face_<split>.mat with its setting files (val preferred)
    mats = sorted(p for p in path.glob("wider_face_*.mat") if (path / f"wider_easy_{p.stem[len('wider_face_'):]}.mat").is_file())
    if len(mats) == 1 or (path / "wider_face_val.mat") in mats:
        return read_wider_mat(path / "wider_face_val.mat" if len(mats) > 1 else mats[0])
    texts = sorted(path.glob("wider_face_*_bbx_gt.txt"))
    if len(texts) == 1:
        return read_wider_txt(texts[0], problems)
    found = ", ".join(p.name for p in mats + texts) or "no wider_face_*.mat or wider_face_*_bbx_gt.txt"
    raise EvaluationError(f"{path}: cannot tell which WIDER FACE ground truth to use ({found}); pass the file itself")


def read_subset(path: str | Path, gt: WiderGroundTruth, problems: ProblemLog) -> set[str]:
    """Image keys (``event/name``) listed in a subset file.

    Lines may be ``event/name.jpg``, ``event/name`` or just ``name`` (WIDER names
    are unique); blank lines and ``#`` comments are skipped. A line naming no
    ground-truth image is reported.
    """
    path = Path(path)
    lines = read_text_lines(path, "subset list")
    by_name: dict[str, str] = {im.name: im.key for im in gt.images}
    keys_all = {im.key for im in gt.images}
    keys: set[str] = set()
    for line_no, line in enumerate(lines, start=1):
        entry = line.strip().replace("\\", "/")
        if not entry or entry.startswith("#"):
            continue
        rel = PurePosixPath(entry)
        rel = rel.with_suffix("") if rel.suffix.lower() in (".jpg", ".jpeg", ".png", ".txt") else rel
        key = rel.as_posix()
        if key in keys_all:
            keys.add(key)
        elif rel.name in by_name:
            keys.add(by_name[rel.name])
        else:
            problems.report(f"{path}:{line_no}: image {entry!r} is not in the ground truth")
    return keys


# --------------------------------------------------------------------------- predictions
def parse_prediction_file(path: Path, problems: ProblemLog) -> np.ndarray:
    """``(M, 5)`` ``x y w h score`` of one submission file, sorted by score (descending, stable).

    Bad lines (too few numbers, NaN/inf, negative width or height), a bad count
    line and a count that disagrees with the number of box lines are reported;
    the boxes that parse are kept.
    """
    lines = read_text_lines(path, "prediction file")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        problems.report(f"{path}: expected an image-name line and a count line, found {len(lines)} line(s)")
        return np.zeros((0, 5))
    try:
        count = int(lines[1].strip())
        if count < 0:
            raise ValueError
    except ValueError:
        problems.report(f"{path}:2: face count {lines[1].strip()!r} is not a non-negative integer")
        return np.zeros((0, 5))
    body = lines[2:]
    if len(body) != count:
        problems.report(f"{path}: count line says {count} boxes but {len(body)} box line(s) follow; reading the lines present")
    rows = []
    for line_no, line in enumerate(body, start=3):
        try:
            x, y, w, h, score = parse_numbers(line.split(), 5, "x y w h score")
            if w < 0 or h < 0:
                raise ValueError(f"negative size w={w} h={h}")
        except ValueError as exc:
            problems.report(f"{path}:{line_no}: {exc}")
            continue
        rows.append((x, y, w, h, score))
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return boxes[np.argsort(-boxes[:, 4], kind="stable")]


@dataclass
class WiderPredictions:
    """Score-sorted boxes per image key, the ground-truth images without a file, and files outside ``--subset``."""

    boxes: dict[str, np.ndarray]
    missing: list[str] = field(default_factory=list)
    outside_subset: int = 0


def read_wider_predictions(pred_dir: str | Path, gt: WiderGroundTruth, problems: ProblemLog,
                           outside: set[str] | None = None) -> WiderPredictions:
    """Read ``pred_dir/<event>/<name>.txt`` for every ground-truth image.

    Files for images that are not in ``gt`` are reported (skipped), unless their
    key is in ``outside`` (images deliberately left out by ``--subset``), which
    are only counted.
    """
    from tqdm import tqdm

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvaluationError(f"prediction folder not found: {pred_dir}")
    wanted = {im.key: im for im in gt.images}
    result = WiderPredictions({})
    files = sorted(p for p in pred_dir.rglob("*.txt") if p.is_file())
    if not files:
        raise EvaluationError(f"{pred_dir}: no prediction files (<event>/<name>.txt); nothing to evaluate")
    for file in files:
        key = file.relative_to(pred_dir).with_suffix("").as_posix()
        if key not in wanted:
            if outside is not None and key in outside:
                result.outside_subset += 1
            else:
                problems.report(f"{file}: prediction file for an image that is not in the ground truth ({gt.source})")
            continue
    for key in tqdm(wanted, desc="read predictions", unit="img", disable=None, leave=False):
        file = pred_dir / f"{key}.txt"
        if file.is_file():
            result.boxes[key] = parse_prediction_file(file, problems)
        else:
            result.missing.append(key)
    if result.missing:
        problems.note(f"{len(result.missing)} ground-truth image(s) have no prediction file (counted as no detections), "
                      f"e.g. {pred_dir / (result.missing[0] + '.txt')}")
    return result


def normalise_scores(predictions: dict[str, np.ndarray], problems: ProblemLog | None = None) -> tuple[dict[str, np.ndarray], float, float]:
    """Min-max normalise column 4 over all predictions; returns ``(normalised, min, max)``."""
    scores = [b[:, 4] for b in predictions.values() if len(b)]
    if not scores:
        return dict(predictions), float("nan"), float("nan")
    all_scores = np.concatenate(scores)
    low, high = float(all_scores.min()), float(all_scores.max())
    out = {}
    for key, boxes in predictions.items():
        boxes = boxes.copy()
        if high > low:
            boxes[:, 4] = (boxes[:, 4] - low) / (high - low)
        else:
            boxes[:, 4] = 1.0
        out[key] = boxes
    if high == low and problems is not None:
        problems.note(f"all predictions have the same score {low}: normalised to 1.0 "
                      "(the official MATLAB code would divide 0 by 0 here)")
    return out, low, high


# --------------------------------------------------------------------------- per-image matching
def match_image(pred: np.ndarray, gt_boxes: np.ndarray, keep: np.ndarray,
                iou_threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Official per-image matching of score-sorted predictions ``(M, 4+)`` ``x y w h``.

    Returns ``is_proposal`` (bool, M) and ``recalled`` (int, M): the number of
    distinct kept faces recalled by predictions ``0..h``.
    """
    pred_xyxy = np.column_stack([pred[:, 0], pred[:, 1], pred[:, 0] + pred[:, 2], pred[:, 1] + pred[:, 3]])
    gt_xyxy = np.column_stack([gt_boxes[:, 0], gt_boxes[:, 1], gt_boxes[:, 0] + gt_boxes[:, 2], gt_boxes[:, 1] + gt_boxes[:, 3]])
    overlap = iou_matrix(pred_xyxy, gt_xyxy, pixel_offset=1)
    best = overlap.argmax(axis=1)  # first face on ties, like MATLAB's max
    hit = overlap[np.arange(len(pred)), best] >= iou_threshold
    is_proposal = ~(hit & ~keep[best])
    kept_hit = np.flatnonzero(hit & keep[best])
    first_time = np.zeros(len(pred), dtype=np.int64)
    if kept_hit.size:
        _, first = np.unique(best[kept_hit], return_index=True)
        first_time[kept_hit[first]] = 1
    return is_proposal, np.cumsum(first_time)


def thresholds(count: int = THRESHOLD_COUNT) -> np.ndarray:
    """``1 - t/count`` for t = 1..count (computed as the MATLAB code does)."""
    return 1 - np.arange(1, count + 1) / count


def image_pr_counts(scores: np.ndarray, is_proposal: np.ndarray, recalled: np.ndarray,
                    levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proposals and recalled faces among predictions with score >= each level
    (``scores`` sorted descending)."""
    kept = np.searchsorted(-scores, -levels, side="right")  # how many scores >= level
    proposals = np.concatenate(([0], np.cumsum(is_proposal)))[kept]
    recall = np.concatenate(([0], recalled))[kept]
    return proposals.astype(np.float64), recall.astype(np.float64)


# --------------------------------------------------------------------------- dataset
@dataclass
class WiderSettingResult:
    """AP, the 1000-threshold PR curve and the number of kept faces of one setting."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    faces: int


@dataclass
class WiderResult:
    """Per-setting results with the thresholds and the raw score range used for normalisation."""

    settings: dict[str, WiderSettingResult]
    thresholds: np.ndarray
    images: int
    predictions: int
    score_min: float
    score_max: float

    def summary_line(self) -> str:
        """``easy A medium B hard C`` (or ``all A``), as the CLI prints it."""
        return " ".join(f"{name} {r.ap:.4f}" for name, r in self.settings.items())

    def as_dict(self) -> dict:
        """The JSON summary, PR curves included."""
        return {
            "ap": {name: r.ap for name, r in self.settings.items()},
            "faces": {name: r.faces for name, r in self.settings.items()},
            "images": self.images,
            "predictions": self.predictions,
            "score_min": self.score_min,
            "score_max": self.score_max,
            "iou_threshold": IOU_THRESHOLD,
            "curves": {name: {"threshold": self.thresholds, "precision": r.precision, "recall": r.recall}
                       for name, r in self.settings.items()},
        }


def evaluate_wider(gt: WiderGroundTruth, predictions: dict[str, np.ndarray], problems: ProblemLog | None = None,
                   iou_threshold: float = IOU_THRESHOLD, threshold_count: int = THRESHOLD_COUNT) -> WiderResult:
    """AP per setting of ``predictions`` (``{event/name: (M, 5) x y w h score}``, any order).

    Keys that are not ground-truth images are ignored here; :func:`read_wider_predictions`
    is where such files are reported.
    """
    problems = problems or ProblemLog()
    known = {im.key for im in gt.images}
    sorted_preds = {k: v[np.argsort(-v[:, 4], kind="stable")] for k, v in predictions.items() if k in known}
    normalised, low, high = normalise_scores(sorted_preds, problems)
    levels = thresholds(threshold_count)
    totals = {s: [np.zeros(threshold_count), np.zeros(threshold_count), 0] for s in gt.settings}
    for image in gt.images:
        pred = normalised.get(image.key, np.zeros((0, 5)))
        for setting in gt.settings:
            totals[setting][2] += int(image.keep[setting].sum())
        if len(image.boxes) == 0 or len(pred) == 0:
            continue  # the official code skips these images (their kept faces still count)
        for setting in gt.settings:
            is_proposal, recalled = match_image(pred, image.boxes, image.keep[setting], iou_threshold)
            proposals, recall = image_pr_counts(pred[:, 4], is_proposal, recalled, levels)
            totals[setting][0] += proposals
            totals[setting][1] += recall
    results = {}
    for setting, (proposals, recalled, faces) in totals.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals  # NaN where nothing is proposed
            recall = recalled / faces if faces else np.full(threshold_count, np.nan)
        ap = voc_ap_all_point(recall, precision) if faces else float("nan")
        if not faces:
            problems.note(f"setting {setting!r} keeps no face: its AP is undefined")
        results[setting] = WiderSettingResult(ap, precision, recall, faces)
    return WiderResult(results, levels, len(gt.images), int(sum(len(v) for v in sorted_preds.values())), low, high)
