"""``ssd-mobilenet detect``: objects in images with any Caffe SSD deploy model, as JSON lines or drawn
images (a thin CLI over :mod:`ssd_mobilenet.detect` and :mod:`ssd_mobilenet.detect_io`). The SSD path
of ``scripts/demo.py`` is :func:`demo_main`."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence

from caffe_common.batch import add_json_options
from caffe_common.cli import count, number

DESCRIPTION = (
    "Detect objects with a Caffe SSD deploy model (a DetectionOutput layer), on pycaffe or OpenCV DNN with the "
    "same preprocessing: the image is resized to the net input and fed as (pixel - mean) * scale, BGR unless "
    "--swap-rb. The defaults are MobileNet-SSD's (mean 127.5, scale 0.007843). Boxes are pixels of the original "
    "image, [x1, y1, x2, y2] clipped to [0, width] x [0, height]. Without --json/--draw, JSON lines go to stdout. "
    "The model is checked before any image is read (it must have a DetectionOutput layer, one 3-channel input, "
    "heads that fit its prior boxes, weights that fit the prototxt): exit status 1 with a message naming the file "
    "and layer. Unusable options or outputs: exit status 2 before any work. An image that fails for any reason is "
    "reported by name and skipped; the exit status is then 2. Ctrl-C: 130, finished images kept."
)


def _finite(text: str) -> float:
    """argparse type: any finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def _input_size(largest: int) -> Callable[[str], int | tuple[int, int]]:
    """argparse type: ``N`` (a square side) or ``WxH``, whole pixels in ``[1, largest]``."""
    side = count(1, largest)

    def parse(text: str) -> int | tuple[int, int]:
        parts = text.lower().split("x")
        if len(parts) == 1:
            return side(parts[0])
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected N or WIDTHxHEIGHT, got {text}")
        return side(parts[0]), side(parts[1])

    return parse


