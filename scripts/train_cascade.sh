#!/usr/bin/env bash
# The whole MTCNN cascade from annotations (resumable): same as `mtcnn-caffe train-cascade`.
#   scripts/train_cascade.sh --wider-anno F --wider-images D --landmarks LIST --landmark-images D --out DIR [options]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
exec "$PY" -m mtcnn_caffe.cli train-cascade "$@"
