"""Evaluation outputs: JSON summaries and PNG plots, written atomically.

Both go through :mod:`caffe_common.atomic` (temporary file + ``os.replace``), so
an interrupted run never leaves a half-written summary that looks complete.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_path, write_json_atomic  # noqa: F401  (write_json_atomic: re-exported for the reports)

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.figure import Figure


def save_figure_atomic(figure: "Figure", path: str | Path) -> Path:
    """Save a matplotlib ``Figure`` as PNG to ``path`` atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)
