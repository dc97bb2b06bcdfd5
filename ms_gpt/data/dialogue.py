"""Chit-chat dialogue data: chatterbot-style YAML conversations, the held-out split by first turn, their encoding
in the chat format (`[CLS] t1 [SEP] t2 [SEP] ...`, `ms_gpt.dialogue.encode_dialogue`), and plain-text streams of
`[CLS] line [SEP]` documents for pretraining. Batching is `data.padding` (`lm_rows`, `EpochBatches`, `eval_batches`).

Must not import: ms_gpt.engine, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..paths import resolve_path
from .lm import read_text

LONG_DIALOGUES = ("drop", "truncate")


@dataclass
class DialogueData:
    train: list[np.ndarray]  # encoded conversations (int32 ids, no padding)
    heldout: list[np.ndarray]
    heldout_turns: list[list[str]]  # the held-out conversations as text (for the chat evaluation)
    stats: dict[str, Any]


def _yaml_files(paths: Sequence[str]) -> list[str]:
    files: list[str] = []
    for spec in paths:
        path = resolve_path(spec)
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.yml")) + glob.glob(os.path.join(path, "*.yaml")))
            if not found:
                raise FileNotFoundError(f"train_files: no *.yml files in directory {path}")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"train_files: {spec} not found")
    return files


def read_conversations(paths: Sequence[str]) -> tuple[list[list[str]], int]:
    """All conversations of chatterbot-style YAML files (`conversations: [[turn, ...], ...]`), in file order.

    Numbers written as turns (YAML reads `- 42` as an int) become text. Conversations with an empty or non-text
    turn, or with fewer than two turns, are skipped; returns (conversations, number skipped).
    """
    import yaml

    conversations: list[list[str]] = []
    skipped = 0
    for path in _yaml_files(paths):
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
        if not isinstance(data, dict) or not isinstance(data.get("conversations"), list):
            raise ValueError(f"{path}: expected a mapping with a 'conversations' list of turn lists")
        for conv in data["conversations"]:
            if not isinstance(conv, list):
                skipped += 1
                continue
            turns = [str(t).strip() if isinstance(t, (str, int, float)) and not isinstance(t, bool) else ""
                     for t in conv]
            if len(turns) < 2 or not all(turns):
                skipped += 1
                continue
            conversations.append(turns)
    if not conversations:
        raise ValueError(f"train_files {list(paths)}: no usable conversation (each needs two or more text turns)")
    return conversations, skipped


def heldout_split(conversations: Sequence[Sequence[str]], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices). Conversations sharing a first turn stay on the same side; which first
    turns are held out depends only on `seed`."""
    groups: dict[str, list[int]] = {}
    for i, conv in enumerate(conversations):
        groups.setdefault(conv[0], []).append(i)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    target = max(1, int(round(fraction * len(conversations))))
    heldout: list[int] = []
    for k in order:
        if len(heldout) >= target:
            break
        heldout += groups[keys[k]]
    held = set(heldout)
    train = [i for i in range(len(conversations)) if i not in held]
    if not train:
        raise ValueError(f"validation_fraction={fraction} leaves no training conversation")
    return train, sorted(heldout)


def encode_conversation(tokenizer, turns: Sequence[str], max_length: int,
                        long_dialogues: str) -> tuple[Optional[list[int]], bool]:
    """(`[CLS] t1 [SEP] t2 [SEP] ...` ids or None when the conversation does not fit, whether turns were cut).

    Too long: `drop` gives None; `truncate` keeps the leading whole turns that fit (at least two: a turn and its
    reply), else None.
    """
    from ..dialogue import encode_dialogue

    ids = encode_dialogue(tokenizer, turns)
    if len(ids) <= max_length:
        return ids, False
    if long_dialogues == "drop":
        return None, False
    length, keep = 1, 0  # [CLS]
    for turn in turns:
        length += len(tokenizer.encode(turn)) + 1  # the turn and its [SEP]
        if length > max_length:
            break
        keep += 1
    return (encode_dialogue(tokenizer, turns[:keep]), True) if keep >= 2 else (None, False)



def load_dialogue_data(tokenizer, train_files: Sequence[str], validation_fraction: float, split_seed: int,
                       max_length: int, long_dialogues: str) -> DialogueData:
    """Read, split (`heldout_split`) and encode (`encode_conversation`) the conversations of `train_files`; the
    stats count what was read, skipped, dropped and truncated."""
    conversations, invalid = read_conversations(train_files)
    train_idx, held_idx = heldout_split(conversations, validation_fraction, split_seed)
    stats: dict[str, Any] = {"conversations": len(conversations), "skipped_invalid": invalid, "dropped_too_long": 0,
                             "truncated": 0}

    def encode(indices: list[int]) -> tuple[list[np.ndarray], list[list[str]]]:
        out, kept = [], []
        for i in indices:
            ids, cut = encode_conversation(tokenizer, conversations[i], max_length, long_dialogues)
            if ids is None:
                stats["dropped_too_long"] += 1
                continue
            stats["truncated"] += int(cut)
            out.append(np.asarray(ids, dtype=np.int32))
            kept.append(conversations[i])
        return out, kept

    train, _ = encode(train_idx)
    heldout, heldout_turns = encode(held_idx)
    if not train or not heldout:
        raise ValueError(f"max_seq_length={max_length} with long_dialogues={long_dialogues!r} leaves "
                         f"{len(train)} training and {len(heldout)} held-out conversations; raise max_seq_length")
    stats.update(train=len(train), heldout=len(heldout),
                 train_tokens=int(sum(len(x) for x in train)), heldout_tokens=int(sum(len(x) for x in heldout)))
    return DialogueData(train, heldout, heldout_turns, stats)


def text_stream(tokenizer, paths: Sequence[str], max_lines: int = 0, seed: int = 0) -> np.ndarray:
    """One id stream of `[CLS] line [SEP]` documents (the dialogue framing). The lines of all files are shuffled
    with `seed` first, so the first `max_lines` and the held-out tail both mix every file."""
    from ..dialogue import encode_dialogue

    lines = [ln.strip() for spec in paths for ln in read_text(resolve_path(spec)).splitlines() if ln.strip()]
    order = np.random.default_rng(seed).permutation(len(lines))
    if max_lines:
        order = order[:max_lines]
    ids: list[int] = []
    for i in order:
        ids += encode_dialogue(tokenizer, [lines[i]])
    return np.asarray(ids, dtype=np.int32)
