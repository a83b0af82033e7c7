#!/usr/bin/env python
"""Copy a finished ``train-cascade`` run's weights into ``models/<name>/`` with a MANIFEST.json that says how
they were made (command, data, seed, git revision, per-stage time and final figures, evaluation).

    .venv/bin/python scripts/ship_cascade.py RUN_DIR models/mtcnn_wider_subset --command "scripts/train_cascade.sh ..."
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caffe_common.atomic import write_json_atomic  # noqa: E402
from caffe_common.manifest import add_manifest_options, copy_files, manifest_head  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the --out folder of train-cascade (with weights/ and cascade.json)")
    parser.add_argument("target", type=Path, help="e.g. models/mtcnn_wider_subset")
    add_manifest_options(parser)
    args = parser.parse_args()
    steps = json.loads((args.run / "cascade.json").read_text())["steps"]
    missing = [f"{s}.{ext}" for s in ("det1", "det2", "det3") for ext in ("prototxt", "caffemodel")
               if not (args.run / "weights" / f"{s}.{ext}").is_file()]
    if missing:
        print(f"error: {args.run / 'weights'} lacks {', '.join(missing)}: the run is not finished", file=sys.stderr)
        return 2
    files = copy_files([args.run / "weights" / f"{stage}.{ext}" for stage in ("det1", "det2", "det3")
                        for ext in ("prototxt", "caffemodel")], args.target)
    manifest = {**manifest_head(args), "files_sha256": files,
                "stages": {k: v for k, v in steps.items() if k.endswith("/train")},
                "data_steps": {k: v for k, v in steps.items() if not k.endswith("/train") and not k.startswith("eval")},
                "evaluation": {k: v for k, v in steps.items() if k.startswith("eval")}}
    write_json_atomic(args.target / "MANIFEST.json", manifest, indent=2)
    print(f"wrote {args.target} ({', '.join(files)}, MANIFEST.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
