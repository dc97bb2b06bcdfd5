"""Text generation for `GPTLMHeadModel`: greedy and sampled decoding with a static KV cache.

The KV cache of a batch size is a set of Parameters with n_positions + C slots (C = PREFILL_CHUNK, or n_positions
when smaller), in the model's compute dtype, written in place (only the new slots move). The prompt enters it in
C-token chunks and each new token in a one-token step that attends to the first W <= n_positions slots only, W = the
call's prompt + new tokens rounded up to WINDOW_STEP: on CPU and GPU one graph whose window axis is dynamic serves
every W; on Ascend and under `emulate_ascend` (static decode windows, `device.ExecutionPolicy`) one graph per window
in STATIC_WINDOWS plus one of n_positions. These graphs are compiled once per batch size, on its first call, and reused by every later call,
whatever its prompt length or max_new_tokens (a chat's turns included). Greedy decoding takes the argmax in the
graph; other token choice (repetition penalty, temperature, top-k, top-p, sampling) runs on the host with a seeded
numpy Generator on the step's logits, so a seed gives the same text on every device.

Layout of a batch (HF conventions): rows are LEFT-padded, `attention_mask` is 1 on real tokens, and position ids are
`cumsum(mask) - 1`, so every row's first real token sits at position 0 whatever its padding.

The compiled graphs read the model's Parameters in place, so weights updated in place (an optimizer step,
`Parameter.copy_`, `ops.assign`) are seen by the next call. `Parameter.set_data` after a graph has compiled is not
safe on MindSpore 2.7: the graph keeps reading the replaced (freed) buffer. Replacing a Parameter object (e.g.
`resize_token_embeddings`) is detected and traced again.

Must not import: ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from .device import compiled, current_policy, graph_mode

PREFILL_CHUNK = 32  # the prompt enters the cache in chunks of this many tokens (at most n_positions: `_chunk`)
WINDOW_STEP = 32  # a decode step attends to the first W cache slots, W a multiple of this (dynamic window axis)
STATIC_WINDOWS = (256,)  # static-shape devices: one decode graph per window here, plus one of n_positions
CACHE_BUCKET = 64  # the no-cache path runs windows of a multiple of this, capped at n_positions
IdsLike = Union[np.ndarray, Sequence[Sequence[int]], Sequence[int], Tensor]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _chunk(config) -> int:
    """The prefill chunk of a model: PREFILL_CHUNK, or n_positions when that is smaller (a chunk is one forward
    over that many positions)."""
    return min(PREFILL_CHUNK, config.n_positions)


# ---- compiled steps ---------------------------------------------------------------------------------------------
class _ModelStep(nn.Cell):
    """A compiled step over `model`; auto_prefix=False keeps the model's parameter names its own (HF keys)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)
        self.model = model


class _KVCache:
    """The static key/value cache of one batch size: per layer two Parameters [B * H * slots, D], written in place.

    `slots` = n_positions + PREFILL_CHUNK, so one cache (and so one pair of compiled graphs) serves every prompt
    length and max_new_tokens of that batch size; the extra chunk holds the padding after a prompt's last chunk.
    """

    def __init__(self, config, batch: int):
        self.slots = config.n_positions + _chunk(config)
        shape = (batch * config.n_head * self.slots, config.head_dim)  # row (b * H + h) * slots + slot
        # the model's compute dtype (generate/chat/evaluate --dtype): float16 halves the cache on Ascend
        dtype = {"float32": np.float32, "float16": np.float16}.get(getattr(config, "compute_dtype", "float32"))

        def make(kind):
            if dtype is None:  # bfloat16 has no numpy type: made in float32, cast by MindSpore
                values = Tensor(np.zeros(shape, np.float32)).astype(ms.bfloat16)
            else:
                values = Tensor(np.zeros(shape, dtype))
            return ParameterTuple(Parameter(values, name=f"kv_cache.b{batch}.{i}.{kind}", requires_grad=False)
                                  for i in range(config.n_layer))
        self.keys, self.values = make("key"), make("value")


class _CachedStep(_ModelStep):
    """T new tokens [B, T] written to slots cache_position.. of the cache -> (greedy ids [B], logits [B, V]) at
    row `last_index` of the T. T = PREFILL_CHUNK for the prompt (chunk by chunk), T = 1 for a decode step; the
    greedy choice is made in the graph so that greedy decoding copies B ids to the host, not B x V logits."""

    def __init__(self, model, cache: _KVCache):
        super().__init__(model)
        self.keys, self.values = cache.keys, cache.values
        self.n_layer = len(cache.keys)

    def construct(self, input_ids, position_ids, cache_mask, cache_position, last_index, window_slots=None):
        """cache_mask [B, W] over the attended slots; window_slots int32 [W] = 0..W-1 (None: all slots)."""
        past = tuple((self.keys[i], self.values[i]) for i in range(self.n_layer))
        return cached_step(self.model, past, input_ids, position_ids, cache_mask, cache_position, last_index,
                           window_slots)


