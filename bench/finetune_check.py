"""Fine-tuning does no harm: start each stage from the official weights, train a few hundred iterations at a
small learning rate on the cascade's packs, and compare the cascade's WIDER AP on held-out images with the
official weights' (issue "MTCNN training": within 0.02).

    .venv/bin/python bench/finetune_check.py --run output/cascade_interview --out output/finetune_check \
        --images ../shared/data/wider_train_subset/WIDER_train/images [--iters 300] [--base-lr 0.0001]

``--run`` is a ``train-cascade`` output folder (its ``data/<size>/pack`` and ``data/held_out_gt.txt`` are used).
Prints one JSON line with both APs and their difference. ``--swap`` also evaluates the official cascade with one
fine-tuned stage swapped in at a time, to find which stage moves the AP. ``--stages det1 ...`` fine-tunes only
those (the others stay official).
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
    parser.add_argument("--swap", action="store_true", help="also evaluate each fine-tuned stage alone")
    parser.add_argument("--stages", nargs="+", default=["det1", "det2", "det3"], choices=["det1", "det2", "det3"])
    parser.add_argument("--ohem", type=float, help="OHEM keep ratio of the fine-tuning (default: the recipe's)")
    args = parser.parse_args()

    from mtcnn_caffe.nets.weights import DEFAULT_WEIGHTS_DIR
    from mtcnn_caffe.train.cascade import evaluate_wider_ap
    from mtcnn_caffe.train.stage import train_stage

    def weights_dir(name: str, tuned: list[str]) -> Path:
        """A --weights-dir with the fine-tuned ``tuned`` stages and the official others."""
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for stage in ("det1", "det2", "det3"):
            source = args.out / stage if stage in tuned else DEFAULT_WEIGHTS_DIR
            for ext in ("prototxt", "caffemodel"):
                shutil.copyfile(source / f"{stage}.{ext}", folder / f"{stage}.{ext}")
        return folder

    options = {} if args.ohem is None else {"ohem": args.ohem}
    stages = {}
    for size, stage in ((12, "det1"), (24, "det2"), (48, "det3")):
        if stage not in args.stages:
            continue
        result = train_stage(size, args.run / "data" / str(size) / "pack", args.out / stage, progress=False,
                             init=DEFAULT_WEIGHTS_DIR / f"{stage}.caffemodel", max_iter=args.iters,
                             base_lr=args.base_lr, validate_every=args.iters, **options)
        stages[stage] = {k: round(v, 4) for k, v in result.final.items() if k.startswith("val_")}
    gt = args.run / "data" / "held_out_gt.txt"
    tuned = evaluate_wider_ap(weights_dir("weights", args.stages), gt, args.images, args.out / "eval_tuned")
    official = evaluate_wider_ap(None, gt, args.images, args.out / "eval_official")
    report = {"iters": args.iters, "base_lr": args.base_lr, "ohem": args.ohem, "stages": stages,
              "ap_finetuned": tuned, "ap_official": official, "difference": round(tuned - official, 4)}
    if args.swap and len(args.stages) > 1:
        report["ap_with_one_finetuned_stage"] = {
            stage: round(evaluate_wider_ap(weights_dir(f"weights_{stage}", [stage]), gt, args.images,
                                           args.out / f"eval_{stage}"), 4) for stage in args.stages}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
