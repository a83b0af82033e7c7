"""Atomic writing of evaluation summaries (JSON) and plots (PNG).

Each file is written to a temporary name in the target folder and moved into
place with :func:`os.replace`, so an interrupted run never leaves a
half-written summary that looks complete.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.figure import Figure


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN/inf -> ``None`` (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _temp_path(target: Path, suffix: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    path = Path(path)
    tmp = _temp_path(path, ".tmp")
    try:
        tmp.write_text(json.dumps(to_jsonable(data), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_figure_atomic(figure: "Figure", path: str | Path) -> Path:
    """Save a matplotlib ``Figure`` as PNG to ``path`` atomically."""
    path = Path(path)
    tmp = _temp_path(path, ".png")
    try:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