def cached_step(model, past, input_ids, position_ids, cache_mask, cache_position, last_index, window_slots=None):
    """The body of a cached prefill / decode step over the caches `past` ((key, value) per layer, written in place):
    (greedy ids [B], logits [B, V]). Shared by `_CachedStep` and the exported MindIR graphs (`ms_gpt.exporter`)."""
    hidden, _ = model.transformer(input_ids, cache_mask, None, position_ids, past, cache_position, True,
                                  window_slots)
    if hidden.shape[1] > 1:
        hidden = ops.gather(hidden, last_index, 1)
    logits = model.logits(hidden, decoding=True)
    logits = logits.reshape(logits.shape[0], -1)
    return ops.argmax(logits, -1), logits


class _Forward(_ModelStep):
    """No cache: the whole (right-padded) window again -> logits at slot `last_index` [B, V]."""

    def construct(self, input_ids, attention_mask, position_ids, last_index):
        hidden = self.model.transformer(input_ids, attention_mask, None, position_ids)
        logits = self.model.logits(ops.gather(hidden, last_index, 1))
        return logits.reshape(logits.shape[0], -1)


class _CompiledSteps:
    """The cached prefill / decode graphs (per batch size) and the full-forward graph of one model.

    Each step is a Cell run in GRAPH_MODE (`device.compiled`, as the training engine's steps): MindSpore compiles
    it once per input signature (shapes and dtypes) and keeps the graph, so holding these Cells across generate()
    calls is what makes a repeated call compile nothing. The cached steps' shapes depend only on the batch size (the
    prompt is fed in PREFILL_CHUNK-token chunks, the cache always has n_positions + PREFILL_CHUNK slots), so any
    prompt length and max_new_tokens reuse them; `counts` reads each Cell's graph cache.
    """

    def __init__(self, model):
        self.model = model
        self.param_ids = _param_ids(model)
        self.by_batch: dict = {}
        self.forward_cell = _Forward(model)
        self.forward = compiled(self.forward_cell)

    def cached(self, batch: int):
        """(prefill, decode, windows, cache slots) for this batch size. The cache Parameters are made and the decode
        step compiled on first use, so that a later, longer call does not stall on a compile: on CPU / GPU one graph
        with a dynamic window axis (any W), on static-shape devices one graph per window in `windows`."""
        if batch not in self.by_batch:
            cache = _KVCache(self.model.config, batch)
            cells = (_CachedStep(self.model, cache), _CachedStep(self.model, cache))
            steps = tuple(compiled(cell) for cell in cells)
            static = _static_shapes()
            # every window <= n_positions: a decode step never needs more (the prompt is trimmed to fit)
            n_positions = self.model.config.n_positions
            windows = sorted({min(w, n_positions) for w in STATIC_WINDOWS} | {n_positions}) if static else None
            decode = cells[1]
            with graph_mode():
                if static:
                    for w in windows:
                        decode.compile(*_decode_inputs(batch, w))
                else:
                    decode.set_inputs(*_decode_inputs(batch, None))
                    decode.compile(*_decode_inputs(batch, min(WINDOW_STEP, n_positions)))
            self.by_batch[batch] = (cells, steps, windows, cache.slots)
        _, (prefill, decode), windows, slots = self.by_batch[batch]
        return prefill, decode, windows, slots

    @property
    def counts(self) -> dict:
        cells = [cells for cells, _, _, _ in self.by_batch.values()]
        return {"prefill": sum(len(c[0].compile_cache) for c in cells),
                "decode": sum(len(c[1].compile_cache) for c in cells),
                "forward": len(self.forward_cell.compile_cache)}


def _param_ids(model) -> tuple:
    return tuple(id(p) for p in model.get_parameters())


def _compiled_steps(model) -> _CompiledSteps:
    steps = model.__dict__.get("_generation_steps")
    # A compiled graph holds the Parameter objects it was traced with; if one was replaced (resize_token_embeddings,
    # a loader assigning new Parameters), trace again rather than generate with stale weights.
    if steps is None or steps.param_ids != _param_ids(model):
        steps = _CompiledSteps(model)
        model.__dict__["_generation_steps"] = steps
    return steps


