"""MobileNetV2 in Caffe: the .pth reader, the net builder and torchvision's ImageNet weights converted.

The converted Caffe classifier is compared with an independent numpy forward pass of the same
state_dict (``tests/mobilenet_v2_reference.py``). The ``.pth`` reader is checked on files written by real
PyTorch when it is importable; otherwise (this project does not depend on torch) on files built here
byte for byte in both of PyTorch's layouts (zip, and the legacy one torchvision's weights use) —
``_torch_available()`` says which ran. The real torchvision file is read in every case.
"""
from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from caffe_common.torch_weights import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    TorchWeightsError,
    load_state_dict,
)
from ssd_mobilenet import mobilenet_v2 as mv2
from tests import mobilenet_v2_reference as reference

#: A VOC photo whose only object is a dog, and ImageNet's dog classes (151 .. 268).
DOG_PHOTO = "data/voc_mini/JPEGImages/003194.jpg"
DOG_CLASSES = range(151, 269)
#: torchvision's count of MobileNetV2's learnable parameters (convolutions, BN weight/bias, classifier).
TORCHVISION_PARAMETERS = 3_504_872


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# --------------------------------------------------------------------------- .pth files written here
class _Global:
    """A ``module.name`` global as a pickle names it (``GLOBAL`` opcode), without importing the module."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __reduce__(self) -> str:
        return self.name

    def __call__(self, *args):  # pickle only pickles callables as reduce functions; never called
        raise NotImplementedError(f"{self.module}.{self.name}")


class _Storage:
    def __init__(self, key: str, array: np.ndarray, legacy_view: tuple[str, int, int] | None = None) -> None:
        self.key, self.array, self.legacy_view = key, array, legacy_view


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return _Global("torch._utils", "_rebuild_tensor_v2"), self.args


class _Call:
    """Any ``module.name(*args)`` in a pickle (for a file that tries to run something)."""

    def __init__(self, module: str, name: str, *args) -> None:
        self.func, self.args = _Global(module, name), args

    def __reduce__(self):
        return self.func, self.args


_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float16"): "HalfStorage",
                  np.dtype("int64"): "LongStorage"}


class _TorchLikePickler(pickle._Pickler):
    """Protocol-2 pickler writing globals by name and storages as persistent ids, as torch.save does."""

    def __init__(self, file, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        kind = _Global("torch", _STORAGE_NAMES[obj.array.dtype])
        if self.legacy:
            return ("storage", kind, obj.key, "cpu", obj.array.size, obj.legacy_view)
        return ("storage", kind, obj.key, "cpu", obj.array.size)

    def save_global(self, obj, name=None):
        if not isinstance(obj, _Global):
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)


def _pickled(obj, legacy: bool) -> bytes:
    stream = io.BytesIO()
    _TorchLikePickler(stream, legacy).dump(obj)
    return stream.getvalue()


def _storages(obj) -> list[_Storage]:
    values = obj.values() if isinstance(obj, dict) else []
    return list({id(v.args[0]): v.args[0] for v in values if isinstance(v, _Tensor)}.values())


def write_zip_pth(path: Path, obj) -> Path:
    """``obj`` (built from :class:`_Tensor`) in torch.save's zip layout."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _pickled(obj, legacy=False))
        archive.writestr("archive/byteorder", "little")
        for storage in _storages(obj):
            archive.writestr(f"archive/data/{storage.key}", storage.array.astype(storage.array.dtype.newbyteorder("<"))
                             .tobytes())
        archive.writestr("archive/version", "3\n")
    return path


def write_legacy_pth(path: Path, obj) -> Path:
    """``obj`` in torch.save's legacy layout (magic, protocol, sys info, object, keys, storages)."""
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    parts = [pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info)]
    parts.append(_pickled(obj, legacy=True))
    storages = _storages(obj)
    parts.append(pickle.dumps([s.key for s in storages], protocol=2))
    for storage in storages:
        parts.append(struct.pack("<q", storage.array.size) + storage.array.astype(storage.array.dtype.newbyteorder("<"))
                     .tobytes())
    path.write_bytes(b"".join(parts))
    return path


