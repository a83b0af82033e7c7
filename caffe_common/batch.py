"""Running a detector over many images, shared by both detect commands: input expansion (files,
folders, ``@lists``), output checks made before any work, the JSON-lines output, and the run loop
(:func:`run_batch`) with its summary and exit status.

The JSON-lines output is appended and flushed line by line, so an interrupted run keeps every image
it finished; ``resume=True`` continues such a file (a partial last line from a crash is cut off) and
skips the images already in it. The loop writes an image's record only after the per-image callable
returned, i.e. after all of that image's other outputs were written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable, Iterable, Iterator, Sequence, TextIO

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jp2"}
#: Extensions drawn images keep; the others are saved as ``.png``.
DRAWING_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
#: The record field naming the input image (what ``resume`` matches on).
IMAGE_KEY = "image"


class OutputError(ValueError):
    """An output path that cannot be used (message: the option, the path, the reason and what to do)."""


@dataclass
class InputImage:
    """One image to process.

    ``out_name``: the relative file name of its derived outputs (drawings), unique within a run, never
    absolute nor leaving the output folder. ``origin``: ``list.txt:LINE`` for an ``@list`` entry.
    """

    path: Path
    out_name: str
    origin: str = ""


@dataclass
class RunSummary:
    """What :func:`run_batch` did: images processed, objects found, images skipped as already done
    (``resume``), and the messages of the inputs that failed."""

    images: int = 0
    found: int = 0
    resumed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 when every input was processed, 2 when any failed (the run still went on)."""
        return 2 if self.failures else 0


# --------------------------------------------------------------------------- inputs
def expand_inputs(specs: Iterable[str], failures: list[str]) -> list[InputImage]:
    """Image files, directories (recursive, image extensions only) and ``@list.txt`` files (UTF-8, BOM
    allowed; one path per line, relative paths taken from the list's folder, ``#`` comments).

    An image given twice (same resolved path) is kept once; output names are made unique
    (``x.jpg``, ``x-2.jpg``, ...). Problems are appended to ``failures``.
    """
    images: list[InputImage] = []
    for spec in specs:
        if spec.startswith("@"):
            images.extend(_read_list(Path(spec[1:]), failures))
            continue
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                failures.append(f"{path}: directory holds no images")
            images.extend(InputImage(p, str(p.relative_to(path))) for p in found)
        else:
            images.append(InputImage(path, path.name))
    return _with_unique_names(_without_repeats(images))


def _read_list(list_path: Path, failures: list[str]) -> list[InputImage]:
    try:
        lines = list_path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: drops a BOM
    except OSError as exc:
        failures.append(f"{list_path}: cannot read image list ({exc.strerror or exc})")
        return []
    except UnicodeDecodeError as exc:
        failures.append(f"{list_path}: cannot read image list (not UTF-8 text: {exc.reason} at byte {exc.start})")
        return []
    images = []
    entries = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        failures.append(f"{list_path}: the image list names no image (empty, or only comments)")
        return []
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        entry = PurePath(name)
        path = Path(name) if entry.is_absolute() else list_path.parent / name
        inside = not entry.is_absolute() and ".." not in entry.parts  # else only its file name names outputs
        images.append(InputImage(path, name if inside else entry.name, origin=f"{list_path}:{number}"))
    return images


def _without_repeats(images: list[InputImage]) -> list[InputImage]:
    """The first occurrence of each image file (by resolved path)."""
    seen: set[Path] = set()
    kept = []
    for item in images:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _with_unique_names(images: list[InputImage]) -> list[InputImage]:
    """Output names with a drawable extension (``.png`` otherwise), ``-2``, ``-3``, ... added on a clash."""
    taken: set[str] = set()
    for item in images:
        name = PurePath(item.out_name)
        if name.suffix.lower() not in DRAWING_EXTENSIONS:
            name = name.with_suffix(".png")
        candidate, count = name, 1
        while str(candidate) in taken:
            count += 1
            candidate = name.with_name(f"{name.stem}-{count}{name.suffix}")
        taken.add(str(candidate))
        item.out_name = str(candidate)
    return images