def compile_counts(model) -> dict:
    """How many times generate() has compiled each of its steps for `model`: {"prefill", "decode", "forward"}.

    "forward" is the no-cache path. Counts grow by one per new input shape; a call whose shapes were seen before adds 0.
    """
    return dict(_compiled_steps(model).counts)


# ---- token choice ----------------------------------------------------------------------------------------------
class TokenChooser:
    """Turns one step's logits [B, V] into the next token per row: repetition penalty, then (when sampling)
    temperature, top-k and top-p filtering and a draw from a seeded numpy Generator."""

    def __init__(self, vocab_size: int, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: Optional[int] = None):
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
        self.vocab_size = vocab_size
        self.do_sample = do_sample
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.repetition_penalty = float(repetition_penalty)
        self.rng = np.random.default_rng(seed)
        self.seen: Optional[np.ndarray] = None  # bool [B, V]: tokens of each row so far (repetition penalty)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that changes the scores: the argmax of the raw logits (taken in the graph)."""
        return not self.do_sample and self.repetition_penalty == 1.0

    def observe(self, ids: np.ndarray, mask: Optional[np.ndarray] = None) -> None:
        """Record tokens [B, T] (where mask is 1) as already present in each row."""
        if self.repetition_penalty == 1.0:
            return
        if self.seen is None:
            self.seen = np.zeros((ids.shape[0], self.vocab_size), dtype=bool)
        rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
        keep = np.ones(ids.shape, dtype=bool) if mask is None else mask.astype(bool)
        self.seen[rows[keep], ids[keep]] = True

    def __call__(self, logits: np.ndarray, banned: Sequence[int] = ()) -> np.ndarray:
        scores = logits.astype(np.float64)
        if self.seen is not None:
            penalised = np.where(scores < 0, scores * self.repetition_penalty, scores / self.repetition_penalty)
            scores = np.where(self.seen, penalised, scores)
        if len(banned):
            scores[:, list(banned)] = -np.inf
        if not self.do_sample:
            return scores.argmax(axis=-1)
        scores = scores / self.temperature
        if 0 < self.top_k < scores.shape[-1]:
            kth = np.partition(scores, -self.top_k, axis=-1)[:, -self.top_k][:, None]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if self.top_p < 1.0:
            order = np.argsort(-probs, axis=-1, kind="stable")
            sorted_probs = np.take_along_axis(probs, order, axis=-1)
            # keep the most likely tokens until their mass reaches top_p (the one crossing it included)
            mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
            drop_sorted = mass_before >= self.top_p
            drop = np.zeros_like(drop_sorted)
            np.put_along_axis(drop, order, drop_sorted, axis=-1)
            probs = np.where(drop, 0.0, probs)
        cdf = np.cumsum(probs, axis=-1)
        target = self.rng.random(probs.shape[0]) * cdf[:, -1]
        return np.minimum((cdf <= target[:, None]).sum(axis=-1), probs.shape[-1] - 1)


# ---- input preparation -----------------------------------------------------------------------------------------
def _as_numpy_ids(input_ids: IdsLike) -> np.ndarray:
    if isinstance(input_ids, Tensor):
        input_ids = input_ids.asnumpy()
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq] (or one sequence), got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be integers, got dtype {ids.dtype}")
    return ids.astype(np.int64)


