"""The continuous-batching engine: requests in, token ids out, over B fixed KV-cache slots of one model.

`ServingEngine` owns one engine thread. Each step it (1) ends requests that were cancelled, (2) admits waiting
requests into free slots, prefilling each prompt into ITS row of the shared B-row cache in PREFILL_CHUNK-token
chunks (the last chunk gives the request's first token), then (3) decodes every active slot in ONE compiled step
in which each row has its own cache row and write position and attends over a window with its own mask. A slot is
freed as soon as its request produced a stop id, reached max_tokens or was cancelled; the next step may admit a new
request into it. The engine never sees text or HTTP: it takes prompt ids and calls `on_event(new_ids, finish)`.

The cache layout, the chunked prefill and the window rules are generate()'s (`ms_gpt.generation`): per layer two
Parameters [B * H * slots, D], slots = n_positions + PREFILL_CHUNK, row (b * H + h) * slots + slot, written in
place. A request's cache row holds its prompt from slot 0, so its position ids are its slot numbers and no padding
mask is needed: row r attends to the slots up to its own. A decode step runs R rows over the first W slots:
- CPU / GPU (default): static (R, W) buckets, R in 1, 4, 8, 16, ... up to B and W in 128, 256, 512, ... and all
  slots (`_buckets`); the rows past the active ones run on free cache rows (which the next admission overwrites).
  MindSpore's dynamic-shape kernels pay shape inference at every launch: on GPT-2 124M (`bench_engine.py --shapes
  both`, interleaved, 2 loaded cores) the static step took 51.0 vs 71.9 ms at 1 row, and about the same at 8 and
  16 rows (111.9 vs 114.1, 170.3 vs 160.4 ms), at the price of compiling |R| x |W| graphs at warm-up (16 for
  B = 16 at n_positions 1024: 63 vs 9 s).
- `dynamic_shapes=True` (CPU / GPU): one graph whose row and window axes are dynamic: only the active rows and the
  window rounded up to WINDOW_STEP (what generate() does), one compile, slower steps.
- static-shape devices (Ascend, `generation._static_shapes()`): R = B always and generate()'s windows.
The prompt enters in PREFILL_CHUNK-token chunks of one row over all slots (one static graph, as in generate()).
Every graph is compiled during warm-up (`start`), so prompt lengths, max_tokens and the arrival pattern never
compile anything later (`compile_counts`).

Log-probabilities (lm-eval through the server): a request with `SamplingParams.prompt_logprobs` is prefilled by a
scoring variant of the prefill graph (`_ScoreStep`, compiled at warm-up too) that also returns, for every prompt
position of the chunk, the float32 log-softmax of the next prompt token and the top MAX_LOGPROBS log-probabilities
with their ids (one host transfer per 32-token chunk); `max_tokens=0` then scores the prompt without generating. A
request with `SamplingParams.logprobs = k` gets each generated token's log-probability and the top k from the
step's float32 logits row (fetched once per step for all rows, as sampled rows already are). Such requests receive
`on_event(new_ids, finish, logprobs)` with a third argument, a `TokenLogprobs`; every other request still gets
`on_event(new_ids, finish)`.

Token choice: a slot that decodes plainly greedily (temperature 0, no repetition penalty) takes the argmax made in
the graph (R ids to the host); any other slot runs generation.TokenChooser on its row's logits with its own seeded
numpy Generator, so a seeded request draws exactly what generate(do_sample=True, seed=...) draws at batch 1.

Threads: `submit`, `RequestHandle.cancel`, `stats` and `shutdown` may be called from any thread; model calls and
`on_event` run on the engine thread only. MindSpore's execution mode is process-wide: while the engine runs a
step it switches to GRAPH_MODE (as every compiled step in ms_gpt does), so do not run other MindSpore work on the
same process concurrently with a busy engine.

Must not import: ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat, ms_gpt.tokenizers.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ..device import compiled, graph_mode
from ..generation import PREFILL_CHUNK, STATIC_WINDOWS, WINDOW_STEP, TokenChooser, _i32, _round_up, _static_shapes

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """max_queue requests are already waiting"""


@dataclass
class SamplingParams:
    """How one request decodes (OpenAI / HF names)."""

    max_tokens: int  # >= 1 new tokens at most
    temperature: float = 1.0  # 0 = greedy (argmax); > 0 samples
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0
    seed: Optional[int] = None  # per-request numpy Generator, as generate(seed=...) at batch 1
    stop_token_ids: tuple = ()  # ids that end the request (finish "stop"); empty = never (ignore_eos)
    logprobs: Optional[int] = None  # k in 0..MAX_LOGPROBS: each generated token's logprob and the top k
    prompt_logprobs: bool = False  # score the prompt (each token after the first); allows max_tokens = 0


MAX_LOGPROBS = 5  # top log-probabilities per token at most (OpenAI's legacy completions limit)


@dataclass
class TokenLogprobs:
    """The log-probabilities carried by one event (float32 numpy arrays; K = the request's k, or MAX_LOGPROBS for
    the prompt). `prompt`: (logprob [P-1], top ids [P-1, K], top logprobs [P-1, K]) of prompt tokens 1..P-1 given
    the tokens before them, in the request's first event only. `tokens`: the same triple for the event's new ids."""

    prompt: Optional[tuple] = None
    tokens: Optional[tuple] = None


def _host_logprobs(logits: np.ndarray, token: int, k: int) -> tuple:
    """(logprob of token, top-k ids, top-k logprobs) of one float32 logits row (log-softmax in float32)."""
    row = np.asarray(logits, dtype=np.float32).reshape(-1)
    shifted = row - row.max()
    logp = shifted - np.log(np.exp(shifted).sum(dtype=np.float32))
    top = np.argpartition(-logp, k)[:k] if 0 < k < logp.size else np.arange(min(k, logp.size))
    top = top[np.argsort(-logp[top], kind="stable")]
    return (np.array([logp[token]], np.float32), top[None].astype(np.int64), logp[top][None].astype(np.float32))


class RequestHandle:
    """What `submit` returns: the request's id and prompt length, and `cancel()`."""

    def __init__(self, request_id: str, prompt_tokens: int, engine: "ServingEngine"):
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self._engine = engine
        self.cancelled = False

    def cancel(self) -> None:
        """Thread-safe; the slot is freed within one engine step and the request finishes with "abort"."""
        self.cancelled = True
        self._engine._wake()


