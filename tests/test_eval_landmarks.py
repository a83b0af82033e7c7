"""Landmark evaluator: NME with both normalisations, failure rate, CED, matching to detections,
bad input, the CLI, and the shared 5-point and 68-point sets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mtcnn_caffe.annotations import landmarks_68_to_5, read_imglab_xml, read_landmark_list
from mtcnn_caffe.cli import main
from mtcnn_caffe.evaluation import EvaluationError, ProblemLog
from mtcnn_caffe.evaluation.landmarks import (
    ced_auc,
    ced_curve,
    evaluate_landmarks,
    load_landmark_ground_truth,
    read_detections_jsonl,
)

# left eye, right eye, nose, left mouth, right mouth; inter-ocular distance 40
POINTS = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], float)
BOX = [10, 10, 90, 110]  # x1 y1 x2 y2 -> l r t b = 10 90 10 110; sqrt(w*h) = sqrt(80*100)


def list_line(image, box, points):
    l, t, r, b = box
    return f"{image} {l} {r} {t} {b} " + " ".join(f"{v:g}" for v in np.ravel(points))


def record(image, faces):
    return json.dumps({"image": image, "width": 200, "height": 200,
                       "faces": [{"box": list(map(float, b)), "score": 0.99, "landmarks": np.asarray(p).tolist()} for b, p in faces]})


def setup_case(tmp_path, gt_lines, records):
    gt = tmp_path / "list.txt"
    gt.write_text("\n".join(gt_lines) + "\n")
    pred = tmp_path / "out.jsonl"
    pred.write_text("\n".join(records) + "\n")
    return gt, pred


def evaluate(tmp_path, gt, pred, **kwargs):
    problems = ProblemLog()
    result = evaluate_landmarks(read_detections_jsonl(pred, problems), load_landmark_ground_truth(gt, problems),
                                tmp_path, problems, **kwargs)
    return result, problems


def test_perfect_shifted_and_box_normalised(tmp_path):
    shifted = POINTS + [3, 4]  # every point 5 px off
    gt, pred = setup_case(tmp_path, [list_line("a.jpg", BOX, POINTS), list_line("d/b.jpg", BOX, POINTS)],
                          [record("a.jpg", [(BOX, POINTS)]), record(str(tmp_path / "d/b.jpg"), [(BOX, shifted)])])
    result, problems = evaluate(tmp_path, gt, pred)
    assert problems.problems == []
    assert sorted(result.nme.tolist()) == pytest.approx([0.0, 5 / 40])
    assert result.mean_nme == pytest.approx(5 / 80)
    assert result.failure_rate == 0.5  # 0.125 > 0.1
    np.testing.assert_allclose(result.point_nme.mean(0), [5 / 80] * 5)
    box_result, _ = evaluate(tmp_path, gt, pred, normalise="box")
    assert sorted(box_result.nme.tolist()) == pytest.approx([0.0, 5 / np.sqrt(80 * 100)])
    assert box_result.failure_rate == 0.0


def test_faces_are_matched_to_their_best_detection_and_misses_counted(tmp_path):
    other_box = [110, 10, 190, 110]
    other_points = POINTS + [100, 0]
    gt, pred = setup_case(
        tmp_path,
        [list_line("a.jpg", BOX, POINTS), list_line("a.jpg", other_box, other_points), list_line("c.jpg", BOX, POINTS)],
        # detections listed in the other order; c.jpg's only detection is elsewhere
        [record("a.jpg", [(other_box, other_points), (BOX, POINTS)]), record("c.jpg", [([150, 150, 190, 190], POINTS)])])
    result, _ = evaluate(tmp_path, gt, pred)
    assert result.nme.tolist() == [0.0, 0.0]
    assert result.missed == 1 and result.annotated == 3


def test_ced_and_auc():
    nme = np.array([0.0, 0.05, 0.15])
    x, fraction = ced_curve(nme, max_error=0.2, steps=5)  # x = 0, .05, .1, .15, .2
    np.testing.assert_allclose(fraction, [1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert ced_auc(nme, 0.1) == pytest.approx((0.1 + 0.05 + 0.0) / 3 / 0.1)
    assert ced_auc(np.zeros(4), 0.1) == 1.0


def test_bad_input_is_reported_with_line_numbers(tmp_path):
    gt, pred = setup_case(tmp_path, [list_line("a.jpg", BOX, POINTS)], [
        record("a.jpg", [(BOX, POINTS)]),
        "{not json",
        json.dumps({"image": "a2.jpg", "faces": [{"box": [1, 2, 3, 4], "landmarks": [[1, 2]] * 4}]}),
        json.dumps({"image": "a3.jpg", "faces": [{"box": [1, 2, 3, 4], "landmarks": [[1, float("nan")]] * 5}]}),
        json.dumps({"image": "a4.jpg", "faces": [{"box": [5, 2, 3, 4], "landmarks": [[1, 2]] * 5}]}),
        record("unknown.jpg", [(BOX, POINTS)]),
        record("a.jpg", [(BOX, POINTS + 9)]),  # the same image again: skipped, not averaged in
    ])
    result, problems = evaluate(tmp_path, gt, pred)
    assert result.nme.tolist() == [0.0]
    lines = [m.split(": ")[0] for m in problems.problems]
    assert lines == [f"{pred}:{n}" for n in range(2, 8)]
    assert "not in the ground truth" in problems.problems[-2]
    assert "appears twice" in problems.problems[-1]
    with pytest.raises(EvaluationError, match=f"{pred}:2"):
        read_detections_jsonl(pred, ProblemLog(strict=True))


def test_empty_predictions_miss_every_face(tmp_path, capsys):
    """No detections: every annotated face is missed, no error is averaged (NME undefined, null in JSON)."""
    gt, pred = setup_case(tmp_path, [list_line("a.jpg", BOX, POINTS), list_line("a.jpg", BOX, POINTS)],
                          [record("a.jpg", [])])
    result, problems = evaluate(tmp_path, gt, pred)
    assert problems.problems == [] and result.missed == 2 and len(result.nme) == 0
    assert np.isnan(result.mean_nme) and np.isnan(result.failure_rate)
    out = tmp_path / "out"
    assert main(["eval", "landmarks", "--pred", str(pred), "--gt", str(gt), "--images", str(tmp_path),
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "NME nan failure@0.1 nan faces 0 missed 2 (inter-ocular)"
    summary = json.loads((out / "landmarks.json").read_text())
    assert summary["nme"] is None and summary["faces_missed_by_detector"] == 2 and summary["per_point_nme"] == {}


def test_cli_on_generated_fixture(tmp_path, capsys):
    gt, pred = setup_case(tmp_path, [list_line("a.jpg", BOX, POINTS)], [record("a.jpg", [(BOX, POINTS + [0, 2])])])
    out = tmp_path / "out"
    rc = main(["eval", "landmarks", "--pred", str(pred), "--gt", str(gt), "--images", str(tmp_path), "--out", str(out)])
    assert rc == 0
    assert capsys.readouterr().out.strip() == "NME 0.0500 failure@0.1 0.0000 faces 1 missed 0 (inter-ocular)"
    summary = json.loads((out / "landmarks.json").read_text())
    assert summary["per_point_nme"]["nose"] == pytest.approx(0.05)
    assert (out / "landmarks_ced.png").is_file()


def test_shared_5_point_test_list_perfect(shared_dir, tmp_path, capsys):
    root = shared_dir / "data/landmarks_5pt"
    faces = read_landmark_list(root / "testImageList.txt").items
    pred = tmp_path / "out.jsonl"
    pred.write_text("\n".join(record(str(root / f.image), [(f.box, f.points)]) for f in faces) + "\n")
    rc = main(["eval", "landmarks", "--pred", str(pred), "--gt", str(root / "testImageList.txt"), "--images", str(root),
               "--out", str(tmp_path / "out")])
    assert rc == 0
    assert capsys.readouterr().out.strip() == f"NME 0.0000 failure@0.1 0.0000 faces {len(faces)} missed 0 (inter-ocular)"


def test_shared_68_point_xml_mapped_to_5(shared_dir, tmp_path):
    root = shared_dir / "data/faces_68pt"
    xml = root / "testing_with_face_landmarks.xml"
    images = read_imglab_xml(xml).items
    rng = np.random.default_rng(0)
    lines, expected = [], []
    for image in images:
        five = landmarks_68_to_5(image.points)
        noisy = five + rng.normal(0, 1, five.shape)
        lines.append(record(f"some/where/{image.file}", list(zip(image.boxes, noisy))))
        iod = np.linalg.norm(five[:, 0] - five[:, 1], axis=-1)
        expected += list(np.linalg.norm(noisy - five, axis=-1).mean(1) / iod)
    pred = tmp_path / "out.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    problems = ProblemLog()
    result = evaluate_landmarks(read_detections_jsonl(pred, problems), load_landmark_ground_truth(xml, problems),
                                root, problems)
    assert problems.problems == []
    assert sorted(result.nme.tolist()) == pytest.approx(sorted(expected))