# --------------------------------------------------------------------------- output checks
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, option: str, folder: bool = False) -> None:
    """The file (or ``folder``) ``path`` can be made: its nearest existing ancestor is a folder we can
    write in (tried, so that a read-only file system fails too, even for root)."""
    ancestor = _nearest_existing(path if folder else path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{option} {path}: {ancestor} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from None


def check_output_dir(path: str | Path, option: str) -> None:
    """Raise :class:`OutputError` unless ``path`` is or can become a writable folder (nothing is created)."""
    _check_creatable(Path(path), option, folder=True)


def check_json_output(path: str | Path, resume: bool = False, overwrite: bool = False,
                      option: str = "--json") -> set[str]:
    """Check a JSON-lines output file before any work and return the images already in it.

    Without ``resume`` or ``overwrite`` an existing non-empty file is refused (nothing is ever
    lost); with ``resume`` its records are read (:func:`read_done_images`); with ``overwrite`` it
    will be replaced. Raises :class:`OutputError`.
    """
    path = Path(path)
    if resume and overwrite:
        raise OutputError("--resume and --overwrite exclude each other")
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; name a file")
    _check_creatable(path, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path}: not writable")
    if not path.exists() or path.stat().st_size == 0 or overwrite:
        return set()
    if not resume:
        raise OutputError(f"{option} {path}: exists; pass --resume to continue it, --overwrite to start over, "
                          "or choose a new name")
    return read_done_images(path, option)


def read_done_images(path: str | Path, option: str = "--json") -> set[str]:
    """The ``image`` fields of the records of a JSON-lines output.

    Text after the last newline is a line cut short (a run killed while writing it): it is ignored
    here and cut off by :func:`json_lines_writer` on resume, so that image runs again. Any other line
    that is not a record raises :class:`OutputError` naming the line (the file is not such an output).
    """
    data = Path(path).read_bytes()
    done = set()
    for number, line in enumerate(data[:_complete_length(data)].split(b"\n"), 1):
        if not line.strip():
            continue
        record = _parse_record(line)
        if record is None:
            raise OutputError(f"{option} {path}:{number}: not a JSON record with an {IMAGE_KEY!r} field; "
                              "choose a new name or --overwrite")
        done.add(record[IMAGE_KEY])
    return done


def _parse_record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get(IMAGE_KEY), str) else None


def _complete_length(data: bytes) -> int:
    """Bytes of ``data`` up to and including its last newline (what follows is a line cut short)."""
    return data.rfind(b"\n") + 1


# --------------------------------------------------------------------------- JSON-lines output
@contextmanager
def json_lines_writer(target: str | Path | None, resume: bool = False) -> Iterator[Callable[[dict], None]]:
    """A ``write(record)`` appending one JSON line to ``target`` and flushing it (``-``: stdout; None:
    nowhere). An existing file is replaced unless ``resume``, which appends to it after cutting off a
    partial last line. Check the file first with :func:`check_json_output`."""
    if target is None:
        yield lambda record: None
        return
    if str(target) == "-":
        yield lambda record: _write_line(sys.stdout, record)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume and path.exists():
        with open(path, "r+b") as stream:
            stream.truncate(_complete_length(stream.read()))
    with open(path, "a" if resume else "w", encoding="utf-8") as stream:
        yield lambda record: _write_line(stream, record)


def _write_line(stream: TextIO, record: dict) -> None:
    stream.write(json.dumps(record) + "\n")
    stream.flush()


