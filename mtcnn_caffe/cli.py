"""``mtcnn-caffe`` command line: the face subcommands of :mod:`mtcnn_caffe.commands` plus the
shared ones of :mod:`caffe_common.commands` (framework: :mod:`caffe_common.cli`)."""
from __future__ import annotations

import sys
from typing import Sequence

from caffe_common.cli import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    import caffe_common.commands

    from . import commands

    parser = build_parser(
        "mtcnn-caffe",
        "MTCNN face detection + 5-point alignment on real Caffe: detect, generate data, evaluate, export.",
        commands, caffe_common.commands,
    )
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
