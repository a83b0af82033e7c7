#!/usr/bin/env python3
"""Fuzz every command-line tool with bad input and classify what happens.

    python bench/fuzz_cli.py [--jobs 2] [--only SUBSTRING ...] [--json fuzz_report.json] [--list]

Each case builds its input in a fresh temporary folder, runs the real CLI in a subprocess (timeout,
address-space limit ``RLIMIT_AS``), and classifies the outcome:

* ``abort``: killed by a signal or status 134 (a Caffe CHECK, a segfault);
* ``traceback``: ``Traceback (most recent call last)`` on stderr;
* ``runaway``: past the timeout, or ``MemoryError``;
* ``clean-error``: non-zero status with an ``error``/``usage``/``interrupted`` message, or a run that
  went on and said what it skipped (``INCOMPLETE``, ``skipped``);
* ``unclear-error``: non-zero status without such a message;
* ``accepted``: status 0.

Each case declares what it expects: ``error`` (refused), ``skips`` (the job goes on and says what it
skipped: status 0 or 2 with a message), ``ok`` (status 0), ``interrupt`` (SIGINT after a delay: status
130 and a one-line ``interrupted`` message) or ``any`` (whatever, but no abort/traceback/runaway).
The verdicts that fail the run: ``abort``, ``traceback``, ``runaway``, ``silent-wrong`` (status 0 where
an error or a reported skip was due), ``incomplete-output`` (a refused run left an output file),
``wrong-refusal`` (valid input refused), ``unclear-error``, ``not-interrupted-cleanly``.
Prints counts per outcome/verdict and per CLI, writes a JSON report, exits 1 on any failing verdict.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("FUZZ_PYTHON") or (str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists()
                                           else sys.executable)
MEMORY_LIMIT = 3 << 30
# Enough images that a detect run cannot finish before its SIGINT on a fast machine: a run that ends
# just as the signal lands dies in interpreter shutdown (default handler, rc -2), which proves nothing.
INTERRUPT_IMAGES = 150
FAILING = ("abort", "traceback", "runaway", "silent-wrong", "incomplete-output", "wrong-refusal", "unclear-error",
           "not-interrupted-cleanly")
SKIP_WORDS = re.compile(r"(?i)skip|problem|warning|fail|incomplete|error|unreadable|cannot|not found|invalid")
ERROR_LINE = re.compile(r"(?im)(^|: )error\b|^usage:|interrupted|^INCOMPLETE\b|skipped")

MTCNN = [PYTHON, "-m", "mtcnn_caffe.cli"]
SSD = [PYTHON, "-m", "ssd_mobilenet.cli"]


def script(path: str) -> list[str]:
    return [PYTHON, str(REPO / path)]



# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One bad (or good) input: ``build(tmp, fx)`` writes the input under ``tmp`` and returns the argv tail."""

    id: str
    cli: str
    command: list[str]
    build: Callable[[Path, "Fixtures"], list[str]]
    expect: str  # error | skips | ok | interrupt | any
    absent: tuple[str, ...] = ()  # paths (relative to tmp) a refused run must not leave
    timeout: float = 120.0
    interrupt_after: float = 2.0


@dataclass
class Outcome:
    id: str
    cli: str
    expect: str
    outcome: str
    verdict: str
    rc: int | None
    seconds: float
    stderr_tail: str = ""
    interrupted: bool = False


CASES: list[Case] = []


def case(id: str, cli: str, command: list[str], expect: str, build: Callable, **kw) -> None:
    CASES.append(Case(id, cli, command, build, expect, **kw))


# ----------------------------------------------------------------------------- input builders
def with_option(argv: list[str], option: str, value: object) -> list[str]:
    """``argv`` with the value of ``option`` replaced (appended when absent)."""
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = str(value)
    else:
        argv += [option, str(value)]
    return argv


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def png(width: int, height: int, channels: int = 3, depth: int = 8, seed: int = 0) -> bytes:
    """A noise PNG (no OpenCV needed to build inputs)."""
    import random

    rng = random.Random(seed)
    color = {1: 0, 3: 2, 4: 6}[channels]
    bpp = channels * depth // 8
    rows = b"".join(b"\0" + rng.randbytes(width * bpp) for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size (decompression-bomb shape) with almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


GARBAGE = bytes(range(256)) * 8

BN_NET = """name: "fuzz_bn"
input: "data"
input_shape {{ dim: 1 dim: 3 dim: {h} dim: {w} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 bias_term: false }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param {{ use_global_stats: {stats} }} }}
layer {{ name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param {{ bias_term: true }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
"""

WEIGHTS_SCRIPT = """
import sys
import numpy as np
from caffe_common.env import import_caffe
caffe = import_caffe()
net = caffe.Net(sys.argv[1], caffe.TEST)
rng = np.random.default_rng(0)
for name, blobs in net.params.items():
    for blob in blobs:
        blob.data[...] = rng.uniform(0.5, 1.5, blob.data.shape)
net.save(sys.argv[2])
"""


#: Random weights for ``net`` (BatchNorm statistics near (0, 1)), in the fixture scripts below.
RANDOM_WEIGHTS = """
rng = np.random.default_rng(0)
for name, blobs in net.params.items():
    for blob in blobs:
        blob.data[...] = rng.normal(0, 0.05, blob.data.shape)
    if net.layer_dict[name].type == "BatchNorm":
        blobs[1].data[...] = 1.0
        blobs[2].data[...] = 1.0
"""

SSD_SCRIPT = """
import sys
import numpy as np
from caffe_common.env import import_caffe
from ssd_mobilenet.model import SsdModelConfig, net_text
caffe = import_caffe()
open(sys.argv[1], "w").write(net_text(SsdModelConfig(3), "deploy"))
net = caffe.Net(sys.argv[1], caffe.TEST)
""" + RANDOM_WEIGHTS + """net.save(sys.argv[2])
"""

FACE_SCRIPT = """
import sys
import numpy as np
from caffe_common.env import import_caffe
from ssd_mobilenet.faces import model as fm
caffe = import_caffe()
out = sys.argv[1]
files = fm.write_nets(fm.FaceModelConfig(size=64), out, 10).files
net = caffe.Net(str(files[fm.DEPLOY_NET]), caffe.TEST)
""" + RANDOM_WEIGHTS + """net.save(out + "/" + fm.WEIGHTS)
fm.write_model_description(out, 64)
"""


class Fixtures:
    """Valid inputs built once per run (a BN model with weights, a tiny WIDER set, a landmark set, packed data)."""

    def __init__(self, root: Path):
        self.root = root
        self._done: set[str] = set()

    def _once(self, name: str, make: Callable[[], None]) -> None:
        if name not in self._done:
            make()
            self._done.add(name)

    def bn_model(self) -> tuple[Path, Path]:
        model, weights = self.root / "bn" / "deploy.prototxt", self.root / "bn" / "deploy.caffemodel"

        def make() -> None:
            write(model, BN_NET.format(h=16, w=16, stats="true"))
            subprocess.run([PYTHON, "-c", WEIGHTS_SCRIPT, str(model), str(weights)], cwd=REPO, check=True,
                           capture_output=True, timeout=300)
        self._once("bn", make)
        return model, weights

    def ssd_model(self) -> tuple[Path, Path]:
        """A generated 3-class MobileNet-SSD deploy net with random weights."""
        model, weights = self.root / "ssd" / "deploy.prototxt", self.root / "ssd" / "random.caffemodel"

        def make() -> None:
            model.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([PYTHON, "-c", SSD_SCRIPT, str(model), str(weights)], cwd=REPO, check=True,
                           capture_output=True, timeout=300)
        self._once("ssd", make)
        return model, weights

    def face_model(self) -> Path:
        """A face-network model folder (64 x 64 input) with random weights."""
        folder = self.root / "face"

        def make() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run([PYTHON, "-c", FACE_SCRIPT, str(folder)], cwd=REPO, check=True, capture_output=True,
                           timeout=300)
        self._once("face", make)
        return folder

    def wider(self) -> tuple[Path, Path]:
        anno, images = self.root / "wider" / "gt.txt", self.root / "wider" / "images"

        def make() -> None:
            write(images / "e" / "a.png", png(160, 120, seed=1))
            write(images / "e" / "b.png", png(140, 140, seed=2))
            write(anno, "e/a.png\n2\n20 20 50 60 0 0 0 0 0 0\n90 30 40 40 0 0 0 0 0 0\n"
                        "e/b.png\n1\n30 30 70 70 0 0 0 0 0 0\n")
        self._once("wider", make)
        return anno, images

    def landmarks(self) -> tuple[Path, Path]:
        lst, root = self.root / "lm" / "list.txt", self.root / "lm"

        def make() -> None:
            write(root / "img" / "a.png", png(120, 120, seed=3))
            write(lst, "img/a.png 30 90 30 90 45 50 75 50 60 62 48 75 72 75\n")
        self._once("lm", make)
        return lst, root

    def packed_source(self) -> Path:
        out = self.root / "gen12"

        def make() -> None:
            anno, images = self.wider()
            subprocess.run(script("prepare_data/gen_12net_data.py") + [
                "--anno", str(anno), "--images", str(images), "--out", str(out), "-j", "1", "--no-progress",
                "--neg-per-image", "5"], cwd=REPO, capture_output=True, timeout=300)
        self._once("gen12", make)
        return out


# ----------------------------------------------------------------------------- eval cases
WIDER_GT = "e/a.jpg\n1\n10 10 40 40 0 0 0 0 0 0\ne/b.jpg\n2\n100 10 40 40 0 0 0 0 0 0\n5 80 30 30 0 0 0 0 0 0\n"
WIDER_PRED = {"e/a": "a\n1\n10 10 40 40 0.9\n", "e/b": "b\n2\n100 10 40 40 0.8\n0 0 5 5 0.1\n"}


def wider_eval(gt: str | bytes | None = WIDER_GT, preds: dict | None = None, extra: list[str] = (),
               gt_name: str = "wider_face_val_bbx_gt.txt", out: str = "out") -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        gt_path = tmp / gt_name
        if gt is not None:
            write(gt_path, gt)
        for key, text in (WIDER_PRED if preds is None else preds).items():
            write(tmp / "pred" / f"{key}.txt", text)
        (tmp / "pred").mkdir(exist_ok=True)
        return ["eval", "wider", "--pred", str(tmp / "pred"), "--gt", str(gt_path), "--out", str(tmp / out),
                *[a.format(tmp=tmp) for a in extra]]
    return build


def add_wider_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"eval-wider-{id}", "mtcnn-caffe eval wider", MTCNN, expect, build, **kw)
    no_out = ("out/wider.json",)
    c("ok", "ok", wider_eval())
    c("gt-count-too-large", "skips", wider_eval(WIDER_GT.replace("e/a.jpg\n1\n", "e/a.jpg\n4\n")))
    c("gt-count-too-small", "skips", wider_eval(WIDER_GT.replace("e/b.jpg\n2\n", "e/b.jpg\n1\n")))
    c("gt-count-not-int", "skips", wider_eval(WIDER_GT.replace("e/a.jpg\n1\n", "e/a.jpg\none\n")))
    c("gt-count-negative", "skips", wider_eval(WIDER_GT.replace("e/a.jpg\n1\n", "e/a.jpg\n-1\n")))
    c("gt-count-huge", "skips", wider_eval(WIDER_GT.replace("e/a.jpg\n1\n", "e/a.jpg\n99999999999999\n")))
    c("gt-negative-size", "skips", wider_eval(WIDER_GT.replace("100 10 40 40", "100 10 -40 40")))
    c("gt-nan", "skips", wider_eval(WIDER_GT.replace("100 10 40 40", "100 nan 40 40")))
    c("gt-inf-attribute", "skips", wider_eval(WIDER_GT.replace("40 40 0 0 0 0 0 0\ne", "40 40 0 inf 0 0 0 0\ne")))
    c("gt-short-row", "skips", wider_eval(WIDER_GT.replace("10 10 40 40 0 0 0 0 0 0", "10 10")))
    c("gt-empty", "error", wider_eval(""), absent=no_out)
    c("gt-blank-lines", "error", wider_eval("\n\n  \n"), absent=no_out)
    c("gt-garbage", "error", wider_eval(GARBAGE), absent=no_out)
    c("gt-all-invalid", "error", wider_eval("e/a.jpg\n1\n10 10 40 40 0 0 0 1 0 0\n"), absent=no_out)
    c("gt-missing", "error", wider_eval(None), absent=no_out)
    c("gt-bom", "ok", wider_eval("\ufeff" + WIDER_GT))
    c("gt-crlf", "ok", wider_eval(WIDER_GT.replace("\n", "\r\n")))
    c("gt-folder-without-gt", "error", lambda t, fx: with_option(wider_eval(WIDER_GT, gt_name="d/x.txt")(t, fx),
                                                                 "--gt", t / "d"), absent=no_out)
    c("gt-mat-corrupt", "error", wider_eval(GARBAGE, gt_name="wider_face_val.mat"), absent=no_out)
    c("gt-mat-empty", "error", wider_eval(b"", gt_name="wider_face_val.mat"), absent=no_out)
    c("pred-empty-folder", "error", wider_eval(preds={}), absent=no_out)
    c("pred-bad-count", "skips", wider_eval(preds={**WIDER_PRED, "e/a": "a\nx\n10 10 40 40 0.9\n"}))
    c("pred-count-mismatch", "skips", wider_eval(preds={**WIDER_PRED, "e/a": "a\n5\n10 10 40 40 0.9\n"}))
    c("pred-nan-score", "skips", wider_eval(preds={**WIDER_PRED, "e/a": "a\n1\n10 10 40 40 nan\n"}))
    c("pred-negative-size", "skips", wider_eval(preds={**WIDER_PRED, "e/a": "a\n1\n10 10 -4 40 0.9\n"}))
    c("pred-unknown-image", "skips", wider_eval(preds={**WIDER_PRED, "e/zzz": "zzz\n1\n1 1 4 4 0.5\n"}))
    c("pred-binary-file", "skips", wider_eval(preds={**WIDER_PRED, "e/a": GARBAGE}))
    c("pred-one-line", "skips", wider_eval(preds={**WIDER_PRED, "e/a": "a\n"}))
    c("pred-huge-numbers", "any", wider_eval(preds={**WIDER_PRED, "e/a": "a\n1\n1e300 1e300 1e300 1e300 1e300\n"}))
    c("pred-equal-scores", "ok", wider_eval(preds={"e/a": "a\n1\n10 10 40 40 0.5\n", "e/b": "b\n1\n100 10 40 40 0.5\n"}))
    c("pred-is-a-file", "error", lambda t, fx: with_option(wider_eval()(t, fx), "--pred", write(t / "p.txt", "x")),
      absent=no_out)
    c("out-below-file", "error", lambda t, fx: with_option(wider_eval()(t, fx), "--out", write(t / "f", "x") / "sub"))
    c("out-is-file", "error", lambda t, fx: wider_eval()(t, fx)[:-2] + ["--out", str(write(t / "f", "x"))])
    c("out-json-is-folder", "error", lambda t, fx: (t / "out" / "wider.json").mkdir(parents=True) or wider_eval()(t, fx))
    c("subset-missing", "error", wider_eval(extra=["--subset", "{tmp}/nope.txt"]), absent=no_out)
    c("subset-unknown-only", "error",
      lambda t, fx: wider_eval(extra=["--subset", str(write(t / "s.txt", "zzz\nyyy\n"))])(t, fx), absent=no_out)
    c("subset-bom", "ok", lambda t, fx: wider_eval(extra=["--subset", str(write(t / "s.txt", "\ufeffe/a.jpg\ne/b\n"))])(t, fx))
    c("subset-empty", "error", lambda t, fx: wider_eval(extra=["--subset", str(write(t / "s.txt", ""))])(t, fx),
      absent=no_out)
    c("missing-required-option", "error", lambda t, fx: ["eval", "wider", "--gt", str(t)])