class _Request:
    """The engine thread's state of one request."""

    def __init__(self, handle: RequestHandle, prompt: np.ndarray, params: SamplingParams, on_event, vocab_size: int):
        self.handle, self.prompt, self.params, self.on_event = handle, prompt, params, on_event
        self.stops = frozenset(int(t) for t in params.stop_token_ids)
        self.plain_greedy = params.temperature == 0 and params.repetition_penalty == 1.0
        self.chooser = None
        if not self.plain_greedy:
            sample = params.temperature > 0
            self.chooser = TokenChooser(vocab_size, sample, params.temperature if sample else 1.0, params.top_k,
                                        params.top_p, params.repetition_penalty, params.seed)
            self.chooser.observe(prompt[None, :])
        self.slot = -1  # cache row while running
        self.position = 0  # cache slot (= position id) of the next token fed
        self.generated = 0
        self.last_token = 0
        self.done = False  # finished: no more events
        self.wants_logprobs = params.logprobs is not None or params.prompt_logprobs
        self.pending: Optional[TokenLogprobs] = None  # what the next event carries (wants_logprobs only)


# ---- the compiled per-slot step -----------------------------------------------------------------------------------
class _SlotCache:
    """The serving cache: per layer two Parameters [B * H * slots, D] (generate()'s layout), B = max_batch_size."""

    def __init__(self, config, batch: int):
        self.slots = config.n_positions + PREFILL_CHUNK
        self.batch = batch
        shape = (batch * config.n_head * self.slots, config.head_dim)

        def make(kind):
            return ParameterTuple(Parameter(Tensor(np.zeros(shape, np.float32)), name=f"serving_cache.{i}.{kind}",
                                            requires_grad=False) for i in range(config.n_layer))
        self.keys, self.values = make("key"), make("value")


