"""File-to-report entry points of the face evaluators (what the ``eval`` commands call).

Each function reads its inputs, evaluates, writes ``<out>/<benchmark>.json`` and
a PNG plot atomically, and returns a :class:`Report` with the one-line summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from caffe_common.eval.common import EvaluationError, ProblemLog
from caffe_common.eval.reports import Report, finish_report


def require(condition: object, message: str) -> None:
    """Refuse an evaluation that would have nothing to measure (an empty input is an error, not a score of 0)."""
    if not condition:
        raise EvaluationError(message)


def wider_report(pred_dir: str | Path, gt: str | Path, out_dir: str | Path, subset: str | Path | None = None,
                 strict: bool = False) -> Report:
    """WIDER FACE AP per setting; plot ``wider_pr.png``."""
    from caffe_common.eval.plots import plot_pr_curves
    from .wider import evaluate_wider, load_wider_ground_truth, read_subset, read_wider_predictions

    problems, out_dir = ProblemLog(strict), Path(out_dir)
    ground_truth = load_wider_ground_truth(gt, problems)
    require(ground_truth.images, f"{ground_truth.source}: no ground-truth image could be read")
    outside = None
    if subset is not None:
        keys = read_subset(subset, ground_truth, problems)
        outside = {im.key for im in ground_truth.images} - keys
        ground_truth = ground_truth.restrict(keys)
        require(ground_truth.images, f"{subset}: no image of the subset list is in the ground truth")
    require(any(im.keep[s].any() for im in ground_truth.images for s in ground_truth.settings),
            f"{ground_truth.source}: no face to evaluate (every face is flagged invalid or ignored)")
    predictions = read_wider_predictions(pred_dir, ground_truth, problems, outside)
    if predictions.outside_subset:
        problems.note(f"{predictions.outside_subset} prediction file(s) outside --subset were not evaluated")
    result = evaluate_wider(ground_truth, predictions.boxes, problems)
    plot = plot_pr_curves({n: (r.recall, r.precision, r.ap) for n, r in result.settings.items()},
                          out_dir / "wider_pr.png", f"WIDER FACE ({Path(ground_truth.source).name})")
    inputs = {"pred": str(pred_dir), "gt": ground_truth.source, "subset": str(subset) if subset else None,
              "prediction_files_missing": len(predictions.missing)}
    return finish_report(out_dir, "wider", inputs, result.as_dict(), problems, result.summary_line(), [plot])


def fddb_report(pred_files: Iterable[str | Path], folds_dir: str | Path, out_dir: str | Path,
                folds: Iterable[int] | None = None, images_dir: str | Path | None = None,
                strict: bool = False) -> Report:
    """FDDB discrete/continuous ROC; plot ``fddb_roc.png``."""
    from .fddb import FP_MARKS, evaluate_fddb, read_fddb_detections, read_fddb_folds, read_image_sizes
    from caffe_common.eval.plots import plot_roc

    problems, out_dir = ProblemLog(strict), Path(out_dir)
    pred_files = [Path(p) for p in pred_files]
    ground_truth = read_fddb_folds(folds_dir, folds, problems)
    require(sum(len(v) for v in ground_truth.values()), f"{folds_dir}: the FDDB folds read hold no face")
    detections = read_fddb_detections(pred_files, ground_truth, problems)
    missing = [n for n in ground_truth if n not in detections]
    if missing:
        problems.note(f"{len(missing)} FDDB image(s) have no detection block (counted as no detections), e.g. {missing[0]!r}")
    sizes = read_image_sizes(images_dir, ground_truth, problems) if images_dir else None
    result = evaluate_fddb(ground_truth, detections, sizes)
    plot = plot_roc({"discrete": (result.false_positives, result.tpr_discrete),
                     "continuous": (result.false_positives, result.tpr_continuous)},
                    out_dir / "fddb_roc.png", f"FDDB ROC ({result.images} images, {result.faces} faces)", FP_MARKS)
    inputs = {"pred": [str(p) for p in pred_files], "folds": str(folds_dir),
              "fold_numbers": list(folds) if folds else "all", "images": str(images_dir) if images_dir else None}
    return finish_report(out_dir, "fddb", inputs, result.as_dict(), problems, result.summary_line(), [plot])


def landmarks_report(pred_jsonl: str | Path, gt: str | Path, images_root: str | Path, out_dir: str | Path,
                     normalise: str = "inter-ocular", min_iou: float = 0.3, strict: bool = False) -> Report:
    """Landmark NME / failure rate / CED; plot ``landmarks_ced.png``."""
    from .landmarks import (FAILURE_THRESHOLD, ced_curve, evaluate_landmarks, load_landmark_ground_truth,
                            read_detections_jsonl)
    from caffe_common.eval.plots import plot_ced

    problems, out_dir = ProblemLog(strict), Path(out_dir)
    ground_truth = load_landmark_ground_truth(gt, problems)
    require(ground_truth, f"{gt}: no annotated face could be read")
    records = read_detections_jsonl(pred_jsonl, problems)
    require(records, f"{pred_jsonl}: no detection record could be read; nothing to evaluate")
    result = evaluate_landmarks(records, ground_truth, images_root, problems, normalise, min_iou)
    x, fraction = ced_curve(result.nme)
    plot = plot_ced(x, fraction, out_dir / "landmarks_ced.png", f"5-point landmarks ({len(result.nme)} faces)",
                    f"NME {result.mean_nme:.4f} ({normalise})", FAILURE_THRESHOLD)
    inputs = {"pred": str(pred_jsonl), "gt": str(gt), "images": str(images_root), "min_iou": min_iou}
    return finish_report(out_dir, "landmarks", inputs, result.as_dict(), problems, result.summary_line(), [plot])