def _strided(base: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    item = base.dtype.itemsize
    return np.lib.stride_tricks.as_strided(base[offset:], size, tuple(s * item for s in stride)).copy()


#: name -> (storage key, storage offset, size, stride): contiguous, transposed, offset views sharing
#: one storage, a 0-d tensor and an empty one.
LAYOUT = {"w": ("0", 0, (2, 3), (3, 1)), "w_t": ("0", 0, (3, 2), (1, 3)), "tail": ("0", 2, (2, 2), (2, 1)),
          "half": ("1", 1, (3,), (1,)), "count": ("2", 0, (), ()), "empty": ("1", 0, (0, 4), (4, 1))}


def _layout_storages() -> dict[str, np.ndarray]:
    return {"0": np.arange(10, dtype=np.float32) * 0.5 - 1, "1": np.array([1, 2.5, -3, 4], np.float16),
            "2": np.array([1431430], np.int64)}


def expected_layout() -> dict[str, np.ndarray]:
    storages = _layout_storages()
    return {name: _strided(storages[key], off, size, stride) for name, (key, off, size, stride) in LAYOUT.items()}


def write_layout_pth(path: Path, legacy: bool) -> Path:
    """:data:`LAYOUT` saved by real torch when importable, else built by hand (same on-disk layout)."""
    if _torch_available():  # pragma: no cover - torch is not a dependency of this project
        import torch

        bases = {k: torch.from_numpy(v) for k, v in _layout_storages().items()}
        state = collections.OrderedDict((name, torch.as_strided(bases[key], size, stride, off))
                                        for name, (key, off, size, stride) in LAYOUT.items())
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        return path
    storages = {k: _Storage(k, v) for k, v in _layout_storages().items()}
    state = collections.OrderedDict((name, _Tensor(storages[key], off, size, stride))
                                    for name, (key, off, size, stride) in LAYOUT.items())
    state._metadata = {"": {"version": 1}}  # as nn.Module.state_dict() sets it (pickled as BUILD)
    return (write_legacy_pth if legacy else write_zip_pth)(path, state)


# --------------------------------------------------------------------------- the .pth reader
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pth_reader_honours_offset_size_stride_and_dtype(tmp_path, legacy):
    arrays = load_state_dict(write_layout_pth(tmp_path / "small.pth", legacy))
    expected = expected_layout()
    assert list(arrays) == list(expected)
    for name, value in expected.items():
        assert arrays[name].dtype == value.dtype and arrays[name].shape == value.shape, name
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)
    assert all(a.flags.owndata and a.flags.writeable for a in arrays.values())  # copies, not views of the file


def test_pth_reader_reads_legacy_storage_views(tmp_path):
    root = np.arange(8, dtype=np.float32)
    whole = _Storage("r", root)
    view = _Storage("r", root, legacy_view=("v", 3, 4))  # storage[3:7] under key "v"
    state = collections.OrderedDict(a=_Tensor(whole, 0, (8,), (1,)), b=_Tensor(view, 1, (2,), (2,)))
    path = tmp_path / "views.pth"
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {}}
    header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info))
    body = _pickled(state, legacy=True) + pickle.dumps(["r"], protocol=2) + struct.pack("<q", 8) + root.tobytes()
    path.write_bytes(header + body)
    arrays = load_state_dict(path)
    np.testing.assert_array_equal(arrays["a"], root)
    np.testing.assert_array_equal(arrays["b"], [4, 6])


@pytest.mark.parametrize("writer", [write_zip_pth, write_legacy_pth], ids=["zip", "legacy"])
def test_pth_reader_refuses_other_globals_naming_the_file(tmp_path, writer):
    path = writer(tmp_path / "evil.pth", collections.OrderedDict(x=_Call("os", "system", "echo pwned")))
    with pytest.raises(TorchWeightsError, match=r"evil\.pth.*refusing global os\.system"):
        load_state_dict(path)


def test_pth_reader_rejects_a_checkpoint_that_is_not_a_flat_state_dict(tmp_path):
    inner = collections.OrderedDict(w=_Tensor(_Storage("0", np.zeros(2, np.float32)), 0, (2,), (1,)))
    path = write_zip_pth(tmp_path / "ckpt.pth", {"epoch": 3, "state_dict": inner})
    with pytest.raises(TorchWeightsError, match=r"ckpt\.pth: entry 'epoch'.*not a plain state_dict"):
        load_state_dict(path)


