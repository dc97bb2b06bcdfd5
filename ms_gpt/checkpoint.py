"""Checkpoints in Hugging Face layout (and MindSpore .ckpt) for the ms_gpt cells.

ms_gpt parameter names already are the HF keys, so loading is a key normalisation (the rename table below) plus
checks; nothing is transposed. Reading never needs torch: safetensors files are parsed directly and torch's
`pytorch_model.bin` goes through a restricted unpickler that can only rebuild tensors (no pickled code runs).

Public API:
    load_pretrained(cls, path, **config_overrides) -> model
    save_pretrained(model, directory, safe_serialization=True)
    save_ckpt(model, path)
    state_dict(model) -> dict[str, np.ndarray]
    load_state_dict(model, weights, strict=True, source=...) -> LoadReport
    read_weights(path) / read_safetensors(path) / read_torch_bin(path) / read_ckpt(path) -> dict[str, np.ndarray]
    write_torch_bin(weights, path)
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import pickle
import re
import socket
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlparse

import numpy as np

from .config import GPTConfig
from .paths import atomic_directory, atomic_path, atomic_write

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# tokenizer files a hub snapshot may hold (any layout load_tokenizer reads), fetched with the weights when present
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt")
SAFE_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"
# Looked for in this order in a checkpoint directory.
WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_WEIGHTS + ".index.json", TORCH_WEIGHTS, TORCH_WEIGHTS + ".index.json")

# ---- the rename table: checkpoint keys -> ms_gpt parameter names ---------------------------------------------------
BODY_PREFIX = "transformer."  # heads hold the body under this name (HF and ms_gpt alike)
TIED_KEYS = ("lm_head.weight",)  # the LM head is the token table; a stored copy is checked, then dropped
# Causal-mask buffers that old HF checkpoints stored per layer (`h.N.attn.bias`, `h.N.attn.masked_bias`); ms_gpt
# builds its mask from the config. `c_attn.bias` / `c_proj.bias` do not match (anchored on `attn.`).
_MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_TOKEN_TABLE = {"gpt2": "wte.weight", "openai-gpt": "tokens_embed.weight"}
_MAX_LISTED = 12  # keys named in one message before "... and N more"


@dataclass
class LoadReport:
    """What `load_state_dict` did besides loading: head weights left at their initialisation, ignored keys."""

    newly_initialized: list[str] = field(default_factory=list)
    missing_body: list[str] = field(default_factory=list)  # only non-empty with strict=False
    unexpected: list[str] = field(default_factory=list)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


# ---- state dicts -----------------------------------------------------------------------------------------------------
def state_dict(model) -> dict[str, np.ndarray]:
    """{HF key: float array} of every parameter (for a head model the body keys carry the `transformer.` prefix)."""
    return {name: param.asnumpy() for name, param in model.parameters_and_names()}


def _body_prefix(model) -> str:
    # GPTModel is the body itself; every head holds it as `transformer`
    return "" if model.base_model() is model else BODY_PREFIX


def assign_weights(params: dict, values: dict) -> None:
    """Copy `values` (numpy arrays or MindSpore tensors, by name) into the Parameters `params` (same names) in place.

    The one way ms_gpt puts weights into a model: `ops.assign` writes into the buffers the compiled graphs hold, so
    the next compiled step sees the new weights. (`Parameter.set_data`, and `load_param_into_net` which uses it,
    swap the buffer: on MindSpore 2.7 a graph compiled before keeps reading the freed one.) Shapes must match.
    """
    import mindspore as ms
    from mindspore import ops

    for name, value in values.items():
        param = params[name]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"'{name}': value of shape {tuple(value.shape)}, the parameter has {tuple(param.shape)}")
        if isinstance(value, ms.Tensor):
            tensor = value if value.dtype == param.dtype else value.astype(param.dtype)
        else:
            tensor = ms.Tensor(np.asarray(value).astype(ms.dtype_to_nptype(param.dtype)), dtype=param.dtype)
        ops.assign(param, tensor)


def load_state_dict(model, weights: dict[str, np.ndarray], strict: bool = True,
                    source: str = "state dict") -> LoadReport:
    """Copy `weights` (HF keys, with or without the `transformer.` prefix) into `model`.

    Everything is checked before any parameter changes: a shape mismatch is an error naming the key and both shapes;
    missing body weights are an error (strict) or reported in the result (strict=False). Missing head weights keep
    their initialisation and are reported by one warning; unknown keys by another.
    """
    params = dict(model.parameters_and_names())
    prefix = _body_prefix(model)
    body_names = {name[len(prefix):] for name in params if name.startswith(prefix)} if prefix else set(params)
    token_table = _TOKEN_TABLE[model.config.model_type]

    targets: dict[str, tuple[str, np.ndarray]] = {}  # param name -> (source key, value)
    tied: dict[str, np.ndarray] = {}
    unexpected: list[str] = []
    for key, value in weights.items():
        body_key = key[len(BODY_PREFIX):] if key.startswith(BODY_PREFIX) else key
        if _MASK_BUFFER.match(body_key):
            continue
        if key in TIED_KEYS:
            tied[key] = value
            continue
        if body_key in body_names:
            name = prefix + body_key
        elif key in params:
            name = key
        else:
            unexpected.append(key)
            continue
        if name in targets:
            raise ValueError(f"{source}: keys {targets[name][0]!r} and {key!r} both give parameter {name!r}")
        targets[name] = (key, value)

    table = targets.get(prefix + token_table)
    for key, value in tied.items():
        if table is not None and (value.shape != table[1].shape or not np.array_equal(value, table[1])):
            raise ValueError(f"{source}: {key} differs from the token table {table[0]}; ms_gpt ties the LM head to "
                             "the token embedding and cannot load an untied LM head")

    mismatched = [f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(params[name].shape)}"
                  for name, (key, value) in targets.items() if tuple(value.shape) != tuple(params[name].shape)]
    if mismatched:
        raise ValueError(f"{source}: shape mismatch between checkpoint and config: {_listed(mismatched)}")
    missing = [name for name in params if name not in targets]
    missing_body = [name for name in missing if name.startswith(prefix) and name[len(prefix):] in body_names]
    missing_head = [name for name in missing if name not in missing_body]
    if missing_body and strict:
        raise ValueError(f"{source}: missing body weights for {type(model).__name__}: {_listed(missing_body)}")

    assign_weights(params, {name: value for name, (_, value) in targets.items()})
    if missing_head:
        warnings.warn(f"Some weights of {type(model).__name__} were not in {source} and are newly initialized: "
                      f"{_listed(missing_head)}. Train the model before using it for predictions.", stacklevel=3)
    if unexpected:
        warnings.warn(f"{source}: ignored {len(unexpected)} key(s) that {type(model).__name__} does not use: "
                      f"{_listed(unexpected)}", stacklevel=3)
    return LoadReport(newly_initialized=missing_head, missing_body=missing_body, unexpected=unexpected)


# ---- safetensors -----------------------------------------------------------------------------------------------------
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16",
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the upper half of a float32: widen the uint16 bit patterns."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Parse a .safetensors file (8-byte header length, JSON header, raw little-endian data); bf16 -> float32."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            raise ValueError(f"{path}: truncated or corrupt safetensors file (header of {header_len} bytes, "
                             f"file has {size})")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: corrupt safetensors header ({err})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
        base = 8 + header_len
        out: dict[str, np.ndarray] = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            try:
                dtype = _SAFETENSORS_DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                start, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: corrupt safetensors entry for {key!r}: {info!r}") from None
            if base + end > size:
                raise ValueError(f"{path}: truncated safetensors file: tensor {key!r} ends at byte {base + end}, "
                                 f"file has {size}")
            item = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            if end - start != int(np.prod(shape, dtype=np.int64)) * item:
                raise ValueError(f"{path}: corrupt safetensors entry {key!r}: {end - start} bytes for shape {shape}")
            f.seek(base + start)
            raw = f.read(end - start)
            if dtype == "bfloat16":
                out[key] = _bf16_to_f32(np.frombuffer(raw, dtype="<u2")).reshape(shape)
            else:
                # native byte order: MindSpore rejects arrays whose dtype spells out "<"
                out[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    return out


# ---- torch pytorch_model.bin, read without torch and without running pickled code -----------------------------------
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
        flat = _bf16_to_f32(np.frombuffer(storage.raw, dtype=order + "u2", count=storage.numel))
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


# ---- writing pytorch_model.bin without torch -------------------------------------------------------------------------
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


# ---- MindSpore .ckpt -------------------------------------------------------------------------------------------------
def read_ckpt(path: str) -> dict[str, np.ndarray]:
    import mindspore as ms

    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        params = ms.load_checkpoint(path)
    except (RuntimeError, ValueError, TypeError, OSError) as err:
        raise ValueError(f"{path}: truncated or corrupt MindSpore checkpoint ({str(err).strip()[:200]})") from None
    if not params:
        raise ValueError(f"{path}: the MindSpore checkpoint holds no parameters")
    return {name: param.asnumpy() for name, param in params.items()}


def save_ckpt(model, path: str) -> None:
    """Write the parameters to a MindSpore .ckpt (HF key names) and config.json beside it, each atomically."""
    import mindspore as ms

    path = os.path.abspath(path)
    if not path.endswith(".ckpt"):
        raise ValueError(f"save_ckpt: {path} must end with .ckpt")
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    with atomic_path(path) as tmp:
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state_dict(model).items()], tmp)
        with atomic_write(os.path.join(directory, CONFIG_NAME)) as f:
            json.dump(_config_dict(model), f, indent=2, sort_keys=True)


# ---- reading any weight source -----------------------------------------------------------------------------------
def read_weights(path: str) -> dict[str, np.ndarray]:
    """One weight file (.safetensors, .bin/.pt/.pth, .ckpt) or a sharded `*.index.json`, as {key: array}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.endswith(".index.json"):
        return _read_sharded(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith((".bin", ".pt", ".pth")):
        return read_torch_bin(path)
    if path.endswith(".ckpt"):
        return read_ckpt(path)
    raise ValueError(f"{path}: unknown weight file type (expected .safetensors, .bin, .ckpt or *.index.json)")


def _read_sharded(index_path: str) -> dict[str, np.ndarray]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{index_path}: not a valid shard index ({err})") from None
    folder = os.path.dirname(index_path)
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        out.update(read_weights(os.path.join(folder, shard)))
    absent = sorted(set(weight_map) - set(out))
    if absent:
        raise ValueError(f"{index_path}: keys listed in the index are missing from the shards: {_listed(absent)}")
    return out


def _find_weights(directory: str) -> str:
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    ckpts = sorted(n for n in os.listdir(directory) if n.endswith(".ckpt"))
    if len(ckpts) == 1:
        return os.path.join(directory, ckpts[0])
    hint = f" (several .ckpt files: {ckpts}; pass one of them)" if ckpts else ""
    raise FileNotFoundError(f"no weight file in {directory}: expected one of {', '.join(WEIGHT_FILES)} or a single "
                            f".ckpt{hint}")


# ---- hub names -------------------------------------------------------------------------------------------------------
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _hub_unavailable(name: str, reason: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name!r} is not a local file or directory, and it cannot be fetched from the Hugging "
                             f"Face Hub: {reason}. Download the model elsewhere and pass its local directory "
                             "(config.json + model.safetensors or pytorch_model.bin).")


