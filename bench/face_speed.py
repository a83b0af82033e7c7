#!/usr/bin/env python3
"""Speed of the single-pass face network vs the MTCNN cascade, side by side in one run.

Times one ``detect`` call per image (median wall ms over ``--runs`` rounds, after one warm-up call each)
of: the face network (``ssd_mobilenet.faces.FaceDetector``, ``--model-dir``, caffe and opencv backends,
each at every ``--size``) and the MTCNN cascade (``mtcnn_caffe.detect.cascade.MtcnnDetector`` with its
default ``official`` settings, caffe and opencv backends, each ``--mtcnn-weights`` folder, by default the
official weights).
The detectors take turns image by image in each round (order rotated), so a changing machine load hits
all of them alike. Two groups of images are reported: ``--images`` ("typical") and ``--crowded``.

Run from the repository root, as in bench/RESULTS.md::

    .venv/bin/python bench/face_speed.py --model-dir models/face_multitask --images IMG... --crowded IMG... \
        [--size 256 320] [--runs 3] [--threads 1]

``--threads`` (default 1) sets OpenBLAS's and OpenMP's threads (before Caffe loads; an
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` already set wins) and OpenCV DNN's (``cv2.setNumThreads``):
OpenCV otherwise uses every free core, so its figures would change with the load of the machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from caffe_common.cli import count
from caffe_common.images import read_image


def parse_sizes(text: str) -> list[int] | None:
    """A ``--size`` token: ``default`` (the model's detect_sizes) or sides joined by commas (``320,640``: one
    detector running both passes)."""
    return None if text == "default" else [int(side) for side in text.split(",")]


def build_detectors(model_dir: str | None, sizes: list[list[int] | None], mtcnn_weights: list[str]
                    ) -> dict[str, Callable[[np.ndarray], list]]:
    """Name -> one-image detect function, for every detector and backend compared."""
    from mtcnn_caffe.detect.cascade import MtcnnDetector
    from ssd_mobilenet.faces.detect import FaceDetector

    detectors: dict[str, Callable[[np.ndarray], list]] = {}
    for backend in ("caffe", "opencv"):
        for size in sizes:
            face = FaceDetector(model_dir, backend=backend, size=size)
            detectors[f"face net {'+'.join(map(str, face.sizes))} {backend}"] = face.detect
    for weights in mtcnn_weights:
        label = "" if len(mtcnn_weights) == 1 else f" ({weights})"
        for backend in ("caffe", "opencv"):
            detector = MtcnnDetector(weights_dir=None if weights == "official" else weights, backend=backend)
            detectors[f"MTCNN{label} {backend}"] = detector.detect
    return detectors


def time_group(detectors: dict[str, Callable[[np.ndarray], list]], images: list[np.ndarray], runs: int
               ) -> dict[str, tuple[float, float]]:
    """Name -> (median ms per image, mean faces per image) over ``runs`` rounds of all ``images``."""
    names = list(detectors)
    times: dict[str, list[float]] = {name: [] for name in names}
    faces: dict[str, list[int]] = {name: [] for name in names}
    for name in names:  # warm-up: loads, allocations, OpenCV's first-run setup
        detectors[name](images[0])
    for round_ in range(runs):
        for index, image in enumerate(images):
            shift = (round_ + index) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                found = detectors[name](image)
                times[name].append((time.perf_counter() - start) * 1000)
                faces[name].append(len(found))
    return {name: (statistics.median(times[name]), float(np.mean(faces[name]))) for name in names}


def set_threads(threads: int) -> None:
    """Pin the thread pools of every backend, so that the figures do not depend on the machine's load."""
    import cv2

    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(variable, str(threads))  # read when Caffe loads OpenBLAS, after this
    cv2.setNumThreads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="face model folder (default: models/face_multitask)")
    parser.add_argument("--size", type=parse_sizes, nargs="+", default=[None], metavar="S[,S...]",
                        help="face net input side(s), one detector per token; 320,640 is one detector running "
                        "both passes (default: the model's detect_sizes)")
    parser.add_argument("--mtcnn-weights", nargs="+", default=["official"], metavar="DIR",
                        help="MTCNN weights folder(s), 'official' for the official weights (default: official)")
    parser.add_argument("--images", nargs="+", required=True, help="typical images")
    parser.add_argument("--crowded", nargs="*", default=[], help="crowded images, reported one by one")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=count(1), default=1,
                        help="threads of OpenBLAS / OpenMP (unless set in the environment) and OpenCV (default 1)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    detectors = build_detectors(args.model_dir, args.size, args.mtcnn_weights)
    groups = {f"{len(args.images)} typical images": [read_image(Path(p)) for p in args.images]}
    for path in args.crowded:
        groups[f"crowded {Path(path).name}"] = [read_image(Path(path))]
    header = "| detector | " + " | ".join(f"{g}: ms/image (faces)" for g in groups) + " |"
    results = {group: time_group(detectors, images, args.runs) for group, images in groups.items()}
    print(f"# threads: OpenCV {args.threads}, OpenBLAS {os.environ['OPENBLAS_NUM_THREADS']}; "
          f"median of {args.runs} rounds")
    print(header)
    print("|---" * (len(groups) + 1) + "|")
    for name in detectors:
        cells = " | ".join(f"{results[g][name][0]:.1f} ({results[g][name][1]:.1f})" for g in groups)
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
