"""Shared fixtures: the real pycaffe module and the optional ../shared folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MTCNN_CAFFE_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def caffe():
    """The real pycaffe module, CPU mode, quiet log."""
    from caffe_common.env import import_caffe

    return import_caffe()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (reference weights and data); tests using it skip on a user's fresh clone."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DIR} (not part of a fresh clone)")
    return SHARED_DIR


def write_prototxt(tmp_path: Path, text: str, name: str = "net.prototxt") -> str:
    """Write a prototxt string to a file and return its path as str (what Caffe wants)."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)