class _SlotStep(nn.Cell):
    """T new tokens of R rows, each row in its own cache row and at its own slot -> (greedy ids [R], logits [R, V])
    at token `last_index` of the T.

    input_ids [R, T]; cache_rows int32 [R] (which of the B cache rows each row uses); start int32 [R] (the slot,
    = position id, of each row's first new token); last_index int32 [1]; window_slots int32 [W] = 0..W-1 (the
    attended slots). Token t of row r is written at slot start[r] + t and sees slots <= its own.
    auto_prefix=False keeps the model's parameter names (HF keys), as generation's steps do.
    """

    def __init__(self, model, cache: _SlotCache):
        super().__init__(auto_prefix=False)
        self.model = model
        self.keys, self.values = cache.keys, cache.values
        config = model.config
        self.n_layer, self.heads, self.slots = config.n_layer, config.n_head, cache.slots
        self.max_position = config.n_positions - 1
        self.is_gpt2 = config.is_gpt2

    def construct(self, input_ids, cache_rows, start, last_index, window_slots):
        hidden = self._hidden(input_ids, cache_rows, start, window_slots)
        if input_ids.shape[1] > 1:
            hidden = ops.gather(hidden, last_index, 1)
        logits = self.model.logits(hidden, decoding=True)
        logits = logits.reshape(logits.shape[0], -1)
        return ops.argmax(logits, -1), logits

    def _hidden(self, input_ids, cache_rows, start, window_slots):
        """The final hidden states [R, T, C] of the new tokens (written into the cache on the way)."""
        body = self.model.transformer
        rows, seq = input_ids.shape
        new_slots = start.reshape(-1, 1) + ops.arange(seq, dtype=ms.int32).reshape(1, -1)  # [R, T]
        # the padding after a prompt's last chunk may lie past the position table: any valid position serves it
        positions = ops.minimum(new_slots, self.max_position)
        base = (cache_rows.reshape(-1, 1) * self.heads + ops.arange(self.heads, dtype=ms.int32).reshape(1, -1)) \
            * self.slots  # [R, H]: the cache row of slot 0 of each (row, head)
        base = base.reshape(-1, self.heads, 1)
        cache_write = ((base + new_slots.reshape(-1, 1, seq)).reshape(-1),
                       (base + window_slots.reshape(1, 1, -1)).reshape(-1))
        mask = (window_slots.reshape(1, 1, 1, -1) <= new_slots.reshape(-1, 1, seq, 1))  # [R, 1, T, W]
        if self.is_gpt2:
            hidden = body.wte(input_ids) + body.wpe(positions)
        else:
            hidden = body.tokens_embed(input_ids) + body.positions_embed(positions)
        hidden = body.drop(hidden)
        for i in range(self.n_layer):
            hidden, _ = body.h[i](hidden, mask, (self.keys[i], self.values[i]), cache_write)
        if self.is_gpt2:
            hidden = body.ln_f(hidden, True)
        return hidden


class _ScoreStep(_SlotStep):
    """A prompt chunk of one row, as _SlotStep's prefill, that also scores it: with targets [1, T] (the id after
    each position), returns (greedy [1], logits [1, V] at `last_index`, float32 log-softmax of each target [1, T],
    the ids of the top MAX_LOGPROBS log-probabilities [1, T, K] and those log-probabilities [1, T, K])."""

    def construct(self, input_ids, cache_rows, start, last_index, window_slots, targets):
        hidden = self._hidden(input_ids, cache_rows, start, window_slots)
        logits = self.model.logits(hidden)  # [1, T, V] float32
        logp = ops.log_softmax(logits, -1)
        target_logp = ops.gather_elements(logp, 2, targets.reshape(1, -1, 1)).reshape(1, -1)
        top_logp, top_ids = ops.topk(logp, MAX_LOGPROBS)
        last = ops.gather(logits, last_index, 1).reshape(1, -1)
        return ops.argmax(last, -1), last, target_logp, top_ids, top_logp


