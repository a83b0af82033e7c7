"""Annotation readers: good files, broken lines (file:line), empty files, shared data."""
from __future__ import annotations

import numpy as np
import pytest

from mtcnn_caffe.annotations import (
    AnnotationError,
    ProblemLog,
    inter_ocular_distance,
    landmarks_68_to_5,
    read_celeba,
    read_imglab_xml,
    read_counted_blocks,
    read_landmark_list,
    read_wider_gt,
)

WIDER_TEXT = """a/one.jpg
2
10 20 30 40 0 0 0 0 0 0
50 60 7 8 2 1 0 1 0 0
a/none.jpg
0
0 0 0 0 0 0 0 0 0 0
a/bad.jpg
x
a/short.jpg
1
1 2 3
"""


def test_wider_reader_parses_and_reports_bad_lines(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text(WIDER_TEXT)
    parsed = read_wider_gt(path)
    names = [im.name for im in parsed]
    assert names == ["a/one.jpg", "a/none.jpg", "a/short.jpg"]
    one = parsed.items[0]
    np.testing.assert_array_equal(one.boxes, [[10, 20, 30, 40], [50, 60, 7, 8]])
    assert one.valid.tolist() == [True, False]
    assert parsed.items[1].boxes.shape == (0, 4)  # the dummy line of a 0-count image is consumed
    assert len(parsed.errors) == 2
    assert parsed.errors[0].startswith(f"{path}:9:") and "face count" in parsed.errors[0]
    assert parsed.errors[1].startswith(f"{path}:12:")
    with pytest.raises(AnnotationError, match=r"gt.txt:9:"):
        read_wider_gt(path, strict=True)


def test_counted_blocks_dummy_row_rule_and_problems(tmp_path):
    """The one name/count/rows reader: WIDER ground truth has a dummy row after a count of 0, FDDB does not."""
    lines = ["img1", "0", "9 9", "img2", "1", "1 2", "", "img3", "2", "3 x"]

    def pair(tokens: list[str]) -> tuple[float, float]:
        return float(tokens[0]), float(tokens[1])

    problems = ProblemLog()
    with_dummy = list(read_counted_blocks("f.txt", lines, problems, pair, dummy_row_when_empty=True))
    assert with_dummy == [("img1", []), ("img2", [(1.0, 2.0)]), ("img3", [])]
    assert problems.problems == ["f.txt:10: image 'img3': could not convert string to float: 'x'",
                                 "f.txt:10: image 'img3': file ends before its 2 lines"]
    problems = ProblemLog()
    without = list(read_counted_blocks("f.txt", lines, problems, pair))
    # Without the dummy row, "9 9" is read as the next image name and "img2" as its (bad) count, and so on.
    assert [name for name, _ in without] == ["img1", "img3"]
    assert problems.problems[:2] == ["f.txt:4: count 'img2' of image '9 9' is not a non-negative integer",
                                     "f.txt:6: count '1 2' of image '1' is not a non-negative integer"]
    with pytest.raises(AnnotationError, match=r"^f\.txt:4: "):
        list(read_counted_blocks("f.txt", lines, ProblemLog(strict=True), pair))


def test_wider_reader_empty_and_missing_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert len(read_wider_gt(empty)) == 0
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_wider_gt(tmp_path / "nope.txt")


def test_landmark_list_reader(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(
        "dir\\a.jpg 10 50 20 70 1 2 3 4 5 6 7 8 9 10\n"
        "b.jpg 10 50 20\n"
        "c.jpg 50 10 20 70 1 2 3 4 5 6 7 8 9 10\n"
        "\n"
        "d.jpg 0 5 0 5 1 2 3 4 5 6 7 8 9 nan\n"
    )
    parsed = read_landmark_list(path)
    assert [f.image for f in parsed] == ["dir/a.jpg"]
    np.testing.assert_array_equal(parsed.items[0].box, [10, 20, 50, 70])  # l r t b -> x1 y1 x2 y2
    np.testing.assert_array_equal(parsed.items[0].points[4], [9, 10])
    assert [e.split(":")[1] for e in parsed.errors] == ["2", "3", "5"]


def test_celeba_reader_joins_boxes_and_points(tmp_path):
    boxes = tmp_path / "list_bbox_celeba.txt"
    boxes.write_text("2\nimage_id x_1 y_1 width height\n000001.jpg 95 71 226 313\n000002.jpg 1 2 3\n000003.jpg 0 0 5 5\n")
    marks = tmp_path / "list_landmarks_celeba.txt"
    marks.write_text("1\nlefteye_x ...\n000001.jpg 165 184 244 176 196 249 194 271 266 260\n")
    parsed = read_celeba(boxes, marks)
    assert len(parsed) == 1
    np.testing.assert_array_equal(parsed.items[0].box, [95, 71, 321, 384])
    np.testing.assert_array_equal(parsed.items[0].points[0], [165, 184])
    assert any(":4:" in e for e in parsed.errors) and any("000003.jpg" in e for e in parsed.errors)


def test_imglab_reader_and_68_to_5(tmp_path):
    parts = "".join(f"<part name='{i:02d}' x='{i}' y='{2 * i}'/>" for i in range(68))
    path = tmp_path / "faces.xml"
    path.write_text(
        f"<dataset><images><image file='x.jpg' width='10' height='20'>"
        f"<box top='1' left='2' width='3' height='4'>{parts}</box></image></images></dataset>"
    )
    parsed = read_imglab_xml(path)
    image = parsed.items[0]
    assert (image.file, image.width, image.height) == ("x.jpg", 10, 20)
    np.testing.assert_array_equal(image.boxes, [[2, 1, 5, 5]])
    five = landmarks_68_to_5(image.points)[0]
    # 0-based: left eye mean(36..41)=38.5, right eye mean(42..47)=44.5, nose 30, mouth 48 and 54.
    np.testing.assert_allclose(five[:, 0], [38.5, 44.5, 30, 48, 54])
    np.testing.assert_allclose(five[:, 1], 2 * five[:, 0])
    np.testing.assert_allclose(inter_ocular_distance(five), np.hypot(6, 12))


def test_shared_annotations_parse_cleanly(shared_dir):
    wider = read_wider_gt(shared_dir / "data/wider_train_subset/wider_face_split/wider_face_train_bbx_gt.txt", strict=True)
    assert len(wider) == 1239
    assert all(im.boxes.shape[1] == 4 for im in wider)
    marks = read_landmark_list(shared_dir / "data/landmarks_5pt/trainImageList.txt", strict=True)
    assert len(marks) == 2500
    faces = read_imglab_xml(shared_dir / "data/faces_68pt/training_with_face_landmarks.xml", strict=True)
    faces_test = read_imglab_xml(shared_dir / "data/faces_68pt/testing_with_face_landmarks.xml", strict=True)
    assert sum(len(im.boxes) for im in faces) + sum(len(im.boxes) for im in faces_test) == 43