def _prepare_prompt(model, input_ids, attention_mask, max_new_tokens: int):
    """Validate and left-align the prompt; trim it (or max_new_tokens) to fit n_positions with a warning.

    Returns (ids [B, T], mask [B, T], max_new_tokens) with leading all-padding columns dropped.
    """
    config = model.config
    ids = _as_numpy_ids(input_ids)
    if ids.shape[1] == 0:
        raise ValueError("generate: the prompt is empty; give at least one token (e.g. a BOS/EOS id)")
    if attention_mask is None:
        mask = np.ones(ids.shape, dtype=np.int64)
    else:
        if isinstance(attention_mask, Tensor):
            attention_mask = attention_mask.asnumpy()
        mask = np.asarray(attention_mask).astype(np.int64)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
    real = mask.astype(bool)
    empty_rows = np.flatnonzero(~real.any(axis=1))
    if empty_rows.size:
        raise ValueError(f"generate: prompt row {int(empty_rows[0])} has no real token (attention_mask all 0)")
    # left padding only: once a row's real tokens start they run to the end
    if (np.diff(real.astype(np.int8), axis=1) < 0).any():
        bad = int(np.flatnonzero((np.diff(real.astype(np.int8), axis=1) < 0).any(axis=1))[0])
        raise ValueError(f"generate: attention_mask row {bad} is not left-padded (decoder-only generation continues "
                         "after the last column, so padding must come first)")
    bad_ids = real & ((ids < 0) | (ids >= config.vocab_size))
    if bad_ids.any():
        raise ValueError(f"generate: input_ids contains id {int(ids[bad_ids][0])} outside the vocabulary "
                         f"[0, {config.vocab_size})")
    # padding may hold any value (-1, out-of-vocabulary ids); the model only ever sees id 0 there
    ids, mask = np.where(real, ids, 0), real.astype(np.int64)
    longest = int(real.sum(axis=1).max())
    ids, mask = ids[:, -longest:], mask[:, -longest:]
    n_positions = config.n_positions
    if max_new_tokens > n_positions - 1:
        warnings.warn(f"generate: max_new_tokens={max_new_tokens} does not fit n_positions={n_positions} with a "
                      f"prompt; generating {n_positions - 1} tokens")
        max_new_tokens = n_positions - 1
    if longest + max_new_tokens > n_positions:
        keep = n_positions - max_new_tokens
        warnings.warn(f"generate: prompt of {longest} tokens + {max_new_tokens} new tokens exceeds n_positions="
                      f"{n_positions}; keeping the last {keep} prompt tokens")
        ids, mask = ids[:, -keep:], mask[:, -keep:]
    return ids, mask, max_new_tokens


def position_ids_from_mask(mask: np.ndarray) -> np.ndarray:
    """HF convention for left padding: positions count real tokens (cumsum - 1); padding gets 0."""
    return np.maximum(np.cumsum(mask, axis=-1) - 1, 0)


def _i32(array) -> Tensor:
    return Tensor(np.ascontiguousarray(array, dtype=np.int32))


def _static_shapes() -> bool:
    """Whether decode windows are static (Ascend, or `emulate_ascend`): then no graph with a dynamic window axis.
    The execution policy decides (`device.ExecutionPolicy.static_decode_windows`)."""
    return current_policy().static_decode_windows


def _decode_inputs(batch: int, window: Optional[int]) -> tuple:
    """Placeholder inputs of a one-token decode step attending to `window` slots (None: the dynamic-window spec)."""
    if window is None:
        return (Tensor(shape=[batch, 1], dtype=ms.int32), Tensor(shape=[batch, 1], dtype=ms.int32),
                Tensor(shape=[batch, None], dtype=ms.int32), Tensor(shape=[1], dtype=ms.int32),
                Tensor(shape=[1], dtype=ms.int32), Tensor(shape=[None], dtype=ms.int32))
    return (_i32(np.zeros((batch, 1))), _i32(np.zeros((batch, 1))), _i32(np.zeros((batch, window))),
            _i32([window - 1]), _i32([0]), _i32(np.arange(window)))


# ---- decoders: prompt in, logits of the next position out -------------------------------------------------------
class _CachedDecoder:
    """Feed the prompt into the static cache chunk by chunk, then one token per step.

    Slot i of the cache holds prompt column i (left padding included, masked out), then the new tokens in order.
    The last chunk is right-padded with id 0; those slots are hidden from the real tokens (a token sees only slots
    up to its own) and overwritten by the new tokens. `start` and `advance` return (greedy ids [B], logits [B, V]) as
    device tensors; the caller copies to the host only what it needs.
    """

    def __init__(self, steps: _CompiledSteps, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int,
                 n_positions: int):
        batch, width = ids.shape
        self.prefill, self.decode, windows, slots = steps.cached(batch)
        # the smallest window holding every slot this call attends to (the last new token is never fed back)
        needed = width + max_new_tokens - 1
        window = min(_round_up(needed, WINDOW_STEP), n_positions) if windows is None else \
            min(w for w in windows if w >= needed)
        self.chunk = min(PREFILL_CHUNK, n_positions)
        chunks = _round_up(width, self.chunk)
        self.ids = np.pad(ids, ((0, 0), (0, chunks - width)))
        self.positions = np.pad(position_ids_from_mask(mask), ((0, 0), (0, chunks - width)))
        # every slot after the prompt will hold a real token; the model hides the future ones by slot <= own slot
        cache_mask = np.ones((batch, slots), dtype=np.int32)
        cache_mask[:, :width] = mask
        self.cache_mask = _i32(cache_mask)
        self.window_mask = _i32(cache_mask[:, :window])
        self.window_slots = _i32(np.arange(window))
        self.width = width
        self.next_position = mask.sum(axis=1)  # position id of the next token, per row
        self.slot = width  # cache slot of the next token

    def start(self):
        out = None
        for begin in range(0, self.ids.shape[1], self.chunk):
            end = begin + self.chunk
            last = min(self.width - 1 - begin, self.chunk - 1)
            out = self.prefill(_i32(self.ids[:, begin:end]), _i32(self.positions[:, begin:end]), self.cache_mask,
                               _i32([begin]), _i32([last]))
        return out

    def advance(self, tokens: np.ndarray):
        out = self.decode(_i32(tokens[:, None]), _i32(self.next_position[:, None]), self.window_mask,
                          _i32([self.slot]), _i32([0]), self.window_slots)
        self.slot += 1
        self.next_position = self.next_position + 1
        return out


