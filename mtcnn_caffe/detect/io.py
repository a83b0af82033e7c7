"""Running the MTCNN detector over many images. The outputs (JSON record, WIDER FACE submission files,
drawn images) and the per-image run are shared with the face SSD (:mod:`caffe_common.face_output`) and
re-exported here; this module adds the loading of the cascade. The ``mtcnn-caffe detect`` command and
``scripts/demo.py`` are thin wrappers over :func:`check_outputs`, :func:`load_detector` and
:func:`run_detection`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from caffe_common.face_output import (  # noqa: F401  (re-exported)
    FaceReport,
    check_outputs,
    draw_faces,
    face_job,
    face_record,
    run_face_detection,
    wider_result_path,
    wider_submission_text,
    write_drawing,
    write_wider_result,
)

if TYPE_CHECKING:  # the detector imports cv2: only for the annotations
    from .cascade import MtcnnDetector

#: :func:`caffe_common.face_output.run_face_detection` under its MTCNN name.
run_detection = run_face_detection


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
