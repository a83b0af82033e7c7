"""``ssd-mobilenet`` command line (subcommands discovered from :mod:`ssd_mobilenet.commands`)."""
from __future__ import annotations

import sys
from typing import Sequence

from mtcnn_caffe.cli import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    from . import commands

    parser = build_parser(
        "ssd-mobilenet",
        "MobileNet-SSD object detection on real Caffe: generate networks, train, evaluate, export.",
        commands,
    )
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
