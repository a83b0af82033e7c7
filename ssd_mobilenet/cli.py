"""``ssd-mobilenet`` command line: the SSD subcommands of :mod:`ssd_mobilenet.commands` plus the
shared ones of :mod:`caffe_common.commands`."""
from __future__ import annotations

import sys
from typing import Sequence

from caffe_common.cli import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    import caffe_common.commands

    from . import commands

    parser = build_parser(
        "ssd-mobilenet",
        "MobileNet-SSD object detection on real Caffe: generate networks, detect, evaluate, export (training: planned).",
        commands, caffe_common.commands,
    )
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
