"""Two inference engines over the same Caffe prototxt + caffemodel, shared by both detectors.

* ``caffe``: pycaffe, CPU, a TEST-phase ``caffe.Net``;
* ``opencv``: OpenCV DNN's Caffe importer (``cv2.dnn.readNetFromCaffe``); a prototxt with native
  depthwise layers (``ConvolutionDepthwise``, which OpenCV lacks) is given to it as grouped convolution
  (:func:`caffe_common.depthwise.grouped_prototxt`, same weights), so both engines take the same files.

:class:`BlobNet` feeds one already-converted input blob ``(N, C, H, W)`` to either engine and returns
the requested outputs by name, so that each detector converts its images once, in NumPy, and both
engines see the very same numbers. Checking the files stays with the caller: Caffe aborts the
process on files it refuses (see :mod:`caffe_common.model_files`), and OpenCV reads them its own
way, so a detector checks them with Caffe's rules before giving them to either engine.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .model_files import CaffeModelError

BACKENDS = ("caffe", "opencv")


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    return backend


def opencv_reason(exc: BaseException) -> str:
    """OpenCV's own message of a ``cv2.error`` on one line."""
    return " ".join(str(getattr(exc, "err", "") or exc).split())


def read_opencv_net(prototxt: str | Path, caffemodel: str | Path) -> Any:
    """``cv2.dnn.readNetFromCaffe``; its ``cv2.error`` (a layer OpenCV lacks, a file it reads otherwise
    than Caffe) becomes :class:`~caffe_common.model_files.CaffeModelError` naming the files and OpenCV's reason.
    Native depthwise layers are read as the grouped convolutions they equal."""
    import cv2

    try:
        with _opencv_prototxt(Path(prototxt)) as readable:
            return cv2.dnn.readNetFromCaffe(str(readable), str(caffemodel))
    except cv2.error as exc:
        raise CaffeModelError(f"{caffemodel} vs {prototxt}: OpenCV DNN cannot read this model: "
                              f"{opencv_reason(exc)}") from exc


@contextmanager
def _opencv_prototxt(prototxt: Path) -> Iterator[Path]:
    """``prototxt`` itself, or a temporary grouped-convolution copy when it has native depthwise layers."""
    from .depthwise import grouped_prototxt, mentions_native_depthwise

    try:
        text = prototxt.read_text(errors="replace")
    except OSError:
        text = ""  # OpenCV reports the unreadable file itself
    if not mentions_native_depthwise(text):
        yield prototxt
        return
    with tempfile.TemporaryDirectory(prefix="opencv-grouped-") as tmp:
        grouped = Path(tmp) / prototxt.name
        grouped.write_text(grouped_prototxt(prototxt))
        yield grouped


class BlobNet:
    """A loaded net on one backend (a ``caffe.Net`` or a ``cv2.dnn.Net``) with one input blob."""

    def __init__(self, net: Any, backend: str, input_name: str = "data"):
        self.net, self.backend, self.input_name = net, check_backend(backend), input_name

    def has_output(self, name: str) -> bool:
        """Whether the net has a blob (caffe) or layer (opencv) called ``name``."""
        if self.backend == "caffe":
            return name in self.net.blobs
        return name in self.net.getLayerNames()

    def forward(self, blob: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one input blob ``(N, C, H, W)``; the ``outputs`` by name (arrays the caller owns).

        Caffe: the input blob is reshaped to ``blob.shape`` (the net follows); OpenCV: ``setInput``
        on the net's input.
        """
        if self.backend == "caffe":
            data = self.net.blobs[self.input_name]
            data.reshape(*blob.shape)
            data.data[...] = blob
            out = self.net.forward(blobs=list(outputs))
            return {name: np.array(out[name], copy=True) for name in outputs}
        self.net.setInput(blob)
        values = self.net.forward(list(outputs))
        return {name: np.asarray(value) for name, value in zip(outputs, values)}
