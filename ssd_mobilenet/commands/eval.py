"""``ssd-mobilenet eval``: Pascal VOC mAP (VOC07 11-point and all-point) of detection files.

Detection format read from ``--pred DIR``: one file per class named
``<prefix>det_<set>_<class>.txt`` (e.g. ``comp4_det_test_car.txt``), one line per
detection ``image_id score x1 y1 x2 y2`` in VOC pixel coordinates.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from caffe_common.eval.cli import add_common_options, check_input_path, check_output_dir, report_and_exit


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet eval`` (Pascal VOC mAP)."""
    parser = subparsers.add_parser(
        "eval", help="Pascal VOC mAP of per-class detection files",
        description="VOC devkit evaluation (IoU >= 0.5, difficult objects ignored, duplicates are false positives). "
                    "Reads DIR/*det_<set>_<class>.txt with lines 'image_id score x1 y1 x2 y2'; prints the mAP "
                    "(VOC07 11-point and all-point) and writes <out>/voc.json and <out>/voc_pr.png.")
    parser.add_argument("--pred", required=True, type=Path, help="folder with the per-class detection files")
    parser.add_argument("--voc", required=True, type=Path, help="VOC root: Annotations/, ImageSets/Main/<set>.txt")
    parser.add_argument("--set", default="test", help="image set name (default: test)")
    parser.add_argument("--labels", type=Path,
                        help="class names: one per line, or an SSD labelmap .prototxt "
                             "(default: <voc>/labels.txt if present, else the 20 VOC classes)")
    add_common_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write ``voc.json`` + ``voc_pr.png``, print the mAP line; exit status as ``mtcnn-caffe eval``."""
    from caffe_common.eval.reports import voc_report

    def checks() -> None:
        check_input_path("--pred", args.pred, "dir")
        check_input_path("--voc", args.voc, "dir")
        check_input_path("--labels", args.labels, "file")
        check_output_dir("--out", args.out, ("voc.json", "voc_pr.png"))

    return report_and_exit(lambda: voc_report(args.pred, args.voc, args.set, args.out, args.labels, args.strict),
                           checks)