FOLD = "img/a\n2\n30 20 0 50 50 1\n20 15 0.5 150 60 1\nimg/b\n1\n25 20 0 60 60 1\n"
DETS = "img/a\n2\n30 30 40 45 0.9\n130 45 40 35 0.7\nimg/b\n1\n40 40 40 45 0.8\n"


def fddb_eval(fold: str | bytes | None = FOLD, dets: str | bytes | None = DETS, extra: list[str] = ()) -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        (tmp / "folds").mkdir()
        if fold is not None:
            write(tmp / "folds" / "FDDB-fold-01-ellipseList.txt", fold)
        if dets is not None:
            write(tmp / "dets.txt", dets)
        return ["eval", "fddb", "--pred", str(tmp / "dets.txt"), "--folds", str(tmp / "folds"), "--out",
                str(tmp / "out"), *[a.format(tmp=tmp) for a in extra]]
    return build


def add_fddb_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"eval-fddb-{id}", "mtcnn-caffe eval fddb", MTCNN, expect, build, **kw)
    no_out = ("out/fddb.json",)
    c("ok", "ok", fddb_eval())
    c("zero-detections-blocks", "ok", fddb_eval(dets="img/a\n0\nimg/b\n0\n"))
    c("folds-missing", "error", lambda t, fx: ["eval", "fddb", "--pred", str(write(t / "d.txt", DETS)), "--folds",
                                               str(t / "nope"), "--out", str(t / "out")], absent=no_out)
    c("folds-empty-folder", "error", fddb_eval(fold=None), absent=no_out)
    c("folds-empty-file", "error", fddb_eval(fold=""), absent=no_out)
    c("fold-number-missing", "error", fddb_eval(extra=["--fold", "7"]), absent=no_out)
    c("fold-number-negative", "error", fddb_eval(extra=["--fold", "-1"]), absent=no_out)
    c("fold-number-text", "error", fddb_eval(extra=["--fold", "one"]), absent=no_out)
    c("fold-count-too-large", "skips", fddb_eval(fold=FOLD.replace("img/a\n2\n", "img/a\n3\n")))
    c("fold-count-too-small", "skips", fddb_eval(fold=FOLD.replace("img/a\n2\n", "img/a\n1\n")))
    c("fold-count-text", "skips", fddb_eval(fold=FOLD.replace("img/a\n2\n", "img/a\ntwo\n")))
    c("ellipse-huge-radius", "skips", fddb_eval(fold=FOLD.replace("30 20 0 50 50 1", "1e9 5e8 0 50 50 1")), timeout=60)
    c("ellipse-radius-3000", "skips", fddb_eval(fold=FOLD.replace("30 20 0 50 50 1", "3000 2900 0 50 50 1")), timeout=60)
    c("ellipse-zero-radius", "skips", fddb_eval(fold=FOLD.replace("30 20 0 50 50 1", "0 20 0 50 50 1")))
    c("ellipse-nan", "skips", fddb_eval(fold=FOLD.replace("30 20 0 50 50 1", "30 nan 0 50 50 1")))
    c("ellipse-centre-huge", "skips", fddb_eval(fold=FOLD.replace("30 20 0 50 50 1", "30 20 0 1e300 50 1")))
    c("ellipse-angle-huge", "any", fddb_eval(fold=FOLD.replace("30 20 0 50 50 1", "30 20 1e300 50 50 1")))
    c("dets-empty", "error", fddb_eval(dets=""), absent=no_out)
    c("dets-missing", "error", fddb_eval(dets=None), absent=no_out)
    c("dets-garbage", "error", fddb_eval(dets=GARBAGE), absent=no_out)
    c("dets-bad-count", "skips", fddb_eval(dets=DETS.replace("img/a\n2\n", "img/a\nmany\n")))
    c("dets-count-mismatch", "skips", fddb_eval(dets=DETS.replace("img/a\n2\n", "img/a\n5\n")))
    c("dets-negative-size", "skips", fddb_eval(dets=DETS.replace("30 30 40 45", "30 30 -40 45")))
    c("dets-huge-coordinates", "skips", fddb_eval(dets=DETS.replace("30 30 40 45", "1e300 30 1e300 45")))
    c("dets-inf-score", "skips", fddb_eval(dets=DETS.replace("0.9", "inf")))
    c("dets-unknown-image", "skips", fddb_eval(dets=DETS + "img/zzz\n1\n1 1 4 4 0.5\n"))
    c("dets-duplicate-image", "skips", fddb_eval(dets=DETS + "img/b\n1\n1 1 4 4 0.5\n"))
    c("dets-bom-crlf", "ok", fddb_eval(dets="\ufeff" + DETS.replace("\n", "\r\n")))
    c("images-missing-folder", "error", fddb_eval(extra=["--images", "{tmp}/nope"]), absent=no_out)
    c("images-corrupt", "skips", lambda t, fx: (write(t / "pics/img/a.jpg", GARBAGE), fddb_eval(
        extra=["--images", str(t / "pics")])(t, fx))[1])
    c("out-below-file", "error", lambda t, fx: fddb_eval()(t, fx)[:-2] + ["--out", str(write(t / "f", "x") / "o")])


def lm_line(name: str = "a.jpg") -> str:
    return f"{name} 10 50 10 50 20 20 40 20 30 30 22 40 38 40\n"


def lm_record(image: str = "a.jpg", box=(10, 10, 50, 50)) -> str:
    return json.dumps({"image": image, "width": 64, "height": 64, "faces": [
        {"box": list(box), "score": 0.99, "landmarks": [[20, 20], [40, 20], [30, 31], [22, 40], [38, 40]]}]}) + "\n"


