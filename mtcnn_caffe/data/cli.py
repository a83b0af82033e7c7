"""Arguments and entry points of the training-data generators, shared by the ``prepare_data/*.py``
scripts (thin entry points) and the ``mtcnn-caffe data random|landmarks|hard|pack`` subcommands.

Every numeric option is checked when parsed: a NaN, a value out of range or a ``--limit`` below 1
is an argparse error naming the option (``argument --rotate-prob: expected a number in [0, 1],
got nan``), exit status 2, before any file is touched.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any, Callable

#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED_STATUS = 130
#: Upper ends of the per-image / per-face sample counts (bounds the memory one image can take).
MAX_PER_IMAGE = 10_000
MAX_PER_FACE = 1_000


# ----------------------------------------------------------------------------- checked option types
from caffe_common.cli import count, number  # noqa: E402  (the shared checked argparse types)

PROBABILITY = number(0, 1)


def ratio(text: str) -> str:
    """argparse type of ``--ratio``: checked here, used as text by :func:`~.pack.pack_stage`."""
    from .pack import parse_ratio

    try:
        parse_ratio(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--ratio ", "")) from None
    return text


# ----------------------------------------------------------------------------- argument groups
def add_common_args(parser: argparse.ArgumentParser, jobs_help: str = "worker processes (default 0: all cores)",
                    limit_help: str = "use only the first N images of the annotation") -> None:
    """The options every generator accepts (other tools call them by these names)."""
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created; re-running continues it)")
    parser.add_argument("--limit", type=count(1), default=None, metavar="N", help=limit_help + " (N >= 1)")
    parser.add_argument("--seed", type=count(0), default=0, metavar="S",
                        help="random seed >= 0 (default 0); results do not depend on -j")
    parser.add_argument("-j", "--jobs", type=count(0, 256), default=0, metavar="N", help=jobs_help)
    parser.add_argument("--overwrite", action="store_true", help="discard what --out holds instead of continuing it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_wider_args(parser: argparse.ArgumentParser) -> None:
    """``--anno`` / ``--images`` of WIDER FACE and the face filter."""
    parser.add_argument("--anno", required=True, metavar="TXT", help="wider_face_train_bbx_gt.txt")
    parser.add_argument("--images", required=True, metavar="DIR", help="WIDER_train/images")
    parser.add_argument("--min-face", type=number(0), default=20.0, metavar="PX",
                        help="faces whose shorter side is below this give no positives (default 20)")
    parser.add_argument("--keep-invalid", action="store_true", help="also learn from faces flagged invalid")


def _size_arg(parser: argparse.ArgumentParser, name: str, choices: tuple[int, ...], help_text: str) -> None:
    parser.add_argument(name, type=int, required=True, choices=choices, help=help_text)


def add_random_args(parser: argparse.ArgumentParser, with_size: bool = True) -> None:
    """Options of the random-crop generator (``--size`` unless the script fixes it)."""
    add_common_args(parser)
    add_wider_args(parser)
    if with_size:
        _size_arg(parser, "--size", (12, 24, 48), "crop size of the stage (12 P-Net, 24 R-Net, 48 O-Net)")
    parser.add_argument("--neg-per-image", type=count(0, MAX_PER_IMAGE), default=50, metavar="N",
                        help="random negatives per image (default 50)")
    parser.add_argument("--neg-per-face", type=count(0, MAX_PER_FACE), default=5, metavar="N",
                        help="tries for negatives overlapping each face (default 5)")
    parser.add_argument("--tries-per-face", type=count(0, MAX_PER_FACE), default=20, metavar="N",
                        help="jittered pos/part tries per face (default 20)")


def add_landmark_args(parser: argparse.ArgumentParser) -> None:
    """Options of the landmark-sample generator."""
    add_common_args(parser, limit_help="use only the first N faces of the list")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", metavar="TXT",
                        help="5-point list, e.g. trainImageList.txt (paths relative to --images)")
    source.add_argument("--celeba", nargs=2, metavar=("BBOX_TXT", "LANDMARKS_TXT"),
                        help="CelebA layout instead: list_bbox_celeba.txt list_landmarks_celeba.txt")
    parser.add_argument("--images", required=True, metavar="ROOT", help="directory the image paths start from")
    _size_arg(parser, "--size", (12, 24, 48), "crop size of the stage")
    parser.add_argument("--tries", type=count(0, MAX_PER_FACE), default=10, metavar="N",
                        help="shifted crops tried per face (default 10)")
    parser.add_argument("--mirror-prob", type=PROBABILITY, default=0.5, metavar="P",
                        help="chance of a mirrored copy per crop, in [0, 1] (default 0.5)")
    parser.add_argument("--rotate-prob", type=PROBABILITY, default=0.5, metavar="P",
                        help="chance of a rotated copy per crop, in [0, 1] (default 0.5)")
    parser.add_argument("--max-angle", type=number(0, 180), default=15.0, metavar="DEG",
                        help="largest rotation, degrees in [0, 180] (default 15)")


def add_hard_example_args(parser: argparse.ArgumentParser, with_stage: bool = True) -> None:
    """Options of hard-example mining (``--stage`` unless the script fixes it)."""
    from ..detect import defaults, steps

    add_common_args(parser, jobs_help="worker processes (default 0: all cores); each loads its own nets "
                                      "(0.25-0.4 GiB each on WIDER images: pick -j by memory)")
    add_wider_args(parser)
    if with_stage:
        _size_arg(parser, "--stage", (24, 48), "the stage the samples are for")
    parser.add_argument("--weights-dir", "--weights", dest="weights", default=None, metavar="DIR",
                        help="det1/det2 .prototxt + .caffemodel to mine with (default: the toolkit's default weights)")
    parser.add_argument("--det-min-size", type=number(steps.MIN_SIZE_FLOOR), default=defaults.MIN_SIZE, metavar="PX",
                        help=f"detector minimum face size, >= {steps.MIN_SIZE_FLOOR} (default {defaults.MIN_SIZE})")
    parser.add_argument("--factor", type=number(0, steps.MAX_FACTOR, low_open=True), default=defaults.FACTOR,
                        metavar="F", help=f"detector pyramid factor, in (0, {steps.MAX_FACTOR}] (default {defaults.FACTOR})")
    parser.add_argument("--thresholds", type=PROBABILITY, nargs=3, default=defaults.THRESHOLDS,
                        metavar=("P", "R", "O"),
                        help="detector score thresholds in [0, 1] (default {} {} {})".format(*defaults.THRESHOLDS))
    parser.add_argument("--backend", choices=("caffe", "opencv"), default="caffe",
                        help="run the detector's nets in Caffe (default) or OpenCV DNN (same nets, faster)")
    parser.add_argument("--max-neg-per-image", type=count(0, MAX_PER_IMAGE), default=60, metavar="N",
                        help="cap on negatives per image (default 60)")


def add_pack_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``gen_net_imdb`` / ``data pack``."""
    from .pack import DEFAULT_RATIO

    add_common_args(parser, jobs_help="accepted like every generator's, but unused: packing is one sequential, "
                                      "disk-bound stream of LMDB transactions",
                    limit_help="pack at most N samples")
    _size_arg(parser, "--stage", (12, 24, 48), "crop size of the stage")
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR",
                        help="generator output directories (each once; --out must not lie inside one)")
    parser.add_argument("--ratio", type=ratio, default=DEFAULT_RATIO, metavar="N:P:T:L",
                        help=f"neg:pos:part:landmark mix (default {DEFAULT_RATIO}); 'all' takes every sample")
    parser.add_argument("--imdb", action="store_true", help="also write cls.imdb, roi.imdb, pts.imdb (small sets)")
    parser.add_argument("--no-lmdb", action="store_true", help="write only the imdb pickles")


