"""Running an SSD detector over many images: the JSON record and the drawn image of each, over the
generic run loop of :mod:`caffe_common.batch` (inputs, ``--resume``, per-image failures). The
``ssd-mobilenet detect`` command and the SSD path of ``scripts/demo.py`` are thin wrappers over
:func:`run_detection`.

A drawing is written atomically before the image's JSON line is appended: a line in the JSON output
means all of that image's outputs exist.
"""
from __future__ import annotations

import colorsys
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, TextIO

import numpy as np

from caffe_common.batch import InputImage, RunSummary, expand_inputs, run_batch
from caffe_common.drawing import checked_drawing_path, draw_box, line_thickness, save_drawing
from caffe_common.images import read_image

if TYPE_CHECKING:  # the detector imports Caffe: only for the annotations
    from .detect import Detection, SsdDetector

FOUND_FIELD = "detections"


def detection_record(path: Path, image: np.ndarray, detections: Sequence[Detection]) -> dict:
    """The JSON line of one image: ``{"image", "width", "height", "detections": [{"label", "name",
    "score", "box"}]}``, boxes ``[x1, y1, x2, y2]`` in pixels."""
    return {"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
            FOUND_FIELD: [d.to_json() for d in detections]}


def label_color(label: int) -> tuple[int, int, int]:
    """A BGR colour per class label, far apart for neighbouring labels (golden-ratio hue steps; label 1 green)."""
    r, g, b = colorsys.hsv_to_rgb((1 / 3 + (label - 1) * 0.618034) % 1.0, 0.9, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` with each detection's box and ``name score`` drawn in its class colour."""
    canvas = image.copy()
    thickness = line_thickness(image)
    for det in detections:
        draw_box(canvas, det.box, f"{det.name} {det.score:.2f}", label_color(det.label), thickness)
    return canvas


#: Called after each image with the input, its detections and the drawing's path (None without drawings).
DetectionReport = Callable[[InputImage, Sequence["Detection"], "Path | None"], None]


def detection_job(detector: SsdDetector, images: Sequence[InputImage], draw_out: str | None = None,
                  report: DetectionReport | None = None) -> Callable[[InputImage], dict]:
    """The per-image step of :func:`run_detection`: read, detect, draw, return the JSON record.
    A drawing that would replace an input image fails that image."""
    inputs = {item.path.resolve() for item in images}

    def process(item: InputImage) -> dict:
        target = checked_drawing_path(draw_out, item.out_name, inputs) if draw_out else None
        image = read_image(item.path)
        detections = detector.detect(image)
        if target is not None:
            save_drawing(target, draw_detections(image, detections))
        if report:
            report(item, detections, target)
        return detection_record(item.path, image, detections)

    return process


def run_detection(detector: SsdDetector, inputs: Iterable[str], json_out: str | None = None,
                  draw_out: str | None = None, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, err: TextIO | None = None,
                  report: DetectionReport | None = None) -> RunSummary:
    """Detect objects in every input (:func:`caffe_common.batch.expand_inputs`), one JSON line per image
    appended to ``json_out`` as it is done (``resume``: skip the images already there). An image that
    fails for any reason is reported on ``err`` (naming the file) and skipped."""
    failures: list[str] = []
    images = expand_inputs(inputs, failures)
    process = detection_job(detector, images, draw_out, report)
    return run_batch(images, process, json_out=json_out, resume=resume, overwrite=overwrite,
                     found_field=FOUND_FIELD, failures=failures, progress=progress, err=err or sys.stderr,
                     desc="detect")