def lm_eval(gt: str | bytes | None = None, pred: str | bytes | None = None, extra: list[str] = (),
            gt_name: str = "list.txt") -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        if gt is not False:
            write(tmp / gt_name, lm_line() if gt is None else gt)
        if pred is not False:
            write(tmp / "pred.jsonl", lm_record(str(tmp / "a.jpg")) if pred is None else pred)
        return ["eval", "landmarks", "--pred", str(tmp / "pred.jsonl"), "--gt", str(tmp / gt_name), "--images",
                str(tmp), "--out", str(tmp / "out"), *[a.format(tmp=tmp) for a in extra]]
    return build


XML = """<?xml version='1.0'?><dataset><images><image file='a.jpg'><box top='10' left='10' width='40' height='40'>
{parts}</box></image></images></dataset>"""


def add_landmark_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"eval-landmarks-{id}", "mtcnn-caffe eval landmarks", MTCNN, expect,
                                             build, **kw)
    no_out = ("out/landmarks.json",)
    parts = "".join(f"<part name='{i:02d}' x='{20 + i % 10}' y='{20 + i // 10}'/>" for i in range(68))
    c("ok", "ok", lm_eval())
    c("ok-xml-68", "ok", lm_eval(gt=XML.format(parts=parts), gt_name="gt.xml"))
    c("pred-empty", "error", lm_eval(pred=""), absent=no_out)
    c("pred-missing", "error", lm_eval(pred=False), absent=no_out)
    c("pred-garbage", "error", lm_eval(pred=GARBAGE), absent=no_out)
    c("pred-bad-json-line", "skips", lambda t, fx: lm_eval(pred=lm_record(str(t / "a.jpg")) + "{not json\n")(t, fx))
    c("pred-nan-box", "skips", lambda t, fx: lm_eval(
        pred=lm_record(str(t / "a.jpg")) + lm_record(str(t / "a.jpg")).replace("[10, 10, 50, 50]", "[NaN, 10, 50, 50]"))(t, fx))
    c("pred-4-landmarks", "skips", lambda t, fx: lm_eval(
        pred=lm_record(str(t / "a.jpg")).replace("[[20, 20], ", "["))(t, fx))
    c("pred-image-not-string", "skips", lambda t, fx: lm_eval(pred=lm_record(str(t / "a.jpg")) + '{"image": 5}\n')(t, fx))
    c("pred-unknown-image", "skips", lambda t, fx: lm_eval(pred=lm_record(str(t / "a.jpg")) + lm_record("zzz.jpg"))(t, fx))
    c("pred-bom", "ok", lambda t, fx: lm_eval(pred="\ufeff" + lm_record(str(t / "a.jpg")))(t, fx))
    c("pred-is-folder", "error", lambda t, fx: (t / "pred.jsonl").mkdir() or lm_eval(pred=False)(t, fx), absent=no_out)
    c("gt-empty", "error", lm_eval(gt=""), absent=no_out)
    c("gt-missing", "error", lm_eval(gt=False), absent=no_out)
    c("gt-bad-line", "skips", lm_eval(gt=lm_line() + "b.jpg 1 2 3\n"))
    c("gt-empty-box", "skips", lm_eval(gt=lm_line() + "b.jpg 50 10 10 50 20 20 40 20 30 30 22 40 38 40\n"))
    c("gt-xml-malformed", "error", lm_eval(gt="<dataset><images><image", gt_name="gt.xml"), absent=no_out)
    c("gt-xml-bad-part", "skips", lm_eval(gt=XML.format(parts=parts.replace("name='05'", "name='99'")) .replace(
        "</images>", "<image file='a.jpg'><box top='1' left='1' width='4' height='4'/></image></images>"),
        gt_name="gt.xml"))
    c("gt-xml-bad-size", "any", lm_eval(gt=XML.format(parts=parts).replace("file='a.jpg'", "file='a.jpg' width='x'"),
                                        gt_name="gt.xml"))
    c("images-missing", "error", lm_eval(extra=["--images", "{tmp}/nope"]), absent=no_out)
    c("min-iou-negative", "error", lm_eval(extra=["--min-iou", "-1"]), absent=no_out)
    c("min-iou-text", "error", lm_eval(extra=["--min-iou", "abc"]), absent=no_out)
    c("normalise-bogus", "error", lm_eval(extra=["--normalise", "bogus"]), absent=no_out)
    c("out-is-file", "error", lambda t, fx: lm_eval()(t, fx)[:-2] + ["--out", str(write(t / "f", "x"))])


VOC_XML = """<annotation><object><name>car</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>10</ymin>
<xmax>50</xmax><ymax>40</ymax></bndbox></object><object><name>dog</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>20</xmax>
<ymax>30</ymax></bndbox></object></annotation>"""


def voc_eval(xml: str | None = VOC_XML, image_set: str | None = "000001\n", dets: dict | None = None,
             extra: list[str] = ()) -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        voc = tmp / "voc"
        write(voc / "labels.txt", "car\ndog\n")
        if image_set is not None:
            write(voc / "ImageSets/Main/test.txt", image_set)
        if xml is not None:
            write(voc / "Annotations/000001.xml", xml)
        for cls, text in ({"car": "000001 0.9 10 10 50 40\n", "dog": "000001 0.8 5 5 20 30\n"} if dets is None
                          else dets).items():
            write(tmp / "pred" / f"comp4_det_test_{cls}.txt", text)
        (tmp / "pred").mkdir(exist_ok=True)
        return ["eval", "--pred", str(tmp / "pred"), "--voc", str(voc), "--out", str(tmp / "out"),
                *[a.format(tmp=tmp) for a in extra]]
    return build


def add_voc_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"ssd-eval-{id}", "ssd-mobilenet eval", SSD, expect, build, **kw)
    no_out = ("out/voc.json",)
    c("ok", "ok", voc_eval())
    c("ok-empty-class-files", "ok", voc_eval(dets={"car": "", "dog": ""}))
    c("voc-missing", "error", lambda t, fx: voc_eval()(t, fx)[:3] + ["--voc", str(t / "nope")], absent=no_out)
    c("set-missing", "error", voc_eval(image_set=None), absent=no_out)
    c("set-empty", "error", voc_eval(image_set=""), absent=no_out)
    c("set-unknown-name", "error", voc_eval(extra=["--set", "val"]), absent=no_out)
    c("xml-missing", "error", voc_eval(xml=None), absent=no_out)
    c("xml-malformed", "error", voc_eval(xml="<annotation><object>"), absent=no_out)
    c("xml-nan-box", "error", voc_eval(xml=VOC_XML.replace("<xmin>10</xmin>", "<xmin>nan</xmin>")), absent=no_out)
    c("xml-inverted-box", "error", voc_eval(xml=VOC_XML.replace("<xmin>10</xmin>", "<xmin>90</xmin>")), absent=no_out)
    c("xml-garbage", "error", voc_eval(xml=GARBAGE.decode("latin-1")), absent=no_out)
    c("pred-empty-folder", "error", voc_eval(dets={}), absent=no_out)
    c("det-bad-line", "skips", voc_eval(dets={"car": "000001 0.9 10 10 50 40\n000001 x 1 2 3 4\n"}))
    c("det-unknown-image", "skips", voc_eval(dets={"car": "000001 0.9 10 10 50 40\n999 0.9 1 2 3 4\n"}))
    c("det-nan-score", "skips", voc_eval(dets={"car": "000001 nan 10 10 50 40\n"}))
    c("det-inverted-box", "skips", voc_eval(dets={"car": "000001 0.9 50 10 10 40\n"}))
    c("det-binary", "skips", voc_eval(dets={"car": GARBAGE.decode("latin-1")}))
    c("det-unknown-class", "skips", voc_eval(dets={"car": "000001 0.9 10 10 50 40\n", "zebra": "000001 0.9 1 1 5 5\n"}))
    c("labels-empty", "error", lambda t, fx: voc_eval(extra=["--labels", str(write(t / "l.txt", ""))])(t, fx),
      absent=no_out)
    c("labels-missing", "error", voc_eval(extra=["--labels", "{tmp}/nope.txt"]), absent=no_out)
    c("labelmap-prototxt", "ok", lambda t, fx: voc_eval(extra=["--labels", str(write(t / "labelmap.prototxt", (
        'item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
        'item { name: "car" label: 1 display_name: "car" }\nitem { name: "dog" label: 2 display_name: "dog" }\n')))])(t, fx))
    c("out-below-file", "error", lambda t, fx: voc_eval()(t, fx)[:-2] + ["--out", str(write(t / "f", "x") / "o")])


CREATE_XML = """<annotation><filename>{id}.png</filename><size><width>96</width><height>80</height></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>40</ymax></bndbox>
</object></annotation>"""


def create_data(xmls: dict | None = None, image_set: str | None = "000001\n000002\n", images: dict | None = None,
                labels: str = "dog\ncat\n", extra: list[str] = ()) -> Callable:
    """A two-image VOC folder (``xmls``/``images`` replace entries; None values leave a file out)."""
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        voc = tmp / "voc"
        write(voc / "labels.txt", labels)
        if image_set is not None:
            write(voc / "ImageSets/Main/train.txt", image_set)
        for image_id, text in {"000001": CREATE_XML.format(id="000001"), "000002": CREATE_XML.format(id="000002"),
                               **(xmls or {})}.items():
            if text is not None:
                write(voc / "Annotations" / f"{image_id}.xml", text)
        for name, data in {"000001.png": png(96, 80), "000002.png": png(96, 80, seed=1), **(images or {})}.items():
            if data is not None:
                write(voc / "JPEGImages" / name, data)
        return ["create-data", "--voc", str(voc), "--split", "train", "--out", str(tmp / "out"), "--no-progress",
                *[a.format(tmp=tmp) for a in extra]]
    return build


