#!/usr/bin/env python3
"""MTCNN demo: detect faces + 5 points in IMAGE... and save the drawn results (default: output/demo/).

    python scripts/demo.py photo.jpg [more.jpg ...] [--out DIR] [--backend opencv] [--preset wider] [--weights-dir DIR]

A thin wrapper over the library (the same as `mtcnn-caffe detect IMAGE... --draw DIR`), printing each face.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--out", default="output/demo", help="folder for the drawn images (default: %(default)s)")
    parser.add_argument("--backend", choices=("caffe", "opencv"), default="caffe")
    parser.add_argument("--preset", choices=("official", "wider"), default="official")
    parser.add_argument("--weights-dir", metavar="DIR", help="det1/det2/det3 .prototxt + .caffemodel "
                        "(default: the converted official weights, or env MTCNN_CAFFE_WEIGHTS)")
    args = parser.parse_args()

    from mtcnn_caffe.detect.io import write_drawing
    from caffe_common.images import read_image
    from mtcnn_caffe.detect.cascade import MtcnnDetector

    detector = MtcnnDetector(args.weights_dir, backend=args.backend, preset=args.preset)
    status = 0
    for name in args.images:
        try:
            image = read_image(Path(name))
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        faces = detector.detect(image)
        saved = write_drawing(Path(args.out), Path(name).name, image, faces)
        print(f"{name}: {len(faces)} faces -> {saved}")
        for face in faces:
            x1, y1, x2, y2 = face.box
            print(f"  box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})  score {face.score:.3f}  "
                  f"left eye ({face.landmarks[0][0]:.0f}, {face.landmarks[0][1]:.0f})")
    return status


if __name__ == "__main__":
    sys.exit(main())
