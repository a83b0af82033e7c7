"""FDDB evaluator: rasterised overlap vs the official full-canvas drawing, Hungarian matching,
hand-computed ROC, bad input, the CLI and the shared fold files."""
from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest

from mtcnn_caffe.cli import main
from mtcnn_caffe.evaluation import EvaluationError, ProblemLog
from mtcnn_caffe.evaluation.fddb import (
    evaluate_fddb,
    image_roc_steps,
    read_fddb_detections,
    read_fddb_folds,
    region_overlaps,
)


def official_overlap(ellipse, rect, size):
    """What the official program computes: both regions filled on an image-sized mask."""
    major, minor, theta, cx, cy = ellipse
    a = np.zeros((size[1], size[0]), np.uint8)
    d = np.zeros_like(a)
    angle = 180 - (math.pi - theta) * 180 / math.pi
    cv2.ellipse(a, (int(np.rint(np.float32(cx))), int(np.rint(np.float32(cy)))), (int(major), int(minor)), angle, 0, 360, 1, -1)
    x, y, w, h = rect
    cv2.rectangle(d, (int(np.rint(np.float32(x))), int(np.rint(np.float32(y)))),
                  (int(np.rint(np.float32(x + w))), int(np.rint(np.float32(y + h)))), 1, -1)
    return np.count_nonzero(a & d) / np.count_nonzero(a | d)


def bounding_rect(ellipse, score=1.0):
    major, minor, theta, cx, cy = ellipse[:5]
    c, s = math.cos(theta), math.sin(theta)
    hx, hy = math.hypot(major * c, minor * s), math.hypot(major * s, minor * c)
    return [cx - hx, cy - hy, 2 * hx, 2 * hy, score]


def test_overlap_matches_official_full_canvas_drawing():
    rng = np.random.default_rng(0)
    size = (320, 240)
    for _ in range(25):
        ellipse = [rng.uniform(10, 60), rng.uniform(8, 40), rng.uniform(-1.6, 1.6), rng.uniform(0, 320), rng.uniform(0, 240)]
        rect = [rng.uniform(-20, 300), rng.uniform(-20, 220), rng.uniform(5, 120), rng.uniform(5, 120)]
        expected = official_overlap(ellipse, rect, size)
        got = region_overlaps(np.array([ellipse]), np.array([rect + [1.0]]), size)[0, 0]
        assert got == pytest.approx(expected, abs=1e-12)


def test_circle_in_its_square_overlap_is_about_pi_over_4():
    iou = region_overlaps(np.array([[100, 100, 0, 300, 300]]), np.array([[200, 200, 200, 200, 1]]))[0, 0]
    assert iou == pytest.approx(math.pi / 4, abs=0.01)
    far = region_overlaps(np.array([[100, 100, 0, 300, 300]]), np.array([[900, 900, 20, 20, 1]]))[0, 0]
    assert far == 0.0


def test_second_detection_of_a_face_is_a_false_positive():
    overlaps = np.array([[0.8, 0.7]])
    levels, disc, cont, fp = image_roc_steps(overlaps, np.array([0.9, 0.8]))
    assert levels.tolist() == [0.9, 0.8]
    assert disc.tolist() == [1, 1] and fp.tolist() == [0, 1]
    assert cont.tolist() == pytest.approx([0.8, 0.8])


def test_matching_maximises_total_overlap():
    # greedy would give face 0 to detection 0 (0.9) and leave face 1 with 0.2;
    # the Hungarian matching gives 0.85 + 0.8
    overlaps = np.array([[0.9, 0.85], [0.8, 0.2]])
    _, disc, cont, fp = image_roc_steps(overlaps, np.array([0.5, 0.5]))
    assert disc.tolist() == [2] and fp.tolist() == [0]
    assert cont[0] == pytest.approx(1.65)


E1, E2, E3 = [40, 30, 1.2, 100, 100], [40, 30, -1.3, 300, 100], [35, 25, 1.5, 150, 150]


