"""Running the face detector over many images: inputs, outputs (JSON lines, WIDER FACE
submission files, drawn images). The ``mtcnn-caffe detect`` command is a thin wrapper over
:func:`run_detection`; ``scripts/demo.py`` uses :func:`write_drawing` (images are read by :mod:`caffe_common.images`).

Every output is written atomically (:mod:`caffe_common.atomic`: temporary file + ``os.replace``):
an interrupted run never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence, TextIO

import numpy as np

from caffe_common.atomic import atomic_path, write_text_atomic
from caffe_common.batch import RunSummary, expand_inputs, json_lines_writer
from caffe_common.images import read_image

if TYPE_CHECKING:  # the detector imports cv2: only for the annotations
    from .cascade import Face, MtcnnDetector


# --------------------------------------------------------------------------- outputs
def face_record(path: Path, image: np.ndarray, faces: Sequence[Face]) -> dict:
    """The JSON line of one image: ``{"image", "width", "height", "faces": [{"box", "score", "landmarks"}]}``."""
    return {"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "faces": [face.to_json() for face in faces]}


def wider_submission_text(name: str, faces: Sequence[Face]) -> str:
    """WIDER FACE result file: image name, face count, then ``x y w h score`` (w = x2 - x1 + 1)."""
    lines = [name, str(len(faces))]
    for face in faces:
        x1, y1, x2, y2 = face.box
        lines.append(f"{x1:.1f} {y1:.1f} {x2 - x1 + 1:.1f} {y2 - y1 + 1:.1f} {face.score:.6f}")
    return "\n".join(lines) + "\n"


def write_wider_result(out_dir: Path, image_path: Path, faces: Sequence[Face]) -> Path:
    """``out_dir/<event>/<name>.txt`` for an image at ``.../<event>/<name>.jpg``."""
    target = Path(out_dir) / image_path.resolve().parent.name / f"{image_path.stem}.txt"
    write_text_atomic(target, wider_submission_text(image_path.stem, faces))
    return target


def draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and 5 points drawn."""
    import cv2

    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        cv2.putText(canvas, f"{face.score:.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, (0, 255, 0), thickness, cv2.LINE_AA)
        for x, y in face.landmarks:
            cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, (0, 0, 255), -1)
    return canvas


def write_drawing(out_dir: Path, rel_name: str, image: np.ndarray, faces: Sequence[Face]) -> Path:
    """Save the drawn image as ``out_dir/<rel_name>`` (JPEG/PNG by the input's extension) atomically."""
    import cv2

    target = Path(out_dir) / rel_name
    if target.suffix.lower() not in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}:
        target = target.with_suffix(".png")
    with atomic_path(target, suffix=target.suffix) as tmp:  # OpenCV picks the format from the extension
        if not cv2.imwrite(str(tmp), draw_faces(image, faces)):
            raise OSError(f"{target}: cannot write image")
    return target


# --------------------------------------------------------------------------- the run
def run_detection(detector: MtcnnDetector, inputs: Iterable[str], json_out: str | None = None,
                  wider_out: str | None = None, draw_out: str | None = None, progress: bool = True,
                  err: TextIO | None = None) -> RunSummary:
    """Detect faces in every input; bad inputs are reported on ``err`` (naming the file) and skipped."""
    from tqdm import tqdm

    err = err or sys.stderr
    summary = RunSummary()
    images = expand_inputs(inputs, summary.failures)
    for message in summary.failures:
        print(f"error: {message}", file=err)
    with json_lines_writer(json_out) as write_record:
        for item in tqdm(images, desc="detect", unit="img", disable=not progress or len(images) < 2, file=err):
            try:
                image = read_image(item.path)
            except OSError as exc:
                summary.failures.append(str(exc))
                tqdm.write(f"error: {exc}", file=err)  # keeps the progress bar intact
                continue
            faces = detector.detect(image)
            summary.images += 1
            summary.faces += len(faces)
            write_record(face_record(item.path, image, faces))
            if wider_out:
                write_wider_result(Path(wider_out), item.path, faces)
            if draw_out:
                write_drawing(Path(draw_out), item.rel_name, image, faces)
    return summary