class _RecomputeDecoder:
    """The reference path: every step runs the whole sequence again (right-padded to a CACHE_BUCKET multiple so
    that a whole generation compiles a handful of shapes, not one per length)."""

    def __init__(self, steps: _CompiledSteps, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int,
                 n_positions: int):
        self.steps = steps
        self.n_positions = n_positions
        total = ids.shape[1] + max_new_tokens
        self.ids = np.zeros((ids.shape[0], total), dtype=np.int64)
        self.mask = np.zeros((ids.shape[0], total), dtype=np.int64)
        self.ids[:, :ids.shape[1]] = ids
        self.mask[:, :ids.shape[1]] = mask
        self.length = ids.shape[1]

    def _run(self) -> np.ndarray:
        window = min(_round_up(self.length, CACHE_BUCKET), self.n_positions)
        ids = np.zeros((self.ids.shape[0], window), dtype=np.int64)
        mask = np.zeros_like(ids)
        ids[:, :self.length] = self.ids[:, :self.length]
        mask[:, :self.length] = self.mask[:, :self.length]
        logits = self.steps.forward(_i32(ids), _i32(mask), _i32(position_ids_from_mask(mask)),
                                    _i32([self.length - 1]))
        return None, logits

    def start(self) -> np.ndarray:
        return self._run()

    def advance(self, tokens: np.ndarray) -> np.ndarray:
        self.ids[:, self.length] = tokens
        self.mask[:, self.length] = 1
        self.length += 1
        return self._run()


# ---- public API ------------------------------------------------------------------------------------------------
def _token_set(value, name: str, vocab_size: int) -> list[int]:
    """The ids of `value` (an id, a list of ids or None) inside the vocabulary. An id outside it can never be produced,
    so, as in HF, it is dropped with a one-line warning (e.g. GPT2Config's default eos 50256 with a small vocab)."""
    if value is None:
        return []
    values = [int(value)] if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    outside = [v for v in values if not 0 <= v < vocab_size]
    if outside:
        warnings.warn(f"generate: {name}={outside[0] if len(outside) == 1 else outside} is outside the vocabulary "
                      f"[0, {vocab_size}); ignored", stacklevel=3)
    return [v for v in values if 0 <= v < vocab_size]


# What generate() uses when neither the call nor the checkpoint's generation_config.json sets a value.
GENERATION_DEFAULTS = {"max_new_tokens": 20, "min_new_tokens": 0, "do_sample": False, "temperature": 1.0,
                       "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "num_return_sequences": 1}
# generation_config.json fields generate() honours (HF GenerationConfig names)
GENERATION_CONFIG_KEYS = ("max_length", *GENERATION_DEFAULTS, "eos_token_id", "pad_token_id", "bos_token_id")


def generation_config(model) -> dict:
    """The checkpoint's generation defaults as HF reads them: the fields of its generation_config.json (kept by
    `from_pretrained` as `model.generation_config`), or, without that file, bos/eos/pad ids from config.json
    (HF's `GenerationConfig.from_model_config`). Only fields that are set (not None) are returned."""
    saved = getattr(model, "generation_config", None)
    if saved is None:
        config = model.config
        saved = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
                 "pad_token_id": config.pad_token_id}
    unsupported = {k: saved[k] for k, off in _UNSUPPORTED_GENERATION.items() if saved.get(k) not in (None, off)}
    if unsupported:
        warnings.warn(f"generate: generation_config.json sets {unsupported}, which ms_gpt does not implement; "
                      "ignored", stacklevel=3)
    return {k: saved[k] for k in GENERATION_CONFIG_KEYS if saved.get(k) is not None}


# HF decoding strategies / processors a generation_config.json may switch on, with their "off" value
_UNSUPPORTED_GENERATION = {"num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "no_repeat_ngram_size": 0,
                           "typical_p": 1.0, "min_p": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
                           "bad_words_ids": None, "force_words_ids": None, "min_length": 0,
                           "forced_eos_token_id": None, "forced_bos_token_id": None, "length_penalty": 1.0}


