"""VOC mAP evaluator: devkit matching (difficult, duplicates), hand-computed AP, bad input,
the ``ssd-mobilenet eval`` CLI and the shared voc_mini set."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mtcnn_caffe.evaluation import EvaluationError, ProblemLog
from caffe_common.eval.voc import (
    ClassDetections,
    evaluate_class,
    read_class_detections,
    read_class_names,
    read_voc_xml,
)
from ssd_mobilenet.cli import main


def write_xml(path, objects):
    body = "".join(
        f"<object><name>{c}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for c, b, d in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{body}</annotation>")


def make_voc(root, images: dict[str, list], image_set="test"):
    for image_id, objects in images.items():
        write_xml(root / "Annotations" / f"{image_id}.xml", objects)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(images) + "\n")
    return {i: read_voc_xml(root / "Annotations" / f"{i}.xml") for i in images}


G1, G2, D1, G3 = [10, 10, 50, 50], [100, 100, 150, 150], [200, 200, 250, 250], [10, 10, 60, 60]
IMAGES = {"img1": [("car", G1, 0), ("car", G2, 0), ("car", D1, 1), ("dog", G2, 0)], "img2": [("car", G3, 0)]}


def dets(rows):
    return ClassDetections([r[0] for r in rows], np.array([r[1] for r in rows], float),
                           np.array([r[2] for r in rows], float).reshape(-1, 4))


def test_hand_computed_class_with_difficult_and_duplicate(tmp_path):
    gt = make_voc(tmp_path, IMAGES)
    result = evaluate_class(gt, "car", dets([
        ("img1", 0.9, G1),  # TP
        ("img1", 0.8, D1),  # on a difficult object: ignored
        ("img1", 0.7, [11, 10, 50, 50]),  # duplicate of G1: FP
        ("img2", 0.6, [300, 300, 340, 340]),  # FP
        ("img2", 0.5, G3),  # TP
    ]))
    assert result.positives == 3 and result.true_positives == 2
    np.testing.assert_allclose(result.recall, [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(result.precision, [1, 1, 1 / 2, 1 / 3, 1 / 2])
    # 11-point: t = 0..0.3 -> 1, t = 0.4..0.6 -> 0.5, t >= 0.7 -> 0
    assert result.ap_07 == pytest.approx((4 * 1 + 3 * 0.5) / 11)
    # all-point: 1/3 at precision 1, 1/3 at precision 0.5
    assert result.ap_all == pytest.approx(1 / 3 + 1 / 6)


def test_ties_keep_file_order_and_missing_difficult_does_not_hurt(tmp_path):
    gt = make_voc(tmp_path, IMAGES)
    perfect = evaluate_class(gt, "car", dets([("img1", 0.5, G1), ("img1", 0.5, G2), ("img2", 0.5, G3)]))
    assert perfect.ap_07 == pytest.approx(1.0) and perfect.ap_all == 1.0  # D1 (difficult) never detected
    # tied scores: a false positive listed first stays ranked first
    tied = evaluate_class(gt, "car", dets([("img2", 0.5, [300, 300, 340, 340]), ("img1", 0.5, G1)]))
    np.testing.assert_allclose(tied.precision, [0, 0.5])
    empty = evaluate_class(gt, "car", dets([]))
    assert empty.ap_07 == 0.0 and empty.ap_all == 0.0


def write_dets(folder, cls, lines, image_set="test"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"comp4_det_{image_set}_{cls}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_detection_lines_are_reported(tmp_path):
    path = write_dets(tmp_path, "car", ["img1 0.9 10 10 50 50", "nope 0.9 10 10 50 50", "img1 0.9 10 10",
                                        "img1 nan 10 10 50 50", "img1 0.5 50 10 10 50", "img2 0.4 10 10 60 60"])
    problems = ProblemLog()
    table = read_class_detections(path, {"img1", "img2"}, problems)
    assert table.image_ids == ["img1", "img2"]
    assert [m.split(": ")[0] for m in problems.problems] == [f"{path}:{n}" for n in (2, 3, 4, 5)]
    assert "not in the image set" in problems.problems[0]
    assert "non-finite" in problems.problems[2] and "negative size" in problems.problems[3]
    with pytest.raises(EvaluationError, match=f"{path}:2"):
        read_class_detections(path, {"img1", "img2"}, ProblemLog(strict=True))


def test_bad_xml_names_the_file(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<annotation><object><name>car</name></object></annotation>")
    with pytest.raises(EvaluationError, match="x.xml: object 1: no <bndbox>"):
        read_voc_xml(path)


def test_class_names_from_labelmap_prototxt(tmp_path):
    labelmap = tmp_path / "labelmap.prototxt"
    labelmap.write_text('item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
                        'item { name: "face" label: 1 display_name: "face" }\n')
    assert read_class_names(labelmap) == ["face"]
    assert len(read_class_names(None)) == 20


def test_cli_generated_fixture(tmp_path, capsys):
    make_voc(tmp_path / "voc", IMAGES)
    (tmp_path / "voc" / "labels.txt").write_text("car\ndog\ncat\n")
    pred = tmp_path / "pred"
    write_dets(pred, "car", ["img1 0.9 10 10 50 50", "img1 0.8 100 100 150 150", "img2 0.7 10 10 60 60"])
    write_dets(pred, "dog", ["img1 0.3 300 300 340 340"])
    out = tmp_path / "out"
    assert main(["eval", "--pred", str(pred), "--voc", str(tmp_path / "voc"), "--set", "test", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "mAP VOC07-11point 0.5000 all-point 0.5000 (2 classes, 2 images)"
    summary = json.loads((out / "voc.json").read_text())
    assert summary["classes"]["car"]["ap_all_point"] == 1.0
    assert summary["classes"]["dog"]["ap_all_point"] == 0.0
    assert summary["classes"]["cat"]["ap_all_point"] is None
    assert (out / "voc_pr.png").is_file()


def test_shared_voc_mini_perfect_and_empty(shared_dir, tmp_path, capsys):
    root = shared_dir / "data/voc_mini"
    ids = (root / "ImageSets/Main/test.txt").read_text().split()
    lines: dict[str, list[str]] = {}
    for image_id in ids:
        objects = read_voc_xml(root / "Annotations" / f"{image_id}.xml")
        for cls, box, difficult in zip(objects.classes, objects.boxes, objects.difficult):
            if not difficult:
                lines.setdefault(cls, []).append(f"{image_id} 0.9 " + " ".join(f"{v:g}" for v in box))
    pred = tmp_path / "pred"
    for cls, cls_lines in lines.items():
        write_dets(pred, cls, cls_lines)
    assert main(["eval", "--pred", str(pred), "--voc", str(root), "--set", "test", "--out", str(tmp_path / "o")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("mAP VOC07-11point 1.0000 all-point 1.0000")
    (tmp_path / "empty").mkdir()  # no detection file at all: a wrong folder, not a detector that found nothing
    assert main(["eval", "--pred", str(tmp_path / "empty"), "--voc", str(root), "--out", str(tmp_path / "o2")]) == 2
    assert "no *det_test_<class>.txt detection file" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    for cls in lines:  # empty files: the detector found nothing, mAP 0
        write_dets(tmp_path / "none", cls, [])
    assert main(["eval", "--pred", str(tmp_path / "none"), "--voc", str(root), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip().startswith("mAP VOC07-11point 0.0000 all-point 0.0000")
