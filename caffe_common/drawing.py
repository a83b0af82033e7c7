"""Drawn result images of the detect commands: where they go, how a box and its caption look, and
saving them atomically (a drawing is either complete or absent)."""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from .atomic import atomic_path
from .batch import DRAWING_EXTENSIONS


def drawing_path(out_dir: str | Path, out_name: str) -> Path:
    """``out_dir/<out_name>``, as ``.png`` unless the extension is one drawings keep (JPEG, PNG, ...)."""
    target = Path(out_dir) / out_name
    return target if target.suffix.lower() in DRAWING_EXTENSIONS else target.with_suffix(".png")


def checked_drawing_path(out_dir: str | Path, out_name: str, inputs: Collection[Path]) -> Path:
    """:func:`drawing_path`, refused (ValueError) when it would replace one of the run's ``inputs``
    (resolved paths): an output folder that is the input folder must not overwrite the photos."""
    target = drawing_path(out_dir, out_name)
    if target.resolve() in inputs:
        raise ValueError(f"its drawing would replace an input image ({target}); choose another output folder")
    return target


def line_thickness(image: np.ndarray) -> int:
    """Line width in pixels that stays visible on large photos: 1 per 500 pixels of the longer side."""
    return max(1, round(max(image.shape[:2]) / 500))


def draw_box(canvas: np.ndarray, box: Sequence[float], caption: str, color: tuple[int, int, int],
             thickness: int) -> None:
    """Draw ``box`` (x1, y1, x2, y2) with ``caption`` just above its top-left corner, in place."""
    import cv2

    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
    cv2.putText(canvas, caption, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, color,
                thickness, cv2.LINE_AA)


def save_drawing(target: str | Path, canvas: np.ndarray) -> Path:
    """Write ``canvas`` to ``target`` atomically; OpenCV picks the format from the extension."""
    import cv2

    target = Path(target)
    with atomic_path(target, suffix=target.suffix) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise OSError(f"{target}: cannot write image")
    return target
