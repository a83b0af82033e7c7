#!/usr/bin/env python3
"""Speed and memory of the MTCNN data pipeline, measured side by side in one run.

* 12-net sample generation (``prepare_data/gen_12net_data.py``) with ``-j 1`` and ``-j 2``;
* hard-example mining for the 24-net (``prepare_data/gen_hard_example.py --stage 24``, P-Net
  with the default weights, Caffe and OpenCV DNN backends) and for the 48-net (P-Net + R-Net,
  Caffe), each with ``-j 1`` and ``-j 2``;
* decoding a training LMDB batch: this toolkit's fixed-size records vs. the same samples as
  Caffe ``Datum`` protobufs (what a Caffe ``Data`` layer would read).

Each generator run is a separate process tree; its peak RSS is sampled from ``/proc`` (sum
over the tree and the largest single process). Needs ``../shared/data/wider_train_subset``.

    .venv/bin/python bench/data_speed.py [--gen-images 300] [--mine-images 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MTCNN_CAFFE_SHARED", REPO.parent / "shared"))
WIDER = SHARED / "data" / "wider_train_subset"


def _tree_pids(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str]) -> tuple[float, int, int]:
    """Run ``cmd``; return wall seconds, peak RSS of the whole process tree and of one process (KiB)."""
    peak_tree, peak_one = 0, 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree, peak_one
        while not done.is_set():
            rss = [_rss_kb(p) for p in _tree_pids(proc.pid)]
            peak_tree, peak_one = max(peak_tree, sum(rss)), max([peak_one] + rss)
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return time.perf_counter() - start, peak_tree, peak_one


def bench_generator(script: str, extra: list[str], images: int, jobs: int, out: Path) -> dict:
    anno = WIDER / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    cmd = [sys.executable, f"prepare_data/{script}", "--anno", str(anno),
           "--images", str(WIDER / "WIDER_train" / "images"), "--out", str(out), "--limit", str(images),
           "-j", str(jobs), "--no-progress", *extra]
    wall, tree, one = run_measured(cmd)
    stats = json.loads((out / "stats.json").read_text())
    return {"jobs": jobs, "images": images, "samples": stats["samples"], "wall_s": wall,
            "gen_s": stats["seconds_this_run"], "samples_per_s": stats["samples"] / stats["seconds_this_run"],
            "images_per_s": images / stats["seconds_this_run"], "peak_rss_tree_mib": tree / 1024,
            "peak_rss_one_mib": one / 1024, "out": out}


def _write_datum_lmdb(records, path: Path) -> Path:
    """The same samples as Caffe Datum protobufs (crop as CHW bytes, label, targets as float_data)."""
    import lmdb
    import numpy as np

    from caffe_common.env import import_caffe

    import_caffe()
    from caffe.proto import caffe_pb2

    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, r in enumerate(records):
            d = caffe_pb2.Datum(channels=3, height=12, width=12, data=r["image"].transpose(2, 0, 1).tobytes(),
                                label=int(r["label"]))
            d.float_data.extend(np.concatenate([r["bbox"], r["landmark"]]).tolist())
            txn.put(b"%010d" % i, d.SerializeToString())
    env.close()
    return path


def bench_decode(sample_dir: Path, tmp: Path, batch: int = 256, rounds: int = 40) -> dict:
    """Records/s decoding batches into net input: raw records vs Datum protobufs."""
    import lmdb
    import numpy as np

    from caffe_common.env import import_caffe
    from mtcnn_caffe.data import pack
    from mtcnn_caffe.data.lmdb_io import RecordReader
    from mtcnn_caffe.net_input import images_to_blob

    import_caffe()
    from caffe.proto import caffe_pb2

    pack.pack_stage(12, [sample_dir], tmp / "pack", ratio="all", progress=False)
    reader = RecordReader(tmp / "pack")
    n = min(len(reader), batch * rounds)
    datum_path = _write_datum_lmdb(reader.read(0, n), tmp / "datum.lmdb")

    def ours() -> None:
        for start in range(0, n, batch):
            recs = reader.read(start, batch)
            images_to_blob(recs["image"]), recs["label"], recs["bbox"], recs["landmark"]

    denv = lmdb.open(str(datum_path), readonly=True, lock=False)

    def datum() -> None:
        with denv.begin() as txn:
            cursor = txn.cursor()
            cursor.first()
            for start in range(0, n, batch):
                images, labels, targets = [], [], []
                for _ in range(batch):
                    d = caffe_pb2.Datum()
                    d.ParseFromString(cursor.value())
                    images.append(np.frombuffer(d.data, np.uint8).reshape(3, 12, 12))
                    labels.append(d.label)
                    targets.append(np.asarray(d.float_data, np.float32))
                    if not cursor.next():
                        cursor.first()
                blob = np.stack(images).transpose(0, 2, 3, 1)
                images_to_blob(blob), np.asarray(labels), np.stack(targets)

    timings = {}
    for name, fn in (("records", ours), ("datum", datum)):
        fn()  # warm the page cache
        best = min(_timed(fn) for _ in range(3))
        timings[name] = n / best
    reader.close()
    denv.close()
    return {"batch": batch, "samples": n, "records_per_s": timings["records"], "datum_per_s": timings["datum"]}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gen-images", type=int, default=300, help="images for the 12-net generation runs")
    parser.add_argument("--mine-images", type=int, default=64, help="images for the mining runs")
    args = parser.parse_args()
    if not WIDER.is_dir():
        print(f"needs {WIDER}", file=sys.stderr)
        return 1
    print(f"# data pipeline speed, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        rows = []
        for case, (label, script, extra, images) in enumerate((
            ("12-net generation", "gen_12net_data.py", [], args.gen_images),
            ("mining 24 (P-Net, Caffe)", "gen_hard_example.py", ["--stage", "24"], args.mine_images),
            ("mining 24 (P-Net, OpenCV DNN)", "gen_hard_example.py", ["--stage", "24", "--backend", "opencv"],
             args.mine_images),
            ("mining 48 (P+R-Net, Caffe)", "gen_hard_example.py", ["--stage", "48"], args.mine_images),
        )):
            results = [bench_generator(script, extra, images, jobs, tmp / f"case{case}_j{jobs}") for jobs in (1, 2)]
            for r in results:
                rows.append((label, r))
                print(f"{label:30s} -j {r['jobs']}: {r['images']:4d} images, {r['samples']:6d} samples, "
                      f"{r['samples_per_s']:8.1f} samples/s, {r['images_per_s']:6.2f} images/s, "
                      f"peak RSS tree {r['peak_rss_tree_mib']:6.1f} MiB "
                      f"(largest process {r['peak_rss_one_mib']:6.1f} MiB)")
            assert results[0]["samples"] == results[1]["samples"], "-j changed the samples"
            print(f"{label:30s} speed-up -j 2 / -j 1: {results[1]['samples_per_s'] / results[0]['samples_per_s']:.2f}x")
        dec = bench_decode(rows[0][1]["out"], tmp)
        print(f"LMDB decode to net input (12x12, batch {dec['batch']}, {dec['samples']} samples): "
              f"records {dec['records_per_s']:,.0f}/s, Datum protobuf {dec['datum_per_s']:,.0f}/s, "
              f"ratio {dec['records_per_s'] / dec['datum_per_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
