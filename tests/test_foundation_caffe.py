"""The foundation: real pycaffe built by `make setup` works (no mocks)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from caffe_common.doctor import REQUIRED_LAYERS
from caffe_common.env import cpu_flags, openblas_coretype, openblas_kernels
from tests.conftest import REPO_ROOT, write_prototxt


def test_caffe_has_required_layers(caffe):
    layers = set(caffe.layer_type_list())
    missing = [name for name in REQUIRED_LAYERS if name not in layers]
    assert not missing, f"Caffe lacks layers {missing}"


def test_openblas_kernel_choice_follows_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx", "avx2", "fma"}  # the first CPU's line
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert openblas_coretype(cpu_flags(cpuinfo)) == "Haswell"
    assert openblas_coretype(frozenset({"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq",
                                        "avx512vl"})) == "SkylakeX"
    assert openblas_coretype(frozenset({"sse2", "avx"})) is None  # OpenBLAS's own choice stays


def test_caffe_blas_runs_the_kernels_the_cpu_supports(caffe):
    # Debian 12's OpenBLAS falls back to its generic Prescott kernels on CPUs it does not know (4x slower
    # convolutions); import_caffe names the kernel set unless the environment chose one.
    best = openblas_coretype(cpu_flags())
    if best is None:
        pytest.skip("this CPU has neither AVX2 + FMA nor AVX-512: OpenBLAS's own choice is kept")
    assert openblas_kernels() not in (None, "Prescott")



def test_blas_kernels_are_those_of_caffes_own_openblas():
    # OpenCV's wheel bundles another OpenBLAS; imported first (as pytest's collection may), it picks its
    # kernels before import_caffe names them, and is not the copy Caffe calls. CI once read its Prescott.
    best = openblas_coretype(cpu_flags())
    if best is None:
        pytest.skip("this CPU has neither AVX2 + FMA nor AVX-512: OpenBLAS's own choice is kept")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = ("import cv2\n"
            "from caffe_common.env import import_caffe, openblas_kernels\n"
            "import_caffe()\n"
            "print(openblas_kernels())\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == best

PYTHON_LAYER_NET = """
name: "python_layer_net"
input: "data"
input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer {
  name: "square"
  type: "Python"
  bottom: "data"
  top: "sq"
  python_param { module: "tests.caffe_test_layers" layer: "SquareLayer" }
}
layer {
  name: "sum"
  type: "Reduction"
  bottom: "sq"
  top: "loss"
  loss_weight: 1
}
force_backward: true
"""


def test_python_layer_forward_and_backward(caffe, tmp_path):
    net = caffe.Net(write_prototxt(tmp_path, PYTHON_LAYER_NET), caffe.TEST)
    x = np.random.RandomState(0).randn(2, 3, 4, 5).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["sq"].data, x * x, rtol=1e-6)
    np.testing.assert_allclose(float(net.blobs["loss"].data), float((x * x).sum()), rtol=1e-5)
    net.backward()
    # d(sum x^2)/dx = 2x, computed by the Python layer's backward.
    np.testing.assert_allclose(net.blobs["data"].diff, 2 * x, rtol=1e-5)


def prior_count(feature: int, min_size: float, max_size: float | None, ratios: list[float], flip: bool) -> int:
    """Priors per feature map from the PriorBox rules: one per min size, one per max size,
    one per extra aspect ratio (and its reciprocal when flipped)."""
    extra = [r for r in ratios if abs(r - 1.0) > 1e-6]
    per_cell = 1 + (1 if max_size else 0) + len(extra) * (2 if flip else 1)
    return feature * feature * per_cell


PRIOR_NET = """
name: "priors"
input: "data"
input_shape { dim: 1 dim: 3 dim: 300 dim: 300 }
input: "f19"
input_shape { dim: 1 dim: 8 dim: 19 dim: 19 }
input: "f10"
input_shape { dim: 1 dim: 8 dim: 10 dim: 10 }
layer { name: "p19" type: "PriorBox" bottom: "f19" bottom: "data" top: "p19"
  prior_box_param { min_size: 60 aspect_ratio: 2 flip: true clip: false
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "p10" type: "PriorBox" bottom: "f10" bottom: "data" top: "p10"
  prior_box_param { min_size: 105 max_size: 150 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false
    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "cat" type: "Concat" bottom: "p19" bottom: "p10" top: "priors" concat_param { axis: 2 } }
"""


def test_prior_box_count(caffe, tmp_path):
    net = caffe.Net(write_prototxt(tmp_path, PRIOR_NET), caffe.TEST)
    net.forward()
    expected = prior_count(19, 60, None, [2], True) + prior_count(10, 105, 150, [2, 3], True)
    priors = net.blobs["priors"].data
    # PriorBox output: (1, 2, 4 * num_priors): coordinates, then variances.
    assert priors.shape == (1, 2, 4 * expected)
    boxes = priors[0, 0].reshape(-1, 4)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    np.testing.assert_allclose(priors[0, 1].reshape(-1, 4), np.tile([0.1, 0.1, 0.2, 0.2], (expected, 1)), rtol=1e-6)
    # First prior of the 19x19 map: a 60 px square centred on cell (0,0): centre 0.5*300/19.
    centre = 0.5 * 300 / 19
    np.testing.assert_allclose(boxes[0] * 300, [centre - 30, centre - 30, centre + 30, centre + 30], atol=1e-3)


def test_lmdb_datum_roundtrip_through_data_layer(caffe, tmp_path):
    import lmdb
    from caffe.proto import caffe_pb2

    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(5, 3, 6, 7)).astype(np.uint8)
    labels = [3, 1, 4, 1, 5]
    db_path = tmp_path / "db"
    env = lmdb.open(str(db_path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(zip(images, labels)):
            datum = caffe_pb2.Datum(channels=3, height=6, width=7, data=img.tobytes(), label=label)
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    env.close()
    net_text = f"""
name: "lmdb_reader"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "{db_path}" backend: LMDB batch_size: 5 }} }}
"""
    net = caffe.Net(write_prototxt(tmp_path, net_text), caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, images.astype(np.float32))
    np.testing.assert_array_equal(net.blobs["label"].data, np.array(labels, dtype=np.float32))
