"""The evaluators refuse bad input clearly: a broken ground truth makes the run INCOMPLETE (exit 2),
empty inputs are errors (not a score of 0), unusable --out paths are refused before any work, and
errors name the option."""
from __future__ import annotations

import json
import time

import pytest

from caffe_common.textio import read_text_lines
from mtcnn_caffe.cli import main as mtcnn_main
from ssd_mobilenet.cli import main as ssd_main

GT_BLOCKS = "e/a.jpg\n1\n10 10 40 40 0 0 0 0 0 0\ne/b.jpg\n1\n100 10 40 40 0 0 0 0 0 0\n"


def wider_case(tmp_path, gt_text: str = GT_BLOCKS):
    gt = tmp_path / "wider_face_val_bbx_gt.txt"
    gt.write_text(gt_text)
    pred = tmp_path / "pred"
    (pred / "e").mkdir(parents=True)
    (pred / "e" / "a.txt").write_text("a\n1\n10 10 40 40 0.9\n")
    (pred / "e" / "b.txt").write_text("b\n1\n100 10 40 40 0.8\n")
    return gt, pred


def run_wider(gt, pred, out):
    return mtcnn_main(["eval", "wider", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])


def test_wider_wrong_count_is_one_problem_and_the_run_is_incomplete(tmp_path, capsys):
    """A count of 3 over one face line used to swallow the next image and still print an AP with exit 0."""
    gt, pred = wider_case(tmp_path, GT_BLOCKS.replace("e/a.jpg\n1\n", "e/a.jpg\n3\n"))
    assert run_wider(gt, pred, tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert captured.out.strip() == "INCOMPLETE all 1.0000"  # both images still evaluated
    problems = [line for line in captured.err.splitlines() if line.startswith("problem:")]
    assert problems == [f"problem: {gt}:2: image 'e/a.jpg': face count says 3 face lines but the next image starts "
                        "at line 4 after 1; read those"]
    summary = json.loads((tmp_path / "out" / "wider.json").read_text())
    assert summary["complete"] is False and summary["summary"].startswith("INCOMPLETE")
    assert summary["images"] == 2


def test_wider_clean_run_is_complete_with_exit_0(tmp_path, capsys):
    gt, pred = wider_case(tmp_path)
    assert run_wider(gt, pred, tmp_path / "out") == 0
    assert capsys.readouterr().out.strip() == "all 1.0000"
    assert json.loads((tmp_path / "out" / "wider.json").read_text())["complete"] is True


def test_wider_negative_size_ground_truth_is_reported(tmp_path, capsys):
    gt, pred = wider_case(tmp_path, GT_BLOCKS.replace("100 10 40 40", "100 10 -40 40"))
    assert run_wider(gt, pred, tmp_path / "out") == 2
    assert f"{gt}:6: image 'e/b.jpg': negative size w=-40 h=40" in capsys.readouterr().err


@pytest.mark.parametrize("gt_text, message", [("", "no ground-truth image"),
                                              ("e/a.jpg\n1\n1 1 4 4 0 0 0 1 0 0\n", "no face to evaluate")])
def test_wider_empty_ground_truth_is_an_error(tmp_path, capsys, gt_text, message):
    gt, pred = wider_case(tmp_path, gt_text)
    assert run_wider(gt, pred, tmp_path / "out") == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_wider_empty_prediction_folder_is_an_error(tmp_path, capsys):
    gt, _ = wider_case(tmp_path)
    (tmp_path / "nothing").mkdir()
    assert run_wider(gt, tmp_path / "nothing", tmp_path / "out") == 2
    assert "no prediction files" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_unusable_out_paths_are_refused_before_any_work(tmp_path, capsys):
    gt, pred = wider_case(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert run_wider(gt, pred, blocker / "sub") == 2
    assert capsys.readouterr().err.strip() == f"error: --out {blocker / 'sub'}: lies below the file {blocker}; give a folder"
    assert run_wider(gt, pred, blocker) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {blocker}: is a file; give a folder"
    (tmp_path / "out" / "wider.json").mkdir(parents=True)
    assert run_wider(gt, pred, tmp_path / "out") == 2
    assert "is a folder; cannot write the wider.json output there" in capsys.readouterr().err


def test_errors_name_the_option(tmp_path, capsys):
    gt, pred = wider_case(tmp_path)
    assert run_wider(gt, tmp_path / "nope", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == f"error: --pred {tmp_path / 'nope'}: not found"
    assert mtcnn_main(["eval", "wider", "--pred", str(pred), "--gt", str(gt), "--subset", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --subset {tmp_path}: is a folder, expected a file"
    folds = tmp_path / "folds"
    folds.mkdir()
    assert mtcnn_main(["eval", "fddb", "--pred", str(gt), "--folds", str(folds), "--fold", "3"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --fold 3: ")
    assert ssd_main(["eval", "--pred", str(pred), "--voc", str(tmp_path / "voc")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --voc {tmp_path / 'voc'}: not found"
    with pytest.raises(SystemExit) as exit_info:
        mtcnn_main(["eval", "landmarks", "--pred", str(gt), "--gt", str(gt), "--images", str(tmp_path), "--min-iou", "nan"])
    assert exit_info.value.code == 2 and "argument --min-iou: expected a number in [0, 1], got nan" in capsys.readouterr().err


def test_fddb_huge_radius_is_refused_quickly_and_empty_detections_are_an_error(tmp_path, capsys):
    folds = tmp_path / "folds"
    folds.mkdir()
    (folds / "FDDB-fold-01-ellipseList.txt").write_text("img/a\n1\n1e9 5e8 0 10 10 1\nimg/b\n1\n30 20 0 50 50 1\n")
    dets = tmp_path / "dets.txt"
    dets.write_text("img/b\n1\n25 25 50 50 0.9\n")
    started = time.monotonic()
    assert mtcnn_main(["eval", "fddb", "--pred", str(dets), "--folds", str(folds), "--out", str(tmp_path / "o")]) == 2
    assert time.monotonic() - started < 20
    captured = capsys.readouterr()
    assert f"{folds / 'FDDB-fold-01-ellipseList.txt'}:3: image 'img/a': radius 1e+09 px is above the 2048 px" in captured.err
    assert captured.out.startswith("INCOMPLETE discrete TPR@1000FP")
    dets.write_text("")
    assert mtcnn_main(["eval", "fddb", "--pred", str(dets), "--folds", str(folds), "--out", str(tmp_path / "o2")]) == 2
    assert "no detection block" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_landmarks_empty_predictions_file_is_an_error(tmp_path, capsys):
    gt = tmp_path / "list.txt"
    gt.write_text("a.jpg 10 50 10 50 20 20 40 20 30 30 22 40 38 40\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text("")
    assert mtcnn_main(["eval", "landmarks", "--pred", str(pred), "--gt", str(gt), "--images", str(tmp_path),
                       "--out", str(tmp_path / "o")]) == 2
    assert "no detection record" in capsys.readouterr().err


def test_text_readers_strip_a_utf8_bom(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbfe/a.jpg\ne/b.jpg\n")
    assert read_text_lines(path) == ["e/a.jpg", "e/b.jpg"]
    with pytest.raises(FileNotFoundError, match="is a folder, not a file"):
        read_text_lines(tmp_path)
