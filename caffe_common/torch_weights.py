"""Read a PyTorch ``.pth`` state_dict into numpy arrays without PyTorch.

PyTorch is not a dependency of this toolkit; pretrained weights published as ``.pth`` files are read
here with a restricted unpickler. Two on-disk layouts exist:

* **zip** (``torch.save`` since PyTorch 1.6): a zip archive holding ``<name>/data.pkl``, a pickle whose
  persistent ids ``('storage', storage_type, key, location, numel)`` name raw storage files
  ``<name>/data/<key>`` (little-endian unless ``<name>/byteorder`` says ``big``);
* **legacy** (before 1.6; torchvision's ImageNet weights use it): five pickles in a row — a magic
  number, the protocol version (1001), a system-info dict (``little_endian``), the object itself with
  persistent ids ``('storage', storage_type, root_key, location, numel, view_metadata)``, and the list of
  storage keys — followed, in that key order, by each storage as an int64 element count and the raw
  elements.

In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
requires_grad, backward_hooks)`` (optionally wrapped in ``torch._utils._rebuild_parameter``) and the
state_dict as a ``collections.OrderedDict``. Those globals and the storage classes are the only ones the
unpickler resolves; any other global (a pickle can name any importable callable, ``os.system``
included) is refused with :class:`TorchWeightsError`, as is every malformed file, naming the file.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

#: ``torch.<name>Storage`` -> the numpy dtype of its elements (bfloat16 is widened to float32 on reading).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
#: What unpickling or unpacking garbage can raise (besides TorchWeightsError).
_READ_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, KeyError, TypeError,
                AttributeError, IndexError, struct.error, OverflowError, MemoryError)


class TorchWeightsError(ValueError):
    """A ``.pth`` file is missing, malformed, or holds something other than a plain state_dict."""


@dataclass(frozen=True)
class _StorageType:
    """Stands for a ``torch.<name>Storage`` class inside the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    """A storage (or, in legacy files, a view of one) by key; its bytes are looked up after unpickling."""

    key: str
    storage_type: _StorageType
    numel: int
    offset: int = 0  # elements into the root storage (legacy views)


