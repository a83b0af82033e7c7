#!/usr/bin/env python3
"""Landmark samples (label -2) at 12/24/48 from a 5-point list, with mirror/shift/rotation augmentation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mtcnn_caffe.data.cli import landmark_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(landmark_main())
