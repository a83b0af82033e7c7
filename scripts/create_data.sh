#!/usr/bin/env bash
# SSD's create_data step: scripts/create_data.sh (--voc ROOT | --coco JSON --images DIR) --split NAME --out DIR [options]
# Writes DIR/NAME_lmdb, DIR/labelmap.prototxt, DIR/NAME_name_size.txt and DIR/NAME_problems.txt.
# Same as `ssd-mobilenet create-data ...`; see --help for the options.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
exec "$PY" -m ssd_mobilenet.cli create-data "$@"