# ----------------------------------------------------------------------------- running a command
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


def clean_exit(run: Callable[..., int]) -> Callable[..., int]:
    """Bad input (missing files, mismatched --out, wrong stage, a dead worker...) -> one ``error:`` line,
    exit status 2; Ctrl-C -> one line saying how to resume, exit status 130."""
    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return run(*args, **kwargs)
        except KeyboardInterrupt:
            print("\ninterrupted: finished parts are kept; re-run the same command to resume", file=sys.stderr)
            return INTERRUPTED_STATUS
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return wrapper


def _jobs(args: argparse.Namespace) -> int | None:
    return args.jobs or None


def _generate(task: Any, args: argparse.Namespace, **options: Any) -> int:
    from .tasks import generate

    stats = generate(task, args.out, seed=args.seed, jobs=_jobs(args), overwrite=args.overwrite,
                     progress=not args.no_progress, **options)
    return report(stats, args.out)


@clean_exit
def run_random(args: argparse.Namespace, size: int | None = None) -> int:
    """Random pos/part/neg crops (``size`` fixed by a script, else ``--size``)."""
    from .tasks import WiderCropTask
    from .wider import CropParams

    params = CropParams(neg_per_image=args.neg_per_image, neg_per_face=args.neg_per_face,
                        tries_per_face=args.tries_per_face, min_face=args.min_face, keep_invalid=args.keep_invalid)
    return _generate(WiderCropTask(args.anno, args.images, size or args.size, params, args.limit), args)


