"""Error type and problem bookkeeping shared by the evaluators.

Evaluators follow the project rule *skip and count where the job can go on*:
a malformed prediction line is reported as ``file:line: reason`` and skipped,
unless the run is strict, where the first problem raises
:class:`EvaluationError`. Nothing is dropped without a message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


class EvaluationError(ValueError):
    """Input an evaluator cannot use; the message names the file (and line)."""


@dataclass
class ProblemLog:
    """Collects skipped-input messages (``problems``) and informational ``notes``.

    ``strict=True`` turns the first problem into an :class:`EvaluationError`.
    Notes (e.g. a ground-truth image without a prediction file, which the
    official protocols count as "no detections") never raise.
    """

    strict: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self, message: str) -> None:
        """Record a skipped input (or raise it in strict mode)."""
        if self.strict:
            raise EvaluationError(message)
        self.problems.append(message)

    def note(self, message: str) -> None:
        """Record something the user should know that does not invalidate the run."""
        self.notes.append(message)

    def as_dict(self) -> dict:
        """``{"problems": [...], "notes": [...]}`` for the JSON summary."""
        return {"problems": list(self.problems), "notes": list(self.notes)}

    def summary_lines(self, limit: int = 10) -> list[str]:
        """Human-readable lines: the first ``limit`` problems and notes, then counts."""
        lines = []
        for kind, items in (("problem", self.problems), ("note", self.notes)):
            lines += [f"{kind}: {m}" for m in items[:limit]]
            if len(items) > limit:
                lines.append(f"... {len(items) - limit} more {kind}s (all listed in the JSON summary)")
        return lines


def read_text_lines(path: Path, what: str) -> list[str]:
    """Lines of a text file, with a clear error naming ``what`` when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{what} not found: {path}")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def parse_numbers(tokens: list[str], count: int, what: str) -> list[float]:
    """The first ``count`` tokens as finite floats, or ``ValueError`` saying why not."""
    if len(tokens) < count:
        raise ValueError(f"expected {count} numbers ({what}), found {len(tokens)}")
    try:
        values = [float(t) for t in tokens[:count]]
    except ValueError:
        raise ValueError(f"not a number in {what}: {' '.join(tokens[:count])!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite value (NaN or inf) in {what}: {' '.join(tokens[:count])!r}")
    return values
