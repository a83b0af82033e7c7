"""gen_net_imdb: ratio mixing, the LMDB record format (round trip, resume, never a half LMDB that
looks complete), the imdb pickles, and the prepare_data scripts end to end."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtcnn_caffe.data import pack
from mtcnn_caffe.data.landmarks import LandmarkParams
from mtcnn_caffe.data.lmdb_io import RecordReader
from mtcnn_caffe.data.pipeline import open_sample_dir
from mtcnn_caffe.data.records import LABELS, decode_records, record_dtype, samples_to_records
from mtcnn_caffe.data.tasks import LandmarkTask, WiderCropTask, generate
from mtcnn_caffe.data.wider import CropParams

from .test_data_samples import make_landmarks, make_wider

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample_dirs(tmp_path_factory):
    """12x12 random crops and landmark samples of the synthetic sets."""
    root = tmp_path_factory.mktemp("packdata")
    anno, images = make_wider(root / "wider")
    lst, lm_root = make_landmarks(root / "lm", count=6)
    generate(WiderCropTask(anno, images, 12, CropParams()), root / "w12", seed=0, jobs=1, progress=False,
             chunk_images=2)
    generate(LandmarkTask(lst, lm_root, 12, LandmarkParams()), root / "l12", seed=0, jobs=1, progress=False)
    return root / "w12", root / "l12"


def _source_records(dirs) -> dict[bytes, int]:
    """record bytes -> how many times they occur in the generator outputs."""
    table: dict[bytes, int] = {}
    for d in dirs:
        for samples in open_sample_dir(d).iter_samples():
            for rec in samples_to_records(samples):
                key = rec.tobytes()
                table[key] = table.get(key, 0) + 1
    return table


def test_plan_counts_follow_ratio_and_explain_missing_types():
    available = {"neg": 1000, "pos": 100, "part": 300, "landmark": 150}
    counts = pack.plan_counts(available, pack.parse_ratio("3:1:1:2"))
    assert counts == {"neg": 225, "pos": 75, "part": 75, "landmark": 150}  # landmark binds: 150/2 = 75 units
    assert pack.plan_counts(available, pack.parse_ratio("3:1:1:2"), limit=70) == \
        {"neg": 30, "pos": 10, "part": 10, "landmark": 20}
    assert pack.plan_counts(available, None) == available
    with pytest.raises(ValueError, match="landmark.*--ratio 3:1:1:0"):
        pack.plan_counts({**available, "landmark": 0}, pack.parse_ratio("3:1:1:2"))
    with pytest.raises(ValueError, match="NEG:POS:PART:LANDMARK"):
        pack.parse_ratio("3:1")


def test_pack_lmdb_round_trip_and_imdb(sample_dirs, tmp_path):
    stats = pack.pack_stage(12, sample_dirs, tmp_path / "p12", ratio="3:1:1:2", seed=3, imdb=True, progress=False)
    counts = {k: stats[k] for k in LABELS}
    unit = stats["total"] / 7
    for name, r in (("neg", 3), ("pos", 1), ("part", 1), ("landmark", 2)):
        assert abs(counts[name] - r * unit) <= r  # floor of the binding type only
    assert min(counts.values()) > 0
    source = _source_records(sample_dirs)
    with RecordReader(tmp_path / "p12") as reader:  # the output dir or the LMDB itself
        assert reader.size == 12 and len(reader) == stats["total"]
        assert reader.meta["counts"] == counts and reader.meta["record_bytes"] == record_dtype(12).itemsize
        records = reader.read(0, len(reader))
        wrapped = reader.read(len(reader) - 2, 5)
    seen: dict[bytes, int] = {}
    for rec in records:  # every record is a generated sample, none used more often than it exists
        key = rec.tobytes()
        seen[key] = seen.get(key, 0) + 1
        assert seen[key] <= source.get(key, 0)
    assert {k: int((records["label"] == v).sum()) for k, v in LABELS.items()} == counts
    np.testing.assert_array_equal(wrapped[:2], records[-2:])
    np.testing.assert_array_equal(wrapped[2:], records[:3])
    assert not (records["label"][:50] == records["label"][0]).all()  # shuffled, not grouped by type
    # same seed -> same LMDB
    pack.pack_stage(12, sample_dirs, tmp_path / "again", ratio="3:1:1:2", seed=3, progress=False)
    with RecordReader(tmp_path / "again") as reader:
        np.testing.assert_array_equal(reader.read(0, len(reader)), records)
    # imdb pickles: the seed's three lists, our crop convention
    cls = pickle.loads((tmp_path / "p12" / "cls.imdb").read_bytes())
    roi = pickle.loads((tmp_path / "p12" / "roi.imdb").read_bytes())
    pts = pickle.loads((tmp_path / "p12" / "pts.imdb").read_bytes())
    assert len(cls) == counts["neg"] + counts["pos"] and len(roi) == counts["pos"] + counts["part"]
    assert len(pts) == counts["landmark"]
    crop, label, target = pts[0]
    assert crop.shape == (12, 12, 3) and crop.dtype == np.uint8 and label == -2 and target.shape == (10,)
    assert {c[1] for c in roi} == {1, -1} and {c[1] for c in cls} == {0, 1}


def test_interrupted_pack_resumes_and_never_looks_complete(sample_dirs, tmp_path, monkeypatch):
    pack.pack_stage(12, sample_dirs, tmp_path / "ref", ratio="all", seed=1, progress=False)
    with RecordReader(tmp_path / "ref") as reader:
        reference = reader.read(0, len(reader))
    real_read = pack.read_planned
    out = tmp_path / "out"

    def interrupted_run() -> None:
        calls = {"n": 0}

        def failing_read(plan, start, stop):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # the user presses Ctrl-C in the middle
            return real_read(plan, start, stop)

        monkeypatch.setattr(pack, "read_planned", failing_read)
        with pytest.raises(KeyboardInterrupt):
            plan = pack.make_plan([open_sample_dir(d) for d in sample_dirs], None, 1, None)
            pack.write_lmdb(plan, out, block=100, progress=False)
        monkeypatch.setattr(pack, "read_planned", real_read)
        assert not (out / "data.lmdb").exists() and (out / "data.lmdb.partial").is_dir()

    plan_args = dict(ratio="all", seed=1, progress=False)
    interrupted_run()
    with pytest.raises((FileNotFoundError, ValueError)):
        RecordReader(out / "data.lmdb.partial")  # no meta record: not mistaken for a finished LMDB
    stats = pack.pack_stage(12, sample_dirs, out, overwrite=True, **plan_args)
    assert stats["records_written_this_run"] == len(reference)  # --overwrite: the partial copy was discarded
    shutil.rmtree(out / "data.lmdb")
    interrupted_run()
    stats = pack.pack_stage(12, sample_dirs, out, **plan_args)
    assert stats["records_written_this_run"] == len(reference) - 200  # two blocks of 100 were kept
    assert not (out / "data.lmdb.partial").exists()
    with RecordReader(out) as reader:
        np.testing.assert_array_equal(reader.read(0, len(reader)), reference)


def test_pack_refuses_wrong_stage_and_incomplete_dirs(sample_dirs, tmp_path):
    with pytest.raises(ValueError, match="12x12 samples, not 24x24"):
        pack.pack_stage(24, sample_dirs, tmp_path / "x", progress=False)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not a sample directory"):
        pack.pack_stage(12, [tmp_path / "plain"], tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="nothing to write"):
        pack.pack_stage(12, sample_dirs, tmp_path / "x", lmdb=False, imdb=False, progress=False)
    assert not (tmp_path / "x" / "stats.json").exists()


def test_decode_records_is_a_view_of_concatenated_values():
    dtype = record_dtype(24)
    recs = np.zeros(3, dtype)
    recs["label"] = [1, 0, -2]
    recs["landmark"][2] = np.linspace(0, 1, 10)
    recs["image"][1] = 7
    back = decode_records(b"".join(r.tobytes() for r in recs), 24)
    np.testing.assert_array_equal(back, recs)
    with pytest.raises(ValueError, match="whole number"):
        decode_records(b"\0" * (dtype.itemsize + 1), 24)


def test_prepare_data_scripts_end_to_end(tmp_path):
    """The thin CLIs with the issue's exact options, -j 2, then gen_net_imdb."""
    anno, images = make_wider(tmp_path / "wider")
    lst, lm_root = make_landmarks(tmp_path / "lm")
    py = [sys.executable]
    common = ["--seed", "4", "--no-progress"]
    run = lambda *args: subprocess.run(py + list(args), cwd=REPO, capture_output=True, text=True)  # noqa: E731
    r = run("prepare_data/gen_24net_data.py", "--anno", str(anno), "--images", str(images), "--out",
            str(tmp_path / "w24"), "--limit", "3", "-j", "2", *common)
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "w24" / "stats.json").read_text())
    assert stats["images"] == 3 and stats["failed_images"] == 1  # the first 3 include the missing image
    r = run("prepare_data/gen_landmark_data.py", "--list", str(lst), "--images", str(lm_root), "--size", "24",
            "--out", str(tmp_path / "l24"), "-j", "1", *common)
    assert r.returncode == 0, r.stderr
    assert "list.txt:5" in r.stderr  # the unparsable line is reported with file:line
    r = run("prepare_data/gen_net_imdb.py", "--stage", "24", "--data", str(tmp_path / "w24"), str(tmp_path / "l24"),
            "--out", str(tmp_path / "p24"), "--ratio", "3:1:1:2", *common)
    assert r.returncode == 0, r.stderr
    packed = json.loads((tmp_path / "p24" / "stats.json").read_text())
    assert packed["landmark"] > 0 and packed["failed_images"] == 1
    with RecordReader(tmp_path / "p24") as reader:
        assert reader.size == 24 and len(reader) == packed["total"]
    r = run("prepare_data/gen_net_imdb.py", "--stage", "12", "--data", str(tmp_path / "w24"), "--out",
            str(tmp_path / "bad"), *common)
    assert r.returncode != 0 and "24x24 samples, not 12x12" in r.stderr
