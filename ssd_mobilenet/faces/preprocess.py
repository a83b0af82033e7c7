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

import math
from collections.abc import Sequence

import numpy as np

from caffe_common.images import to_net_input

from ..mobilenet_v2 import MEAN_RGB, STD_RGB

#: Side of the square net input the face network is trained at.
INPUT_SIZE = 320
#: How a whole image is brought to the square input (module doc); ``pad`` keeps the faces' shape.
FITS = ("pad", "squash")
DEFAULT_FIT = "pad"
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


def square_frame(width: int, height: int, size: int) -> tuple[int, int, float, float]:
    """For a ``width x height`` image padded into ``size x size``: the resized image's ``(w, h)`` in the
    canvas (long side ``size``) and the extent ``(fw, fh)`` of the whole canvas in image pixels (``size``
    canvas pixels are ``fw`` image pixels across): normalised net coordinates times ``(fw, fh)`` are image
    pixels."""
    scale = size / max(width, height)
    resized_w, resized_h = (max(1, min(size, math.floor(side * scale + 0.5))) for side in (width, height))
    return resized_w, resized_h, size * width / resized_w, size * height / resized_h


def fit_to_square(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[float, float]]:
    """The ``size x size`` BGR uint8 picture of ``pad`` (module doc) and the canvas' extent ``(fw, fh)``
    in image pixels (:func:`square_frame`)."""
    import cv2

    height, width = image.shape[:2]
    resized_w, resized_h, frame_w, frame_h = square_frame(width, height, size)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = MEAN_BGR_PIXEL
    canvas[:resized_h, :resized_w] = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    return canvas, (frame_w, frame_h)


def check_fit(fit: str) -> str:
    """``fit`` if it is one of :data:`FITS`, else ValueError."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
    return fit
