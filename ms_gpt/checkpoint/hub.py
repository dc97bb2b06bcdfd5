"""Hub names (`gpt2`, `uer/gpt2-chinese-cluecorpussmall`): the local snapshot directory of a Hugging Face Hub model,
from the HF cache or downloaded (config, one weight format, generation config and tokenizer files), failing fast
with one message when offline.

Must not import: any ms_gpt module but ms_gpt.checkpoint.files.
"""
from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

from .files import CONFIG_NAME, GENERATION_CONFIG_NAME, TOKENIZER_FILES, WEIGHT_FILES, find_weights

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_name(path: str) -> bool:
    """Whether `path` (not found locally) reads as a hub model id rather than a missing local file."""
    weight_or_config = (".ckpt", ".bin", ".safetensors", ".json", ".pt", ".pth")
    return bool(_HUB_ID.fullmatch(path)) and not path.endswith(weight_or_config)


def _hub_unavailable(name: str, reason: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name!r} is not a local file or directory, and it cannot be fetched from the Hugging "
                             f"Face Hub: {reason}. Download the model elsewhere and pass its local directory "
                             "(config.json + model.safetensors or pytorch_model.bin).")


def resolve_hub(name: str) -> str:
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
        find_weights(cached)
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
