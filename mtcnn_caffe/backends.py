"""Inference backends of the MTCNN cascade over the same prototxt + caffemodel files.

* ``caffe`` (default): pycaffe, CPU.
* ``opencv``: OpenCV DNN's Caffe importer (``cv2.dnn.readNetFromCaffe``).

Both take BGR images and return the nets' outputs by blob name
(:data:`mtcnn_caffe.nets.OUTPUT_BLOBS`); the input convention (RGB,
``(x - 127.5) / 128``, spatially transposed) is applied in one place,
:func:`mtcnn_caffe.net_input.images_to_blob`. Outputs keep the nets' layout:
P-Net maps are ``(C, X, Y)`` (first spatial axis = image x).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .net_input import images_to_blob
from .nets import OUTPUT_BLOBS
from .weights import check_weights, stage_files

BACKENDS = ("caffe", "opencv")
#: Crops per forward pass of R-Net / O-Net (bounds the memory of crowded images).
BATCH_LIMITS = {"det2": 512, "det3": 256}


class StageNet:
    """One stage (``det1``/``det2``/``det3``) of the cascade on one backend."""

    def __init__(self, weights_dir: str | Path, stage: str, backend: str = "caffe"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.stage, self.backend = stage, backend
        prototxt, caffemodel = stage_files(weights_dir, stage)
        check_weights(prototxt, caffemodel)  # a mismatch would abort the process inside Caffe
        self.outputs = OUTPUT_BLOBS[stage]
        if backend == "caffe":
            from .caffe_env import import_caffe

            caffe = import_caffe()
            self._net = caffe.Net(str(prototxt), caffe.TEST, weights=str(caffemodel))
            missing = [b for b in self.outputs if b not in self._net.blobs]
        else:
            import cv2

            self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
            missing = [b for b in self.outputs if b not in self._net.getLayerNames()]
        if missing:
            raise ValueError(f"{prototxt}: stage {stage} needs output blobs {missing} (see mtcnn_caffe/nets.py)")

    def forward_blob(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        """Run one already-converted input blob ``(N, 3, W, H)``; outputs by name (copies)."""
        if self.backend == "caffe":
            data = self._net.blobs["data"]
            data.reshape(*blob.shape)
            data.data[...] = blob
            out = self._net.forward(blobs=list(self.outputs))
            return {name: np.array(out[name], copy=True) for name in self.outputs}
        self._net.setInput(blob)
        values = self._net.forward(list(self.outputs))
        return {name: np.asarray(v) for name, v in zip(self.outputs, values)}

    def forward_images(self, images_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``(N, H, W, 3)`` BGR crops in chunks of :data:`BATCH_LIMITS`; outputs concatenated."""
        images_bgr = np.asarray(images_bgr)
        limit = BATCH_LIMITS.get(self.stage, len(images_bgr)) or 1
        parts = [self.forward_blob(images_to_blob(images_bgr[i:i + limit])) for i in range(0, len(images_bgr), limit)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.outputs}