def _resolve_hub(name: str) -> str:
    """Local snapshot directory of hub model `name`: from the HF cache, else downloaded (config + one weight format).

    Fails fast offline: HF_HUB_OFFLINE, or one 5 s TCP probe of the endpoint (HF_ENDPOINT honoured), before any
    download with its retries starts.
    """
    try:
        import huggingface_hub
    except ImportError:
        raise _hub_unavailable(name, "huggingface_hub is not installed") from None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, not at huggingface_hub import
    try:
        cached = huggingface_hub.snapshot_download(name, cache_dir=cache_dir, local_files_only=True)
        _find_weights(cached)
        if os.path.isfile(os.path.join(cached, CONFIG_NAME)):
            return cached
    except Exception:  # not cached (the exception type varies across huggingface_hub versions)
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise _hub_unavailable(name, "HF_HUB_OFFLINE is set and the model is not in the local cache")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except (OSError, TypeError) as err:
        raise _hub_unavailable(name, f"{endpoint} is unreachable ({err})") from None
    try:
        files = set(huggingface_hub.list_repo_files(name, endpoint=endpoint))
        weights = next((f for f in WEIGHT_FILES if f in files), None)
        if weights is None or CONFIG_NAME not in files:
            raise _hub_unavailable(name, f"the repository has no {CONFIG_NAME} + one of {', '.join(WEIGHT_FILES)}")
        patterns = [CONFIG_NAME, weights] + [f for f in (GENERATION_CONFIG_NAME, *TOKENIZER_FILES) if f in files]
        if weights.endswith(".index.json"):  # the shards: model-00001-of-0000N.safetensors / pytorch_model-*.bin
            patterns.append("*" + os.path.splitext(weights[: -len(".index.json")])[1])
        return huggingface_hub.snapshot_download(name, allow_patterns=patterns, cache_dir=cache_dir,
                                                 endpoint=endpoint)
    except FileNotFoundError:
        raise
    except Exception as err:  # HTTP errors, unknown repo, gated model, ...
        raise _hub_unavailable(name, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None


# ---- config ----------------------------------------------------------------------------------------------------------
def _load_config(path: str, overrides: dict[str, Any]) -> GPTConfig:
    config = GPTConfig.from_json_file(path)
    if not overrides:
        return config
    from .config import _HF_ALIASES

    fields = {f.name for f in dataclasses.fields(GPTConfig)} - {"extra"}
    changes = {}
    for key, value in overrides.items():
        name = _HF_ALIASES.get(key, key)
        if name not in fields:
            raise ValueError(f"from_pretrained: unknown config override {key!r}; valid: {', '.join(sorted(fields))}")
        changes[name] = value
    try:
        return config.replace(**changes)
    except TypeError as err:
        raise ValueError(f"from_pretrained: bad config override ({err})") from None


def _config_dict(model) -> dict[str, Any]:
    return model.config.to_dict(architecture=type(model).__name__)


# ---- public entry points ---------------------------------------------------------------------------------------------
def load_pretrained(cls, path: str, **config_overrides):
    """Build `cls` from a checkpoint and load its weights (eval mode, like HF).

    `path`: an HF-layout directory (config.json + model.safetensors / pytorch_model.bin / a sharded *.index.json;
    ms_gpt's save_pretrained writes the same), a directory holding config.json + one .ckpt, a single weight file
    with config.json beside it, or a hub name (`gpt2`, `uer/gpt2-chinese-cluecorpussmall`). `config_overrides`
    replace config.json fields (e.g. num_labels=3, compute_dtype="float16", resid_pdrop=0.0).
    """
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "adapter_config.json")):
        from .lora import load_adapter_model  # a PEFT LoRA directory: its base, then the adapter

        return load_adapter_model(cls, path, **config_overrides)
    if os.path.isdir(path):
        weights_path = _find_weights(path)
        config_path = os.path.join(path, CONFIG_NAME)
    elif os.path.isfile(path):
        weights_path = path
        config_path = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME)
    elif _HUB_ID.fullmatch(path) and not path.endswith((".ckpt", ".bin", ".safetensors", ".json", ".pt", ".pth")):
        directory = _resolve_hub(path)
        weights_path, config_path = _find_weights(directory), os.path.join(directory, CONFIG_NAME)
    else:
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: a checkpoint needs config.json beside its weights "
                                f"({weights_path})")
    config = _load_config(config_path, config_overrides)
    model = cls(config)
    load_state_dict(model, read_weights(weights_path), strict=True, source=weights_path)
    model.set_train(False)
    directory = os.path.dirname(os.path.abspath(config_path))
    # generate() reads its defaults (eos/pad ids, max_length, do_sample, ...) from here, as HF's GenerationConfig does
    model.__dict__["generation_config"] = read_generation_config(directory)
    model.__dict__["name_or_path"] = directory  # where it came from (a hub name's snapshot): its tokenizer is there
    return model


