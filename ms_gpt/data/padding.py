"""Padded batches of examples — padding policies, `collate`, the resumable `EpochBatches` and `eval_batches` — for
every recipe that trains on examples: classification, entailment, similarity, multiple choice and dialogue.

Must not import: ms_gpt.engine, ms_gpt.recipes, ms_gpt.compat (data is below them).

Every distinct batch shape costs a graph compilation (and on Ascend, static shapes are the rule), so the policy
decides how many shapes a run produces:

- `max_length`: every batch is padded to max_seq_length — one shape, one compile.
- `dynamic`:    each batch is padded to its longest sequence (what mindspore.dataset's padded_batch does), rounded up
                to a `multiple` (dialogue's pad_to_multiple_of), and the engine compiles ONE dynamic-shape graph
                (`Cell.set_inputs` with a `None` length axis) for all lengths.
- `bucket`:     each batch is padded up to the next of at most four fixed lengths (multiples of 32 up to
                max_seq_length, see `bucket_lengths`) — at most four static graphs.
- `auto`:       `max_length` where the device needs static shapes (Ascend), else `AUTO_POLICY` (chosen by measurement
                on the CPU backend: `benchmarks/bench_finetune.py`).

The batch contract (HF's): `input_ids`, `attention_mask`, and `labels` — the class index per example, or, for
language-model rows (`lm_rows`, the dialogue recipe) and multiple choice's LM head, the input ids themselves with
padding at IGNORE_INDEX; the model shifts LM labels inside its loss. Sequences are right-padded with `pad_id` and
attention_mask 0.

Training batches are fixed-size (the last partial batch of an epoch is dropped, so the batch axis never changes);
evaluation batches keep every example, and a short last batch is topped up with copies of its first row whose labels
are IGNORE_INDEX (they add nothing to the loss and are left out of metrics), so the batch axis stays fixed there too.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import numpy as np

from ..model import IGNORE_INDEX
from .tasks import Encoded

POLICIES = ("max_length", "dynamic", "bucket", "auto")
MAX_BUCKETS = 4
# what `auto` resolves to where shapes may vary (CPU, GPU): on MindSpore 2.7's CPU backend the static bucket graphs
# ran the recipes faster than one dynamic-shape graph, compiles included (benchmarks/bench_finetune.py)
AUTO_POLICY = "bucket"


def resolve_policy(policy: str, static_shapes: bool) -> str:
    if policy not in POLICIES:
        raise ValueError(f"padding={policy!r}; expected one of {', '.join(POLICIES)}")
    if policy == "auto":
        return "max_length" if static_shapes else AUTO_POLICY
    return policy


def bucket_lengths(max_length: int, multiple: int = 32, max_buckets: int = MAX_BUCKETS) -> list[int]:
    """At most `max_buckets` lengths: multiples of `multiple` below max_length (spaced wider when there would be
    more), then max_length itself: [32, 64] for 64, [32, 40] for 40, [32, 64, 96, 128] for 128, [128, 256, 384, 512]
    for 512."""
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    step = multiple * math.ceil(max_length / (max_buckets * multiple))
    return list(range(step, max_length, step)) + [max_length]


def padded_length(policy: str, longest: int, max_length: int, multiple: int = 1) -> int:
    """The length a batch whose longest sequence is `longest` is padded to (policy already resolved); `dynamic`
    rounds up to `multiple` (capped at max_length)."""
    if longest > max_length:
        raise ValueError(f"a sequence of {longest} tokens exceeds max_seq_length={max_length}")
    if policy == "max_length":
        return max_length
    if policy == "dynamic":
        return min(max_length, int(math.ceil(longest / multiple) * multiple))
    if policy == "bucket":
        return next(b for b in bucket_lengths(max_length) if b >= longest)
    raise ValueError(f"padding policy {policy!r} is not resolved; call resolve_policy first")


def lm_rows(rows: Sequence[Sequence[int]]) -> Encoded:
    """Token rows trained as language-model sequences (the dialogue recipe): one sequence per example and no class
    label; batch them with `lm_labels=True`."""
    return Encoded([[row] for row in rows], None, 1)


def collate(data: Encoded, index: np.ndarray, length: int, pad_id: int, multiple_choice: bool,
            lm_labels: bool) -> dict[str, np.ndarray]:
    """Pad the examples `index` of `data` to `length` and build the model's inputs.

    classification / entailment: input_ids [B, T], labels [B]. similarity: input_ids [B, 2, T], labels [B].
    language-model rows (`lm_rows`, `lm_labels`): input_ids [B, T], labels [B, T] (the ids, -100 on padding).
    multiple choice (double-heads model): input_ids [B, K, T], mc_token_ids [B, K] (the `_classify_` position),
    mc_labels [B], and with `lm_labels` the LM labels [B, K, T] (-100 on padding).
    """
    k = data.n_choices
    ids = np.full((len(index), k, length), pad_id, dtype=np.int32)
    mask = np.zeros((len(index), k, length), dtype=np.int32)
    last = np.zeros((len(index), k), dtype=np.int32)
    for row, i in enumerate(index):
        for c, seq in enumerate(data.sequences[i]):
            ids[row, c, :len(seq)] = seq
            mask[row, c, :len(seq)] = 1
            last[row, c] = len(seq) - 1
    if multiple_choice:
        batch = {"input_ids": ids, "attention_mask": mask, "mc_token_ids": last,
                 "mc_labels": data.labels[index].astype(np.int32)}
        if lm_labels:
            batch["labels"] = np.where(mask == 1, ids, IGNORE_INDEX).astype(np.int32)
        return batch
    if lm_labels:
        if k != 1:
            raise ValueError(f"language-model labels need one sequence per example, got {k}")
        ids, mask = ids[:, 0], mask[:, 0]
        return {"input_ids": ids, "attention_mask": mask,
                "labels": np.where(mask == 1, ids, IGNORE_INDEX).astype(np.int32)}
    labels = data.labels[index].astype(np.int32)
    if k == 1:
        ids, mask = ids[:, 0], mask[:, 0]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class EpochBatches:
    """Training batches of examples (task examples or `lm_rows`): every epoch a fresh seeded permutation, cut into
    full batches (the remainder of an epoch is dropped, so every batch has one size).

    Data parallel: each step draws `batch_size * world_size` examples and rank r takes its slice, so N workers see
    the batches one process would see at N times the batch; all ranks pad to the global batch's length. Resumable
    (the `next_batch/state_dict/load_state_dict` protocol of `ms_gpt.data`): the state is (epoch, position, the
    generator state that drew this epoch's permutation).
    """

    def __init__(self, data: Encoded, batch_size: int, policy: str, max_length: int, pad_id: int, seed: int,
                 multiple_choice: bool = False, lm_labels: bool = False, rank: int = 0, world_size: int = 1,
                 multiple: int = 1):
        self.data, self.batch_size = data, batch_size
        self.policy, self.max_length, self.pad_id, self.multiple = policy, max_length, pad_id, multiple
        self.multiple_choice, self.lm_labels = multiple_choice, lm_labels
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = len(data) // self.global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(data)} training examples are fewer than one batch of {self.global_batch}")
        self.rng = np.random.default_rng(seed)
        self.epoch, self.position = 0, 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._epoch_rng_state = self.rng.bit_generator.state
        self._order = self.rng.permutation(len(self.data))

    def next_batch(self) -> dict[str, np.ndarray]:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
        start = self.position * self.global_batch + self.rank * self.batch_size
        index = self._order[start:start + self.batch_size]
        self.position += 1
        # the length is decided over the global batch so every rank pads to the same shape
        global_index = self._order[self.position * self.global_batch - self.global_batch:
                                   self.position * self.global_batch]
        length = padded_length(self.policy, int(self.data.lengths[global_index].max()), self.max_length,
                               self.multiple)
        return collate(self.data, index, length, self.pad_id, self.multiple_choice, self.lm_labels)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "rng": self._epoch_rng_state}

    def load_state_dict(self, state: dict) -> None:
        if "rng" not in state:
            # {epoch, offset}: a checkpoint of the dialogue recipe before the data layer was unified; resume at the
            # same epoch (its generator state replayed from the seed) and the batch holding that offset
            self.rng = np.random.default_rng(self.seed)
            for _ in range(int(state["epoch"])):
                self.rng.permutation(len(self.data))
            self._start_epoch()
            self.epoch = int(state["epoch"])
            self.position = min(self.steps_per_epoch, int(state["offset"]) // self.global_batch)
            return
        self.rng.bit_generator.state = state["rng"]
        self._start_epoch()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def eval_batches(data: Encoded, batch_size: int, policy: str, max_length: int, pad_id: int,
                 multiple_choice: bool = False, lm_labels: bool = False, limit: Optional[int] = None,
                 multiple: int = 1, top_up_single: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """All examples (or the first `limit`) in order, in batches of `batch_size`. A short last batch is topped up to
    `batch_size` with copies of its first example labelled IGNORE_INDEX (see `real_rows`), so every evaluation
    batch has one batch size and evaluation compiles no extra graph for it. With `top_up_single=False` a single
    short batch (the whole set fits in one) keeps its size: one eval set has no other shape to match."""
    n = len(data) if limit is None else min(limit, len(data))
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        length = padded_length(policy, int(data.lengths[index].max()), max_length, multiple)
        missing = batch_size - len(index) if start or top_up_single else 0
        batch = collate(data, np.concatenate([index, np.full(missing, index[0])]), length, pad_id, multiple_choice,
                        lm_labels)
        if missing:
            for key in ("labels", "mc_labels"):
                if key in batch:
                    batch[key][len(index):] = IGNORE_INDEX
        yield batch


def real_rows(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of an evaluation batch's per-example labels that are real (not top-up rows)."""
    return np.asarray(labels).reshape(len(labels), -1)[:, 0] != IGNORE_INDEX
