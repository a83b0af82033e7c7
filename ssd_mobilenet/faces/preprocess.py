"""The face network's input convention, in one place for the training data layer and the detector.

The backbone is torchvision's ImageNet MobileNetV2 (:mod:`ssd_mobilenet.mobilenet_v2`), so the input is
its convention: RGB, ``(pixel - MEAN_RGB) / STD_RGB`` per channel (pixel units 0..255), blob
``(N, 3, S, S)`` float32. Training images arrive here already ``S x S`` (the augmentation's square
crops, resized), for which the resize is a copy.

How a whole photo becomes ``S x S`` (:data:`FITS`): ``pad`` (the default of models trained now,
:func:`fit_to_square`) resizes it keeping its aspect until the long side is ``S`` and puts it in the
top-left corner of an ``S x S`` canvas of the mean colour (the colour of the training's zoom-out canvas,
which normalises to about 0); ``squash`` (SSD's test transform, and the only one of the first model
folders) resizes it to ``S x S``. The training sees faces through square crops, undistorted, so squashing a
4:3 photo shows the net faces a third narrower than any it learned: on the held-out WIDER images that
costs the compact face net more than a third of its AP (bench/RESULTS.md).

With OpenCV DNN: ``blobFromImage(image, 1 / 255, (S, S), swapRB=True)``, then subtract ``MEAN_RGB / 255``
and divide by ``STD_RGB / 255`` per channel.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from caffe_common.images import to_net_input

from ..mobilenet_v2 import MEAN_RGB, STD_RGB

#: Side of the square net input the face network is trained at.
INPUT_SIZE = 320
#: How a whole image is brought to the square input (module doc); ``pad`` keeps the faces' shape.
FITS = ("pad", "squash")
DEFAULT_FIT = "pad"
#: The fit of a model folder whose face_model.json does not say (written before padding existed).
UNRECORDED_FIT = "squash"
#: Per-channel factor of the normalisation (``1 / std``), RGB order.
SCALE_RGB = tuple(1.0 / s for s in STD_RGB)
#: The mean colour as a BGR uint8 pixel (the augmentation's fill; it normalises to about 0).
MEAN_BGR_PIXEL = tuple(round(v) for v in MEAN_RGB[::-1])


def to_blob(bgr_images: Sequence[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """The ``(N, 3, size, size)`` float32 net input of BGR uint8 ``(H, W, 3)`` images (any sizes)."""
    if not len(bgr_images):
        raise ValueError("to_blob needs at least one image")
    return np.concatenate([to_net_input(image, (size, size), MEAN_RGB, SCALE_RGB, swap_rb=True)
                           for image in bgr_images])


def render(image: np.ndarray, window: np.ndarray, size: int, interpolation: int,
           fill: tuple[int, int, int] = MEAN_BGR_PIXEL) -> tuple[np.ndarray, np.ndarray]:
    """The ``size x size`` picture of the integer ``window`` (image pixels; may reach beyond the image, which
    shows ``fill`` there) and the map ``(ax, bx, ay, by)`` of image coordinates onto it.

    Only the part of the image inside the window is resized (to whole output pixels), and the map is the
    one of that resize, so a point of the image lands exactly where its pixel went.
    """
    import cv2

    height, width = image.shape[:2]
    wx1, wy1, wx2, wy2 = (int(v) for v in window)
    sx, sy = size / (wx2 - wx1), size / (wy2 - wy1)
    ix1, iy1, ix2, iy2 = max(wx1, 0), max(wy1, 0), min(wx2, width), min(wy2, height)
    tx1, tx2 = round((ix1 - wx1) * sx), round((ix2 - wx1) * sx)
    ty1, ty2 = round((iy1 - wy1) * sy), round((iy2 - wy1) * sy)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = fill
    if tx2 <= tx1 or ty2 <= ty1 or ix2 <= ix1 or iy2 <= iy1:
        return out, np.array([sx, -wx1 * sx, sy, -wy1 * sy])
    out[ty1:ty2, tx1:tx2] = cv2.resize(image[iy1:iy2, ix1:ix2], (tx2 - tx1, ty2 - ty1), interpolation=interpolation)
    ax, ay = (tx2 - tx1) / (ix2 - ix1), (ty2 - ty1) / (iy2 - iy1)
    return out, np.array([ax, tx1 - ix1 * ax, ay, ty1 - iy1 * ay])


def fit_to_square(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[float, float]]:
    """The ``size x size`` BGR uint8 picture of ``pad`` (module doc: the square window of the image's long
    side at its top-left corner, :func:`render`) and that square's extent ``(width, height)`` in image pixels
    (normalised net coordinates times it are image pixels; the long side, give or take the rounding of the
    resized length on each axis)."""
    import cv2

    side = max(image.shape[:2])
    square, (ax, _, ay, _) = render(image, np.array([0, 0, side, side]), size, cv2.INTER_LINEAR)
    return square, (size / ax, size / ay)


def check_fit(fit: str) -> str:
    """``fit`` if it is one of :data:`FITS`, else ValueError."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
    return fit
