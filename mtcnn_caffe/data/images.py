"""Loading source images for sample generation: a failure is a reason, not an exception."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_image(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """Read an image as uint8 BGR ``(H, W, 3)``.

    Returns ``(image, None)``, or ``(None, "path: reason")`` when the file is missing or
    cannot be decoded, so that a generator can skip it, count it and name it in its stats.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        return None, f"{path}: file not found"
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        return None, f"{path}: cannot be decoded as an image"
    return image, None
