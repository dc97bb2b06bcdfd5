"""THROWAWAY stand-in for issue-24a's engine (same public contract), serving one request at a time through
generation.generate(on_token=...). Deleted when the real engine is merged.

Must not import: ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


class QueueFull(Exception):
    """max_queue requests are already waiting"""


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    stop_token_ids: tuple = ()


class _Abort(Exception):
    pass


class RequestHandle:
    _ids = itertools.count()

    def __init__(self, prompt_ids, params, on_event):
        self.request_id = f"req-{next(self._ids)}"
        self.prompt_tokens = len(prompt_ids)
        self.prompt_ids, self.params, self.on_event = prompt_ids, params, on_event
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


class ServingEngine:
    def __init__(self, model, max_batch_size: int = 8, max_queue: int = 64):
        self.model = model
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.context_length = model.config.n_positions
        self._queue: queue.Queue = queue.Queue()
        self._ready = False
        self._stop = False
        self._stats = {"running": 0, "waiting": 0, "finished": 0, "prompt_tokens": 0, "generation_tokens": 0}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def submit(self, prompt_ids, params: SamplingParams, on_event: Callable) -> RequestHandle:
        if not prompt_ids:
            raise ValueError("prompt: empty")
        if params.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if len(prompt_ids) + params.max_tokens > self.context_length:
            raise ValueError(f"max_tokens: prompt + max_tokens > {self.context_length}")
        with self._lock:
            if self._stats["waiting"] >= self.max_queue:
                raise QueueFull()
            self._stats["waiting"] += 1
        handle = RequestHandle(list(prompt_ids), params, on_event)
        self._queue.put(handle)
        return handle

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    def compile_counts(self) -> dict:
        from ..generation import compile_counts
        return compile_counts(self.model)

    def shutdown(self) -> None:
        self._stop = True
        self._queue.put(None)

    def _loop(self) -> None:
        from ..generation import generate
        generate(self.model, np.asarray([[0, 1]]), max_new_tokens=2, eos_token_id=[])  # warm
        self._ready = True
        while True:
            handle = self._queue.get()
            if handle is None or self._stop:
                break
            with self._lock:
                self._stats["waiting"] -= 1
                self._stats["running"] += 1
                self._stats["prompt_tokens"] += handle.prompt_tokens
            p = handle.params
            state = {"reason": "length", "count": 0, "final": []}

            def on_token(tokens, handle=handle, p=p, state=state):
                if handle.cancelled.is_set():
                    state["reason"] = "abort"
                    raise _Abort()
                t = int(tokens[0])
                state["count"] += 1
                with self._lock:
                    self._stats["generation_tokens"] += 1
                if t in p.stop_token_ids or state["count"] == p.max_tokens:
                    state["reason"] = "stop" if t in p.stop_token_ids else "length"
                    state["final"] = [t]
                    raise _Abort()
                handle.on_event([t], None)

            try:
                if handle.cancelled.is_set():
                    state["reason"] = "abort"
                else:
                    generate(self.model, np.asarray([handle.prompt_ids]), max_new_tokens=p.max_tokens,
                             do_sample=p.temperature > 0, temperature=p.temperature or 1.0, top_p=p.top_p,
                             top_k=p.top_k, repetition_penalty=p.repetition_penalty, seed=p.seed,
                             eos_token_id=[], on_token=on_token)
            except _Abort:
                pass
            with self._lock:
                self._stats["running"] -= 1
                self._stats["finished"] += 1
            handle.on_event(state["final"], state["reason"])
