#!/usr/bin/env python3
"""MTCNN demo: detect faces + 5 points in IMAGE... and save the drawn results (default: output/demo/).

    python scripts/demo.py photo.jpg [more.jpg folder/ @list.txt ...] [--out DIR] [--backend opencv]
                           [--preset wider] [--weights-dir DIR]

A thin wrapper over the library (the same as `mtcnn-caffe detect IMAGE... --draw DIR`), printing each face.
Drawings are named by file name (folders: the path below the folder); a clash gets -2, -3, ... .
An image that fails is reported and skipped (exit status 2); an unusable --out or missing weights stop
the demo before any work (exit status 2 and 1).

MobileNet-SSD demo: with --model (or --model-zoo) among the arguments, the demo runs an SSD deploy model
instead (the same as `ssd-mobilenet detect IMAGE... --draw output/demo`); see its options with
    python scripts/demo.py --model x --help
    python scripts/demo.py image.jpg --model MobileNetSSD_deploy.prototxt --weights W.caffemodel [--labels FILE]
    python scripts/demo.py image.jpg --model-zoo res10          # OpenCV's res10 face SSD, real weights
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def print_faces(item, faces, drawn) -> None:
    """One line per image and one per face: box, score, left eye."""
    print(f"{item.path}: {len(faces)} faces -> {drawn}")
    for face in faces:
        x1, y1, x2, y2 = face.box
        print(f"  box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})  score {face.score:.3f}  "
              f"left eye ({face.landmarks[0][0]:.0f}, {face.landmarks[0][1]:.0f})")


def print_detections(item, detections, drawn) -> None:
    """SSD demo: one line per image and one per detection: name, score, box."""
    print(f"{item.path}: {len(detections)} detections -> {drawn}")
    for det in detections:
        x1, y1, x2, y2 = det.box
        print(f"  {det.name} ({det.label})  score {det.score:.3f}  box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")


def wants_ssd(argv: list[str]) -> bool:
    """Whether the arguments name an SSD model (``--model``, ``--model=...``, ``--model-zoo``)."""
    return any(arg == "--model" or arg.startswith(("--model=", "--model-zoo")) for arg in argv)


def main() -> int:
    if wants_ssd(sys.argv[1:]):
        from ssd_mobilenet.commands.detect import demo_main

        return demo_main(sys.argv[1:], prog=Path(sys.argv[0]).name, report=print_detections)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder or @list.txt")
    parser.add_argument("--out", default="output/demo", help="folder for the drawn images (default: %(default)s)")
    parser.add_argument("--backend", choices=("caffe", "opencv"), default="caffe")
    parser.add_argument("--preset", choices=("official", "wider"), default="official")
    parser.add_argument("--weights-dir", metavar="DIR", help="det1/det2/det3 .prototxt + .caffemodel "
                        "(default: the converted official weights, or env MTCNN_CAFFE_WEIGHTS)")
    args = parser.parse_args()

    from caffe_common.batch import OutputError
    from mtcnn_caffe.detect.io import check_outputs, load_detector, run_detection
    from mtcnn_caffe.nets.weights import WeightsMismatchError, WeightsNotFoundError

    try:
        check_outputs(draw_out=args.out, draw_option="--out")
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        detector = load_detector(args.weights_dir, backend=args.backend, preset=args.preset)
    except (WeightsNotFoundError, WeightsMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        summary = run_detection(detector, args.images, draw_out=args.out, progress=False, report=print_faces)
    except KeyboardInterrupt:
        print("interrupted: the drawings made so far are kept", file=sys.stderr)
        return 130
    return summary.exit_status


if __name__ == "__main__":
    sys.exit(main())