def resolve_generation_options(model, prompt_width: int, **explicit) -> dict:
    """generate()'s settings: explicit arguments (not None) win, then the checkpoint's generation config, then
    GENERATION_DEFAULTS. `max_length` (prompt width + new tokens, as in HF) counts only when no max_new_tokens is set
    at the same level; eos ids (and a saved pad id) outside the vocabulary are dropped with a warning; pad falls
    back to the first eos, then 0. Returns every GENERATION_DEFAULTS key plus `eos_token_id` (a list) and
    `pad_token_id`."""
    saved = generation_config(model)
    vocab_size = model.config.vocab_size
    out = {}
    for level in (explicit, saved):
        if level.get("max_new_tokens") is not None:
            out["max_new_tokens"] = level["max_new_tokens"]
            break
        if level.get("max_length") is not None:
            max_length = int(level["max_length"])
            if max_length <= prompt_width:
                warnings.warn(f"generate: max_length={max_length} leaves no room after a prompt of {prompt_width} "
                              "tokens; generating nothing (use max_new_tokens)", stacklevel=3)
            out["max_new_tokens"] = max(0, max_length - prompt_width)
            break
    for key, default in GENERATION_DEFAULTS.items():
        if key not in out:
            value = explicit.get(key)
            out[key] = value if value is not None else saved.get(key, default)
    eos = explicit.get("eos_token_id")
    out["eos_token_id"] = _token_set(eos if eos is not None else saved.get("eos_token_id"), "eos_token_id",
                                     vocab_size)
    pad = explicit.get("pad_token_id")
    if pad is None:  # an explicit pad is written as given (it is never fed to the model); a saved one must decode
        pad = next(iter(_token_set(saved.get("pad_token_id"), "pad_token_id", vocab_size)), None)
    out["pad_token_id"] = int(pad) if pad is not None else (out["eos_token_id"][0] if out["eos_token_id"] else 0)
    return out


def generate(model, input_ids: IdsLike, attention_mask=None, max_new_tokens: Optional[int] = None,
             do_sample: Optional[bool] = None, temperature: Optional[float] = None, top_k: Optional[int] = None,
             top_p: Optional[float] = None, repetition_penalty: Optional[float] = None,
             eos_token_id: Union[int, Sequence[int], None] = None, pad_token_id: Optional[int] = None,
             seed: Optional[int] = None, use_cache: bool = True, min_new_tokens: Optional[int] = None,
             num_return_sequences: Optional[int] = None,
             on_token: Optional[Callable[[np.ndarray], None]] = None, max_length: Optional[int] = None) -> np.ndarray:
    """Continue `input_ids` ([B, T] or one sequence [T]; rows LEFT-padded, `attention_mask` 1 = real token).

    Returns int64 numpy [B * num_return_sequences, T + n] = prompt + new tokens, n <= max_new_tokens: a row that
    produced an eos id is filled with `pad_token_id` afterwards, and generation stops once every row has.
    Every option left as None comes from the checkpoint's generation_config.json when it sets it (as in HF: eos/pad
    ids, max_new_tokens or max_length = prompt + new tokens, do_sample, temperature, top_k, top_p, ...), else from
    GENERATION_DEFAULTS (20 new tokens, greedy); see `resolve_generation_options`. Without generation_config.json
    the eos/pad ids are config.json's (pad falls back to eos, then 0); eos ids outside the vocabulary are ignored
    with a warning. Pass `eos_token_id=[]` to never stop early. `do_sample=False` is greedy; sampling applies
    temperature, top-k (0 = off) and top-p (1 = off) and draws with numpy's Generator(seed), so a seed reproduces
    the output exactly.
    `repetition_penalty` (>1 discourages) divides positive / multiplies negative logits of tokens already in the row.
    `min_new_tokens` bans eos for that many steps. `use_cache=False` recomputes the whole sequence each step (the
    reference path). `on_token` is called with each step's new tokens [B] (for streaming).
    A prompt too long for n_positions is trimmed from the left with a warning.
    """
    config = model.config
    original = _as_numpy_ids(input_ids)
    options = resolve_generation_options(
        model, original.shape[1], max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample,
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
        min_new_tokens=min_new_tokens, num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id)
    max_new_tokens, num_return_sequences = options["max_new_tokens"], options["num_return_sequences"]
    do_sample, temperature, top_k = options["do_sample"], options["temperature"], options["top_k"]
    top_p, repetition_penalty = options["top_p"], options["repetition_penalty"]
    min_new_tokens, eos, pad_token_id = options["min_new_tokens"], options["eos_token_id"], options["pad_token_id"]
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(num_return_sequences, (int, np.integer)) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be a positive integer, got {num_return_sequences!r}")
    ids, mask, max_new_tokens = _prepare_prompt(model, original, attention_mask, int(max_new_tokens))
    if num_return_sequences > 1:
        original = np.repeat(original, num_return_sequences, axis=0)
        ids = np.repeat(ids, num_return_sequences, axis=0)
        mask = np.repeat(mask, num_return_sequences, axis=0)
    chooser = TokenChooser(config.vocab_size, do_sample, temperature, top_k, top_p, repetition_penalty, seed)
    chooser.observe(ids, mask)
    batch = ids.shape[0]
    new_tokens = np.full((batch, max_new_tokens), pad_token_id, dtype=np.int64)
    if max_new_tokens == 0:
        return original
    was_training = model.training
    model.set_train(False)
    try:
        decoder_cls = _CachedDecoder if use_cache else _RecomputeDecoder
        decoder = decoder_cls(_compiled_steps(model), ids, mask, max_new_tokens, config.n_positions)
        finished = np.zeros(batch, dtype=bool)
        greedy_ids, logits = decoder.start()
        produced = 0
        for step in range(max_new_tokens):
            banned = eos if step < min_new_tokens else ()
            if greedy_ids is not None and chooser.plain_greedy and not banned:
                tokens = greedy_ids.asnumpy().astype(np.int64)  # chosen in the graph: B ids to the host, not B x V
            else:
                tokens = chooser(logits.asnumpy(), banned=banned)
            tokens = np.where(finished, pad_token_id, tokens)
            new_tokens[:, step] = tokens
            produced = step + 1
            if on_token is not None:
                on_token(tokens)
            if eos:
                finished |= np.isin(tokens, eos)
            if finished.all() or produced == max_new_tokens:
                break
            fed = np.where(finished, 0, tokens)  # finished rows run on with any valid id (pad may be outside vocab)
            chooser.observe(fed[:, None])
            greedy_ids, logits = decoder.advance(fed)
    finally:
        model.set_train(was_training)
    return np.concatenate([original, new_tokens[:, :produced]], axis=1)


