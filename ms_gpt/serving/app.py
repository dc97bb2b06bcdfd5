"""The HTTP side of `python -m ms_gpt.serve`: FastAPI routes of the OpenAI API, Prometheus metrics and the web chat
page, driving a `ServingEngine` only through its public methods (submit / cancel / stats / ready).

Each request is validated and tokenized here (`protocol`), submitted to the engine as one engine request per choice
(`n` choices = n submissions), and its tokens come back as engine events, called from the engine thread and handed
to the request's asyncio task with `call_soon_threadsafe`. The text side stays here: incremental detokenization,
`stop` strings (the engine request is cancelled when one appears), chat templates, usage and latency metrics (time to
first token and time per output token, measured as the events arrive), and the legacy `logprobs` object of each
choice (token texts, offsets) from the engine's log-probabilities, with the prompt's when `echo` is set. A client that disconnects cancels its engine
requests, so their KV-cache slots free within one engine step.

Must not import: ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat, ms_gpt.checkpoint (the model comes in
loaded; `load_model` imports ms_gpt.model and ms_gpt.tokenizers inside the function).
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..generation import prompt_conventions
from . import protocol
from .protocol import ProtocolError
from .engine import QueueFull, SamplingParams

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def load_model(path: str, dtype: Optional[str] = None):
    """(model, tokenizer) of a model directory, hub name or PEFT adapter directory, in eval mode; `dtype` sets the
    matmul dtype (GPTConfig.compute_dtype: float32 | float16 | bfloat16; None = the checkpoint's)."""
    from ..generation import GenerationArguments
    from ..model import GPTLMHeadModel
    from ..tokenizers import BUNDLED_TOKENIZERS, load_tokenizer

    if dtype is None:
        model, tokenizer = GenerationArguments(model=path).load()
    else:
        model = GPTLMHeadModel.from_pretrained(path, compute_dtype=dtype)
        local = os.path.exists(path) or path in BUNDLED_TOKENIZERS
        tokenizer = load_tokenizer(path if local else getattr(model, "name_or_path", path))
    model.set_train(False)
    return model, tokenizer


# ---- metrics -------------------------------------------------------------------------------------------------------
class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count); observe() is called from the event loop only."""

    def __init__(self, name: str, help_text: str, buckets: tuple):
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, n in zip(self.buckets, self.counts):
            total += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {total}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out += [f"{self.name}_sum {self.sum:.6f}", f"{self.name}_count {self.count}"]
        return out


LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0)


@dataclass
class _Choice:
    index: int
    text: protocol.TextStream
    handle: object = None
    finish_reason: Optional[str] = None
    first_token_time: Optional[float] = None
    last_token_time: Optional[float] = None
    started_role: bool = False
    echo: Optional[str] = None  # the prompt text still to put before the choice's text (echo)
    logprobs: Optional["_LogprobsBuilder"] = None


class _LogprobsBuilder:
    """One choice's legacy logprobs object, built event by event; `take()` returns what was added since the last
    call (a stream chunk's share) and `body()` the whole object."""

    def __init__(self, tokenizer, skip_ids):
        self.tokenizer, self.skip = tokenizer, set(skip_ids)
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        self.offset = 0
        self.sent = 0

    def _text(self, token: int) -> str:
        return self.tokenizer.decode([int(token)])

    def add(self, token: int, logprob: Optional[float], top_ids=None, top_logprobs=None) -> None:
        text = self._text(token)
        self.tokens.append(text)
        self.token_logprobs.append(None if logprob is None else float(logprob))
        top = None
        if top_ids is not None:  # two ids with the same text: the likelier one's logprob is kept
            top = {}
            for t, v in zip(top_ids, top_logprobs):
                top.setdefault(self._text(t), float(v))
        self.top_logprobs.append(top)
        self.text_offset.append(self.offset)
        self.offset += len(text)

    def add_prompt(self, ids: list, prompt, k: int) -> None:
        """Prompt tokens: the first without a logprob, the others from the engine's (logprob, top ids, top) of the
        prompt (top cut to k)."""
        self.add(ids[0], None)
        if prompt is None:
            return
        logprob, top_ids, top = prompt
        for i, token in enumerate(ids[1:]):
            self.add(token, logprob[i], top_ids[i][:k], top[i][:k])

    def add_generated(self, new_ids: list, tokens) -> None:
        if tokens is None:
            return
        logprob, top_ids, top = tokens
        for i, token in enumerate(new_ids):
            if int(token) not in self.skip:  # a stop id is not part of the text
                self.add(token, logprob[i], top_ids[i], top[i])

    def body(self, start: int = 0) -> dict:
        return protocol.logprobs_body(self.tokens[start:], self.token_logprobs[start:], self.top_logprobs[start:],
                                      self.text_offset[start:])

    def take(self) -> Optional[dict]:
        if self.sent == len(self.tokens):
            return None
        out, self.sent = self.body(self.sent), len(self.tokens)
        return out


@dataclass
class ServerState:
    engine: object
    tokenizer: object
    model_name: str
    context_length: int
    defaults: dict = field(default_factory=dict)  # the checkpoint's generation_config.json values
    max_history: int = 0
    vocab_size: int = 0  # the model's: stop ids at or beyond it are dropped (0 = keep all)
    chat_template: Optional[protocol.ChatTemplate] = None
    prompt_prefix: list = field(default_factory=list)
    completion_stops: list = field(default_factory=list)
    requests_total: int = 0
    errors_total: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ttft = Histogram("ms_gpt_time_to_first_token_seconds", "time from request arrival to its first token",
                              LATENCY_BUCKETS)
        self.tpot = Histogram("ms_gpt_time_per_output_token_seconds",
                              "time between consecutive output tokens of a request", LATENCY_BUCKETS)
        self.e2e = Histogram("ms_gpt_e2e_request_latency_seconds", "time from request arrival to its last token",
                             LATENCY_BUCKETS + (40.0, 80.0))
        prefix, stops = prompt_conventions(self.tokenizer)
        self.prompt_prefix = prefix
        eos = self.defaults.get("eos_token_id")
        if eos is None and not stops:
            eos = self.tokenizer.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.completion_stops = [i for i in dict.fromkeys(stops + [int(e) for e in eos])
                                 if not self.vocab_size or 0 <= i < self.vocab_size]
        template = getattr(self.tokenizer, "chat_template", None)
        if template:
            self.chat_template = protocol.ChatTemplate(self.tokenizer, template)

    # -- request -> engine inputs
    def sampling_params(self, request: protocol.CompletionRequest, stop_ids: list, index: int) -> SamplingParams:
        s, d = request.sampling, self.defaults
        temperature = s.temperature
        if temperature is None:  # the checkpoint's choice, else OpenAI's default (1.0)
            temperature = (d.get("temperature", 1.0) if d.get("do_sample") else 0.0) if "do_sample" in d else 1.0
        seed = s.seed + index if s.seed is not None else None  # n choices of one seeded request differ
        return SamplingParams(max_tokens=s.max_tokens, temperature=float(temperature),
                              top_p=s.top_p if s.top_p is not None else float(d.get("top_p", 1.0)),
                              top_k=s.top_k if s.top_k is not None else int(d.get("top_k", 0)),
                              repetition_penalty=(s.repetition_penalty if s.repetition_penalty is not None
                                                  else float(d.get("repetition_penalty", 1.0))),
                              seed=seed, stop_token_ids=() if request.ignore_eos else tuple(stop_ids),
                              logprobs=request.logprobs,
                              prompt_logprobs=request.echo and (request.logprobs is not None or s.max_tokens == 0))

    def completion_prompts(self, request: protocol.CompletionRequest) -> list[list[int]]:
        out = []
        for p in request.prompts:
            if p.ids is not None:  # token ids go to the model as they are
                outside = [t for t in p.ids if not 0 <= t < (self.vocab_size or float("inf"))]
                if outside:
                    raise ProtocolError(f"'prompt' holds token id {outside[0]} outside the vocabulary "
                                        f"[0, {self.vocab_size})", "prompt")
                self.check_length(len(p.ids), request.sampling.max_tokens, "prompt")
                out.append(list(p.ids))
                continue
            ids = self.prompt_prefix + list(self.tokenizer.encode(p.text))
            if not ids:
                bos = self.tokenizer.bos_token_id
                bos = bos if bos is not None else self.tokenizer.eos_token_id
                if bos is None:
                    raise ProtocolError("'prompt' is empty and the tokenizer has no BOS/EOS token to start from",
                                        "prompt")
                ids = [bos]
            self.check_length(len(ids), request.sampling.max_tokens, "prompt")
            out.append(ids)
        return out

    def chat_prompt(self, request: protocol.CompletionRequest) -> list[int]:
        if self.chat_template is None:
            raise ProtocolError(f"model '{self.model_name}' has no chat template (tokenizer_config.json has no "
                                "chat_template); use /v1/completions", "messages")
        budget = self.context_length - request.sampling.max_tokens
        if budget < 1:
            raise ProtocolError(f"'max_tokens' = {request.sampling.max_tokens} leaves no room for the conversation "
                                f"in the context of {self.context_length} tokens", "max_tokens")
        return self.chat_template.fit(request.messages, budget, self.max_history)

    def check_length(self, prompt_tokens: int, max_tokens: int, what: str) -> None:
        if prompt_tokens > self.context_length - (1 if max_tokens else 0):
            raise ProtocolError(f"'{what}' is {prompt_tokens} tokens; the model's context is {self.context_length} "
                                "tokens (prompt + max_tokens must fit)", what)
        if prompt_tokens + max_tokens > self.context_length:
            raise ProtocolError(f"'max_tokens' = {max_tokens} with a prompt of {prompt_tokens} tokens exceeds the "
                                f"model's context of {self.context_length} tokens", "max_tokens")

    def metrics_text(self) -> str:
        stats = self.engine.stats()
        lines = []

        def metric(name, kind, help_text, value):
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"])

        metric("ms_gpt_requests_running", "gauge", "engine requests holding a KV-cache slot", stats["running"])
        metric("ms_gpt_requests_waiting", "gauge", "engine requests waiting for a slot", stats["waiting"])
        metric("ms_gpt_requests_finished_total", "counter", "engine requests finished (any reason)",
               stats["finished"])
        metric("ms_gpt_prompt_tokens_total", "counter", "prompt tokens admitted", stats["prompt_tokens"])
        metric("ms_gpt_generation_tokens_total", "counter", "tokens generated", stats["generation_tokens"])
        metric("ms_gpt_http_requests_total", "counter", "generation requests received", self.requests_total)
        lines += ["# HELP ms_gpt_http_errors_total requests refused, by HTTP status",
                  "# TYPE ms_gpt_http_errors_total counter"]
        lines += [f'ms_gpt_http_errors_total{{status="{k}"}} {v}' for k, v in sorted(self.errors_total.items())]
        for hist in (self.ttft, self.tpot, self.e2e):
            lines += hist.lines()
        return "\n".join(lines) + "\n"


# ---- one generation request ----------------------------------------------------------------------------------------
class _Generation:
    """The engine requests of one HTTP request (one per choice) and the queue their events arrive on."""

    def __init__(self, state: ServerState, request: protocol.CompletionRequest, prompts: list[list[int]],
                 stop_ids: list):
        self.state, self.request, self.prompts = state, request, prompts
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.arrival = time.perf_counter()
        self.choices: list[_Choice] = []
        self.created = int(time.time())
        self.id = protocol.new_id(request.chat)
        n = request.n
        try:
            for p, ids in enumerate(prompts):
                for j in range(n):
                    index = p * n + j
                    choice = _Choice(index, protocol.TextStream(state.tokenizer, stop_ids, request.stop))
                    params = state.sampling_params(request, stop_ids, j)
                    if request.echo:
                        text = request.prompts[p].text
                        choice.echo = text if text is not None else state.tokenizer.decode(ids)
                    if request.logprobs is not None:
                        choice.logprobs = _LogprobsBuilder(state.tokenizer, params.stop_token_ids)
                    choice.handle = state.engine.submit(ids, params, self._callback(index))
                    self.choices.append(choice)
        except BaseException:
            self.cancel()
            raise

    def _callback(self, index: int):
        put = self.events.put_nowait
        loop = self.loop

        def on_event(new_ids, finish_reason, logprobs=None):
            loop.call_soon_threadsafe(put, (index, list(new_ids), finish_reason, time.perf_counter(), logprobs))
        return on_event

    def cancel(self) -> None:
        for c in self.choices:
            if c.finish_reason is None:
                c.handle.cancel()

    @property
    def done(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    def take(self, event) -> tuple[_Choice, str, bool]:
        """Apply one engine event -> (choice, new text, finished now)."""
        index, new_ids, reason, t, logprobs = event
        choice = self.choices[index]
        if choice.finish_reason is not None:
            return choice, "", False
        echo = ""
        if choice.echo is not None:  # the first event: the prompt goes first
            echo, choice.echo = choice.echo, None
            if choice.logprobs is not None:
                choice.logprobs.add_prompt(self.prompts[index // self.request.n],
                                           logprobs.prompt if logprobs is not None else None, self.request.logprobs)
        if choice.logprobs is not None and logprobs is not None and not choice.text.stopped:
            choice.logprobs.add_generated(new_ids, logprobs.tokens)
        if new_ids and not choice.text.stopped:
            if choice.first_token_time is None:
                choice.first_token_time = t
                self.state.ttft.observe(t - self.arrival)
            else:
                self.state.tpot.observe((t - choice.last_token_time) / len(new_ids))
            choice.last_token_time = t
        was_stopped = choice.text.stopped
        piece = echo + choice.text.add(new_ids)
        if choice.text.stopped and not was_stopped and reason is None:
            choice.handle.cancel()  # a stop string: free the slot now; the engine's "abort" closes the choice
        if reason is None:
            return choice, piece, False
        choice.finish_reason = "stop" if choice.text.stopped else reason
        self.state.e2e.observe(t - self.arrival)
        return choice, piece + choice.text.finish(), True

    def usage(self) -> dict:
        return protocol.usage(sum(len(p) for p in self.prompts), sum(len(c.text.ids) for c in self.choices))


def _error(err: ProtocolError, state: Optional[ServerState] = None) -> JSONResponse:
    if state is not None:
        state.errors_total[err.status] = state.errors_total.get(err.status, 0) + 1
    return JSONResponse(err.body(), status_code=err.status)


def _engine_error(err: Exception) -> ProtocolError:
    if isinstance(err, QueueFull):
        return ProtocolError("the server's request queue is full; retry later", None, 429, "queue_full")
    message = str(err)
    param = next((name for name in ("max_tokens", "prompt", "temperature", "top_p", "top_k", "repetition_penalty",
                                    "seed") if name in message), None)
    return ProtocolError(message, param)


# ---- the app -------------------------------------------------------------------------------------------------------
def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="ms_gpt", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(ProtocolError(str(exc.detail), None, exc.status_code, None), state)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return _error(ProtocolError(f"internal error: {type(exc).__name__}: {exc}", None, 500, None), state)

    @app.get("/health")
    async def health():
        error = getattr(state.engine, "error", None)
        if error is not None:  # the engine thread died (e.g. out of memory while compiling): not coming back
            return JSONResponse({"status": "error", "message": f"the engine failed: {error!r}"}, status_code=500)
        if not state.engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return protocol.models_body(state.model_name, state.context_length)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def index():
        with open(os.path.join(STATIC, "chat.html"), encoding="utf-8") as f:
            return HTMLResponse(f.read())

    @app.post("/v1/completions")
    async def completions(raw: Request):
        return await _serve(raw, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(raw: Request):
        return await _serve(raw, chat=True)

    async def _serve(raw: Request, chat: bool):
        state.requests_total += 1
        try:
            body = protocol.parse_json(await raw.body())
            request = protocol.parse_chat(body) if chat else protocol.parse_completion(body)
            if request.model is not None and request.model != state.model_name:
                raise ProtocolError(f"The model '{request.model}' does not exist; this server serves "
                                    f"'{state.model_name}'", "model", 404, "model_not_found")
            if not state.engine.ready:
                raise ProtocolError("the model is still compiling; retry when /health answers 200", None, 503)
            if chat:
                prompts = [state.chat_prompt(request)]
                stop_ids = list(state.completion_stops)
                eot = state.chat_template.end_of_turn
                if eot is not None and eot not in stop_ids:
                    stop_ids.insert(0, eot)
            else:
                prompts = state.completion_prompts(request)
                stop_ids = state.completion_stops
            try:
                generation = _Generation(state, request, prompts, stop_ids)
            except (QueueFull, ValueError) as err:
                raise _engine_error(err) from None
        except ProtocolError as err:
            return _error(err, state)
        if request.stream:
            return StreamingResponse(_stream(generation), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(raw, generation)

    async def _collect(raw: Request, generation: _Generation):
        texts: dict = {c.index: [] for c in generation.choices}
        try:
            while not generation.done:
                try:
                    event = await asyncio.wait_for(generation.events.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await raw.is_disconnected():
                        generation.cancel()
                        return JSONResponse(protocol.error_body("client disconnected"), status_code=499)
                    continue
                choice, piece, _ = generation.take(event)
                texts[choice.index].append(piece)
        except BaseException:
            generation.cancel()
            raise
        choices = [(c.index, "".join(texts[c.index]), c.finish_reason,
                    c.logprobs.body() if c.logprobs is not None else None) for c in generation.choices]
        return protocol.response_body(generation.request.chat, generation.id, state.model_name,
                                      generation.created, choices, generation.usage())

    async def _stream(generation: _Generation):
        request, chat = generation.request, generation.request.chat
        args = (chat, generation.id, state.model_name, generation.created)
        try:
            if chat:  # each choice's first chunk: the assistant role
                for c in generation.choices:
                    yield protocol.sse(protocol.chunk_body(*args, c.index, "", None, request.include_usage,
                                                           first=True))
            while not generation.done:
                choice, piece, finished = generation.take(await generation.events.get())
                logprobs = choice.logprobs.take() if choice.logprobs is not None else None
                if piece or finished or logprobs:
                    yield protocol.sse(protocol.chunk_body(*args, choice.index, piece,
                                                           choice.finish_reason if finished else None,
                                                           request.include_usage, logprobs=logprobs))
            if request.include_usage:
                yield protocol.sse(protocol.usage_chunk(*args, generation.usage()))
            yield protocol.sse("[DONE]")
        finally:
            generation.cancel()  # a client that went away frees its slots (no-op when every choice finished)

    return app


def serve(state: ServerState, host: str, port: int, log=print) -> None:
    """Run the app with uvicorn until interrupted; the engine warms up in its thread meanwhile (/health 503)."""
    import uvicorn

    app = create_app(state)
    state.engine.start()

    def announce():
        while not state.engine.ready:
            time.sleep(0.2)
        log(f"ms_gpt.serve: '{state.model_name}' ready on http://{host}:{port}/ (chat page) and "
            f"http://{host}:{port}/v1 (OpenAI API)", flush=True)
    threading.Thread(target=announce, daemon=True).start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        state.engine.shutdown()
