"""``ssd-mobilenet gen-model``: MobileNet-SSD train / test / deploy nets and solvers for N classes
(a thin CLI over :mod:`ssd_mobilenet.model`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = (
    "Write MobileNetSSD_train.prototxt, MobileNetSSD_test.prototxt, MobileNetSSD_deploy.prototxt, "
    "solver_train.prototxt and solver_test.prototxt into --out, built with Caffe's NetSpec. With "
    "--classes 21 and no other option the nets equal the reference MobileNet-SSD (VOC). For any other "
    "class count the six *_mbox_conf layers are named *_mbox_conf_new, so that fine-tuning from 21-class "
    "weights initialises them afresh. The depthwise convolutions use the native ConvolutionDepthwise layer "
    "when the Caffe in use has it (--depthwise auto, the default; much faster on the CPU) and grouped "
    "Convolution otherwise or with --depthwise group (for OpenCV DNN or another Caffe; the weights are the "
    "same, and `ssd-mobilenet convert-depthwise` rewrites a net either way). Exit status: 0 written, "
    "2 refused (every option is checked before the first file is written)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet gen-model``."""
    from caffe_common.depthwise import CHOICES
    from ssd_mobilenet.model import MAX_SIZE, MIN_SIZE, WIDTHS

    p = subparsers.add_parser("gen-model", help="generate MobileNet-SSD train/test/deploy nets and solvers",
                              description=DESCRIPTION)
    p.add_argument("--classes", required=True, type=int, metavar="N",
                   help="number of classes including the background (label 0); VOC: 21")
    p.add_argument("--width", type=float, default=1.0, choices=WIDTHS,
                   help="MobileNet depth multiplier: every channel count c becomes max(8, int(c * width)) "
                        "(default 1.0)")
    p.add_argument("--relu6", action="store_true", help="ReLU6 activations (TensorFlow's MobileNet) instead of ReLU")
    p.add_argument("--tf-anchors", action="store_true",
                   help="TensorFlow's first conv11 anchor (0.1, 1.0) instead of (0.2, 1.0)")
    p.add_argument("--train-lmdb", type=Path, metavar="PATH",
                   help="training AnnotatedDatum LMDB (checked; default: the seed's relative trainval_lmdb/)")
    p.add_argument("--test-lmdb", type=Path, metavar="PATH",
                   help="test LMDB (checked; its record count sets test_iter; default: the seed's relative test_lmdb)")
    p.add_argument("--labelmap", type=Path, metavar="FILE",
                   help="SSD labelmap.prototxt, checked against --classes (default: the seed's relative "
                        "labelmap.prototxt, checked if the current folder has one)")
    p.add_argument("--size", type=int, default=300,
                   help=f"input side in pixels, {MIN_SIZE} to {MAX_SIZE}; prior sizes scale with it (default 300)")
    p.add_argument("--depthwise", choices=CHOICES, default="auto",
                   help="depthwise convolutions as the native ConvolutionDepthwise layer (native), as grouped "
                        "Convolution (group), or native when this Caffe has the layer (auto, the default)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options, write the five files, print what was written; 2 when refused."""
    from caffe_common.depthwise import has_native_depthwise, resolve_depthwise
    from ssd_mobilenet.labelmap import LabelMapError
    from ssd_mobilenet.model import ModelConfigError, resolve_config, write_model

    try:
        config, notes = resolve_config(args.classes, train_lmdb=args.train_lmdb, test_lmdb=args.test_lmdb,
                                       labelmap=args.labelmap, width=args.width, relu6=args.relu6,
                                       tf_anchors=args.tf_anchors, size=args.size,
                                       depthwise_type=resolve_depthwise(args.depthwise))
        result = write_model(config, args.out, notes)
    except (ModelConfigError, LabelMapError) as exc:
        print(f"gen-model: error: {exc}", file=sys.stderr)
        return 2
    if config.depthwise_type and not has_native_depthwise():
        result.notes.append(f"this Caffe has no {config.depthwise_type} layer: the nets load only in a Caffe "
                            "that has it (this project's build); use --depthwise group for others")
    renamed = "" if config.num_classes == 21 else ", conf layers *_mbox_conf_new"
    depthwise = config.depthwise_type or "grouped Convolution"
    print(f"MobileNet-SSD: {config.num_classes} classes, width {config.width}, {config.size}x{config.size}, "
          f"feature maps {'/'.join(map(str, result.feature_maps))}, {result.priors} priors{renamed}, "
          f"depthwise layers {depthwise}")
    for note in result.notes:
        print(f"note: {note}")
    for path in result.files.values():
        print(f"wrote {path}")
    return 0
