#!/usr/bin/env bash
# Train one MTCNN stage (the seed's interface): scripts/train.sh 12|24|48 --data PACK_DIR --out DIR [options]
# Same as `mtcnn-caffe train`; `scripts/train.sh 12 --help` lists the options.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
exec "$PY" -m mtcnn_caffe.cli train "$@"
