#!/usr/bin/env bash
# `make test`: the test suite in the project's venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    echo "[test] .venv is missing: run 'make setup' first" >&2
    exit 1
fi
exec .venv/bin/python -m pytest "$@"