def add_create_data_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"ssd-create-data-{id}", "ssd-mobilenet create-data", SSD, expect, build,
                                             **kw)
    no_out = ("out/train_lmdb", "out/train_name_size.txt", "out/labelmap.prototxt")
    xml = CREATE_XML.format(id="000002")
    c("ok", "ok", create_data())
    c("ok-one-worker", "ok", create_data(extra=["--workers", "1"]))
    c("unknown-class", "skips", create_data({"000002": xml.replace(">dog<", ">dragon<")}))
    c("degenerate-box", "skips", create_data({"000002": xml.replace("<xmax>50</xmax>", "<xmax>5</xmax>")}))
    c("box-outside", "skips", create_data({"000002": xml.replace("<xmin>10</xmin>", "<xmin>1e300</xmin>")}))
    c("box-nan", "skips", create_data({"000002": xml.replace("<xmin>10</xmin>", "<xmin>nan</xmin>")}))
    c("xml-malformed", "skips", create_data({"000002": "<annotation><object>"}))
    c("xml-garbage", "skips", create_data({"000002": GARBAGE.decode("latin-1")}))
    c("xml-missing", "skips", create_data({"000002": None}))
    c("image-missing", "skips", create_data(images={"000002.png": None}))
    c("image-garbage", "skips", create_data(images={"000002.png": GARBAGE}))
    c("image-png-header-50000x50000", "skips", create_data(images={"000002.png": png_header_only(50000, 50000)}))
    c("no-objects", "skips", create_data({"000002": "<annotation><filename>000002.png</filename></annotation>"}))
    c("set-missing", "error", create_data(image_set=None), absent=no_out)
    c("set-empty", "error", create_data(image_set="\n"), absent=no_out)
    c("set-unknown-name", "error", create_data(extra=["--split", "val"]), absent=no_out)
    c("nothing-usable", "error", create_data({"000001": "<a", "000002": None}), absent=no_out)
    c("labels-duplicate", "error", create_data(labels="dog\ncat\ndog\n"), absent=no_out)
    c("labels-empty", "error", create_data(labels="\n"), absent=no_out)
    c("labels-binary", "error", create_data(extra=["--labels", "{tmp}/voc/JPEGImages/000001.png"]), absent=no_out)
    c("labelmap-garbage", "error", lambda t, fx: create_data(extra=["--labels", str(write(
        t / "l.prototxt", "item { label: zz"))])(t, fx), absent=no_out)
    c("split-traversal", "error", create_data(extra=["--split", "../x"]))
    c("workers-zero", "error", create_data(extra=["--workers", "0"]), absent=no_out)
    c("out-is-file", "error", lambda t, fx: create_data()(t, fx)[:-3] + ["--out", str(write(t / "f", "x")),
                                                                          "--no-progress"])
    c("voc-missing", "error", lambda t, fx: ["create-data", "--voc", str(t / "nope"), "--split", "train",
                                               "--out", str(t / "out")], absent=no_out)
    c("coco-garbage", "error", lambda t, fx: ["create-data", "--coco", str(write(t / "i.json", GARBAGE)), "--images",
                                                str(t), "--split", "val", "--out", str(t / "out")])
    c("coco-no-categories", "error", lambda t, fx: ["create-data", "--coco", str(write(t / "i.json", '{"images": []}')),
                                                      "--images", str(t), "--split", "val", "--out", str(t / "out")])
    c("coco-without-images-option", "error", lambda t, fx: ["create-data", "--coco", str(write(t / "i.json", "{}")),
                                                              "--split", "val", "--out", str(t / "out")])
    c("coco-ok", "ok", lambda t, fx: ["create-data", "--coco", str(write(t / "i.json", json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 5, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 30, 40]}]}))),
        "--images", str(write(t / "img" / "a.png", png(64, 48)).parent), "--split", "val", "--out", str(t / "out")])
    c("coco-bad-annotations", "skips", lambda t, fx: ["create-data", "--coco", str(write(t / "i.json", json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "../../etc/passwd"}, "x"],
        "categories": [{"id": 5, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, "w", None]}, 7,
                        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1e308, 1e308, 1e308, 1e308]}]}))),
        "--images", str(write(t / "img" / "a.png", png(64, 48)).parent), "--split", "val", "--out", str(t / "out")])


# ----------------------------------------------------------------------------- detect / demo
def detect(*args: str, images: dict | None = None) -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        for name, data in ({"a.png": png(96, 80)} if images is None else images).items():
            write(tmp / name, data)
        return [a.format(tmp=tmp) for a in args]
    return build


def add_detect_cases(prefix: str, cli: str, command: list[str], head: list[str]) -> None:
    c = lambda id, expect, build, **kw: case(f"{prefix}-{id}", cli, command, expect, build, **kw)
    demo = prefix == "demo"
    out = ["--out", "{tmp}/drawn"] if demo else []
    d = lambda *args, **kw: detect(*head, *args, *out, **kw)
    c("ok", "ok", d("{tmp}/a.png"))
    c("gray", "ok", d("{tmp}/g.png", images={"g.png": png(80, 80, channels=1)}))
    c("rgba", "ok", d("{tmp}/r.png", images={"r.png": png(80, 80, channels=4)}))
    c("16bit", "ok", d("{tmp}/w.png", images={"w.png": png(80, 80, depth=16)}))
    c("1x1", "ok", d("{tmp}/t.png", images={"t.png": png(1, 1)}))
    c("1x4000", "ok", d("{tmp}/t.png", images={"t.png": png(4000, 1)}))
    c("missing-image", "skips", d("{tmp}/nope.jpg"))
    c("corrupt-image", "skips", d("{tmp}/c.jpg", images={"c.jpg": GARBAGE}))
    c("empty-image", "skips", d("{tmp}/e.jpg", images={"e.jpg": b""}))
    c("truncated-png", "any", d("{tmp}/t.png", images={"t.png": png(96, 80)[:200]}))
    c("png-header-50000x50000", "skips", d("{tmp}/h.png", images={"h.png": png_header_only(50000, 50000)}), timeout=180)
    c("text-as-image", "skips", d("{tmp}/x.jpg", images={"x.jpg": "hello"}))
    c("folder-as-image-ok-and-bad", "skips", d("{tmp}/a.png", "{tmp}/b.jpg", images={"a.png": png(64, 64),
                                                                                        "b.jpg": GARBAGE}))
    if demo:
        c("no-args", "error", detect())
        c("out-below-file", "error", lambda t, fx: [write(t / "f", "x")] and detect(
            *head, "{tmp}/a.png", "--out", "{tmp}/f/sub")(t, fx))
        c("weights-dir-missing", "error", d("{tmp}/a.png", "--weights-dir", "{tmp}/nope"))
        c("weights-dir-garbage", "error", lambda t, fx: [
            write(t / "w" / f"det{i}.{ext}", GARBAGE) for i in (1, 2, 3) for ext in ("prototxt", "caffemodel")] and
          d("{tmp}/a.png", "--weights-dir", "{tmp}/w")(t, fx))
        c("interrupt", "interrupt", d(*[f"{{tmp}}/i{k}.png" for k in range(INTERRUPT_IMAGES)],
                                      images={f"i{k}.png": png(640, 480, seed=k) for k in range(INTERRUPT_IMAGES)}), interrupt_after=6)
        return
    c("empty-folder", "error", lambda t, fx: (t / "empty").mkdir() or d("{tmp}/empty")(t, fx))
    c("list-missing", "error", d("@{tmp}/nope.txt"))
    c("list-empty", "error", lambda t, fx: d("@{tmp}/l.txt", images={"l.txt": ""})(t, fx))
    c("list-bom", "ok", d("@{tmp}/l.txt", images={"l.txt": "\ufeffa.png\n", "a.png": png(64, 64)}))
    c("list-with-missing-entry", "skips", d("@{tmp}/l.txt", images={"l.txt": "a.png\nnope.png\n", "a.png": png(64, 64)}))
    c("list-binary", "skips", d("@{tmp}/l.txt", images={"l.txt": GARBAGE}))
    for opt, value in (("--min-size", "0"), ("--min-size", "-5"), ("--min-size", "nan"), ("--min-size", "abc"),
                       ("--factor", "1.5"), ("--factor", "0"), ("--factor", "nan"), ("--factor", "-0.5"),
                       ("--max-pyramid-mpx", "0")):
        c(f"{opt[2:]}-{value}", "error", d("{tmp}/a.png", opt, value))
    c("thresholds-2", "error", d("{tmp}/a.png", "--thresholds", "2", "0.5", "0.5"))
    c("thresholds-nan", "error", d("{tmp}/a.png", "--thresholds", "nan", "0.5", "0.5"))
    c("json-below-file", "error", d("{tmp}/a.png", "--json", "{tmp}/a.png/out.jsonl"))
    c("json-is-folder", "error", lambda t, fx: (t / "j").mkdir() or d("{tmp}/a.png", "--json", "{tmp}/j")(t, fx))
    c("wider-out-is-file", "error", d("{tmp}/a.png", "--wider-out", "{tmp}/a.png"))
    c("draw-below-file", "error", d("{tmp}/a.png", "--draw", "{tmp}/a.png/d"))
    c("weights-dir-missing", "error", d("{tmp}/a.png", "--weights-dir", "{tmp}/nope"))
    c("weights-dir-empty", "error", lambda t, fx: (t / "w").mkdir() or d("{tmp}/a.png", "--weights-dir", "{tmp}/w")(t, fx))
    c("weights-garbage-caffemodel", "error", lambda t, fx: [shutil.copy(REPO / f"prototxt/mtcnn/det{i}.prototxt", t)
                                                              for i in (1, 2, 3)] and [
        write(t / f"det{i}.caffemodel", GARBAGE) for i in (1, 2, 3)] and d("{tmp}/a.png", "--weights-dir", "{tmp}")(t, fx))
    c("weights-truncated-caffemodel", "error", lambda t, fx: [shutil.copy(REPO / f"prototxt/mtcnn/det{i}.prototxt", t)
                                                                for i in (1, 2, 3)] and [
        write(t / f"det{i}.caffemodel", (REPO / f"prototxt/mtcnn/det{i}.caffemodel").read_bytes()[:999])
        for i in (1, 2, 3)] and d("{tmp}/a.png", "--weights-dir", "{tmp}")(t, fx))
    c("weights-swapped", "error", lambda t, fx: [shutil.copy(REPO / f"prototxt/mtcnn/det{i}.prototxt", t)
                                                 for i in (1, 2, 3)] and [
        shutil.copy(REPO / f"prototxt/mtcnn/det{4 - i}.caffemodel", t / f"det{i}.caffemodel") for i in (1, 2, 3)]
      and d("{tmp}/a.png", "--weights-dir", "{tmp}")(t, fx))
    c("prototxt-garbage", "error", lambda t, fx: [write(t / f"det{i}.prototxt", "layer { this is not prototxt")
                                                  for i in (1, 2, 3)] and [
        shutil.copy(REPO / f"prototxt/mtcnn/det{i}.caffemodel", t) for i in (1, 2, 3)]
      and d("{tmp}/a.png", "--weights-dir", "{tmp}")(t, fx))
    c("prototxt-bad-bottom", "error", lambda t, fx: [write(t / f"det{i}.prototxt", (
        REPO / f"prototxt/mtcnn/det{i}.prototxt").read_text().replace('bottom: "data"', 'bottom: "nothing"', 1))
        for i in (1, 2, 3)] and [shutil.copy(REPO / f"prototxt/mtcnn/det{i}.caffemodel", t) for i in (1, 2, 3)]
      and d("{tmp}/a.png", "--weights-dir", "{tmp}")(t, fx))
    c("interrupt", "interrupt", d(*[f"{{tmp}}/i{k}.png" for k in range(INTERRUPT_IMAGES)],
                                  images={f"i{k}.png": png(640, 480, seed=k) for k in range(INTERRUPT_IMAGES)}), interrupt_after=6)


