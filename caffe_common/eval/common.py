"""Error type and problem bookkeeping shared by the evaluators.

Evaluators follow the project rule *skip and count where the job can go on*:
a malformed prediction line is reported as ``file:line: reason`` and skipped,
unless the run is strict, where the first problem raises
:class:`EvaluationError`. Nothing is dropped without a message. The
bookkeeping and the line readers are those of :mod:`caffe_common.textio`
(one implementation for every reader of the toolkit); only the error type is
the evaluators' own.
"""
from __future__ import annotations

from pathlib import Path

from .. import textio
from ..textio import parse_numbers  # noqa: F401  (re-exported for the evaluators)


class EvaluationError(ValueError):
    """Input an evaluator cannot use; the message names the file (and line)."""


class ProblemLog(textio.ProblemLog):
    """:class:`caffe_common.textio.ProblemLog` whose strict mode raises :class:`EvaluationError`.

    Notes (e.g. a ground-truth image without a prediction file, which the
    official protocols count as "no detections") never raise.
    """

    error = EvaluationError


def read_text_lines(path: str | Path, what: str) -> list[str]:
    """Lines of a text file; a missing file raises :class:`EvaluationError` naming ``what``."""
    return textio.read_text_lines(path, what, missing=EvaluationError)
