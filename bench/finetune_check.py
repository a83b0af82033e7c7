"""Fine-tuning does no harm: start each stage from the official weights, train a few hundred iterations at a
small learning rate on the cascade's packs, and compare the cascade's WIDER AP on held-out images with the
official weights' (issue "MTCNN training": within 0.02).

    .venv/bin/python bench/finetune_check.py --run output/cascade_interview --out output/finetune_check \
        --images ../shared/data/wider_train_subset/WIDER_train/images [--iters 300] [--base-lr 0.0001]

``--run`` is a ``train-cascade`` output folder (its ``data/<size>/pack`` and ``data/held_out_gt.txt`` are used).
Prints one JSON line with both APs and their difference.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True, help="WIDER_train/images")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--base-lr", type=float, default=0.0001)
    args = parser.parse_args()

    from mtcnn_caffe.nets.weights import DEFAULT_WEIGHTS_DIR
    from mtcnn_caffe.train.cascade import evaluate_wider_ap
    from mtcnn_caffe.train.stage import train_stage

    weights = args.out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    stages = {}
    for size, stage in ((12, "det1"), (24, "det2"), (48, "det3")):
        result = train_stage(size, args.run / "data" / str(size) / "pack", args.out / stage, progress=False,
                             init=DEFAULT_WEIGHTS_DIR / f"{stage}.caffemodel", max_iter=args.iters,
                             base_lr=args.base_lr, validate_every=args.iters)
        for path in (result.prototxt, result.caffemodel):
            shutil.copyfile(path, weights / path.name)
        stages[stage] = {k: round(v, 4) for k, v in result.final.items() if k.startswith("val_")}
    gt = args.run / "data" / "held_out_gt.txt"
    tuned = evaluate_wider_ap(weights, gt, args.images, args.out / "eval_tuned")
    official = evaluate_wider_ap(None, gt, args.images, args.out / "eval_official")
    print(json.dumps({"iters": args.iters, "base_lr": args.base_lr, "stages": stages, "ap_finetuned": tuned,
                      "ap_official": official, "difference": round(tuned - official, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
