"""``train 12|24|48``: train one MTCNN stage on a packed LMDB (``scripts/train.sh`` is this command)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caffe_common.cli import count, number, run_training

POSITIVE_INT = count(1)
FRACTION = number(0, 1, low_open=True)
POSITIVE = number(0, low_open=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``train`` (shared with ``scripts/train.sh``)."""
    from ..nets.train import RECIPES

    defaults = ", ".join(f"{s}: batch {r.batch_size}, {r.max_iter} it" for s, r in RECIPES.items())
    p.add_argument("stage", type=int, choices=(12, 24, 48), help="the net to train: 12 P-Net, 24 R-Net, 48 O-Net")
    p.add_argument("--data", required=True, type=Path, metavar="PACK_DIR",
                   help="the stage's pack (gen_net_imdb.py --out DIR); its last ~5%% of records are held out for validation")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (logs, snapshots, detN deploy files)")
    p.add_argument("--max-iter", type=POSITIVE_INT, help=f"iterations (defaults {defaults})")
    p.add_argument("--batch", type=POSITIVE_INT, dest="batch_size", help="samples per iteration")
    p.add_argument("--base-lr", type=POSITIVE, help="base learning rate (default 0.01; x0.1 at 60%% and 85%%)")
    p.add_argument("--ohem", type=FRACTION, help="share of the hardest classification losses kept (default 0.7; 1 = all)")
    p.add_argument("--tasks", choices=("all", "cls"), help="'cls' trains classification only (the seed's only-cls weights)")
    p.add_argument("--mix", metavar="N:P:T:L", help="batch mix neg:pos:part:landmark (default 3:1:1:2)")
    p.add_argument("--loss-weights", nargs=3, type=number(0), metavar=("CLS", "BOX", "LMK"),
                   help="task loss weights (default 1 0.5 0.5, O-Net 1 0.5 1; the landmark weight is 0 when --init "
                   "weights have no landmark head, as the official P- and R-Net)")
    p.add_argument("--seed", type=int, help="seed of the batch order and of Caffe's fillers (default 0)")
    p.add_argument("--init", type=Path, metavar="W.caffemodel",
                   help="start from these weights (by layer name: the official weights, an only-cls model, ...)")
    p.add_argument("--resume", type=Path, metavar="STATE",
                   help="continue from a .solverstate (or an output folder: its newest snapshot)")
    p.add_argument("--validate-every", type=POSITIVE_INT, metavar="K",
                   help="validation interval in iterations (default: a tenth of the run, at most 500)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train one MTCNN stage (12/24/48) on a packed LMDB",
        description="Train P-Net (12), R-Net (24) or O-Net (48) in Caffe with the multi-task loss (classification with "
                    "OHEM on pos/neg, box regression on pos/part, landmarks on landmark samples). Writes log.csv, "
                    "loss.png, snapshots/ and the deploy pair detN.prototxt + detN.caffemodel for "
                    "'mtcnn-caffe detect --weights-dir'. Exit status: 0 done, 1 training diverged, "
                    "2 input refused, 130 interrupted (resumable with --resume).")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.stage import StageError, train_stage

    options = {k: getattr(args, k) for k in ("max_iter", "batch_size", "base_lr", "ohem", "tasks", "mix", "seed")}
    options["loss_weights"] = tuple(args.loss_weights) if args.loss_weights else None
    result, status = run_training(lambda: train_stage(
        args.stage, args.data, args.out, init=args.init, resume=args.resume, validate_every=args.validate_every,
        progress=not args.no_progress, **options), refused=(StageError,))
    if result is None:
        return status
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {result.prototxt}, {result.caffemodel}, {result.log}" + (f", {result.plot}" if result.plot else ""),
          file=sys.stderr)
    print(result.summary_line())
    return 0
