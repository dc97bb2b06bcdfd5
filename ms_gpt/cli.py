"""The console scripts ([project.scripts] in pyproject.toml): `ms-gpt-X ...` does what `python -m ms_gpt.X ...` does.
The table imports each entry point inside its function; the entry points never import this module (they run their
main() through ms_gpt.entry.run), so there is no import cycle.

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (it only starts the entry points).
"""
from __future__ import annotations

from .entry import run  # noqa: F401  (also importable from here, as before)


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


def export() -> int:
    from .export import main
    return run(main)


def serve() -> int:
    from .serve import main
    return run(main)
