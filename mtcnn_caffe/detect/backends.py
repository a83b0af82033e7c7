"""Inference backends of the MTCNN cascade over the same prototxt + caffemodel files.

* ``caffe`` (default): pycaffe, CPU.
* ``opencv``: OpenCV DNN's Caffe importer (``cv2.dnn.readNetFromCaffe``).

Both take BGR images and return the nets' outputs by blob name
(:data:`mtcnn_caffe.nets.deploy.OUTPUT_BLOBS`); the input convention (RGB,
``(x - 127.5) / 128``, spatially transposed) is applied in one place,
:func:`mtcnn_caffe.net_input.images_to_blob`. Outputs keep the nets' layout:
P-Net maps are ``(C, X, Y)`` (first spatial axis = image x). The engines themselves (feeding a
blob, reading outputs) are :mod:`caffe_common.backends`, shared with the SSD detector.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from caffe_common.backends import BACKENDS, BlobNet, check_backend, read_opencv_net  # noqa: F401 (BACKENDS: re-exported)
from caffe_common.model_files import CaffeModelError

from ..net_input import images_to_blob
from ..nets.deploy import OUTPUT_BLOBS
from ..nets.weights import WeightsMismatchError, check_weights, load_stage_net, stage_files

#: Crops per forward pass of R-Net / O-Net, per backend. Caffe: large batches (bound the memory of
#: crowded images); its inner-product layers round differently with the batch size (~1e-7), so these
#: stay as they are. OpenCV DNN: small chunks keep a chunk's activations in cache (16 x 16 R-Net crops
#: ran in half the time of one batch of 256, see bench/RESULTS.md); there a crop's outputs do not depend
#: on the other crops of its batch (bit for bit, tested), so the chunk size never changes its results.
BATCH_LIMITS = {"caffe": {"det2": 512, "det3": 256}, "opencv": {"det2": 16, "det3": 16}}


class StageNet:
    """One stage (``det1``/``det2``/``det3``) of the cascade on one backend."""

    def __init__(self, weights_dir: str | Path, stage: str, backend: str = "caffe"):
        self.stage, self.backend = stage, check_backend(backend)
        prototxt, caffemodel = stage_files(weights_dir, stage)
        self.outputs = OUTPUT_BLOBS[stage]
        #: Crops per forward pass (:data:`BATCH_LIMITS` when the net is made; P-Net: one image).
        self.batch_limit = BATCH_LIMITS[backend].get(stage, 1)
        if backend == "caffe":  # checked in Python and in a probe process: Caffe aborts on bad files
            net = load_stage_net(prototxt, caffemodel)
        else:
            check_weights(prototxt, caffemodel)  # the same checks, so both backends refuse the same files
            net = _read_opencv_net(prototxt, caffemodel)
        self._net = BlobNet(net, backend)
        missing = [b for b in self.outputs if not self._net.has_output(b)]
        if missing:
            raise ValueError(f"{prototxt}: stage {stage} needs output blobs {missing} (see mtcnn_caffe/nets/deploy.py)")

    def forward_blob(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        """Run one already-converted input blob ``(N, 3, W, H)``; outputs by name (copies)."""
        return self._net.forward(blob, self.outputs)

    def forward_images(self, images_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``(N, H, W, 3)`` BGR crops in chunks of :attr:`batch_limit`; outputs concatenated."""
        blob = images_to_blob(np.asarray(images_bgr))
        limit = self.batch_limit
        parts = [self.forward_blob(blob[i:i + limit]) for i in range(0, len(blob), limit)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.outputs}


def _read_opencv_net(prototxt: Path, caffemodel: Path) -> Any:
    """:func:`caffe_common.backends.read_opencv_net`, its error as :class:`WeightsMismatchError`."""
    try:
        return read_opencv_net(prototxt, caffemodel)
    except CaffeModelError as exc:
        raise WeightsMismatchError(str(exc)) from exc


#: glibc ``mallopt`` parameters: allocations up to 32 MiB come from the heap (not a fresh mmap), and
#: up to 512 MiB of freed heap top is kept for reuse instead of going back to the system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RETAINED = False


def retain_freed_memory(trim_bytes: int = 512 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Let this process reuse freed memory instead of returning it to the system (glibc only).

    Every forward pass of a new input shape (each pyramid level, each image size) allocates the
    nets' buffers anew; by default glibc serves large blocks with fresh ``mmap`` pages and unmaps
    them when freed, so every pass pays some 10^4 page faults (zero-filled pages): about 20-30 ms per
    image, as much as a quarter of the P-Net time. Process-wide and idempotent; returns whether it
    applied (False off glibc). The price is that up to ``trim_bytes`` of freed memory stays mapped.
    """
    global _RETAINED
    if _RETAINED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _RETAINED = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes))
        _RETAINED = bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and _RETAINED
    except (OSError, AttributeError):
        _RETAINED = False
    return _RETAINED
