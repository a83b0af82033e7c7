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

The LMDB is built in ``<out>.partial`` (by :class:`LmdbWriter`, which other writers such as the
VOC/COCO converter share) and renamed to ``<out>`` when complete; an error or interrupt removes it.
The per-image work (decoding, serialisation) can run in spawned worker processes
(``workers``); the main process writes the values in input order. A worker does not import pycaffe
(1.5 s each) but only its generated ``caffe_pb2`` module (:func:`caffe_pb2`).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from caffe_common.env import import_caffe
from caffe_common.images import ImageReadError, read_image
from caffe_common.parallel import ordered_map

_COMMIT_EVERY = 500
#: The first LMDB map size, doubled whenever it fills up. The map is reserved address space, so a
#: fixed huge map (1 TiB) fails where the address space is limited (``ulimit -v``).
_INITIAL_MAP_SIZE = 1 << 28


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


_WORKER_PB2: list[ModuleType] = []  # set in worker processes by worker_init


def worker_init() -> None:
    """Pool initializer: load Caffe's generated ``caffe_pb2`` on its own, without pycaffe's extension."""
    spec = importlib.util.find_spec("caffe")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return  # caffe_pb2() then reports pycaffe missing through import_caffe
    module_spec = importlib.util.spec_from_file_location(
        "_caffe_pb2_standalone", Path(spec.origin).parent / "proto" / "caffe_pb2.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    _WORKER_PB2.append(module)


def caffe_pb2() -> ModuleType:
    """Caffe's protobuf messages: the standalone module in a worker, else pycaffe's own."""
    if _WORKER_PB2 and "caffe" not in sys.modules:
        return _WORKER_PB2[0]
    return import_caffe().proto.caffe_pb2


def check_box(box: LabeledBox) -> None:
    """Raise ``ValueError`` describing the problem when ``box`` cannot be stored."""
    if int(box.label) != box.label or box.label < 1:
        raise ValueError(f"label {box.label!r} is not an integer >= 1 (0 is the background)")
    coords = (box.xmin, box.ymin, box.xmax, box.ymax)
    if not all(0.0 <= float(v) <= 1.0 for v in coords):  # also rejects NaN
        raise ValueError(f"box {coords} is not normalised to [0, 1]")
    if not (box.xmin < box.xmax and box.ymin < box.ymax):
        raise ValueError(f"box {coords} is empty (needs xmin < xmax and ymin < ymax)")


def bytes_for_caffe(path: Path):
    """(encoded bytes that Caffe decodes to ``read_image(path)``, that image); raises ``ImageReadError``."""
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


def annotated_datum(item: AnnotatedImage, pb2: ModuleType | None = None, encoded=None):
    """The ``caffe_pb2.AnnotatedDatum`` of ``item``; raises ``ImageReadError`` or ``ValueError``.

    ``encoded``: the ``(bytes, image)`` of :func:`bytes_for_caffe` when the caller has it already.
    """
    pb2 = pb2 or caffe_pb2()
    path = Path(item.path)
    for box in item.boxes:
        try:
            check_box(box)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    data, image = encoded or bytes_for_caffe(path)
    anno = pb2.AnnotatedDatum()
    anno.type = pb2.AnnotatedDatum.BBOX
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


class LmdbWriter:
    """Build an LMDB in ``<out>.partial`` and rename it to ``<out>`` when the ``with`` block ends
    without error; on an error or interrupt the partial database is removed and ``out`` is untouched.

    Refuses an existing ``out`` unless ``overwrite``. Use :meth:`put` for every record and
    :meth:`abort` to leave without writing (e.g. when nothing usable was found). The map grows as
    needed: the records since the last commit are kept and written again into a map twice as large.
    """

    def __init__(self, out: str | Path, *, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out}: already exists (overwrite=True replaces it)")
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.written = 0
        self.map_size = _INITIAL_MAP_SIZE
        self._env = self._txn = None
        self._pending: list[tuple[bytes, bytes]] = []
        self._aborted = False

    def __enter__(self) -> "LmdbWriter":
        import lmdb

        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(self.partial), map_size=self.map_size, subdir=True, meminit=False)
        self._txn = self._env.begin(write=True)
        return self

    def _grow(self) -> None:
        """Drop the failed transaction, double the map and write the pending records again."""
        import lmdb

        while True:
            self._txn.abort()
            self.map_size *= 2
            self._env.set_mapsize(self.map_size)
            self._txn = self._env.begin(write=True)
            try:
                for key, value in self._pending:
                    self._txn.put(key, value)
                return
            except lmdb.MapFullError:
                continue

    def _commit(self) -> None:
        import lmdb

        while True:
            try:
                self._txn.commit()
                break
            except lmdb.MapFullError:
                self._grow()
        self._pending.clear()
        self._txn = self._env.begin(write=True)

    def put(self, key: bytes, value: bytes) -> None:
        """Store one record (committed in batches)."""
        import lmdb

        self._pending.append((key, value))
        try:
            self._txn.put(key, value)
        except lmdb.MapFullError:
            self._grow()
        self.written += 1
        if len(self._pending) >= _COMMIT_EVERY:
            self._commit()

    def abort(self) -> None:
        """Write nothing: the partial database is removed when the block ends."""
        self._aborted = True

    def __exit__(self, exc_type, exc, tb) -> None:
        completed = exc_type is None and not self._aborted
        try:
            if completed:
                self._commit()
                self._txn.abort()  # the empty transaction _commit opened
                self._env.sync()
            else:
                self._txn.abort()
        finally:
            self._env.close()
        if not completed:
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.partial, self.out)


def _serialise(item: AnnotatedImage) -> tuple[bytes | None, str]:
    """Worker: the serialised datum of ``item``, or ``(None, reason)`` when it cannot be stored."""
    try:
        return annotated_datum(item).SerializeToString(), ""
    except (ImageReadError, ValueError) as exc:
        return None, str(exc)


def write_annotated_lmdb(out: str | Path, items: Iterable[AnnotatedImage], *,
                         overwrite: bool = False, workers: int = 1, progress: bool = False) -> WriteSummary:
    """Write ``items`` to the LMDB directory ``out``; unusable images are skipped and listed.

    Refuses to replace an existing ``out`` unless ``overwrite``; raises ``ValueError`` (and
    leaves ``out`` as it was) when no image at all could be written. ``workers > 1`` decodes and
    serialises in that many processes (the records are still written in input order);
    ``progress`` shows a tqdm bar.
    """
    from tqdm import tqdm

    out = Path(out)
    items = list(items)
    summary = WriteSummary()
    with LmdbWriter(out, overwrite=overwrite) as writer:
        results = ordered_map(_serialise, items, min(workers, len(items)), initializer=worker_init)
        for index, (item, (value, reason)) in enumerate(zip(items, tqdm(
                results, total=len(items), desc="lmdb", unit="img", disable=not progress))):
            if value is None:
                summary.skipped.append((str(item.path), reason))
            else:
                writer.put(datum_key(index, item.path), value)
        summary.written = writer.written
        if summary.written == 0:
            writer.abort()
    if summary.written == 0:
        reasons = "; ".join(reason for _, reason in summary.skipped[:3]) or "no images given"
        raise ValueError(f"{out}: no usable image, nothing written ({reasons})")
    return summary


def read_annotated_lmdb(path: str | Path) -> Iterator[tuple[str, object]]:
    """``(key, caffe_pb2.AnnotatedDatum)`` of every entry, in key order."""
    import lmdb

    pb2 = caffe_pb2()
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                anno = pb2.AnnotatedDatum()
                anno.ParseFromString(value)
                yield key.decode(), anno
    finally:
        env.close()
