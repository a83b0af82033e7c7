"""Running the face detector over many images: the face-specific parts (JSON record, WIDER FACE
submission files, drawn images) over the generic run loop of :mod:`caffe_common.batch`. The
``mtcnn-caffe detect`` command and ``scripts/demo.py`` are thin wrappers over :func:`check_outputs`,
:func:`load_detector` and :func:`run_detection`.

Drawings and WIDER files are written atomically (:mod:`caffe_common.atomic`), then the image's JSON
line is appended: a line in the JSON output means all of that image's outputs exist.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, TextIO

import numpy as np

from caffe_common.atomic import write_text_atomic
from caffe_common.batch import InputImage, RunSummary, check_json_output, check_output_dir, expand_inputs, run_batch
from caffe_common.drawing import checked_drawing_path, draw_box, drawing_path, line_thickness, save_drawing
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


def wider_result_path(out_dir: str | Path, image_path: Path) -> Path:
    """``out_dir/<event>/<name>.txt`` for an image at ``.../<event>/<name>.jpg``."""
    return Path(out_dir) / image_path.resolve().parent.name / f"{image_path.stem}.txt"


def write_wider_result(out_dir: str | Path, image_path: Path, faces: Sequence[Face]) -> Path:
    """Write the WIDER FACE result file of one image (:func:`wider_result_path`) atomically."""
    target = wider_result_path(out_dir, image_path)
    write_text_atomic(target, wider_submission_text(image_path.stem, faces))
    return target


def draw_faces(image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and 5 points drawn."""
    import cv2

    canvas = image.copy()
    thickness = line_thickness(image)
    for face in faces:
        draw_box(canvas, face.box, f"{face.score:.2f}", (0, 255, 0), thickness)
        for x, y in face.landmarks:
            cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, (0, 0, 255), -1)
    return canvas


def write_drawing(out_dir: str | Path, out_name: str, image: np.ndarray, faces: Sequence[Face]) -> Path:
    """Save the drawn image as :func:`~caffe_common.drawing.drawing_path` atomically (the format follows
    the extension)."""
    return save_drawing(drawing_path(out_dir, out_name), draw_faces(image, faces))


# --------------------------------------------------------------------------- the run
def check_outputs(json_out: str | None = None, wider_out: str | None = None, draw_out: str | None = None,
                  resume: bool = False, overwrite: bool = False, draw_option: str = "--draw") -> None:
    """Refuse unusable output paths before any work (:class:`caffe_common.batch.OutputError` naming the
    option): a folder or an existing file given as ``--json`` (without ``resume``/``overwrite``),
    folders that cannot be created or written."""
    if json_out is not None and json_out != "-":
        check_json_output(json_out, resume, overwrite)
    if wider_out:
        check_output_dir(wider_out, "--wider-out")
    if draw_out:
        check_output_dir(draw_out, draw_option)


def load_detector(weights_dir: str | Path | None = None, **settings) -> MtcnnDetector:
    """An :class:`~mtcnn_caffe.detect.cascade.MtcnnDetector` with all three nets loaded and checked,
    so that missing or mismatched weights fail before any output. Raises ValueError (settings),
    :class:`~mtcnn_caffe.nets.weights.WeightsNotFoundError` (naming the folder and where it came from)
    or :class:`~mtcnn_caffe.nets.weights.WeightsMismatchError`."""
    from ..nets.weights import WEIGHTS_ENV, WeightsNotFoundError
    from .cascade import MtcnnDetector

    detector = MtcnnDetector(weights_dir, **settings)
    if not detector.weights_dir.is_dir():
        source = ("--weights-dir" if weights_dir is not None else
                  f"env {WEIGHTS_ENV}" if os.environ.get(WEIGHTS_ENV) else "the default weights; run `make setup`")
        raise WeightsNotFoundError(f"weights folder {detector.weights_dir} not found ({source})")
    for stage in ("det1", "det2", "det3"):
        detector.net(stage)
    return detector


#: Called after each image with the input, its faces and the drawing's path (None without drawings).
FaceReport = Callable[[InputImage, Sequence["Face"], "Path | None"], None]


def face_job(detector: MtcnnDetector, images: Sequence[InputImage], wider_out: str | None = None,
             draw_out: str | None = None, report: FaceReport | None = None) -> Callable[[InputImage], dict]:
    """The per-image step of :func:`run_detection`: read, detect, write the WIDER file and the drawing,
    return the JSON record.

    Nothing is overwritten by mistake: an image whose WIDER file another input of the run already
    owns (same event folder and name) fails, and so does a drawing that would replace an input image.
    """
    inputs = {item.path.resolve() for item in images}
    wider_owner: dict[Path, Path] = {}
    if wider_out:
        for item in images:
            wider_owner.setdefault(wider_result_path(wider_out, item.path), item.path)

    def process(item: InputImage) -> dict:
        if wider_out:
            owner = wider_owner[wider_result_path(wider_out, item.path)]
            if owner != item.path:
                raise ValueError(f"its WIDER result file would replace that of {owner} (same folder name and stem)")
        if draw_out:
            checked_drawing_path(draw_out, item.out_name, inputs)
        image = read_image(item.path)
        faces = detector.detect(image)
        if wider_out:
            write_wider_result(wider_out, item.path, faces)
        drawn = write_drawing(draw_out, item.out_name, image, faces) if draw_out else None
        if report:
            report(item, faces, drawn)
        return face_record(item.path, image, faces)

    return process


def run_detection(detector: MtcnnDetector, inputs: Iterable[str], json_out: str | None = None,
                  wider_out: str | None = None, draw_out: str | None = None, resume: bool = False,
                  overwrite: bool = False, progress: bool = True, err: TextIO | None = None,
                  report: FaceReport | None = None) -> RunSummary:
    """Detect faces in every input (:func:`caffe_common.batch.expand_inputs`), one JSON line per image
    appended to ``json_out`` as it is done (``resume``: skip the images already there). An image that
    fails for any reason is reported on ``err`` (naming the file) and skipped."""
    failures: list[str] = []
    images = expand_inputs(inputs, failures)
    process = face_job(detector, images, wider_out, draw_out, report)
    return run_batch(images, process, json_out=json_out, resume=resume, overwrite=overwrite, found_field="faces",
                     failures=failures, progress=progress, err=err or sys.stderr)
