"""MTCNN face detection + 5-point alignment: the official three-stage cascade on Caffe or OpenCV DNN.

The steps follow the official ``detect_face.m`` (Zhang et al. 2016):

1. P-Net on an image pyramid (scales ``12/min_size * factor**k``), candidate
   cells with ``prob >= t1``, NMS 0.5 (union) per scale, NMS 0.7 over all
   scales, P-Net regression (``w = x2 - x1``), squared (rerec), truncated.
2. R-Net on 24x24 crops (zero-padded outside the image), ``prob > t2``, NMS 0.7
   (union) *before* the regression, regression (``w = x2 - x1 + 1``), rerec.
3. O-Net on 48x48 crops of the truncated boxes, ``prob > t3``, 5 points from the
   box *before* regression, regression, NMS 0.7 with the **min** overlap.

Coordinates returned by this module are **0-based pixel indices** of the input
image: the official MATLAB results minus 1, i.e. ``(0, 0)`` is the centre of the
top-left pixel; a box ``x1, y1, x2, y2`` spans the pixels ``x1..x2`` inclusive
(``x2 - x1 + 1`` pixels wide, the official convention) and is not clipped to the
image. Images are BGR (OpenCV order): uint8, uint16 (scaled by 1/257), or float
in 0..255; grayscale and BGRA are accepted; the cascade resizes 8-bit pixels.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from . import steps
from .defaults import DEFAULT_NMS, MAX_PYRAMID_PIXELS, PNET_TILE, PRESETS  # noqa: F401  (PRESETS: part of this module's API)
from .backends import StageNet, check_backend, retain_freed_memory
from ..net_input import images_to_blob
from ..nets.weights import resolve_weights_dir


class PyramidTooLargeError(ValueError):
    """An image whose P-Net pyramid would exceed the detector's ``max_pyramid_pixels`` (checked before any
    allocation; the message names the settings to change)."""


@dataclass
class Face:
    """One detected face: ``box`` x1, y1, x2, y2 and ``landmarks`` (5, 2) in 0-based pixels (module docstring);
    points in the order left eye, right eye, nose, left mouth corner, right mouth corner."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        """The face as in ``mtcnn-caffe detect --json`` lines (:func:`caffe_common.face_output.face_json`)."""
        from caffe_common.face_output import face_json

        return face_json(self.box, self.score, self.landmarks)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Any supported image (gray, BGR, BGRA; uint8, uint16, float 0..255) -> contiguous ``(H, W, 3)`` uint8 BGR.

    The cascade works on 8-bit pixels, as the nets were trained: pyramid levels
    and crops are resized from the uint8 image (OpenCV INTER_AREA).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected a gray, BGR or BGRA image, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / np.float32(257.0)).round()
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float32)), 0, 255)
    return np.ascontiguousarray(img, dtype=np.uint8)


class MtcnnDetector:
    """The MTCNN cascade over ``det1/det2/det3.prototxt`` + ``.caffemodel`` in ``weights_dir``.

    ``weights_dir`` defaults to env ``MTCNN_CAFFE_WEIGHTS``, else the converted
    official weights (an explicit ``weights_dir`` always wins); self-trained models with the
    layer/blob names of :mod:`mtcnn_caffe.nets` plug in the same way. Nets are
    loaded when first needed, so ``detect_arrays(stages=1)`` needs only ``det1``.
    ``preset="wider"`` selects the paper's WIDER FACE setting (explicit
    arguments win over the preset). ``fast_resize=True`` is the official
    code's ``fastresize`` option: each pyramid level is resized from the
    previous one instead of from the full image (faster on large images,
    slightly different results; off by default). ``retain_memory=True`` (default)
    lets the process reuse freed memory instead of handing it back to the
    system (:func:`mtcnn_caffe.detect.backends.retain_freed_memory`, process-wide,
    glibc): the nets' per-shape buffers then cost no page faults; results are
    the same either way. ``pnet_tile`` caps the side of one P-Net pass (exact
    tiling, see :meth:`pnet_maps`): lower it to bound memory, e.g. in mining workers.

    Bounds (ValueError naming the parameter): ``min_size`` at least
    :data:`~mtcnn_caffe.detect.steps.MIN_SIZE_FLOOR` px, ``factor`` in ``(0, MAX_FACTOR]``
    (:data:`~mtcnn_caffe.detect.steps.MAX_FACTOR`), thresholds in ``[0, 1]``. An image whose pyramid
    would hold more than ``max_pyramid_pixels`` pixels (default :data:`MAX_PYRAMID_PIXELS`) raises
    :class:`PyramidTooLargeError` before anything is allocated.

    Threads and processes: calls of :meth:`detect` / :meth:`detect_arrays` on one detector from
    several threads are serialised by a lock (the nets hold per-call buffers); make one detector per
    thread or process to run images in parallel. The detector's resize thread (:meth:`_run_ahead`)
    ends when the detector is garbage-collected, and a forked child makes its own.
    """

    def __init__(self, weights_dir: str | Path | None = None, min_size: float | None = None,
                 factor: float | None = None, thresholds: Sequence[float] | None = None, backend: str = "caffe",
                 nms_thresholds: Sequence[float] = DEFAULT_NMS, preset: str = "official", fast_resize: bool = False,
                 retain_memory: bool = True, pnet_tile: int = PNET_TILE,
                 max_pyramid_pixels: float = MAX_PYRAMID_PIXELS):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[preset]
        self.min_size = float(base["min_size"] if min_size is None else min_size)
        self.factor = float(base["factor"] if factor is None else factor)
        steps.check_pyramid_settings(self.min_size, self.factor)
        self.thresholds = _thresholds("thresholds", base["thresholds"] if thresholds is None else thresholds, 3)
        self.nms_thresholds = _thresholds("nms_thresholds", nms_thresholds, 4)
        if not float(max_pyramid_pixels) > 0:
            raise ValueError(f"max_pyramid_pixels must be a positive number, not {max_pyramid_pixels}")
        #: Images whose P-Net pyramid holds more pixels than this are refused (:meth:`check_pyramid_size`).
        self.max_pyramid_pixels = float(max_pyramid_pixels)
        self.backend = check_backend(backend)
        self.fast_resize = bool(fast_resize)
        if int(pnet_tile) < 24:
            raise ValueError(f"pnet_tile must be at least 24 px, not {pnet_tile}")
        #: P-Net levels wider or taller than this run in exactly stitched tiles (bounds Caffe's buffers).
        self.pnet_tile = int(pnet_tile)
        if retain_memory:
            retain_freed_memory()
        self.weights_dir = resolve_weights_dir(weights_dir)
        self._nets: dict[str, StageNet] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()  # one detect call at a time
        self._resizer: ThreadPoolExecutor | None = None  # made on first use (:meth:`_worker`)
        #: Resize pyramid levels and crops on a worker thread, ahead of the nets (:meth:`_run_ahead`);
        #: False: all in the calling thread, one step after the other (same results).
        self.resize_ahead = True
        #: Seconds spent in each net's forward passes since the detector was made (for benchmarks).
        self.forward_seconds = {"det1": 0.0, "det2": 0.0, "det3": 0.0}

    # ----------------------------------------------------------------- nets
    def net(self, stage: str) -> StageNet:
        """The loaded net of ``stage`` (loaded and checked against its prototxt on first use)."""
        if stage not in self._nets:
            self._nets[stage] = StageNet(self.weights_dir, stage, self.backend)
        return self._nets[stage]

    def _own_process(self) -> None:
        """After ``fork()`` the child has no resize thread and may hold a copy of a taken lock: new ones."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._resizer = None

    def _worker(self) -> ThreadPoolExecutor:
        """The resize thread, one per detector and process. Exactly one thread: it runs the queued calls
        in order, which the ``fast_resize`` pyramid relies on. It exits when the detector (the
        executor's only owner) is garbage-collected."""
        self._own_process()
        if self._resizer is None:
            self._resizer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtcnn-resize")
        return self._resizer

    def _run_ahead(self, func: Callable, calls: Sequence[tuple]) -> Iterator:
        """``func(*args)`` for each ``args`` in ``calls``, in order.

        With :attr:`resize_ahead` all calls are queued at once on the worker thread, which computes
        them in order while the caller runs the nets on the results already done (OpenCV releases
        the GIL); otherwise each runs in the calling thread when its result is asked for. Either way
        the same values. An exception of a call is raised here, in the caller. Use it under
        ``contextlib.closing``: stopping early (an error) cancels the queued calls and waits for a
        running one, so no work outlives the caller's step.
        """
        if not self.resize_ahead:
            for args in calls:
                yield func(*args)
            return
        worker = self._worker()
        futures = [worker.submit(func, *args) for args in calls]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
            wait(futures)

    def _forward_crops(self, stage: str, image: np.ndarray, boxes: np.ndarray, size: int) -> dict[str, np.ndarray]:
        """R-/O-Net outputs of the ``size`` px crops of integer 1-based ``boxes``.

        The crops are cut and resized chunk by chunk (:data:`~mtcnn_caffe.detect.backends.BATCH_LIMITS`) ahead
        of the net (:meth:`_run_ahead`); the same crops and outputs as cropping everything first (each
        crop depends on its box only).
        """
        net = self.net(stage)
        chunks = [(image, boxes[i:i + net.batch_limit], size) for i in range(0, len(boxes), net.batch_limit)]
        parts = []
        with closing(self._run_ahead(steps.crop_patches, chunks)) as cropped:
            for crops in cropped:
                start = time.perf_counter()
                parts.append(net.forward_images(crops))
                self.forward_seconds[stage] += time.perf_counter() - start
        return {name: np.concatenate([p[name] for p in parts]) for name in net.outputs}

    def pnet_maps(self, scaled_bgr: np.ndarray, blob: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """P-Net on one pyramid level: ``(face_prob (X, Y), offsets (4, X, Y))`` in the nets' layout.

        ``blob`` may pass the level's :func:`~mtcnn_caffe.net_input.images_to_blob` already made.

        Levels wider or taller than ``self.pnet_tile`` (default :data:`PNET_TILE`) run in tiles that start at
        even pixels and overlap by 10 px, which reproduces the whole-image maps
        exactly (P-Net: receptive field 12, stride 2, ceil-mode pooling) while
        bounding Caffe's memory on very large images.
        """
        net = self.net("det1")
        blob = images_to_blob(scaled_bgr) if blob is None else blob  # (1, 3, X, Y)
        x_tiles = _tile_starts(blob.shape[2], self.pnet_tile)
        y_tiles = _tile_starts(blob.shape[3], self.pnet_tile)
        prob = np.empty((steps.pnet_output_size(blob.shape[2]), steps.pnet_output_size(blob.shape[3])), np.float32)
        reg = np.empty((4,) + prob.shape, np.float32)
        start = time.perf_counter()
        for x0, x1 in x_tiles:
            for y0, y1 in y_tiles:
                tile = blob if len(x_tiles) == len(y_tiles) == 1 else np.ascontiguousarray(blob[:, :, x0:x1, y0:y1])
                out = net.forward_blob(tile)
                p, r = out["prob1"][0, 1], out["conv4-2"][0]
                prob[x0 // 2:x0 // 2 + p.shape[0], y0 // 2:y0 // 2 + p.shape[1]] = p
                reg[:, x0 // 2:x0 // 2 + p.shape[0], y0 // 2:y0 // 2 + p.shape[1]] = r
        self.forward_seconds["det1"] += time.perf_counter() - start
        return prob, reg

    def pyramid(self, image: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        """``(scale, level)`` of the P-Net pyramid, each level resized (INTER_AREA) from the full image
        (from the previous level with ``fast_resize``).

        The levels are resized one after the other on the worker thread while the caller runs P-Net
        on the levels already done (:meth:`_run_ahead`): the same pixels, computed while the other core
        would wait out P-Net's less parallel layers and small levels.
        """
        with closing(self._pyramid(image, with_blobs=False)) as levels:
            for scale, level, _ in levels:
                yield scale, level

    def _pyramid(self, image: np.ndarray, with_blobs: bool) -> Iterator[tuple[float, np.ndarray, np.ndarray | None]]:
        """:meth:`pyramid` with each level's net input blob (made on the worker too) when ``with_blobs``;
        close it when stopping early (:meth:`_run_ahead`)."""
        height, width = image.shape[:2]
        chain = self.fast_resize
        source = [image]  # fast_resize: the previous level (the calls run in order, see _worker)

        def level(scale: float) -> tuple[float, np.ndarray, np.ndarray | None]:
            hs, ws = steps.scaled_size(height, width, scale)
            resized = cv2.resize(source[0], (ws, hs), interpolation=cv2.INTER_AREA)
            if chain:
                source[0] = resized
            return scale, resized, images_to_blob(resized) if with_blobs else None

        scales = steps.pyramid_scales(height, width, self.min_size, self.factor)
        return self._run_ahead(level, [(scale,) for scale in scales])

    # ----------------------------------------------------------------- stages
    def stage1(self, image: np.ndarray) -> np.ndarray:
        """P-Net candidates ``(N, 5)`` (1-based, truncated squares) of a uint8 BGR image."""
        per_scale = []
        with closing(self._pyramid(image, with_blobs=True)) as levels:
            for scale, scaled, blob in levels:
                prob, reg = self.pnet_maps(scaled, blob)
                boxes = steps.generate_boxes(prob, reg, scale, self.thresholds[0])
                if len(boxes):
                    per_scale.append(boxes[steps.nms(boxes, self.nms_thresholds[0], "union")])
        if not per_scale:
            return np.zeros((0, 5))
        boxes = np.concatenate(per_scale)
        boxes = boxes[steps.nms(boxes, self.nms_thresholds[1], "union")]
        boxes = steps.rerec(steps.regress_pnet(boxes))
        boxes[:, :4] = np.trunc(boxes[:, :4])
        return boxes

    def stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net refinement of integer 1-based boxes -> ``(N, 5)`` (1-based, squared, not truncated)."""
        boxes = boxes[steps.valid_crop_mask(boxes)]
        if not len(boxes):
            return np.zeros((0, 5))
        out = self._forward_crops("det2", image, boxes, 24)
        score = out["prob1"].reshape(len(boxes), -1)[:, 1].astype(np.float64)
        passed = score > self.thresholds[1]
        boxes = np.column_stack([boxes[passed, :4], score[passed]])
        reg = out["conv5-2"].reshape(len(passed), 4)[passed]
        if not len(boxes):
            return boxes
        pick = steps.nms(boxes, self.nms_thresholds[2], "union")
        return steps.rerec(steps.bbreg(boxes[pick], reg[pick]))

    def stage3(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """O-Net output of R-Net boxes: ``(N, 5)`` boxes and ``(N, 5, 2)`` points, 1-based."""
        boxes = np.trunc(boxes)
        boxes = boxes[steps.valid_crop_mask(boxes)]
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        out = self._forward_crops("det3", image, boxes, 48)
        score = out["prob1"].reshape(len(boxes), -1)[:, 1].astype(np.float64)
        passed = score > self.thresholds[2]
        boxes = np.column_stack([boxes[passed, :4], score[passed]])
        points = steps.onet_landmarks(boxes, out["conv6-3"].reshape(len(passed), 10)[passed])
        if not len(boxes):
            return boxes, points
        boxes = steps.bbreg(boxes, out["conv6-2"].reshape(len(passed), 4)[passed])
        pick = steps.nms(boxes, self.nms_thresholds[3], "min")
        return boxes[pick], points[pick]

    # ----------------------------------------------------------------- public API
    def check_pyramid_size(self, height: int, width: int) -> None:
        """Raise :class:`PyramidTooLargeError` when the pyramid of a ``height x width`` image would hold more
        than ``max_pyramid_pixels`` pixels (only arithmetic: call it before allocating anything)."""
        pixels = steps.pyramid_pixels(height, width, self.min_size, self.factor)
        if pixels > self.max_pyramid_pixels:
            raise PyramidTooLargeError(
                f"{width} x {height} image: its P-Net pyramid at min_size {self.min_size:g} and factor "
                f"{self.factor:g} would hold {pixels / 1e6:.0f} Mpx, more than max_pyramid_pixels "
                f"{self.max_pyramid_pixels / 1e6:g} Mpx: raise min_size (detect --min-size) or "
                f"max_pyramid_pixels (detect --max-pyramid-mpx)")

    def detect_arrays(self, image_bgr: np.ndarray, stages: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Run the cascade up to ``stages`` (1, 2 or 3).

        Returns ``boxes`` ``(N, 5)`` float64 ``x1, y1, x2, y2, score`` and
        ``points`` ``(N, 5, 2)`` in 0-based pixels (module docstring). With
        ``stages=1`` the boxes are P-Net's after its NMS, regression and rerec,
        truncated to integers exactly as they are cropped for R-Net; with
        ``stages=2`` R-Net's after NMS, regression and rerec. Points exist only
        for ``stages=3`` (zeros otherwise).
        """
        if stages not in (1, 2, 3):
            raise ValueError(f"stages must be 1, 2 or 3, not {stages}")
        shape = np.shape(image_bgr)
        if len(shape) >= 2:  # before the uint8 copy: a runaway pyramid is refused without allocating
            self.check_pyramid_size(shape[0], shape[1])
        image = to_bgr_uint8(image_bgr)
        self._own_process()
        with self._lock:
            return self._cascade(image, stages)

    def _cascade(self, image: np.ndarray, stages: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`detect_arrays` of a uint8 BGR image (the caller holds the lock)."""
        boxes = self.stage1(image)
        if stages >= 2 and len(boxes):
            boxes = self.stage2(image, boxes)
        if stages == 3 and len(boxes):
            boxes, points = self.stage3(image, boxes)
            return to_zero_based(boxes, points)
        boxes, _ = to_zero_based(boxes, np.zeros((0, 5, 2)))
        return boxes, np.zeros((len(boxes), 5, 2))

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces of one BGR image, best score first."""
        boxes, points = self.detect_arrays(image_bgr)
        return [Face(tuple(float(v) for v in b[:4]), float(b[4]), p) for b, p in zip(boxes, points)]


def _thresholds(name: str, values: Sequence[float], count: int) -> tuple[float, ...]:
    """``count`` thresholds in ``[0, 1]`` as floats; ValueError naming the parameter otherwise."""
    values = tuple(float(v) for v in values)
    if len(values) != count:
        raise ValueError(f"{name} needs {count} values, got {len(values)}")
    for value in values:
        problem = steps.threshold_problem(value)
        if problem:
            raise ValueError(f"{name}: each {problem}")
    return values


def to_zero_based(boxes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB 1-based coordinates -> 0-based pixel indices (scores untouched)."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 5)
    boxes[:, :4] -= 1
    return boxes, np.asarray(points, dtype=np.float64).reshape(-1, 5, 2) - 1


def _tile_starts(length: int, tile: int) -> list[tuple[int, int]]:
    """Input ranges ``[start, end)`` covering ``length`` px: tiles of at most ``tile`` px rounded down to even,
    10 px overlap, last tile to the end.

    Every start is even (P-Net's stride 2) and every tile but the last has an even length (no partial
    ceil-mode pooling window at its edge), so the tiles' output cells are exactly the whole input's.
    """
    tile -= tile % 2
    ranges = []
    start = 0
    while length - start > tile:
        ranges.append((start, start + tile))
        start += tile - 10
    ranges.append((start, length))
    return ranges
