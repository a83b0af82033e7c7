"""`detect` and `demo.py` never crash, never lose work, and refuse runaway settings: the generic run loop
(caffe_common.batch), output checks before any work, resume, unique drawing names, setting bounds."""
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_common import batch
from mtcnn_caffe.cli import main
from mtcnn_caffe.detect import steps
from mtcnn_caffe.detect.cascade import MtcnnDetector, PyramidTooLargeError
from mtcnn_caffe.nets import weights

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def default_weights(caffe):
    weights.convert_default_weights()
    return weights.DEFAULT_WEIGHTS_DIR


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """``a/0--Event/x.jpg`` and ``b/0--Event/x.jpg`` (the same 256 px face photo), a PNG whose header
    exceeds OpenCV's pixel limit, and a plain text file."""
    import skimage.data

    root = tmp_path_factory.mktemp("robust")
    face = cv2.resize(skimage.data.astronaut()[..., ::-1], (256, 256), interpolation=cv2.INTER_AREA)
    for side in ("a", "b"):
        (root / side / "0--Event").mkdir(parents=True)
        cv2.imwrite(str(root / side / "0--Event" / "x.jpg"), face)
    (root / "huge.png").write_bytes(_png_header(40000, 40000))  # 1.6 Gpx > CV_IO_MAX_IMAGE_PIXELS
    (root / "file.txt").write_text("not a folder\n")
    return root


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _images(tmp_path: Path, names: list[str]) -> list[batch.InputImage]:
    for name in names:
        (tmp_path / name).write_bytes(b"")
    return batch.expand_inputs([str(tmp_path / name) for name in names], [])


# --------------------------------------------------------------------------- the generic run loop
def test_any_per_image_error_is_reported_by_name_and_the_run_goes_on(tmp_path):
    images = _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])

    def process(item):
        if item.path.name == "b.jpg":
            raise cv2.error("OpenCV(4) loadsave.cpp:79: error: (-215:Assertion failed)\n pixels <= LIMIT")
        return {"image": str(item.path), "faces": [1, 2]}

    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        summary = batch.run_batch(images, process, json_out=str(tmp_path / "out.jsonl"), progress=False, err=err)
    assert (summary.images, summary.found, summary.exit_status) == (2, 4, 2)
    assert summary.failures == [f"{tmp_path / 'b.jpg'}: cv2.error: OpenCV(4) loadsave.cpp:79: error: "
                                "(-215:Assertion failed) pixels <= LIMIT"]
    assert log.read_text() == f"error: {summary.failures[0]}\n"  # one line
    assert [Path(r["image"]).name for r in _records(tmp_path / "out.jsonl")] == ["a.jpg", "c.jpg"]


def test_json_lines_are_on_disk_as_soon_as_each_image_is_done(tmp_path):
    images = _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "out.jsonl"

    def process(item):
        if item.path.name == "c.jpg":
            assert len(_records(out)) == 2  # flushed line by line, under the final name
            raise KeyboardInterrupt
        return {"image": str(item.path), "faces": []}

    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(images, process, json_out=str(out), progress=False)
    assert [Path(r["image"]).name for r in _records(out)] == ["a.jpg", "b.jpg"]  # an interrupted run keeps them


def test_resume_skips_recorded_images_and_drops_a_partial_last_line(tmp_path):
    images = _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "out.jsonl"
    done = json.dumps({"image": str(images[0].path), "faces": [1]})
    out.write_text(done + "\n" + '{"image": "' + str(images[1].path)[:5])  # killed while writing b's line
    assert batch.read_done_images(out) == {str(images[0].path)}
    calls = []

    def process(item):
        calls.append(item.path.name)
        return {"image": str(item.path), "faces": []}

    summary = batch.run_batch(images, process, json_out=str(out), resume=True, progress=False)
    assert calls == ["b.jpg", "c.jpg"] and summary.resumed == 1
    lines = out.read_text().splitlines()
    assert lines[0] == done and [Path(json.loads(x)["image"]).name for x in lines] == ["a.jpg", "b.jpg", "c.jpg"]


def test_existing_or_foreign_json_output_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"image": "a.jpg", "faces": []}\n')
    with pytest.raises(batch.OutputError, match="exists; pass --resume .* --overwrite"):
        batch.run_batch([], lambda item: {}, json_out=str(out))
    assert out.read_text() == '{"image": "a.jpg", "faces": []}\n'  # nothing lost
    out.write_text('{"image": "a.jpg"}\nnot json\n{"image": "b.jpg"}\n')
    with pytest.raises(batch.OutputError, match=r"out.jsonl:2: not a JSON record"):
        batch.check_json_output(out, resume=True)
    with pytest.raises(batch.OutputError, match="--resume needs --json FILE"):
        batch.run_batch([], lambda item: {}, json_out="-", resume=True)


