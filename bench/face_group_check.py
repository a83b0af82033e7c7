#!/usr/bin/env python3
"""Faces found in group photos: a sanity check of face detectors beside the WIDER AP of bench/face_accuracy.sh.

For each model folder of the single-pass face network (``--model-dir``, each at every ``--conf``) and,
optionally, the MTCNN cascade (``--mtcnn-weights``, its own default thresholds), on the images of imglab
XMLs (default: both of ``../shared/data/faces_68pt``, 9 group photos, 43 faces): the faces found (a detection matched
one-to-one, best score first, to an annotated face at IoU >= ``--iou``) and the other boxes. A detector
users can rely on finds most faces with few other boxes at its default threshold.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/face_group_check.py \
        --model-dir models/face_multitask --conf 0.3 0.5 [--fit pad squash] [--mtcnn-weights official]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from caffe_common.boxes import iou_matrix  # noqa: E402
from caffe_common.face_annotations import read_imglab_xml  # noqa: E402
from caffe_common.images import read_image  # noqa: E402

DEFAULT_XML = [REPO.parent / "shared" / "data" / "faces_68pt" / f"{part}_with_face_landmarks.xml"
               for part in ("training", "testing")]


def matched(boxes: np.ndarray, truth: np.ndarray, iou: float) -> int:
    """Annotated faces matched one-to-one by ``boxes`` (best first) at IoU >= ``iou``."""
    if not len(boxes) or not len(truth):
        return 0
    overlaps = iou_matrix(boxes, truth)
    free = np.ones(len(truth), bool)
    for row in overlaps:
        candidates = np.where(free, row, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            free[best] = False
    return int((~free).sum())


def tally(detect: Callable[[np.ndarray], np.ndarray], images: Sequence[tuple[np.ndarray, np.ndarray]],
          iou: float) -> tuple[int, int]:
    """``(faces found, other boxes)`` of a detector (image -> boxes ``(K, 4)``, best first) over ``images``."""
    found = boxes = 0
    for image, truth in images:
        detected = detect(image)
        hits = matched(detected, truth, iou)
        found, boxes = found + hits, boxes + len(detected) - hits
    return found, boxes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xml", type=Path, nargs="+", default=DEFAULT_XML, help="imglab XMLs with face boxes")
    parser.add_argument("--model-dir", type=Path, nargs="*", default=[], help="face network model folders")
    parser.add_argument("--conf", type=float, nargs="+", default=[0.5], help="face-network score thresholds")
    parser.add_argument("--fit", nargs="+", default=[None], help="pad / squash (default: each model's)")
    parser.add_argument("--mtcnn-weights", nargs="*", default=[], help="MTCNN weight folders or 'official'")
    parser.add_argument("--backend", default="opencv", choices=("caffe", "opencv"))
    parser.add_argument("--iou", type=float, default=0.4, help="IoU that counts a face as found")
    args = parser.parse_args(argv)

    images = [(read_image(xml.parent / item.file), item.boxes) for xml in args.xml for item in read_imglab_xml(xml)]
    total = sum(len(t) for _, t in images)
    print(f"# {' '.join(map(str, args.xml))}: {len(images)} images, {total} faces; backend {args.backend}; "
          f"found at IoU >= {args.iou}")
    print("| detector | threshold | faces found | other boxes |\n|---|---|---|---|")
    from ssd_mobilenet.faces.detect import FaceDetector

    for model in args.model_dir:
        for fit in args.fit:
            for conf in args.conf:
                detector = FaceDetector(model, backend=args.backend, conf=conf, fit=fit)
                found, other = tally(lambda image: np.array([f.box for f in detector.detect(image)]).reshape(-1, 4),
                                     images, args.iou)
                print(f"| {model} ({detector.fit}) | {conf:g} | {found} / {total} | {other} |")
    if args.mtcnn_weights:
        from mtcnn_caffe.detect.cascade import MtcnnDetector

        for weights in args.mtcnn_weights:
            detector = MtcnnDetector(weights_dir=None if weights == "official" else weights, backend=args.backend)
            found, other = tally(lambda image: np.array([f.box for f in detector.detect(image)]).reshape(-1, 4),
                                 images, args.iou)
            print(f"| MTCNN {weights} | default | {found} / {total} | {other} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
