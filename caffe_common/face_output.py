"""The outputs of both face detectors (``mtcnn-caffe detect``, ``ssd-mobilenet detect-faces``), shared so that
every evaluator reads them unchanged: the JSON record of a face and of an image, the WIDER FACE submission
files, the drawn images, and the per-image step over the generic run loop of :mod:`caffe_common.batch`.

Faces follow MTCNN's coordinate convention: **0-based pixel indices** (``(0, 0)`` is the centre of the
top-left pixel), a box ``x1, y1, x2, y2`` spans the pixels ``x1..x2`` inclusive (``x2 - x1 + 1`` wide, what
the WIDER file's ``w`` is), five landmarks (left eye, right eye, nose, left and right mouth corner).

A face's JSON: ``{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x 5]}`` (box and points rounded
to 1e-3 px, score to 1e-6), plus ``"partial": true/false`` from a detector that tells partial faces apart
(the face SSD). An image's JSON line: ``{"image", "width", "height", "faces": [...]}``.

Drawings and WIDER files are written atomically (:mod:`caffe_common.atomic`), then the image's JSON
line is appended: a line in the JSON output means all of that image's outputs exist.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from .atomic import write_text_atomic
from .batch import (
    InputImage,
    RunSummary,
    add_json_options,
    check_json_output,
    check_output_dir,
    expand_inputs,
    json_destination,
    run_batch,
)
from .drawing import (
    checked_drawing_path,
    draw_box,
    drawing_path,
    line_thickness,
    save_drawing,
)
from .images import read_image

#: The record field listing an image's faces.
FACES_FIELD = "faces"
FACE_COLOR, PARTIAL_COLOR, POINT_COLOR = (0, 255, 0), (0, 165, 255), (0, 0, 255)


class DetectedFace(Protocol):
    """What the outputs need of a face: ``box`` (x1, y1, x2, y2), ``score``, ``landmarks`` (5, 2) and
    :meth:`to_json`; an optional ``partial`` attribute marks a partial face (drawn in another colour)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    def to_json(self) -> dict: ...


class FaceDetector(Protocol):
    """Anything with ``detect(bgr_image) -> faces``."""

    def detect(self, image: np.ndarray) -> Sequence[DetectedFace]: ...


def face_json(box: Sequence[float], score: float, landmarks: np.ndarray, partial: bool | None = None) -> dict:
    """One face as in the ``--json`` lines (see the module docstring); ``partial`` None leaves the key out."""
    record = {"box": [round(float(v), 3) for v in box], "score": round(float(score), 6),
              "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in np.asarray(landmarks).reshape(-1, 2)]}
    if partial is not None:
        record["partial"] = bool(partial)
    return record


def face_record(path: Path, image: np.ndarray, faces: Sequence[DetectedFace]) -> dict:
    """The JSON line of one image: ``{"image", "width", "height", "faces": [face JSON, ...]}``."""
    return {"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
            FACES_FIELD: [face.to_json() for face in faces]}


def wider_submission_text(name: str, faces: Sequence[DetectedFace]) -> str:
    """WIDER FACE result file: image name, face count, then ``x y w h score`` (w = x2 - x1 + 1)."""
    lines = [name, str(len(faces))]
    for face in faces:
        x1, y1, x2, y2 = face.box
        lines.append(f"{x1:.1f} {y1:.1f} {x2 - x1 + 1:.1f} {y2 - y1 + 1:.1f} {face.score:.6f}")
    return "\n".join(lines) + "\n"


def wider_result_path(out_dir: str | Path, image_path: Path) -> Path:
    """``out_dir/<event>/<name>.txt`` for an image at ``.../<event>/<name>.jpg``."""
    return Path(out_dir) / image_path.resolve().parent.name / f"{image_path.stem}.txt"


def write_wider_result(out_dir: str | Path, image_path: Path, faces: Sequence[DetectedFace]) -> Path:
    """Write the WIDER FACE result file of one image (:func:`wider_result_path`) atomically."""
    target = wider_result_path(out_dir, image_path)
    write_text_atomic(target, wider_submission_text(image_path.stem, faces))
    return target


def draw_faces(image: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and 5 points drawn (partial faces in orange,
    captioned ``partial``)."""
    import cv2

    canvas = image.copy()
    thickness = line_thickness(image)
    for face in faces:
        partial = bool(getattr(face, "partial", False))
        caption = f"partial {face.score:.2f}" if partial else f"{face.score:.2f}"
        draw_box(canvas, face.box, caption, PARTIAL_COLOR if partial else FACE_COLOR, thickness)
        for x, y in face.landmarks:
            cv2.circle(canvas, (round(float(x)), round(float(y))), thickness + 1, POINT_COLOR, -1)
    return canvas


def write_drawing(out_dir: str | Path, out_name: str, image: np.ndarray, faces: Sequence[DetectedFace]) -> Path:
    """Save the drawn image as :func:`~caffe_common.drawing.drawing_path` atomically (the format follows
    the extension)."""
    return save_drawing(drawing_path(out_dir, out_name), draw_faces(image, faces))


# --------------------------------------------------------------------------- command options
def add_face_output_options(p: Any, record: str, partial_note: str = "") -> None:
    """The outputs of a face detect command: ``--json`` (:func:`caffe_common.batch.add_json_options`),
    ``--wider-out``, ``--draw``, ``--no-progress``."""
    add_json_options(p, record)
    p.add_argument("--wider-out", metavar="DIR", help="write WIDER FACE submission files DIR/<event>/<name>.txt")
    p.add_argument("--draw", metavar="DIR",
                   help=f"save images with boxes, scores and points drawn{partial_note}, as DIR/<path below the "
                   "input folder> (name clashes get -2, -3, ...; files of an earlier run are replaced)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def checked_face_outputs(args: Any) -> str | None:
    """The JSON destination of a face detect command's parsed ``args``, every output checked before any
    work (:class:`caffe_common.batch.OutputError`)."""
    json_out = json_destination(args.json, bool(args.wider_out or args.draw), args.resume)
    check_outputs(json_out, args.wider_out, args.draw, resume=args.resume, overwrite=args.overwrite)
    return json_out


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


#: Called after each image with the input, its faces and the drawing's path (None without drawings).
FaceReport = Callable[[InputImage, Sequence[DetectedFace], "Path | None"], None]


def face_job(detector: FaceDetector, images: Sequence[InputImage], wider_out: str | None = None,
             draw_out: str | None = None, report: FaceReport | None = None) -> Callable[[InputImage], dict]:
    """The per-image step of :func:`run_face_detection`: read, detect, write the WIDER file and the drawing,
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


def run_face_detection(detector: FaceDetector, inputs: Iterable[str], json_out: str | None = None,
                       wider_out: str | None = None, draw_out: str | None = None, resume: bool = False,
                       overwrite: bool = False, progress: bool = True, err: TextIO | None = None,
                       report: FaceReport | None = None) -> RunSummary:
    """Detect faces in every input (:func:`caffe_common.batch.expand_inputs`), one JSON line per image
    appended to ``json_out`` as it is done (``resume``: skip the images already there). An image that
    fails for any reason is reported on ``err`` (naming the file) and skipped."""
    failures: list[str] = []
    images = expand_inputs(inputs, failures)
    process = face_job(detector, images, wider_out, draw_out, report)
    return run_batch(images, process, json_out=json_out, resume=resume, overwrite=overwrite, found_field=FACES_FIELD,
                     failures=failures, progress=progress, err=err or sys.stderr)
