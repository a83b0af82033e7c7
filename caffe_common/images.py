"""Reading input photos and cutting patches: the one image reader and the one crop-and-resize of the
toolkit (detection, data generation, demo).

Images are returned as OpenCV reads them with ``IMREAD_COLOR``: uint8 BGR ``(H, W, 3)``, with
gray, 16-bit and alpha images converted and the EXIF orientation applied. A file that cannot be
used raises :class:`ImageReadError`, whose message names the file and the reason.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class ImageReadError(OSError):
    """An input image is missing, unreadable or not decodable (message: ``path: reason``)."""


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 ``(H, W, 3)`` image of ``path``; raises :class:`ImageReadError` naming the file."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise ImageReadError(f"{path}: permission denied")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        raise ImageReadError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return image


def crop_resized(image: np.ndarray, box, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """``image[y1:y2, x1:x2]`` of the integer half-open box ``x1, y1, x2, y2`` (0-based), zero where the box
    leaves the image, resized to ``size x size`` with ``INTER_AREA``; written into ``out`` when given.

    The one crop of the toolkit: the detector's R/O-Net crops (``mtcnn_caffe.detect.steps.crop_patches``,
    which converts the official 1-based boxes) and the training samples use it, so training crops
    look exactly like what the nets see at inference.
    """
    import cv2

    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty crop box {tuple(box[:4])}")
    height, width = image.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
        patch = image[y1:y2, x1:x2]  # fully inside: no copy
    else:
        patch = np.zeros((y2 - y1, x2 - x1) + image.shape[2:], dtype=image.dtype)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
    if out is None:
        if patch.shape[0] == size and patch.shape[1] == size:
            return np.ascontiguousarray(patch)
        return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    cv2.resize(patch, (size, size), dst=out, interpolation=cv2.INTER_AREA)  # written in place
    return out
