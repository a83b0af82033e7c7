#!/usr/bin/env bash
# MobileNet-SSD mAP on the test LMDB (the seed's test.sh): scripts/test.sh --weights W.caffemodel
#   [--model example/MobileNetSSD_test.prototxt] [--voc ROOT] [--out test_results] [options]
# Same as `ssd-mobilenet test`: VOC07 11-point AP per class from Caffe's DetectionEvaluate and from the
# Python VOC evaluator; `scripts/test.sh --help` lists the options.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
exec "$PY" -m ssd_mobilenet.cli test "$@"
