"""``gen_net_imdb``: mix a stage's samples by ratio into an LMDB (and, for small sets, imdb pickles).

Selection is deterministic for a seed: per sample type a random subset of the
requested count, then one global shuffle. Records are copied from the generator
shards block by block (bounded memory), committed to ``data.lmdb.partial`` in
transactions that also record how far the copy got, so an interrupted run resumes
from its last commit; the directory is renamed to ``data.lmdb`` only when whole.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from caffe_common.atomic import atomic_path, write_json_atomic
from .lmdb_io import LMDB_NAME, META_KEY, record_key
from .pipeline import MANIFEST, STATS, EmptyInputError, SampleDir, check_limit, open_sample_dir
from .records import LABELS, RECORD_FORMAT, check_size, record_dtype, samples_to_records

#: Default minibatch mix neg:pos:part:landmark (reference_constants.md).
DEFAULT_RATIO = "3:1:1:2"
TYPE_ORDER = ("neg", "pos", "part", "landmark")
PROGRESS_KEY = b"__written__"
PLAN_KEY = b"__plan__"
#: imdb pickles hold everything in memory: refuse beyond this many bytes of crops.
IMDB_MAX_BYTES = 256 << 20


def parse_ratio(text: str | None) -> dict[str, float] | None:
    """``"3:1:1:2"`` (neg:pos:part:landmark) -> dict; ``"all"`` or ``None`` -> take every sample."""
    if text is None or text == "all":
        return None
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"--ratio must be NEG:POS:PART:LANDMARK (e.g. 3:1:1:2) or 'all', not {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = [float("nan")]
    if not all(np.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"--ratio needs four finite non-negative numbers, not all zero: {text!r}")
    return dict(zip(TYPE_ORDER, values))


def plan_counts(available: dict[str, int], ratio: dict[str, float] | None, limit: int | None = None) -> dict[str, int]:
    """How many samples of each type to take: the largest set with the given ratio (capped by ``limit``)."""
    if ratio is None:
        counts = dict(available)
        total = sum(counts.values())
        if limit and total > limit:
            counts = {k: int(v * limit // total) for k, v in counts.items()}
        return counts
    missing = [k for k, r in ratio.items() if r > 0 and available.get(k, 0) == 0]
    if missing:
        raise ValueError(f"the ratio asks for {', '.join(missing)} samples but the --data directories have none; "
                         f"add a directory with them or set their ratio to 0 (e.g. --ratio 3:1:1:0)")
    unit = min(available[k] / r for k, r in ratio.items() if r > 0)
    if limit:
        unit = min(unit, limit / sum(ratio.values()))
    return {k: int(np.floor(unit * ratio[k] + 1e-9)) for k in TYPE_ORDER}


@dataclass
class Plan:
    """Which sample (source shard, row) goes to which record position."""

    sources: list[tuple[SampleDir, Path]]
    shard_ids: np.ndarray
    rows: np.ndarray
    counts: dict[str, int]
    available: dict[str, int]
    fingerprint: str


def make_plan(dirs: Sequence[SampleDir], ratio: dict[str, float] | None, seed: int, limit: int | None) -> Plan:
    """Index every sample by type, choose the counts, shuffle."""
    sources: list[tuple[SampleDir, Path]] = []
    by_type: dict[str, list[np.ndarray]] = {k: [] for k in TYPE_ORDER}
    digest = hashlib.sha256()
    for d in dirs:
        for shard in d.shards:
            shard_id = len(sources)
            sources.append((d, shard))
            labels = d.read_labels(shard)
            digest.update(f"{shard}:{len(labels)};".encode())
            for name in TYPE_ORDER:
                rows = np.flatnonzero(labels == LABELS[name]).astype(np.int32)  # 8 bytes per sample in all
                by_type[name].append(np.stack([np.full(len(rows), shard_id, np.int32), rows], axis=1))
    index = {k: np.concatenate(v) if v else np.zeros((0, 2), np.int32) for k, v in by_type.items()}
    available = {k: len(v) for k, v in index.items()}
    counts = plan_counts(available, ratio, limit)
    rng = np.random.default_rng(seed)
    chosen = [index[k][np.sort(rng.choice(available[k], counts[k], replace=False))] for k in TYPE_ORDER if counts[k]]
    picked = np.concatenate(chosen) if chosen else np.zeros((0, 2), np.int32)
    picked = picked[rng.permutation(len(picked))]
    digest.update(json.dumps([counts, ratio, seed, limit], sort_keys=True).encode())
    return Plan(sources, picked[:, 0], picked[:, 1], counts, available, digest.hexdigest())


def read_planned(plan: Plan, start: int, stop: int) -> np.ndarray:
    """Records ``start:stop`` of the plan, read from the shards (sample arrays, in plan order)."""
    shard_ids, rows = plan.shard_ids[start:stop], plan.rows[start:stop]
    size = plan.sources[0][0].size
    out = None
    for shard_id in np.unique(shard_ids):
        where = np.flatnonzero(shard_ids == shard_id)
        d, shard = plan.sources[shard_id]
        mm = np.memmap(shard, dtype=d.dtype, mode="r")
        part = np.array(mm[rows[where]])
        del mm
        if out is None:
            out = np.empty(len(shard_ids), dtype=d.dtype)
        out[where] = part
    return out if out is not None else np.zeros(0, record_dtype(size))


def _open_partial(path: Path, map_size: int, fingerprint: str):
    """Open (or restart) the partial LMDB; returns ``(env, records already written)``."""
    import lmdb

    if path.exists():
        env = lmdb.open(str(path), map_size=map_size, subdir=True)
        with env.begin() as txn:
            same = txn.get(PLAN_KEY) == fingerprint.encode()
            done = int(txn.get(PROGRESS_KEY) or 0) if same else 0
        if same:
            return env, done
        env.close()
        shutil.rmtree(path)
    env = lmdb.open(str(path), map_size=map_size, subdir=True)
    with env.begin(write=True) as txn:
        txn.put(PLAN_KEY, fingerprint.encode())
        txn.put(PROGRESS_KEY, b"0")
    return env, 0


def lmdb_meta(size: int, count: int, counts: dict[str, int]) -> dict[str, Any]:
    """The ``__meta__`` record: what a reader needs to decode and check the LMDB."""
    dtype = record_dtype(size)
    return {"format": RECORD_FORMAT, "size": size, "count": count, "record_bytes": dtype.itemsize,
            "counts": counts, "labels": LABELS,
            "fields": [[name, str(dtype[name].base), list(dtype[name].shape)] for name in dtype.names],
            "image": "uint8 BGR HxWx3; net input via mtcnn_caffe.net_input.images_to_blob"}


def _copy_records(env: Any, plan: Plan, done: int, block: int, bar: Any) -> int:
    """Copy plan records ``done:`` into ``env``, one transaction (records + progress) per block."""
    total = len(plan.rows)
    for start in range(done, total, block):
        stop = min(start + block, total)
        records = samples_to_records(read_planned(plan, start, stop))
        with env.begin(write=True) as txn:  # records and progress commit together
            for i, record in enumerate(records):
                txn.put(record_key(start + i), record.tobytes())
            txn.put(PROGRESS_KEY, str(stop).encode())
        bar.update(stop - start)
    return total - done


def _finish_lmdb(env: Any, partial: Path, final: Path, meta: dict[str, Any]) -> None:
    """Replace the resume bookkeeping by the meta record, flush, and rename the LMDB into place."""
    with env.begin(write=True) as txn:
        txn.delete(PLAN_KEY)
        txn.delete(PROGRESS_KEY)
        txn.put(META_KEY, json.dumps(meta, sort_keys=True).encode())
    env.sync(True)
    env.close()
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def write_lmdb(plan: Plan, out_dir: Path, block: int = 4096, progress: bool = True,
               extra_meta: dict[str, Any] | None = None) -> tuple[Path, int]:
    """Copy the planned records into ``out_dir/data.lmdb`` (resumable, renamed when complete).

    Returns the LMDB path and how many records this call wrote.
    """
    from tqdm import tqdm

    size, total = plan.sources[0][0].size, len(plan.rows)
    final, partial = out_dir / LMDB_NAME, out_dir / (LMDB_NAME + ".partial")
    map_size = int(total * (record_dtype(size).itemsize + 64) * 1.3) + (64 << 20)
    out_dir.mkdir(parents=True, exist_ok=True)
    env, done = _open_partial(partial, map_size, plan.fingerprint)
    try:
        with tqdm(total=total, initial=done, desc=f"lmdb {size}", unit="rec", disable=not progress,
                  dynamic_ncols=True) as bar:
            written = _copy_records(env, plan, done, block, bar)
    except BaseException:
        env.close()
        raise
    _finish_lmdb(env, partial, final, {**lmdb_meta(size, total, plan.counts), **(extra_meta or {})})
    return final, written


def check_imdb_fits(plan: Plan) -> None:
    """imdb pickles hold every crop in memory: refuse a plan beyond :data:`IMDB_MAX_BYTES`."""
    size = plan.sources[0][0].size
    nbytes = len(plan.rows) * size * size * 3
    if nbytes > IMDB_MAX_BYTES:
        raise ValueError(f"imdb pickles are for small sets: {len(plan.rows)} samples would hold "
                         f"{nbytes / 2**20:.0f} MiB of crops in memory (limit {IMDB_MAX_BYTES >> 20} MiB); "
                         "use the LMDB, or --limit")


def write_imdb(plan: Plan, out_dir: Path, block: int = 4096) -> list[Path]:
    """The seed's pickles: ``cls.imdb`` (neg + pos), ``roi.imdb`` (pos + part), ``pts.imdb`` (landmark).

    Each is a list of ``[crop, label, target]`` with ``crop`` uint8 BGR ``(s, s, 3)`` (the
    toolkit's stored-crop convention, *not* the seed's pre-normalised arrays), ``label`` an
    int and ``target`` float32 (4 box targets; 10 landmark targets in ``pts.imdb``).
    """
    check_imdb_fits(plan)
    lists: dict[str, list] = {"cls": [], "roi": [], "pts": []}
    for start in range(0, len(plan.rows), block):
        for s in read_planned(plan, start, min(start + block, len(plan.rows))):
            label = int(s["label"])
            crop = np.array(s["image"])
            if label in (LABELS["neg"], LABELS["pos"]):
                lists["cls"].append([crop, label, np.array(s["bbox"])])
            if label in (LABELS["pos"], LABELS["part"]):
                lists["roi"].append([crop, label, np.array(s["bbox"])])
            if label == LABELS["landmark"]:
                lists["pts"].append([crop, label, np.array(s["landmark"])])
    paths = []
    for name, items in lists.items():
        with atomic_path(out_dir / f"{name}.imdb") as tmp, open(tmp, "wb") as f:
            pickle.dump(items, f, protocol=pickle.HIGHEST_PROTOCOL)
        paths.append(out_dir / f"{name}.imdb")
    return paths


def check_pack_paths(data_dirs: Sequence[str | Path], out: str | Path) -> None:
    """Refuse a ``--data`` directory given twice (its samples would count twice) and an ``--out`` that is,
    or lies inside, a ``--data`` directory or holds a generator's samples (packing would damage them)."""
    if not data_dirs:
        raise ValueError("no --data directory given")
    seen: dict[Path, str] = {}
    for d in data_dirs:
        resolved = Path(d).resolve()
        if resolved in seen:
            raise ValueError(f"--data: {d} is given twice (as {seen[resolved]!r} and {str(d)!r})")
        seen[resolved] = str(d)
    out_dir = Path(out).resolve()
    for resolved, given in seen.items():
        if out_dir == resolved or resolved in out_dir.parents:
            raise ValueError(f"--out {out} is inside the --data directory {given}: choose another --out")
    if (out_dir / MANIFEST).is_file():
        raise ValueError(f"--out {out} holds a generator's samples ({MANIFEST}): choose another --out")


