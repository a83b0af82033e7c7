"""SSD/FaceBoxes-style augmentation of one face training image (numpy + OpenCV), and the test transform.

Everything random comes from the ``numpy.random.Generator`` passed in (the data layer seeds one per
``(seed, iteration, item)``), so a sample is the same however and whenever it is drawn. Coordinates:
pixels in, continuous (``x2 - x1`` is the width), output normalised to the ``S x S`` sample as
:mod:`.targets` wants them. The steps of :func:`augment`, in order:

1. **Zoom out** (prob 0.5): the image is placed at a random position on a canvas ``r`` times its sides,
   ``r ~ U(1, 2)``, filled with the mean colour (which normalises to about 0). SSD expands up to 4x for
   VOC objects, which fill much of their photos; WIDER faces are small already (median 14 px when the
   image is resized to 320, against the 10 px a prior can match, :data:`~.dataset.MIN_FACE_PX`), and
   4x would shrink most of them beyond what the crops' zoom-in (at most 1 / 0.3 = 3.3x) gives back; 2x
   stays within it. Zooming out mostly teaches mid-size faces from the landmark set, whose faces fill
   half of their image.
2. **Square crop**: side ``s x`` the canvas' short side, ``s ~ U(0.3, 1)``, uniform position; up to 50
   draws for a crop that keeps at least one whole face (kind 1 after the rule below, big enough after
   the resize), else the whole canvas, padded to a square with the mean colour as the detector pads
   a photo (:func:`~.preprocess.fit_to_square`), so no sample shows faces out of shape. With
   probability 0.25 (``partial_crop_prob``) the draws first look for a crop that cuts a face into a
   partial one (then for a whole face as usual): see "how many" below.
3. **Face rule** (per face, by its visible fraction ``v = area(box & crop) / area(box)``, which is
   ``IoU(visible part, full box)``): ``v >= 0.6`` face (kind 1), ``0.25 <= v < 0.6`` partial face
   (kind 2), ``v < 0.25`` dropped (background). Boxes are clipped to the crop. Why these numbers: the
   seed author wants "half faces" as a class of their own, and a face cut through the middle has
   ``v = 0.5``; the seed's "IoU < 0.4" mark would call that a whole face, so the face/partial line is at
   0.6 (most of a face, both eyes and the mouth in view, stays a face). 0.25 is the least a face whose
   centre lies in the crop can show: every face SSD's centre rule keeps is kept, and faces whose centre
   falls just outside the crop (``v`` up to 0.5) are partial faces instead of background, so two
   nearly equal crops of one face do not get opposite labels. Landmarks are kept only when all five
   points lie inside the crop.
4. **Resize** to ``S x S`` (interpolation drawn from linear, area, nearest, cubic); faces whose
   ``sqrt(w * h)`` is below :data:`~.dataset.MIN_FACE_PX` output pixels are no faces to learn (no prior can
   match them; module doc of :mod:`.dataset`) but stay as ignore regions
   (:data:`~.targets.IGNORE_KIND`, as are the index's too-small and invalid WIDER faces): the priors on
   them are left out of the confidence loss instead of being mined as background (:mod:`.targets`).
5. **Mirror** (prob 0.5): ``x -> S - x``, and the points swap sides (left eye <-> right eye, left mouth
   corner <-> right mouth corner, :data:`~caffe_common.face_annotations.FIVE_POINT_MIRROR`), so "left"
   keeps meaning the image's left.
6. **Photometric distortion** (SSD's): brightness +-32 (prob 0.5), contrast x U(0.5, 1.5) (prob 0.5,
   before or after the colour steps), saturation x U(0.5, 1.5) (prob 0.5), hue +-18 degrees (prob 0.5).
   Pixel-wise, so it runs on the ``S x S`` sample (cheaper than on the photo; the only difference from
   SSD's order is that a zoom-out canvas is distorted along with the image).

How many partial faces: cuts by chance alone (``partial_crop_prob`` 0) make few, because every crop is
drawn around a whole face: one epoch of the subset's training index (670 WIDER + 2,500 landmark images)
gave 108 partial faces next to 4,624 whole ones (2.3 %), all from WIDER group photos, none from the
landmark set (one face per image, which the crop must keep whole). Too few to learn a class from, so
a quarter of the crops are drawn to cut a face: the same epoch then holds 958 partial faces and 3,630
whole ones (21 %; 654 of them from the landmark set, 304 from WIDER; ``bench/face_data_check.py``).
A quarter keeps whole faces, the detector's main job, at four in five positive labels while the
partial class sees about a thousand examples per epoch. (MTCNN's recipe, pos:part 1:1, weights parts
more, but its part samples are crops of their own that take no whole face out of a photo.)

:func:`resize_truth` maps the faces through the test transform (:func:`~.preprocess.fit_to_square`, or a
squash), with the same small-face rule.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from caffe_common.face_annotations import FIVE_POINT_MIRROR

from .dataset import MIN_CROP_SCALE, MIN_FACE_PX, FaceRecord
from .preprocess import INPUT_SIZE, render
from .targets import IGNORE_KIND, KINDS, NUM_LANDMARKS, FaceTruth

#: OpenCV interpolation flags a training resize draws from (linear is the test transform's).
INTERPOLATIONS = ("INTER_LINEAR", "INTER_AREA", "INTER_NEAREST", "INTER_CUBIC")


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation's settings (module doc); the defaults are the training recipe."""

    size: int = INPUT_SIZE
    expand_prob: float = 0.5
    max_expand: float = 2.0
    crop_scales: tuple[float, float] = (MIN_CROP_SCALE, 1.0)
    crop_trials: int = 50
    partial_crop_prob: float = 0.25
    face_visible: float = 0.6
    partial_visible: float = 0.25
    min_face_px: float = MIN_FACE_PX
    mirror_prob: float = 0.5
    distort: bool = True
    random_interpolation: bool = True


