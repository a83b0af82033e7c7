"""`make setup` is idempotent: a second run reuses the cached Caffe build."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _cache_entry() -> Path:
    import caffe

    key = (Path(caffe.__file__).parent / ".build-key").read_text().split()[0]
    cache = Path(os.environ.get("MTCNN_CAFFE_CACHE", Path.home() / ".cache" / "mtcnn-caffe"))
    return cache / key


@pytest.mark.slow
def test_second_make_setup_does_not_rebuild_caffe():
    entry = _cache_entry()
    so = entry / "caffe" / "_caffe.so"
    assert (entry / "BUILD_OK").is_file() and so.is_file(), f"no completed cache entry at {entry}"
    before = so.stat().st_mtime_ns
    proc = subprocess.run(["make", "setup"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "using cached build" in proc.stdout
    assert "compiling" not in proc.stdout
    assert so.stat().st_mtime_ns == before, "the cached _caffe.so was rebuilt"
    assert "all checks passed" in proc.stdout


def test_doctor_is_green():
    proc = subprocess.run(
        [sys.executable, "-m", "mtcnn_caffe.cli", "doctor"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for layer in ("Python", "PriorBox", "MultiBoxLoss", "DetectionOutput", "AnnotatedData", "Permute", "Normalize"):
        assert f"[ ok ] caffe layer {layer}: registered" in proc.stdout
    assert "[ ok ] opencv dnn readNetFromCaffe" in proc.stdout


def test_cli_help_lists_commands():
    for module in ("mtcnn_caffe.cli", "ssd_mobilenet.cli"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert proc.returncode == 0
        assert "doctor" in proc.stdout