def prompt_conventions(tokenizer) -> tuple[list[int], list[int]]:
    """(ids put before the prompt, ids that end a continuation) of the tokenizer's model family.

    A BERT vocabulary (a [CLS]/[SEP] pair and no BOS: uer's Chinese GPT-2 and ms_gpt's dialogue models) trains on
    `[CLS] text [SEP]`, so a prompt starts with [CLS] and [SEP] ends the text. GPT-2 / GPT-1 need neither.
    """
    cls_id, sep_id = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if cls_id is not None and sep_id is not None and getattr(tokenizer, "bos_token_id", None) is None:
        return [cls_id], [sep_id]
    return [], []


def generate_text(model, tokenizer, prompt: str, max_new_tokens: Optional[int] = None,
                  num_return_sequences: Optional[int] = None, **generate_kwargs) -> list[str]:
    """Text in, text out: the prompt followed by each generated continuation (cut at the first eos).

    Options are generate()'s; those not given come from the checkpoint's generation_config.json, else the defaults
    (50 new tokens here). Models with a BERT vocabulary (Chinese GPT-2, e.g. uer/gpt2-chinese-cluecorpussmall) see
    `[CLS]` first and stop at `[SEP]` (plus any eos the checkpoint names), as in their training text. An empty prompt
    starts from the BOS/EOS token when the tokenizer has one (unconditional generation).
    """
    prefix, stops = prompt_conventions(tokenizer)
    ids = prefix + tokenizer.encode(prompt)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if not ids and bos is not None:
        ids = [bos]
    if not ids:
        raise ValueError(f"generate: the prompt {prompt!r} has no token in this tokenizer's vocabulary and the "
                         "tokenizer has no BOS/EOS token to start from")
    saved = generation_config(model)
    if max_new_tokens is None and "max_new_tokens" not in saved and "max_length" not in saved \
            and generate_kwargs.get("max_length") is None:
        max_new_tokens = 50
    eos = generate_kwargs.pop("eos_token_id", None)
    if eos is None:
        eos = saved.get("eos_token_id")
        if eos is None and not stops:
            eos = tokenizer.eos_token_id
        eos = stops + _token_set(eos, "eos_token_id", model.config.vocab_size)
    # an exported model (ms_gpt.exported.MindIRGenerator) decodes with its own graphs, under generate()'s contract
    run = getattr(model, "generate_ids", None) or (lambda *args, **kwargs: generate(model, *args, **kwargs))
    out = run(np.asarray([ids]), max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
              eos_token_id=eos, **generate_kwargs)
    stops = set(_token_set(eos, "eos_token_id", model.config.vocab_size))
    texts = []
    for row in out[:, len(ids):]:
        new = [int(t) for t in row]
        cut = next((i for i, t in enumerate(new) if t in stops), len(new))
        texts.append(prompt + tokenizer.decode(new[:cut], skip_special_tokens=True))
    return texts


