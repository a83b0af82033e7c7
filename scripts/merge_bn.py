#!/usr/bin/env python3
"""Fold BatchNorm + Scale into convolutions of a Caffe deploy model, verified.

    python scripts/merge_bn.py --model deploy.prototxt --weights in.caffemodel \
        [--out-model no_bn.prototxt] [--out-weights no_bn.caffemodel] [--image photo.jpg]

Same as ``mtcnn-caffe merge-bn`` / ``ssd-mobilenet merge-bn``; the work is done by
:func:`caffe_common.merge_bn.merge_bn`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from caffe_common.commands.merge_bn import DESCRIPTION, add_arguments, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the merge-bn options and run it; returns the exit status."""
    parser = argparse.ArgumentParser(prog="merge_bn.py", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
