"""The data layer: every batch a model trains or evaluates on is built here, in numpy.

- `lm`:       text corpora and random language-model windows (`RandomWindows`, `eval_batches`), pre-shifted: they
              carry `targets` ({"input_ids": w[:-1], "targets": w[1:]}) for `model.NextTokenLoss`.
- `padding`:  padded example batches for classification, multiple choice and dialogue — padding policies, `collate`,
              the resumable `EpochBatches`, `eval_batches` — under HF's contract: `labels` are class indices, or
              (language-model rows) the input ids with padding at IGNORE_INDEX, shifted only inside the loss.
- `tasks`:    GPT-1 task formats and their readers (csv/json/txt files, IMDB archive, hub datasets).
- `dialogue`: chit-chat YAML conversations, the held-out split, their encoding, and plain-text streams.

Must not import: engine, recipes (data is below them); compat only where `tasks` opens a hub dataset.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class BatchSource(Protocol):
    """What the engine reads training batches from (`RandomWindows`, `EpochBatches`): `next_batch` returns a dict of
    numpy arrays over the engine's slots; `state_dict` is a JSON-able position saved with every checkpoint, and
    `load_state_dict` of that state makes a resumed run see the same batches as an uninterrupted one."""

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
