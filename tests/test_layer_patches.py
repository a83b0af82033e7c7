"""Caffe's layers that the project's patch rewrites for speed on the CPU, in real Caffe, against their definitions
(scripts/caffe_build/patches/apply_patches.py):

* PReLU (PRELU_EDITS, plane by plane): forward, both gradients and in-place use, against
  ``y = max(x, 0) + a_c * min(x, 0)`` and against finite differences;
* max pooling (MAX_POOL_EDITS, the running maximum in locals): outputs, the argmax mask (the first maximum in
  row-major order wins a tie) and the backward pass, which routes each output's gradient to its argmax."""
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


# --------------------------------------------------------------------------- max pooling
def max_pool_net(caffe, tmp_path, shape, pool: str, top_mask: bool):
    """Input -> max pooling; with ``top_mask`` the argmax is a second top, else Caffe keeps it inside the layer."""
    dims = " ".join(f"dim: {d}" for d in shape)
    mask = 'top: "mask"' if top_mask else ""
    text = f"""force_backward: true
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y" {mask} pooling_param {{ pool: MAX {pool} }} }}
"""
    return caffe.Net(write_prototxt(tmp_path, text), caffe.TRAIN)


def max_pool_reference(x: np.ndarray, out_hw: tuple[int, int], kernel: int, stride: int, pad: int):
    """Each output's maximum and the flat index (h * width + w) of its first maximum in row-major order, over
    the window clipped to the image, as Caffe defines max pooling."""
    n, c, height, width = x.shape
    y = np.empty((n, c) + out_hw, x.dtype)
    mask = np.empty((n, c) + out_hw, np.int64)
    for ph, pw in np.ndindex(*out_hw):
        h0, w0 = ph * stride - pad, pw * stride - pad
        h1, w1 = min(h0 + kernel, height), min(w0 + kernel, width)
        h0, w0 = max(h0, 0), max(w0, 0)
        window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
        first = window.argmax(axis=2)  # numpy's argmax returns the first maximum too
        y[:, :, ph, pw] = np.take_along_axis(window, first[..., None], axis=2)[..., 0]
        mask[:, :, ph, pw] = (h0 + first // (w1 - w0)) * width + w0 + first % (w1 - w0)
    return y, mask


@pytest.mark.parametrize("top_mask", [True, False])
@pytest.mark.parametrize("shape, kernel, stride, pad, ceil", [
    ((2, 3, 11, 9), 3, 2, 0, True),    # MTCNN's pools: overlapping windows, the last one cut by the border
    ((2, 3, 10, 10), 2, 2, 0, True),
    ((1, 2, 7, 8), 3, 2, 1, False),    # padding
    ((1, 2, 6, 5), 3, 1, 0, True),
])
def test_max_pooling_equals_its_definition(caffe, tmp_path, shape, kernel, stride, pad, ceil, top_mask):
    net = max_pool_net(caffe, tmp_path, shape, f"kernel_size: {kernel} stride: {stride} pad: {pad} "
                                               f"ceil_mode: {str(ceil).lower()}", top_mask)
    rng = np.random.default_rng(sum(shape) + kernel)
    x = rng.integers(-3, 4, shape).astype(np.float32)  # small integers: many ties inside a window
    net.blobs["x"].data[...] = x
    out = net.forward()
    y, mask = max_pool_reference(x, out["y"].shape[2:], kernel, stride, pad)
    np.testing.assert_array_equal(out["y"], y)
    if top_mask:
        np.testing.assert_array_equal(out["mask"], mask)
    dy = rng.normal(size=y.shape).astype(np.float32)
    net.blobs["y"].diff[...] = dy
    net.backward()
    dx = np.zeros(x.shape)
    for (b, ch, ph, pw), index in np.ndenumerate(mask):
        dx[b, ch].flat[index] += dy[b, ch, ph, pw]  # overlapping windows add up
    np.testing.assert_allclose(net.blobs["x"].diff, dx, rtol=1e-6, atol=1e-6)