# --------------------------------------------------------------------------- inputs
def test_list_with_bom_names_missing_entries_by_list_and_line(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffx.jpg\n# comment\nmissing.jpg\n".encode("utf-8"))
    images = batch.expand_inputs([f"@{listing}"], [])
    assert [item.path for item in images] == [tmp_path / "x.jpg", tmp_path / "missing.jpg"]  # BOM stripped
    message = batch.failure_message(images[1], FileNotFoundError(f"{images[1].path}: no such file"))
    assert message == f"{listing}:3: {tmp_path / 'missing.jpg'}: no such file"
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9.jpg\n")
    failures = []
    assert batch.expand_inputs([f"@{tmp_path / 'latin1.txt'}"], failures) == []
    assert failures == [f"{tmp_path / 'latin1.txt'}: cannot read image list (not UTF-8 text: invalid "
                        "continuation byte at byte 3)"]


def test_output_names_are_unique_and_stay_inside_the_output_folder(tmp_path):
    for name in ("a/x.jpg", "a/y.jpg", "b/x.jpg", "b/x-2.jpg", "c/x.pgm", "c/x.png", "lists/list.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "lists" / "list.txt"
    listing.write_text(f"{tmp_path / 'c' / 'x.png'}\n../a/y.jpg\n../a/x.jpg\n")
    specs = [str(tmp_path / n) for n in ("a/x.jpg", "b/x.jpg", "b/x-2.jpg", "c/x.pgm", "a/../a/x.jpg")]
    images = batch.expand_inputs(specs + [f"@{listing}"], [])
    # An absolute or ".." list entry names its outputs by its file name only, never by its own path.
    assert [item.out_name for item in images] == ["x.jpg", "x-2.jpg", "x-2-2.jpg", "x.png", "x-2.png", "y.jpg"]
    assert [item.path.resolve() for item in images] == [  # a repeated image runs once
        tmp_path / n for n in ("a/x.jpg", "b/x.jpg", "b/x-2.jpg", "c/x.pgm", "c/x.png", "a/y.jpg")]


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize("option, values, said", [
    ("--factor", ["0.9999"], "must be in (0, 0.95]"),
    ("--factor", ["nan"], "must be in (0, 0.95] (closer to 1 the pyramid gets thousands of levels), not nan"),
    ("--min-size", ["1"], "must be at least 4 px"),
    ("--thresholds", ["1.5", "0.7", "0.7"], "must be in [0, 1], not 1.5"),
    ("--thresholds", ["0.6", "nan", "0.7"], "must be in [0, 1], not nan"),
    ("--max-pyramid-mpx", ["0"], "must be a positive number"),
])
def test_cli_refuses_bad_settings_naming_the_option(option, values, said, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", "x.jpg", option, *values])
    assert exit_info.value.code == 2
    assert f"argument {option}: {said}" in capsys.readouterr().err


@pytest.mark.parametrize("settings, name", [
    ({"factor": 0.9999}, "factor"), ({"factor": float("nan")}, "factor"), ({"min_size": 1}, "min_size"),
    ({"min_size": float("inf")}, "min_size"), ({"thresholds": (0.6, 1.5, 0.7)}, "thresholds"),
    ({"thresholds": (0.6, float("nan"), 0.7)}, "thresholds"), ({"nms_thresholds": (0.5, 0.7, 0.7, -1)}, "nms_thresholds"),
    ({"max_pyramid_pixels": float("nan")}, "max_pyramid_pixels"),
])
def test_detector_refuses_bad_settings_naming_the_parameter(settings, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        MtcnnDetector(weights_dir="unused", **settings)


def test_pyramid_beyond_the_budget_is_refused_before_any_allocation():
    """A 4000 x 3000 photo at min_size 4 needs a 217 Mpx pyramid: refused at once (the image here is a
    broadcast view, so any copy or resize of it would take seconds and gigabytes)."""
    assert steps.pyramid_pixels(3000, 4000, 4, 0.709) > 200e6 > steps.pyramid_pixels(4000, 6000, 10, 0.79)
    view = np.broadcast_to(np.uint8(90), (3000, 4000, 3))
    with pytest.raises(PyramidTooLargeError, match=r"4000 x 3000 image: .* 217 Mpx, more than max_pyramid_pixels "
                       r"200 Mpx: raise min_size \(detect --min-size\)"):
        MtcnnDetector(weights_dir="unused", min_size=4).detect(view)
    assert MtcnnDetector(weights_dir="unused", min_size=4, max_pyramid_pixels=250e6).max_pyramid_pixels == 250e6


# --------------------------------------------------------------------------- the detect command
def test_failing_images_of_any_kind_are_skipped_with_status_2(photos, default_weights, tmp_path, capsys):
    out = tmp_path / "faces.jsonl"
    good = photos / "a" / "0--Event" / "x.jpg"
    status = main(["detect", str(photos / "huge.png"), str(good), "--json", str(out), "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert f"error: {photos / 'huge.png'}: " in err and "1 images, 1 faces, 1 inputs failed" in err
    assert [r["image"] for r in _records(out)] == [str(good)]
    # A pyramid over the budget: that image is skipped with a message naming the option to change.
    status = main(["detect", str(good), "--max-pyramid-mpx", "0.01", "--no-progress"])
    assert status == 2
    assert "more than max_pyramid_pixels 0.01 Mpx: raise min_size (detect --min-size)" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--json", "--draw", "--wider-out"])
def test_unusable_output_paths_are_refused_before_any_work(photos, tmp_path, option, capsys):
    """A path below a regular file (unwritable even for root), or a folder as --json: exit 2 with one
    line naming the option, before the weights are even looked at."""
    bad = str(photos / "file.txt" / "sub") if option != "--json" else str(photos / "a")
    status = main(["detect", str(photos / "a"), option, bad, "--weights-dir", str(tmp_path / "no-weights")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} {bad}: ") and err.count("\n") == 1
    assert "is a folder" in err if option == "--json" else "file.txt is not a folder" in err


def test_existing_json_needs_resume_or_overwrite_and_resume_continues(photos, default_weights, tmp_path, capsys):
    out = tmp_path / "faces.jsonl"
    inputs = [str(photos / "a"), str(photos / "b")]
    assert main(["detect", *inputs, "--json", str(out), "--no-progress"]) == 0
    first, second = out.read_text().splitlines()
    capsys.readouterr()
    assert main(["detect", *inputs, "--json", str(out), "--no-progress"]) == 2
    assert "exists; pass --resume to continue it, --overwrite to start over" in capsys.readouterr().err
    assert out.read_text() == f"{first}\n{second}\n"
    out.write_text(f"{first}\n{second[:40]}")  # as a run killed while writing the second line leaves it
    assert main(["detect", *inputs, "--json", str(out), "--resume", "--no-progress"]) == 0
    assert out.read_text() == f"{first}\n{second}\n"
    assert "1 images, 1 faces, 0 inputs failed, 1 already done" in capsys.readouterr().err
    assert main(["detect", *inputs, "--json", str(out), "--overwrite", "--no-progress"]) == 0
    assert out.read_text() == f"{first}\n{second}\n"
    assert main(["detect", *inputs, "--draw", str(tmp_path / "d"), "--resume"]) == 2
    assert "--resume needs --json FILE" in capsys.readouterr().err


def test_draw_never_overwrites_an_output_or_an_input(photos, default_weights, tmp_path, capsys):
    a, b = photos / "a" / "0--Event" / "x.jpg", photos / "b" / "0--Event" / "x.jpg"
    drawn = tmp_path / "drawn"
    status = main(["detect", str(a), str(b), "--draw", str(drawn), "--wider-out", str(tmp_path / "wider"),
                   "--no-progress"])
    assert status == 2  # b's WIDER file would replace a's: b fails, named
    assert f"{b}: its WIDER result file would replace that of {a}" in capsys.readouterr().err
    assert sorted(p.name for p in drawn.iterdir()) == ["x.jpg"]
    assert main(["detect", str(a), str(b), "--draw", str(drawn), "--no-progress"]) == 0
    assert sorted(p.name for p in drawn.iterdir()) == ["x-2.jpg", "x.jpg"]  # one drawing each
    original = a.read_bytes()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a}\n")  # an absolute entry used to name the drawing by its own path
    assert main(["detect", f"@{listing}", "--draw", str(drawn), "--no-progress"]) == 0
    assert main(["detect", str(photos / "a"), "--draw", str(photos / "a"), "--no-progress"]) == 2
    assert "its drawing would replace an input image" in capsys.readouterr().err
    assert a.read_bytes() == original


def test_demo_refuses_a_bad_out_folder_and_missing_weights_and_names_clashing_files(photos, default_weights,
                                                                                    tmp_path):
    def demo(*args):
        return subprocess.run([sys.executable, str(DEMO), *map(str, args)], capture_output=True, text=True,
                              timeout=300)

    a, b = photos / "a" / "0--Event" / "x.jpg", photos / "b" / "0--Event" / "x.jpg"
    run = demo(a, "--out", photos / "file.txt" / "sub")
    assert run.returncode == 2 and run.stderr == f"error: --out {photos / 'file.txt' / 'sub'}: " \
                                                 f"{photos / 'file.txt'} is not a folder\n"
    run = demo(a, "--out", tmp_path, "--weights-dir", tmp_path / "nowhere")
    assert run.returncode == 1
    assert run.stderr == f"error: weights folder {tmp_path / 'nowhere'} not found (--weights-dir)\n"
    run = demo(a, b, "--out", tmp_path / "out", "--weights-dir", default_weights)
    assert run.returncode == 0, run.stderr
    assert f"{a}: 1 faces -> {tmp_path / 'out' / 'x.jpg'}" in run.stdout
    assert f"{b}: 1 faces -> {tmp_path / 'out' / 'x-2.jpg'}" in run.stdout