# ----------------------------------------------------------------------------- ssd-mobilenet detect / SSD demo
def ssd_detect(*args: str, images: dict | None = None, inputs: tuple[str, ...] = ("{tmp}/a.png",),
               model: Callable[[str], str | bytes] | None = None, weights: Callable[[bytes], bytes] | None = None,
               head: tuple[str, ...] = ()) -> Callable:
    """``head``, ``--model``/``--weights`` (the fixture's SSD net, or what ``model``/``weights`` make of it),
    ``args``, then the input images (written from ``images``, default one noise PNG)."""
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        good_model, good_weights = fx.ssd_model()
        m = write(tmp / "deploy.prototxt", (model or (lambda text: text))(good_model.read_text()))
        w = write(tmp / "w.caffemodel", (weights or (lambda data: data))(good_weights.read_bytes()))
        for name, data in ({"a.png": png(96, 80)} if images is None else images).items():
            write(tmp / name, data)
        return [*head, "--model", str(m), "--weights", str(w), *[a.format(tmp=tmp) for a in (*args, *inputs)]]
    return build


def _after(text: str, marker: str, old: str, new: str) -> str:
    """``text`` with the first ``old`` after ``marker`` replaced."""
    at = text.index(old, text.index(marker))
    return text[:at] + new + text[at + len(old):]


def add_ssd_detect_cases(prefix: str, cli: str, command: list[str], head: list[str]) -> None:
    c = lambda id, expect, build, **kw: case(f"{prefix}-{id}", cli, command, expect, build, **kw)
    demo = prefix == "demo-ssd"
    out = ("--draw", "{tmp}/drawn") if demo else ("--json", "{tmp}/out.jsonl")
    d = lambda *args, **kw: ssd_detect(*out, *args, head=tuple(head), **kw)
    no_out = ("out.jsonl", "drawn")
    heads_mismatch = lambda text: _after(text, 'name: "conv11_mbox_conf_new"', "num_output: 9", "num_output: 12")
    c("ok", "ok", d())
    c("opencv-ok", "ok", d("--backend", "opencv"))
    c("zoo-res10", "ok", lambda t, fx: [write(t / "a.png", png(96, 80))] and [*head, *out, "--model-zoo", "res10",
                                                                               str(t / "a.png")])
    c("corrupt-image", "skips", d(inputs=("{tmp}/c.jpg",), images={"c.jpg": GARBAGE}))
    c("ok-and-bad", "skips", d(inputs=("{tmp}/a.png", "{tmp}/b.jpg"), images={"a.png": png(64, 64), "b.jpg": GARBAGE}))
    c("heads-priors-mismatch", "error", d(model=heads_mismatch), absent=no_out)
    c("interrupt", "interrupt", d(inputs=tuple(f"{{tmp}}/i{k}.png" for k in range(INTERRUPT_IMAGES)),
                                  images={f"i{k}.png": png(640, 480, seed=k) for k in range(INTERRUPT_IMAGES)}), interrupt_after=6)
    c("model-garbage-text", "error", d(model=lambda text: "layer { name: oops"), absent=no_out)
    if demo:
        c("out-below-file", "error", lambda t, fx: [write(t / "f", "x")] and ssd_detect(
            "--draw", "{tmp}/f/sub", head=tuple(head))(t, fx))
        return
    c("gray", "ok", d(inputs=("{tmp}/g.png",), images={"g.png": png(80, 80, channels=1)}))
    c("rgba", "ok", d(inputs=("{tmp}/r.png",), images={"r.png": png(80, 80, channels=4)}))
    c("16bit", "ok", d(inputs=("{tmp}/w.png",), images={"w.png": png(80, 80, depth=16)}))
    c("1x1", "ok", d(inputs=("{tmp}/t.png",), images={"t.png": png(1, 1)}))
    c("1x4000", "ok", d(inputs=("{tmp}/t.png",), images={"t.png": png(4000, 1)}))
    c("size-wxh", "ok", d("--size", "200x160"))
    c("labels-names-file", "ok", d("--labels", "{tmp}/l.txt", images={"a.png": png(96, 80), "l.txt": "cat\ndog\n"}))
    c("missing-image", "skips", d(inputs=("{tmp}/nope.jpg",)))
    c("empty-image", "skips", d(inputs=("{tmp}/e.jpg",), images={"e.jpg": b""}))
    c("text-as-image", "skips", d(inputs=("{tmp}/x.jpg",), images={"x.jpg": "hello"}))
    c("png-header-50000x50000", "skips", d(inputs=("{tmp}/h.png",), images={"h.png": png_header_only(50000, 50000)}))
    c("empty-folder", "error", lambda t, fx: (t / "empty").mkdir() or d(inputs=("{tmp}/empty",))(t, fx))
    c("list-empty", "error", d(inputs=("@{tmp}/l.txt",), images={"l.txt": ""}))
    c("list-with-missing-entry", "skips", d(inputs=("@{tmp}/l.txt",), images={"l.txt": "a.png\nnope.png\n",
                                                                               "a.png": png(64, 64)}))
    c("model-missing", "error", lambda t, fx: with_option(d()(t, fx), "--model", t / "nope.prototxt"), absent=no_out)
    c("weights-missing", "error", lambda t, fx: with_option(d()(t, fx), "--weights", t / "nope.caffemodel"),
      absent=no_out)
    c("model-binary", "error", d(model=lambda text: GARBAGE), absent=no_out)
    c("model-empty", "error", d(model=lambda text: ""), absent=no_out)
    c("model-and-weights-swapped", "error", lambda t, fx: with_option(with_option(
        d()(t, fx), "--model", t / "w.caffemodel"), "--weights", t / "deploy.prototxt"), absent=no_out)
    c("weights-garbage", "error", d(weights=lambda data: GARBAGE), absent=no_out)
    c("weights-empty", "error", d(weights=lambda data: b""), absent=no_out)
    c("weights-truncated", "error", d(weights=lambda data: data[:5000]), absent=no_out)
    c("weights-other-net", "error", lambda t, fx: with_option(d()(t, fx), "--weights", fx.bn_model()[1]),
      absent=no_out)
    c("no-detection-output", "error", d(model=lambda text: text.split('layer {\n  name: "detection_out"')[0]),
      absent=no_out)
    c("heads-priors-mismatch-opencv", "error", d("--backend", "opencv", model=heads_mismatch), absent=no_out)
    c("loc-head-mismatch", "error", d(model=lambda text: _after(text, 'name: "conv13_mbox_loc"', "num_output: 24",
                                                                "num_output: 20")), absent=no_out)
    c("num-classes-mismatch", "error", d(model=lambda text: text.replace("num_classes: 3", "num_classes: 5")),
      absent=no_out)
    c("input-1-channel", "error", d(model=lambda text: text.replace("dim: 3", "dim: 1", 1)), absent=no_out)
    c("input-dim-zero", "error", d(model=lambda text: text.replace("dim: 300", "dim: 0", 1)), absent=no_out)
    c("unknown-layer-type", "error", d(model=lambda text: text.replace('type: "ReLU"', 'type: "NoSuchLayer"', 1)),
      absent=no_out)
    c("undefined-bottom", "error", d(model=lambda text: text.replace('bottom: "conv0"', 'bottom: "nothing"', 1)),
      absent=no_out)
    c("model-without-weights", "error", lambda t, fx: [x for x in d()(t, fx) if x != "--weights" and
                                                       not x.endswith("w.caffemodel")], absent=no_out)
    c("zoo-and-model", "error", d("--model-zoo", "res10"), absent=no_out)
    c("zoo-unknown", "error", lambda t, fx: [*head, *out, "--model-zoo", "nope", str(write(t / "a.png", png(8, 8)))])
    for option, values in (("--mean", ("1", "2")), ("--mean", ("nan", "1", "1")), ("--scale", ("0",)),
                           ("--scale", ("nan",)), ("--scale", ("-1",)), ("--size", ("0",)), ("--size", ("5000",)),
                           ("--size", ("3x",)), ("--size", ("300x300x3",)), ("--conf", ("2",)), ("--conf", ("nan",)),
                           ("--backend", ("tensorrt",))):
        c(f"{option[2:]}-{'-'.join(values)}", "error", d(option, *values), absent=no_out)
    c("labels-missing", "error", d("--labels", "{tmp}/nope.txt"), absent=no_out)
    c("labels-wrong-count", "error", d("--labels", "{tmp}/l.txt", images={"a.png": png(8, 8), "l.txt": "a\nb\nc\nd\n"}),
      absent=no_out)
    c("labels-binary", "error", d("--labels", "{tmp}/l.txt", images={"a.png": png(8, 8), "l.txt": GARBAGE}),
      absent=no_out)
    c("labelmap-garbage", "error", d("--labels", "{tmp}/l.prototxt", images={"a.png": png(8, 8),
                                                                           "l.prototxt": "item { name: oops"}),
      absent=no_out)
    c("json-is-folder", "error", lambda t, fx: (t / "j").mkdir() or with_option(d()(t, fx), "--json", t / "j"))
    c("json-below-file", "error", lambda t, fx: with_option(d()(t, fx), "--json", t / "a.png" / "out.jsonl"))
    c("json-exists", "error", lambda t, fx: [write(t / "out.jsonl", '{"image": "x"}\n')] and d()(t, fx))
    c("resume-json-garbage", "error", lambda t, fx: [write(t / "out.jsonl", GARBAGE)] and d("--resume")(t, fx))
    c("resume-without-json", "error", lambda t, fx: [x for x in d("--resume")(t, fx) if x != "--json" and
                                                     not x.endswith("out.jsonl")])
    c("draw-below-file", "error", d("--draw", "{tmp}/a.png/d"))


# ----------------------------------------------------------------------------- merge-bn
def merge(*args: str, model: str | bytes | None = None, weights: bytes | None = None) -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        good_model, good_weights = fx.bn_model()
        m, w = tmp / "deploy.prototxt", tmp / "deploy.caffemodel"
        write(m, good_model.read_text() if model is None else model)
        write(w, good_weights.read_bytes() if weights is None else weights)
        return ["--model", str(m), "--weights", str(w), "--runs", "1", *[a.format(tmp=tmp) for a in args]]
    return build


