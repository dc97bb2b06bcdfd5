"""Dialogue format of Chinese GPT-2 chit-chat models, a chat session over `generate`, and reply metrics.

A dialogue is `[CLS] turn1 [SEP] turn2 [SEP] ... turnN [SEP]` (BERT WordPiece ids): fine-tuning data and the chat
REPL share `encode_dialogue`, so the model is asked exactly the way it was taught. The reply to the last turn is
generated until the next `[SEP]`.

Must not import: ms_gpt.engine, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .generation import generate

# The dialogue format as HF keeps chat formats: a Jinja `chat_template` saved in tokenizer_config.json (the dialogue
# recipe sets it), so `apply_chat_template` (HF) and `ms_gpt.serve` build exactly `encode_dialogue`'s ids. Roles are
# not marked: turns alternate, and the reply is generated after the last [SEP] (no generation prompt needed).
DIALOGUE_CHAT_TEMPLATE = "{{ cls_token }}{% for message in messages %}{{ message['content'] }}{{ sep_token }}{% endfor %}"


def _special_id(tokenizer, attr: str) -> int:
    value = getattr(tokenizer, attr, None)
    if value is None:
        raise ValueError(f"dialogue format needs the tokenizer's {attr.replace('_id', '')} ([CLS]/[SEP]); "
                         f"{type(tokenizer).__name__} has none")
    return int(value)


def encode_dialogue(tokenizer, turns: Sequence[str], max_length: Optional[int] = None) -> list[int]:
    """`[CLS] t1 [SEP] t2 [SEP] ...` as ids, keeping the most recent whole turns that fit in `max_length`.

    When even the last turn alone does not fit, its end is kept (the words nearest the reply matter most).
    """
    if not turns:
        raise ValueError("encode_dialogue: no turns given")
    cls_id, sep_id = _special_id(tokenizer, "cls_token_id"), _special_id(tokenizer, "sep_token_id")
    if max_length is not None and max_length < 3:
        raise ValueError(f"encode_dialogue: max_length={max_length} leaves no room for a turn ([CLS] x [SEP])")
    kept: list[list[int]] = []
    length = 1  # [CLS]
    for turn in reversed(turns):
        ids = tokenizer.encode(turn) + [sep_id]
        if max_length is not None and length + len(ids) > max_length:
            if not kept:
                kept.append(ids[-(max_length - 1):])
            break
        kept.append(ids)
        length += len(ids)
    return [cls_id] + [i for ids in reversed(kept) for i in ids]


class ChatSession:
    """Multi-turn chat: keeps the history, builds the context of the last `max_history` turns, decodes the reply."""

    def __init__(self, model, tokenizer, max_history: int = 3, max_new_tokens: int = 32, **generate_kwargs):
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        if not 1 <= max_new_tokens < model.config.n_positions - 2:
            raise ValueError(f"max_new_tokens must be in [1, {model.config.n_positions - 3}] for n_positions="
                             f"{model.config.n_positions}, got {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_history = max_history
        self.max_new_tokens = max_new_tokens
        self.sep_id = _special_id(tokenizer, "sep_token_id")
        self.generate_kwargs = generate_kwargs
        self.history: list[str] = []

    def reset(self) -> None:
        self.history.clear()

    def reply(self, user_turn: str) -> str:
        """Answer one user turn; the turn and the answer join the history."""
        self.history.append(user_turn)
        context = encode_dialogue(self.tokenizer, self.history[-self.max_history:],
                                  max_length=self.model.config.n_positions - self.max_new_tokens)
        out = generate(self.model, np.asarray([context]), max_new_tokens=self.max_new_tokens,
                       eos_token_id=self.sep_id, pad_token_id=self.sep_id, min_new_tokens=1, **self.generate_kwargs)
        new = [int(t) for t in out[0, len(context):] if t != self.sep_id]
        answer = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.history.append(answer)
        return answer


# ---- reply metrics ---------------------------------------------------------------------------------------------
def segment(text: str) -> list[str]:
    """jieba word segmentation without whitespace tokens."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading banner would go to every caller's stderr
    return [w for w in jieba.lcut(text) if w.strip()]


def reply_metrics(replies: Sequence[str]) -> dict[str, float]:
    """distinct-1/2 (unique word n-grams / all word n-grams, pooled over the replies; n-grams do not cross replies)
    and the mean reply length in words, on jieba segmentation. Empty input gives zeros."""
    words = [segment(r) for r in replies]
    unigrams = [w for ws in words for w in ws]
    bigrams = [pair for ws in words for pair in zip(ws, ws[1:])]

    def distinct(grams: list) -> float:
        return len(set(grams)) / len(grams) if grams else 0.0

    return {
        "distinct_1": distinct(unigrams),
        "distinct_2": distinct(bigrams),
        "mean_reply_len": len(unigrams) / len(words) if words else 0.0,
    }
