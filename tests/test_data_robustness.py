"""The training-data generators against hostile input: bad option values, empty inputs, broken
images, dead workers, Ctrl-C, duplicated pack inputs; and the `mtcnn-caffe data` command group."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe_common.images import MAX_PIXELS_ENV, ImageReadError, header_size, read_image
from mtcnn_caffe.cli import main as mtcnn_caffe_main
from mtcnn_caffe.data import cli
from mtcnn_caffe.data.pipeline import ItemResult, WorkerDiedError, open_sample_dir, run_generator
from mtcnn_caffe.data.records import empty_samples
from mtcnn_caffe.data.tasks import WiderCropTask
from mtcnn_caffe.data.wider import CropParams

from .test_data_samples import FailingSetupTask, make_landmarks, make_wider

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the one image reader
def _photo(h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(11)
    return cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (a few bytes on disk; decoding would allocate it all)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_truncated_and_corrupt_images_are_errors_naming_the_file(tmp_path, capfd):
    ok, jpeg = cv2.imencode(".jpg", _photo())
    jpeg = jpeg.tobytes()
    png = cv2.imencode(".png", _photo())[1].tobytes()
    corrupt = bytearray(jpeg)
    corrupt[len(jpeg) // 2:len(jpeg) // 2 + 16] = bytes(range(200, 216))  # damaged entropy-coded data
    cases = {"half.jpg": jpeg[:len(jpeg) // 2], "no_eoi.jpg": jpeg[:-2], "half.png": png[:len(png) // 2],
             "corrupt.jpg": bytes(corrupt), "empty.jpg": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError, match=rf"^{tmp_path / name}: "):
            read_image(tmp_path / name)
    # libjpeg's own unnamed warning is not printed; it is part of the error instead
    assert "Corrupt JPEG data" not in capfd.readouterr().err
    with pytest.raises(ImageReadError, match=r"corrupt\.jpg: corrupt JPEG data \(Corrupt JPEG data"):
        read_image(tmp_path / "corrupt.jpg")
    (tmp_path / "whole.jpg").write_bytes(jpeg)
    assert read_image(tmp_path / "whole.jpg").shape == (120, 160, 3)


def test_pixel_limit_is_checked_on_the_header_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_with_header(60000, 60000))  # beyond OpenCV's own limit: a cv2.error
    (tmp_path / "big.png").write_bytes(_png_with_header(20000, 20000))   # 1.2 GB decoded
    for name in ("bomb.png", "big.png"):
        with pytest.raises(ImageReadError, match=rf"{name}: \d+x\d+ pixels is more than the limit of 100000000"):
            read_image(tmp_path / name)
    cv2.imwrite(str(tmp_path / "small.jpg"), _photo())
    assert header_size((tmp_path / "small.jpg").read_bytes()) == (160, 120)
    monkeypatch.setenv(MAX_PIXELS_ENV, "19199")
    with pytest.raises(ImageReadError, match=r"small\.jpg: 160x120 pixels is more than the limit of 19199"):
        read_image(tmp_path / "small.jpg")
    monkeypatch.setenv(MAX_PIXELS_ENV, "19200")
    assert read_image(tmp_path / "small.jpg").shape == (120, 160, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV} must be a positive integer"):
        read_image(tmp_path / "small.jpg")


def test_jpeg_header_walk_skips_exif_and_reads_the_frame_size(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    Image.fromarray(_photo()[..., ::-1]).save(tmp_path / "exif.jpg", exif=exif.tobytes())
    data = (tmp_path / "exif.jpg").read_bytes()
    assert data.index(b"Exif") < data.index(b"\xff\xc0") and header_size(data) == (160, 120)  # APP1 first
    np.testing.assert_array_equal(read_image(tmp_path / "exif.jpg"), cv2.imread(str(tmp_path / "exif.jpg")))
    assert read_image(tmp_path / "exif.jpg").shape == (160, 120, 3)  # EXIF orientation applied


# --------------------------------------------------------------------------- option values
WIDER_ARGS = ["--anno", "A.txt", "--images", "IMG", "--out", "OUT"]
LANDMARK_ARGS = ["--list", "L.txt", "--images", "IMG", "--size", "12", "--out", "OUT"]
PACK_ARGS = ["--stage", "12", "--data", "D", "--out", "OUT"]


@pytest.mark.parametrize("main, argv, message", [
    (cli.landmark_main, LANDMARK_ARGS + ["--rotate-prob", "nan"], "argument --rotate-prob: expected a number in [0, 1], got nan"),
    (cli.landmark_main, LANDMARK_ARGS + ["--mirror-prob", "1.5"], "argument --mirror-prob: expected a number in [0, 1], got 1.5"),
    (cli.landmark_main, LANDMARK_ARGS + ["--max-angle", "inf"], "argument --max-angle: expected a number in [0, 180], got inf"),
    (cli.landmark_main, LANDMARK_ARGS + ["--tries", "-3"], "argument --tries: expected a whole number in [0, 1000], got -3"),
    (lambda argv: cli.random_crops_main(12, argv), WIDER_ARGS + ["--min-face", "nan"], "argument --min-face: expected a number >= 0, got nan"),
    (lambda argv: cli.random_crops_main(12, argv), WIDER_ARGS + ["--limit", "0"], "argument --limit: expected a whole number >= 1, got 0"),
    (lambda argv: cli.random_crops_main(12, argv), WIDER_ARGS + ["--limit", "-1"], "argument --limit: expected a whole number >= 1, got -1"),
    (lambda argv: cli.random_crops_main(12, argv), WIDER_ARGS + ["--seed", "-1"], "argument --seed: expected a whole number >= 0, got -1"),
    (lambda argv: cli.random_crops_main(12, argv), WIDER_ARGS + ["-j", "-2"], "argument -j/--jobs: expected a whole number in [0, 256], got -2"),
    (lambda argv: cli.random_crops_main(12, argv), WIDER_ARGS + ["--neg-per-image", "1e9"], "argument --neg-per-image: expected a whole number in [0, 10000], got 1e9"),
    (cli.hard_example_main, WIDER_ARGS + ["--stage", "24", "--factor", "1"], "argument --factor: expected a number in (0, 0.95], got 1"),
    (cli.hard_example_main, WIDER_ARGS + ["--stage", "24", "--thresholds", "0.6", "nan", "0.7"], "argument --thresholds: expected a number in [0, 1], got nan"),
    (cli.hard_example_main, WIDER_ARGS + ["--stage", "24", "--det-min-size", "0"], "argument --det-min-size: expected a number >= 4, got 0"),
    (cli.net_imdb_main, PACK_ARGS + ["--ratio", "3:nan:1:2"], "argument --ratio: needs four finite non-negative numbers, not all zero: '3:nan:1:2'"),
    (cli.net_imdb_main, PACK_ARGS + ["--limit", "0"], "argument --limit: expected a whole number >= 1, got 0"),
])
def test_bad_numbers_are_refused_when_parsed_naming_the_option(tmp_path, monkeypatch, capsys, main, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_limit_below_one_is_an_error_in_the_library_too(tmp_path):
    anno, images = make_wider(tmp_path / "wider")
    with pytest.raises(ValueError, match="--limit must be a whole number of at least 1, not 0"):
        WiderCropTask(anno, images, 12, CropParams(), limit=0)
    assert len(WiderCropTask(anno, images, 12, CropParams(), limit=2)) == 2


# --------------------------------------------------------------------------- empty inputs
def test_empty_inputs_are_refused_without_a_complete_looking_output(tmp_path, capsys):
    anno, images = make_wider(tmp_path / "wider", broken_line=False)
    run = lambda *args: cli.random_crops_main(12, ["--no-progress", "-j", "1", *map(str, args)])  # noqa: E731
    (tmp_path / "empty.txt").write_text("")
    assert run("--anno", tmp_path / "empty.txt", "--images", images, "--out", tmp_path / "o1") == 2
    assert "empty.txt: no image annotations" in capsys.readouterr().err
    assert run("--anno", anno, "--images", tmp_path / "nowhere", "--out", tmp_path / "o2") == 2
    assert f"--images {tmp_path / 'nowhere'}: not a directory" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert run("--anno", anno, "--images", tmp_path / "other", "--out", tmp_path / "o3") == 2
    assert "none of the 5 annotated images is under --images" in capsys.readouterr().err
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))
    # every image unreadable: the run completes its chunks but refuses to look finished
    for png in images.rglob("*.png"):
        png.write_bytes(png.read_bytes()[:40])
    assert run("--anno", anno, "--images", images, "--out", tmp_path / "o4") == 2
    err = capsys.readouterr().err
    assert "no samples made from 5 items (5 could not be read" in err and "re-run with --overwrite" in err
    assert not (tmp_path / "o4" / "stats.json").exists()
    lst = tmp_path / "list.txt"
    lst.write_text("img\\bad.png 1 2 three 4\n")
    assert cli.landmark_main(["--list", str(lst), "--images", str(tmp_path), "--size", "12", "--out",
                              str(tmp_path / "o5"), "--no-progress"]) == 2
    assert "list.txt: no annotated faces (1 unparsable lines, first:" in capsys.readouterr().err


# --------------------------------------------------------------------------- workers
class NumberedTask:
    """Item ``i`` gives ``i % 3 + 1`` samples whose pixels come from the item's random stream; the item
    ``die_at`` kills its worker process (as the OOM killer would), never the test's own process."""

    kind, size = "numbered", 12

    def __init__(self, items: int, die_at: int | None = None):
        self.items, self.die_at, self.parent = items, die_at, os.getpid()

    def __len__(self):
        return self.items

    def config(self):
        return {"items": self.items}

    def setup(self):
        pass

    def run(self, index, rng):
        if index == self.die_at and os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        samples = empty_samples(12, index % 3 + 1)
        samples["label"] = 0
        samples["image"] = rng.integers(0, 256, samples["image"].shape, dtype=np.uint8)
        return ItemResult(samples)