def add_merge_cases(prefix: str, cli: str, command: list[str], head: list[str]) -> None:
    c = lambda id, expect, build, **kw: case(f"{prefix}-{id}", cli, command, expect,
                                             lambda t, fx: head + build(t, fx), **kw)
    out = ("deploy_nobn.prototxt", "deploy_nobn.caffemodel")
    c("ok", "ok", merge())
    c("model-missing", "error", lambda t, fx: merge()(t, fx)[:1] + [str(t / "nope.prototxt")] + merge()(t, fx)[2:],
      absent=out)
    c("weights-missing", "error", lambda t, fx: merge()(t, fx)[:3] + [str(t / "nope.caffemodel")] + merge()(t, fx)[4:],
      absent=out)
    c("model-garbage-text", "error", merge(model="layer { name: oops"), absent=out)
    c("model-binary", "error", merge(model=GARBAGE), absent=out)
    c("model-empty", "error", merge(model=""), absent=out)
    c("model-is-folder", "error", lambda t, fx: (t / "m").mkdir() or merge()(t, fx)[:1] + [str(t / "m")] +
      merge()(t, fx)[2:])
    c("weights-garbage", "error", merge(weights=GARBAGE), absent=out)
    c("weights-empty", "error", merge(weights=b""), absent=out)
    c("weights-truncated", "error", lambda t, fx: merge(weights=fx.bn_model()[1].read_bytes()[:60])(t, fx), absent=out)
    c("weights-other-net", "error", lambda t, fx: merge(weights=(REPO / "prototxt/mtcnn/det1.caffemodel").read_bytes())(t, fx),
      absent=out)
    c("weights-shape-mismatch", "error", merge(model=BN_NET.format(h=16, w=16, stats="true").replace(
        "num_output: 4", "num_output: 8")), absent=out)
    c("use-global-stats-false", "error", merge(model=BN_NET.format(h=16, w=16, stats="false")), absent=out)
    c("train-prototxt", "error", merge(model=BN_NET.format(h=16, w=16, stats="true") + 'layer { name: "loss" '
                                       'type: "SoftmaxWithLoss" bottom: "conv1" bottom: "conv1" top: "loss" }\n'),
      absent=out)
    c("undefined-bottom", "error", merge(model=BN_NET.format(h=16, w=16, stats="true").replace(
        'bottom: "data" top: "conv1"', 'bottom: "nothing" top: "conv1"')), absent=out)
    c("unknown-layer-type", "error", merge(model=BN_NET.format(h=16, w=16, stats="true").replace(
        'type: "ReLU"', 'type: "NoSuchLayer"')), absent=out)
    c("num-output-zero", "error", merge(model=BN_NET.format(h=16, w=16, stats="true").replace(
        "num_output: 4", "num_output: 0")), absent=out)
    c("kernel-bigger-than-input", "error", merge(model=BN_NET.format(h=2, w=2, stats="true")), absent=out)
    c("input-dim-zero", "error", merge(model=BN_NET.format(h=0, w=16, stats="true")), absent=out)
    c("input-dim-negative", "error", merge(model=BN_NET.format(h=-16, w=16, stats="true")), absent=out)
    c("input-huge", "error", merge(model=BN_NET.format(h=200000, w=200000, stats="true")), absent=out, timeout=180)
    c("out-model-below-file", "error", merge("--out-model", "{tmp}/deploy.prototxt/x.prototxt"), absent=out)
    c("out-weights-is-folder", "error", lambda t, fx: (t / "o").mkdir() or merge("--out-weights", "{tmp}/o")(t, fx),
      absent=("deploy_nobn.prototxt",))
    c("image-missing", "error", merge("--image", "{tmp}/nope.jpg"), absent=out)
    c("image-corrupt", "error", lambda t, fx: [write(t / "c.jpg", GARBAGE)] and merge("--image", "{tmp}/c.jpg")(t, fx),
      absent=out)
    c("image-mean-text", "error", merge("--image-mean", "a,b"), absent=out)
    c("image-mean-two-values", "error", merge("--image-mean", "1,2"), absent=out)
    c("image-scale-nan", "error", merge("--image-scale", "nan"), absent=out)
    c("tolerance-negative", "error", merge("--tolerance", "-1"), absent=out)
    c("runs-zero", "any", lambda t, fx: merge()(t, fx)[:-2] + ["--runs", "0"])
    c("runs-negative", "error", lambda t, fx: merge()(t, fx)[:-2] + ["--runs", "-3"], absent=out)


def add_merge_variants() -> None:
    add_merge_cases("merge-bn", "mtcnn-caffe merge-bn", MTCNN, ["merge-bn"])
    ssd = [k for k in ("ok", "model-garbage-text", "weights-garbage", "undefined-bottom", "input-dim-zero",
                       "out-model-below-file")]
    before = len(CASES)
    add_merge_cases("ssd-merge-bn", "ssd-mobilenet merge-bn", SSD, ["merge-bn"])
    add_merge_cases("script-merge-bn", "scripts/merge_bn.py", script("scripts/merge_bn.py"), [])
    keep = [c for c in CASES[before:] if c.id.split("merge-bn-", 1)[1] in ssd]
    del CASES[before:]
    CASES.extend(keep)


# ----------------------------------------------------------------------------- doctor
def add_doctor_cases() -> None:
    case("doctor-ok", "mtcnn-caffe doctor", MTCNN, "ok", lambda t, fx: ["doctor"], timeout=180)
    case("ssd-doctor-ok", "ssd-mobilenet doctor", SSD, "ok", lambda t, fx: ["doctor"], timeout=180)
    case("doctor-unknown-option", "mtcnn-caffe doctor", MTCNN, "error", lambda t, fx: ["doctor", "--bogus"])
    case("unknown-command", "mtcnn-caffe", MTCNN, "error", lambda t, fx: ["bogus"])
    case("ssd-unknown-command", "ssd-mobilenet", SSD, "error", lambda t, fx: ["bogus"])


# ----------------------------------------------------------------------------- prepare_data
def wider_gen(path: str, *args: str, anno: str | bytes | None = None, images: bool = True) -> Callable:
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        good_anno, good_images = fx.wider()
        a = write(tmp / "gt.txt", good_anno.read_text() if anno is None else anno)
        img = good_images
        if not images:
            img = tmp / "noimages"
            img.mkdir()
        return ["--anno", str(a), "--images", str(img), "--out", str(tmp / "gen"), "-j", "1", "--no-progress",
                *[x.format(tmp=tmp, images=good_images) for x in args]]
    return build


GOOD_ANNO = "e/a.png\n2\n20 20 50 60 0 0 0 0 0 0\n90 30 40 40 0 0 0 0 0 0\ne/b.png\n1\n30 30 70 70 0 0 0 0 0 0\n"


def add_generator_cases() -> None:
    for size in (12, 24, 48):
        path = f"prepare_data/gen_{size}net_data.py"
        c = lambda id, expect, build, **kw: case(f"gen{size}-{id}", path, script(path), expect, build, **kw)
        c("ok", "ok", wider_gen(path, "--neg-per-image", "5"))
        c("anno-missing", "error", lambda t, fx: wider_gen(path)(t, fx)[:1] + [str(t / "nope.txt")] +
          wider_gen(path)(t, fx)[2:])
        c("anno-empty", "error", wider_gen(path, anno=""), absent=("gen/stats.json",))
        c("images-missing", "error", lambda t, fx: wider_gen(path)(t, fx)[:3] + [str(t / "nope")] +
          wider_gen(path)(t, fx)[4:], absent=("gen/stats.json",))
        c("out-below-file", "error", lambda t, fx: wider_gen(path)(t, fx) + ["--out", str(write(t / "f", "x") / "o")])
        if size != 12:
            continue
        c("anno-count-too-large", "skips", wider_gen(path, anno=GOOD_ANNO.replace("e/a.png\n2\n", "e/a.png\n5\n")))
        c("anno-count-text", "skips", wider_gen(path, anno=GOOD_ANNO.replace("e/a.png\n2\n", "e/a.png\nxx\n")))
        c("anno-negative-size", "skips", wider_gen(path, anno=GOOD_ANNO.replace("90 30 40 40", "90 30 -40 40")))
        c("anno-nan", "skips", wider_gen(path, anno=GOOD_ANNO.replace("90 30 40 40", "90 nan 40 40")))
        c("anno-garbage", "error", wider_gen(path, anno=GARBAGE), absent=("gen/stats.json",))
        c("anno-bom", "ok", wider_gen(path, anno="\ufeff" + GOOD_ANNO))
        c("all-images-missing", "error", wider_gen(path, images=False), absent=("gen/stats.json",))
        c("one-image-corrupt", "skips", lambda t, fx: [
            shutil.copytree(fx.wider()[1], t / "imgs"), write(t / "imgs/e/b.png", GARBAGE)] and
          with_option(wider_gen(path)(t, fx), "--images", t / "imgs"))
        c("limit-negative", "error", wider_gen(path, "--limit", "-1"))
        c("neg-per-image-negative", "error", wider_gen(path, "--neg-per-image", "-5"))
        c("min-face-nan", "error", wider_gen(path, "--min-face", "nan"))
        c("jobs-text", "error", wider_gen(path, "-j", "many"))
        c("interrupt", "interrupt", lambda t, fx: [shutil.copytree(fx.wider()[1], t / "imgs")] and [
            write(t / f"imgs/e/big{k}.png", png(800, 600, seed=k)) for k in range(100)] and with_option(wider_gen(
                path, "--neg-per-image", "2000", "--tries-per-face", "500", anno=GOOD_ANNO + "".join(
                    f"e/big{k}.png\n1\n100 100 300 300 0 0 0 0 0 0\n" for k in range(100)))(t, fx),
                "--images", t / "imgs"), interrupt_after=2.5)

    path = "prepare_data/gen_landmark_data.py"
    c = lambda id, expect, build, **kw: case(f"genlm-{id}", path, script(path), expect, build, **kw)

    def lm(*args: str, lst: str | bytes | None = None) -> Callable:
        def build(tmp: Path, fx: Fixtures) -> list[str]:
            good, root = fx.landmarks()
            listed = write(tmp / "list.txt", good.read_text() if lst is None else lst)
            return ["--list", str(listed), "--images", str(root), "--size", "12", "--out", str(tmp / "gen"), "-j", "1",
                    "--no-progress", *[a.format(tmp=tmp) for a in args]]
        return build
    good_line = "img/a.png 30 90 30 90 45 50 75 50 60 62 48 75 72 75\n"
    c("ok", "ok", lm())
    c("list-missing", "error", lambda t, fx: lm()(t, fx)[:1] + [str(t / "nope")] + lm()(t, fx)[2:])
    c("list-empty", "error", lm(lst=""), absent=("gen/stats.json",))
    c("list-bad-line", "skips", lm(lst=good_line + "img/a.png 1 2 3\n"))
    c("list-empty-box", "skips", lm(lst=good_line + "img/a.png 90 30 30 90 45 50 75 50 60 62 48 75 72 75\n"))
    c("list-image-missing", "skips", lm(lst=good_line + good_line.replace("img/a.png", "img/nope.png")))
    c("list-garbage", "error", lm(lst=GARBAGE), absent=("gen/stats.json",))
    c("list-bom", "ok", lm(lst="\ufeff" + good_line))
    c("size-13", "error", lm("--size", "13"))
    c("mirror-prob-2", "error", lm("--mirror-prob", "2"))
    c("max-angle-nan", "error", lm("--max-angle", "nan"))
    c("tries-negative", "error", lm("--tries", "-1"))
    c("images-missing", "error", lambda t, fx: lm()(t, fx)[:3] + [str(t / "nope")] + lm()(t, fx)[4:])
    c("celeba-garbage", "error", lambda t, fx: ["--celeba", str(write(t / "b.txt", GARBAGE)), str(write(t / "l.txt", GARBAGE)),
                                                *lm()(t, fx)[2:]])
    c("out-below-file", "error", lambda t, fx: lm()(t, fx) + ["--out", str(write(t / "f", "x") / "o")])

    for path, stage in (("prepare_data/gen_12net_hard_example.py", None), ("prepare_data/gen_24net_hard_example.py", None),
                        ("prepare_data/gen_hard_example.py", "24")):
        name = Path(path).stem.replace("_", "")
        st = ["--stage", stage] if stage else []
        c = lambda id, expect, build, **kw: case(f"{name}-{id}", path, script(path), expect, build, **kw)
        # noise images: the detector may find nothing to mine, so "no samples" is a fair answer too
        c("runs", "any", wider_gen(path, *st), timeout=300)
        c("anno-missing", "error", lambda t, fx, st=st, path=path: wider_gen(path, *st)(t, fx)[:1] + [str(t / "nope")] +
          wider_gen(path, *st)(t, fx)[2:])
        c("weights-dir-missing", "error", wider_gen(path, *st, "--weights-dir", "{tmp}/nope"))
        if stage:
            c("stage-12", "error", wider_gen(path, "--stage", "12"))
            c("thresholds-2", "error", wider_gen(path, *st, "--thresholds", "2", "2", "2"))
            c("factor-1", "error", wider_gen(path, *st, "--factor", "1"))
            c("det-min-size-0", "error", wider_gen(path, *st, "--det-min-size", "0"))
            c("weights-garbage", "error", lambda t, fx: [write(t / "w" / f"det{i}.{e}", GARBAGE) for i in (1, 2)
                                                         for e in ("prototxt", "caffemodel")] and
              wider_gen(path, *st, "--weights-dir", "{tmp}/w")(t, fx))
            c("anno-count-too-large", "skips", wider_gen(path, *st, anno=GOOD_ANNO.replace("e/a.png\n2\n", "e/a.png\n9\n")),
              timeout=300)

    path = "prepare_data/gen_net_imdb.py"
    c = lambda id, expect, build, **kw: case(f"imdb-{id}", path, script(path), expect, build, **kw)

    def imdb(*args: str, data: Callable | None = None) -> Callable:
        def build(tmp: Path, fx: Fixtures) -> list[str]:
            src = fx.packed_source() if data is None else data(tmp)
            return ["--stage", "12", "--data", str(src), "--out", str(tmp / "pack"), *[a.format(tmp=tmp) for a in args]]
        return build
    c("ok", "ok", imdb("--ratio", "3:1:1:0"), timeout=300)
    c("data-missing", "error", imdb(data=lambda t: t / "nope"), absent=("pack/data.lmdb",))
    c("data-empty-folder", "error", imdb(data=lambda t: (t / "e").mkdir() or t / "e"), absent=("pack/data.lmdb",))
    c("data-garbage", "error", imdb(data=lambda t: write(t / "g" / "stats.json", GARBAGE).parent),
      absent=("pack/data.lmdb",))
    c("stage-mismatch", "error", lambda t, fx: ["--stage", "24"] + imdb()(t, fx)[2:], absent=("pack/data.lmdb",))
    c("stage-13", "error", lambda t, fx: ["--stage", "13"] + imdb()(t, fx)[2:])
    c("ratio-text", "error", imdb("--ratio", "a:b:c:d"))
    c("ratio-zero", "error", imdb("--ratio", "0:0:0:0"))
    c("ratio-negative", "error", imdb("--ratio", "3:-1:1:2"))
    c("out-below-file", "error", lambda t, fx: imdb()(t, fx) + ["--out", str(write(t / "f", "x") / "o")])