def test_hand_computed_roc_over_two_images():
    gt = {"img/a": np.array([E1, E2], float), "img/b": np.array([E3], float)}
    dets = {"img/a": np.array([bounding_rect(E1, 0.9), [500, 500, 30, 30, 0.8], bounding_rect(E2, 0.7)]),
            "img/b": np.array([bounding_rect(E3, 0.75)])}
    iou = {n: region_overlaps(gt[n], dets[n]) for n in gt}
    assert min(iou["img/a"][0, 0], iou["img/a"][1, 2], iou["img/b"][0, 0]) > 0.5
    result = evaluate_fddb(gt, dets)
    assert result.thresholds.tolist() == [np.inf, 0.9, 0.8, 0.75, 0.7]
    assert result.false_positives.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(result.tpr_discrete, [0, 1 / 3, 1 / 3, 2 / 3, 1])
    tp1, tp2, tp3 = iou["img/a"][0, 0], iou["img/a"][1, 2], iou["img/b"][0, 0]
    np.testing.assert_allclose(result.tpr_continuous, [0, tp1 / 3, tp1 / 3, (tp1 + tp3) / 3, (tp1 + tp2 + tp3) / 3])
    assert result.tpr_at["discrete"] == {1000: 1.0, 2000: 1.0}
    assert result.faces == 3 and result.detections == 4


def test_empty_detections_give_zero():
    gt = {"img/a": np.array([E1], float)}
    result = evaluate_fddb(gt, {})
    assert result.tpr_at["discrete"] == {1000: 0.0, 2000: 0.0}
    assert result.tpr_at["continuous"] == {1000: 0.0, 2000: 0.0}


def write_blocks(path, blocks):
    lines = []
    for name, rows in blocks.items():
        lines += [name, str(len(rows))] + [" ".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_detection_input_is_reported(tmp_path):
    gt = {"img/a": np.array([E1], float)}
    path = tmp_path / "dets.txt"
    path.write_text("img/a\n4\n10 10 20 20 0.9\n10 10 20\n10 10 20 20 nan\n10 10 -5 20 0.3\n"
                    "img/zzz\n1\n1 1 1 1 1\nimg/b\nmany\n")
    problems = ProblemLog()
    dets = read_fddb_detections(path, gt, problems)
    assert dets["img/a"].tolist() == [[10, 10, 20, 20, 0.9]]
    located = [m.split(": ")[0] for m in problems.problems]
    assert f"{path}:4" in located and f"{path}:5" in located and f"{path}:6" in located and f"{path}:11" in located
    assert any("'img/zzz'" in m and "not in the FDDB folds" in m for m in problems.problems)
    assert any("non-finite" in m for m in problems.problems)
    assert any("negative size" in m for m in problems.problems)
    with pytest.raises(EvaluationError, match=re.escape(f"{path}:4")):
        read_fddb_detections(path, gt, ProblemLog(strict=True))


def test_cli_on_generated_folds(tmp_path, capsys):
    folds = tmp_path / "folds"
    folds.mkdir()
    write_blocks(folds / "FDDB-fold-01-ellipseList.txt", {"img/a": [E1 + [1], E2 + [1]]})
    write_blocks(folds / "FDDB-fold-02-ellipseList.txt", {"img/b": [E3 + [1]]})
    dets = write_blocks(tmp_path / "dets.txt", {"img/a": [bounding_rect(E1, 0.9), bounding_rect(E2, 0.8)]})
    out = tmp_path / "out"
    assert main(["eval", "fddb", "--pred", str(dets), "--folds", str(folds), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("discrete TPR@1000FP 0.6667 TPR@2000FP 0.6667 | continuous TPR@1000FP ")
    assert "1 FDDB image(s) have no detection block" in captured.err
    summary = json.loads((out / "fddb.json").read_text())
    assert summary["tpr_at_fp"]["discrete"]["1000"] == pytest.approx(2 / 3)
    assert (out / "fddb_roc.png").stat().st_size > 1000
    # only fold 1: the face of fold 2 no longer counts
    assert main(["eval", "fddb", "--pred", str(dets), "--folds", str(folds), "--fold", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("discrete TPR@1000FP 1.0000")


def test_shared_folds_reader_and_perfect_detections(shared_dir, tmp_path):
    folds = shared_dir / "data/fddb_folds"
    gt = read_fddb_folds(folds)
    assert len(gt) == 2845 and sum(len(v) for v in gt.values()) == 5171
    two = read_fddb_folds(folds, [1, 2])
    dets = {name: np.array([bounding_rect(e, s) for e, s in zip(ellipses, np.linspace(1, 0.5, len(ellipses)))])
            for name, ellipses in two.items()}
    result = evaluate_fddb(two, dets)
    assert result.tpr_discrete[-1] == 1.0 and result.false_positives[-1] == 0
    assert result.tpr_at["discrete"][1000] == 1.0
    # continuous TPR = mean pixel IoU of an ellipse with its bounding box, a bit under pi/4
    assert 0.7 < result.tpr_at["continuous"][1000] < math.pi / 4
