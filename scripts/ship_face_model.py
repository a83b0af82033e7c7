#!/usr/bin/env python
"""Copy a finished ``ssd-mobilenet train-faces`` run's model into ``models/<name>/`` with a MANIFEST.json that
says how it was made (command, data, seed, git revision, training figures from ``log.csv``, evaluation).

    .venv/bin/python scripts/ship_face_model.py RUN_DIR models/face_multitask --command "ssd-mobilenet train-faces ..." \
        [--merge-bn] [--conf C] [--evaluation results.json] [--data "in words"]

The model folder gets what ``detect-faces --model-dir`` reads: ``face_model.json``, the deploy prototxt and
the caffemodel it names (checked to load together in Caffe before anything is copied). ``--merge-bn`` ships them
with every BatchNorm / Scale folded into its convolution (:func:`caffe_common.merge_bn.merge_bn`: same outputs,
checked, or nothing is shipped; faster on the caffe backend), under the same file names. ``--conf`` sets the
shipped model's default score threshold (``face_model.json`` ``thresholds.conf``), ``--detect-sizes`` its
default input sides (``input.detect_sizes``); settings a run made by an older toolkit lacks get today's
defaults. The run's own file is not changed.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caffe_common.atomic import write_json_atomic  # noqa: E402
from caffe_common.manifest import add_manifest_options, copy_files, manifest_head  # noqa: E402


def training_figures(log: Path, tail: int = 10) -> dict:
    """Iterations, final learning rate, the losses averaged over the last ``tail`` logged rows (single
    iterations are noisy) and the median samples/s of a run's ``log.csv``."""
    rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(open(log))]
    if not rows:
        raise ValueError(f"{log}: no logged iteration")
    last = rows[-tail:]
    losses = [k for k in rows[-1] if k.startswith("loss")]
    return {"iterations": int(rows[-1]["iter"]), "final_lr": rows[-1]["lr"],
            f"losses_mean_of_last_{len(last)}_logged": {k: round(statistics.fmean(r[k] for r in last), 4)
                                                         for k in losses},
            "samples_per_s_median": round(statistics.median(r["samples_per_s"] for r in rows), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the --out folder of train-faces (with face_model.json)")
    parser.add_argument("target", type=Path, help="e.g. models/face_multitask")
    add_manifest_options(parser)
    parser.add_argument("--evaluation", type=Path, help="a JSON file of evaluation results to include")
    parser.add_argument("--conf", type=float, metavar="C",
                        help="the shipped model's default score threshold, in (0, 1) (default: the run's)")
    parser.add_argument("--detect-sizes", type=int, nargs="+", metavar="S",
                        help="the shipped model's default input side(s) (default: the run's, else the trained side "
                        "and twice it)")
    parser.add_argument("--merge-bn", action="store_true",
                        help="fold BatchNorm / Scale into the convolutions on the way (verified; same file names)")
    args = parser.parse_args()
    if args.conf is not None and not 0 < args.conf < 1:
        parser.error(f"--conf {args.conf}: must be between 0 and 1")
    from caffe_common.merge_bn import format_report, merge_bn
    from ssd_mobilenet.faces.detect import FaceDetector, read_model_info
    from ssd_mobilenet.faces.model import FaceModelError, Thresholds, check_sizes, default_detect_sizes

    if args.detect_sizes is not None:
        try:
            check_sizes(args.detect_sizes, "--detect-sizes")
        except FaceModelError as exc:
            parser.error(str(exc))

    info = read_model_info(args.run)
    FaceDetector(args.run)  # the prototxt and the caffemodel load together (checked before Caffe sees them)
    folded = {}
    with tempfile.TemporaryDirectory() as tmp:
        deploy, weights = info.deploy, info.weights
        if args.merge_bn:
            result = merge_bn(deploy, weights, Path(tmp) / deploy.name, Path(tmp) / weights.name)
            if not result.written:
                print(format_report(result), file=sys.stderr)
                print("error: the folded model's outputs differ; nothing shipped", file=sys.stderr)
                return 1
            deploy, weights = result.out_model, result.out_weights
            v = result.verification
            folded = {"folds": len(result.plan.folds), "layers": [result.layers_before, result.layers_after],
                      "max_relative_difference": max(d.max_rel for d in v.diffs),
                      "forward_ms_caffe": [round(v.seconds_before * 1000, 1), round(v.seconds_after * 1000, 1)]}
        data = json.loads((args.run / "face_model.json").read_text())
        data["thresholds"] = {**asdict(Thresholds()), **data["thresholds"]}
        if args.conf is not None:
            data["thresholds"]["conf"] = args.conf
        sizes = args.detect_sizes or data["input"].get("detect_sizes") or default_detect_sizes(info.size)
        data["input"]["detect_sizes"] = list(check_sizes(sizes))
        description = Path(tmp) / "face_model.json"
        write_json_atomic(description, data, indent=1)
        files = copy_files([description, deploy, weights], args.target)
    FaceDetector(args.target)
    manifest = {**manifest_head(args), "files_sha256": files, "training": training_figures(args.run / "log.csv"),
                "evaluation": json.loads(args.evaluation.read_text()) if args.evaluation else {}}
    if folded:
        manifest["merge_bn"] = folded
    write_json_atomic(args.target / "MANIFEST.json", manifest, indent=2)
    print(f"wrote {args.target} ({', '.join(files)}, MANIFEST.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