# ----------------------------------------------------------------------------- ssd-mobilenet convert-depthwise
def add_convert_depthwise_cases() -> None:
    out = ("out.prototxt",)

    def conv(to: str = "native", model: Callable[[str], str | bytes] | None = None, target: str = "{tmp}/out.prototxt",
             extra: tuple[str, ...] = ()) -> Callable:
        """``--to``, ``--model`` (the fixture's grouped MobileNet-SSD, or what ``model`` makes of its text), ``--out``."""
        def build(tmp: Path, fx: Fixtures) -> list[str]:
            m = write(tmp / "deploy.prototxt", (model or (lambda text: text))(fx.ssd_model()[0].read_text()))
            return ["convert-depthwise", "--to", to, "--model", str(m), "--out", target.format(tmp=tmp), *extra]
        return build

    c = lambda id, expect, build, **kw: case(f"convert-depthwise-{id}", "ssd-mobilenet convert-depthwise", SSD,
                                             expect, build, **kw)
    native = lambda text: _after(text, 'name: "conv1/dw"', 'type: "Convolution"', 'type: "ConvolutionDepthwise"')
    c("ok-native", "ok", conv())
    c("ok-group", "ok", conv("group", model=native))
    c("ok-already-grouped", "ok", conv("group"))
    c("to-unknown", "error", conv("cudnn"), absent=out)
    c("model-missing", "error", lambda t, fx: with_option(conv()(t, fx), "--model", t / "nope.prototxt"), absent=out)
    c("model-is-folder", "error", lambda t, fx: (t / "m").mkdir() or with_option(conv()(t, fx), "--model", t / "m"),
      absent=out)
    c("model-garbage-text", "error", conv(model=lambda text: "layer { name: oops"), absent=out)
    c("model-binary", "error", conv(model=lambda text: GARBAGE), absent=out)
    c("model-empty", "error", conv(model=lambda text: ""), absent=out)
    c("model-legacy-v1", "error", conv(model=lambda text: 'layers { name: "a" type: CONVOLUTION }'), absent=out)
    c("channels-untraceable", "error", conv(model=lambda text: _after(
        text, 'name: "conv0/relu"', 'type: "ReLU"', 'type: "Flatten"')), absent=out)
    c("out-is-input", "error", conv(target="{tmp}/deploy.prototxt"))
    c("out-is-folder", "error", conv(target="{tmp}"))
    c("out-below-file", "error", conv(target="{tmp}/deploy.prototxt/out.prototxt"))


# ----------------------------------------------------------------------------- ssd-mobilenet detect-faces / train-faces
def face_detect(*args: str, images: dict | None = None, inputs: tuple[str, ...] = ("{tmp}/a.png",),
                change: Callable[[Path], object] | None = None) -> Callable:
    """``detect-faces --model-dir`` (a copy of the fixture's face model, then ``change(folder)``), ``args``,
    the input images (written from ``images``, default one noise PNG)."""
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        folder = tmp / "model"
        shutil.copytree(fx.face_model(), folder)
        if change:
            change(folder)
        for name, data in ({"a.png": png(96, 80)} if images is None else images).items():
            write(tmp / name, data)
        return ["detect-faces", "--no-progress", "--model-dir", str(folder),
                *[a.format(tmp=tmp) for a in (*args, *inputs)]]
    return build


def _edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def add_detect_faces_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"detect-faces-{id}", "ssd-mobilenet detect-faces", SSD, expect, build,
                                             **kw)
    c("ok", "ok", face_detect())
    c("ok-opencv", "ok", face_detect("--backend", "opencv"))
    c("ok-size-128", "ok", face_detect("--size", "128"))
    c("gray", "ok", face_detect(inputs=("{tmp}/g.png",), images={"g.png": png(80, 80, channels=1)}))
    c("rgba", "ok", face_detect(inputs=("{tmp}/r.png",), images={"r.png": png(80, 80, channels=4)}))
    c("1x1", "ok", face_detect(inputs=("{tmp}/t.png",), images={"t.png": png(1, 1)}))
    c("1x4000", "ok", face_detect(inputs=("{tmp}/t.png",), images={"t.png": png(4000, 1)}))
    c("missing-image", "skips", face_detect(inputs=("{tmp}/nope.jpg",)))
    c("corrupt-image", "skips", face_detect(inputs=("{tmp}/a.png", "{tmp}/c.jpg"), images={"a.png": png(64, 64),
                                                                                             "c.jpg": GARBAGE}))
    for opt, value in (("--size", "100"), ("--size", "0"), ("--size", "32"), ("--size", "abc"), ("--conf", "2"),
                       ("--conf", "nan"), ("--nms", "-1"), ("--backend", "cuda")):
        c(f"{opt[2:]}-{value}", "error", face_detect(opt, value))
    c("json-below-file", "error", face_detect("--json", "{tmp}/a.png/out.jsonl"))
    c("model-dir-missing", "error", lambda t, fx: with_option(face_detect()(t, fx), "--model-dir", t / "nope"))
    c("model-dir-empty", "error", lambda t, fx: (t / "e").mkdir() or with_option(face_detect()(t, fx), "--model-dir",
                                                                                 t / "e"))
    c("model-json-garbage", "error", face_detect(change=lambda m: write(m / "face_model.json", GARBAGE)))
    c("model-json-list", "error", face_detect(change=lambda m: write(m / "face_model.json", "[1, 2]")))
    c("model-json-future-format", "error", face_detect(change=lambda m: _edit_json(
        m / "face_model.json", lambda d: d.update(format=99))))
    c("model-json-size-odd", "error", face_detect(change=lambda m: _edit_json(
        m / "face_model.json", lambda d: d["input"].update(size=[65, 65]))))
    for value in ("big", "NaN", -0.1):
        c(f"model-json-landmark-variance-{value}", "error", face_detect(change=lambda m, v=value: _edit_json(
            m / "face_model.json", lambda d: d["priors"].update(landmark_variance=v))))
    c("weights-garbage", "error", face_detect(change=lambda m: write(m / "face.caffemodel", GARBAGE)))
    c("weights-truncated", "error", face_detect(change=lambda m: write(
        m / "face.caffemodel", (m / "face.caffemodel").read_bytes()[:5000])))
    c("weights-missing", "error", face_detect(change=lambda m: (m / "face.caffemodel").unlink()))
    c("prototxt-garbage", "error", face_detect(change=lambda m: write(m / "face_deploy.prototxt", "layer { oops")))
    c("prototxt-bad-bottom", "error", face_detect(change=lambda m: write(
        m / "face_deploy.prototxt", (m / "face_deploy.prototxt").read_text().replace(
            'bottom: "data"', 'bottom: "nothing"', 1))))
    c("prototxt-head-mismatch", "error", face_detect(change=lambda m: write(
        m / "face_deploy.prototxt", _after((m / "face_deploy.prototxt").read_text(),
                                           'name: "features.18_mbox_lmk"', "num_output: 20", "num_output: 18"))))
    c("interrupt", "interrupt", face_detect("--size", "640", inputs=tuple(f"{{tmp}}/i{k}.png" for k in range(INTERRUPT_IMAGES)),
                                            images={f"i{k}.png": png(640, 480, seed=k)
                                                    for k in range(INTERRUPT_IMAGES)}), interrupt_after=6)


