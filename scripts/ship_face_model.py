#!/usr/bin/env python
"""Copy a finished ``ssd-mobilenet train-faces`` run's model into ``models/<name>/`` with a MANIFEST.json that
says how it was made (command, data, seed, git revision, training figures from ``log.csv``, evaluation).

    .venv/bin/python scripts/ship_face_model.py RUN_DIR models/face_multitask --command "ssd-mobilenet train-faces ..." \
        [--evaluation results.json] [--data "in words"]

The model folder gets what ``detect-faces --model-dir`` reads: ``face_model.json``, the deploy prototxt and
the caffemodel it names (checked to load together in Caffe before anything is copied).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
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
    args = parser.parse_args()
    from ssd_mobilenet.faces.detect import FaceDetector, read_model_info

    info = read_model_info(args.run)
    FaceDetector(args.run)  # the prototxt and the caffemodel load together (checked before Caffe sees them)
    files = copy_files([args.run / "face_model.json", info.deploy, info.weights], args.target)
    manifest = {**manifest_head(args), "files_sha256": files, "training": training_figures(args.run / "log.csv"),
                "evaluation": json.loads(args.evaluation.read_text()) if args.evaluation else {}}
    write_json_atomic(args.target / "MANIFEST.json", manifest, indent=2)
    print(f"wrote {args.target} ({', '.join(files)}, MANIFEST.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
