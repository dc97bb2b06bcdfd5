"""ms_gpt: GPT-1 and GPT-2 on MindSpore (Ascend, GPU, CPU).

Importing ms_gpt does not import mindnlp (slow); `ms_gpt.compat.mindnlp` does, on first use.

Must not import: ms_gpt.compat, ms_gpt.data, ms_gpt.recipes (importing ms_gpt stays cheap).
"""
import os as _os
import sys as _sys

# MindSpore logs a warning per deprecated call at the default level; keep user-facing output readable.
_os.environ.setdefault("GLOG_v", "3")
# `python -m ms_gpt.X`: while this package is imported, sys.argv[0] is still "-m" (runpy sets the module's path only
# after), and MindSpore takes argv[0] at import as the entry script that its compile cache hashes (a path "<cwd>/-m"
# makes every cached compile fail). Point it at the module's file now, as runpy is about to.
if _sys.argv and _sys.argv[0] == "-m" and "-m" in getattr(_sys, "orig_argv", ()):
    _module = _sys.orig_argv[_sys.orig_argv.index("-m") + 1]
    _file = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), *_module.split(".")[1:]) + ".py"
    if _module.startswith("ms_gpt.") and _os.path.isfile(_file):
        _sys.argv[0] = _file

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

# LoRA adapters sit on top of checkpoint I/O and register PEFT adapter directories with it when imported: importing
# them here makes from_pretrained(adapter_dir) work without the user importing ms_gpt.lora.
from . import lora as _lora  # noqa: E402, F401

__all__ = ["GPTConfig", "TrainingArguments", "preset", "GPTModel", "GPTLMHeadModel", "GPTForSequenceClassification",
           "GPTDoubleHeadsModel", "generate", "Trainer", "load_tokenizer", "setup_device"]
__version__ = "0.1.0"
