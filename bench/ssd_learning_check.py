#!/usr/bin/env python3
"""MobileNet-SSD learning check: can the toolkit's Caffe training fit a handful of VOC images?

From random initialisation, on the first ``--images`` images of a VOC split (voc_mini by default):
create-data -> gen-model (``--width``, batch = the images) -> ``train`` -> ``test`` on the same
images (the mAP from Caffe's DetectionEvaluate and from the Python VOC evaluator) -> merge_bn of
the deploy net -> detections of the BN and the folded deploy nets compared image by image.
``--no-augment`` trains with the test net's transform (resize only): memorising is then the whole
task, which is what "it can learn" asks. With SSD's augmentation it is much slower to fit.

    .venv/bin/python bench/ssd_learning_check.py --out output/ssd_learning --iters 400 --no-augment

Prints one summary line and writes ``<out>/learning_check.json`` (all numbers, times per iteration).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def without_augmentation(train_net: Path) -> None:
    """Give the train net's AnnotatedData layer the test transform: resize only, no sampler, no mirror."""
    from google.protobuf import text_format

    from caffe_common.model_files import read_net_prototxt

    net = read_net_prototxt(train_net)
    data = next(layer for layer in net.layer if layer.type == "AnnotatedData")
    transform = data.transform_param
    transform.mirror = False
    for name in ("distort_param", "expand_param", "emit_constraint"):
        transform.ClearField(name)
    transform.resize_param.ClearField("interp_mode")
    transform.resize_param.interp_mode.append(transform.resize_param.LINEAR)
    del data.annotated_data_param.batch_sampler[:]
    data.annotated_data_param.batch_sampler.add()
    train_net.write_text(text_format.MessageToString(net))


def make_data(voc: Path, split: str, images: int, out: Path) -> tuple[Path, Path, Path, list[Path]]:
    """The first ``images`` records of the split as a train LMDB and an identical test LMDB."""
    from ssd_mobilenet.datasets import Dataset, convert, read_voc

    dataset = read_voc(voc, split)
    few = Dataset(dataset.records[:images], dataset.labelmap, dataset.log)
    convert(few, out, "train", overwrite=True)
    convert(few, out, "test", overwrite=True)
    return out / "train_lmdb", out / "test_lmdb", out / "labelmap.prototxt", [record.path for record in few.records]


def compare_detections(deploy: Path, weights: Path, folded: tuple[Path, Path], images: list[Path]) -> dict:
    """Largest box / score difference between the BN and the folded deploy nets' detections."""
    import numpy as np

    from caffe_common.images import read_image
    from ssd_mobilenet.detect import SsdDetector

    before = SsdDetector(deploy, weights, conf=0.1)
    after = SsdDetector(folded[0], folded[1], conf=0.1)
    box_diff = score_diff = 0.0
    counts = []
    for path in images:
        image = read_image(path)
        a, b = before.forward_rows(image), after.forward_rows(image)
        counts.append(int(len(a)))
        if a.shape != b.shape:
            return {"same_count": False, "counts": [len(a), len(b)], "image": str(path)}
        score_diff = max(score_diff, float(np.abs(a[:, 2] - b[:, 2]).max(initial=0)))
        box_diff = max(box_diff, float(np.abs(a[:, 3:] - b[:, 3:]).max(initial=0)))
    return {"same_count": True, "rows_per_image": counts, "max_score_diff": score_diff,
            "max_box_diff_normalised": box_diff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", type=Path, default=ROOT.parent / "shared" / "data" / "voc_mini")
    parser.add_argument("--split", default="trainval")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, help="train batch size (default: --images, the whole set per iteration)")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--base-lr", type=float, default=0.001)
    parser.add_argument("--test-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from caffe_common.merge_bn import merge_bn
    from caffe_common.solver import latest_snapshot
    from ssd_mobilenet.evaluation import SsdTester
    from ssd_mobilenet.model import resolve_config, write_model
    from ssd_mobilenet.training import train_ssd

    out = args.out
    data_dir, model_dir, run_dir = out / "data", out / "model", out / "run"
    train_lmdb, test_lmdb, labelmap, images = make_data(args.voc, args.split, args.images, data_dir)
    if not args.resume:
        config, notes = resolve_config(21, train_lmdb=train_lmdb, test_lmdb=test_lmdb, labelmap=labelmap,
                                       width=args.width)
        write_model(replace(config, train_batch_size=args.batch or args.images), model_dir, notes)
        if args.no_augment:
            without_augmentation(model_dir / "MobileNetSSD_train.prototxt")
    started = time.perf_counter()
    result = train_ssd(model_dir / "solver_train.prototxt", run_dir, max_iter=args.iters, base_lr=args.base_lr,
                       seed=args.seed, test_every=args.test_every, snapshot_every=args.test_every,
                       resume=latest_snapshot(run_dir) if args.resume else None, progress=False)
    train_s = time.perf_counter() - started
    tester = SsdTester(model_dir / "MobileNetSSD_test.prototxt", voc_root=args.voc)
    test = tester.run(tester.make_net(result.weights), detections_dir=out / "detections", split="train")
    merged = merge_bn(model_dir / "MobileNetSSD_deploy.prototxt", result.weights,
                      out / "deploy_merged.prototxt", out / "deploy_merged.caffemodel")
    same = compare_detections(model_dir / "MobileNetSSD_deploy.prototxt", result.weights,
                              (out / "deploy_merged.prototxt", out / "deploy_merged.caffemodel"), images)
    rows = list(__import__("csv").DictReader(open(result.log)))
    losses = [float(r["loss"]) for r in rows]
    report = {
        "command": " ".join(sys.argv), "images": args.images, "batch": args.batch or args.images, "width": args.width, "augment": not args.no_augment,
        "iterations": result.iterations, "train_seconds_this_run": train_s,
        "seconds_per_iteration": train_s / max(1, result.iterations - (int(rows[0]["iter"]) - 1 if args.resume else 0)),
        "loss_first_10": sum(losses[:10]) / len(losses[:10]), "loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
        "loss_by_tenth": [round(sum(part) / len(part), 4) for part in
                          (losses[k * len(losses) // 10:(k + 1) * len(losses) // 10] for k in range(10)) if part],
        "map_during_training": {r["iter"]: float(r["map"]) for r in rows if r.get("map")},
        "test": test.as_dict(), "merge_bn_written": merged.written, "merge_bn_same_detections": same,
    }
    (out / "learning_check.json").write_text(json.dumps(report, indent=1))
    print(f"{result.iterations} iterations ({report['seconds_per_iteration']:.2f} s/it), loss "
          f"{report['loss_first_10']:.2f} -> {report['loss_last_10']:.2f}; {test.summary_line()}; merge_bn: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