def test_failed_worker_setup_leaves_nothing_behind_for_the_next_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="det1.prototxt"):
        run_generator(FailingSetupTask(), tmp_path / "failed", jobs=1, progress=False)
    stats = run_generator(NumberedTask(4), tmp_path / "next", jobs=1, progress=False)
    assert stats["samples"] == 1 + 2 + 3 + 1


def _alarm(seconds: int):
    def timeout(*_):
        raise TimeoutError(f"no answer within {seconds} s: the parent hangs")
    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)


def test_a_killed_worker_is_reported_and_the_run_resumes_identically(tmp_path):
    _alarm(120)
    try:
        with pytest.raises(WorkerDiedError, match=r"worker process died \((killed by SIGKILL|ended abruptly)\).*re-run the same command"):
            run_generator(NumberedTask(12, die_at=9), tmp_path / "out", jobs=2, chunk_images=4, progress=False)
    finally:
        signal.alarm(0)
    done = sorted(p.name for p in (tmp_path / "out" / "shards").glob("*.json"))
    assert "00000.json" in done and "00002.json" not in done and not (tmp_path / "out" / "stats.json").exists()
    run_generator(NumberedTask(12), tmp_path / "out", jobs=1, chunk_images=4, progress=False)  # resumes
    run_generator(NumberedTask(12), tmp_path / "ref", jobs=1, chunk_images=4, progress=False)
    for chunk in range(3):
        name = f"shards/{chunk:05d}.bin"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_a_pool_broken_while_submitting_is_a_worker_death(monkeypatch):
    """A worker can die between reading one result and submitting the next item: then ``submit`` raises
    (a race the killed-worker test above meets now and then); it must be reported the same way."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from caffe_common.parallel import ordered_map

    submit = ProcessPoolExecutor.submit
    calls = []

    def breaking(self, fn, *args, **kwargs):
        calls.append(args)
        if len(calls) == 4:  # the first submit after a result was read (in_flight 3)
            raise BrokenProcessPool("a child process terminated abruptly")
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", breaking)
    results = []
    with pytest.raises(WorkerDiedError, match="worker process died") as caught:
        for value in ordered_map(abs, [-1, -2, -3, -4, -5], 2, in_flight=3):
            results.append(value)
    assert results == [] and caught.value.in_flight == [-1, -2, -3, -4]


def as_in_a_terminal() -> None:
    """Ctrl-C raises KeyboardInterrupt, as in a terminal. A test run started as a background job of a
    non-interactive shell (`make test &`) starts with SIGINT ignored, which every child inherits."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupt_from_another_thread() -> int:
    """What the subprocess of the next test runs: SIGINT handed to a helper thread (as the kernel may do with a
    process's Ctrl-C) while the main thread waits for a result that never comes; 0 when it became a
    KeyboardInterrupt. A hang dumps the stacks and exits after 30 s."""
    import faulthandler
    import threading

    from caffe_common.parallel import ordered_map

    faulthandler.dump_traceback_later(30, exit=True)
    as_in_a_terminal()

    def poke() -> None:
        time.sleep(1.0)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread, not the main one

    threading.Thread(target=poke, daemon=True).start()
    try:
        list(ordered_map(time.sleep, [120, 120], 2))
    except KeyboardInterrupt:
        return 0
    return 1


