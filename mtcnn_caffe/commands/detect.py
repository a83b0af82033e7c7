"""``detect``: MTCNN faces and 5 points of images, as JSON lines, WIDER FACE files or drawn images."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from caffe_common.face_output import add_face_output_options

from ..detect import steps
from ..detect.defaults import MAX_PYRAMID_PIXELS


def _number(problem: Callable[[float], str | None]) -> Callable[[str], float]:
    """An argparse type: a float that ``problem`` accepts (argparse names the option in its error)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        reason = problem(value)
        if reason:
            raise argparse.ArgumentTypeError(reason)
        return value
    return parse


def _positive_problem(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else f"must be a positive number, not {value:g}"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="detect faces + 5 landmarks in images (MTCNN cascade)",
        description="Detect faces and 5 landmarks (left eye, right eye, nose, left/right mouth corner) with the "
        "MTCNN cascade. Coordinates are 0-based pixels. Without --json/--wider-out/--draw, JSON lines go to "
        "stdout. An image that fails for any reason is reported by name and skipped; the exit status is then 2. "
        "Unusable output paths and settings are refused before any work (exit status 2).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, directory (searched recursively) or @list.txt (one path per line, "
                   "relative to the list; an image given twice runs once)")
    p.add_argument("--preset", choices=("official", "wider"), default="official",
                   help="official: min size 20, factor 0.709, thresholds 0.6 0.7 0.7 (default); "
                   "wider: the paper's WIDER FACE setting 10, 0.79, 0.5 0.5 0.3")
    p.add_argument("--min-size", type=_number(steps.min_size_problem), metavar="N",
                   help=f"smallest face to find, in pixels, at least {steps.MIN_SIZE_FLOOR} (preset: 20)")
    p.add_argument("--factor", type=_number(steps.factor_problem), metavar="F",
                   help=f"image pyramid scale step, in (0, {steps.MAX_FACTOR}] (preset: 0.709)")
    p.add_argument("--thresholds", type=_number(steps.threshold_problem), nargs=3, metavar=("T1", "T2", "T3"),
                   help="P-/R-/O-Net score thresholds in [0, 1] (preset: 0.6 0.7 0.7)")
    p.add_argument("--max-pyramid-mpx", type=_number(_positive_problem), default=MAX_PYRAMID_PIXELS / 1e6,
                   metavar="MPX", help="skip (and report) an image whose P-Net pyramid would hold more megapixels "
                   "than this (default: %(default)g, about 3 GB; a 50 Mpx photo at --preset wider needs 193)")
    p.add_argument("--fast-resize", action="store_true",
                   help="resize each pyramid level from the previous one (the official fastresize option: "
                   "faster on large images, slightly different results)")
    p.add_argument("--backend", choices=("caffe", "opencv"), default="caffe",
                   help="inference engine over the same prototxt/caffemodel (default: caffe)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder with det1/det2/det3 .prototxt + .caffemodel (default: the converted official "
                   "weights, or env MTCNN_CAFFE_WEIGHTS when set; this option wins over both)")
    add_face_output_options(p, "{image, width, height, faces: [{box, score, landmarks}]}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caffe_common.batch import OutputError, finish_batch_command

    from caffe_common.face_output import checked_face_outputs

    from ..detect.io import load_detector, run_detection
    from ..nets.weights import WeightsMismatchError, WeightsNotFoundError

    try:
        json_out = checked_face_outputs(args)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        detector = load_detector(args.weights_dir, min_size=args.min_size, factor=args.factor,
                                 thresholds=args.thresholds, backend=args.backend, preset=args.preset,
                                 fast_resize=args.fast_resize, max_pyramid_pixels=args.max_pyramid_mpx * 1e6)
    except (WeightsNotFoundError, WeightsMismatchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return finish_batch_command(lambda: run_detection(
        detector, args.inputs, json_out=json_out, wider_out=args.wider_out, draw_out=args.draw, resume=args.resume,
        overwrite=args.overwrite, progress=not args.no_progress), json_out, "faces", args.resume)


