"""``ssd-mobilenet test``: mAP of SSD weights over the whole test LMDB (``scripts/test.sh``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MODEL = Path("example/MobileNetSSD_test.prototxt")   # where scripts/gen_model.sh writes it


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet test``."""
    p = subparsers.add_parser(
        "test", help="VOC07 mAP of SSD weights on the test LMDB, from Caffe's DetectionEvaluate and the Python VOC evaluator",
        description="Run the test net once over every record of its test LMDB (batch 1: exact, whatever the set's "
                    "size) and report VOC07 11-point AP per class and the mAP twice: from Caffe's DetectionEvaluate "
                    "layer (gathered as Caffe's solver does) and from the project's VOC devkit evaluation of the "
                    "written detections (comp4_det_<split>_<class>.txt) against the ground truth (--voc XML files, "
                    "else the LMDB's boxes). Writes DIR/test.json, DIR/test_pr.png, DIR/detections/. "
                    "Exit status: 0 done, 2 refused, 130 interrupted.")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help="test net prototxt with AnnotatedData, DetectionOutput, DetectionEvaluate (default: %(default)s)")
    p.add_argument("--weights", type=Path, required=True, metavar="W.caffemodel", help="the weights to test")
    p.add_argument("--lmdb", type=Path, help="test LMDB (default: the one the test net names)")
    p.add_argument("--labelmap", type=Path, help="label map for class names (default: the one the test net names)")
    p.add_argument("--voc", type=Path, metavar="ROOT",
                   help="VOC root whose Annotations/<id>.xml are the Python evaluator's ground truth (default: the LMDB's boxes)")
    p.add_argument("--split", help="name in the detection files (default: the LMDB folder name without _lmdb)")
    p.add_argument("--out", type=Path, default=Path("test_results"), metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _print_table(result) -> None:
    print(f"{'class':<16} {'objects':>7} {'dets':>6} {'AP Caffe':>9} {'AP VOC':>8}")
    for c in result.classes.values():
        if c.positives:
            print(f"{c.name:<16} {c.positives:>7} {c.detections:>6} {c.caffe_ap:>9.4f} {c.python_ap:>8.4f}")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from caffe_common.atomic import write_json_atomic
    from caffe_common.batch import OutputError, check_output_dir
    from caffe_common.eval.plots import plot_pr_curves
    from ssd_mobilenet.evaluation import SsdTester, SsdTestError

    try:
        check_output_dir(args.out, "--out")
        if args.weights and not args.weights.is_file():
            raise SsdTestError(f"--weights {args.weights}: not found")
        tester = SsdTester(args.model, lmdb=args.lmdb, labelmap=args.labelmap, voc_root=args.voc)
        net = tester.make_net(args.weights)
    except (SsdTestError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = args.split or Path(tester.layout.lmdb).name.removesuffix("_lmdb") or "test"
    progress = None if args.no_progress else (lambda n: tqdm(total=n, desc="test", unit="img", dynamic_ncols=True))
    try:
        result = tester.run(net, detections_dir=args.out / "detections", split=split, progress=progress)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    except SsdTestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {"model": str(args.model), "weights": str(args.weights), "lmdb": str(tester.layout.lmdb),
               "ground_truth": str(args.voc) if args.voc else "lmdb", **result.as_dict()}
    write_json_atomic(args.out / "test.json", summary)
    curves = {c.name: (c.recall, c.precision, c.python_ap) for c in result.classes.values() if c.positives}
    plot_pr_curves(curves, args.out / "test_pr.png", f"{split}: VOC07 11-point AP per class")
    _print_table(result)
    print(result.summary_line())
    print(f"wrote {args.out / 'test.json'}, {args.out / 'test_pr.png'}, {args.out / 'detections'}/")
    return 0
