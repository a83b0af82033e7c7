#!/usr/bin/env bash
# The seed's interface: scripts/gen_model.sh CLASSNUM [gen-model options]
# Writes example/MobileNetSSD_{train,test,deploy}.prototxt and example/solver_{train,test}.prototxt
# for CLASSNUM classes (background included; VOC: 21). Same as
# `ssd-mobilenet gen-model --classes CLASSNUM --out example [options]`; options come after CLASSNUM.
set -euo pipefail
usage() {
    echo "usage: $0 CLASSNUM [gen-model options]" >&2
    echo "        for voc the CLASSNUM is 21" >&2
    exit 1
}
[[ $# -ge 1 && $1 =~ ^[0-9]+$ ]] || usage
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
classes=$1
shift
exec "$PY" -m ssd_mobilenet.cli gen-model --classes "$classes" --out example "$@"
