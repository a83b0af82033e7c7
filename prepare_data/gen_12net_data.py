#!/usr/bin/env python3
"""P-Net (12x12) positive/part/negative crops from WIDER FACE. See --help and the README."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mtcnn_caffe.data.cli import random_crops_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(random_crops_main(12))
