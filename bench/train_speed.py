"""MTCNN training throughput per stage: the data layer alone vs a whole training iteration, side by side.

The data layer must feed Caffe faster than the net consumes: both are measured here in one run, in
samples per second, on real packs (``gen_net_imdb.py`` output) with each stage's default batch size::

    .venv/bin/python bench/train_speed.py --packs output/cascade_interview/data [--iters 30]

``--packs`` holds ``12/pack``, ``24/pack``, ``48/pack`` (stages without a pack are skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(size: int, pack: Path, iters: int) -> dict:
    from caffe_common.env import import_caffe
    from mtcnn_caffe.nets.train import RECIPES, solver_text, train_net

    caffe = import_caffe()
    recipe = RECIPES[size].with_options(source=str(pack.resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        net_file = Path(tmp) / "train.prototxt"
        net_file.write_text(str(train_net(recipe, "train")))
        solver_file = Path(tmp) / "solver.prototxt"
        solver_file.write_text(solver_text(recipe, str(net_file)))
        solver = caffe.get_solver(str(solver_file))
        data = solver.net.layers[0]
        solver.step(2)  # warm-up
        start = time.perf_counter()
        for _ in range(iters):
            data.forward([], [solver.net.blobs[name] for name in ("data", "label", "cls_label", "roi", "pts")])
        data_s = time.perf_counter() - start
        start = time.perf_counter()
        solver.step(iters)
        step_s = time.perf_counter() - start
    batch = recipe.batch_size
    return {"stage": size, "batch": batch, "data_layer_samples_per_s": round(batch * iters / data_s),
            "iteration_samples_per_s": round(batch * iters / step_s),
            "ms_per_iteration": round(1000 * step_s / iters, 1),
            "data_share_of_iteration": round(data_s / step_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=Path, required=True, help="folder with 12/pack, 24/pack, 48/pack")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    print(f"# OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')} cores={os.cpu_count()}")
    rows = [measure(size, args.packs / str(size) / "pack", args.iters)
            for size in (12, 24, 48) if (args.packs / str(size) / "pack").is_dir()]
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
