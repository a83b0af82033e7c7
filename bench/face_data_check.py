#!/usr/bin/env python3
"""The face network's training data, measured (issue 13): the smallest face worth keeping, partial faces
per epoch, and the data layer's speed next to a MobileNetV2 training step.

1. **Smallest face**: every valid face of ``wider_train_subset`` resized with its image to 320 x 320 (the
   test transform), its best IoU with the face priors (square, 16/32/64/128/256 px at strides
   8/16/32/64/128, centres at ``(i + 0.5) * stride``), tabulated by face size ``sqrt(w * h)`` in net pixels,
   next to the bound ``f**2 / 16**2`` of a face centred in the smallest prior. The chosen
   ``MIN_FACE_PX`` and the index floor ``MIN_FACE`` come from ``ssd_mobilenet.faces.dataset``.
2. **One epoch of augmentation** over the training index (every image once, one seeded generator each):
   faces, partial faces (kind 2), dropped faces, per epoch.
3. **Speed**: ``FaceDataLayer`` batches/s at batch 16, size 320, in Caffe; and one forward + backward
   of MobileNetV2 (width 1, 320 x 320, batch 16, training-mode BatchNorm) for comparison.

    .venv/bin/python bench/face_data_check.py [--index DIR/train_index.jsonl] [--epoch-images N]
                                              [--speed-batches 10] [--net-iters 2] [--no-net]

Needs ``../shared/data`` (env ``MTCNN_CAFFE_SHARED``); without ``--index`` the index is built in a
temporary folder (default hold-out: Interview).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MTCNN_CAFFE_SHARED", REPO.parent / "shared"))
WIDER = SHARED / "data" / "wider_train_subset"
LANDMARKS = SHARED / "data" / "landmarks_5pt"
PRIORS = ((16, 8), (32, 16), (64, 32), (128, 64), (256, 128))
SIZE_EDGES = (0, 4, 6, 8, 9, 10, 11, 12, 14, 16, 24, 32, 64, 128, 320)


def square_priors(size: int = 320) -> np.ndarray:
    """``(P, 4)`` pixel boxes of the assumed face priors on a ``size`` input."""
    out = []
    for side, step in PRIORS:
        centres = (np.arange(math.ceil(size / step)) + 0.5) * step
        cx, cy = np.meshgrid(centres, centres)
        out.append(np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], -1).reshape(-1, 4))
    return np.concatenate(out)


def wider_faces_at_input(size: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """``(faces (F, 4) in net pixels, sqrt(w * h) / short side of the image (F,))``."""
    from caffe_common.face_annotations import read_wider_gt
    from caffe_common.images import header_size

    boxes, rel = [], []
    images = WIDER / "WIDER_train" / "images"
    for item in read_wider_gt(WIDER / "wider_face_split" / "wider_face_train_bbx_gt.txt").items:
        with open(images / item.name, "rb") as f:
            width, height = header_size(f.read(1 << 16))
        keep = item.valid & (item.boxes[:, 2] > 0) & (item.boxes[:, 3] > 0)
        xyxy = np.column_stack([item.boxes[keep, :2], item.boxes[keep, :2] + item.boxes[keep, 2:4]])
        boxes.append(xyxy * np.array([size / width, size / height] * 2))
        side = np.sqrt(item.boxes[keep, 2] * item.boxes[keep, 3])
        rel.append(side / min(width, height))
    return np.concatenate(boxes), np.concatenate(rel)


def min_face_table(size: int = 320) -> dict:
    from caffe_common.boxes import iou_matrix
    from ssd_mobilenet.faces.dataset import MIN_CROP_SCALE, MIN_FACE, MIN_FACE_PX

    faces, rel = wider_faces_at_input(size)
    best = iou_matrix(faces, square_priors(size)).max(axis=1)
    side = np.sqrt((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]))
    print(f"1. best prior IoU of the {len(faces)} valid WIDER faces, image resized to {size}x{size} "
          f"(median face {np.median(side):.1f} px)")
    print(f"{'face px':>9} {'faces':>6} {'bound':>6} {'median':>7} {'max':>5} {'>=0.35':>7} {'>=0.5':>6}")
    rows = []
    for low, high in itertools.pairwise(SIZE_EDGES):
        m = (side >= low) & (side < high)
        if not m.any():
            continue
        bound = round(min(1.0, (high / PRIORS[0][0]) ** 2), 2) if high <= PRIORS[0][0] else "-"
        row = {"px": f"{low}-{high}", "faces": int(m.sum()), "bound_at_top": bound,
               "median": round(float(np.median(best[m])), 2), "max": round(float(best[m].max()), 2),
               "reach_0.35": round(float(np.mean(best[m] >= 0.35)), 2),
               "reach_0.5": round(float(np.mean(best[m] >= 0.5)), 2)}
        rows.append(row)
        print(f"{row['px']:>9} {row['faces']:>6} {row['bound_at_top']:>6} {row['median']:>7} {row['max']:>5} "
              f"{row['reach_0.35']:>7} {row['reach_0.5']:>6}")
    below_detector = float(np.mean(side < MIN_FACE_PX))
    below_index = rel < MIN_FACE
    print(f"chosen: MIN_FACE_PX {MIN_FACE_PX:g} net px (square bound: 16*sqrt(0.35) = {16 * math.sqrt(0.35):.1f}); "
          f"detector view {MIN_FACE_PX / size:.4f} of the long side of a square image ({below_detector:.0%} of the "
          f"faces are smaller); index floor MIN_FACE {MIN_FACE:.4f} of the short side (deepest crop "
          f"{MIN_CROP_SCALE}) drops {below_index.sum()} faces ({below_index.mean():.1%})")
    return {"rows": rows, "median_face_px": float(np.median(side)), "below_min_face_px": below_detector,
            "index_floor_drops": int(below_index.sum())}


def epoch_counts(index_path: Path, limit: int | None) -> dict:
    from caffe_common.images import read_image
    from ssd_mobilenet.faces.augment import AugmentConfig, augment, record_truth
    from ssd_mobilenet.faces.dataset import read_face_index
    from ssd_mobilenet.faces.targets import IGNORE_KIND

    index = read_face_index(index_path)
    records = index.records[:limit] if limit else index.records
    counts: Counter = Counter()
    per_source: dict[str, Counter] = {}
    start = time.perf_counter()
    for j, record in enumerate(records):
        image = read_image(record.path)
        _, _, stats = augment(image, record_truth(record), np.random.default_rng([0, j // 16, j % 16]), AugmentConfig())
        counts.update(stats)
        per_source.setdefault(record.source, Counter()).update(stats)
        counts[f"images_{record.source}"] += 1
    seconds = time.perf_counter() - start
    faces_in = sum(int(np.sum(r.kinds != IGNORE_KIND)) for r in records)
    print(f"2. one epoch of augmentation: {len(records)} images, {faces_in} indexed faces -> "
          f"{counts['faces']} faces + {counts['partial']} partial faces kept "
          f"({counts['partial'] / max(1, counts['faces'] + counts['partial']):.1%} partial); dropped: "
          f"{counts['dropped_small']} small (< MIN_FACE_PX after the transform; ignore regions now, "
          f"{counts['ignored']} in all), {counts['dropped_cut']} cut "
          f"(visible < 0.25), {counts['outside']} outside the crop; landmarks dropped {counts['landmarks_dropped']}; "
          f"crops drawn to cut a face {counts['partial_crops']}; crop fallbacks {counts['crop_fallback']}; "
          f"{len(records) / seconds:.1f} images/s single-threaded")
    for source, c in per_source.items():
        print(f"   {source}: faces {c['faces']}, partial {c['partial']}, small {c['dropped_small']}, "
              f"cut {c['dropped_cut']}, outside {c['outside']}, partial crops {c['partial_crops']}, "
              f"landmarks dropped {c['landmarks_dropped']}, fallbacks {c['crop_fallback']}")
    return {"counts": dict(counts), "per_source": {k: dict(v) for k, v in per_source.items()},
            "indexed_faces": faces_in, "images_per_s": len(records) / seconds}


def layer_speed(index_path: Path, batches: int, size: int = 320, batch: int = 16) -> float:
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    param = json.dumps({"index": str(index_path), "batch_size": batch, "size": size, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        net_file = Path(tmp) / "data.prototxt"
        net_file.write_text(f"""layer {{ name: "data" type: "Python" top: "data" top: "gt"
  python_param {{ module: "ssd_mobilenet.faces.data_layer" layer: "FaceDataLayer" param_str: '{param}' }} }}""")
        net = caffe.Net(str(net_file), caffe.TRAIN)
        start = time.perf_counter()
        for _ in range(batches):
            net.forward()
        rate = batches / (time.perf_counter() - start)
    print(f"3. FaceDataLayer: {rate:.2f} batches/s at batch {batch}, size {size} ({rate * batch:.0f} images/s)")
    return rate


def net_speed(iters: int, size: int = 320, batch: int = 16) -> float:
    from caffe_common.env import import_caffe
    from ssd_mobilenet.mobilenet_v2 import add_mobilenet_v2

    caffe = import_caffe()
    n = caffe.NetSpec()
    n["data"] = caffe.layers.Input(input_param={"shape": {"dim": [batch, 3, size, size]}})
    tops = add_mobilenet_v2(n, n["data"], num_classes=None, deploy=False, pool=False)
    n["loss"] = caffe.layers.Reduction(tops["features.18"], operation=caffe.params.Reduction.SUMSQ,
                                       coeff=1e-6, loss_weight=1)
    with tempfile.TemporaryDirectory() as tmp:
        net_file = Path(tmp) / "net.prototxt"
        net_file.write_text("force_backward: true\n" + str(n.to_proto()))
        net = caffe.Net(str(net_file), caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal(net.blobs["data"].data.shape)
    net.forward()
    net.backward()
    start = time.perf_counter()
    for _ in range(iters):
        net.forward()
        net.backward()
    seconds = (time.perf_counter() - start) / iters
    print(f"   MobileNetV2 (320x320, batch {batch}) forward + backward: {seconds:.2f} s ({batch / seconds:.1f} images/s; "
          f"BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="a train_index.jsonl (default: build one in a temporary folder)")
    parser.add_argument("--epoch-images", type=int, help="augment only the first N images of the index")
    parser.add_argument("--speed-batches", type=int, default=10)
    parser.add_argument("--net-iters", type=int, default=2)
    parser.add_argument("--no-net", action="store_true", help="skip the MobileNetV2 forward + backward")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    if not WIDER.is_dir() or not LANDMARKS.is_dir():
        print(f"needs {WIDER} and {LANDMARKS}", file=sys.stderr)
        return 2
    results = {"min_face": min_face_table()}
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index
        if index is None:
            from ssd_mobilenet.faces.dataset import build_face_index

            start = time.perf_counter()
            summary = build_face_index(WIDER / "wider_face_split" / "wider_face_train_bbx_gt.txt",
                                       WIDER / "WIDER_train" / "images", LANDMARKS / "trainImageList.txt",
                                       LANDMARKS, tmp)
            print(f"index built in {time.perf_counter() - start:.1f} s: {summary['train_images']} training images, "
                  f"{summary['held_out_images']} held out; counts {json.dumps(summary['counts'])}")
            results["index"] = summary["counts"]
            index = Path(summary["outputs"]["train_index"])
        results["epoch"] = epoch_counts(index, args.epoch_images)
        results["layer_batches_per_s"] = layer_speed(index, args.speed_batches)
    if not args.no_net:
        seconds = net_speed(args.net_iters)
        results["net_seconds_per_batch"] = seconds
        print(f"   the data layer makes a batch in {1 / results['layer_batches_per_s']:.2f} s, "
              f"{seconds * results['layer_batches_per_s']:.1f}x faster than the net consumes one")
    if args.json:
        from caffe_common.atomic import write_json_atomic

        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
