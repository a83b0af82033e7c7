"""Report objects of the evaluators: summary line, JSON summary, plot files, problems.

Each report function reads its inputs, evaluates, writes ``<out>/<benchmark>.json`` and
a PNG plot atomically, and returns a :class:`Report` with the one-line summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .common import ProblemLog
from .outputs import write_json_atomic


@dataclass
class Report:
    """What an evaluator run produced: the one-line summary, the JSON dict, the files written, the problems."""

    line: str
    summary: dict
    files: list[Path] = field(default_factory=list)
    problems: ProblemLog = field(default_factory=ProblemLog)


def finish_report(out_dir: Path, name: str, inputs: dict, result_dict: dict, problems: ProblemLog, line: str,
            plot_files: list[Path]) -> Report:
    """Write ``<out_dir>/<name>.json`` and return the :class:`Report` of a finished evaluation.

    ``"complete"`` in the JSON is false (and its summary starts with ``INCOMPLETE``) when any input
    item was skipped: such figures must not pass for the benchmark's.
    """
    complete = not problems.problems
    summary = {"benchmark": name, "summary": line if complete else f"INCOMPLETE {line}", "complete": complete,
               "inputs": inputs, **result_dict, **problems.as_dict()}
    json_path = write_json_atomic(out_dir / f"{name}.json", summary)
    return Report(line, summary, [json_path, *plot_files], problems)


def voc_report(pred_dir: str | Path, voc_root: str | Path, image_set: str, out_dir: str | Path,
               labels: str | Path | None = None, strict: bool = False) -> Report:
    """Pascal VOC mAP (VOC07 11-point and all-point); plot ``voc_pr.png``."""
    from caffe_common.eval.plots import plot_pr_curves
    from caffe_common.eval.voc import evaluate_voc, read_class_names

    problems, out_dir = ProblemLog(strict), Path(out_dir)
    classes = read_class_names(labels, voc_root)
    result = evaluate_voc(pred_dir, voc_root, image_set, classes, problems)
    curves = {c: (r.recall, r.precision, r.ap_all) for c, r in result.classes.items() if r.positives}
    plot = plot_pr_curves(curves, out_dir / "voc_pr.png", f"VOC {image_set}: all-point AP per class")
    inputs = {"pred": str(pred_dir), "voc": str(voc_root), "set": image_set, "classes": classes}
    return finish_report(out_dir, "voc", inputs, result.as_dict(), problems, result.summary_line(), [plot])
