"""Running a detector over many images, shared by both detect commands: input expansion (files,
folders, ``@lists``), JSON-lines output, and the run summary with its exit status.

Every output is written atomically (:mod:`caffe_common.atomic`: temporary file + ``os.replace``).
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .atomic import atomic_path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jp2"}


@dataclass
class InputImage:
    """One image to process: its path and the name to draw it under (relative to a given directory)."""

    path: Path
    rel_name: str


@dataclass
class RunSummary:
    """What a :func:`run_detection` did: images processed, faces found, messages of the failed inputs."""

    images: int = 0
    faces: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 when every input was processed, 2 when any failed (the run still went on)."""
        return 2 if self.failures else 0


# --------------------------------------------------------------------------- inputs
def expand_inputs(specs: Iterable[str], failures: list[str]) -> list[InputImage]:
    """Image files, directories (recursive, image extensions only) and ``@list.txt`` files (one path per
    line, relative paths taken from the list's folder). Problems are appended to ``failures``."""
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
    return images


def _read_list(list_path: Path, failures: list[str]) -> list[InputImage]:
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        failures.append(f"{list_path}: cannot read image list ({exc.strerror or exc})")
        return []
    images = []
    for line in lines:
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        path = Path(name) if Path(name).is_absolute() else list_path.parent / name
        images.append(InputImage(path, name))
    return images


@contextmanager
def json_lines_writer(target: str | None) -> Iterator[Callable[[dict], None]]:
    """A ``write(record)`` appending JSON lines to ``target`` (``-``: stdout; None: nowhere).

    A file is written under a temporary name (:func:`caffe_common.atomic.atomic_path`) and
    appears only when the block ends without an exception.
    """
    if target is None:
        yield lambda record: None
    elif target == "-":
        yield lambda record: sys.stdout.write(json.dumps(record) + "\n")
    else:
        with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as stream:
            yield lambda record: stream.write(json.dumps(record) + "\n")
