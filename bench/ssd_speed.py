#!/usr/bin/env python3
"""MobileNet-SSD speed: Caffe with grouped convolution vs Caffe with the native depthwise layer vs OpenCV DNN.

    .venv/bin/python bench/ssd_speed.py [--runs 20] [--train-iters 5] [--threads 1,2]

One run measures side by side, for each thread count (a child process per count, with
``OPENBLAS_NUM_THREADS`` / ``cv2.setNumThreads`` set; the native layer uses as many threads as
OpenBLAS has):

* forward of the 21-class MobileNet-SSD 300x300 deploy net written by gen-model, with BatchNorm and
  folded by merge_bn, in three engines: Caffe with the 13 depthwise convolutions as grouped
  ``Convolution``, Caffe with ``ConvolutionDepthwise``, OpenCV DNN (which reads the same native files as
  grouped convolution). All nets take turns in every run; medians of ``--runs``;
* where the folded net's time goes, per layer type (the depthwise ``*/dw`` layers apart), in each engine;
* one training iteration (forward + backward of gen-model's train net, batch 8, data from a small
  synthetic LMDB, MultiBoxLoss) with each depthwise layer type; medians of ``--train-iters``.

Weights are random (speed does not depend on the values); the outputs of the three engines are compared
on the way. Prints Markdown tables for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.merge_bn_speed import random_bn_weights, timed_forwards  # noqa: E402

SIZE, CLASSES, TRAIN_BATCH = 300, 21, 8
KINDS = ("grouped", "native")  # the depthwise spellings, files deploy_<kind>[_nobn].prototxt
ENGINES = ("caffe grouped", "caffe native", "opencv")
NETS = ("BN", "folded")


# --------------------------------------------------------------------------- files (parent process)
def _synthetic_lmdb(folder: Path, count: int) -> Path:
    """``count`` random 400x300 images with two boxes each, as gen-model's train net reads them."""
    import cv2

    from ssd_mobilenet.annotated_lmdb import AnnotatedImage, LabeledBox, write_annotated_lmdb

    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
        items.append(AnnotatedImage(path, [LabeledBox(1 + i % 20, 0.1, 0.2, 0.6, 0.7),
                                           LabeledBox(2 + i % 19, 0.5, 0.4, 0.9, 0.95)]))
    write_annotated_lmdb(folder / "train_lmdb", items)
    return folder / "train_lmdb"


def prepare(workdir: Path) -> dict[str, str]:
    """gen-model's deploy and train nets in both spellings, random weights, the merge_bn-folded deploy nets."""
    from caffe_common.depthwise import NATIVE_TYPE
    from caffe_common.env import import_caffe
    from caffe_common.merge_bn import merge_bn
    from ssd_mobilenet.model import SsdModelConfig, net_text

    caffe = import_caffe()
    lmdb = _synthetic_lmdb(workdir, 2 * TRAIN_BATCH)
    files: dict[str, str] = {}
    for kind, layer_type in zip(KINDS, (None, NATIVE_TYPE)):
        # one path per train net: Caffe shares one reader between data layers with the same name and source
        source = workdir / f"train_lmdb_{kind}"
        source.symlink_to(lmdb, target_is_directory=True)
        config = SsdModelConfig(CLASSES, size=SIZE, depthwise_type=layer_type, train_lmdb=str(source),
                                train_batch_size=TRAIN_BATCH)
        for phase in ("deploy", "train"):
            path = workdir / f"{phase}_{kind}.prototxt"
            path.write_text(net_text(config, phase))
            files[f"{phase} {kind}"] = str(path)
    weights = random_bn_weights(caffe, Path(files["deploy grouped"]), workdir / "random.caffemodel")
    files["weights"] = str(weights)
    for kind in KINDS:
        out = workdir / f"deploy_{kind}_nobn.prototxt", workdir / f"{kind}_nobn.caffemodel"
        merge_bn(files[f"deploy {kind}"], weights, *out, verify=False)
        files[f"folded {kind}"], files[f"folded weights {kind}"] = map(str, out)
    return files


# --------------------------------------------------------------------------- measuring (child process)
def _category(name: str, layer_type: str) -> str:
    return "depthwise conv (*/dw)" if name.endswith("/dw") else layer_type


