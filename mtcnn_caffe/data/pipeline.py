"""Run a sample generator over many images: parallel, deterministic, streaming, resumable.

Output directory of a generator (``--out DIR``)::

    DIR/manifest.json          what made it (generator, size, seed, inputs, parameters)
    DIR/shards/NNNNN.bin       samples of images [N*C, (N+1)*C) as raw sample_dtype(size) records
    DIR/shards/NNNNN.json      that chunk's counts; written last: it marks the chunk complete
    DIR/stats.json             totals, written when every chunk is complete

* Deterministic: image ``i`` draws from ``numpy.random.default_rng([seed, i])`` whatever
  process handles it, and results are written in image order, so ``-j`` changes nothing.
* Streaming: each image's samples are appended to the open shard as they arrive; memory
  holds a few images' samples at most.
* Resumable: a re-run with the same arguments skips chunks whose ``.json`` exists and
  redoes any other (a ``.bin.partial`` of an interrupted chunk is discarded).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from caffe_common.atomic import to_jsonable, write_json_atomic
from caffe_common.parallel import WorkerDiedError, default_workers, ordered_map
from .records import SAMPLE_FORMAT, count_labels, sample_dtype

#: Keys every generator's stats.json has (integers; 0 where not applicable).
STATS_KEYS = ("pos", "part", "neg", "landmark", "skipped_faces", "failed_images")
SHARDS = "shards"
MANIFEST = "manifest.json"
STATS = "stats.json"


@dataclass
class ItemResult:
    """What a task returns for one image (or one face)."""

    samples: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    failure: str | None = None


class Task(Protocol):
    """A per-image sample generator (picklable: it travels to spawned workers)."""

    kind: str
    size: int

    def __len__(self) -> int:
        """Number of items (images or faces)."""

    def config(self) -> dict[str, Any]:
        """Inputs and parameters, JSON-friendly: recorded in the manifest, compared on resume."""

    def setup(self) -> None:
        """Per-process preparation (e.g. loading nets), called once in each worker."""

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        """The samples of item ``index``, drawing randomness only from ``rng``."""


def check_limit(limit: int | None) -> int | None:
    """``--limit``: ``None`` (everything) or a count of at least 1 (0 and negatives are errors, not 'all')."""
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"--limit must be a whole number of at least 1, not {limit!r}")
    return limit


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of item ``index``: depends on (seed, index) only, never on the worker."""
    return np.random.default_rng([int(seed), int(index)])


