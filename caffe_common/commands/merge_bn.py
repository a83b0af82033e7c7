"""``merge-bn``: fold BatchNorm + Scale into the preceding convolutions, verified (see :mod:`caffe_common.merge_bn`)."""
from __future__ import annotations

import argparse
import math
import sys

from ..cli import count, number

DESCRIPTION = (
    "Fold BatchNorm (+ Scale), or a Scale alone, into the preceding Convolution / Deconvolution / "
    "InnerProduct of a deploy model, write the folded prototxt + caffemodel, and verify that both nets give "
    "the same outputs. "
    "Exit status: 0 written and verified, 1 verification above tolerance (nothing written), 2 input refused."
)


def _mean(text: str) -> list[float]:
    """``--image-mean``: one value for all channels or three (B, G, R), each finite."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected one number or three (B,G,R) separated by commas, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The merge-bn options (shared by ``mtcnn-caffe``, ``ssd-mobilenet`` and ``scripts/merge_bn.py``)."""
    from ..merge_bn import DEFAULT_IMAGE_SCALE, DEFAULT_TOLERANCE

    p.add_argument("--model", required=True, help="deploy prototxt (with BatchNorm/Scale layers)")
    p.add_argument("--weights", required=True, help="its .caffemodel")
    p.add_argument("--out-model", help="folded prototxt (default: <model stem>_nobn.prototxt beside the model)")
    p.add_argument("--out-weights",
                   help="folded caffemodel (default: <weights stem>_nobn.caffemodel beside the weights)")
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="also verify on this photo (repeatable); resized to the net input, (pixel - mean) * scale")
    p.add_argument("--image-mean", type=_mean, default=[127.5], metavar="M[,M,M]",
                   help="per-channel (BGR) mean subtracted from --image pixels (default 127.5)")
    p.add_argument("--image-scale", type=number(-1e6, 1e6), default=DEFAULT_IMAGE_SCALE,
                   help=f"factor applied after the mean (default {DEFAULT_IMAGE_SCALE})")
    p.add_argument("--tolerance", type=number(0, 1), default=DEFAULT_TOLERANCE,
                   help=f"largest allowed max|before - after| / max|before| per blob (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--runs", type=count(0, 1000), default=5,
                   help="timed forwards of each net for the speed ratio (default 5; 0: no timing)")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="list every fold and show Caffe's own log")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge-bn`` subcommand."""
    p = subparsers.add_parser("merge-bn", help="fold BatchNorm + Scale into convolutions (verified)",
                              description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fold, verify, print the report; exit status 0 written, 1 above tolerance, 2 refused."""
    from ..env import set_caffe_verbosity
    from ..merge_bn import MergeBNError, format_report, merge_bn

    verbose = bool(getattr(args, "verbose", False))
    set_caffe_verbosity(verbose)
    try:
        mean = args.image_mean
        result = merge_bn(args.model, args.weights, args.out_model, args.out_weights, images=args.image,
                          tolerance=args.tolerance, timing_runs=args.runs, image_mean=mean,
                          image_scale=args.image_scale, progress=sys.stderr.isatty())
    except ValueError as exc:  # MergeBNError (a Caffe failure in the probe included)
        prefix = "" if isinstance(exc, MergeBNError) else "bad argument: "
        print(f"merge-bn: error: {prefix}{exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the disk filled up while writing: nothing was moved into place
        print(f"merge-bn: error: cannot write the output: {exc}", file=sys.stderr)
        return 2
    print(format_report(result, verbose=verbose))
    return 0 if result.written else 1
