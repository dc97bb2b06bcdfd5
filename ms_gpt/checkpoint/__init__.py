"""Checkpoint I/O: Hugging Face layout (config.json + model.safetensors / pytorch_model.bin / a sharded index) and
MindSpore .ckpt, read and written without torch, and hub names resolved to local snapshots. One file per job:

    pretrained.py      key mapping, state dicts, assign_weights, read_weights, .ckpt, load_pretrained/save_pretrained
    safetensors_io.py  .safetensors through the `safetensors` library (bfloat16 widened to float32)
    torch_bin.py       pytorch_model.bin: restricted-unpickler reader (zip + legacy formats) and zip writer
    hub.py             hub model ids -> local snapshot directory (HF cache or download)
    files.py           checkpoint file names, finding the weight file, helpers the readers share

Public API (importable from `ms_gpt.checkpoint`):
    load_pretrained(cls, path, **config_overrides) -> model
    save_pretrained(model, directory, safe_serialization=True)
    save_ckpt(model, path)
    state_dict(model) -> dict[str, np.ndarray]
    load_state_dict(model, weights, strict=True, source=...) -> LoadReport
    assign_weights(params, values)
    read_weights(path) / read_safetensors(path) / read_torch_bin(path) / read_ckpt(path) -> dict[str, np.ndarray]
    write_torch_bin(weights, path)
    resolve_hub(name) -> local snapshot directory
    register_layout(CheckpointLayout(...)) / registered_layouts(): other directory layouts added from above
        (ms_gpt.lora registers PEFT adapter directories)

Must not import (anywhere in the package): ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat,
ms_gpt.tokenizers, ms_gpt.lora.
"""
from .files import (CONFIG_NAME, GENERATION_CONFIG_NAME, SAFE_WEIGHTS, TOKENIZER_FILES, TORCH_WEIGHTS, WEIGHT_FILES,
                    find_weights, listed)
from .hub import resolve_hub
from .pretrained import (CheckpointLayout, LoadReport, assign_weights, load_pretrained, load_state_dict, read_ckpt,
                         read_generation_config, read_weights, register_layout, registered_layouts, save_ckpt,
                         save_pretrained, state_dict)
from .safetensors_io import read_safetensors
from .torch_bin import read_torch_bin, write_torch_bin

__all__ = ["CONFIG_NAME", "GENERATION_CONFIG_NAME", "SAFE_WEIGHTS", "TOKENIZER_FILES", "TORCH_WEIGHTS", "WEIGHT_FILES",
           "CheckpointLayout", "LoadReport", "assign_weights", "find_weights", "listed", "load_pretrained", "load_state_dict",
           "read_ckpt", "read_generation_config", "read_safetensors", "read_torch_bin", "read_weights", "register_layout",
           "registered_layouts", "resolve_hub", "save_ckpt", "save_pretrained", "state_dict", "write_torch_bin"]