def record_truth(record: FaceRecord) -> FaceTruth:
    """The faces of an index record as a :class:`~.targets.FaceTruth` in the image's pixels."""
    return FaceTruth(record.boxes, record.kinds, record.landmarks, record.has_landmarks)


# --------------------------------------------------------------------------- face rule
def visible_fraction(boxes: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes clipped to window, area(clipped) / area(box))``; ``window`` is ``x1, y1, x2, y2``."""
    clipped = np.column_stack([np.maximum(boxes[:, :2], window[:2]), np.minimum(boxes[:, 2:4], window[2:])])
    inter = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return clipped, np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)


def face_kinds(truth: FaceTruth, visible: np.ndarray, config: AugmentConfig) -> np.ndarray:
    """Kind per face after a crop (0: dropped): the rule of step 3. A face already marked partial stays
    partial (or is dropped)."""
    kinds = np.where(visible >= config.face_visible, KINDS["face"], KINDS["partial"])
    kinds = np.maximum(kinds, truth.kinds)
    return np.where(visible >= config.partial_visible, kinds, 0)


def points_inside(landmarks: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Per face, whether all five points lie inside ``window`` (borders included)."""
    points = landmarks.reshape(-1, NUM_LANDMARKS, 2)
    return np.all((points >= window[:2]) & (points <= window[2:]), axis=(1, 2))


# --------------------------------------------------------------------------- geometry
def _map_points(values: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(..., 2k)`` interleaved x, y through ``x -> ax * x + bx``, ``y -> ay * y + by``."""
    ax, bx, ay, by = affine
    out = np.array(values, dtype=np.float64, copy=True)
    out[..., 0::2] = ax * out[..., 0::2] + bx
    out[..., 1::2] = ay * out[..., 1::2] + by
    return out


def _expand_window(rng: np.random.Generator, width: int, height: int, config: AugmentConfig) -> np.ndarray:
    """The zoom-out canvas as a window in image coordinates (the image inside it, at a random place)."""
    if rng.random() >= config.expand_prob or config.max_expand <= 1:
        return np.array([0, 0, width, height])
    ratio = rng.uniform(1.0, config.max_expand)
    canvas_w, canvas_h = round(width * ratio), round(height * ratio)
    left, top = int(rng.integers(0, canvas_w - width + 1)), int(rng.integers(0, canvas_h - height + 1))
    return np.array([-left, -top, canvas_w - left, canvas_h - top])


def _crop_window(rng: np.random.Generator, canvas: np.ndarray, truth: FaceTruth, config: AugmentConfig,
                 wanted: int) -> np.ndarray | None:
    """A square crop of the canvas holding at least one big enough face of kind ``wanted`` (1 whole, 2 cut
    to a partial face), or None (step 2)."""
    canvas_w, canvas_h = canvas[2] - canvas[0], canvas[3] - canvas[1]
    low, high = config.crop_scales
    for _ in range(config.crop_trials):
        side = max(1, round(rng.uniform(low, high) * min(canvas_w, canvas_h)))
        x1 = canvas[0] + int(rng.integers(0, canvas_w - side + 1))
        y1 = canvas[1] + int(rng.integers(0, canvas_h - side + 1))
        window = np.array([x1, y1, x1 + side, y1 + side])
        clipped, visible = visible_fraction(truth.boxes, window)
        out_side = np.sqrt(np.clip(clipped[:, 2] - clipped[:, 0], 0, None)
                           * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)) * config.size / side
        if np.any((face_kinds(truth, visible, config) == wanted) & (out_side >= config.min_face_px)):
            return window
    return None


def _sample_truth(truth: FaceTruth, window: np.ndarray, affine: np.ndarray, config: AugmentConfig,
                  stats: Counter) -> FaceTruth:
    """The faces of a window, mapped and normalised to the sample, by the rules of steps 3 and 4."""
    clipped, visible = visible_fraction(truth.boxes, window)
    kinds = face_kinds(truth, visible, config)
    boxes = np.clip(_map_points(clipped, affine), 0, config.size)   # (rounding: the window maps onto [0, S])
    side = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    small = (kinds > 0) & (kinds != IGNORE_KIND) & (side < config.min_face_px)
    stats["outside"] += int(np.sum(visible <= 0))
    stats["dropped_cut"] += int(np.sum((visible > 0) & (kinds == 0)))
    stats["dropped_small"] += int(small.sum())
    kinds = np.where(small, IGNORE_KIND, kinds)
    stats["ignored"] += int(np.sum(kinds == IGNORE_KIND))
    # an ignore region must keep an area that survives the float32 ground-truth blob (a face is >= 10 px anyway)
    keep = (kinds > 0) & np.all(boxes[:, 2:] - boxes[:, :2] > 1e-3, axis=1)
    has = truth.has_landmarks & points_inside(truth.landmarks, window) & (kinds != IGNORE_KIND)
    stats["landmarks_dropped"] += int(np.sum(keep & truth.has_landmarks & ~has))
    stats["faces"] += int(np.sum(keep & (kinds == KINDS["face"])))
    stats["partial"] += int(np.sum(keep & (kinds == KINDS["partial"])))
    marks = np.where(has[:, None], np.clip(_map_points(truth.landmarks, affine), 0, config.size), 0.0)
    return FaceTruth(boxes[keep] / config.size, kinds[keep].astype(np.int64), marks[keep] / config.size, has[keep])


def mirror(image: np.ndarray, truth: FaceTruth) -> tuple[np.ndarray, FaceTruth]:
    """The horizontal mirror of a sample (normalised truth): ``x -> 1 - x``, boxes' sides exchanged, the
    five points reordered so that the left eye is again the point on the image's left."""
    boxes = truth.boxes.copy()
    boxes[:, [0, 2]] = 1.0 - truth.boxes[:, [2, 0]]
    points = truth.landmarks.reshape(-1, NUM_LANDMARKS, 2)[:, list(FIVE_POINT_MIRROR)].copy()
    points[..., 0] = np.where(truth.has_landmarks[:, None], 1.0 - points[..., 0], 0.0)
    flipped = FaceTruth(boxes, truth.kinds, points.reshape(-1, 2 * NUM_LANDMARKS), truth.has_landmarks)
    return np.ascontiguousarray(image[:, ::-1]), flipped


def distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD's photometric distortion of a BGR uint8 image (step 6)."""
    import cv2

    pixels = image.astype(np.float32)
    if rng.random() < 0.5:
        pixels += np.float32(rng.uniform(-32, 32))
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    if contrast_first and contrast is not None:
        pixels *= np.float32(contrast)
    saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    hue = rng.uniform(-18, 18) if rng.random() < 0.5 else None
    if saturation is not None or hue is not None:
        hsv = cv2.cvtColor(np.clip(pixels, 0, 255) / np.float32(255), cv2.COLOR_BGR2HSV)
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation), 0, 1)
        if hue is not None:
            hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(hue), 360)
        pixels = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR) * np.float32(255)
    if not contrast_first and contrast is not None:
        pixels *= np.float32(contrast)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the two transforms
