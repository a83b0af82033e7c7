"""Caffe's PReLU layer as the project's patch computes it on the CPU (plane by plane,
scripts/caffe_build/patches/apply_patches.py PRELU_EDITS): forward, both gradients and in-place use, in real
Caffe, against the definition ``y = max(x, 0) + a_c * min(x, 0)`` and against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from .conftest import write_prototxt
from .gradients import central_differences

#: (input shape, channel_shared): 4-D maps as in P/R/O-Net's convolutions, 2-D as after O-Net's InnerProduct,
#: a plane of one element, and one slope shared by all channels.
CASES = [((3, 4, 5, 7), False), ((5, 6), False), ((2, 3, 1, 1), False), ((2, 3, 4, 5), True)]


def prelu_net(caffe, tmp_path, shape, shared: bool, in_place: bool):
    dims = " ".join(f"dim: {d}" for d in shape)
    top = "x" if in_place else "y"
    text = f"""force_backward: true
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "prelu" type: "PReLU" bottom: "x" top: "{top}"
  prelu_param {{ channel_shared: {str(shared).lower()} }} }}
"""
    net = caffe.Net(write_prototxt(tmp_path, text), caffe.TRAIN)
    rng = np.random.default_rng(len(shape) + 10 * shared)
    net.params["prelu"][0].data[...] = rng.uniform(-0.5, 1.5, net.params["prelu"][0].data.shape)
    return net, top


def expected(x: np.ndarray, slopes: np.ndarray, dy: np.ndarray, shared: bool):
    """The definition in float64: output, input gradient, slope gradient."""
    a = np.full(x.shape[1], slopes.reshape(-1)[0]) if shared else slopes  # shared: a blob of no axes
    a = a.reshape((1, -1) + (1,) * (x.ndim - 2)).astype(np.float64)
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    negative = x <= 0
    y = np.maximum(x, 0) + a * np.minimum(x, 0)
    dx = dy * np.where(negative, a, 1.0)
    per_channel = (dy * x * negative).sum(axis=tuple(k for k in range(x.ndim) if k != 1))
    return y, dx, (per_channel.sum() if shared else per_channel).reshape(slopes.shape)


def run(net, top: str, x: np.ndarray, dy: np.ndarray):
    net.params["prelu"][0].diff[...] = 0
    net.blobs["x"].data[...] = x
    y = net.forward()[top].copy()
    net.blobs[top].diff[...] = dy
    net.backward()
    return y, net.blobs["x"].diff.copy(), net.params["prelu"][0].diff.copy()


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("shape, shared", CASES)
def test_prelu_equals_its_definition(caffe, tmp_path, shape, shared, in_place):
    net, top = prelu_net(caffe, tmp_path, shape, shared, in_place)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    x.flat[::7] = 0  # the x <= 0 side of the kink
    dy = rng.normal(size=shape).astype(np.float32)
    y, dx, da = run(net, top, x, dy)
    want_y, want_dx, want_da = expected(x, net.params["prelu"][0].data, dy, shared)
    np.testing.assert_allclose(y, want_y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(da, want_da, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, shared", CASES[:2] + CASES[3:])
def test_prelu_gradients_match_finite_differences(caffe, tmp_path, shape, shared):
    # loss = sum(y * G) is piecewise linear: with every |x| >= 0.1 and steps of 1e-2 no difference crosses the
    # kink, so central differences are exact up to float rounding.
    net, top = prelu_net(caffe, tmp_path, shape, shared, in_place=False)
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    dy = rng.normal(size=shape)
    _, dx, da = run(net, top, x, dy)

    def loss() -> float:
        return float(np.sum(net.forward()[top].astype(np.float64) * dy))

    eps = 1e-2
    for name, values, analytic in (("x", net.blobs["x"].data, dx), ("slope", net.params["prelu"][0].data, da)):
        numeric = central_differences(loss, values, eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-3, err_msg=name)
