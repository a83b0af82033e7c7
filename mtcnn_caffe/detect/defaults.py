"""The detector's settings, in one place: every command, generator and default argument reads them here.

``official`` is the release's ``detect_face`` defaults; ``wider`` is the paper's WIDER FACE setting.
"""
from __future__ import annotations

#: Detection settings by name.
PRESETS: dict[str, dict] = {
    "official": {"min_size": 20, "factor": 0.709, "thresholds": (0.6, 0.7, 0.7)},
    "wider": {"min_size": 10, "factor": 0.79, "thresholds": (0.5, 0.5, 0.3)},
}
#: The settings used when none are given.
OFFICIAL = PRESETS["official"]
MIN_SIZE: float = OFFICIAL["min_size"]
FACTOR: float = OFFICIAL["factor"]
THRESHOLDS: tuple[float, float, float] = OFFICIAL["thresholds"]
#: NMS thresholds: P-Net per scale, P-Net all scales, R-Net, O-Net (the last one with the min overlap).
DEFAULT_NMS = (0.5, 0.7, 0.7, 0.7)
#: P-Net inputs larger than this many pixels per side run in exactly stitched tiles (bounds memory).
PNET_TILE = 1024
#: An image whose P-Net pyramid (all levels together) holds more pixels than this is refused before any
#: allocation (:class:`~mtcnn_caffe.detect.cascade.PyramidTooLargeError`). Each pyramid pixel is held as an 8-bit
#: level and a float32 net input (15 bytes), so 200 Mpx is about 3 GB; a 50 Mpx photo at the ``wider`` preset needs 193.
MAX_PYRAMID_PIXELS = 200_000_000
