"""A Caffe Python data layer that feeds a net from a ``gen_net_imdb.py`` LMDB.

Use in a prototxt::

    layer {
      name: "data" type: "Python"
      top: "data" top: "label" top: "roi" top: "pts"
      python_param {
        module: "mtcnn_caffe.data.layer" layer: "MtcnnRecordDataLayer"
        param_str: '{"source": "output/mtcnn_data/pack12/data.lmdb", "batch_size": 384}'
      }
    }

Tops (1 to 4, in this order): ``data`` ``(N, 3, s, s)`` in the nets' input convention
(:func:`mtcnn_caffe.net_input.images_to_blob`: RGB, ``(x - 127.5) * 0.0078125``, spatially
transposed like the official weights), ``label`` ``(N,)`` (1 pos, 0 neg, -1 part,
-2 landmark), ``roi`` ``(N, 4)`` box targets, ``pts`` ``(N, 10)`` landmark targets
``x1, y1, ..., x5, y5``. Records are read in order (the LMDB is pre-shuffled) and wrap
around at the end. ``param_str`` keys: ``source`` (required), ``batch_size`` (default 64),
``start`` (first record, default 0).
"""
from __future__ import annotations

import json

import numpy as np

from caffe_common.env import import_caffe
from ..net_input import images_to_blob
from .lmdb_io import RecordReader

caffe = import_caffe()

TOP_NAMES = ("data", "label", "roi", "pts")


def records_to_blobs(records: np.ndarray) -> dict[str, np.ndarray]:
    """Decoded records -> the four top arrays (float32)."""
    return {
        "data": images_to_blob(records["image"]),
        "label": records["label"].astype(np.float32),
        "roi": records["bbox"].astype(np.float32),
        "pts": records["landmark"].astype(np.float32),
    }


def parse_param_str(text: str) -> dict:
    """``param_str`` as JSON (a clear error rather than a Caffe crash)."""
    try:
        params = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"MtcnnRecordDataLayer param_str must be JSON, got {text!r}: {exc}") from exc
    if "source" not in params:
        raise ValueError("MtcnnRecordDataLayer param_str needs a 'source' (the data.lmdb of gen_net_imdb.py)")
    return params


class MtcnnRecordDataLayer(caffe.Layer):
    """Batches of ``data``/``label``/``roi``/``pts`` from a training LMDB."""

    def setup(self, bottom, top):
        """Check the tops, parse ``param_str`` and open the LMDB (errors name the problem, not a Caffe CHECK)."""
        if len(bottom) != 0:
            raise ValueError("MtcnnRecordDataLayer takes no bottoms")
        if not 1 <= len(top) <= len(TOP_NAMES):
            raise ValueError(f"MtcnnRecordDataLayer has 1 to 4 tops ({', '.join(TOP_NAMES)}), got {len(top)}")
        params = parse_param_str(self.param_str)
        self.reader = RecordReader(params["source"])
        self.batch_size = int(params.get("batch_size", 64))
        self.position = int(params.get("start", 0)) % len(self.reader)

    def reshape(self, bottom, top):
        """Fixed shapes: ``(N, 3, s, s)``, ``(N,)``, ``(N, 4)``, ``(N, 10)``."""
        n, s = self.batch_size, self.reader.size
        shapes = ((n, 3, s, s), (n,), (n, 4), (n, 10))
        for i in range(len(top)):  # RawBlobVec supports len/index, not iteration
            top[i].reshape(*shapes[i])

    def forward(self, bottom, top):
        """The next ``batch_size`` records (wrapping around) into the tops."""
        records = self.reader.read(self.position, self.batch_size)
        self.position = (self.position + self.batch_size) % len(self.reader)
        blobs = records_to_blobs(records)
        for i in range(len(top)):
            top[i].data[...] = blobs[TOP_NAMES[i]]

    def backward(self, top, propagate_down, bottom):
        """A data layer has nothing to propagate."""