def dtype_override(dtype: Optional[str]) -> dict:
    """from_pretrained's config override of an inference command's --dtype (none: the checkpoint's dtype). Where
    the host lacks the kernel, one line on stderr (float16 on CPU) or one clear error (bfloat16 on CPU)."""
    if dtype is None:
        return {}
    import sys

    from .config import COMPUTE_DTYPES
    from .device import compute_dtype_note

    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype={dtype!r}; expected one of {', '.join(COMPUTE_DTYPES)}")
    note = compute_dtype_note(dtype, current_policy())
    if note:
        print(note, file=sys.stderr)
    return {"compute_dtype": dtype}


# ---- command-line options shared by `python -m ms_gpt.generate` and `python -m ms_gpt.chat` ----------------------
FROM_GENERATION_CONFIG = "None = generation_config.json's value, else "  # the help text of options it can set


@dataclass
class GenerationArguments:
    """Decoding options of `python -m ms_gpt.generate` and `python -m ms_gpt.chat`; one left unset takes the
    checkpoint's generation_config.json value, else the default named."""

    model: Optional[str] = field(
        default=None,
        metadata={"help": "model directory (config.json, weights, tokenizer files) or hub name (required)"})
    max_new_tokens: Optional[int] = field(
        default=None, metadata={"help": "tokens to generate (" + FROM_GENERATION_CONFIG + "the command's default)"})
    do_sample: Optional[bool] = field(
        default=None, metadata={"help": "sample instead of greedy decoding (" + FROM_GENERATION_CONFIG + "greedy)"})
    temperature: Optional[float] = field(
        default=None, metadata={"help": "sampling temperature (" + FROM_GENERATION_CONFIG + "1.0)"})
    top_k: Optional[int] = field(
        default=None,
        metadata={"help": "sample among the k most likely tokens (" + FROM_GENERATION_CONFIG + "0 = all)"})
    top_p: Optional[float] = field(
        default=None, metadata={"help": "nucleus sampling mass (" + FROM_GENERATION_CONFIG + "1.0 = off)"})
    repetition_penalty: Optional[float] = field(
        default=None, metadata={"help": ">1 discourages repeats (" + FROM_GENERATION_CONFIG + "1.0 = off)"})
    seed: Optional[int] = field(default=None, metadata={"help": "seed of the sampler (same seed, same text)"})
    use_cache: bool = field(default=True, metadata={"help": "decode with the static KV cache (False = recompute)"})
    device_target: str = field(default="auto", metadata={"help": "device: auto | CPU | GPU | Ascend"})
    dtype: Optional[str] = field(default=None, metadata={"help": "matmul and KV-cache dtype: float32 | float16 | bfloat16 (None = the checkpoint's config.json compute_dtype)"})
    emulate_ascend: bool = field(default=False, metadata={"help": "make the graph choices an Ascend job makes (static decode windows, jit level O0, fused LayerNorm) on CPU/GPU"})

    def load(self):
        """(model, tokenizer) of --model: a directory, or a hub name (its snapshot holds both; the bundled GPT-2 /
        bert-base-chinese tokenizer files serve those names)."""
        import os

        from .model import GPTLMHeadModel
        from .tokenizers import BUNDLED_TOKENIZERS, load_tokenizer

        if not self.model:
            raise ValueError("--model is required: a directory with config.json, weights and tokenizer files, or a "
                             "hub name")
        model = GPTLMHeadModel.from_pretrained(self.model, **dtype_override(self.dtype))
        local = os.path.exists(self.model) or self.model in BUNDLED_TOKENIZERS
        return model, load_tokenizer(self.model if local else getattr(model, "name_or_path", self.model))

    def generate_kwargs(self) -> dict:
        """The decoding options that are set, as generate() keyword arguments (model and device aside)."""
        skip = {"model", "device_target", "prompt", "max_history", "dtype", "emulate_ascend"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip and getattr(self, f.name) is not None}
