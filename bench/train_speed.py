"""MTCNN training throughput per stage: the data layer alone vs a whole training iteration, side by side.

The data layer must feed Caffe faster than the net consumes: both are measured here in one run, in
samples per second, on real packs (``gen_net_imdb.py`` output) with each stage's default batch size::

    .venv/bin/python bench/train_speed.py --packs output/cascade_interview/data [--iters 30]

``--packs`` holds ``12/pack``, ``24/pack``, ``48/pack`` (stages without a pack are skipped; ``--stages 48``
picks some). ``--layer-types`` adds the forward + backward milliseconds per iteration of each layer type
(``Net._forward(i, i)`` / ``_backward(i, i)`` layer by layer). ``--caffe DIR ...`` measures several Caffe builds
side by side in one run, each in its own process with ``DIR`` (a folder holding a built ``caffe`` package, e.g.
an entry of ``~/.cache/mtcnn-caffe``) first on its path, and prints each build's time per iteration relative to
the first one's::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/train_speed.py --packs DIR --stages 48 \
        --layer-types --caffe ~/.cache/mtcnn-caffe/OLD_KEY ~/.cache/mtcnn-caffe/NEW_KEY
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def layer_type_ms(net, iters: int) -> dict[str, float]:
    """Forward + backward milliseconds per iteration of each layer type, layer by layer."""
    spent: dict[str, float] = defaultdict(float)
    kinds = [layer.type for layer in net.layers]
    for _ in range(iters):
        for i, kind in enumerate(kinds):
            start = time.perf_counter()
            net._forward(i, i)
            spent[kind] += time.perf_counter() - start
        for i in reversed(range(len(kinds))):
            start = time.perf_counter()
            net._backward(i, i)
            spent[kinds[i]] += time.perf_counter() - start
    return {kind: round(1000 * seconds / iters, 1) for kind, seconds in sorted(spent.items(), key=lambda kv: -kv[1])}


def measure(size: int, pack: Path, iters: int, by_type: bool = False) -> dict:
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
        layers = layer_type_ms(solver.net, iters) if by_type else None
    batch = recipe.batch_size
    row = {"stage": size, "batch": batch, "data_layer_samples_per_s": round(batch * iters / data_s),
           "iteration_samples_per_s": round(batch * iters / step_s),
           "ms_per_iteration": round(1000 * step_s / iters, 1),
           "data_share_of_iteration": round(data_s / step_s, 3)}
    if layers is not None:
        row["layer_type_ms"] = layers
    return row


def rows_with_build(build: Path, argv: list[str]) -> list[dict]:
    """This script's rows in a process that imports the ``caffe`` package in ``build``."""
    if not (build / "caffe" / "__init__.py").is_file():
        raise SystemExit(f"--caffe {build}: no caffe package there")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(build.resolve()), str(Path(__file__).resolve().parents[1])])}
    out = subprocess.run([sys.executable, __file__, *argv], env=env, check=True, capture_output=True, text=True).stdout
    return [{"caffe": build.name, **json.loads(line)} for line in out.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=Path, required=True, help="folder with 12/pack, 24/pack, 48/pack")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--stages", type=int, nargs="+", choices=(12, 24, 48), default=(12, 24, 48))
    parser.add_argument("--layer-types", action="store_true", help="also time each layer type")
    parser.add_argument("--caffe", type=Path, nargs="+", metavar="DIR", help="Caffe builds to compare (see above)")
    args = parser.parse_args()
    print(f"# OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')} cores={os.cpu_count()}")
    if args.caffe:
        argv = ["--packs", str(args.packs), "--iters", str(args.iters), "--stages", *map(str, args.stages)]
        argv += ["--layer-types"] if args.layer_types else []
        runs = [rows_with_build(build, argv) for build in args.caffe]
        for rows in runs:
            for row in rows:
                print(json.dumps(row))
        for first, *others in zip(*runs):
            for row in others:
                print(f"# stage {row['stage']}: {row['caffe']} takes {row['ms_per_iteration'] / first['ms_per_iteration']:.2f}x "
                      f"the time per iteration of {first['caffe']}")
        return 0
    rows = [measure(size, args.packs / str(size) / "pack", args.iters, args.layer_types)
            for size in args.stages if (args.packs / str(size) / "pack").is_dir()]
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