def read_json(path: Path) -> Any:
    """Parse a JSON file of an output directory; a damaged file is a ``ValueError`` naming it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); the directory is damaged, "
                         "re-run with --overwrite") from exc


class OutputMismatchError(RuntimeError):
    """``--out`` holds the output of a different command (would mix samples)."""


def prepare_output(out_dir: Path, manifest: dict[str, Any], overwrite: bool = False) -> None:
    """Create ``out_dir`` with its manifest, or check that a previous run used the same arguments."""
    path = out_dir / MANIFEST
    if not path.is_file() and (out_dir / STATS).is_file():
        raise OutputMismatchError(f"{out_dir} holds a {STATS} but no {MANIFEST}: not a generator's output "
                                  "(a packed stage?); choose another --out")
    if path.is_file() and not overwrite:
        old = read_json(path)
        if old != to_jsonable(manifest):
            keys = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise OutputMismatchError(
                f"{out_dir} holds samples made with other arguments (differs in: {', '.join(keys)}); "
                "use another --out, or --overwrite to start over")
        return
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir / SHARDS, ignore_errors=True)
        for name in (STATS, MANIFEST):
            (out_dir / name).unlink(missing_ok=True)
    (out_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, manifest)


def _chunk_count(items: int, chunk_images: int) -> int:
    return (items + chunk_images - 1) // chunk_images


def _chunk_paths(out_dir: Path, chunk: int) -> tuple[Path, Path]:
    base = out_dir / SHARDS / f"{chunk:05d}"
    return base.with_suffix(".bin"), base.with_suffix(".json")


# ----------------------------------------------------------------------------- workers
#: State of a worker process (set by :func:`_init_worker`; only ever used inside worker processes).
_WORKER: dict[str, Any] = {}


def _init_worker(task: Task, seed: int) -> None:
    """Worker set-up: one thread for OpenCV, SIGINT left to the parent, ``task.setup()``.

    A set-up error is kept and raised with the worker's first item, so the caller gets the
    original exception instead of a pool that respawns or breaks.
    """
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the workers
    cv2.setNumThreads(1)  # one of several worker processes: no thread pools of its own
    _WORKER.update(task=task, seed=seed, error=None)
    try:
        task.setup()
    except Exception as exc:  # noqa: BLE001 - re-raised by _run_item in the caller's process
        _WORKER["error"] = exc


def _run_item(index: int) -> tuple[int, ItemResult]:
    if _WORKER["error"] is not None:
        raise _WORKER["error"]
    return index, _WORKER["task"].run(index, image_rng(_WORKER["seed"], index))


def parallel_items(task: Task, indices: Sequence[int], jobs: int, seed: int) -> Iterator[tuple[int, ItemResult]]:
    """``(index, result)`` in the order of ``indices``; ``jobs > 1`` uses spawned processes.

    Workers are spawned (not forked: Caffe/OpenBLAS threads do not survive a fork) with
    single-threaded BLAS so ``-j`` processes share the cores without oversubscription. At most
    ``2 * jobs`` items are in flight. A worker that dies is a :class:`WorkerDiedError`, never a hang.
    """
    if jobs <= 1 or len(indices) <= 1:
        task.setup()  # in this process: an error is raised here and leaves nothing behind
        for index in indices:
            yield index, task.run(index, image_rng(seed, index))
        return
    try:
        yield from ordered_map(_run_item, indices, min(jobs, len(indices)), initializer=_init_worker,
                               initargs=(task, seed), in_flight=2 * jobs)
    except WorkerDiedError as exc:
        raise WorkerDiedError(
            f"a worker process died ({exc.cause}) while items {min(exc.in_flight)}-{max(exc.in_flight)} were in "
            "progress; the usual causes are running out of memory (SIGKILL) and a crash in native code (SIGABRT, "
            "e.g. a failed Caffe CHECK; SIGSEGV). The finished chunks are kept: re-run the same command to resume "
            "(with a smaller -j if memory is short).", exc.cause, exc.in_flight) from None


# ----------------------------------------------------------------------------- runner
class _ChunkWriter:
    """Streams items' samples into their chunk's ``.bin.partial``; commits a chunk after its last item.

    Items must arrive in index order and cover whole chunks (as :func:`run_generator` asks).
    The commit is: fsync, rename to ``.bin``, then the chunk's ``.json`` (the completion marker).
    """

    def __init__(self, out_dir: Path, n_items: int, chunk_images: int):
        self.out_dir, self.n_items, self.chunk_images = out_dir, n_items, chunk_images
        self.chunk, self.handle = -1, None
        self.labels, self.skipped, self.failures, self.images = Counter(), Counter(), [], 0

    def add(self, index: int, result: ItemResult) -> None:
        """Append one item's samples and counts; commit its chunk when it is the chunk's last item."""
        chunk = index // self.chunk_images
        if chunk != self.chunk:
            self._open(chunk)
        self.handle.write(result.samples.tobytes())
        self.labels.update(count_labels(result.samples["label"]))
        self.skipped.update(result.skipped)
        if result.failure:
            self.failures.append(result.failure)
        self.images += 1
        if index == min((chunk + 1) * self.chunk_images, self.n_items) - 1:
            self._commit()

    def _open(self, chunk: int) -> None:
        self.close()
        bin_path = _chunk_paths(self.out_dir, chunk)[0]
        self.chunk, self.handle = chunk, open(bin_path.with_name(bin_path.name + ".partial"), "wb")
        self.labels, self.skipped, self.failures, self.images = Counter(), Counter(), [], 0

    def _commit(self) -> None:
        bin_path, json_path = _chunk_paths(self.out_dir, self.chunk)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        os.replace(bin_path.with_name(bin_path.name + ".partial"), bin_path)
        write_json_atomic(json_path, {"labels": dict(self.labels), "skipped": dict(self.skipped),
                                      "failures": self.failures, "images": self.images})

    def close(self) -> None:
        """Close an uncommitted chunk (its ``.partial`` is redone by the next run)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _pending_items(out_dir: Path, n_items: int, chunk_images: int) -> list[int]:
    """Indices of the items whose chunk has no completion marker yet."""
    todo = [c for c in range(_chunk_count(n_items, chunk_images)) if not _chunk_paths(out_dir, c)[1].is_file()]
    return [i for c in todo for i in range(c * chunk_images, min((c + 1) * chunk_images, n_items))]


