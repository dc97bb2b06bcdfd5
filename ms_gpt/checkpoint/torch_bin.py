"""torch's `pytorch_model.bin`, read and written without torch: the zip format and the pre-1.6 legacy format are
read through a restricted unpickler that can only rebuild tensors (no pickled code runs); `write_torch_bin` writes
the zip format that torch.load(weights_only=True) and transformers read.

Must not import: torch (never needed here); any ms_gpt module but ms_gpt.paths and ms_gpt.checkpoint.files.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..paths import atomic_path
from .files import bf16_to_f32

# ---- reading ---------------------------------------------------------------------------------------------------------
_TORCH_STORAGES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
                   "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32,
                   "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch's pre-1.6 (non-zip) format


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self):
        return _TORCH_STORAGES[self.name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


@dataclass
class _Storage:
    """A storage named by the pickle; its bytes are attached after unpickling (legacy files store them after it)."""

    key: str
    type: _StorageType
    numel: int
    raw: Optional[bytes] = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stands in for torch._utils._rebuild_tensor(_v2); the extra arguments are requires_grad, hooks, metadata."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_ignored):
    return data


_TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuild functions, storage types and OrderedDict; any other global is refused."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _TORCH_FUNCTIONS:
            return _TORCH_FUNCTIONS[(module, name)]
        if module == "torch" and name in _TORCH_STORAGES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise ValueError(f"{self.path}: refusing to load: the pickle references {module}.{name}, which is not a "
                         "tensor or storage type (pytorch_model.bin files can carry code; this one is not a plain "
                         "state dict)")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata (legacy format)])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ValueError(f"{self.path}: unsupported persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError(f"{self.path}: storage views (pre-1.0 torch files) are not supported")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(key, pid[1], int(pid[4]))
        return self.storages[key]


def _materialize(ref: _TensorRef, path: str, name: str, byteorder: str) -> np.ndarray:
    storage = ref.storage
    if storage.raw is None or len(storage.raw) < storage.numel * storage.type.itemsize:
        raise ValueError(f"{path}: truncated or corrupt file: storage {storage.key} of {name!r} has "
                         f"{0 if storage.raw is None else len(storage.raw)} bytes, expected "
                         f"{storage.numel * storage.type.itemsize}")
    order = "<" if byteorder == "little" else ">"
    if storage.type.dtype == "bfloat16":
        flat = bf16_to_f32(np.frombuffer(storage.raw, dtype=order + "u2", count=storage.numel))
    else:
        flat = np.frombuffer(storage.raw, dtype=np.dtype(storage.type.dtype).newbyteorder(order),
                             count=storage.numel)
    numel = int(np.prod(ref.size, dtype=np.int64))
    if numel:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= storage.numel:
            raise ValueError(f"{path}: tensor {name!r} (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
                             f"lies outside its storage of {storage.numel} elements")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:] if numel else flat[:0], shape=ref.size,
                                           strides=tuple(s * item for s in ref.stride), writeable=False)
    # a native-order copy: MindSpore rejects arrays whose dtype spells out "<"
    return view.astype(np.float32 if storage.type.dtype == "bfloat16" else storage.type.dtype)


def _collect(obj: Any, path: str, byteorder: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # training checkpoints wrap it
        obj = obj["state_dict"]
    out = {}
    for name, value in obj.items():
        if isinstance(value, _TensorRef):
            out[str(name)] = _materialize(value, path, str(name), byteorder)
    if not out:
        raise ValueError(f"{path}: no tensors found in the state dict")
    return out


def read_torch_bin(path: str) -> dict[str, np.ndarray]:
    """Read torch's `pytorch_model.bin` (zip format, or the pre-1.6 legacy format) into numpy, without torch.

    The pickle may only name tensor-rebuild functions, storage types and OrderedDict; anything else (e.g. os.system)
    raises ValueError naming it and the file before it could run. bfloat16 becomes float32.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            return _read_torch_zip(path)
        return _read_torch_legacy(path)
    except ValueError as err:
        if path in str(err):  # ours, already naming the file
            raise
        raise ValueError(f"{path}: truncated or corrupt PyTorch weight file ({err})") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, AttributeError, IndexError, TypeError,
            KeyError, OSError) as err:
        raise ValueError(f"{path}: truncated or corrupt PyTorch weight file ({type(err).__name__}: {err})") from None