def add_arguments(p: argparse.ArgumentParser, demo: bool = False) -> None:
    """The options of ``ssd-mobilenet detect`` (``demo``: drawings go to output/demo by default, also as --out;
    no progress bar)."""
    from ssd_mobilenet.detect import DEFAULT_CONF, MAX_INPUT_SIDE, MODEL_ZOO

    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file, directory (searched recursively) or @list.txt (one path per line, relative "
                   "to the list; an image given twice runs once)")
    model = p.add_argument_group("model")
    model.add_argument("--model", metavar="DEPLOY.prototxt", help="SSD deploy prototxt (e.g. MobileNetSSD_deploy.prototxt)")
    model.add_argument("--weights", metavar="W.caffemodel", help="its trained weights")
    zoo = ", ".join(f"{name}: {entry.about}, mean {' '.join(f'{v:g}' for v in entry.mean)}, scale {entry.scale:g}, "
                    f"classes {', '.join(entry.names.values())}" for name, entry in MODEL_ZOO.items())
    model.add_argument("--model-zoo", choices=sorted(MODEL_ZOO), metavar="NAME",
                       help=f"instead of --model/--weights, a model with real weights and its own preprocessing "
                       f"defaults ({zoo})")
    model.add_argument("--mean", type=_finite, nargs=3, metavar=("B", "G", "R"),
                       help="mean to subtract per channel, in the net's channel order (R G B with --swap-rb) "
                       "(default: 127.5 127.5 127.5)")
    model.add_argument("--scale", type=number(0, low_open=True), metavar="S",
                       help="factor applied after the mean (default: 0.007843)")
    model.add_argument("--size", type=_input_size(MAX_INPUT_SIDE), metavar="N|WxH",
                       help="net input in pixels: a side (300) or WIDTHxHEIGHT (480x360), each at most "
                       f"{MAX_INPUT_SIDE} (default: the prototxt's input, 300x300 for MobileNet-SSD and res10)")
    model.add_argument("--swap-rb", action="store_true", help="give the net RGB instead of BGR (models trained on RGB)")
    model.add_argument("--backend", choices=("caffe", "opencv"), default="caffe",
                       help="inference engine over the same files and input blob (default: caffe)")
    model.add_argument("--labels", metavar="FILE",
                       help="class names: an SSD labelmap.prototxt, or one name per line (the object classes, or "
                       "all classes background first); default: the class numbers")
    model.add_argument("--conf", type=number(0, 1), default=DEFAULT_CONF, metavar="T",
                       help="lowest score kept, in [0, 1] (default: %(default)g; the net's own DetectionOutput "
                       "confidence_threshold applies first)")
    out = p.add_argument_group("outputs")
    add_json_options(out, "{image, width, height, detections: [{label, name, score, box}]}")
    if demo:
        out.add_argument("--draw", "--out", metavar="DIR", default="output/demo",
                         help="folder for the drawn images (default: %(default)s)")
    else:
        out.add_argument("--draw", metavar="DIR",
                         help="save images with boxes, class names and scores drawn, as DIR/<path below the input "
                         "folder> (name clashes get -2, -3, ...; files of an earlier run are replaced)")
    if not demo:  # the demo prints a line per image instead
        out.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet detect``."""
    p = subparsers.add_parser("detect", help="detect objects with an SSD deploy model (caffe or opencv backend)",
                              description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def _model_settings(args: argparse.Namespace) -> dict:
    """Files, names and preprocessing from the options (a ``--model-zoo`` entry's defaults where not
    given); ValueError naming the option when they do not fit together."""
    from ssd_mobilenet.detect import MOBILENET_MEAN, MOBILENET_SCALE, MODEL_ZOO, zoo_files

    if args.model_zoo and (args.model or args.weights):
        raise ValueError("--model-zoo replaces --model and --weights; give one or the other")
    if not args.model_zoo and not (args.model and args.weights):
        raise ValueError("give --model DEPLOY.prototxt and --weights W.caffemodel (or --model-zoo NAME)")
    mean, scale, names = MOBILENET_MEAN, MOBILENET_SCALE, None
    if args.model_zoo:
        entry = MODEL_ZOO[args.model_zoo]
        mean, scale, names = entry.mean, entry.scale, entry.names
    return {"mean": args.mean if args.mean is not None else mean, "scale": args.scale if args.scale is not None else scale,
            "names": names, "size": args.size, "zoo": (lambda: zoo_files(args.model_zoo)) if args.model_zoo else None}


#: Called after each image (see :data:`ssd_mobilenet.detect_io.DetectionReport`).
Report = Callable[..., None]


def run(args: argparse.Namespace, report: Report | None = None) -> int:
    """Check options and outputs, load and check the model, detect; exit status as in :data:`DESCRIPTION`."""
    from caffe_common.assets import AssetError
    from caffe_common.batch import (OutputError, check_json_output, check_output_dir, finish_batch_command,
                                    json_destination)
    from caffe_common.model_files import CaffeModelError

    from ..detect import load_detector
    from ..detect_io import run_detection

    try:
        settings = _model_settings(args)
        json_out = json_destination(args.json, bool(args.draw) or report is not None, args.resume)
        if json_out not in (None, "-"):
            check_json_output(json_out, args.resume, args.overwrite)
        if args.draw:
            check_output_dir(args.draw, "--draw")
    except (OutputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model, weights = settings["zoo"]() if settings["zoo"] else (args.model, args.weights)
        detector = load_detector(model, weights, labels=args.labels, names=settings["names"], mean=settings["mean"],
                                 scale=settings["scale"], size=settings["size"], backend=args.backend,
                                 swap_rb=args.swap_rb, conf=args.conf)
    except (CaffeModelError, AssetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return finish_batch_command(lambda: run_detection(
        detector, args.inputs, json_out=json_out, draw_out=args.draw, resume=args.resume, overwrite=args.overwrite,
        progress=not getattr(args, "no_progress", True), report=report), json_out, "detections", args.resume)


DEMO_DESCRIPTION = (
    "MobileNet-SSD demo, the SSD path of scripts/demo.py (chosen by --model or --model-zoo): draw the detections "
    "of a Caffe SSD deploy model on images into --draw (default output/demo) and print them. The options are "
    "those of `ssd-mobilenet detect` (MobileNet-SSD's preprocessing by default; --model-zoo res10 for a real face "
    "detector). An image that fails is reported and skipped (exit status 2); an unusable model stops the demo "
    "before any work (exit status 1)."
)


def demo_main(argv: Sequence[str], prog: str = "demo.py", report: Report | None = None) -> int:
    """``scripts/demo.py --model ...``: :func:`run` with drawings by default and ``report`` per image."""
    from caffe_common.env import set_caffe_verbosity

    parser = argparse.ArgumentParser(prog=prog, description=DEMO_DESCRIPTION)
    add_arguments(parser, demo=True)
    args = parser.parse_args(list(argv))
    set_caffe_verbosity(False)
    return run(args, report=report)
