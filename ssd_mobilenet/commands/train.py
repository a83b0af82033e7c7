"""``ssd-mobilenet train``: train an SSD net from a solver (``scripts/train.sh`` without a stage number)."""
from __future__ import annotations

import argparse
from pathlib import Path

from caffe_common.cli import count, number, run_training

DEFAULT_SOLVER = Path("example/solver_train.prototxt")   # where scripts/gen_model.sh writes it
DEFAULT_OUT = Path("snapshot")                            # the seed's snapshot folder


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet train``."""
    p = subparsers.add_parser(
        "train", help="train MobileNet-SSD (or any Caffe SSD net) from a solver prototxt",
        description="Train in Caffe with a Python loop over the solver: progress bar, DIR/log.csv (iter, lr, loss, "
                    "samples_per_s, map), atomic snapshots in DIR/snapshots (the last 3 kept), DIR/loss.png, resume. "
                    "Every input the solver names (LMDBs, label map, heads vs prior boxes) is checked first. "
                    "Instead of Caffe's test phase, the test net runs one exact pass over the whole test LMDB every "
                    "--test-every iterations and logs its mAP. Exit status: 0 done, 1 diverged (NaN loss), "
                    "2 input refused, 130 interrupted (resume with --resume DIR).")
    p.add_argument("--solver", type=Path, default=DEFAULT_SOLVER,
                   help="solver prototxt naming train_net (and test_net) (default: %(default)s, from gen_model.sh)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="output folder: log, plot, snapshots, final weights (default: %(default)s)")
    p.add_argument("--weights", type=Path, action="append", default=[], metavar="W.caffemodel",
                   help="initial weights, copied by layer name (e.g. an ImageNet MobileNet or a 21-class "
                        "MobileNet-SSD: renamed *_mbox_conf_new heads start afresh); repeatable")
    p.add_argument("--resume", type=Path, metavar="STATE",
                   help="continue from a .solverstate, or an output folder (its newest snapshot)")
    p.add_argument("--max-iter", type=count(1), help="iterations (default: the solver's max_iter)")
    p.add_argument("--base-lr", type=number(0, low_open=True), help="base learning rate (default: the solver's)")
    p.add_argument("--seed", type=int, help="Caffe's random seed (fillers, augmentation)")
    p.add_argument("--test-every", type=count(0), metavar="K",
                   help="iterations between test passes (default: the solver's test_interval, else 1000; 0: none)")
    p.add_argument("--snapshot-every", type=count(0), default=0, metavar="K",
                   help="iterations between snapshots (default: the solver's snapshot, else 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssd_mobilenet.training import train_ssd

    result, status = run_training(lambda: train_ssd(
        args.solver, args.out, weights=args.weights, resume=args.resume, max_iter=args.max_iter,
        base_lr=args.base_lr, seed=args.seed, test_every=args.test_every, snapshot_every=args.snapshot_every,
        progress=not args.no_progress))
    if result is None:
        return status
    last = ", ".join(f"{k} {v:.4g}" for k, v in result.last_row.items() if k != "iter")
    print(f"trained {result.iterations} iterations in {result.seconds:.0f} s ({last})")
    print(f"wrote {result.weights}, {result.log}" + (f", {result.plot}" if result.plot else ""))
    return 0
