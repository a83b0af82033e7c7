"""The command-line framework of both CLIs: argparse subcommands discovered from ``commands``
packages (each module there has ``register(subparsers)`` and sets ``func(args) -> int``).

The shared subcommands (``doctor``, ``merge-bn``) live in :mod:`caffe_common.commands` and are
registered into both ``mtcnn-caffe`` and ``ssd-mobilenet``.
"""
from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
from types import ModuleType
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


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


# --------------------------------------------------------------------------- checked option types
# argparse names the option in the error ("argument --limit: expected ..."), so the messages say what is wrong.
def count(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in ``[low, high]`` (no upper end for ``None``)."""
    where = f"in [{low}, {high}]" if high is not None else f">= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {where}, got {text}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number {where}, got {text}")
        return value

    return parse


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False
           ) -> Callable[[str], float]:
    """argparse type: a finite number between ``low`` and ``high`` (ends excluded where ``*_open``)."""
    where = (f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}" if high is not None
             else f"{'>' if low_open else '>='} {low:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (not math.isfinite(value) or value < low or (low_open and value == low)
                or (high is not None and (value > high or (high_open and value == high)))):
            raise argparse.ArgumentTypeError(f"expected a number {where}, got {text}")
        return value

    return parse


def run_training(start: Callable[[], T], refused: tuple[type[Exception], ...] = ()) -> tuple[T | None, int]:
    """Call ``start`` (a training run) and map its end to the exit status every train command documents:
    ``(result, 0)`` done; ``(None, 130)`` interrupted (resumable); ``(None, 1)`` diverged (NaN loss);
    ``(None, 2)`` input refused (:class:`TrainingError` or one of ``refused``). The message goes to stderr."""
    import sys

    from .solver import TrainingDiverged, TrainingError, TrainingInterrupted

    try:
        return start(), 0
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return None, 130
    except KeyboardInterrupt:  # before the training loop (data preparation): nothing trained yet
        print("interrupted: before the first iteration; run the command again to start over", file=sys.stderr)
        return None, 130
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    except (TrainingError, *refused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
