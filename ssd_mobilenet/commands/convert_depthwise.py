"""``ssd-mobilenet convert-depthwise``: rewrite a prototxt's depthwise convolutions as the native layer or as
grouped Convolution (a thin CLI over :mod:`caffe_common.depthwise`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = (
    "Rewrite every depthwise convolution of a Caffe prototxt (train, test or deploy) as the native "
    "ConvolutionDepthwise layer of this project's Caffe (--to native: much faster on the CPU) or as grouped "
    "Convolution with group = channels (--to group: for OpenCV DNN and other Caffe builds). Nothing else "
    "changes, and the .caffemodel works with either file unchanged. Exit status: 0 written, 2 refused "
    "(nothing written)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet convert-depthwise``."""
    from caffe_common.depthwise import TARGETS

    p = subparsers.add_parser("convert-depthwise", help="depthwise convolutions: native layer <-> grouped Convolution",
                              description=DESCRIPTION)
    p.add_argument("--to", required=True, choices=TARGETS, help="native (ConvolutionDepthwise) or group (Convolution)")
    p.add_argument("--model", required=True, type=Path, metavar="IN.prototxt", help="the prototxt to convert")
    p.add_argument("--out", required=True, type=Path, metavar="OUT.prototxt",
                   help="where to write the converted prototxt (written atomically; not the input file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert and write, print what changed; 2 when refused."""
    from caffe_common.depthwise import DepthwiseConversionError, convert_file, has_native_depthwise
    from caffe_common.eval.cli import OptionError, check_input_path

    try:
        check_input_path("--model", args.model, "file")
        if args.out.is_dir():
            raise OptionError(f"--out {args.out}: is a folder; give a file path")
        if args.out.exists() and args.out.resolve() == args.model.resolve():
            raise OptionError(f"--out {args.out}: is the input file; choose another path")
        result = convert_file(args.model, args.out, args.to)
    except (OptionError, DepthwiseConversionError) as exc:
        print(f"convert-depthwise: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"convert-depthwise: error: cannot write --out {args.out}: {exc}", file=sys.stderr)
        return 2
    kind = "ConvolutionDepthwise" if args.to == "native" else "grouped Convolution"
    print(f"{args.model}: {len(result.converted)} depthwise layer(s) written as {kind}")
    if args.to == "native" and result.converted and not has_native_depthwise():
        print("note: this Caffe has no ConvolutionDepthwise layer: the converted net loads only in a Caffe that "
              "has it (this project's build)")
    print(f"wrote {args.out}")
    return 0
