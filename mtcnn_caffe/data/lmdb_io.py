"""The per-stage training LMDB: layout, a fast batch reader.

Layout of ``<out>/data.lmdb`` (written by :func:`mtcnn_caffe.data.pack.pack_stage`):

* keys ``b"%010d" % i`` for ``i`` in ``0 .. count-1``, already shuffled, each value one
  :func:`~mtcnn_caffe.data.records.record_dtype` record (``60 + 3 s^2`` bytes, no
  compression, no protobuf): a batch of ``n`` consecutive records decodes with one
  ``np.frombuffer(b"".join(values), record_dtype(s))``.
* key ``b"__meta__"``: JSON ``{"format": "mtcnn-record-v1", "size", "count", "record_bytes",
  "counts": {pos, neg, part, landmark}, "fields", ...}``.

The LMDB is built in ``data.lmdb.partial`` and renamed when complete, so a directory named
``data.lmdb`` is always whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .records import RECORD_FORMAT, decode_records

LMDB_NAME = "data.lmdb"
META_KEY = b"__meta__"


# py-lmdb allows one Environment per path and process: readers of the same LMDB (e.g. the
# train and test nets of one solver) share it, closed with the last reader.
_ENVS: dict[str, list] = {}


def _acquire_env(path: Path):
    import lmdb

    key = str(path.resolve())
    if key not in _ENVS:
        env = lmdb.open(key, readonly=True, lock=False, readahead=False, max_readers=256)
        _ENVS[key] = [env, 0]
    _ENVS[key][1] += 1
    return _ENVS[key][0]


def _release_env(path: Path) -> None:
    key = str(path.resolve())
    entry = _ENVS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _ENVS[key]


def record_key(index: int) -> bytes:
    """Key of record ``index``."""
    return b"%010d" % index


def stage_lmdb_path(out_dir: str | Path) -> Path:
    """Where ``gen_net_imdb.py --out DIR`` puts the LMDB (what training reads)."""
    return Path(out_dir) / LMDB_NAME


class RecordReader:
    """Read-only access to a training LMDB, in batches of consecutive records (wrapping around)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir() and (path / LMDB_NAME).is_dir() and not (path / "data.mdb").is_file():
            path = path / LMDB_NAME  # accept the gen_net_imdb output directory too
        if not (path / "data.mdb").is_file():
            raise FileNotFoundError(f"{path} is not an LMDB made by gen_net_imdb.py (no data.mdb)")
        self.path = path
        self.env = _acquire_env(path)
        self._closed = False
        with self.env.begin() as txn:
            raw = txn.get(META_KEY)
        if raw is None:
            self.close()
            raise ValueError(f"{path}: no {META_KEY.decode()} record; not a finished gen_net_imdb.py LMDB")
        self.meta: dict[str, Any] = json.loads(raw)
        if self.meta.get("format") != RECORD_FORMAT:
            self.close()
            raise ValueError(f"{path}: record format {self.meta.get('format')!r}, expected {RECORD_FORMAT!r}")
        self.size = int(self.meta["size"])
        self.count = int(self.meta["count"])
        if self.count <= 0:
            self.close()
            raise ValueError(f"{path}: holds no records")

    def __len__(self) -> int:
        return self.count

    def read(self, start: int, count: int) -> np.ndarray:
        """``count`` records from ``start`` (wrapping past the end) as a record array."""
        chunks: list[bytes] = []
        start %= self.count
        with self.env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            while len(chunks) < count:
                if not cursor.set_key(record_key(start)):
                    raise KeyError(f"{self.path}: record {start} missing")
                for key, value in cursor:
                    if key == META_KEY or len(chunks) == count:
                        break
                    chunks.append(value)
                start = 0
        return decode_records(b"".join(chunks), self.size)

    def read_indices(self, indices: np.ndarray) -> np.ndarray:
        """The records at ``indices`` (any order, repeats allowed) as a record array in that order."""
        with self.env.begin(buffers=False) as txn:
            values = [txn.get(record_key(int(i))) for i in indices]
        missing = [int(i) for i, v in zip(indices, values) if v is None]
        if missing:
            raise KeyError(f"{self.path}: records {missing[:5]} missing")
        return decode_records(b"".join(values), self.size)

    def read_labels(self) -> np.ndarray:
        """The label of every record (``(count,)`` float32), read without decoding the images."""
        labels = np.empty(self.count, dtype=np.float32)
        with self.env.begin(buffers=True) as txn:
            cursor = txn.cursor()
            if not cursor.set_key(record_key(0)):
                raise KeyError(f"{self.path}: record 0 missing")
            for index, (key, value) in enumerate(cursor):
                if key == META_KEY or index >= self.count:
                    break
                labels[index] = np.frombuffer(value[:4], dtype="<f4")[0]  # label is the first field
        return labels

    def close(self) -> None:
        """Release this reader's share of the LMDB environment."""
        if not self._closed:
            self._closed = True
            _release_env(self.path)

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
