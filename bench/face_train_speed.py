#!/usr/bin/env python3
"""Training speed of the face network per backbone BatchNorm form, side by side in one run.

Builds the train net of each ``--modes`` form (:data:`ssd_mobilenet.faces.model.BACKBONE_BN`: "affine" =
the frozen BatchNorm held by its Scale alone, "frozen" = BatchNorm layers at the stored statistics, "folded" =
folded into the convolutions) on a real face index, starts each from its ImageNet weights and times whole
solver iterations (forward, backward, update), taking turns iteration by iteration so that a changing machine
load hits every form alike; the data layer alone is timed too. Prints a table (median s/iteration,
samples/s, speed relative to "frozen") and writes it as JSON with ``--json``::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/face_train_speed.py \\
        --index RUN/data/train_index.jsonl [--size 320] [--batch 16] [--iters 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_solver(mode: str, index: Path, size: int, batch: int, work: Path):
    """A solver over the train net of backbone form ``mode``, with its ImageNet initial weights."""
    from caffe_common.depthwise import resolve_depthwise
    from caffe_common.env import import_caffe
    from ssd_mobilenet.faces import model as fm
    from ssd_mobilenet.faces.training import imagenet_init

    caffe = import_caffe()
    config = fm.FaceModelConfig(size=size, batch_size=batch, index=str(index.resolve()), backbone_bn=mode,
                                depthwise_type=resolve_depthwise("auto"))
    out = work / mode
    files = fm.write_nets(config, out, 1000).files
    solver = caffe.get_solver(str(files[fm.SOLVER]))
    solver.net.copy_from(str(imagenet_init(work, mode)))
    return solver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True,
                        help="a face index (train-faces' OUT/data/train_index.jsonl)")
    parser.add_argument("--modes", nargs="+", default=["affine", "frozen", "folded"], help="backbone forms to compare")
    parser.add_argument("--size", type=int, default=320, help="input side (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="images per iteration (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=6, help="timed iterations per form (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.index.is_file():
        parser.error(f"--index {args.index}: no such file")

    with tempfile.TemporaryDirectory() as tmp:
        solvers = {mode: build_solver(mode, args.index, args.size, args.batch, Path(tmp)) for mode in args.modes}
        for solver in solvers.values():
            solver.step(1)  # warm-up: first allocations, the data layer's first batch
        times: dict[str, list[float]] = {mode: [] for mode in solvers}
        data_times = []
        for _ in range(args.iters):
            for mode, solver in solvers.items():
                start = time.perf_counter()
                solver.step(1)
                times[mode].append(time.perf_counter() - start)
            net = next(iter(solvers.values())).net
            start = time.perf_counter()
            net._forward(0, 0)  # the data layer alone (Caffe's Forward reshapes first: the batch is made there)
            data_times.append(time.perf_counter() - start)
    reference = statistics.median(times["frozen"]) if "frozen" in times else None
    rows = {mode: {"s_per_iter": round(statistics.median(t), 3),
                   "samples_per_s": round(args.batch / statistics.median(t), 2),
                   "speed_vs_frozen": round(reference / statistics.median(t), 2) if reference else None}
            for mode, t in times.items()}
    data = {"s_per_batch": round(statistics.median(data_times), 3),
            "samples_per_s": round(args.batch / statistics.median(data_times), 1)}
    print(f"face net training, {args.size} x {args.size}, batch {args.batch}, median of {args.iters} iterations:")
    print(f"{'form':<8} {'s/iter':>8} {'samples/s':>10} {'vs frozen':>10}")
    for mode, row in rows.items():
        ratio = f"{row['speed_vs_frozen']:.2f}x" if row["speed_vs_frozen"] else "-"
        print(f"{mode:<8} {row['s_per_iter']:>8.3f} {row['samples_per_s']:>10.2f} {ratio:>10}")
    print(f"data layer alone: {data['s_per_batch']:.3f} s/batch ({data['samples_per_s']:.1f} samples/s)")
    if args.json:
        from caffe_common.atomic import write_json_atomic

        write_json_atomic(args.json, {"size": args.size, "batch": args.batch, "iters": args.iters,
                                      "forms": rows, "data_layer": data}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
