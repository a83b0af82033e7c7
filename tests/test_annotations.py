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
    assert problems.problems == ["f.txt:9: image 'img3': count says 2 lines but the file ends after 1; read those",
                                 "f.txt:10: image 'img3': could not convert string to float: 'x'"]
    problems = ProblemLog()
    without = list(read_counted_blocks("f.txt", lines, problems, pair))
    # Without the dummy row, "9 9" is one extra line of img1: one problem, then the reader is back in step.
    assert [name for name, _ in without] == ["img1", "img2", "img3"]
    assert problems.problems[0] == "f.txt:2: image 'img1': count says 0 lines but 1 more line(s) follow (lines 3-3, skipped)"
    assert len(problems.problems) == 3
    with pytest.raises(AnnotationError, match=r"^f\.txt:2: "):
        list(read_counted_blocks("f.txt", lines, ProblemLog(strict=True), pair))


def rows_of(text: str, **kwargs) -> tuple[list, list[str]]:
    problems = ProblemLog()
    blocks = list(read_counted_blocks("g.txt", text.split("\n"), problems, lambda t: [float(v) for v in t], **kwargs))
    return blocks, problems.problems


def test_count_too_large_is_one_problem_and_the_next_image_is_read():
    """The issue's cascade: a count of 5 over 2 face lines used to swallow the next images' lines."""
    blocks, problems = rows_of("a.jpg\n5\n1 1 2 2\n3 3 4 4\nb.jpg\n1\n5 5 6 6\nc.jpg\n1\n7 7 8 8")
    assert blocks == [("a.jpg", [[1, 1, 2, 2], [3, 3, 4, 4]]), ("b.jpg", [[5, 5, 6, 6]]), ("c.jpg", [[7, 7, 8, 8]])]
    assert problems == ["g.txt:2: image 'a.jpg': count says 5 lines but the next image starts at line 5 after 2; "
                        "read those"]


def test_count_too_small_skips_the_extra_lines_with_one_problem():
    blocks, problems = rows_of("a.jpg\n1\n1 1 2 2\n3 3 4 4\n9 9 9 9\nb.jpg\n1\n5 5 6 6")
    assert blocks == [("a.jpg", [[1, 1, 2, 2]]), ("b.jpg", [[5, 5, 6, 6]])]
    assert problems == ["g.txt:2: image 'a.jpg': count says 1 lines but 2 more line(s) follow (lines 4-5, skipped)"]


def test_unparsable_count_skips_to_the_next_image_with_one_problem():
    blocks, problems = rows_of("a.jpg\nthree\n1 1 2 2\n3 3 4 4\nb.jpg\n1\n5 5 6 6\nc.jpg\n-2\n1 1 1 1")
    assert blocks == [("b.jpg", [[5, 5, 6, 6]])]
    assert problems == ["g.txt:2: count 'three' of image 'a.jpg' is not a non-negative integer; lines 1-4 skipped",
                        "g.txt:9: count -2 of image 'c.jpg' is negative; lines 8-10 skipped"]


def test_wider_reader_reports_negative_sizes_and_strips_a_bom(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_bytes("\ufeffe/a.jpg\n2\n10 10 -5 20 0 0 0 0 0 0\n1 1 4 4 0 0 0 0 0 0\n".encode("utf-8"))
    parsed = read_wider_gt(path)
    assert [im.name for im in parsed] == ["e/a.jpg"]  # no BOM glued to the first name
    np.testing.assert_array_equal(parsed.items[0].boxes, [[1, 1, 4, 4]])
    assert parsed.errors == [f"{path}:3: image 'e/a.jpg': negative size w=-5 h=20"]
    path.write_text("e/a.jpg\n1\n1 1 4 4 0 0 inf 0 0 0\n")
    assert "non-finite" in read_wider_gt(path).errors[0]


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
