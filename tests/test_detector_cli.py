"""`mtcnn-caffe detect`: inputs (files, folders, @lists), JSON lines, WIDER files, drawings, bad inputs."""
import json
import shutil

import cv2
import numpy as np
import pytest

from mtcnn_caffe.nets import weights
from mtcnn_caffe.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory, caffe):
    """A folder ``images/<event>/`` with two good photos, a corrupt one, and a nested folder."""
    import skimage.data

    weights.convert_default_weights()
    root = tmp_path_factory.mktemp("photos")
    event = root / "images" / "0--Astronaut"
    (event / "nested").mkdir(parents=True)
    face = skimage.data.astronaut()[..., ::-1]
    cv2.imwrite(str(event / "one.jpg"), cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(event / "nested" / "gray.png"), cv2.cvtColor(cv2.resize(face, (200, 200)), cv2.COLOR_BGR2GRAY))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (root / "list.txt").write_text("images/0--Astronaut/one.jpg\n\n# a comment\nimages/missing.jpg\n")
    (root / "formats").mkdir()
    rgba16 = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)]).astype(np.uint16) * 257
    cv2.imwrite(str(root / "formats" / "rgba16.png"), cv2.resize(rgba16, (256, 256), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(root / "formats" / "tiny.png"), face[200:208, 200:210])
    return root


def _json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_detect_writes_json_wider_and_drawings(photos, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["detect", str(photos / "images"), "--json", str(out / "faces.jsonl"),
                   "--wider-out", str(out / "wider"), "--draw", str(out / "drawn"), "--no-progress"])
    assert status == 0
    records = _json_lines(out / "faces.jsonl")
    assert [r["image"].split("0--Astronaut/")[1] for r in records] == ["nested/gray.png", "one.jpg"]  # recursive
    one = records[1]
    assert (one["width"], one["height"]) == (256, 256)
    assert len(one["faces"]) == 1
    face = one["faces"][0]
    assert len(face["box"]) == 4 and 0.9 < face["score"] <= 1
    assert np.array(face["landmarks"]).shape == (5, 2)
    # WIDER FACE submission: <event>/<name>.txt with name, count, "x y w h score" (w = x2 - x1 + 1).
    lines = (out / "wider" / "0--Astronaut" / "one.txt").read_text().splitlines()
    assert lines[:2] == ["one", "1"]
    x, y, w, h, score = (float(v) for v in lines[2].split())
    x1, y1, x2, y2 = face["box"]
    assert (x, y, w, h) == pytest.approx((x1, y1, x2 - x1 + 1, y2 - y1 + 1), abs=0.06)
    assert score == pytest.approx(face["score"], abs=1e-5)
    drawn = cv2.imread(str(out / "drawn" / "0--Astronaut" / "one.jpg"))  # mirrors the input folder
    original = cv2.imread(str(photos / "images" / "0--Astronaut" / "one.jpg"))
    assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).max() > 100
    assert (out / "drawn" / "0--Astronaut" / "nested" / "gray.png").is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # atomic writes: no leftovers
    assert "2 images, 2 faces, 0 inputs failed" in capsys.readouterr().err


def test_bad_inputs_are_named_skipped_and_give_status_2(photos, tmp_path, capsys):
    out = tmp_path / "faces.jsonl"
    status = main(["detect", str(photos / "corrupt.jpg"), str(photos / "nope.jpg"), f"@{photos / 'list.txt'}",
                   f"@{photos / 'no-list.txt'}", "--json", str(out), "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    for name in ("corrupt.jpg: cannot decode", "nope.jpg: no such file", "missing.jpg: no such file", "no-list.txt"):
        assert name in err
    records = _json_lines(out)
    assert len(records) == 1 and records[0]["image"].endswith("one.jpg")  # the good input still ran


def test_json_lines_go_to_stdout_without_outputs(photos, capsys):
    status = main(["detect", str(photos / "images" / "0--Astronaut" / "one.jpg"), "--backend", "opencv",
                   "--preset", "wider", "--thresholds", "0.6", "0.7", "0.8"])
    assert status == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out.strip())
    assert len(record["faces"]) == 1
    assert "detect:" not in captured.err  # no progress bar for a single input
    # --min-size and --factor reach the detector: the ~45 px face is below a 200 px minimum.
    assert main(["detect", str(photos / "images" / "0--Astronaut" / "one.jpg"), "--min-size", "200",
                 "--factor", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"] == []


def test_progress_bar_on_many_inputs(photos, tmp_path, capsys):
    status = main(["detect", str(photos / "images"), "--json", str(tmp_path / "faces.jsonl")])
    assert status == 0
    err = capsys.readouterr().err
    assert "detect: 100%" in err and "2/2" in err


def test_16_bit_rgba_and_tiny_image_files(photos, tmp_path, capsys):
    """A 16-bit PNG with alpha gives the face of the 8-bit photo; an 8 x 10 px image gives none."""
    out = tmp_path / "faces.jsonl"
    status = main(["detect", str(photos / "formats"), str(photos / "images" / "0--Astronaut" / "one.jpg"),
                   "--json", str(out), "--no-progress"])
    assert status == 0
    rgba16, tiny, one = _json_lines(out)
    assert rgba16["image"].endswith("rgba16.png") and tiny["image"].endswith("tiny.png")
    assert (tiny["width"], tiny["height"], tiny["faces"]) == (10, 8, [])
    assert (rgba16["width"], rgba16["height"]) == (256, 256) and len(rgba16["faces"]) == 1
    # Same face as the JPEG of the same picture (JPEG artefacts move it by a pixel or so).
    np.testing.assert_allclose(rgba16["faces"][0]["box"], one["faces"][0]["box"], atol=4)
    np.testing.assert_allclose(rgba16["faces"][0]["landmarks"], one["faces"][0]["landmarks"], atol=4)


def test_demo_script_saves_drawings_and_reports_bad_files(photos, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
    good = photos / "images" / "0--Astronaut" / "one.jpg"
    run = subprocess.run([sys.executable, str(script), str(good), str(photos / "corrupt.jpg"), "--out",
                          str(tmp_path), "--weights-dir", str(weights.DEFAULT_WEIGHTS_DIR)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert f"{good}: 1 faces -> {tmp_path / 'one.jpg'}" in run.stdout
    assert "corrupt.jpg: cannot decode" in run.stderr
    drawn = cv2.imread(str(tmp_path / "one.jpg"))
    assert drawn.shape == (256, 256, 3) and np.abs(drawn.astype(int) - cv2.imread(str(good))).max() > 100


def test_mismatched_weights_fail_early_naming_the_layer(photos, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "weights"
    bad.mkdir()
    for stage in ("det1", "det2", "det3"):
        shutil.copy(weights.DEFAULT_WEIGHTS_DIR / f"{stage}.prototxt", bad)
        shutil.copy(weights.DEFAULT_WEIGHTS_DIR / f"{stage}.caffemodel", bad)
    shutil.copy(weights.DEFAULT_WEIGHTS_DIR / "det3.caffemodel", bad / "det2.caffemodel")
    out = tmp_path / "faces.jsonl"
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "nowhere"))  # --weights-dir wins over the env var
    status = main(["detect", str(photos / "images"), "--weights-dir", str(bad), "--json", str(out)])
    assert status == 1
    assert "layer 'conv1'" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(bad))  # the env var replaces the default weights
    assert main(["detect", str(photos / "images"), "--json", str(out)]) == 1
    assert "layer 'conv1'" in capsys.readouterr().err
