"""Shared by the `python -m ms_gpt.X` entry points and the `ms-gpt-X` console scripts: user errors become one clear
line and exit code 2.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (it only starts the entry points).
"""
from __future__ import annotations

import sys


def run(main) -> int:
    try:
        main()
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


# The console scripts ([project.scripts] in pyproject.toml): `ms-gpt-X ...` does what `python -m ms_gpt.X ...` does.
def pretrain() -> int:
    from .pretrain import main
    return run(main)


def finetune() -> int:
    from .finetune import main
    return run(main)


def generate() -> int:
    from .generate import main
    return run(main)


def chat() -> int:
    from .chat import main
    return run(main)


def evaluate() -> int:
    from .evaluate import main
    return run(main)


def serve() -> int:
    from .serve import main
    return run(main)
