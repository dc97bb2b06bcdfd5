"""`.safetensors` files read through the `safetensors` library, bfloat16 included (widened to float32), with one
clear error naming the file for a truncated or corrupt one. (Writing is `safetensors.numpy.save_file`.)

Must not import: any ms_gpt module but ms_gpt.checkpoint.files.
"""
from __future__ import annotations

import numpy as np

from .files import bf16_to_f32

# the dtypes ms_gpt reads (what a GPT checkpoint holds); BF16 is widened to float32
READ_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """{key: array} of a .safetensors file (keys sorted, as the library lists them); bfloat16 becomes float32.

    The library checks the header and that the data covers every tensor. `safetensors.numpy` cannot return BF16
    (numpy has no bfloat16 type), so those tensors come as raw bytes from `safetensors.deserialize`, which reads the
    whole file: only files holding BF16 pay that.
    """
    import safetensors
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}
            unread = {key: dtype for key, dtype in dtypes.items() if dtype not in READ_DTYPES}
            if unread:
                key, dtype = next(iter(unread.items()))
                raise ValueError(f"{path}: tensor {key!r} has dtype {dtype}, which ms_gpt does not read "
                                 f"(expected one of {', '.join(READ_DTYPES)})")
            out = {key: f.get_tensor(key) for key, dtype in dtypes.items() if dtype != "BF16"}
        if "BF16" in dtypes.values():
            with open(path, "rb") as fh:
                for key, view in safetensors.deserialize(fh.read()):
                    if dtypes[key] == "BF16":
                        out[key] = bf16_to_f32(np.frombuffer(view["data"], dtype="<u2")).reshape(view["shape"])
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path}: truncated or corrupt safetensors file ({err})") from None
    return {key: out[key] for key in dtypes}
