"""Command-line pieces shared by the ``eval`` subcommands of both CLIs: output options and the
report/exit-status convention."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .reports import Report

DEFAULT_OUT = Path("eval_results")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--strict``, shared with ``ssd-mobilenet eval``."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the JSON summary and the PNG plot (default: {DEFAULT_OUT})")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad input line instead of skipping and reporting it")


def print_usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def report_and_exit(make_report: Callable[[], "Report"]) -> int:
    """Run a report function; print its summary line (stdout), problems and files (stderr).

    Exit status 0 when the evaluation ran (skipped input lines are listed, not fatal), 2 when an
    input was refused (missing file, unreadable ground truth, or any bad line with ``--strict``).
    """
    from ..textio import AnnotationError
    from .common import EvaluationError

    try:
        report = make_report()
    except (EvaluationError, AnnotationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.problems.summary_lines():
        print(line, file=sys.stderr)
    if report.problems.problems:
        print(f"{len(report.problems.problems)} bad input item(s) skipped (see the JSON summary)", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in report.files)}", file=sys.stderr)
    print(report.line)
    return 0