def test_pth_reader_errors_name_the_file(tmp_path):
    good = write_layout_pth(tmp_path / "good.pth", legacy=True)
    cases = {
        "missing.pth": None,
        "random.pth": np.random.default_rng(0).bytes(4096),
        "empty.pth": b"",
        "truncated.pth": good.read_bytes()[:-7],
        "text.pth": b"not a model\n",
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(TorchWeightsError, match=rf"{name.replace('.', '[.]')}: "):
            load_state_dict(tmp_path / name)
    zipped = write_layout_pth(tmp_path / "z.pth", legacy=False)
    with zipfile.ZipFile(zipped) as src, zipfile.ZipFile(tmp_path / "nodata.pth", "w") as dst:
        for item in src.namelist():
            if "/data/" not in item:
                dst.writestr(item, src.read(item))
    if not _torch_available():  # real torch names its archive folder differently
        with pytest.raises(TorchWeightsError, match=r"nodata\.pth: storage file archive/data/0 is missing"):
            load_state_dict(tmp_path / "nodata.pth")


# --------------------------------------------------------------------------- the real weights
@pytest.fixture(scope="module")
def pth_path() -> Path:
    from caffe_common.assets import AssetError, asset_path

    try:
        return asset_path(*mv2.IMAGENET_ASSET)
    except AssetError as exc:  # pragma: no cover - only without network and without `make setup`
        pytest.skip(f"torchvision MobileNetV2 weights unavailable: {exc}")


@pytest.fixture(scope="module")
def state(pth_path) -> dict[str, np.ndarray]:
    return load_state_dict(pth_path)


def test_torchvision_weights_load_with_the_expected_keys_and_shapes(state):
    assert len(state) == 314  # 52 convolutions, 52 BatchNorms (5 entries each), classifier weight and bias
    shapes = {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
              "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.0.0.weight": (96, 16, 1, 1),
              "features.17.conv.2.weight": (320, 960, 1, 1), "features.18.0.weight": (1280, 320, 1, 1),
              "features.18.1.running_var": (1280,), "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,),
              "features.0.1.num_batches_tracked": ()}
    for key, shape in shapes.items():
        assert state[key].shape == shape, key
    assert all(v.dtype == np.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))
    learnable = sum(v.size for k, v in state.items() if k.endswith((".weight", ".bias")))
    assert learnable == TORCHVISION_PARAMETERS


# --------------------------------------------------------------------------- the Caffe net
@pytest.fixture(scope="module")
def converted(caffe, pth_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("mobilenet_v2")
    prototxt, caffemodel = out / "deploy.prototxt", out / "mobilenet_v2.caffemodel"
    mv2.convert_imagenet_weights(pth_path, prototxt, caffemodel)
    return prototxt, caffemodel, caffe.Net(str(prototxt), str(caffemodel), caffe.TEST)


def _caffe_logits(net, images: np.ndarray) -> np.ndarray:
    net.blobs["data"].reshape(*images.shape)
    net.reshape()
    net.blobs["data"].data[...] = images
    return net.forward()["classifier"].copy()


def _compare(caffe_logits: np.ndarray, ref_logits: np.ndarray, what: str) -> None:
    diff = np.abs(caffe_logits - ref_logits)
    rel = diff.max() / np.abs(ref_logits).max()
    print(f"\n{what}: max |logit diff| {diff.max():.3g}, relative to max |logit| {rel:.3g}, "
          f"top-1 caffe {caffe_logits.argmax(1)} reference {ref_logits.argmax(1)}")
    assert rel < 1e-4, f"{what}: max abs diff {diff.max():.3g}, relative {rel:.3g}"
    np.testing.assert_array_equal(caffe_logits.argmax(1), ref_logits.argmax(1))


def test_converted_logits_equal_the_numpy_reference_on_random_inputs(converted, state):
    images = np.random.default_rng(13).normal(0.0, 1.0, (2, 3, 224, 224)).astype(np.float32)
    _compare(_caffe_logits(converted[2], images), reference.forward(state, images), "random inputs")


@pytest.mark.shared
def test_converted_logits_equal_the_reference_on_a_photo(converted, state, shared_dir):
    from caffe_common.images import read_image

    photo = shared_dir / DOG_PHOTO
    if not photo.is_file():
        pytest.skip(f"needs the VOC photo {photo}")
    images = mv2.imagenet_input(read_image(photo))
    ref_logits = reference.forward(state, images)
    _compare(_caffe_logits(converted[2], images), ref_logits, f"photo {photo.name}")
    assert ref_logits[0].argmax() in DOG_CLASSES  # the weights are ImageNet's: VOC's dog is an ImageNet dog


def test_opencv_dnn_loads_the_deploy_net_with_the_same_logits(converted):
    import cv2

    prototxt, caffemodel, net = converted
    images = np.random.default_rng(5).normal(0.0, 1.0, (1, 3, 224, 224)).astype(np.float32)
    dnn = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))  # standard layers only
    dnn.setInput(images)
    opencv_logits = dnn.forward("classifier")
    caffe_logits = _caffe_logits(net, images)
    assert np.abs(opencv_logits - caffe_logits).max() < 1e-4 * np.abs(caffe_logits).max()


