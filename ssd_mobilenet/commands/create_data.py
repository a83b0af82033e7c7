"""``ssd-mobilenet create-data``: a Pascal VOC folder or a COCO ``instances.json`` to the LMDB, label map and
``name_size`` file SSD trains and tests with (a thin CLI over :mod:`ssd_mobilenet.datasets`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caffe_common.cli import count

DESCRIPTION = (
    "Convert one split of a detection dataset for SSD. Writes into --out: NAME_lmdb (Caffe AnnotatedDatum "
    "records, one per image, in list order), labelmap.prototxt (background label 0, then the classes), "
    "NAME_name_size.txt ('image_id height width' per written image: DetectionEvaluate's name_size_file) and "
    "NAME_problems.txt (every skipped object or image and every note). Boxes are normalised as SSD's "
    "create_data does (VOC: pixel value / image width or height; COCO: [x, y, w, h] -> x/W, y/H, (x+w)/W, "
    "(y+h)/H). Unknown classes, degenerate boxes and boxes outside the image are skipped, boxes partly "
    "outside are clipped, unreadable annotations and images are skipped: the run goes on and counts them. "
    "Exit status: 0 written (problems or not), 2 refused (nothing written), 130 interrupted (nothing written)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ssd-mobilenet create-data``."""
    p = subparsers.add_parser("create-data", help="VOC or COCO annotations -> SSD LMDB, labelmap, name_size file",
                              description=DESCRIPTION)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--voc", type=Path, metavar="ROOT",
                        help="VOC folder: Annotations/<id>.xml, ImageSets/Main/<split>.txt, JPEGImages/<id>.jpg")
    source.add_argument("--coco", type=Path, metavar="JSON", help="COCO instances file (with --images)")
    p.add_argument("--images", type=Path, metavar="DIR", help="folder of the COCO images (file_name is relative to it)")
    p.add_argument("--split", required=True, metavar="NAME",
                   help="VOC: the image set (ImageSets/Main/NAME.txt); both: the output names NAME_lmdb, ...")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="class names, one per line in label order (1, 2, ...), or an SSD labelmap.prototxt "
                        "(default VOC: ROOT/labels.txt if present, else the 20 VOC classes; COCO: the json's "
                        "categories sorted by id)")
    p.add_argument("--skip-empty", action="store_true",
                   help="leave out images without usable objects (default: keep them with no boxes; Caffe's "
                        "evaluation counts detections on them as false positives)")
    p.add_argument("--crowd", choices=("difficult", "skip"), default=None,
                   help="COCO iscrowd boxes: keep them marked difficult (default, as SSD does: evaluation "
                        "ignores them) or skip them")
    p.add_argument("--workers", type=count(1), default=None, metavar="N",
                   help="processes decoding and encoding images (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing NAME_lmdb, NAME_name_size.txt and a different labelmap.prototxt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    from ssd_mobilenet.datasets import DatasetError, check_split_name

    if args.coco is not None and args.images is None:
        raise DatasetError("--coco needs --images DIR, the folder its file_name entries are relative to")
    if args.voc is not None and args.images is not None:
        raise DatasetError("--images is for --coco; a VOC folder keeps its images in ROOT/JPEGImages")
    if args.voc is not None and args.crowd is not None:
        raise DatasetError("--crowd is for --coco; VOC marks difficult objects in its XML")
    check_split_name(args.split)
    for option, path, kind in (("--voc", args.voc, "folder"), ("--coco", args.coco, "file"),
                               ("--images", args.images, "folder"), ("--labels", args.labels, "file")):
        if path is None:
            continue
        if not path.exists():
            raise DatasetError(f"{option} {path}: not found")
        if (kind == "folder") != path.is_dir():
            raise DatasetError(f"{option} {path}: is {'a file' if kind == 'folder' else 'a folder'}, expected a {kind}")


def _print_summary(result, limit: int = 10) -> None:
    counts = result.log.counts
    files = result.files
    print(f"create-data: wrote {files.lmdb}: {result.images} images, {result.objects} objects "
          f"({result.difficult} difficult) in {result.seconds:.1f} s")
    crowd = f", {counts['crowd boxes skipped']} crowd boxes skipped" if counts["crowd boxes skipped"] else ""
    print(f"  skipped {counts['images skipped']} images and {counts['objects skipped']} objects; "
          f"{counts['boxes clipped']} boxes clipped to their image; {counts['images without objects']} images "
          f"without objects kept, {counts['empty images skipped']} skipped; {counts['size mismatches']} "
          f"annotated sizes differ from the image{crowd}")
    labelmap = "written" if result.labelmap_written else "unchanged"
    print(f"  {files.labelmap} ({labelmap}), {files.name_size}, {files.problems} "
          f"({len(result.log.problems)} problems, {len(result.log.notes)} notes)")
    shown = [*result.log.problems[:limit], *(f"note: {n}" for n in result.log.notes[:max(0, limit - len(result.log.problems))])]
    for line in shown:
        print(line, file=sys.stderr)
    hidden = len(result.log.problems) + len(result.log.notes) - len(shown)
    if hidden > 0:
        print(f"... {hidden} more in {files.problems}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Check the options and outputs, read the dataset, convert; 0 written, 2 refused, 130 interrupted."""
    from caffe_common.batch import OutputError
    from caffe_common.parallel import WorkerDiedError, default_workers
    from ssd_mobilenet.datasets import DatasetError, OutputFiles, check_outputs, convert, read_coco, read_voc

    try:
        _check_options(args)
        check_outputs(OutputFiles.of(args.out, args.split), None, args.overwrite)
        if args.voc is not None:
            dataset = read_voc(args.voc, args.split, args.labels)
        else:
            dataset = read_coco(args.coco, args.images, args.labels, args.crowd or "difficult")
        result = convert(dataset, args.out, args.split, workers=args.workers or default_workers(),
                         skip_empty=args.skip_empty, overwrite=args.overwrite, progress=not args.no_progress)
    except (DatasetError, OutputError) as exc:
        print(f"create-data: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, WorkerDiedError) as exc:  # a full disk, a vanished folder, a worker killed
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"create-data: error: {getattr(exc, 'strerror', None) or exc}{where}; nothing written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("create-data: interrupted (nothing written)", file=sys.stderr)
        return 130
    _print_summary(result)
    return 0
