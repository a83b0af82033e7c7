"""Argument parsing and entry points of the ``prepare_data`` scripts (the scripts stay thin)."""
from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any, Callable


def add_common_args(parser: argparse.ArgumentParser, jobs_help: str = "worker processes (default: all cores)",
                    limit_help: str = "use only the first N images of the annotation") -> None:
    """The options every generator accepts (other tools call them by these names)."""
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created; re-running continues it)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help=limit_help)
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; results do not depend on -j")
    parser.add_argument("-j", "--jobs", type=int, default=0, metavar="N", help=jobs_help)
    parser.add_argument("--overwrite", action="store_true", help="discard what --out holds instead of continuing it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_wider_args(parser: argparse.ArgumentParser) -> None:
    """``--anno`` / ``--images`` of WIDER FACE and the face filter."""
    parser.add_argument("--anno", required=True, metavar="TXT", help="wider_face_train_bbx_gt.txt")
    parser.add_argument("--images", required=True, metavar="DIR", help="WIDER_train/images")
    parser.add_argument("--min-face", type=float, default=20.0, metavar="PX",
                        help="faces whose shorter side is below this give no positives (default 20)")
    parser.add_argument("--keep-invalid", action="store_true", help="also learn from faces flagged invalid")


def report(stats: dict[str, Any], out: str) -> int:
    """Print the headline counts of a stats dict; exit status 0."""
    from .pipeline import STATS_KEYS

    print(json.dumps({k: stats.get(k) for k in STATS_KEYS}), file=sys.stdout)
    extra = f", {stats['samples_per_second']} samples/s" if stats.get("samples_per_second") else ""
    print(f"wrote {out} (stats.json{extra})")
    if stats.get("failed_images"):
        print(f"warning: {stats['failed_images']} images could not be read; see failed_image_list in "
              f"{out}/stats.json", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- script entry points
def _clean_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Bad input (missing files, mismatched --out, wrong stage...) -> one ``error:`` line, exit status 2."""
    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return wrapper


def _jobs(args: argparse.Namespace) -> int | None:
    return args.jobs if args.jobs and args.jobs > 0 else None


@_clean_errors
def random_crops_main(size: int, argv: list[str] | None = None) -> int:
    """``gen_12net_data.py`` / ``gen_24net_data.py`` / ``gen_48net_data.py``."""
    from .wider import CropParams

    parser = argparse.ArgumentParser(
        description=f"Random positive (IoU>=0.65), part (0.4-0.65) and negative (IoU<0.3) {size}x{size} crops "
                    "of WIDER FACE images, with box regression targets.")
    add_common_args(parser)
    add_wider_args(parser)
    parser.add_argument("--neg-per-image", type=int, default=50, metavar="N",
                        help="random negatives per image (default 50)")
    parser.add_argument("--neg-per-face", type=int, default=5, metavar="N",
                        help="tries for negatives overlapping each face (default 5)")
    parser.add_argument("--tries-per-face", type=int, default=20, metavar="N",
                        help="jittered pos/part tries per face (default 20)")
    args = parser.parse_args(argv)
    from .tasks import WiderCropTask, generate

    params = CropParams(neg_per_image=args.neg_per_image, neg_per_face=args.neg_per_face,
                        tries_per_face=args.tries_per_face, min_face=args.min_face, keep_invalid=args.keep_invalid)
    task = WiderCropTask(args.anno, args.images, size, params, args.limit)
    stats = generate(task, args.out, seed=args.seed, jobs=_jobs(args), overwrite=args.overwrite,
                     progress=not args.no_progress)
    return report(stats, args.out)


@_clean_errors
def landmark_main(argv: list[str] | None = None) -> int:
    """``gen_landmark_data.py``."""
    from .landmarks import LandmarkParams

    parser = argparse.ArgumentParser(
        description="Landmark samples (label -2) from a 5-point list (path l r t b x1 y1 ... x5 y5): shifted crops "
                    "with IoU>0.65, random mirror (left/right swapped) and small rotations; landmarks normalised "
                    "to the crop.")
    add_common_args(parser, limit_help="use only the first N faces of the list")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", metavar="TXT",
                        help="5-point list, e.g. trainImageList.txt (paths relative to --images)")
    source.add_argument("--celeba", nargs=2, metavar=("BBOX_TXT", "LANDMARKS_TXT"),
                        help="CelebA layout instead: list_bbox_celeba.txt list_landmarks_celeba.txt")
    parser.add_argument("--images", required=True, metavar="ROOT", help="directory the image paths start from")
    parser.add_argument("--size", type=int, required=True, choices=(12, 24, 48), help="crop size of the stage")
    parser.add_argument("--tries", type=int, default=10, metavar="N", help="shifted crops tried per face (default 10)")
    parser.add_argument("--mirror-prob", type=float, default=0.5, metavar="P",
                        help="chance of a mirrored copy per crop")
    parser.add_argument("--rotate-prob", type=float, default=0.5, metavar="P", help="chance of a rotated copy per crop")
    parser.add_argument("--max-angle", type=float, default=15.0, metavar="DEG",
                        help="largest rotation, degrees (default 15)")
    args = parser.parse_args(argv)
    from .tasks import LandmarkTask, generate

    params = LandmarkParams(tries=args.tries, mirror_prob=args.mirror_prob, rotate_prob=args.rotate_prob,
                            max_angle=args.max_angle, min_angle=min(5.0, args.max_angle))
    task = LandmarkTask(args.list, args.images, args.size, params, args.limit,
                        celeba=tuple(args.celeba) if args.celeba else None)
    stats = generate(task, args.out, seed=args.seed, jobs=_jobs(args), overwrite=args.overwrite,
                     progress=not args.no_progress)
    return report(stats, args.out)


@_clean_errors
def hard_example_main(argv: list[str] | None = None, stage: int | None = None) -> int:
    """``gen_hard_example.py --stage 24|48`` (and the seed-named wrappers, which fix the stage)."""
    from ..detect import defaults
    from .mining import MiningParams

    which = {None: "P-Net for --stage 24, P+R-Net for --stage 48", 24: "P-Net, for the 24-net",
             48: "P-Net + R-Net, for the 48-net"}[stage]
    parser = argparse.ArgumentParser(
        description=f"Hard examples: run the previous stage(s) of the detector ({which}) over WIDER FACE images "
                    "and label each detection by IoU with the faces (pos >= 0.65, part 0.4-0.65, neg < 0.3).")
    add_common_args(parser, jobs_help="worker processes (default: all cores); each loads its own nets "
                                      "(0.25-0.4 GiB each on WIDER images: pick -j by memory)")
    add_wider_args(parser)
    if stage is None:
        parser.add_argument("--stage", type=int, required=True, choices=(24, 48), help="the stage the samples are for")
    parser.add_argument("--weights-dir", "--weights", dest="weights", default=None, metavar="DIR",
                        help="det1/det2 .prototxt + .caffemodel to mine with (default: the toolkit's default weights)")
    parser.add_argument("--det-min-size", type=float, default=defaults.MIN_SIZE, metavar="PX",
                        help=f"detector minimum face size (default {defaults.MIN_SIZE})")
    parser.add_argument("--factor", type=float, default=defaults.FACTOR, metavar="F",
                        help=f"detector pyramid factor (default {defaults.FACTOR})")
    parser.add_argument("--thresholds", type=float, nargs=3, default=defaults.THRESHOLDS, metavar=("P", "R", "O"),
                        help="detector score thresholds (default {} {} {})".format(*defaults.THRESHOLDS))
    parser.add_argument("--backend", choices=("caffe", "opencv"), default="caffe",
                        help="run the detector's nets in Caffe (default) or OpenCV DNN (same nets, faster)")
    parser.add_argument("--max-neg-per-image", type=int, default=60, metavar="N",
                        help="cap on negatives per image (default 60)")
    args = parser.parse_args(argv)
    size = stage if stage is not None else args.stage
    from .tasks import HardExampleTask, generate

    params = MiningParams(weights_dir=args.weights, min_size=args.det_min_size, factor=args.factor,
                          thresholds=tuple(args.thresholds), backend=args.backend,
                          max_neg_per_image=args.max_neg_per_image,
                          min_face=args.min_face, keep_invalid=args.keep_invalid)
    task = HardExampleTask(args.anno, args.images, size, params, args.limit)
    stats = generate(task, args.out, seed=args.seed, jobs=_jobs(args), overwrite=args.overwrite,
                     progress=not args.no_progress, chunk_images=16)
    return report(stats, args.out)


@_clean_errors
def net_imdb_main(argv: list[str] | None = None) -> int:
    """``gen_net_imdb.py``."""
    from .pack import DEFAULT_RATIO, pack_stage

    parser = argparse.ArgumentParser(
        description="Combine generator outputs of one stage into the training LMDB (DIR/data.lmdb, one fixed-size "
                    "record per sample: label, 4 box targets, 10 landmark targets, uint8 BGR crop) and, with "
                    "--imdb, the seed's cls.imdb/roi.imdb/pts.imdb pickles.")
    add_common_args(parser, jobs_help="accepted like every generator's, but unused: packing is one sequential, "
                                      "disk-bound stream of LMDB transactions")
    parser.add_argument("--stage", type=int, required=True, choices=(12, 24, 48), help="crop size of the stage")
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR", help="generator output directories")
    parser.add_argument("--ratio", default=DEFAULT_RATIO, metavar="N:P:T:L",
                        help=f"neg:pos:part:landmark mix (default {DEFAULT_RATIO}); 'all' takes every sample")
    parser.add_argument("--imdb", action="store_true", help="also write cls.imdb, roi.imdb, pts.imdb (small sets)")
    parser.add_argument("--no-lmdb", action="store_true", help="write only the imdb pickles")
    args = parser.parse_args(argv)

    stats = pack_stage(args.stage, args.data, args.out, ratio=args.ratio, seed=args.seed, limit=args.limit,
                       imdb=args.imdb, lmdb=not args.no_lmdb, progress=not args.no_progress,
                       overwrite=args.overwrite)
    return report(stats, args.out)
