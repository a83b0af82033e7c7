"""An independent numpy forward pass of torchvision's MobileNetV2 (width 1.0), straight from its state_dict.

Written from the architecture (Sandler et al. 2018, torchvision's ``mobilenet_v2``), not from the Caffe
net, so that the converted Caffe classifier can be checked against it: float64 throughout, direct
convolution over im2col windows (``sliding_window_view`` + ``einsum``), inference BatchNorm with eps
1e-5, ReLU6, the residual adds, the global mean and the final Linear.

torchvision's module layout: ``features.0`` = (conv 3x3/2, BN, ReLU6); ``features.1..17`` are inverted
residual blocks whose ``conv`` Sequential holds (when the expansion t != 1) ``0`` = (1x1 conv, BN, ReLU6),
then (3x3 depthwise conv, BN, ReLU6), then the linear 1x1 conv and its BN; ``features.18`` = (1x1 conv,
BN, ReLU6); ``classifier`` = (Dropout, Linear).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# (t, c, n, s) of Sandler et al.'s Table 2, as torchvision has it.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
EPS = 1e-5


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, groups: int = 1) -> np.ndarray:
    """Cross-correlation of ``x`` (C, H, W) with ``weight`` (O, C / groups, k, k), zero padding k // 2."""
    channels = x.shape[0]
    out_channels, per_group, k, _ = weight.shape
    assert per_group * groups == channels and out_channels % groups == 0
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # C, Ho, Wo, k, k
    height, width = windows.shape[1:3]
    grouped = windows.reshape(groups, per_group, height, width, k, k)
    kernels = weight.reshape(groups, out_channels // groups, per_group, k, k)
    out = np.einsum("gchwij,gocij->gohw", grouped, kernels, optimize=True)
    return out.reshape(out_channels, height, width)


def batch_norm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """Inference BatchNorm of module ``prefix`` on (C, H, W)."""
    mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
    gamma, beta = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
    scale = gamma / np.sqrt(var + EPS)
    return x * scale[:, None, None] + (beta - mean * scale)[:, None, None]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def conv_bn(x: np.ndarray, state: dict[str, np.ndarray], conv: str, bn: str, stride: int = 1,
            depthwise: bool = False) -> np.ndarray:
    weight = state[f"{conv}.weight"]
    return batch_norm(conv2d(x, weight, stride, x.shape[0] if depthwise else 1), state, bn)


def block(x: np.ndarray, state: dict[str, np.ndarray], index: int, expand: int, out_channels: int,
          stride: int) -> np.ndarray:
    """Inverted residual ``features.<index>``."""
    p = f"features.{index}.conv"
    h = x
    k = 0
    if expand != 1:
        h = relu6(conv_bn(h, state, f"{p}.0.0", f"{p}.0.1"))
        k = 1
    h = relu6(conv_bn(h, state, f"{p}.{k}.0", f"{p}.{k}.1", stride, depthwise=True))
    h = conv_bn(h, state, f"{p}.{k + 1}", f"{p}.{k + 2}")
    if stride == 1 and x.shape[0] == out_channels:
        h = h + x
    return h


def forward(state: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Logits ``(N, 1000)`` of normalised RGB ``images`` ``(N, 3, H, W)``."""
    params = {k: v.astype(np.float64) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    out = []
    for image in np.asarray(images, np.float64):
        h = relu6(conv_bn(image, params, "features.0.0", "features.0.1", stride=2))
        index = 1
        for t, c, n, s in SETTINGS:
            for i in range(n):
                h = block(h, params, index, t, c, s if i == 0 else 1)
                index += 1
        h = relu6(conv_bn(h, params, f"features.{index}.0", f"features.{index}.1"))
        pooled = h.mean(axis=(1, 2))
        out.append(params["classifier.1.weight"] @ pooled + params["classifier.1.bias"])
    return np.stack(out)
