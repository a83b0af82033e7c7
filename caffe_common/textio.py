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
    """Lines of a UTF-8 text file (a leading BOM dropped, undecodable bytes replaced).

    A missing path, or a folder where a file is expected, raises ``missing`` naming ``what`` and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise missing(f"{what} is a folder, not a file: {path}")
    if not path.is_file():
        raise missing(f"{what} not found: {path}")
    return path.read_text(encoding="utf-8-sig", errors="replace").splitlines()


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


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def starts_block(lines: list[str], i: int) -> bool:
    """Whether ``lines[i]`` looks like an image-name line followed by a count line: a line whose first
    token is not a number, then a line holding one integer (how :func:`read_counted_blocks` resynchronises)."""
    if i + 1 >= len(lines):
        return False
    tokens, count = lines[i].split(), lines[i + 1].split()
    return bool(tokens) and not _is_number(tokens[0]) and len(count) == 1 and count[0].lstrip("+-").isdecimal()


def _next_block(lines: list[str], i: int, names_too: bool = False) -> int:
    """Index of the first line at or after ``i`` that starts a block (``len(lines)`` if none);
    ``names_too``: also stop at a line that is one non-numeric token (a name with a bad count line)."""
    while i < len(lines) and not starts_block(lines, i):
        tokens = lines[i].split()
        if names_too and len(tokens) == 1 and not _is_number(tokens[0]):
            break
        i += 1
    return i


def _row_lines(lines: list[str], i: int, count: int) -> tuple[list[int], int]:
    """Indices of the up to ``count`` non-blank row lines from ``i`` on, stopping early where a new
    block starts, and the index after them."""
    rows: list[int] = []
    while len(rows) < count and i < len(lines) and not starts_block(lines, i):
        if lines[i].strip():
            rows.append(i)
        i += 1
    return rows, i


def read_counted_blocks(path: str | Path, lines: list[str], problems: ProblemLog,
                        parse_row: Callable[[list[str]], T], *, dummy_row_when_empty: bool = False,
                        count_label: str = "count", rows_label: str = "lines") -> Iterator[tuple[str, list[T]]]:
    """Yield ``(name, rows)`` of the ``name line / count line / count rows`` blocks of ``lines``.

    The layout of WIDER FACE ground truth and of FDDB folds and detections. Blank lines are
    skipped. ``parse_row(tokens)`` raises ``ValueError`` for a bad row, which is reported as
    ``path:line: image 'name': reason`` and left out. ``dummy_row_when_empty``: a count of 0
    is followed by one (ignored) row, as in the WIDER FACE ground-truth files.

    A count that does not match the rows is ONE problem for its block, never a cascade: the
    reader resynchronises on the next line that starts a block (a name line that is not a
    number, followed by a one-integer count line). Too few rows: the rows present are read.
    Too many: the block keeps its first ``count`` rows and the extra lines are skipped. An
    unparsable count skips its block. Every such block is reported, so callers can tell the
    result is incomplete. ``count_label``/``rows_label`` name the count line and the rows.
    """
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        name_line = i + 1
        if not starts_block(lines, i):
            resume = _next_block(lines, i + 1)
            count_text = lines[i + 1].strip() if i + 1 < len(lines) else ""
            reason = (f"{count_label} {count_text!r} of image {name!r} is not a non-negative integer"
                      if i + 1 < len(lines) else f"image {name!r} has no {count_label} line")
            skipped = f"; lines {name_line}-{resume} skipped" if resume > name_line else ""
            problems.report_line(path, min(name_line + 1, len(lines)), reason + skipped)
            i = resume
            continue
        count = int(lines[i + 1].strip())
        if count < 0:
            resume = _next_block(lines, i + 2)
            problems.report_line(path, name_line + 1, f"{count_label} {count} of image {name!r} is negative; "
                                                      f"lines {name_line}-{resume} skipped")
            i = resume
            continue
        wanted = 1 if count == 0 and dummy_row_when_empty else count
        row_indices, i = _row_lines(lines, i + 2, wanted)
        if len(row_indices) < wanted and count > 0:
            where = "the file ends" if i >= len(lines) else f"the next image starts at line {i + 1}"
            problems.report_line(path, name_line + 1, f"image {name!r}: {count_label} says {count} {rows_label} "
                                                      f"but {where} after {len(row_indices)}; read those")
        extra_end = _next_block(lines, i, names_too=True)
        extra = [k for k in range(i, extra_end) if lines[k].strip()]
        if extra:
            problems.report_line(path, name_line + 1, f"image {name!r}: {count_label} says {count} {rows_label} but "
                                                      f"{len(extra)} more line(s) follow (lines {extra[0] + 1}-"
                                                      f"{extra[-1] + 1}, skipped)")
        i = extra_end
        rows = []
        for k in (row_indices if count > 0 else []):
            try:
                rows.append(parse_row(lines[k].split()))
            except ValueError as exc:
                problems.report_line(path, k + 1, f"image {name!r}: {exc}")
        yield name, rows