def _caffe_layer_ms(net: Any, runs: int) -> dict[str, float]:
    """Median milliseconds per layer category of one forward, each layer timed on its own."""
    per_run = []
    for _ in range(runs):
        times: dict[str, float] = defaultdict(float)
        for i, (name, layer) in enumerate(zip(net._layer_names, net.layers)):
            start = time.perf_counter()
            net._forward(i, i)
            times[_category(name, layer.type)] += (time.perf_counter() - start) * 1e3
        per_run.append(times)
    return {key: float(np.median([t.get(key, 0.0) for t in per_run])) for key in per_run[0]}


def _opencv_layer_ms(net: Any, runs: int) -> dict[str, float]:
    """The same from OpenCV's own per-layer profile (layers it fused into a convolution count as 0)."""
    import cv2

    names = net.getLayerNames()
    per_run = []
    for _ in range(runs):
        net.forward()
        _, ticks = net.getPerfProfile()
        times: dict[str, float] = defaultdict(float)
        for name, tick in zip(names, np.ravel(ticks)):
            layer = net.getLayer(name)
            times[_category(name, layer.type)] += float(tick) * 1e3 / cv2.getTickFrequency()
        per_run.append(times)
    return {key: float(np.median([t.get(key, 0.0) for t in per_run])) for key in per_run[0]}


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _forward_nets(files: dict[str, str], net_kind: str, blob: np.ndarray) -> dict[str, Any]:
    """The three engines' nets for the BN or the folded deploy net, each with ``blob`` as input."""
    from caffe_common.backends import read_opencv_net
    from caffe_common.merge_bn import load_caffe_net

    nets = {}
    for kind in KINDS:
        model = files[f"deploy {kind}"] if net_kind == "BN" else files[f"folded {kind}"]
        weights = files["weights"] if net_kind == "BN" else files[f"folded weights {kind}"]
        nets[f"caffe {kind}"] = load_caffe_net(model, weights)
        nets[f"caffe {kind}"].blobs["data"].data[...] = blob
    native_model = files["deploy native"] if net_kind == "BN" else files["folded native"]
    native_weights = files["weights"] if net_kind == "BN" else files["folded weights native"]
    nets["opencv"] = read_opencv_net(native_model, native_weights)  # native files, read as grouped convolution
    nets["opencv"].setInput(blob)
    return nets


def _train_iteration_ms(files: dict[str, str], iters: int) -> dict[str, float]:
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    nets = {kind: caffe.Net(files[f"train {kind}"], caffe.TRAIN) for kind in KINDS}
    for net in nets.values():
        net.copy_from(files["weights"])
        net.forward()  # warm-up (and the data layer's first prefetch)
        net.backward()
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(iters):
        for kind, net in nets.items():
            start = time.perf_counter()
            net.forward()
            net.backward()
            times[kind].append((time.perf_counter() - start) * 1e3)
    return {kind: float(np.median(values)) for kind, values in times.items()}


def measure(files: dict[str, str], threads: int, runs: int, train_iters: int) -> dict[str, Any]:
    """Everything for one thread count (this process was started with that many BLAS threads)."""
    import cv2

    from caffe_common.env import import_caffe, openblas_kernels

    import_caffe()  # loads OpenBLAS (with the kernels import_caffe names)
    cv2.setNumThreads(threads)
    blob = np.random.default_rng(0).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    result: dict[str, Any] = {"threads": threads, "forward_ms": {}, "layers_ms": {}, "agreement": {},
                              "openblas_core": openblas_kernels() or "not OpenBLAS"}
    for net_kind in NETS:
        nets = _forward_nets(files, net_kind, blob)
        outputs = {"opencv": np.asarray(nets["opencv"].forward("mbox_conf_flatten"))}  # also the warm-ups
        for name in ENGINES[:2]:
            nets[name].forward()
            outputs[name] = nets[name].blobs["mbox_conf_flatten"].data.copy()
        result["agreement"][net_kind] = {name: _max_rel(outputs["caffe grouped"], outputs[name])
                                         for name in ("caffe native", "opencv")}
        times = np.median(timed_forwards([nets[name] for name in ENGINES], runs), axis=0)[:, 0] * 1e3
        result["forward_ms"][net_kind] = dict(zip(ENGINES, map(float, times)))
        if net_kind == "folded":
            layer_runs = max(3, runs // 4)
            result["layers_ms"] = {name: _caffe_layer_ms(nets[name], layer_runs) for name in ENGINES[:2]}
            result["layers_ms"]["opencv"] = _opencv_layer_ms(nets["opencv"], layer_runs)
    if train_iters:
        result["train_ms"] = _train_iteration_ms(files, train_iters)
    return result


# --------------------------------------------------------------------------- report
def _forward_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| net | threads | Caffe grouped (ms) | Caffe native (ms) | OpenCV DNN (ms) | native vs grouped "
             "| native vs OpenCV |", "|---|---|---|---|---|---|---|"]
    for net_kind in NETS:
        for result in results:
            ms = result["forward_ms"][net_kind]
            lines.append(f"| {net_kind} | {result['threads']} | {ms['caffe grouped']:.1f} | {ms['caffe native']:.1f} "
                         f"| {ms['opencv']:.1f} | {ms['caffe grouped'] / ms['caffe native']:.2f}x "
                         f"| {ms['opencv'] / ms['caffe native']:.2f}x |")
    return lines


