"""Write the LMDBs that Caffe's ``AnnotatedData`` layer reads: one ``AnnotatedDatum`` per image.

Each value holds the encoded image (``datum.encoded = true``) and its boxes, grouped by label
(``annotation_group``, instance ids counted per label), with ``type = BBOX``. Keys are
``%08d_<image stem>`` in input order, so Caffe reads the images in the order given.

Boxes are given normalised to the image, ``0 <= xmin < xmax <= 1`` (and the same for y), labels
``>= 1`` (0 is SSD's background); the caller (e.g. a VOC converter) decides how pixel boxes map
to that range. Every image is decoded here with :func:`caffe_common.images.read_image`: a file
that cannot be used is skipped and reported instead of reaching Caffe, which would abort on it.
The file's own bytes are stored when Caffe's decoder (``imdecode`` unchanged) yields exactly the
pixels ``read_image`` gives; gray, 16-bit, alpha or EXIF-rotated files are stored as the
lossless PNG of those pixels, so Caffe always sees 8-bit BGR.

The LMDB is built in ``<out>.partial`` and renamed to ``<out>`` when complete.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from caffe_common.env import import_caffe
from caffe_common.images import ImageReadError, read_image

_COMMIT_EVERY = 500
_MAP_SIZE = 1 << 40  # an upper bound of the file's size; LMDB only uses what it writes


@dataclass(frozen=True)
class LabeledBox:
    """One object: its label (>= 1) and its box normalised to the image size."""

    label: int
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False


@dataclass(frozen=True)
class AnnotatedImage:
    """An image file and the objects in it."""

    path: Path
    boxes: Sequence[LabeledBox] = ()


@dataclass
class WriteSummary:
    """What :func:`write_annotated_lmdb` did: images written, and ``(path, reason)`` of each skipped one."""

    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def check_box(box: LabeledBox) -> None:
    """Raise ``ValueError`` describing the problem when ``box`` cannot be stored."""
    if int(box.label) != box.label or box.label < 1:
        raise ValueError(f"label {box.label!r} is not an integer >= 1 (0 is the background)")
    coords = (box.xmin, box.ymin, box.xmax, box.ymax)
    if not all(0.0 <= float(v) <= 1.0 for v in coords):  # also rejects NaN
        raise ValueError(f"box {coords} is not normalised to [0, 1]")
    if not (box.xmin < box.xmax and box.ymin < box.ymax):
        raise ValueError(f"box {coords} is empty (needs xmin < xmax and ymin < ymax)")


def _bytes_for_caffe(path: Path):
    """(encoded bytes that Caffe decodes to ``read_image(path)``, that image)."""
    import cv2
    import numpy as np

    image = read_image(path)
    data = path.read_bytes()
    native = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if native is not None and native.dtype == np.uint8 and np.array_equal(native, image):
        return data, image
    ok, png = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - encoding a decoded 8-bit image does not fail
        raise ImageReadError(f"{path}: cannot re-encode as PNG")
    return png.tobytes(), image


def annotated_datum(item: AnnotatedImage, caffe_pb2=None):
    """The ``caffe_pb2.AnnotatedDatum`` of ``item``; raises ``ImageReadError`` or ``ValueError``."""
    caffe_pb2 = caffe_pb2 or import_caffe().proto.caffe_pb2
    path = Path(item.path)
    for box in item.boxes:
        try:
            check_box(box)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    data, image = _bytes_for_caffe(path)
    anno = caffe_pb2.AnnotatedDatum()
    anno.type = caffe_pb2.AnnotatedDatum.BBOX
    datum = anno.datum
    datum.data = data
    datum.encoded = True
    datum.height, datum.width, datum.channels = image.shape
    groups = {}
    for box in item.boxes:
        label = int(box.label)
        if label not in groups:
            groups[label] = anno.annotation_group.add(group_label=label)
        group = groups[label]
        annotation = group.annotation.add(instance_id=len(group.annotation))
        annotation.bbox.xmin, annotation.bbox.ymin = float(box.xmin), float(box.ymin)
        annotation.bbox.xmax, annotation.bbox.ymax = float(box.xmax), float(box.ymax)
        annotation.bbox.difficult = bool(box.difficult)
    return anno


def datum_key(index: int, path: Path) -> bytes:
    """LMDB key of the ``index``-th image: zero-padded index first, so keys sort in input order."""
    return f"{index:08d}_{Path(path).stem}".encode()


def write_annotated_lmdb(out: str | Path, items: Iterable[AnnotatedImage], *,
                         overwrite: bool = False) -> WriteSummary:
    """Write ``items`` to the LMDB directory ``out``; unusable images are skipped and listed.

    Refuses to replace an existing ``out`` unless ``overwrite``; raises ``ValueError`` (and
    leaves ``out`` as it was) when no image at all could be written.
    """
    import lmdb

    caffe_pb2 = import_caffe().proto.caffe_pb2
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (overwrite=True replaces it)")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    summary = WriteSummary()
    env = lmdb.open(str(partial), map_size=_MAP_SIZE, subdir=True, meminit=False)
    try:
        txn = env.begin(write=True)
        for index, item in enumerate(items):
            try:
                value = annotated_datum(item, caffe_pb2).SerializeToString()
            except (ImageReadError, ValueError) as exc:
                summary.skipped.append((str(item.path), str(exc)))
                continue
            txn.put(datum_key(index, item.path), value)
            summary.written += 1
            if summary.written % _COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
        env.sync()
    finally:
        env.close()
    if summary.written == 0:
        shutil.rmtree(partial, ignore_errors=True)
        reasons = "; ".join(reason for _, reason in summary.skipped[:3]) or "no images given"
        raise ValueError(f"{out}: no usable image, nothing written ({reasons})")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return summary


def read_annotated_lmdb(path: str | Path) -> Iterator[tuple[str, object]]:
    """``(key, caffe_pb2.AnnotatedDatum)`` of every entry, in key order."""
    import lmdb

    caffe_pb2 = import_caffe().proto.caffe_pb2
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                anno = caffe_pb2.AnnotatedDatum()
                anno.ParseFromString(value)
                yield key.decode(), anno
    finally:
        env.close()