def test_prototxt_is_the_builders_with_torchvision_structure(caffe, converted):
    from caffe_common.model_files import read_net_prototxt

    prototxt, _, net = converted
    assert prototxt.read_text() == mv2.imagenet_deploy_prototxt()
    layers = list(read_net_prototxt(prototxt).layer)
    types = collections.Counter(layer.type for layer in layers)
    assert (types["Convolution"], types["BatchNorm"], types["Scale"]) == (52, 52, 52)
    assert (types["ReLU6"], types["Eltwise"], types["InnerProduct"], types["Pooling"]) == (35, 10, 1, 1)
    assert types["Dropout"] == 0
    for layer in layers:
        if layer.type == "BatchNorm":
            assert layer.batch_norm_param.use_global_stats and abs(layer.batch_norm_param.eps - 1e-5) < 1e-12
        if layer.name.endswith("/dw") and layer.type == "Convolution":
            assert layer.convolution_param.group == layer.convolution_param.num_output > 1
    learnable = sum(net.params[name][k].data.size for name in net.params
                    for k in range(len(net.params[name])) if not name.endswith("/bn"))
    assert learnable == TORCHVISION_PARAMETERS
    assert net.blobs["features.18"].data.shape == (1, 1280, 7, 7)
    assert net.blobs["classifier"].data.shape == (1, 1000)
    names = [m.caffe for m in mv2.torch_modules()]
    assert names[:4] == ["features.0", "features.1/dw", "features.1/project", "features.2/expand"]
    assert {m.torch_conv for m in mv2.torch_modules()} >= {"features.1.conv.1", "features.2.conv.2", "features.18.0"}


def test_training_variant_has_dropout_and_batch_statistics(caffe):
    n = caffe.NetSpec()
    n["data"] = caffe.layers.Input(input_param={"shape": {"dim": [1, 3, 64, 64]}})
    tops = mv2.add_mobilenet_v2(n, n["data"], deploy=False, num_classes=5)
    net = n.to_proto()
    bn = [layer for layer in net.layer if layer.type == "BatchNorm"]
    assert bn and all(not layer.batch_norm_param.HasField("use_global_stats") for layer in bn)
    assert [layer.dropout_param.dropout_ratio for layer in net.layer if layer.type == "Dropout"] == [pytest.approx(0.2)]
    assert {"features.0", "features.17", "features.18", "pool", "classifier"} <= set(tops)


def test_convert_rejects_missing_garbled_and_foreign_weights(tmp_path):
    foreign = write_zip_pth(tmp_path / "foreign.pth", collections.OrderedDict(
        fc=_Tensor(_Storage("0", np.zeros(4, np.float32)), 0, (2, 2), (2, 1))))
    (tmp_path / "garbled.pth").write_bytes(b"\x80\x02garbage" * 50)
    cases = {"missing.pth": "no such file", "garbled.pth": "not a PyTorch .pth file",
             "foreign.pth": r"not torchvision's MobileNetV2 .*missing 262 keys.*unexpected 1 keys"}
    for name, message in cases.items():
        out = tmp_path / name.replace(".pth", "")
        with pytest.raises(mv2.MobileNetV2WeightsError, match=rf"{name.replace('.', '[.]')}: .*{message}"):
            mv2.convert_imagenet_weights(tmp_path / name, out / "deploy.prototxt", out / "w.caffemodel")
        assert not (out / "deploy.prototxt").exists() and not (out / "w.caffemodel").exists()
    assert foreign.is_file()
