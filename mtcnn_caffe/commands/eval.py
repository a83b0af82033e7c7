"""``eval wider|fddb|landmarks``: benchmark figures as the benchmarks' owners compute them.

Argument parsing only; the evaluators live in :mod:`mtcnn_caffe.evaluation`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from caffe_common.eval.cli import (OptionError, add_common_options, check_input_path, check_output_dir, fraction,
                                   print_usage, report_and_exit)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval wider|fddb|landmarks``."""
    parser = subparsers.add_parser(
        "eval", help="evaluate detections: WIDER FACE AP, FDDB ROC, landmark NME",
        description="Evaluate detector output with the official protocols. Each benchmark prints a one-line "
                    "summary and writes <out>/<benchmark>.json and a PNG plot. Bad input lines are skipped and "
                    "listed; the summary then starts with INCOMPLETE and the exit status is 2 (as for refused "
                    "input).")
    parser.set_defaults(func=lambda args: print_usage(parser))
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")

    wider = benchmarks.add_parser(
        "wider", help="WIDER FACE AP (easy/medium/hard)",
        description="WIDER FACE AP with the official protocol (score normalisation, 1000 thresholds, IoU 0.5, "
                    "ignored faces, VOC all-point AP). Prints 'easy A medium B hard C' (or 'all A' with a text "
                    "ground truth).")
    wider.add_argument("--pred", required=True, type=Path, help="predictions in the submission layout DIR/<event>/<name>.txt")
    wider.add_argument("--gt", required=True, type=Path,
                       help="folder with wider_face_val.mat + wider_{easy,medium,hard}_val.mat, or a "
                            "wider_face_*_bbx_gt.txt (or a folder holding one): one setting 'all' = faces not invalid")
    wider.add_argument("--subset", type=Path, help="list of images (event/name[.jpg] or name) to evaluate; restricts both sides")
    add_common_options(wider)
    wider.set_defaults(func=run_wider)

    fddb = benchmarks.add_parser(
        "fddb", help="FDDB discrete and continuous ROC",
        description="FDDB ROC (Hungarian matching on rasterised ellipse/rectangle overlap). Prints the TPR at "
                    "1000 and 2000 false positives.")
    fddb.add_argument("--pred", required=True, type=Path, nargs="+",
                      help="detection file(s) in FDDB format: name line, count line, 'x y w h score' lines")
    fddb.add_argument("--folds", required=True, type=Path, help="folder with FDDB-fold-XX-ellipseList.txt")
    fddb.add_argument("--fold", type=int, nargs="+", metavar="N", help="evaluate only these fold numbers (default: all found)")
    fddb.add_argument("--images", type=Path,
                      help="FDDB originalPics folder: clip regions to the image like the official program (optional)")
    add_common_options(fddb)
    fddb.set_defaults(func=run_fddb)

    marks = benchmarks.add_parser(
        "landmarks", help="5-point landmark NME, failure rate, CED",
        description="Landmark error of 'detect --json' output: each annotated face is matched to the detection "
                    "with the highest box IoU; NME normalised by the inter-ocular distance (or box size).")
    marks.add_argument("--pred", required=True, type=Path, help="OUT.jsonl written by 'mtcnn-caffe detect --json'")
    marks.add_argument("--gt", required=True, type=Path,
                       help="5-point list (path l r t b x1 y1 .. x5 y5) or imglab XML with 68 points")
    marks.add_argument("--images", required=True, type=Path, help="root folder the ground-truth image paths are relative to")
    marks.add_argument("--normalise", choices=("inter-ocular", "box"), default="inter-ocular",
                       help="divide errors by the inter-ocular distance (default) or sqrt(box w*h)")
    marks.add_argument("--min-iou", type=fraction, default=0.3,
                       help="a face whose best detection has a lower IoU counts as missed (default 0.3)")
    add_common_options(marks)
    marks.set_defaults(func=run_landmarks)


def run_wider(args: argparse.Namespace) -> int:
    """``eval wider``."""
    from ..evaluation.reports import wider_report

    def checks() -> None:
        check_input_path("--pred", args.pred, "dir")
        check_input_path("--gt", args.gt, "any")
        check_input_path("--subset", args.subset, "file")
        check_output_dir("--out", args.out, ("wider.json", "wider_pr.png"))

    return report_and_exit(lambda: wider_report(args.pred, args.gt, args.out, args.subset, args.strict), checks)


def run_fddb(args: argparse.Namespace) -> int:
    """``eval fddb``."""
    from ..evaluation.fddb import FOLD_PATTERN
    from ..evaluation.reports import fddb_report

    def checks() -> None:
        for path in args.pred:
            check_input_path("--pred", path, "file")
        check_input_path("--folds", args.folds, "dir")
        for number in args.fold or ():
            if not (args.folds / FOLD_PATTERN.format(number)).is_file():
                raise OptionError(f"--fold {number}: {args.folds / FOLD_PATTERN.format(number)} not found")
        check_input_path("--images", args.images, "dir")
        check_output_dir("--out", args.out, ("fddb.json", "fddb_roc.png"))

    return report_and_exit(lambda: fddb_report(args.pred, args.folds, args.out, args.fold, args.images, args.strict),
                           checks)


def run_landmarks(args: argparse.Namespace) -> int:
    """``eval landmarks``."""
    from ..evaluation.reports import landmarks_report

    def checks() -> None:
        check_input_path("--pred", args.pred, "file")
        check_input_path("--gt", args.gt, "file")
        check_input_path("--images", args.images, "dir")
        check_output_dir("--out", args.out, ("landmarks.json", "landmarks_ced.png"))

    return report_and_exit(lambda: landmarks_report(args.pred, args.gt, args.images, args.out, args.normalise,
                                                    args.min_iou, args.strict), checks)
