"""Atomic writes: complete file or nothing, normal permissions, no stray temp files."""
import json
import os
import stat

import numpy as np
import pytest

from caffe_common.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_json_with_numpy_and_permissions(tmp_path):
    target = tmp_path / "sub" / "stats.json"
    write_json_atomic(target, {"n": np.int64(3), "v": np.arange(2, dtype=np.float32)})
    assert json.loads(target.read_text()) == {"n": 3, "v": [0.0, 1.0]}
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode & stat.S_IRGRP, "atomic files must not keep mkstemp's 0600"