def _read_torch_zip(path: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: not a PyTorch checkpoint (expected one data.pkl, found {len(pickles)})")
        root = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        byteorder = archive.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path)
        obj = unpickler.load()
        for key, storage in unpickler.storages.items():
            member = f"{root}data/{key}"
            if member not in names:
                raise ValueError(f"{path}: corrupt file: storage {member} is missing")
            storage.raw = archive.read(member)
    return _collect(obj, path, byteorder)


def _read_torch_legacy(path: str) -> dict[str, np.ndarray]:
    """Legacy layout: pickles of magic number, protocol, sys info, the state dict, the storage keys; then for each
    key an int64 element count followed by the raw bytes."""
    with open(path, "rb") as f:
        try:
            magic = _RestrictedUnpickler(f, path).load()
        except (pickle.UnpicklingError, EOFError):
            magic = None
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a PyTorch weight file (neither a zip archive nor the legacy format)")
        _RestrictedUnpickler(f, path).load()  # protocol version
        sys_info = _RestrictedUnpickler(f, path).load()
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        unpickler = _RestrictedUnpickler(f, path)
        obj = unpickler.load()
        keys = _RestrictedUnpickler(f, path).load()
        for key in keys:
            storage = unpickler.storages[str(key)]
            count = int.from_bytes(f.read(8), byteorder)
            storage.raw = f.read(count * storage.type.itemsize)
    return _collect(obj, path, byteorder)


# ---- writing ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TorchName:
    """A torch global written by name into the pickle (torch need not be importable here)."""

    module: str
    name: str

    def __reduce__(self):
        return self.name  # "a global": routed to _TorchPickler.save_global

    def __call__(self, *args):  # pickle insists that a reduce function be callable; this one only gets written
        raise TypeError(f"{self.module}.{self.name} is a placeholder for torch, not callable here")


_REBUILD_V2 = _TorchName("torch._utils", "_rebuild_tensor_v2")
_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


@dataclass(frozen=True)
class _StorageOut:
    key: str
    type_name: str
    numel: int


class _TensorOut:
    """Pickles as torch's `_rebuild_tensor_v2(storage, 0, shape, contiguous stride, False, OrderedDict())`."""

    def __init__(self, key: str, array: np.ndarray):
        self.storage = _StorageOut(key, _STORAGE_NAMES[array.dtype], int(array.size))
        self.shape = tuple(int(d) for d in array.shape)
        self.stride = tuple(int(s) // array.itemsize for s in array.strides)

    def __reduce__(self):
        return _REBUILD_V2, (self.storage, 0, self.shape, self.stride, False, collections.OrderedDict())


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be overridden
    def persistent_id(self, obj):
        if isinstance(obj, _StorageOut):
            return "storage", _TorchName("torch", obj.type_name), obj.key, "cpu", obj.numel
        return None

    def save_global(self, obj, name=None):
        if isinstance(obj, _TorchName):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_torch_bin(weights: dict[str, np.ndarray], path: str, archive_name: str = "pytorch_model") -> None:
    """Write `weights` in torch's zip format (what torch.load(weights_only=True) and transformers read)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    for key, value in arrays.items():
        if value.dtype not in _STORAGE_NAMES:
            raise ValueError(f"write_torch_bin: {key} has dtype {value.dtype}, which has no torch storage type here")
    records = {key: _TensorOut(str(i), value) for i, (key, value) in enumerate(arrays.items())}
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(collections.OrderedDict(records))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl", buffer.getvalue())
        archive.writestr(f"{archive_name}/byteorder", "little")
        for key, value in arrays.items():
            little_endian = value.astype(value.dtype.newbyteorder("<"), copy=False)
            _write_aligned(archive, f"{archive_name}/data/{records[key].storage.key}", little_endian.tobytes())
        archive.writestr(f"{archive_name}/version", "3\n")


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes, alignment: int = 64) -> None:
    """Store `data` so that it starts on an `alignment` boundary (torch memory-maps records), padding the local
    header's extra field as torch's own writer does."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = archive.fp.tell() + 30 + len(name.encode()) + 4  # local header + name + extra-field header
    pad = -start % alignment
    info.extra = b"FB" + pad.to_bytes(2, "little") + b"\0" * pad
    archive.writestr(info, data)
