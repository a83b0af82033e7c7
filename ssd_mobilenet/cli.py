"""``ssd-mobilenet`` command line: the SSD subcommands of :mod:`ssd_mobilenet.commands` plus the
shared ones of :mod:`caffe_common.commands`."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from caffe_common.cli import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    import caffe_common.commands

    from . import commands

    parser = build_parser(
        "ssd-mobilenet",
        "MobileNet-SSD on real Caffe: generate networks, train, detect objects, evaluate, export; the single-pass "
        "face + landmark network (train-faces, detect-faces).",
        commands, caffe_common.commands,
    )
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
