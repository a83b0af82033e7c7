"""The one input convention of every MTCNN net in this toolkit.

The official MTCNN weights were trained in MATLAB, whose arrays are
column-major: the nets see images **RGB**, scaled ``(x - 127.5) * 0.0078125``,
and **spatially transposed**, i.e. a blob of shape ``(N, 3, W, H)`` where a
row-major (numpy/OpenCV) image would give ``(N, 3, H, W)``. Their outputs are
transposed the same way (P-Net maps are ``(N, C, W', H')``).

Models trained by this toolkit use exactly the same convention (the training
data layer feeds crops through :func:`images_to_blob`), so official and
self-trained weights plug into the detector identically and official weights
can be fine-tuned.
"""
from __future__ import annotations

import numpy as np

PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1/128


def images_to_blob(images_bgr: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` (or one ``(H, W, 3)``) BGR uint8/float images -> ``(N, 3, W, H)`` float32 net input."""
    images = np.asarray(images_bgr)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) BGR images, got shape {images.shape}")
    # BGR -> RGB, then (N, H, W, C) -> (N, C, W, H): channels first and the MATLAB transpose.
    # One pass over the (strided) view into a contiguous float32 blob: this runs on every pyramid level.
    view = images[..., ::-1].transpose(0, 3, 2, 1)
    blob = np.empty(view.shape, dtype=np.float32)
    np.subtract(view, np.float32(PIXEL_MEAN), out=blob, dtype=np.float32)
    blob *= np.float32(PIXEL_SCALE)
    return blob


def blob_to_images(blob: np.ndarray) -> np.ndarray:
    """Inverse of :func:`images_to_blob` (for inspection and tests): ``(N, H, W, 3)`` BGR float."""
    rgb = np.asarray(blob, dtype=np.float32).transpose(0, 3, 2, 1) / PIXEL_SCALE + PIXEL_MEAN
    return rgb[..., ::-1]
