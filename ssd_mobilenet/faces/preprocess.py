"""The face network's input convention, in one place for the training data layer and the detector.

The backbone is torchvision's ImageNet MobileNetV2 (:mod:`ssd_mobilenet.mobilenet_v2`), so the input is
its convention: RGB, ``(pixel - MEAN_RGB) / STD_RGB`` per channel (pixel units 0..255), blob
``(N, 3, S, S)`` float32. The whole image is resized to ``S x S`` bilinearly (SSD's test transform,
:func:`caffe_common.images.to_net_input`); training images arrive here already ``S x S`` (the
augmentation's crop and resize), for which the resize is a copy.

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