def read_generation_config(directory: str) -> Optional[dict]:
    """The fields of `directory`/generation_config.json (what HF's GenerationConfig.from_pretrained reads), or None."""
    path = os.path.join(directory, GENERATION_CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of generation options")
    for key in ("max_length", "max_new_tokens", "min_new_tokens", "top_k", "num_return_sequences", "pad_token_id",
                "bos_token_id"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{path}: {key} must be an integer, got {value!r}")
    eos = data.get("eos_token_id")
    if eos is not None and not (isinstance(eos, int) or (isinstance(eos, list) and
                                                         all(isinstance(i, int) for i in eos))):
        raise ValueError(f"{path}: eos_token_id must be an integer or a list of integers, got {eos!r}")
    return data


def save_pretrained(model, directory: str, safe_serialization: bool = True) -> None:
    """Write config.json + model.safetensors (or pytorch_model.bin) in HF layout, loadable by transformers.

    Keys are those HF saves for the matching class (the tied lm_head is left out, as HF does). The files are written
    into a temporary directory beside `directory`, then renamed into place: a new directory appears whole; in an
    existing one (which may hold a tokenizer or training checkpoints, left untouched) each file is replaced
    atomically, weights before config. A stale weight file of the other format is removed. A model with LoRA
    adapters (`ms_gpt.lora`) writes the adapter in PEFT's layout instead.
    """
    from .lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_lora_model, save_adapter

    if is_lora_model(model):  # PEFT's layout: adapter_config.json + adapter_model.safetensors
        save_adapter(model, directory)
        return
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"save_pretrained: {directory} exists and is not a directory")
    weights_name = SAFE_WEIGHTS if safe_serialization else TORCH_WEIGHTS
    with atomic_directory(directory, merge=True, last=(GENERATION_CONFIG_NAME, CONFIG_NAME)) as tmp:
        weights = state_dict(model)
        if safe_serialization:
            from safetensors.numpy import save_file

            save_file(weights, os.path.join(tmp, weights_name), metadata={"format": "pt"})
        else:
            write_torch_bin(weights, os.path.join(tmp, weights_name))
        with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(_config_dict(model), f, indent=2, sort_keys=True)
        generation = getattr(model, "generation_config", None)  # loaded with the checkpoint: keep it, as HF does
        if generation and type(model).__name__ in ("GPTLMHeadModel", "GPTDoubleHeadsModel"):  # the models that generate
            with open(os.path.join(tmp, GENERATION_CONFIG_NAME), "w", encoding="utf-8") as f:
                json.dump(generation, f, indent=2, sort_keys=True)
    for stale in WEIGHT_FILES + (ADAPTER_CONFIG, ADAPTER_WEIGHTS):  # a full checkpoint replaces an adapter
        if stale != weights_name and os.path.isfile(os.path.join(directory, stale)):
            os.remove(os.path.join(directory, stale))
