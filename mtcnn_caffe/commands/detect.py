"""``detect``: MTCNN faces and 5 points of images, as JSON lines, WIDER FACE files or drawn images."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="detect faces + 5 landmarks in images (MTCNN cascade)",
        description="Detect faces and 5 landmarks (left eye, right eye, nose, left/right mouth corner) with the "
        "MTCNN cascade. Coordinates are 0-based pixels. Without --json/--wider-out/--draw, JSON lines go to "
        "stdout. Exit status 2 when any input could not be read (the others are still processed).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, directory (searched recursively) or @list.txt (one path per line)")
    p.add_argument("--preset", choices=("official", "wider"), default="official",
                   help="official: min size 20, factor 0.709, thresholds 0.6 0.7 0.7 (default); "
                   "wider: the paper's WIDER FACE setting 10, 0.79, 0.5 0.5 0.3")
    p.add_argument("--min-size", type=float, metavar="N", help="smallest face to find, in pixels (preset: 20)")
    p.add_argument("--factor", type=float, metavar="F", help="image pyramid scale step (preset: 0.709)")
    p.add_argument("--thresholds", type=float, nargs=3, metavar=("T1", "T2", "T3"),
                   help="P-/R-/O-Net score thresholds (preset: 0.6 0.7 0.7)")
    p.add_argument("--fast-resize", action="store_true",
                   help="resize each pyramid level from the previous one (the official fastresize option: "
                   "faster on large images, slightly different results)")
    p.add_argument("--backend", choices=("caffe", "opencv"), default="caffe",
                   help="inference engine over the same prototxt/caffemodel (default: caffe)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder with det1/det2/det3 .prototxt + .caffemodel (default: the converted official "
                   "weights, or env MTCNN_CAFFE_WEIGHTS when set; this option wins over both)")
    p.add_argument("--json", metavar="OUT.jsonl", help="write one JSON line per image ('-' for stdout)")
    p.add_argument("--wider-out", metavar="DIR", help="write WIDER FACE submission files DIR/<event>/<name>.txt")
    p.add_argument("--draw", metavar="DIR", help="save images with boxes, scores and points drawn")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detect.io import run_detection
    from ..detect.cascade import MtcnnDetector
    from ..nets.weights import WeightsMismatchError, WeightsNotFoundError

    try:
        detector = MtcnnDetector(args.weights_dir, args.min_size, args.factor, args.thresholds, args.backend,
                                 preset=args.preset, fast_resize=args.fast_resize)
        for stage in ("det1", "det2", "det3"):
            detector.net(stage)  # fail early, before any output, on missing or mismatched weights
    except (WeightsNotFoundError, WeightsMismatchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    json_out = args.json
    if json_out is None and not args.wider_out and not args.draw:
        json_out = "-"
    summary = run_detection(detector, args.inputs, json_out=json_out, wider_out=args.wider_out,
                            draw_out=args.draw, progress=not args.no_progress)
    print(f"{summary.images} images, {summary.faces} faces, {len(summary.failures)} inputs failed", file=sys.stderr)
    return summary.exit_status
