"""Reading input photos and cutting patches: the one image reader and the one crop-and-resize of the
toolkit (detection, data generation, demo).

Images are returned as OpenCV decodes them with ``IMREAD_COLOR``: uint8 BGR ``(H, W, 3)``, with
gray, 16-bit and alpha images converted and the EXIF orientation applied. A file that cannot be
used raises :class:`ImageReadError`, whose message names the file and the reason: missing,
unreadable, empty, truncated or corrupt (OpenCV's decoders reject truncated JPEG/PNG data when
decoding from memory; libjpeg's "Corrupt JPEG data" warnings reject the file too), or larger than
the pixel limit. The limit, env ``MTCNN_CAFFE_MAX_PIXELS`` (default :data:`DEFAULT_MAX_PIXELS`), is
checked against the JPEG/PNG header *before* decoding, so a forged header never costs a huge
allocation; other formats are bounded by OpenCV's own limit (2**30 pixels).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

#: Largest image (width x height) read by default: 100 megapixels (300 MB decoded).
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "MTCNN_CAFFE_MAX_PIXELS"
#: No supported format stores more than 8 bytes per pixel (16-bit RGBA PNG, incompressible).
_MAX_FILE_BYTES_PER_PIXEL = 8
#: JPEG start-of-frame markers (they carry the image size); C4, C8 and CC are other segments.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: libjpeg warnings that mean the pixels are not what the file should hold.
_JPEG_CORRUPTION = ("Corrupt JPEG data", "Premature end of JPEG file")
_STDERR_LOCK = threading.Lock()


class ImageReadError(OSError):
    """An input image is missing, unreadable or not decodable (message: ``path: reason``)."""


def max_pixels() -> int:
    """The pixel limit: env ``MTCNN_CAFFE_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer (pixels), not {text!r}")
    return value


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG or PNG header without decoding; ``None`` for other or unparsable data."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:  # walk the marker segments up to the frame header
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            return int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


@contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """The lines C decoders print on file descriptor 2 inside the block (libjpeg/libpng print
    warnings there without a file name): collected so the caller can attribute them."""
    lines: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def _read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes after the checks that need no decoding (existence, permission, size)."""
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    nbytes = path.stat().st_size
    if nbytes == 0:
        raise ImageReadError(f"{path}: empty file")
    if nbytes > _MAX_FILE_BYTES_PER_PIXEL * limit:
        raise ImageReadError(f"{path}: {nbytes} bytes is more than any image within the pixel limit "
                             f"({limit}, env {MAX_PIXELS_ENV}) can take")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: {exc.strerror or exc}") from exc


def _decode(data: bytes) -> tuple[np.ndarray | None, list[str]]:
    """``cv2.imdecode`` (IMREAD_COLOR) of ``data`` and what the decoders said; ``None`` if it failed."""
    import cv2

    with _decoder_messages() as messages:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:  # e.g. a header beyond OpenCV's own size limit
            image = None
            error = str(exc).strip().splitlines()[-1]
        else:
            error = None
    return image, messages + ([error] if error else [])


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 ``(H, W, 3)`` image of ``path``; raises :class:`ImageReadError` naming the file."""
    path = Path(path)
    limit = max_pixels()
    data = _read_bytes(path, limit)
    size = header_size(data)
    if size is not None and size[0] * size[1] > limit:
        raise ImageReadError(f"{path}: {size[0]}x{size[1]} pixels is more than the limit of {limit} "
                             f"(raise it with env {MAX_PIXELS_ENV})")
    image, messages = _decode(data)
    detail = "; ".join(messages)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        reason = "cannot decode image (truncated, corrupt or unsupported format)"
        raise ImageReadError(f"{path}: {reason}" + (f": {detail}" if detail else ""))
    if any(line.startswith(_JPEG_CORRUPTION) for line in messages):
        raise ImageReadError(f"{path}: corrupt JPEG data ({detail})")
    for line in messages:  # a harmless decoder warning: shown, with the file it is about
        print(f"warning: {path}: {line}", file=sys.stderr)
    return image


def crop_resized(image: np.ndarray, box, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """``image[y1:y2, x1:x2]`` of the integer half-open box ``x1, y1, x2, y2`` (0-based), zero where the box
    leaves the image, resized to ``size x size`` with ``INTER_AREA``; written into ``out`` when given.

    The one crop of the toolkit: the detector's R/O-Net crops (``mtcnn_caffe.detect.steps.crop_patches``,
    which converts the official 1-based boxes) and the training samples use it, so training crops
    look exactly like what the nets see at inference.
    """
    import cv2

    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty crop box {tuple(box[:4])}")
    height, width = image.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
        patch = image[y1:y2, x1:x2]  # fully inside: no copy
    else:
        patch = np.zeros((y2 - y1, x2 - x1) + image.shape[2:], dtype=image.dtype)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
    if out is None:
        if patch.shape[0] == size and patch.shape[1] == size:
            return np.ascontiguousarray(patch)
        return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    cv2.resize(patch, (size, size), dst=out, interpolation=cv2.INTER_AREA)  # written in place
    return out


# --------------------------------------------------------------------------- net input
def channel_values(values: float | Sequence[float], channels: int, what: str) -> np.ndarray:
    """``values`` (one number, or one per channel) as a float32 vector of ``channels``; ValueError otherwise."""
    array = np.atleast_1d(np.asarray(values, np.float64))
    if array.ndim != 1 or array.size not in (1, channels) or not np.isfinite(array).all():
        raise ValueError(f"{what} needs 1 or {channels} finite numbers (one per channel), got {values!r}")
    return np.broadcast_to(array, (channels,)).astype(np.float32)


def to_net_input(image: np.ndarray, size: tuple[int, int], mean: float | Sequence[float],
                 scale: float | Sequence[float], swap_rb: bool = False) -> np.ndarray:
    """The ``(1, C, H, W)`` float32 input of a uint8 image (``(h, w, 3)`` BGR or ``(h, w)`` gray) for a net
    taking ``size = (W, H)``: bilinear resize (SSD's test transform), channels swapped to RGB if
    ``swap_rb``, then ``(pixel - mean) * scale`` with ``mean`` and ``scale`` each one number or one per
    channel, in the net's channel order (per-channel ``scale = 1 / std`` gives torchvision's normalisation)."""
    import cv2

    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a BGR (height, width, 3) or gray (height, width) image, got shape {image.shape}")
    resized = cv2.resize(image, tuple(size), interpolation=cv2.INTER_LINEAR)
    hwc = resized[..., None] if resized.ndim == 2 else resized[..., ::-1] if swap_rb else resized
    channels = hwc.shape[2]
    normalised = (hwc.astype(np.float32) - channel_values(mean, channels, "mean")) * channel_values(
        scale, channels, "scale")
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])
