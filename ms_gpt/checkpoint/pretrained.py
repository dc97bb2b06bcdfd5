"""Models to and from checkpoints: the key mapping (ms_gpt parameter names are the HF keys, so loading is a key
normalisation plus checks; nothing is transposed), state dicts, putting weights into a (compiled) model, reading any
weight source (one file by its type, or a sharded index), config.json / generation_config.json, MindSpore .ckpt,
and load_pretrained / save_pretrained in HF layout. Other directory layouts are added from above by the module that
owns them (`register_layout`: ms_gpt.lora adds PEFT adapter directories); this module does not know them.

Must not import: ms_gpt.model (the class to build is passed in), ms_gpt.engine, ms_gpt.data, ms_gpt.recipes,
ms_gpt.compat, ms_gpt.tokenizers, ms_gpt.lora (adapters extend checkpoint I/O through register_layout).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..config import GPTConfig
from ..paths import atomic_directory, atomic_path, atomic_write
from .files import CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS, TORCH_WEIGHTS, WEIGHT_FILES, find_weights, listed
from .hub import is_hub_name, resolve_hub
from .safetensors_io import read_safetensors
from .torch_bin import read_torch_bin, write_torch_bin

# ---- the rename table: checkpoint keys -> ms_gpt parameter names ---------------------------------------------------
BODY_PREFIX = "transformer."  # heads hold the body under this name (HF and ms_gpt alike)
TIED_KEYS = ("lm_head.weight",)  # the LM head is the token table; a stored copy is checked, then dropped
# Causal-mask buffers that old HF checkpoints stored per layer (`h.N.attn.bias`, `h.N.attn.masked_bias`); ms_gpt
# builds its mask from the config. `c_attn.bias` / `c_proj.bias` do not match (anchored on `attn.`).
_MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_TOKEN_TABLE = {"gpt2": "wte.weight", "openai-gpt": "tokens_embed.weight"}


@dataclass
class LoadReport:
    """What `load_state_dict` did besides loading: head weights left at their initialisation, ignored keys."""

    newly_initialized: list[str] = field(default_factory=list)
    missing_body: list[str] = field(default_factory=list)  # only non-empty with strict=False
    unexpected: list[str] = field(default_factory=list)


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
        raise ValueError(f"{source}: shape mismatch between checkpoint and config: {listed(mismatched)}")
    missing = [name for name in params if name not in targets]
    missing_body = [name for name in missing if name.startswith(prefix) and name[len(prefix):] in body_names]
    missing_head = [name for name in missing if name not in missing_body]
    if missing_body and strict:
        raise ValueError(f"{source}: missing body weights for {type(model).__name__}: {listed(missing_body)}")

    assign_weights(params, {name: value for name, (_, value) in targets.items()})
    if missing_head:
        warnings.warn(f"Some weights of {type(model).__name__} were not in {source} and are newly initialized: "
                      f"{listed(missing_head)}. Train the model before using it for predictions.", stacklevel=3)
    if unexpected:
        warnings.warn(f"{source}: ignored {len(unexpected)} key(s) that {type(model).__name__} does not use: "
                      f"{listed(unexpected)}", stacklevel=3)
    return LoadReport(newly_initialized=missing_head, missing_body=missing_body, unexpected=unexpected)


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
        raise ValueError(f"{index_path}: keys listed in the index are missing from the shards: {listed(absent)}")
    return out


# ---- config ----------------------------------------------------------------------------------------------------------
def _load_config(path: str, overrides: dict[str, Any]) -> GPTConfig:
    config = GPTConfig.from_json_file(path)
    if not overrides:
        return config
    from ..config import _HF_ALIASES

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


# ---- layouts added by other modules ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointLayout:
    """A directory layout that load_pretrained / save_pretrained hand over to the module that registered it.

    `marker`: the file whose presence makes a directory this layout (load_pretrained then returns
    `load(cls, directory, **config_overrides)`); `owns(model)`: save_pretrained writes this layout for the model
    (`save(model, directory)`); `files`: what the layout writes, removed when a full checkpoint replaces it.
    """

    name: str
    marker: str
    files: tuple
    load: Callable[..., Any]
    save: Callable[[Any, str], None]
    owns: Callable[[Any], bool]


_LAYOUTS: dict[str, CheckpointLayout] = {}


def register_layout(layout: CheckpointLayout) -> None:
    """Add (or replace, by name) a layout; ms_gpt.lora registers PEFT adapter directories when imported, which
    importing ms_gpt does."""
    _LAYOUTS[layout.name] = layout


def registered_layouts() -> tuple[CheckpointLayout, ...]:
    return tuple(_LAYOUTS.values())


# ---- public entry points ---------------------------------------------------------------------------------------------
def load_pretrained(cls, path: str, **config_overrides):
    """Build `cls` from a checkpoint and load its weights (eval mode, like HF).

    `path`: an HF-layout directory (config.json + model.safetensors / pytorch_model.bin / a sharded *.index.json;
    ms_gpt's save_pretrained writes the same), a directory holding config.json + one .ckpt, a single weight file
    with config.json beside it, or a hub name (`gpt2`, `uer/gpt2-chinese-cluecorpussmall`). `config_overrides`
    replace config.json fields (e.g. num_labels=3, compute_dtype="float16", resid_pdrop=0.0).
    """
    path = os.fspath(path)
    for layout in _LAYOUTS.values():  # e.g. a PEFT LoRA directory: its base, then the adapter (ms_gpt.lora)
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, layout.marker)):
            return layout.load(cls, path, **config_overrides)
    if os.path.isdir(path):
        weights_path = find_weights(path)
        config_path = os.path.join(path, CONFIG_NAME)
    elif os.path.isfile(path):
        weights_path = path
        config_path = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME)
    elif is_hub_name(path):
        directory = resolve_hub(path)
        weights_path, config_path = find_weights(directory), os.path.join(directory, CONFIG_NAME)
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
    atomically, weights before config. A stale weight file of the other format is removed. A model a registered
    layout owns is written in that layout instead (a model with LoRA adapters: PEFT's adapter files, `ms_gpt.lora`).
    """
    for layout in _LAYOUTS.values():
        if layout.owns(model):
            layout.save(model, directory)
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
    layout_files = tuple(name for layout in _LAYOUTS.values() for name in layout.files)
    for stale in WEIGHT_FILES + layout_files:  # a full checkpoint replaces an adapter
        if stale != weights_name and os.path.isfile(os.path.join(directory, stale)):
            os.remove(os.path.join(directory, stale))
