"""``train-cascade``: data, P-Net, mining, R-Net, mining, O-Net, evaluation in one resumable command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .train import POSITIVE_INT


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-cascade", help="train the whole cascade (12 -> mine -> 24 -> mine -> 48) from annotations",
        description="Generate data, train P-Net, mine hard examples with it, train R-Net, mine with P+R, train "
                    "O-Net; the result is DIR/weights/det{1,2,3}.{prototxt,caffemodel} for 'detect --weights-dir'. "
                    "Finished steps are recorded in DIR/cascade.json and skipped when the command is run again "
                    "(an interrupted training resumes from its newest snapshot).")
    p.add_argument("--wider-anno", required=True, type=Path, help="WIDER FACE wider_face_train_bbx_gt.txt")
    p.add_argument("--wider-images", required=True, type=Path, help="WIDER_train/images")
    p.add_argument("--landmarks", required=True, type=Path, help="5-point list (path l r t b x1 y1 .. x5 y5)")
    p.add_argument("--landmark-images", required=True, type=Path, help="root of the 5-point list's image paths")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--hold-out", nargs="+", default=[], metavar="EVENT",
                   help="WIDER events left out of training and evaluated at the end (e.g. 13--Interview)")
    p.add_argument("--landmark-test", type=Path, metavar="LIST", help="5-point list evaluated at the end (NME)")
    p.add_argument("--iters", type=POSITIVE_INT, nargs=3, metavar=("P", "R", "O"),
                   help="iterations of the three stages (default 10000 8000 6000)")
    p.add_argument("--batch", type=POSITIVE_INT, nargs=3, metavar=("P", "R", "O"),
                   help="batch sizes of the three stages (default 384 256 128)")
    p.add_argument("--limit", type=POSITIVE_INT, metavar="N", help="use the first N WIDER images only")
    p.add_argument("-j", "--jobs", type=POSITIVE_INT, help="generator processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caffe_common.solver import TrainingError, TrainingInterrupted

    from ..train.cascade import CascadeInputs, CascadeOptions, train_cascade
    from ..train.stage import StageError

    inputs = CascadeInputs(args.wider_anno, args.wider_images, args.landmarks, args.landmark_images,
                           args.hold_out, args.landmark_test, args.limit)
    sizes = (12, 24, 48)
    options = CascadeOptions(dict(zip(sizes, args.iters or ())), dict(zip(sizes, args.batch or ())), args.seed,
                             args.jobs, progress=not args.no_progress)
    try:
        summary = train_cascade(inputs, args.out, options)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}; run the same command again to continue", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue (finished steps are kept)", file=sys.stderr)
        return 130
    except (StageError, TrainingError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, step in summary["steps"].items():
        print(f"{name}: {step}")
    print(f"cascade ready: {args.out / 'weights'}")
    return 0
