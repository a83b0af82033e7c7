"""Reading text and XML inputs with skip-and-count error handling, shared by every reader.

A line that does not parse is reported as ``file:line: reason`` through a :class:`ProblemLog`
and skipped (lenient), or raised as the log's error type (strict). Readers of particular formats
(WIDER FACE, FDDB, 5-point lists, VOC XML) build on :func:`read_counted_blocks`,
:func:`parse_numbers`, :func:`read_text_lines` and :func:`read_xml_root`.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Generic, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


class AnnotationError(ValueError):
    """An annotation line that cannot be parsed (message starts with ``file:line:``)."""


@dataclass
class Parsed(Generic[T]):
    """Records read from a file plus the ``file:line: reason`` of every skipped line."""

    items: list[T] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class ProblemLog:
    """Skip-and-count bookkeeping shared by every reader: ``problems`` (skipped input, as
    ``file:line: reason``) and informational ``notes``.

    ``strict=True`` turns the first problem into an :attr:`error` (:class:`AnnotationError`
    here; the evaluators' subclass raises their own error type). Notes never raise.
    """

    strict: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: ClassVar[type[Exception]] = AnnotationError

    def report(self, message: str) -> None:
        """Record a skipped input (or raise it in strict mode)."""
        if self.strict:
            raise self.error(message)
        self.problems.append(message)

    def report_line(self, path: str | Path, line_no: int, reason: str) -> None:
        """:meth:`report` ``path:line_no: reason``."""
        self.report(f"{path}:{line_no}: {reason}")

    def note(self, message: str) -> None:
        """Record something the user should know that does not invalidate the run."""
        self.notes.append(message)

    def as_dict(self) -> dict:
        """``{"problems": [...], "notes": [...]}`` for a JSON summary."""
        return {"problems": list(self.problems), "notes": list(self.notes)}

    def summary_lines(self, limit: int = 10) -> list[str]:
        """Human-readable lines: the first ``limit`` problems and notes, then counts."""
        lines = []
        for kind, items in (("problem", self.problems), ("note", self.notes)):
            lines += [f"{kind}: {m}" for m in items[:limit]]
            if len(items) > limit:
                lines.append(f"... {len(items) - limit} more {kind}s (all listed in the JSON summary)")
        return lines


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


def float_array(tokens: list[str], count: int, what: str) -> np.ndarray:
    return np.array(parse_numbers(tokens, count, what), dtype=np.float64)


def read_text_lines(path: str | Path, what: str = "annotation file",
                    missing: type[Exception] = FileNotFoundError) -> list[str]:
    """Lines of a UTF-8 text file (undecodable bytes replaced); a missing file raises ``missing``
    with the message ``<what> not found: <path>``."""
    path = Path(path)
    if not path.is_file():
        raise missing(f"{what} not found: {path}")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def read_xml_root(path: str | Path, what: str = "annotation file", missing: type[Exception] = FileNotFoundError,
                  error: type[Exception] = AnnotationError) -> ET.Element:
    """Root element of an XML file; a missing file raises ``missing`` (``<what> not found: <path>``),
    a parse error ``error`` (``path:line: XML does not parse: ...``)."""
    path = Path(path)
    if not path.is_file():
        raise missing(f"{what} not found: {path}")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise error(f"{path}:{exc.position[0]}: XML does not parse: {exc}") from exc


def read_counted_blocks(path: str | Path, lines: list[str], problems: ProblemLog,
                        parse_row: Callable[[list[str]], T], *, dummy_row_when_empty: bool = False,
                        count_label: str = "count", rows_label: str = "lines") -> Iterator[tuple[str, list[T]]]:
    """Yield ``(name, rows)`` of the ``name line / count line / count rows`` blocks of ``lines``.

    The layout of WIDER FACE ground truth and of FDDB folds and detections.
    Blank name lines are skipped. ``parse_row(tokens)`` raises ``ValueError`` for a
    bad row, which is reported as ``path:line: image 'name': reason`` and left out;
    a bad count line skips that block. ``dummy_row_when_empty``: a count of 0 is
    still followed by one (ignored) row, as in the WIDER FACE ground-truth files.
    ``count_label``/``rows_label`` name the count line and the rows in messages.
    """
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        i += 1
        if not name:
            continue
        if i >= len(lines):
            problems.report_line(path, i, f"image {name!r} has no {count_label.replace(' ', '-')} line")
            return
        try:
            count = int(lines[i].strip())
            if count < 0:
                raise ValueError
        except ValueError:
            problems.report_line(path, i + 1, f"{count_label} {lines[i].strip()!r} of image {name!r} "
                                              "is not a non-negative integer")
            i += 1
            continue
        i += 1
        rows = []
        for _ in range(max(count, 1) if dummy_row_when_empty else count):
            if i >= len(lines):
                problems.report_line(path, i, f"image {name!r}: file ends before its {count} {rows_label}")
                break
            line_no, tokens = i + 1, lines[i].split()
            i += 1
            if count == 0:  # the dummy row
                continue
            try:
                rows.append(parse_row(tokens))
            except ValueError as exc:
                problems.report_line(path, line_no, f"image {name!r}: {exc}")
        yield name, rows
