"""Command-line pieces shared by the ``eval`` subcommands of both CLIs: output options, checks of
the path options before any work, and the report/exit-status convention.

Exit status: 0 = evaluated, every input line used; 2 = refused (nothing written: a missing or
unusable input or output path, an empty ground truth or prediction set, or any bad line with
``--strict``) or evaluated but INCOMPLETE (some input lines were skipped; the figures are written
with ``"complete": false`` and the printed summary starts with ``INCOMPLETE``); 130 = interrupted
(nothing half-written: every output is atomic).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..cli import number

if TYPE_CHECKING:
    from .reports import Report

DEFAULT_OUT = Path("eval_results")
EXIT_REFUSED_OR_INCOMPLETE = 2
EXIT_INTERRUPTED = 130
INCOMPLETE = "INCOMPLETE"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--strict``, shared with ``ssd-mobilenet eval``."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the JSON summary and the PNG plot (default: {DEFAULT_OUT})")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad input line instead of skipping and reporting it "
                             "(a run that skipped lines prints INCOMPLETE and exits with status 2)")


#: argparse type: a number in [0, 1].
fraction = number(0, 1)


def print_usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


class OptionError(ValueError):
    """A command-line path that cannot be used; the message starts with the option's name."""


def check_input_path(option: str, path: Path | None, kind: str) -> None:
    """``kind`` ``"file"``, ``"dir"`` or ``"any"``: raise :class:`OptionError` naming ``option`` when
    ``path`` (if given) does not exist or is of the wrong kind."""
    if path is None:
        return
    if not path.exists():
        raise OptionError(f"{option} {path}: not found")
    if kind == "file" and not path.is_file():
        raise OptionError(f"{option} {path}: is a folder, expected a file")
    if kind == "dir" and not path.is_dir():
        raise OptionError(f"{option} {path}: is a file, expected a folder")


def check_output_dir(option: str, path: Path, file_names: Iterable[str]) -> None:
    """Refuse, before any work, an output folder that cannot be created or written, or where one of
    ``file_names`` is taken by a folder. Creates nothing."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"lies below the file {existing}"
        raise OptionError(f"{option} {path}: {what}; give a folder")
    import os

    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{option} {path}: cannot write in {existing} (permission denied)")
    for name in file_names:
        if (path / name).is_dir():
            raise OptionError(f"{option} {path}: {path / name} is a folder; cannot write the {name} output there")


def report_and_exit(make_report: Callable[[], "Report"], checks: Callable[[], None] = lambda: None) -> int:
    """Run ``checks`` (option checks, before any work), then a report function; print its summary
    line (stdout), problems and files (stderr). Exit status: see the module docstring."""
    from ..textio import AnnotationError
    from .common import EvaluationError

    try:
        checks()
        report = make_report()
    except (EvaluationError, AnnotationError, OptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED_OR_INCOMPLETE
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_REFUSED_OR_INCOMPLETE
    except KeyboardInterrupt:
        print("interrupted (no output written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    for line in report.problems.summary_lines():
        print(line, file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in report.files)}", file=sys.stderr)
    if report.problems.problems:
        print(f"{INCOMPLETE}: {len(report.problems.problems)} bad input item(s) skipped (all listed in "
              f"{report.files[0]}); the figures leave them out", file=sys.stderr)
        print(f"{INCOMPLETE} {report.line}")
        return EXIT_REFUSED_OR_INCOMPLETE
    print(report.line)
    return 0
