"""``ssd-mobilenet detect-faces``: faces, partial faces and 5 landmarks with the single-pass face network, as
JSON lines, WIDER FACE files or drawn images (the outputs of ``mtcnn-caffe detect``,
:mod:`caffe_common.face_output`; a thin CLI over :mod:`ssd_mobilenet.faces.detect`)."""
from __future__ import annotations

import argparse
import sys

from caffe_common.cli import count, number
from caffe_common.face_output import add_face_output_options

DESCRIPTION = (
    "Detect faces and 5 landmarks (left eye, right eye, nose, left/right mouth corner) in one pass of the face "
    "network (MobileNetV2 + SSD heads; `ssd-mobilenet train-faces` makes one). Outputs are those of `mtcnn-caffe "
    "detect`: 0-based pixel coordinates, boxes inclusive (WIDER's w = x2 - x1 + 1), each face with "
    "\"partial\": true when the net sees only part of a face. Without --json/--wider-out/--draw, JSON lines go to "
    "stdout. An unusable model folder stops before any image (exit status 1); unusable outputs or settings: 2 "
    "before any work. An image that fails for any reason is reported by name and skipped (exit status 2). "
    "Ctrl-C: 130, finished images kept."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet detect-faces``."""
    from ssd_mobilenet.faces.model import MAX_SIZE, MIN_SIZE, SIZE_STEP
    from ssd_mobilenet.faces.preprocess import FITS

    p = subparsers.add_parser("detect-faces", help="detect faces + 5 landmarks with the single-pass face network",
                              description=DESCRIPTION)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, directory (searched recursively) or @list.txt (one path per line, relative to "
                   "the list; an image given twice runs once)")
    p.add_argument("--model-dir", metavar="DIR",
                   help="folder with face_model.json, the deploy prototxt and the caffemodel (default: "
                   "models/face_multitask)")
    p.add_argument("--size", type=count(MIN_SIZE, MAX_SIZE), metavar="S", nargs="+",
                   help=f"square net input side(s), multiples of {SIZE_STEP}; with several the net runs at each and "
                   "one NMS merges them, the larger sides keeping only small faces (default: the model's "
                   "detect_sizes, 320 640 for the shipped one; larger finds smaller faces, slower)")
    p.add_argument("--conf", type=number(0, 1), metavar="C",
                   help="lowest face score (1 - background probability) kept (default: the model's; 0.3 for the shipped one)")
    p.add_argument("--nms", type=number(0, 1), metavar="IOU", help="NMS overlap threshold (default: the model's, 0.4)")
    p.add_argument("--fit", choices=FITS,
                   help="how an image becomes the square input: pad (aspect kept, long side to S, the rest mean "
                   "colour) or squash (resized to S x S) (default: the model's; pad for models trained now)")
    p.add_argument("--backend", choices=("caffe", "opencv"), default="caffe",
                   help="inference engine over the same files and input blob (default: caffe)")
    add_face_output_options(p, "{image, width, height, faces: [{box, score, landmarks, partial}]}",
                            " (partial faces in orange)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check outputs and settings, load and check the model, detect; exit status as in :data:`DESCRIPTION`."""
    from caffe_common.batch import OutputError, finish_batch_command
    from caffe_common.face_output import checked_face_outputs, run_face_detection
    from caffe_common.model_files import CaffeModelError

    from ..faces.model import FaceModelError, check_sizes

    try:
        if args.size is not None:
            check_sizes(args.size)
        json_out = checked_face_outputs(args)
    except (OutputError, FaceModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..faces.detect import FaceDetector

    try:
        detector = FaceDetector(args.model_dir, backend=args.backend, conf=args.conf, nms=args.nms, size=args.size,
                                fit=args.fit)
    except (CaffeModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return finish_batch_command(lambda: run_face_detection(
        detector, args.inputs, json_out=json_out, wider_out=args.wider_out, draw_out=args.draw, resume=args.resume,
        overwrite=args.overwrite, progress=not args.no_progress), json_out, "faces", args.resume)