def run_generator(task: Task, out_dir: str | Path, seed: int = 0, jobs: int | None = None, chunk_images: int = 64,
                  overwrite: bool = False, progress: bool = True, extra_stats: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Generate the samples of every item of ``task`` into ``out_dir``; returns the stats written."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if len(task) == 0:
        raise EmptyInputError(f"nothing to generate: the {task.kind} input has no items")
    jobs = default_workers() if not jobs or jobs < 1 else jobs
    manifest = {"format": SAMPLE_FORMAT, "generator": task.kind, "size": task.size, "seed": int(seed),
                "items": len(task), "chunk_images": int(chunk_images), "config": task.config()}
    prepare_output(out_dir, manifest, overwrite)
    (out_dir / STATS).unlink(missing_ok=True)  # stats.json appears only when everything is complete
    indices = _pending_items(out_dir, len(task), chunk_images)
    writer = _ChunkWriter(out_dir, len(task), chunk_images)
    started, made = time.time(), 0
    with tqdm(total=len(task), initial=len(task) - len(indices), desc=f"{task.kind} {task.size}", unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        try:
            for index, result in parallel_items(task, indices, jobs, seed):
                writer.add(index, result)
                made += len(result.samples)
                bar.update(1)
        finally:
            writer.close()
    seconds = time.time() - started
    stats = collect_stats(out_dir, _chunk_count(len(task), chunk_images))
    stats.update({"size": task.size, "generator": task.kind, "seed": int(seed), "jobs": jobs,
                  "seconds_this_run": round(seconds, 3), "samples_this_run": made, "images_this_run": len(indices),
                  "samples_per_second": round(made / seconds, 1) if seconds > 0 and made else 0.0})
    stats.update(extra_stats or {})
    if stats["samples"] == 0:
        raise EmptyInputError(_no_samples_message(out_dir, stats))
    write_json_atomic(out_dir / STATS, stats)
    return stats


class EmptyInputError(ValueError):
    """The inputs give nothing to train on (no items, or no sample from any of them)."""


def _no_samples_message(out_dir: Path, stats: dict[str, Any]) -> str:
    """Why a finished run made no sample; its output is left without stats.json (never looks complete)."""
    why = [f"{stats['failed_images']} could not be read"] if stats["failed_images"] else []
    if stats["skipped_faces"]:
        reasons = ", ".join(f"{n} {k}" for k, n in stats["skipped_faces_by_reason"].items())
        why.append(f"{stats['skipped_faces']} faces skipped ({reasons})")
    first = f"; first failure: {stats['failed_image_list'][0]}" if stats["failed_image_list"] else ""
    return (f"no samples made from {stats['images']} items ({'; '.join(why) or 'no usable face or crop'}){first}. "
            f"{out_dir} has no stats.json: fix the inputs or options and re-run with --overwrite")


def collect_stats(out_dir: Path, n_chunks: int) -> dict[str, Any]:
    """Totals over all chunk files of ``out_dir``."""
    labels, skipped, failures, images = Counter(), Counter(), [], 0
    for chunk in range(n_chunks):
        data = read_json(_chunk_paths(out_dir, chunk)[1])
        labels.update(data["labels"])
        skipped.update(data["skipped"])
        failures.extend(data["failures"])
        images += data["images"]
    stats: dict[str, Any] = {k: int(labels.get(k, 0)) for k in ("pos", "part", "neg", "landmark")}
    stats.update({"skipped_faces": int(sum(skipped.values())), "failed_images": len(failures),
                  "skipped_faces_by_reason": dict(sorted(skipped.items())), "failed_image_list": failures,
                  "images": images, "samples": int(sum(labels.values()))})
    return stats


# ----------------------------------------------------------------------------- reading a generator's output
@dataclass
class SampleDir:
    """A finished generator output directory."""

    path: Path
    manifest: dict[str, Any]
    shards: list[Path]

    @property
    def size(self) -> int:
        """Crop side of the samples."""
        return int(self.manifest["size"])

    @property
    def dtype(self) -> np.dtype:
        """``sample_dtype(size)``: one sample of the shards."""
        return sample_dtype(self.size)

    def stats(self) -> dict[str, Any]:
        """The generator's stats.json."""
        return read_json(self.path / STATS)

    def shard_count(self, shard: Path) -> int:
        """Samples in ``shard`` (checked to be a whole number)."""
        nbytes = shard.stat().st_size
        if nbytes % self.dtype.itemsize:
            raise ValueError(f"{shard}: {nbytes} bytes is not a whole number of {self.size}px samples")
        return nbytes // self.dtype.itemsize

    def read_shard(self, shard: Path) -> np.ndarray:
        """All samples of one shard (a copy; shards are small)."""
        self.shard_count(shard)  # a truncated shard is an error naming it, not silently short
        return np.fromfile(shard, dtype=self.dtype)

    def read_labels(self, shard: Path) -> np.ndarray:
        """The labels of one shard, without holding its crops in memory."""
        if self.shard_count(shard) == 0:
            return np.zeros(0, np.float32)
        return np.array(np.memmap(shard, dtype=self.dtype, mode="r")["label"])

    def iter_samples(self) -> Iterator[np.ndarray]:
        """Sample arrays shard by shard."""
        for shard in self.shards:
            yield self.read_shard(shard)


def open_sample_dir(path: str | Path) -> SampleDir:
    """Open a generator output; it must be complete (its stats.json exists)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not a sample directory (no {MANIFEST}); run a prepare_data generator first")
    manifest = read_json(manifest_path)
    if manifest.get("format") != SAMPLE_FORMAT:
        raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected {SAMPLE_FORMAT!r}")
    if not (path / STATS).is_file():
        raise RuntimeError(f"{path} is incomplete (no {STATS}): "
                           "re-run its generator with the same arguments to finish it")
    n_chunks = _chunk_count(int(manifest["items"]), int(manifest["chunk_images"]))
    shards = [_chunk_paths(path, c)[0] for c in range(n_chunks)]
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise RuntimeError(f"{path}: missing shard files {missing[:3]}")
    return SampleDir(path, manifest, shards)


def params_dict(params: Any) -> dict[str, Any]:
    """A dataclass of parameters as a JSON-friendly dict (for manifests)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(params).items()}
