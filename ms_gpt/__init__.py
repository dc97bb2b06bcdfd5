"""ms_gpt: GPT-1 and GPT-2 on MindSpore (Ascend, GPU, CPU)."""
import os as _os

# MindSpore logs a warning per deprecated call at the default level; keep user-facing output readable.
_os.environ.setdefault("GLOG_v", "3")

from .config import GPTConfig, preset  # noqa: E402
from .model import (  # noqa: E402
    GPTDoubleHeadsModel,
    GPTForSequenceClassification,
    GPTLMHeadModel,
    GPTModel,
)

__all__ = ["GPTConfig", "preset", "GPTModel", "GPTLMHeadModel", "GPTForSequenceClassification",
           "GPTDoubleHeadsModel"]
__version__ = "0.1.0"
