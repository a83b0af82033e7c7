#!/usr/bin/env python3
"""Pack a stage's samples (ratio-mixed, shuffled) into DIR/data.lmdb and optionally the seed's imdb pickles."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mtcnn_caffe.data.cli import net_imdb_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(net_imdb_main())