def test_ctrl_c_handed_to_another_thread_still_interrupts_the_wait_for_a_result():
    code = "import sys; from tests.test_data_robustness import interrupt_from_another_thread as run; sys.exit(run())"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-6000:]
    assert time.monotonic() - started < 25


class GatedTask(NumberedTask):
    """:class:`NumberedTask` whose item ``gate``, in a worker, says so in ``reached`` and then never ends
    (a run is certain to be in progress when the test interrupts it)."""

    def __init__(self, items: int, gate: int, reached: str):
        super().__init__(items)
        self.gate, self.reached = gate, reached

    def run(self, index, rng):
        if index == self.gate and os.getpid() != self.parent:
            Path(self.reached).touch()
            while True:
                time.sleep(0.05)
        return super().run(index, rng)


def interrupted_run(out: str) -> int:
    """What the subprocess of the Ctrl-C test runs: a -j 2 generation behind the generators' CLI wrapper.
    Should it hang, every thread's stack goes to stderr after 45 s, for the test to show."""
    import faulthandler

    faulthandler.dump_traceback_later(45)
    as_in_a_terminal()
    gated = GatedTask(12, gate=6, reached=out + ".reached")
    return cli.clean_exit(lambda: run_generator(gated, out, jobs=2, chunk_images=4, progress=False) and 0)()


