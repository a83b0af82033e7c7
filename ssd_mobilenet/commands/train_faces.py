"""``ssd-mobilenet train-faces``: train the single-pass face network (a thin CLI over
:func:`ssd_mobilenet.faces.training.train_faces`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caffe_common.cli import count, number, run_training

DESCRIPTION = (
    "Train the multi-task face network (MobileNetV2 + SSD heads: face / partial face, box, 5 landmarks) from WIDER "
    "FACE and a 5-point landmark list into --out DIR: the face index (DIR/data; one WIDER event held out, default "
    "Interview, with its WIDER-format ground truth for evaluation), the nets, ImageNet initialisation, training with "
    "a progress bar, DIR/log.csv, atomic snapshots and DIR/loss.png, then DIR/face_deploy.prototxt + "
    "DIR/face.caffemodel + DIR/face_model.json, the folder `ssd-mobilenet detect-faces --model-dir DIR` reads. "
    "Exit status: 0 done, 1 diverged (NaN loss), 2 input refused, 130 interrupted (continue with --resume)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet train-faces``."""
    from ssd_mobilenet.faces.model import ARCHS, DEFAULT_ARCH, DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, SIZE_STEP
    from ssd_mobilenet.faces.training import DEFAULT_ITERS, INIT_CHOICES

    p = subparsers.add_parser("train-faces", help="train the single-pass face + landmark network",
                              description=DESCRIPTION)
    p.add_argument("--wider-anno", type=Path, metavar="FILE", help="WIDER FACE wider_face_train_bbx_gt.txt")
    p.add_argument("--wider-images", type=Path, metavar="DIR", help="its images folder (WIDER_train/images)")
    p.add_argument("--landmarks", type=Path, metavar="LIST",
                   help="5-point list: path l r t b x1 y1 .. x5 y5 per line (one face per line)")
    p.add_argument("--landmark-images", type=Path, metavar="DIR", help="folder the list's paths are relative to")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output (model) folder")
    p.add_argument("--size", type=count(MIN_SIZE, MAX_SIZE), default=DEFAULT_SIZE, metavar="S",
                   help=f"square input side, a multiple of {SIZE_STEP} (default: %(default)s)")
    p.add_argument("--arch", choices=tuple(ARCHS), default=DEFAULT_ARCH,
                   help="network layout: mobilenet_v2 (the whole backbone, a 10 MB caffemodel; default) or compact "
                   "(cut after block 12: a 1.9 MiB caffemodel, 1.3x faster, the shipped model's layout; it needs "
                   "longer training: several --init cycles)")
    p.add_argument("--batch", type=count(1), default=16, metavar="N", help="images per iteration (default: %(default)s)")
    p.add_argument("--iters", type=count(1), default=DEFAULT_ITERS, metavar="N",
                   help="iterations (default: %(default)s, about 75 minutes at 320 with batch 16 on 2 CPU cores)")
    p.add_argument("--wider-repeat", type=count(1), metavar="K",
                   help="times each WIDER image appears per epoch, landmark images once (default: 3)")
    p.add_argument("--backbone-bn", choices=("affine", "frozen", "folded"),
                   help="ImageNet backbone's BatchNorm, fixed at the stored statistics: as the fixed Scale layers "
                   "alone (affine, default), as BatchNorm layers (frozen: the same training, slower) or folded into "
                   "the convolutions (folded: measured to learn much slower)")
    p.add_argument("--base-lr", type=number(0, low_open=True), metavar="LR",
                   help="base learning rate of the SGD solver (default: 0.001, divided by 10 at 2/3 and 8/9 of --iters)")
    p.add_argument("--init", default="imagenet", metavar="|".join(INIT_CHOICES) + "|DIR",
                   help="initialisation: the ImageNet MobileNetV2 backbone (converted from torchvision's weights; "
                   "default), none (the fillers: from scratch), or a face model folder of the same --arch that "
                   "train-faces wrote (fine-tune it)")
    p.add_argument("--teacher", type=Path, metavar="DIR",
                   help="distil: also learn the class probabilities that this trained face model folder gives on "
                   "each batch (same priors; e.g. a whole mobilenet_v2 model teaching a compact one)")
    p.add_argument("--distill-weight", type=number(0), metavar="W",
                   help="loss weight of the distillation (with --teacher; default: 1, beside confidence 4, box 1, "
                   "landmarks 1)")
    p.add_argument("--hold-out", nargs="*", metavar="EVENT",
                   help="WIDER events kept out of training (default: Interview; none: give the option alone)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest snapshot")
    p.add_argument("--seed", type=count(0), default=0, help="data order, augmentation and fillers (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from caffe_common.assets import AssetError
    from ssd_mobilenet.faces.training import train_faces

    if args.wider_anno is None and args.landmarks is None and not args.resume:
        print("error: give --wider-anno (with --wider-images), --landmarks (with --landmark-images) or both "
              "(with --resume they may be left out: the run's face index is reused)", file=sys.stderr)
        return 2
    result, status = run_training(lambda: train_faces(
        args.out, wider_anno=args.wider_anno, wider_images=args.wider_images, landmarks=args.landmarks,
        landmark_images=args.landmark_images, size=args.size, batch=args.batch, iters=args.iters, init=args.init,
        resume=args.resume, seed=args.seed, base_lr=args.base_lr, wider_repeat=args.wider_repeat,
        backbone_bn=args.backbone_bn, arch=args.arch, teacher=args.teacher,
        distill_weight=args.distill_weight, hold_out=args.hold_out,
        progress=not args.no_progress, on_index=lambda lines: print("\n".join(lines), file=sys.stderr, flush=True)),
        refused=(ValueError, OSError, AssetError))
    if result is None:
        return status
    last = ", ".join(f"{k} {v:.4g}" for k, v in result.last_row.items() if k != "iter")
    print(f"trained {result.iterations} iterations on {result.train_images} images in {result.seconds:.0f} s"
          + (f" ({last})" if last else ""))
    print(f"wrote the model folder {result.model_dir} ({result.weights.name}); run "
          f"`ssd-mobilenet detect-faces --model-dir {result.model_dir} IMAGES`")
    return 0
