#!/usr/bin/env python3
"""Seed name: hard examples mined with the 12- and 24-net for the 48-net; same as gen_hard_example.py --stage 48."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mtcnn_caffe.data.cli import hard_example_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(hard_example_main(stage=48))
