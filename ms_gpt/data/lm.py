"""Language-model windows: a text corpus, its token stream's 90/10 split, and random windows of block_size (+1 for
the targets) — pre-shifted, so they carry `targets` (not HF's `labels`): {"input_ids": w[:-1], "targets": w[1:]},
the batches of `model.NextTokenLoss`.

Must not import: ms_gpt.engine, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np


def read_text(path: str) -> str:
    """Read a UTF-8 corpus, with one clear error for a missing, unreadable or empty file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"training text not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    return text


def split_ids(ids: np.ndarray, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """First `train_fraction` of the stream for training, the rest for validation (the char-GPT convention)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    cut = int(train_fraction * len(ids))
    return ids[:cut], ids[cut:]


class RandomWindows:
    """Random windows of `block_size` + 1 tokens: input_ids = w[:-1], targets = w[1:] (every position has a target).

    Sampling is global: one generator draws `batch_size * world_size` starts per step and rank r takes its slice,
    so N data-parallel workers see exactly the batches one process would see at the N-times batch. The generator's
    state is the data position saved with checkpoints (the `ms_gpt.data` batch-source protocol).
    """

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        if len(ids) <= block_size + 1:
            raise ValueError(f"the token stream has {len(ids)} tokens; block_size={block_size} needs more than "
                             f"{block_size + 1}")
        self.ids = np.asarray(ids, dtype=np.int32)
        self.block_size, self.batch_size = block_size, batch_size
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)
        self._offsets = np.arange(block_size + 1)

    def windows(self, count: int) -> np.ndarray:
        starts = self.rng.integers(0, len(self.ids) - self.block_size - 1, size=count)
        return self.ids[starts[:, None] + self._offsets]

    def next_batch(self) -> dict[str, np.ndarray]:
        w = self.windows(self.batch_size * self.world_size)
        w = w[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return {"input_ids": w[:, :-1], "targets": w[:, 1:]}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def eval_batches(ids: np.ndarray, block_size: int, batch_size: int, iters: int, seed: int,
                 eval_batch_size: Optional[int] = None) -> Iterator[dict[str, np.ndarray]]:
    """`iters` random batches of `batch_size` windows — the mean of their losses is the figure reported — computed
    in larger chunks of `eval_batch_size` rows (fewer kernel launches; equal chunks give the same mean)."""
    sampler = RandomWindows(ids, block_size, batch_size, seed)
    rows = sampler.windows(batch_size * iters)
    chunk = eval_batch_size or batch_size
    if len(rows) % chunk:
        chunk = batch_size  # keep every chunk the same size so the mean over chunks equals the mean over batches
    for i in range(0, len(rows), chunk):
        w = rows[i:i + chunk]
        yield {"input_ids": w[:, :-1], "targets": w[:, 1:]}


def fetch_corpus(url: str, cache_dir: str, progressbar: bool = True) -> str:
    """Download a corpus by URL (when online) into cache_dir with the `download` package; return the local path."""
    from download import download

    os.makedirs(cache_dir, exist_ok=True)
    target = os.path.join(cache_dir, os.path.basename(url.split("?")[0]) or "download")
    if not os.path.exists(target):
        try:
            download(url, target, replace=False, progressbar=progressbar)
        except Exception as err:  # network errors come in many types; report one clear message
            raise RuntimeError(f"could not download {url}: {err}. Pass a local file instead (offline?)") from None
    return target
