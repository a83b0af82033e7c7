"""SSD label maps (``labelmap.prototxt``): read, check against a class count, write.

A label map lists one ``item { name label display_name }`` per class. SSD reserves label 0 for the
background, and Caffe's ``MultiBoxLoss`` / ``DetectionOutput`` take ``num_classes`` = background +
object classes, so a label map fits a net with ``N`` classes when its labels are exactly
``0 .. N-1``. Caffe itself reads the file only when training starts and aborts on a file it cannot
parse; these checks run before that, with messages naming the file and what to change.

Parsing uses Caffe's own ``LabelMap`` message, so a file accepted here parses in Caffe too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from caffe_common.atomic import write_text_atomic

BACKGROUND_ITEM = 'item { name: "none_of_the_above" label: 0 display_name: "background" }'


class LabelMapError(ValueError):
    """A label map that cannot be used (the message names the file and the fix)."""


@dataclass(frozen=True)
class LabelMapItem:
    """One class: SSD's ``name`` (as in the annotations), ``label`` and ``display_name``."""

    name: str
    label: int
    display_name: str


def _caffe_pb2():
    from caffe_common.env import import_caffe

    return import_caffe().proto.caffe_pb2


def read_labelmap(path: str | Path) -> list[LabelMapItem]:
    """The items of the label map at ``path``, in file order (not checked: see :func:`check_labelmap`)."""
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise LabelMapError(f"{path}: label map not found (a labelmap.prototxt with one item per class, "
                            f"background label 0 first: {BACKGROUND_ITEM})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        parsed = _caffe_pb2().LabelMap()
        text_format.Merge(text, parsed)
    except (UnicodeDecodeError, text_format.ParseError) as exc:
        raise LabelMapError(f"{path}: not an SSD label map (it does not parse as Caffe's LabelMap: {exc}); "
                            f"write one item per class, e.g. {BACKGROUND_ITEM}") from exc
    return [LabelMapItem(item.name, item.label, item.display_name) for item in parsed.item]


def check_labelmap(items: Sequence[LabelMapItem], num_classes: int | None, path: str | Path) -> None:
    """Refuse a label map a ``num_classes`` SSD net cannot train with: no items, a label or name given
    twice, no background label 0, labels that are not ``0 .. N-1``, or ``N != num_classes``."""
    if not items:
        raise LabelMapError(f"{path}: the label map has no items; add one per class, the background first: "
                            f"{BACKGROUND_ITEM}")
    _refuse_duplicates(path, "label", [item.label for item in items])
    _refuse_duplicates(path, "name", [item.name for item in items])
    labels = sorted(item.label for item in items)
    if 0 not in labels:
        raise LabelMapError(f"{path}: no item has label 0, which SSD reserves for the background; add "
                            f"{BACKGROUND_ITEM} (the object classes keep labels 1, 2, ...)")
    if labels != list(range(len(labels))):
        missing = sorted(set(range(labels[-1] + 1)) - set(labels))
        raise LabelMapError(f"{path}: labels must be 0 .. {len(labels) - 1} without gaps "
                            f"(found {_ranges(labels)}; missing {_ranges(missing)}); renumber the items")
    if num_classes is not None and len(labels) != num_classes:
        raise LabelMapError(f"{path}: the label map has {len(labels)} classes (labels 0 .. {len(labels) - 1}, "
                            f"background included) but --classes is {num_classes}; pass --classes {len(labels)} "
                            "or edit the label map")


def load_labelmap(path: str | Path, num_classes: int | None = None) -> list[LabelMapItem]:
    """:func:`read_labelmap` then :func:`check_labelmap`."""
    items = read_labelmap(path)
    check_labelmap(items, num_classes, path)
    return items


def labelmap_text(class_names: Sequence[str], display_names: Sequence[str] | None = None) -> str:
    """A label map with the background as label 0 and ``class_names`` as labels 1, 2, ...
    (``display_names``, one per class, default the names themselves)."""
    from google.protobuf import text_format

    displays = list(class_names) if display_names is None else list(display_names)
    if len(displays) != len(class_names):
        raise ValueError(f"{len(class_names)} class names but {len(displays)} display names")
    labelmap = _caffe_pb2().LabelMap()
    for label, (name, display) in enumerate(zip(["none_of_the_above", *class_names], ["background", *displays])):
        item = labelmap.item.add()
        item.name, item.label, item.display_name = name, label, display
    return text_format.MessageToString(labelmap, as_utf8=True)


def write_labelmap(path: str | Path, class_names: Sequence[str], display_names: Sequence[str] | None = None) -> Path:
    """Write :func:`labelmap_text` atomically; refuses empty, duplicate or blank class names."""
    names = list(class_names)
    if not names:
        raise LabelMapError(f"{path}: no class names to write")
    if any(not name.strip() for name in names):
        raise LabelMapError(f"{path}: a class name is blank")
    _refuse_duplicates(path, "class name", ["none_of_the_above", *names])
    return write_text_atomic(path, labelmap_text(names, display_names))


def _refuse_duplicates(path: str | Path, what: str, values: Sequence) -> None:
    seen, twice = set(), []
    for value in values:
        if value in seen and value not in twice:
            twice.append(value)
        seen.add(value)
    if twice:
        shown = ", ".join(repr(v) for v in twice)
        raise LabelMapError(f"{path}: {what} {shown} is given to more than one item; each must be unique")


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (sorted input)."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)