def open_stage_dirs(stage: int, data_dirs: Sequence[str | Path]) -> list[SampleDir]:
    """Open finished generator outputs and check they all hold ``stage x stage`` samples."""
    dirs = [open_sample_dir(d) for d in data_dirs]
    for d in dirs:
        if d.size != stage:
            raise ValueError(f"{d.path} holds {d.size}x{d.size} samples, not {stage}x{stage} (--stage {stage})")
    return dirs


def pack_stage(stage: int, data_dirs: Sequence[str | Path], out: str | Path, ratio: str | None = DEFAULT_RATIO,
               seed: int = 0, limit: int | None = None, imdb: bool = False, lmdb: bool = True,
               progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Combine generator outputs of one stage into ``out`` (LMDB and/or imdb pickles) + stats.json.

    A re-run continues an interrupted LMDB of the same selection; ``overwrite`` discards it first.
    """
    stage, ratios = check_size(stage), parse_ratio(ratio)  # every check before anything in `out` changes
    check_limit(limit)
    if not (lmdb or imdb):
        raise ValueError("nothing to write: --no-lmdb needs --imdb")
    check_pack_paths(data_dirs, out)
    dirs = open_stage_dirs(stage, data_dirs)
    started = time.time()
    plan = make_plan(dirs, ratios, seed, limit)
    if len(plan.rows) == 0:
        raise EmptyInputError(f"no samples selected from {', '.join(str(d.path) for d in dirs)}")
    if imdb:
        check_imdb_fits(plan)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS).unlink(missing_ok=True)
    if overwrite:
        for name in (LMDB_NAME, LMDB_NAME + ".partial"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    sources = [str(d.path) for d in dirs]
    written = 0
    if lmdb:
        _, written = write_lmdb(plan, out_dir, progress=progress, extra_meta={"sources": sources, "seed": seed})
    if imdb:
        write_imdb(plan, out_dir)
    stats = {**_pack_stats(plan, dirs, stage, out_dir if lmdb else None, imdb),
             "ratio": ratio or "all", "seed": seed, "records_written_this_run": written,
             "seconds_this_run": round(time.time() - started, 3)}
    write_json_atomic(out_dir / STATS, stats)
    return stats


def _pack_stats(plan: Plan, dirs: Sequence[SampleDir], stage: int, lmdb_dir: Path | None, imdb: bool
                ) -> dict[str, Any]:
    """Counts of the pack plus the inputs' skipped faces and failed images."""
    inputs = [d.stats() for d in dirs]
    return {
        **plan.counts,
        "skipped_faces": int(sum(s.get("skipped_faces", 0) for s in inputs)),
        "failed_images": int(sum(s.get("failed_images", 0) for s in inputs)),
        "stage": stage, "total": int(len(plan.rows)), "available": plan.available,
        "sources": [str(d.path) for d in dirs], "lmdb": str(lmdb_dir / LMDB_NAME) if lmdb_dir else None,
        "imdb": [f"{n}.imdb" for n in ("cls", "roi", "pts")] if imdb else [],
        "record_bytes": record_dtype(stage).itemsize,
    }
