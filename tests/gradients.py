"""Gradient-check helpers for Python loss layers in real Caffe: a one-layer net over Input blobs, the
finite-difference gradient of its ``loss`` top and Caffe's own backward pass."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .conftest import write_prototxt

#: The loss layer's ``loss_weight`` in :func:`python_loss_net`; Caffe scales the analytic gradient by it.
LOSS_WEIGHT = 0.5


def python_loss_net(tmp_path, caffe, module: str, layer: str, params: str,
                    inputs: Sequence[tuple[str, Sequence[int]]], name: str = "net.prototxt"):
    """A TRAIN net: an ``Input`` layer with ``inputs`` (``(blob, dims)`` in bottom order) feeding the Python
    layer ``module.layer`` (``param_str`` ``params``) whose top is ``loss``, weight :data:`LOSS_WEIGHT`."""
    tops = " ".join(f'top: "{blob}"' for blob, _ in inputs)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in dims) + " }" for _, dims in inputs)
    bottoms = " ".join(f'bottom: "{blob}"' for blob, _ in inputs)
    text = f"""
force_backward: true
layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}
layer {{ name: "loss" type: "Python" {bottoms} top: "loss" loss_weight: {LOSS_WEIGHT}
  python_param {{ module: "{module}" layer: "{layer}" param_str: '{params}' }} }}
"""
    return caffe.Net(write_prototxt(tmp_path, text, name), caffe.TRAIN)


def numeric_gradient(net, blob: str, eps: float = 1e-3) -> np.ndarray:
    """Central differences of the weighted loss with respect to every element of ``blob``."""
    data = net.blobs[blob].data
    grad = np.zeros(data.shape)
    for index in np.ndindex(*data.shape):
        original = float(data[index])
        data[index] = original + eps
        plus = float(net.forward()["loss"][0])
        data[index] = original - eps
        minus = float(net.forward()["loss"][0])
        data[index] = original
        grad[index] = (plus - minus) / (2 * eps) * LOSS_WEIGHT  # the top holds the unweighted loss
    return grad


def analytic_gradient(net, blob: str) -> np.ndarray:
    """Caffe's forward and backward pass: the diff of ``blob``."""
    net.forward()
    net.backward()
    return net.blobs[blob].diff.copy()


def central_differences(loss: Callable[[], float], values: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of ``loss()`` with respect to every element of ``values`` (a blob's data, changed in
    place and restored)."""
    numeric = np.zeros(values.shape)
    for index in np.ndindex(*values.shape):
        original = float(values[index])
        values[index] = original + eps
        plus = loss()
        values[index] = original - eps
        minus = loss()
        values[index] = original
        numeric[index] = (plus - minus) / (2 * eps)
    return numeric
