#!/usr/bin/env python3
"""MTCNN demo: detect faces + 5 points in IMAGE... and save the drawn results (default: output/demo/).

    python scripts/demo.py photo.jpg [more.jpg folder/ @list.txt ...] [--out DIR] [--backend opencv]
                           [--preset wider] [--weights-dir DIR]

A thin wrapper over the library (the same as `mtcnn-caffe detect IMAGE... --draw DIR`), printing each face.
Drawings are named by file name (folders: the path below the folder); a clash gets -2, -3, ... .
An image that fails is reported and skipped (exit status 2); an unusable --out or missing weights stop
the demo before any work (exit status 2 and 1).
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


def main() -> int:
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
