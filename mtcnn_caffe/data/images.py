"""Loading source images for sample generation: a failure is a reason, not an exception."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from caffe_common.images import ImageReadError, read_image


def load_image(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """Read an image with the toolkit's reader (:func:`caffe_common.images.read_image`).

    Returns ``(image, None)``, or ``(None, "path: reason")`` when the file is missing or
    cannot be decoded, so that a generator can skip it, count it and name it in its stats.
    """
    try:
        return read_image(path), None
    except ImageReadError as exc:
        return None, str(exc)
