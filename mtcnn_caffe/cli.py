"""``mtcnn-caffe`` command line: argparse subcommands discovered from
:mod:`mtcnn_caffe.commands` (each module there has ``register(subparsers)``)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType
from typing import Sequence


def _command_modules(package: ModuleType) -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


def build_parser(prog: str, description: str, package: ModuleType) -> argparse.ArgumentParser:
    """A parser whose subcommands are registered by the modules of ``package``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--verbose", action="store_true", help="show Caffe's own log (quiet by default)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules(package):
        module.register(subparsers)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and call the chosen command's ``func(args) -> int``."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from .caffe_env import set_caffe_verbosity

    set_caffe_verbosity(args.verbose)
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    from . import commands

    parser = build_parser(
        "mtcnn-caffe",
        "MTCNN face detection + 5-point alignment on real Caffe: detect, generate data, train, evaluate, export.",
        commands,
    )
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
