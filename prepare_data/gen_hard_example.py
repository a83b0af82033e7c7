#!/usr/bin/env python3
"""Hard examples for --stage 24 (mined with P-Net) or 48 (mined with P-Net + R-Net)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mtcnn_caffe.data.cli import hard_example_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(hard_example_main())