def augment(image: np.ndarray, truth: FaceTruth, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, FaceTruth, Counter]:
    """One training sample of a BGR uint8 image and its faces (pixels): the ``S x S`` BGR uint8 sample,
    its faces normalised to it, and counts of what happened (``faces``, ``partial``, ``dropped_small`` (now
    ignore regions), ``ignored`` (all ignore regions),
    ``dropped_cut``, ``outside``, ``landmarks_dropped``, ``expanded``, ``partial_crops``, ``crop_fallback``,
    ``mirrored``)."""
    import cv2

    stats: Counter = Counter()
    height, width = image.shape[:2]
    canvas = _expand_window(rng, width, height, config)
    stats["expanded"] += int(canvas[2] - canvas[0] != width)
    window = None
    if rng.random() < config.partial_crop_prob:
        window = _crop_window(rng, canvas, truth, config, KINDS["partial"])
        stats["partial_crops"] += int(window is not None)
    if window is None:
        window = _crop_window(rng, canvas, truth, config, KINDS["face"])
    if window is None:
        side = max(canvas[2] - canvas[0], canvas[3] - canvas[1])
        window = np.array([canvas[0], canvas[1], canvas[0] + side, canvas[1] + side])
        stats["crop_fallback"] += 1
    flag = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))] if config.random_interpolation else INTERPOLATIONS[0]
    sample, affine = render(image, window, config.size, getattr(cv2, flag))
    faces = _sample_truth(truth, window, affine, config, stats)
    if rng.random() < config.mirror_prob:
        sample, faces = mirror(sample, faces)
        stats["mirrored"] += 1
    if config.distort:
        sample = distort(sample, rng)
    return sample, faces, stats


def resize_truth(truth: FaceTruth, width: float, height: float, config: AugmentConfig = AugmentConfig()
                 ) -> tuple[FaceTruth, Counter]:
    """The faces of an image after a test transform that maps ``[0, width] x [0, height]`` (image pixels)
    onto the ``S x S`` input (the image's own size when squashed, the padded square's extent
    :func:`~.preprocess.fit_to_square`'s frame when padded), normalised; faces below the matchable size become
    ignore regions as in training."""
    stats: Counter = Counter()
    window = np.array([0, 0, width, height])
    affine = np.array([config.size / width, 0.0, config.size / height, 0.0])
    return _sample_truth(truth, window, affine, config, stats), stats