def test_ctrl_c_prints_one_line_and_the_rerun_resumes_identically(tmp_path):
    """A real SIGINT to the whole process group (what a terminal's Ctrl-C sends) while -j 2 workers run."""
    out = tmp_path / "out"
    code = f"import sys; from tests.test_data_robustness import interrupted_run; sys.exit(interrupted_run({str(out)!r}))"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    end = time.time() + 120
    while not (Path(str(out) + ".reached").exists() and (out / "shards" / "00000.json").exists()):
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < end, "the gated item was never reached"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("no exit within 60 s of Ctrl-C; the stacks:\n" + process.communicate()[1][-6000:])
    assert process.returncode == 130
    assert err.strip() == "interrupted: finished parts are kept; re-run the same command to resume"
    assert not (out / "stats.json").exists() and not (out / "shards" / "00001.json").exists()
    stats = run_generator(NumberedTask(12), out, jobs=1, chunk_images=4, progress=False)
    assert stats["images"] == 12 and stats["images_this_run"] == 8  # chunk 0 was kept
    run_generator(NumberedTask(12), tmp_path / "ref", jobs=1, chunk_images=4, progress=False)
    for chunk in range(3):
        name = f"shards/{chunk:05d}.bin"
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_clean_exit_turns_ctrl_c_into_status_130(capsys):
    @cli.clean_exit
    def interrupted():
        raise KeyboardInterrupt

    assert interrupted() == cli.INTERRUPTED_STATUS == 130
    assert capsys.readouterr().err.strip() == "interrupted: finished parts are kept; re-run the same command to resume"


