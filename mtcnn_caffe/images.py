"""Reading input photos: the one image reader of the toolkit (detection, data generation, demo).

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