@dataclass(frozen=True)
class _TensorRef:
    """``_rebuild_tensor_v2``'s arguments, resolved into an array once every storage is read."""

    storage: _StorageRef
    storage_offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of ints, got {value!r}")
    return tuple(value)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's elements are."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"tensor storage must be a persistent storage id, got {type(storage).__name__}")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(f"bad tensor storage offset {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides) or any(v < 0 for v in shape + strides):
        raise pickle.UnpicklingError(f"bad tensor size {shape} / stride {strides}")
    return _TensorRef(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"parameter data must be a tensor, got {type(data).__name__}")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only :data:`_ALLOWED_GLOBALS`; hands persistent storage ids to ``storage_id``."""

    def __init__(self, stream: IO[bytes], storage_id: Callable[[tuple], _StorageRef]) -> None:
        super().__init__(stream)
        self._storage_id = storage_id

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} (only a plain state_dict of tensors is read)")
        return _ALLOWED_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80} (only tensor storages)")
        if not isinstance(pid[1], _StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {pid!r:.80}")
        return self._storage_id(pid)


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy header pickles and key list: plain data only, no global at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing global {module}.{name} in a .pth header")


def _plain_load(stream: IO[bytes]) -> Any:
    return _PlainUnpickler(stream).load()


def _storage_numel(value: Any) -> int:
    if not isinstance(value, int) or value < 0:
        raise pickle.UnpicklingError(f"bad storage element count {value!r}")
    return value


# --------------------------------------------------------------------------- zip layout
def _zip_storage_id(pid: tuple) -> _StorageRef:
    if len(pid) != 5:
        raise pickle.UnpicklingError(f"zip storage id has {len(pid)} fields, expected 5: {pid!r:.80}")
    _, storage_type, key, _location, numel = pid
    return _StorageRef(str(_ascii(key)), storage_type, _storage_numel(numel))


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchWeightsError(f"{path}: a zip .pth holds exactly one <name>/data.pkl, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if order not in ("little", "big"):
            raise TorchWeightsError(f"{path}: unknown byteorder {order!r}")
        obj = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), _zip_storage_id).load()
        blobs: dict[str, bytes] = {}

        def storage(ref: _StorageRef) -> np.ndarray:
            member = f"{prefix}data/{ref.key}"
            if ref.key not in blobs:
                if member not in names:
                    raise TorchWeightsError(f"{path}: storage file {member} is missing")
                blobs[ref.key] = archive.read(member)
            dtype = ref.storage_type.dtype.newbyteorder(">" if order == "big" else "<")
            return _elements(path, member, blobs[ref.key], dtype, ref.numel)

        return _resolve(path, obj, storage)


def _elements(path: Path, what: str, data: bytes, dtype: np.dtype, numel: int) -> np.ndarray:
    if len(data) < numel * dtype.itemsize:
        raise TorchWeightsError(f"{path}: {what} holds {len(data)} bytes, {numel} elements of {dtype} need "
                                f"{numel * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, count=numel)


# --------------------------------------------------------------------------- legacy layout
def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as stream:
        if not _legacy_prefix_ok(stream):
            raise TorchWeightsError(f"{path}: not a PyTorch .pth file (neither a zip archive nor the legacy format)")
        _magic, protocol, sys_info = (_plain_load(stream) for _ in range(3))
        if protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
            raise TorchWeightsError(f"{path}: unsupported legacy .pth protocol {protocol!r}")
        little = bool(sys_info.get("little_endian", True))
        roots: dict[str, tuple[_StorageType, int]] = {}

        def storage_id(pid: tuple) -> _StorageRef:
            if len(pid) != 6:
                raise pickle.UnpicklingError(f"legacy storage id has {len(pid)} fields, expected 6: {pid!r:.80}")
            _, storage_type, root_key, _location, numel, view = pid
            root_key = str(_ascii(root_key))
            roots.setdefault(root_key, (storage_type, _storage_numel(numel)))
            if view is None:
                return _StorageRef(root_key, storage_type, roots[root_key][1])
            _view_key, offset, view_numel = view
            return _StorageRef(root_key, storage_type, _storage_numel(view_numel), _storage_numel(offset))

        obj = _StateDictUnpickler(stream, storage_id).load()
        keys = [str(_ascii(k)) for k in _plain_load(stream)]
        root_data = _read_legacy_storages(path, stream, keys, roots, little)

    def storage(ref: _StorageRef) -> np.ndarray:
        if ref.key not in root_data:
            raise TorchWeightsError(f"{path}: storage {ref.key} is used by a tensor but not stored")
        data = root_data[ref.key]
        if ref.offset + ref.numel > data.size:
            raise TorchWeightsError(f"{path}: a view of storage {ref.key} runs past its {data.size} elements")
        return data[ref.offset: ref.offset + ref.numel]

    return _resolve(path, obj, storage)


def _legacy_prefix_ok(stream: IO[bytes]) -> bool:
    """Whether the stream starts with the legacy magic-number pickle (rewinds it)."""
    start = stream.read(2)
    stream.seek(0)
    if start != b"\x80\x02":
        return False
    try:
        magic = _plain_load(stream)
    except _READ_ERRORS:  # any garbage: simply not this format
        return False
    finally:
        stream.seek(0)
    return magic == LEGACY_MAGIC


def _read_legacy_storages(path: Path, stream: IO[bytes], keys: list[str], roots: dict[str, tuple[_StorageType, int]],
                          little: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in roots:
            raise TorchWeightsError(f"{path}: storage key {key} is listed but no tensor uses it")
        storage_type, numel = roots[key]
        head = stream.read(8)
        if len(head) != 8:
            raise TorchWeightsError(f"{path}: file ends before storage {key} (truncated)")
        (count,) = struct.unpack("<q" if little else ">q", head)
        if count != numel:
            raise TorchWeightsError(f"{path}: storage {key} has {count} elements on disk, the pickle says {numel}")
        dtype = storage_type.dtype.newbyteorder("<" if little else ">")
        out[key] = _elements(path, f"storage {key}", stream.read(numel * dtype.itemsize), dtype, numel)
    return out


# --------------------------------------------------------------------------- tensors
def _tensor(path: Path, name: str, ref: _TensorRef, storage: Callable[[_StorageRef], np.ndarray]) -> np.ndarray:
    flat = storage(ref.storage)
    extent = ref.storage_offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1
    if 0 not in ref.size and extent > flat.size:
        raise TorchWeightsError(f"{path}: tensor {name!r} (size {ref.size}, stride {ref.stride}, offset "
                                f"{ref.storage_offset}) reaches past its storage of {flat.size} elements")
    if 0 in ref.size:
        array = np.zeros(ref.size, flat.dtype)
    else:
        strides = tuple(s * flat.dtype.itemsize for s in ref.stride)
        array = np.lib.stride_tricks.as_strided(flat[ref.storage_offset:], ref.size, strides, writeable=False)
    array = np.array(array, dtype=flat.dtype.newbyteorder("="))  # a native-order copy owning its memory
    if ref.storage.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _resolve(path: Path, obj: Any, storage: Callable[[_StorageRef], np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise TorchWeightsError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _TensorRef):
            raise TorchWeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor: "
                                    "not a plain state_dict (a checkpoint wrapping one is not read)")
        out[key] = _tensor(path, key, value, storage)
    return out


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch state_dict saved in ``path`` (zip or legacy ``.pth``), by key, as numpy
    arrays (copies in native byte order, honouring each tensor's storage offset, size and stride).

    Raises :class:`TorchWeightsError` naming the file when it is missing, truncated, not a ``.pth``,
    names any global outside a state_dict's few (see the module docstring), or is not a flat dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise TorchWeightsError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except TorchWeightsError:
        raise
    except _READ_ERRORS as exc:
        raise TorchWeightsError(f"{path}: cannot read as a PyTorch state_dict: {type(exc).__name__}: {exc}") from exc