# --------------------------------------------------------------------------- the run loop
def failure_message(item: InputImage, exc: BaseException) -> str:
    """One line naming the image (and its ``@list`` line) and what went wrong."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (OSError, ValueError)):  # e.g. cv2.error: say what kind of error it is
        kind = type(exc)
        text = f"{kind.__name__ if kind.__module__ == 'builtins' else f'{kind.__module__}.{kind.__name__}'}: {text}"
    if not text.startswith(str(item.path)):
        text = f"{item.path}: {text}"
    return f"{item.origin}: {text}" if item.origin else text


def run_batch(images: Sequence[InputImage], process: Callable[[InputImage], dict], *, json_out: str | None = None,
              resume: bool = False, overwrite: bool = False, found_field: str = "faces",
              failures: Iterable[str] = (), progress: bool = True, err: TextIO | None = None,
              desc: str = "detect") -> RunSummary:
    """Call ``process(item)`` for each image and write the record it returns as a JSON line.

    ``process`` writes the image's other outputs and returns its record (``{"image": str(item.path),
    found_field: [...], ...}``). An exception of any kind (unreadable file, OpenCV error, memory) fails
    that image only: it is reported on ``err`` naming the file and the run goes on. With ``resume``
    the images already recorded in ``json_out`` are skipped; an existing ``json_out`` is refused
    unless ``resume`` or ``overwrite`` (:func:`check_json_output`). ``failures``: earlier messages (input
    expansion), reported first and counted. KeyboardInterrupt stops the run; finished lines are kept.
    """
    from tqdm import tqdm

    err = err or sys.stderr
    to_file = json_out is not None and str(json_out) != "-"
    if resume and not to_file:
        raise OutputError("--resume needs --json FILE (the record of the images already done)")
    done = check_json_output(json_out, resume, overwrite) if to_file else set()
    summary = RunSummary(failures=list(failures))
    for message in summary.failures:
        print(f"error: {message}", file=err)
    todo = [item for item in images if str(item.path) not in done]
    summary.resumed = len(images) - len(todo)
    with json_lines_writer(json_out, resume=resume) as write_record:
        for item in tqdm(todo, desc=desc, unit="img", disable=not progress or len(todo) < 2, file=err):
            try:
                record = process(item)
            except Exception as exc:  # noqa: BLE001 -- one bad image must not stop the batch
                summary.failures.append(failure_message(item, exc))
                tqdm.write(f"error: {summary.failures[-1]}", file=err)  # keeps the progress bar intact
                continue
            write_record(record)
            summary.images += 1
            summary.found += len(record.get(found_field, ()))
    return summary


def finish_batch_command(run: Callable[[], RunSummary], json_out: str | None, found_word: str, resume: bool) -> int:
    """Run a detect command's batch and turn its end into the exit status and one summary line on stderr:
    the summary's status when it ran through, 2 when an output failed mid-run, 130 on Ctrl-C (saying what
    was kept and how to continue)."""
    kept = ("" if json_out in (None, "-") else
            f" (the images finished so far are in {json_out}; rerun with --resume to continue)")
    try:
        summary = run()
    except (OutputError, OSError) as exc:  # outputs changed since the check, a full disk, a closed pipe
        print(f"error: {exc}{kept}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    resumed = f", {summary.resumed} already done" if resume else ""
    print(f"{summary.images} images, {summary.found} {found_word}, {len(summary.failures)} inputs failed{resumed}",
          file=sys.stderr)
    return summary.exit_status


def add_json_options(group: argparse._ActionsContainer, record: str) -> None:
    """``--json``, ``--resume`` and ``--overwrite`` of every detect command; ``record`` shows one JSON line."""
    group.add_argument("--json", metavar="OUT.jsonl",
                       help=f"one JSON line per image as it is done ('-' for stdout): {record}; an existing file is "
                       "refused unless --resume or --overwrite")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted run: skip the images already in the --json file, append the "
                       "others")
    group.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def json_destination(json_out: str | None, other_outputs: bool, resume: bool) -> str | None:
    """Where a detect command writes its JSON lines: ``--json``, else stdout (``-``) when it has no other
    output; :class:`OutputError` when ``--resume`` has no file to resume from."""
    if json_out is None and not other_outputs:
        json_out = "-"
    if resume and json_out in (None, "-"):
        raise OutputError("--resume needs --json FILE (the record of the images already done)")
    return json_out
