#!/usr/bin/env bash
# Training, with the seeds' two interfaces:
#   scripts/train.sh 12|24|48 --data PACK_DIR --out DIR [options]   one MTCNN stage (= mtcnn-caffe train)
#   scripts/train.sh [--solver example/solver_train.prototxt] [--out snapshot] [--weights W] [options]
#                                                                    MobileNet-SSD (= ssd-mobilenet train)
# A first argument 12, 24 or 48 selects MTCNN; anything else (or nothing) trains the SSD solver.
# `scripts/train.sh 12 --help` and `scripts/train.sh --help` list the options.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
case "${1:-}" in
    12|24|48) exec "$PY" -m mtcnn_caffe.cli train "$@" ;;
    *) exec "$PY" -m ssd_mobilenet.cli train "$@" ;;
esac