def _layer_table(result: dict[str, Any]) -> list[str]:
    layers = result["layers_ms"]
    categories = sorted({c for times in layers.values() for c in times},
                        key=lambda c: -max(times.get(c, 0.0) for times in layers.values()))
    lines = [f"| layer type (folded net, {result['threads']} thread(s)) | Caffe grouped (ms) | Caffe native (ms) "
             "| OpenCV DNN (ms) |", "|---|---|---|---|"]
    for category in categories:
        cells = " | ".join(f"{layers[name].get(category, 0.0):.1f}" for name in ENGINES)
        lines.append(f"| {category} | {cells} |")
    totals = " | ".join(f"{sum(layers[name].values()):.1f}" for name in ENGINES)
    lines.append(f"| sum | {totals} |")
    return lines


def _train_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [f"| training iteration (batch {TRAIN_BATCH}) | threads | grouped Convolution (ms) "
             "| ConvolutionDepthwise (ms) | speed-up |", "|---|---|---|---|---|"]
    for result in results:
        if "train_ms" in result:
            ms = result["train_ms"]
            lines.append(f"| forward + backward | {result['threads']} | {ms['grouped']:.0f} | {ms['native']:.0f} "
                         f"| {ms['grouped'] / ms['native']:.2f}x |")
    return lines


def report(results: list[dict[str, Any]]) -> str:
    cores = sorted({result["openblas_core"] for result in results})
    lines = [f"Caffe's OpenBLAS kernels: {', '.join(cores)} (OPENBLAS_CORETYPE="
             f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')})", ""]
    lines += _forward_table(results) + [""]
    for result in results:
        lines += _layer_table(result) + [""]
    lines += _train_table(results) + [""]
    for result in results:
        for net_kind, diffs in result["agreement"].items():
            shown = ", ".join(f"{name} {value:.1e}" for name, value in diffs.items())
            lines.append(f"- {net_kind} net, {result['threads']} thread(s): mbox_conf_flatten max rel diff to "
                         f"Caffe grouped: {shown}")
    return "\n".join(lines)


def _run_child(files_json: Path, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--child", str(files_json), "--threads", str(threads),
               "--runs", str(args.runs), "--train-iters", str(args.train_iters)]
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"measuring with {threads} thread(s) failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed forwards of each net (default 20)")
    parser.add_argument("--train-iters", type=int, default=5, help="timed training iterations per net (default 5)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated thread counts (default: 1 and all cores)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        files = json.loads(args.child.read_text())
        print(json.dumps(measure(files, int(args.threads), args.runs, args.train_iters)))
        return 0
    counts = sorted({int(t) for t in args.threads.split(",")})
    print(f"MobileNet-SSD {SIZE}x{SIZE}, {CLASSES} classes, {os.cpu_count()} cores, {args.runs} alternating runs "
          f"per net (median), {args.train_iters} training iterations; load average before "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ssd-speed-") as tmp:
        files_json = Path(tmp) / "files.json"
        files_json.write_text(json.dumps(prepare(Path(tmp))))
        results = [_run_child(files_json, threads, args) for threads in counts]
    print(report(results))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
