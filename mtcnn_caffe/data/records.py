"""The sample and record formats of the MTCNN training data (one definition, used everywhere).

Conventions (shared by generation, hard-example mining, packing and the training layer):

* **Crop**: ``uint8`` **BGR**, ``size x size x 3``, row-major ``(H, W, C)`` exactly as OpenCV
  reads the image: *no* normalisation is stored. The nets' input convention (RGB,
  ``(x - 127.5) * 0.0078125``, transposed ``(N, 3, W, H)``) is applied at batch time by
  :func:`mtcnn_caffe.net_input.images_to_blob`, the same function the detector uses.
* **Label**: pos ``1``, neg ``0``, part ``-1``, landmark ``-2`` (float32 in records).
* **Box targets** ``bbox``: ``((gx1 - x1) / w, (gy1 - y1) / h, (gx2 - x2) / w, (gy2 - y2) / h)``
  for the crop box ``x1, y1, x2, y2`` (``w = x2 - x1``, ``h = y2 - y1``: random crops are
  square, mined crops are the detector's boxes, square to a pixel) and the face box ``g``.
  The detector refines a box as ``x1 + t * w`` with ``w`` its width in pixels (R/O-Net:
  ``x2 - x1 + 1`` of its inclusive boxes, the same number). Set for pos, part and landmark
  samples; ``0`` for negatives.
* **Landmark targets** ``landmark``: 10 numbers ``x1, y1, x2, y2, ..., x5, y5`` (interleaved, the
  5 points in :data:`mtcnn_caffe.annotations.FIVE_POINT_NAMES` order), each
  ``((x - x1) / w, (y - y1) / h)`` relative to the crop *as stored* (x horizontal, not
  transposed). Set for landmark samples only; ``0`` otherwise.
* Coordinates are continuous pixels: pixel ``j`` covers ``[j, j + 1)``; a crop box
  ``x1, y1, x2, y2`` holds the pixels ``image[y1:y2, x1:x2]``; a horizontal flip maps ``x`` to
  ``width - x``.

Two numpy structured dtypes (packed, little-endian), so that a batch of records decodes with a
single :func:`numpy.frombuffer` and no per-record Python work:

* :func:`record_dtype` (the LMDB value): ``label f4, bbox f4[4], landmark f4[10], image u1[s,s,3]``
  = ``60 + 3 s^2`` bytes.
* :func:`sample_dtype` (generator shards): the record fields plus provenance used by tests and
  debugging: source image index, face index (``-1``: none), crop box and face box (in the
  sample's frame), the 2x3 affine ``frame`` mapping original image coordinates to that frame
  (identity unless rotated), a ``mirrored`` flag, and the IoU of crop and face box.
"""
from __future__ import annotations

import numpy as np

POSITIVE, NEGATIVE, PART, LANDMARK = 1, 0, -1, -2
#: Label name -> code, and the order stats and packing use.
LABELS = {"pos": POSITIVE, "neg": NEGATIVE, "part": PART, "landmark": LANDMARK}

#: IoU rules (reference_constants.md): neg < 0.3, part in [0.4, 0.65), pos >= 0.65.
NEG_IOU_MAX = 0.3
PART_IOU_MIN = 0.4
POS_IOU_MIN = 0.65

STAGE_SIZES = (12, 24, 48)
RECORD_FORMAT = "mtcnn-record-v1"
SAMPLE_FORMAT = "mtcnn-sample-v1"

_RECORD_FIELDS = [("label", "<f4"), ("bbox", "<f4", (4,)), ("landmark", "<f4", (10,))]
_SAMPLE_EXTRA = [
    ("image_index", "<i4"),
    ("face_index", "<i4"),
    ("crop_box", "<f4", (4,)),
    ("face_box", "<f4", (4,)),
    ("frame", "<f4", (2, 3)),
    ("mirrored", "u1"),
    ("iou", "<f4"),
]


def check_size(size: int) -> int:
    """Validate a stage input size (12, 24 or 48)."""
    if int(size) not in STAGE_SIZES:
        raise ValueError(f"sample size must be one of {STAGE_SIZES}, not {size}")
    return int(size)


def record_dtype(size: int) -> np.dtype:
    """LMDB record of a ``size x size`` crop (see module docstring)."""
    return np.dtype(_RECORD_FIELDS + [("image", "u1", (size, size, 3))])


def sample_dtype(size: int) -> np.dtype:
    """Generator shard sample: the record fields plus provenance."""
    return np.dtype(_RECORD_FIELDS + [("image", "u1", (size, size, 3))] + _SAMPLE_EXTRA)


IDENTITY_FRAME = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)


def empty_samples(size: int, count: int = 0) -> np.ndarray:
    """Zeroed samples (identity frame, face_index -1)."""
    samples = np.zeros(count, dtype=sample_dtype(size))
    samples["frame"] = IDENTITY_FRAME
    samples["face_index"] = -1
    return samples


def samples_to_records(samples: np.ndarray) -> np.ndarray:
    """Strip the provenance: sample array -> record array (a copy)."""
    size = samples.dtype["image"].shape[0]
    records = np.empty(len(samples), dtype=record_dtype(size))
    for name in records.dtype.names:
        records[name] = samples[name]
    return records


def decode_records(buffer: bytes | bytearray | memoryview, size: int) -> np.ndarray:
    """Records from concatenated bytes (zero-copy view; read-only if ``buffer`` is ``bytes``)."""
    dtype = record_dtype(size)
    if len(buffer) % dtype.itemsize:
        raise ValueError(f"buffer of {len(buffer)} bytes is not a whole number of {size}x{size} records "
                         f"({dtype.itemsize} bytes each)")
    return np.frombuffer(buffer, dtype=dtype)


#: Record landmark order ``x1, y1, ..., x5, y5`` -> the nets' output order ``x1..x5, y1..y5`` (official O-Net
#: ``conv6-3``, read that way by :func:`mtcnn_caffe.detect.steps.onet_landmarks`).
NET_LANDMARK_ORDER = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9])


def landmarks_to_net_order(landmark: np.ndarray) -> np.ndarray:
    """``(..., 10)`` interleaved record landmarks -> the nets' ``x1..x5, y1..y5`` (the one conversion)."""
    return np.asarray(landmark)[..., NET_LANDMARK_ORDER]


def landmarks_from_net_order(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`landmarks_to_net_order`."""
    out = np.empty_like(np.asarray(points))
    out[..., NET_LANDMARK_ORDER] = points
    return out


def count_labels(labels: np.ndarray) -> dict[str, int]:
    """``{"pos": n, "neg": n, "part": n, "landmark": n}`` of a label array."""
    labels = np.asarray(labels)
    return {name: int(np.count_nonzero(labels == code)) for name, code in LABELS.items()}