@clean_exit
def run_landmarks(args: argparse.Namespace) -> int:
    """Augmented landmark samples."""
    from .landmarks import LandmarkParams
    from .tasks import LandmarkTask

    params = LandmarkParams(tries=args.tries, mirror_prob=args.mirror_prob, rotate_prob=args.rotate_prob,
                            max_angle=args.max_angle, min_angle=min(5.0, args.max_angle))
    task = LandmarkTask(args.list, args.images, args.size, params, args.limit,
                        celeba=tuple(args.celeba) if args.celeba else None)
    return _generate(task, args)


@clean_exit
def run_hard_examples(args: argparse.Namespace, stage: int | None = None) -> int:
    """Hard examples mined with the detector (``stage`` fixed by a script, else ``--stage``)."""
    from .mining import MiningParams
    from .tasks import HardExampleTask

    params = MiningParams(weights_dir=args.weights, min_size=args.det_min_size, factor=args.factor,
                          thresholds=tuple(args.thresholds), backend=args.backend,
                          max_neg_per_image=args.max_neg_per_image,
                          min_face=args.min_face, keep_invalid=args.keep_invalid)
    task = HardExampleTask(args.anno, args.images, stage or args.stage, params, args.limit)
    return _generate(task, args, chunk_images=16)


@clean_exit
def run_pack(args: argparse.Namespace) -> int:
    """Pack generator outputs into the training LMDB / imdb pickles."""
    from .pack import pack_stage

    stats = pack_stage(args.stage, args.data, args.out, ratio=args.ratio, seed=args.seed, limit=args.limit,
                       imdb=args.imdb, lmdb=not args.no_lmdb, progress=not args.no_progress,
                       overwrite=args.overwrite)
    return report(stats, args.out)


# ----------------------------------------------------------------------------- descriptions
def random_description(size: int | None) -> str:
    side = f"{size}x{size}" if size else "--size x --size"
    return (f"Random positive (IoU>=0.65), part (0.4-0.65) and negative (IoU<0.3) {side} crops of WIDER FACE "
            "images, with box regression targets.")


LANDMARK_DESCRIPTION = (
    "Landmark samples (label -2) from a 5-point list (path l r t b x1 y1 ... x5 y5): shifted crops with IoU>0.65, "
    "random mirror (left/right swapped) and small rotations; landmarks normalised to the crop.")


def hard_example_description(stage: int | None) -> str:
    which = {None: "P-Net for --stage 24, P+R-Net for --stage 48", 24: "P-Net, for the 24-net",
             48: "P-Net + R-Net, for the 48-net"}[stage]
    return (f"Hard examples: run the previous stage(s) of the detector ({which}) over WIDER FACE images and label "
            "each detection by IoU with the faces (pos >= 0.65, part 0.4-0.65, neg < 0.3).")


PACK_DESCRIPTION = (
    "Combine generator outputs of one stage into the training LMDB (DIR/data.lmdb, one fixed-size record per "
    "sample: label, 4 box targets, 10 landmark targets, uint8 BGR crop) and, with --imdb, the seed's "
    "cls.imdb/roi.imdb/pts.imdb pickles.")


# ----------------------------------------------------------------------------- script entry points
def random_crops_main(size: int, argv: list[str] | None = None) -> int:
    """``gen_12net_data.py`` / ``gen_24net_data.py`` / ``gen_48net_data.py``."""
    parser = argparse.ArgumentParser(description=random_description(size))
    add_random_args(parser, with_size=False)
    return run_random(parser.parse_args(argv), size)


def landmark_main(argv: list[str] | None = None) -> int:
    """``gen_landmark_data.py``."""
    parser = argparse.ArgumentParser(description=LANDMARK_DESCRIPTION)
    add_landmark_args(parser)
    return run_landmarks(parser.parse_args(argv))


def hard_example_main(argv: list[str] | None = None, stage: int | None = None) -> int:
    """``gen_hard_example.py --stage 24|48`` (and the seed-named wrappers, which fix the stage)."""
    parser = argparse.ArgumentParser(description=hard_example_description(stage))
    add_hard_example_args(parser, with_stage=stage is None)
    return run_hard_examples(parser.parse_args(argv), stage)


def net_imdb_main(argv: list[str] | None = None) -> int:
    """``gen_net_imdb.py``."""
    parser = argparse.ArgumentParser(description=PACK_DESCRIPTION)
    add_pack_args(parser)
    return run_pack(parser.parse_args(argv))
