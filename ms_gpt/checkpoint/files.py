"""What a checkpoint directory holds: the HF file names, finding its weight file, and the two small helpers the
readers share (widening bfloat16, naming keys in a message).

Must not import: any ms_gpt module (it is the bottom of the checkpoint package).
"""
from __future__ import annotations

import os

import numpy as np

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# tokenizer files a hub snapshot may hold (any layout load_tokenizer reads), fetched with the weights when present
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt")
SAFE_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"
# Looked for in this order in a checkpoint directory.
WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_WEIGHTS + ".index.json", TORCH_WEIGHTS, TORCH_WEIGHTS + ".index.json")
_MAX_LISTED = 12  # keys named in one message before "... and N more"


def find_weights(directory: str) -> str:
    """The weight file of a checkpoint directory: the first of WEIGHT_FILES present, else its single .ckpt."""
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    ckpts = sorted(n for n in os.listdir(directory) if n.endswith(".ckpt"))
    if len(ckpts) == 1:
        return os.path.join(directory, ckpts[0])
    hint = f" (several .ckpt files: {ckpts}; pass one of them)" if ckpts else ""
    raise FileNotFoundError(f"no weight file in {directory}: expected one of {', '.join(WEIGHT_FILES)} or a single "
                            f".ckpt{hint}")


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the upper half of a float32: widen the uint16 bit patterns."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def listed(keys: list[str]) -> str:
    """`keys` for an error message: the first few, then how many more."""
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")