def face_train(*args: str, anno: str | bytes | None = None, landmarks: str | bytes | None = None,
               out: str = "{tmp}/out") -> Callable:
    """``train-faces`` on the fixture's tiny WIDER set (or ``anno`` in its place), with ``landmarks`` as a
    5-point list when given, at 64 x 64, from scratch, then ``args``."""
    def build(tmp: Path, fx: Fixtures) -> list[str]:
        gt, images = fx.wider()
        if anno is not None:
            gt = write(tmp / "gt.txt", anno)
        argv = ["train-faces", "--no-progress", "--wider-anno", str(gt), "--wider-images", str(images),
                "--size", "64", "--batch", "2", "--init", "none", "--hold-out", "--out", out.format(tmp=tmp)]
        if landmarks is not None:
            argv += ["--landmarks", str(write(tmp / "lm.txt", landmarks)), "--landmark-images", str(images)]
        return argv + [a.format(tmp=tmp) for a in args]
    return build


def add_train_faces_cases() -> None:
    c = lambda id, expect, build, **kw: case(f"train-faces-{id}", "ssd-mobilenet train-faces", SSD, expect, build,
                                             **kw)
    model = ("out/face_model.json", "out/face.caffemodel")
    c("ok-3-iterations", "ok", face_train("--iters", "3"), timeout=300)
    c("no-sources", "error", lambda t, fx: ["train-faces", "--out", str(t / "out")], absent=model)
    c("anno-missing", "error", lambda t, fx: with_option(face_train()(t, fx), "--wider-anno", t / "nope.txt"),
      absent=model)
    c("anno-garbage", "error", face_train(anno=GARBAGE), absent=model)
    c("anno-no-usable-face", "error", face_train(anno="e/a.png\n1\n5 5 1 1 0 0 0 0 0 0\n"), absent=model)
    c("anno-count-too-large", "skips", face_train("--iters", "2", anno="e/a.png\n9\n20 20 50 60 0 0 0 0 0 0\n"),
      timeout=300)
    c("landmarks-garbage", "skips", face_train("--iters", "2", landmarks=GARBAGE), timeout=300)
    for opt, value in (("--size", "100"), ("--size", "0"), ("--batch", "0"), ("--iters", "0"), ("--base-lr", "-1"),
                       ("--base-lr", "nan"), ("--init", "random")):
        c(f"{opt[2:]}-{value}", "error", face_train(opt, value), absent=model)
    c("out-is-file", "error", lambda t, fx: write(t / "f", "x") and face_train(out="{tmp}/f")(t, fx))
    c("out-below-file", "error", lambda t, fx: write(t / "f", "x") and face_train(out="{tmp}/f/sub")(t, fx))
    c("resume-nothing-there", "ok", face_train("--iters", "2", "--resume"), timeout=300)
    c("resume-without-sources-or-index", "error", lambda t, fx: ["train-faces", "--resume", "--out", str(t / "out")],
      absent=model)
    c("interrupt", "interrupt", face_train("--iters", "100000"), interrupt_after=25, timeout=300)


def build_cases() -> list[Case]:
    if not CASES:
        add_wider_cases()
        add_fddb_cases()
        add_landmark_cases()
        add_voc_cases()
        add_create_data_cases()
        add_detect_cases("detect", "mtcnn-caffe detect", MTCNN, ["detect", "--no-progress"])
        add_detect_cases("demo", "scripts/demo.py", script("scripts/demo.py"), [])
        add_ssd_detect_cases("ssd-detect", "ssd-mobilenet detect", SSD, ["detect", "--no-progress"])
        add_ssd_detect_cases("demo-ssd", "scripts/demo.py (SSD)", script("scripts/demo.py"), [])
        add_merge_variants()
        add_doctor_cases()
        add_generator_cases()
        add_convert_depthwise_cases()
        add_detect_faces_cases()
        add_train_faces_cases()
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return CASES


# ----------------------------------------------------------------------------- running and classifying
def _child_setup() -> None:
    """In the child: the memory limit, and SIGINT back to its default (a harness started in the background
    inherits it ignored, and Python would then never raise KeyboardInterrupt)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def classify(rc: int | None, stderr: str, timed_out: bool) -> str:
    """The raw outcome of one run (see the module docstring)."""
    if timed_out or "MemoryError" in stderr:
        return "runaway"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if rc is None or rc < 0 or rc in (134, 139):
        return "abort"
    if rc == 0:
        return "accepted"
    return "clean-error" if ERROR_LINE.search(stderr) else "unclear-error"


def verdict(c: Case, outcome: str, rc: int | None, output: str, tmp: Path, interrupted: bool) -> str:
    """``pass`` or the failing class of one run against what the case expects."""
    if outcome in ("abort", "traceback", "runaway", "unclear-error"):
        return outcome
    if c.expect == "interrupt":
        if not interrupted:
            return "pass"  # finished before the signal: nothing to judge
        ok = rc == 130 and re.search(r"(?i)interrupted", output) is not None
        return "pass" if ok else "not-interrupted-cleanly"
    leftovers = [p for p in c.absent if (tmp / p).exists()]
    if outcome == "clean-error" and leftovers:
        return "incomplete-output"
    if c.expect == "error":
        return "pass" if outcome == "clean-error" else "silent-wrong"
    if c.expect == "skips":
        if outcome == "accepted" and not SKIP_WORDS.search(output):
            return "silent-wrong"
        return "pass"
    if c.expect == "ok":
        return "pass" if outcome == "accepted" else "wrong-refusal"
    return "pass"


def run_case(c: Case, fx: Fixtures, keep: bool = False) -> Outcome:
    tmp = Path(tempfile.mkdtemp(prefix=f"fuzz_{c.id}_"))
    started = time.monotonic()
    try:
        try:
            argv = c.command + c.build(tmp, fx)
        except Exception as exc:  # a harness bug, not the CLI's
            return Outcome(c.id, c.cli, c.expect, "build-failed", "harness-error", None, 0.0, repr(exc))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
               "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        started = time.monotonic()  # the run itself, not the building of its input
        proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, preexec_fn=_child_setup, start_new_session=True)
        interrupted = timed_out = False
        try:
            if c.expect == "interrupt":
                try:
                    out, err = proc.communicate(timeout=c.interrupt_after)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGINT)
                    interrupted = True
                    out, err = proc.communicate(timeout=c.timeout)
            else:
                out, err = proc.communicate(timeout=c.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        rc = proc.returncode
        outcome = classify(None if timed_out else rc, stderr, timed_out)
        result = verdict(c, outcome, rc, stdout + stderr, tmp, interrupted)
        tail = "\n".join(stderr.strip().splitlines()[-6:])[-1500:]
        return Outcome(c.id, c.cli, c.expect, outcome, result, rc, round(time.monotonic() - started, 2), tail,
                       interrupted)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def run_cases(cases: list[Case], jobs: int = 2, progress: bool = True) -> list[Outcome]:
    """Run ``cases`` (``jobs`` at a time) with shared fixtures; outcomes in case order."""
    fixture_root = Path(tempfile.mkdtemp(prefix="fuzz_fixtures_"))
    fx = Fixtures(fixture_root)
    try:
        if any(c.cli.startswith(("prepare_data/gen_net_imdb", "mtcnn-caffe merge", "ssd-mobilenet merge", "scripts/merge"))
               for c in cases):
            fx.bn_model() if any("merge" in c.cli for c in cases) else None
            fx.packed_source() if any("gen_net_imdb" in c.cli for c in cases) else None
        if any(c.id.startswith(("ssd-detect-", "demo-ssd-")) for c in cases):  # built once, before the threads
            fx.ssd_model()
            fx.bn_model() if any(c.id == "ssd-detect-weights-other-net" for c in cases) else None
        results: list[Outcome] = []

        def one(c: Case) -> Outcome:
            result = run_case(c, fx)
            if progress:
                mark = "ok  " if result.verdict == "pass" else "FAIL"
                print(f"{mark} {result.id:45s} {result.outcome:13s} rc={result.rc} {result.seconds:6.1f}s "
                      f"{'' if result.verdict == 'pass' else result.verdict}", file=sys.stderr, flush=True)
            return result

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(one, cases))
        return results
    finally:
        shutil.rmtree(fixture_root, ignore_errors=True)


def summarise(results: list[Outcome]) -> dict:
    per_cli: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        per_cli[r.cli][r.outcome] += 1
        per_cli[r.cli]["FAIL" if r.verdict != "pass" else "pass"] += 1
    return {
        "cases": len(results),
        "outcomes": dict(Counter(r.outcome for r in results)),
        "verdicts": dict(Counter(r.verdict for r in results)),
        "per_cli": {k: dict(v) for k, v in sorted(per_cli.items())},
        "failures": [r.__dict__ for r in results if r.verdict != "pass"],
        "results": [r.__dict__ for r in results],
    }


def print_table(summary: dict) -> None:
    outcomes = ("accepted", "clean-error", "unclear-error", "abort", "traceback", "runaway")
    print(f"{'CLI':34s} " + " ".join(f"{o[:11]:>11s}" for o in outcomes) + "   pass   FAIL")
    for cli, counts in summary["per_cli"].items():
        print(f"{cli:34s} " + " ".join(f"{counts.get(o, 0):11d}" for o in outcomes)
              + f" {counts.get('pass', 0):6d} {counts.get('FAIL', 0):6d}")
    print(f"cases {summary['cases']}; outcomes {summary['outcomes']}; verdicts {summary['verdicts']}")
    for f in summary["failures"]:
        print(f"FAIL {f['id']} ({f['cli']}): expected {f['expect']}, got {f['outcome']} rc={f['rc']} -> {f['verdict']}")
        if f["stderr_tail"]:
            print("    " + f["stderr_tail"].replace("\n", "\n    ")[-600:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at the same time (default 2)")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="run only cases whose id contains one of these")
    parser.add_argument("--json", default="fuzz_report.json", help="JSON report path (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    args = parser.parse_args(argv)
    cases = build_cases()
    if args.only:
        cases = [c for c in cases if any(t in c.id for t in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.id:45s} {c.expect:9s} {c.cli}")
        print(f"{len(cases)} cases")
        return 0
    started = time.monotonic()
    results = run_cases(cases, args.jobs)
    summary = summarise(results)
    summary["seconds"] = round(time.monotonic() - started, 1)
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print_table(summary)
    print(f"{summary['seconds']} s; report: {args.json}")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
