"""Landmark samples (label -2) from 5-point annotated faces, with augmentation.

For each face: the square box around it, plus shifted/rescaled crops that keep
IoU > 0.65 with the face; each such crop gives a plain sample and, at random, a
mirrored copy (left/right points swapped) and a slightly rotated copy.

A rotated sample lives in a *frame*: the image rotated about the face centre. The
sample stores the 2x3 affine ``frame`` (original image -> frame coordinates) and
its crop/face boxes in frame coordinates, so every target can be mapped back to the
original image (see :func:`landmarks_to_image`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..annotations import FIVE_POINT_MIRROR, LandmarkFace
from caffe_common.boxes import iou_one_to_many
from .crops import box_targets, crop_resized, inside_image
from .records import IDENTITY_FRAME, LANDMARK, empty_samples
from .wider import CropParams, jittered_face_boxes


@dataclass(frozen=True)
class LandmarkParams:
    """Augmentation settings (defaults follow the common reference recipe)."""

    tries: int = 10
    min_iou: float = 0.65
    jitter: float = 0.2
    side_min: float = 0.8
    side_max: float = 1.25
    mirror_prob: float = 0.5
    rotate_prob: float = 0.5
    max_angle: float = 15.0
    min_angle: float = 5.0
    min_face: float = 20.0


def _affine3(m: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2] = m
    return out


def rotation_frame(center: np.ndarray, angle_deg: float) -> np.ndarray:
    """2x3 affine rotating points by ``angle_deg`` (counter-clockwise on screen) about ``center``."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    # Image y points down, so a counter-clockwise turn on screen is (x, y) -> (c x + s y, -s x + c y).
    rot = np.array([[c, s], [-s, c]])
    center = np.asarray(center, np.float64)
    return np.concatenate([rot, (center - rot @ center)[:, None]], axis=1)


def apply_affine(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points through a 2x3 affine."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ np.asarray(frame, np.float64)[:, :2].T + np.asarray(frame, np.float64)[:, 2]


def invert_affine(frame: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return np.linalg.inv(_affine3(frame))[:2]


def normalise_points(points: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """``(5, 2)`` points -> the 10 interleaved targets ``(x - x1) / w, (y - y1) / h``."""
    w, h = crop[2] - crop[0], crop[3] - crop[1]
    return ((points - crop[:2]) / [w, h]).reshape(-1).astype(np.float32)


def mirror_targets(landmark: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets of the horizontally flipped crop: ``x -> 1 - x`` and left/right points swapped."""
    pts = np.asarray(landmark, np.float32).reshape(5, 2).copy()
    pts[:, 0] = 1.0 - pts[:, 0]
    pts = pts[list(FIVE_POINT_MIRROR)]
    t = np.asarray(bbox, np.float32)
    return pts.reshape(-1), np.array([-t[2], t[1], -t[0], t[3]], np.float32)


def landmarks_to_image(landmark: np.ndarray, crop_box: np.ndarray, frame: np.ndarray, mirrored: bool) -> np.ndarray:
    """Map a sample's 10 targets back to ``(5, 2)`` points in the original image (inverse of generation)."""
    pts = np.asarray(landmark, np.float64).reshape(5, 2)
    if mirrored:  # undo the flip: the swap is its own inverse
        pts = pts[list(FIVE_POINT_MIRROR)].copy()
        pts[:, 0] = 1.0 - pts[:, 0]
    crop_box = np.asarray(crop_box, np.float64)
    wh = crop_box[2:4] - crop_box[:2]
    in_frame = pts * wh + crop_box[:2]
    return apply_affine(invert_affine(frame), in_frame)


def _warp_crop(image: np.ndarray, frame: np.ndarray, crop: np.ndarray, size: int) -> np.ndarray:
    """Crop ``crop`` (frame coordinates) out of the image seen through ``frame``, resized to ``size``."""
    import cv2

    side = int(round(crop[2] - crop[0]))
    # Continuous coords -> OpenCV pixel-centre indices: shift by half a pixel on both sides.
    to_crop = _affine3(frame)
    to_crop[:2, 2] -= crop[:2]
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    m = (np.linalg.inv(half) @ to_crop @ half)[:2]
    patch = cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop_resized(patch, np.array([0, 0, side, side]), size)


def face_crops(box: np.ndarray, rng: np.random.Generator, params: LandmarkParams, width: int, height: int
               ) -> np.ndarray:
    """The square box around the face plus shifted/rescaled ones, inside the image, IoU > ``min_iou``."""
    w, h = box[2] - box[0], box[3] - box[1]
    side = np.round(max(w, h))
    corner = np.floor([box[0] + w / 2 - side / 2, box[1] + h / 2 - side / 2])
    base = np.concatenate([corner, corner + side])[None]
    jitter = CropParams(jitter=params.jitter, side_min=params.side_min, side_max=params.side_max)
    crops = np.concatenate([base, jittered_face_boxes(rng, box[None], params.tries, jitter)])
    crops = crops[inside_image(crops, width, height) & (crops[:, 2] - crops[:, 0] >= 1)]
    return crops[iou_one_to_many(box, crops) > params.min_iou] if len(crops) else crops


def _variants(crops: np.ndarray, center: tuple[float, float], rng: np.random.Generator, params: LandmarkParams
              ) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """``(crop, frame, mirrored)`` per sample: each crop plain, maybe mirrored, maybe rotated (maybe mirrored)."""
    identity = IDENTITY_FRAME.astype(np.float64)
    variants = []
    for crop in crops:
        variants.append((crop, identity, False))
        if rng.random() < params.mirror_prob:
            variants.append((crop, identity, True))
        if rng.random() < params.rotate_prob:
            angle = rng.uniform(params.min_angle, params.max_angle) * rng.choice([-1.0, 1.0])
            variants.append((crop, rotation_frame(center, angle), bool(rng.random() < 0.5)))
    return variants


def landmark_samples(image: np.ndarray, face: LandmarkFace, rng: np.random.Generator, size: int,
                     params: LandmarkParams, image_index: int = 0) -> np.ndarray:
    """All augmented landmark samples of one annotated face (may be empty).

    A variant whose points do not all stay inside its crop (after the shift or rotation) is dropped.
    """
    box = np.asarray(face.box, np.float64)
    points = np.asarray(face.points, np.float64).reshape(5, 2)
    crops = face_crops(box, rng, params, image.shape[1], image.shape[0])
    center = (box[0] + (box[2] - box[0]) / 2, box[1] + (box[3] - box[1]) / 2)
    variants = _variants(crops, center, rng, params)
    samples = empty_samples(size, len(variants))
    keep = np.zeros(len(variants), bool)
    for i, (crop, frame, mirrored) in enumerate(variants):
        landmark = normalise_points(apply_affine(frame, points), crop)
        if landmark.min() < 0 or landmark.max() > 1:
            continue
        bbox = box_targets(crop[None], box[None])[0]
        rotated = not np.allclose(frame, IDENTITY_FRAME)
        patch = _warp_crop(image, frame, crop, size) if rotated else crop_resized(image, crop, size)
        if mirrored:
            patch = patch[:, ::-1]
            landmark, bbox = mirror_targets(landmark, bbox)
        s = samples[i]
        s["image"], s["label"], s["landmark"], s["bbox"] = patch, LANDMARK, landmark, bbox
        s["crop_box"], s["face_box"], s["frame"], s["mirrored"] = crop, box, frame, mirrored
        s["iou"], s["image_index"], s["face_index"] = iou_one_to_many(box, crop[None])[0], image_index, 0
        keep[i] = True
    return samples[keep]
