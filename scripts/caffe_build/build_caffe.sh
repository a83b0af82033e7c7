#!/usr/bin/env bash
# Build pycaffe (BVLC Caffe + SSD layers) from the PyPI sdist brocolli-caffe and
# install the `caffe` package into a virtual environment.
#
# Usage: build_caffe.sh PYTHON
#   PYTHON  the interpreter of the venv that will import caffe (its headers and
#           numpy headers are compiled into _caffe.so).
#
# Before compiling, the project's source patch (patches/apply_patches.py:
# SSD's resize_param / distort_param / expand_param and the augmentation
# behind them) is applied to the verified sdist.
#
# The finished package is cached in $MTCNN_CAFFE_CACHE (default
# ~/.cache/mtcnn-caffe) under a key made of the sdist version, the Python ABI,
# the numpy major version and a hash of the patch files and compatibility
# header, so a second run only copies it into the venv and a changed patch
# never reuses an old build.
# The cache entry is published with an atomic rename: an interrupted build
# never leaves an entry that looks complete.
set -euo pipefail

PYTHON=${1:?usage: build_caffe.sh PYTHON}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SDIST_NAME=brocolli-caffe
SDIST_VERSION=9.0.2
SDIST_SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
CACHE=${MTCNN_CAFFE_CACHE:-$HOME/.cache/mtcnn-caffe}
JOBS=${MTCNN_CAFFE_JOBS:-$(nproc)}

say() { echo "[caffe] $*"; }

py_abi=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
np_major=$("$PYTHON" -c 'import numpy; print(numpy.__version__.split(".")[0])')
# Everything under $HERE that changes the compiled result, by path and content.
patch_hash=$(cd "$HERE" && find opencv4_compat.h patches -type f ! -name '*.pyc' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
KEY="${SDIST_NAME}-${SDIST_VERSION}-${py_abi}-np${np_major}-p${patch_hash}"
ENTRY="$CACHE/$KEY"
site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

install_into_venv() {
    # Copy the cached package into the venv unless the same build is already there.
    if [ -f "$site/caffe/.build-key" ] && cmp -s "$site/caffe/.build-key" "$ENTRY/caffe/.build-key"; then
        say "venv already has caffe from $ENTRY"
        return
    fi
    rm -rf "$site/caffe.tmp" "$site/caffe"
    cp -a "$ENTRY/caffe" "$site/caffe.tmp"
    mv "$site/caffe.tmp" "$site/caffe"
    say "installed caffe into $site"
}

if [ -f "$ENTRY/BUILD_OK" ]; then
    say "using cached build $ENTRY (no rebuild)"
    install_into_venv
    exit 0
fi

say "no cached build for $KEY: building (about 5-10 minutes on 2 cores)"
mkdir -p "$CACHE/sdist"
tarball="$CACHE/sdist/${SDIST_NAME}-${SDIST_VERSION}.tar.gz"
if [ ! -f "$tarball" ]; then
    say "downloading the sdist ${SDIST_NAME}==${SDIST_VERSION} from PyPI"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
        "${SDIST_NAME}==${SDIST_VERSION}" -d "$CACHE/sdist"
fi
actual=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ "$actual" != "$SDIST_SHA256" ]; then
    rm -f "$tarball"
    echo "[caffe] ERROR: sha256 of $tarball is $actual, expected $SDIST_SHA256 (file removed)" >&2
    exit 1
fi
say "sdist sha256 verified"

work="$CACHE/build-$KEY"
log="$work/build.log"
rm -rf "$work"
mkdir -p "$work"
tar -xzf "$tarball" -C "$work"
src="$work/${SDIST_NAME}-${SDIST_VERSION}"
build_or_die() {
    if ! "$@" >>"$log" 2>&1; then
        echo "[caffe] ERROR: build step failed: $*" >&2
        echo "[caffe] last lines of $log:" >&2
        tail -n 40 "$log" >&2
        echo "[caffe] full log: $log" >&2
        exit 1
    fi
}
say "applying the project's patch (patches/apply_patches.py)"
build_or_die "$PYTHON" "$HERE/patches/apply_patches.py" "$src"

# Debian names the Boost.Python library after the Python version; the sdist
# links -lboost_python, so offer it under that name in a private directory.
mkdir -p "$work/lib"
boost_py=$(ls /usr/lib/*/libboost_python3*.so 2>/dev/null | head -n1 || true)
if [ -z "$boost_py" ]; then
    echo "[caffe] ERROR: libboost_python3*.so not found (apt package libboost-python-dev)" >&2
    exit 1
fi
ln -sf "$boost_py" "$work/lib/libboost_python.so"

py_inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$PYTHON" -c 'import numpy; print(numpy.get_include())')
multiarch=$(gcc -print-multiarch)
hdf5_inc=/usr/include/hdf5/serial
hdf5_lib=/usr/lib/$multiarch/hdf5/serial

# The sdist's USE_OPENCV / USE_LMDB / BUILD_python_layer options do nothing:
# the defines go into the compiler flags. Libraries go into the standard
# libraries (after the objects) so --as-needed keeps them.
cxx_flags="-O2 -DUSE_OPENCV -DUSE_LMDB -DWITH_PYTHON_LAYER -include $HERE/opencv4_compat.h"
cxx_flags+=" -I$py_inc -I$np_inc -I/usr/include/opencv4 -I$hdf5_inc -w"
std_libs="-lopencv_core -lopencv_imgproc -lopencv_imgcodecs -lopencv_videoio -lopencv_highgui -llmdb"
link_flags="-L$work/lib -L$hdf5_lib"

say "configuring (log: $log)"
build_or_die cmake -S "$src" -B "$work/build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCPU_ONLY=ON -DBUILD_python=ON -DBUILD_docs=OFF \
    -DANACONDA_HOME="$work/no-conda" \
    -DCMAKE_CXX_FLAGS="$cxx_flags" \
    -DCMAKE_CXX_STANDARD_LIBRARIES="$std_libs" \
    -DCMAKE_SHARED_LINKER_FLAGS="$link_flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$link_flags"
say "compiling with $JOBS jobs (log: $log)"
build_or_die cmake --build "$work/build" --target pycaffe -j "$JOBS"

# Assemble the package next to the entry, then publish it with one rename.
staging="$ENTRY.tmp.$$"
rm -rf "$staging"
mkdir -p "$staging/caffe/proto"
for f in "$src"/python/caffe/*.py; do cp "$f" "$staging/caffe/"; done
cp "$work"/build/include/caffe/proto/caffe_pb2.py "$staging/caffe/proto/"
touch "$staging/caffe/proto/__init__.py"
so=$(find "$work/build" -name '_caffe*.so' -type f | head -n1)
cp "$so" "$staging/caffe/_caffe.so"
cp "$src/LICENSE" "$staging/caffe/LICENSE.caffe"
echo "$KEY built $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$staging/caffe/.build-key"
touch "$staging/BUILD_OK"
rm -rf "$ENTRY"
mv "$staging" "$ENTRY"
rm -rf "$work/build" "$src"   # keep only build.log
say "built and cached $ENTRY"
install_into_venv