def _buckets(batch: int, slots: int, static_device: bool) -> tuple:
    """(row counts, windows) with one static decode graph each, all compiled at warm-up. Static-shape devices
    (Ascend, where compiles are slow): all max_batch_size rows and generate()'s windows. CPU / GPU: 1, 4, 8, 16, ...
    rows up to max_batch_size and windows of 128, 256, 512, ... slots and all slots: a step reads at most about
    twice the cache window it needs, and the rows a bucket adds cost little next to reading the weights (MatMul is
    memory-bound at a few rows: GPT-2 124M's floor is 45.7 ms at 8 rows and 51.6 at 16)."""
    if static_device:
        return (batch,), tuple(sorted({min(w, slots) for w in STATIC_WINDOWS} | {slots}))
    rows = sorted({1, batch} | {r for r in (4 << i for i in range(batch.bit_length())) if r < batch})
    windows = [w for w in (4 * WINDOW_STEP << i for i in range(slots.bit_length())) if w * 3 // 2 < slots]
    return tuple(rows), (*windows, slots)


def _decode_spec(batch: Optional[int], window: Optional[int]) -> tuple:
    """Inputs of a one-token decode step: placeholders (None = a dynamic axis) or zeros of that shape."""
    if batch is None or window is None:
        return (Tensor(shape=[batch, 1], dtype=ms.int32), Tensor(shape=[batch], dtype=ms.int32),
                Tensor(shape=[batch], dtype=ms.int32), Tensor(shape=[1], dtype=ms.int32),
                Tensor(shape=[window], dtype=ms.int32))
    return (_i32(np.zeros((batch, 1))), _i32(np.arange(batch)), _i32(np.zeros(batch)), _i32([0]),
            _i32(np.arange(window)))


# ---- the engine ---------------------------------------------------------------------------------------------------
class ServingEngine:
    """Continuous batching over `max_batch_size` KV-cache slots of `model` (a GPTLMHeadModel, weights loaded).

    Call `start()` (compiles and warms every graph on the engine thread, then `ready` turns True), then `submit`
    requests from any thread; `shutdown()` ends the thread (pending requests finish with "abort").
    """

    def __init__(self, model, max_batch_size: int = 8, max_queue: int = 64, dynamic_shapes: bool = False):
        """`dynamic_shapes=True` (CPU / GPU only): one decode graph whose row and window axes are dynamic instead
        of the static (rows, window) buckets: one compile instead of several, but slower steps (see the module
        docstring)."""
        if dynamic_shapes and _static_shapes():
            raise ValueError("dynamic_shapes=True: this device compiles static shapes only")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        self.model = model
        self.config = model.config
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.context_length = int(self.config.n_positions)
        self.vocab_size = int(self.config.vocab_size)
        self.dynamic = bool(dynamic_shapes)
        self.row_buckets, self.windows = None, None  # set at warm-up (None: a dynamic axis)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting: deque = deque()
        self._slots: list = [None] * max_batch_size  # _Request or None, engine thread only
        self._ids = itertools.count()
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self.error: Optional[BaseException] = None  # what ended the engine thread, if anything did
        self._stats = {"finished": 0, "prompt_tokens": 0, "generation_tokens": 0}
        self._running = 0
        self._cache = None
        self._prefill_cell = self._decode_cell = self._score_cell = None
        self.step_times: deque = deque(maxlen=1024)  # (active rows, seconds) of recent decode steps

    # ---- public, any thread ----
    @property
    def ready(self) -> bool:
        """True once every graph is compiled and warm (and the engine thread is running)."""
        return self._ready.is_set() and self.error is None and not self._stop

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Block until ready (True), the engine failed (raises its error) or `timeout` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.is_set() and self.error is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._ready.wait(0.05 if left is None else min(left, 0.05))
        if self.error is not None:
            raise RuntimeError(f"the serving engine failed: {self.error!r}") from self.error
        return True

    def start(self) -> None:
        """Start the engine thread; it compiles and warms every graph, then `ready` is True."""
        if self._thread is not None:
            raise RuntimeError("ServingEngine.start: already started")
        self._thread = threading.Thread(target=self._run, name="ms_gpt-serving-engine", daemon=True)
        self._thread.start()

    def submit(self, prompt_ids, params: SamplingParams,
               on_event: Callable[[list, Optional[str]], None]) -> RequestHandle:
        """Queue a request. Raises QueueFull, or ValueError naming the bad field. `on_event(new_ids, finish)` is
        called from the engine thread: finish None while running, then once "stop" | "length" | "abort"."""
        prompt = self._check(prompt_ids, params)
        if not callable(on_event):
            raise ValueError("on_event must be callable")
        with self._cond:
            if self._stop or self.error is not None:
                raise RuntimeError(f"ServingEngine.submit: the engine is {'shut down' if self._stop else 'failed'}")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (max_queue={self.max_queue})")
            handle = RequestHandle(f"req-{next(self._ids)}", int(prompt.size), self)
            self._waiting.append(_Request(handle, prompt, params, on_event, self.vocab_size))
            self._cond.notify()
        return handle

    def stats(self) -> dict:
        """{"running", "waiting", "finished", "prompt_tokens", "generation_tokens"} (counts since start)."""
        with self._lock:
            return {"running": self._running, "waiting": len(self._waiting), **self._stats}

    def compile_counts(self) -> dict:
        """Graphs compiled so far per kind ({"prefill", "decode", "score"}); constant after warm-up."""
        return {"prefill": 0 if self._prefill_cell is None else len(self._prefill_cell.compile_cache),
                "decode": 0 if self._decode_cell is None else len(self._decode_cell.compile_cache),
                "score": 0 if self._score_cell is None else len(self._score_cell.compile_cache)}

    def shutdown(self) -> None:
        """Stop the engine thread; requests still waiting or running finish with "abort"."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._abort_all()  # the thread never started or died: finish what is left here

    # ---- validation ----
    def _check(self, prompt_ids, params: SamplingParams) -> np.ndarray:
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        try:
            prompt = np.asarray(list(prompt_ids))
        except TypeError:
            raise ValueError(f"prompt must be a list of token ids, got {type(prompt_ids).__name__}") from None
        if prompt.ndim != 1 or prompt.size == 0:
            raise ValueError("prompt must be a non-empty list of token ids")
        if not np.issubdtype(prompt.dtype, np.integer):
            raise ValueError(f"prompt must hold integer token ids, got {prompt.dtype}")
        outside = prompt[(prompt < 0) | (prompt >= self.vocab_size)]
        if outside.size:
            raise ValueError(f"prompt holds token id {int(outside[0])} outside the vocabulary [0, {self.vocab_size})")
        max_tokens = params.max_tokens
        least = 0 if params.prompt_logprobs else 1  # 0: score the prompt only
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < least:
            raise ValueError(f"max_tokens must be an integer >= {least}, got {max_tokens!r}")
        k = params.logprobs
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))
                              or not 0 <= k <= MAX_LOGPROBS):
            raise ValueError(f"logprobs must be an integer in [0, {MAX_LOGPROBS}], got {k!r}")
        if prompt.size + max_tokens > self.context_length:
            raise ValueError(f"prompt ({prompt.size} tokens) + max_tokens ({max_tokens}) exceeds the context length "
                             f"{self.context_length}")
        if not isinstance(params.temperature, (int, float)) or not params.temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0, got {params.temperature!r}")
        if not isinstance(params.top_p, (int, float)) or not 0 < params.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {params.top_p!r}")
        if isinstance(params.top_k, bool) or not isinstance(params.top_k, (int, np.integer)) or params.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {params.top_k!r}")
        if not isinstance(params.repetition_penalty, (int, float)) or not params.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {params.repetition_penalty!r}")
        if params.seed is not None and (isinstance(params.seed, bool) or not isinstance(params.seed, (int, np.integer))
                                        or params.seed < 0):
            raise ValueError(f"seed must be an integer >= 0, got {params.seed!r}")
        try:
            stops = [int(t) for t in params.stop_token_ids]
        except (TypeError, ValueError):
            raise ValueError(f"stop_token_ids must be a sequence of token ids, got {params.stop_token_ids!r}") \
                from None
        if any(not 0 <= t < self.vocab_size for t in stops):
            raise ValueError(f"stop_token_ids {stops} must lie in the vocabulary [0, {self.vocab_size})")
        return prompt.astype(np.int64)

    # ---- the engine thread ----
    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _run(self) -> None:
        try:
            self._warm_up()
            self._ready.set()
            while True:
                with self._cond:
                    while not self._stop and not self._waiting and not any(self._slots):
                        self._cond.wait()
                    if self._stop:
                        break
                self._step()
        except BaseException as error:  # noqa: BLE001 - reported through `error`, /health stays 503
            logger.exception("serving engine failed")
            self.error = error
        finally:
            self._abort_all()

    def _warm_up(self) -> None:
        """Build the cache, compile every graph and run each once (kernels warm) before the first request."""
        self.model.set_train(False)
        batch = self.max_batch_size
        self._cache = _SlotCache(self.config, batch)
        prefill_cell, decode_cell = _SlotStep(self.model, self._cache), _SlotStep(self.model, self._cache)
        score_cell = _ScoreStep(self.model, self._cache)
        self._prefill, self._decode = compiled(prefill_cell), compiled(decode_cell)  # sets their jit level
        self._score = compiled(score_cell)
        slots = self._cache.slots
        if not self.dynamic:
            self.row_buckets, self.windows = _buckets(batch, slots, _static_shapes())
        self._zero = _i32([0])
        self._slot_ids = {}  # window W -> int32 Tensor 0..W-1, made once
        # a prompt chunk attends to all slots (as generate()'s prefill): one static graph
        prefill_inputs = (_i32(np.zeros((1, PREFILL_CHUNK))), _i32([0]), _i32([0]), _i32([0]),
                          self._window_slots(slots))
        with graph_mode():
            if self.dynamic:
                decode_cell.set_inputs(*_decode_spec(None, None))
                decode_cell.compile(*_decode_spec(1, WINDOW_STEP))
            else:
                for r in self.row_buckets:
                    for w in self.windows:
                        decode_cell.compile(*_decode_spec(r, w))
            prefill_cell.compile(*prefill_inputs)
            score_cell.compile(*prefill_inputs, _i32(np.zeros((1, PREFILL_CHUNK))))
        # run each graph once (first-call allocations, kernel set-up) on cache row 0, which admission overwrites
        self._prefill(*prefill_inputs)[0].asnumpy()
        self._score(*prefill_inputs, _i32(np.zeros((1, PREFILL_CHUNK))))[0].asnumpy()
        for r in self.row_buckets or sorted({1, batch}):
            for w in self.windows or [WINDOW_STEP]:
                self._decode(*_decode_spec(r, w))[0].asnumpy()
        self._prefill_cell, self._decode_cell, self._score_cell = prefill_cell, decode_cell, score_cell

    def _window(self, needed: int) -> int:
        """The attended window for a step whose furthest row writes slot needed - 1."""
        if self.windows is None:
            return min(_round_up(needed, WINDOW_STEP), self._cache.slots)
        return min(w for w in self.windows if w >= needed)

    def _window_slots(self, window: int) -> Tensor:
        if window not in self._slot_ids:
            self._slot_ids[window] = _i32(np.arange(window))
        return self._slot_ids[window]

    def _emit(self, request: _Request, ids: list, finish: Optional[str]) -> bool:
        """Deliver an event; False if the callback failed (the request is then cancelled)."""
        try:
            if request.wants_logprobs:
                info, request.pending = request.pending or TokenLogprobs(), None
                request.on_event(ids, finish, info)
            else:
                request.on_event(ids, finish)
            return True
        except Exception:  # noqa: BLE001 - a consumer's failure must not stop the engine
            logger.exception("on_event of %s failed; cancelling it", request.handle.request_id)
            request.handle.cancelled = True
            return False

    def _finish(self, request: _Request, ids: list, finish: str) -> None:
        if request.done:
            return
        request.done = True
        if request.slot >= 0:
            self._slots[request.slot] = None
            request.slot = -1
        with self._lock:
            self._stats["finished"] += 1
            self._running = sum(r is not None for r in self._slots)
        self._emit(request, ids, finish)

    def _deliver(self, request: _Request, token: int) -> None:
        """A new token of a running request: count it, end the request on stop / length, else stream it."""
        request.generated += 1
        request.last_token = token
        with self._lock:
            self._stats["generation_tokens"] += 1
        if token in request.stops:
            self._finish(request, [token], "stop")
        elif request.generated >= request.params.max_tokens:
            self._finish(request, [token], "length")
        elif not self._emit(request, [token], None):
            self._finish(request, [], "abort")
        elif request.chooser is not None:
            request.chooser.observe(np.array([[token]]))

    def _choose(self, request: _Request, greedy, logits, row: int) -> int:
        if request.plain_greedy:
            return int(greedy[row])
        return int(request.chooser(logits[row:row + 1])[0])

    def _abort_all(self) -> None:
        with self._lock:
            pending = list(self._waiting)
            self._waiting.clear()
        pending += [r for r in self._slots if r is not None]
        for request in pending:
            self._finish(request, [], "abort")

    def _step(self) -> None:
        # 1. cancelled requests leave (running ones free their slot now)
        with self._lock:
            cancelled = [r for r in self._waiting if r.handle.cancelled]
            for r in cancelled:
                self._waiting.remove(r)
        cancelled += [r for r in self._slots if r is not None and r.handle.cancelled]
        for request in cancelled:
            self._finish(request, [], "abort")
        # 2. admission: prefill waiting requests into free slots; each gets its first token
        while True:
            free = [i for i, r in enumerate(self._slots) if r is None]
            with self._lock:
                if not free or not self._waiting:
                    break
                request = self._waiting.popleft()
                self._stats["prompt_tokens"] += int(request.prompt.size)
                request.slot = free[0]
                self._slots[free[0]] = request
                self._running = sum(r is not None for r in self._slots)
            self._admit(request)
        # 3. one decode step over every active slot
        active = [r for r in self._slots if r is not None]
        if active:
            self._decode_step(active)

    def _admit(self, request: _Request) -> None:
        prompt = request.prompt
        width = prompt.size
        padded = np.zeros(_round_up(width, PREFILL_CHUNK), dtype=np.int32)
        padded[:width] = prompt
        row = _i32([request.slot])
        out = None
        scores = []
        score = request.params.prompt_logprobs
        targets = np.zeros(padded.size + PREFILL_CHUNK, dtype=np.int32)  # the id after each position
        targets[:width - 1] = prompt[1:]
        with graph_mode():
            for begin in range(0, padded.size, PREFILL_CHUNK):
                last = min(width - 1 - begin, PREFILL_CHUNK - 1)
                inputs = (_i32(padded[None, begin:begin + PREFILL_CHUNK]), row, _i32([begin]), _i32([last]),
                          self._window_slots(self._cache.slots))
                if score:
                    out = self._score_cell(*inputs, _i32(targets[None, begin:begin + PREFILL_CHUNK]))
                    scores.append([o.asnumpy()[0] for o in out[2:]])
                else:
                    out = self._prefill_cell(*inputs)
        greedy, logits = out[:2]
        request.position = width
        if score:
            request.pending = TokenLogprobs(prompt=tuple(np.concatenate(part)[:width - 1] for part in zip(*scores)))
        if request.params.max_tokens == 0:
            self._finish(request, [], "length")
            return
        host_logits = None if request.plain_greedy and request.params.logprobs is None else logits.asnumpy()
        token = int(greedy.asnumpy()[0]) if request.plain_greedy else self._choose(request, None, host_logits, 0)
        self._add_logprobs(request, host_logits, 0, token)
        self._deliver(request, token)

    def _add_logprobs(self, request: _Request, logits, row: int, token: int) -> None:
        k = request.params.logprobs
        if k is None:
            return
        pending = request.pending or TokenLogprobs()
        pending.tokens = _host_logprobs(logits[row], token, k)
        request.pending = pending

    def _decode_step(self, active: list) -> None:
        started = time.perf_counter()
        count = len(active) if self.row_buckets is None else min(b for b in self.row_buckets if b >= len(active))
        tokens = np.zeros((count, 1), dtype=np.int32)
        starts = np.zeros(count, dtype=np.int32)
        # rows past the active ones (static buckets) run on free cache rows, writing their slot 0, which the next
        # admission into that row overwrites; there are enough: count <= max_batch_size
        free = (i for i, r in enumerate(self._slots) if r is None)
        rows = np.array([r.slot for r in active] + [next(free) for _ in range(count - len(active))], dtype=np.int32)
        for i, r in enumerate(active):
            tokens[i, 0], starts[i] = r.last_token, r.position
        window = self._window(int(starts.max()) + 1)
        with graph_mode():
            greedy, logits = self._decode_cell(_i32(tokens), _i32(rows), _i32(starts), self._zero,
                                               self._window_slots(window))
        greedy = greedy.asnumpy()
        host_logits = None if all(r.plain_greedy and r.params.logprobs is None for r in active) \
            else logits.asnumpy()
        self.step_times.append((len(active), time.perf_counter() - started))
        for i, r in enumerate(active):
            if not r.done:  # (a callback may have shut the engine down mid-step)
                r.position += 1
                token = self._choose(r, greedy, host_logits, i)
                self._add_logprobs(r, host_logits, i, token)
                self._deliver(r, token)