# --------------------------------------------------------------------------- packing
@pytest.fixture(scope="module")
def small_dirs(tmp_path_factory):
    """12x12 random crops and landmark samples, made through `mtcnn-caffe data`."""
    root = tmp_path_factory.mktemp("robust")
    anno, images = make_wider(root / "wider", broken_line=False)
    lst, lm_root = make_landmarks(root / "lm", count=3)
    common = ["--no-progress", "-j", "1", "--seed", "3"]
    assert mtcnn_caffe_main(["data", "random", "--size", "12", "--anno", str(anno), "--images", str(images),
                             "--out", str(root / "w12"), *common]) == 0
    assert mtcnn_caffe_main(["data", "landmarks", "--size", "12", "--list", str(lst), "--images", str(lm_root),
                             "--out", str(root / "l12"), *common]) == 0
    return root, anno, images


def test_data_command_group_equals_the_scripts(small_dirs, tmp_path, capsys):
    root, anno, images = small_dirs
    assert cli.random_crops_main(12, ["--anno", str(anno), "--images", str(images), "--out", str(tmp_path / "s12"),
                                      "--no-progress", "-j", "1", "--seed", "3"]) == 0
    for shard in sorted((root / "w12" / "shards").glob("*.bin")):
        assert shard.read_bytes() == (tmp_path / "s12" / "shards" / shard.name).read_bytes()
    assert mtcnn_caffe_main(["data", "pack", "--stage", "12", "--data", str(root / "w12"), str(root / "l12"),
                             "--out", str(tmp_path / "pack"), "--no-progress"]) == 0
    packed = (tmp_path / "pack" / "stats.json").read_bytes()
    assert json.loads(packed)["landmark"] > 0
    assert mtcnn_caffe_main(["data", "random", "--size", "12", "--anno", str(anno), "--images", str(images),
                             "--out", str(tmp_path / "pack"), "--no-progress", "--overwrite"]) == 2
    assert "holds a stats.json but no manifest.json" in capsys.readouterr().err
    assert (tmp_path / "pack" / "stats.json").read_bytes() == packed
    capsys.readouterr()
    with pytest.raises(SystemExit):
        mtcnn_caffe_main(["data", "--help"])
    listed = capsys.readouterr().out
    assert all(f"\n    {name}" in listed for name in ("random", "landmarks", "hard", "pack"))


def test_pack_refuses_a_directory_twice_and_an_out_inside_an_input(small_dirs, capsys):
    root, _, _ = small_dirs
    w12, l12 = root / "w12", root / "l12"
    before = (w12 / "stats.json").read_bytes()
    pack = lambda *args: cli.net_imdb_main(["--stage", "12", "--no-progress", *map(str, args)])  # noqa: E731
    assert pack("--data", w12, l12, root / "lm" / ".." / "w12", "--out", root / "p1") == 2
    assert "is given twice" in capsys.readouterr().err
    assert pack("--data", w12, l12, "--out", w12) == 2
    assert "--out" in capsys.readouterr().err
    assert pack("--data", w12, l12, "--out", w12 / "pack") == 2
    assert "inside the --data directory" in capsys.readouterr().err
    assert pack("--data", w12, "--out", l12) == 2  # not an input here, but holds another generator's samples
    assert "holds a generator's samples" in capsys.readouterr().err
    assert (w12 / "stats.json").read_bytes() == before and (l12 / "stats.json").exists()
    assert not (root / "p1").exists() and not (w12 / "pack").exists()
    open_sample_dir(w12)  # still complete
