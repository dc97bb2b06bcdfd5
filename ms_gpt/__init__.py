"""ms_gpt: GPT-1 and GPT-2 on MindSpore (Ascend, GPU, CPU).

Importing ms_gpt does not import mindnlp (slow); `ms_gpt.compat.mindnlp` does, on first use.
"""
import os as _os

# MindSpore logs a warning per deprecated call at the default level; keep user-facing output readable.
_os.environ.setdefault("GLOG_v", "3")

from .config import GPTConfig, TrainingArguments, preset  # noqa: E402
from .device import setup_device  # noqa: E402
from .engine.trainer import Trainer  # noqa: E402
from .generation import generate  # noqa: E402
from .model import (  # noqa: E402
    GPTDoubleHeadsModel,
    GPTForSequenceClassification,
    GPTLMHeadModel,
    GPTModel,
)
from .tokenizers import load_tokenizer  # noqa: E402

__all__ = ["GPTConfig", "TrainingArguments", "preset", "GPTModel", "GPTLMHeadModel", "GPTForSequenceClassification",
           "GPTDoubleHeadsModel", "generate", "Trainer", "load_tokenizer", "setup_device"]
__version__ = "0.1.0"
