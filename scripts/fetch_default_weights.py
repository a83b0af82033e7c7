#!/usr/bin/env python3
"""Convert the default MTCNN weights (PyPI wheel mtcnn==0.1.1, MIT) to prototxt/mtcnn/det{1,2,3}.caffemodel.

Run by `make setup`; idempotent: quick when the caffemodels are already there and fit the prototxts.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn_caffe.nets.weights import DEFAULT_WEIGHTS_DIR, convert_default_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS_DIR), help="directory with det*.prototxt (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="convert again even if the caffemodels exist")
    args = parser.parse_args()
    if convert_default_weights(args.out, force=args.force):
        print(f"default weights: converted mtcnn==0.1.1 (MIT) to {args.out}/det{{1,2,3}}.caffemodel")
    else:
        print("default weights: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
