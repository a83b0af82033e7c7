"""The command-line framework of both CLIs: argparse subcommands discovered from ``commands``
packages (each module there has ``register(subparsers)`` and sets ``func(args) -> int``).

The shared subcommands (``doctor``, ``merge-bn``) live in :mod:`caffe_common.commands` and are
registered into both ``mtcnn-caffe`` and ``ssd-mobilenet``.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType
from typing import Sequence


def _command_modules(package: ModuleType) -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


def build_parser(prog: str, description: str, *packages: ModuleType) -> argparse.ArgumentParser:
    """A parser whose subcommands are registered by the modules of ``packages`` (in name order)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--verbose", action="store_true", help="show Caffe's own log (quiet by default)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [m for package in packages for m in _command_modules(package)]
    for module in sorted(modules, key=lambda m: m.__name__.rsplit(".", 1)[1]):
        module.register(subparsers)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and call the chosen command's ``func(args) -> int``."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from .env import set_caffe_verbosity

    set_caffe_verbosity(args.verbose)
    return int(args.func(args) or 0)
