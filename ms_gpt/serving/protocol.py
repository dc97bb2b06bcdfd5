"""The OpenAI wire format of `python -m ms_gpt.serve`: request validation, response and stream-chunk bodies, error
bodies, Server-Sent-Events framing, chat-template rendering and incremental detokenization.

Everything here is plain Python on JSON values, token ids and a tokenizer object (`encode` / `decode`, special
tokens); it never touches tensors and never sees HTTP objects, so it is tested without a model or a server.

Requests are validated by hand rather than by a schema library so that every rejection is ONE 400 naming its field
(`param`), as OpenAI does, and so that fields ms_gpt does not implement are refused by name instead of silently
ignored. A field sent as null, or as the value that changes nothing (`presence_penalty: 0`, `echo: false`, ...),
is accepted: a client that always sends the neutral value still works. /v1/completions takes OpenAI's four prompt
forms (a string, strings, token ids, lists of token ids), `echo` and `logprobs: k` (0..5; OpenAI's legacy logprobs
object, `logprobs_body`), which is what lm-evaluation-harness's `local-completions` model sends; `max_tokens: 0` is
allowed with `echo` (score the prompt only). Chat `logprobs` is refused (`CompletionRequest.unsupported`).

Must not import: any ms_gpt module (the wire format stands alone).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

# ---- errors --------------------------------------------------------------------------------------------------------
ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded",
               500: "internal_error", 503: "service_unavailable"}


class ProtocolError(Exception):
    """A request the server refuses: HTTP `status` and OpenAI's error body (message, type, param, code)."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> dict:
        return error_body(self.message, self.status, self.param, self.code)


def error_body(message: str, status: int = 400, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


# ---- field checks --------------------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _int(body: dict, name: str, default: Optional[int], low: Optional[int] = None) -> Optional[int]:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ProtocolError(f"'{name}' must be an integer, got {_type_name(value)} {value!r}", name)
    if low is not None and value < low:
        raise ProtocolError(f"'{name}' must be >= {low}, got {value}", name)
    return value


def _float(body: dict, name: str, default: Optional[float], low: float, high: float,
           low_open: bool = False) -> Optional[float]:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"'{name}' must be a number, got {_type_name(value)} {value!r}", name)
    value = float(value)
    if not (value > low if low_open else value >= low) or value > high:
        bracket = "(" if low_open else "["
        raise ProtocolError(f"'{name}' must be in {bracket}{low:g}, {high:g}], got {value:g}", name)
    return value


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ProtocolError(f"'{name}' must be true or false, got {_type_name(value)} {value!r}", name)
    return value


def _stop(body: dict) -> tuple:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ProtocolError(f"'stop' must be a string or a list of strings, got {_type_name(value)}", "stop")
    if len(items) > 4:
        raise ProtocolError(f"'stop' takes at most 4 strings, got {len(items)}", "stop")
    if any(not s for s in items):
        raise ProtocolError("'stop' strings must not be empty", "stop")
    return tuple(items)


# fields ms_gpt does not implement, with the values that leave the output unchanged (accepted as if absent)
_NEUTRAL = {"presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "logit_bias": ({},), "best_of": (1,),
            "suffix": ("",), "parallel_tool_calls": (False,), "tools": ([],), "top_logprobs": (0,)}
_COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed", "n",
           "stream", "stream_options", "ignore_eos", "user"}
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "logprobs"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "logprobs"}


def _check_fields(body: dict, known: set) -> None:
    for name, value in body.items():
        if name in known or value is None or value in _NEUTRAL.get(name, ()):
            continue
        if name in _NEUTRAL:
            raise ProtocolError(f"'{name}' is not supported by this server (only its neutral value "
                                f"{_NEUTRAL[name][0]!r} is accepted)", name)
        raise ProtocolError(f"'{name}' is not supported by this server", name)


@dataclass
class Sampling:
    """The decoding settings of one request (engine.SamplingParams minus the stop ids, which need the tokenizer)."""
    max_tokens: int
    temperature: Optional[float]  # None = the checkpoint's generation_config.json, else 1.0 (OpenAI's default)
    top_p: Optional[float]  # None (also for top_k, repetition_penalty): the checkpoint's value, else off
    top_k: Optional[int]
    repetition_penalty: Optional[float]
    seed: Optional[int]


@dataclass
class Prompt:
    text: Optional[str] = None
    ids: Optional[list] = None  # a token-id prompt (sent to the model as is)


@dataclass
class CompletionRequest:
    model: Optional[str]
    sampling: Sampling
    stop: tuple = ()
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False
    prompts: list = field(default_factory=list)  # [Prompt] for /v1/completions
    messages: list = field(default_factory=list)  # [{"role", "content"}] for /v1/chat/completions
    echo: bool = False
    logprobs: Optional[int] = None

    @property
    def chat(self) -> bool:
        return bool(self.messages)

    def unsupported(self) -> None:
        """Refuse what is parsed but not served: chat logprobs (and, for other callers, token ids in chat)."""
        if self.chat and self.logprobs is not None:
            raise ProtocolError("'logprobs' is not supported on /v1/chat/completions; use /v1/completions", "logprobs")
        if self.chat and any(p.ids is not None for p in self.prompts):
            raise ProtocolError("'prompt' as token ids is not supported yet; send text", "prompt")


def _common(body: Any, known: set) -> dict:
    if not isinstance(body, dict):
        raise ProtocolError(f"the request body must be a JSON object, got {_type_name(body)}")
    _check_fields(body, known)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ProtocolError(f"'model' must be a string, got {_type_name(model)}", "model")
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = Sampling(max_tokens=_int(body, max_name, 16, 0),
                        temperature=_float(body, "temperature", None, 0.0, 2.0),
                        top_p=_float(body, "top_p", None, 0.0, 1.0, low_open=True),
                        top_k=_int(body, "top_k", None, 0) if body.get("top_k") != -1 else 0,  # -1 = off (vLLM)
                        repetition_penalty=_float(body, "repetition_penalty", None, 0.0, 100.0, low_open=True),
                        seed=_int(body, "seed", None))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ProtocolError(f"'stream_options' must be an object, got {_type_name(options)}", "stream_options")
    options = options or {}
    unknown = set(options) - {"include_usage"}
    if unknown:
        raise ProtocolError(f"'stream_options.{sorted(unknown)[0]}' is not supported", "stream_options")
    stream = _bool(body, "stream", False)
    include_usage = _bool(options, "include_usage", False)
    if options and not stream:
        raise ProtocolError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    return dict(model=model, sampling=sampling, stop=_stop(body), n=_int(body, "n", 1, 1), stream=stream,
                include_usage=include_usage, ignore_eos=_bool(body, "ignore_eos", False))


MAX_N = 16  # choices per prompt
MAX_LOGPROBS = 5  # OpenAI's legacy completions limit (= engine.MAX_LOGPROBS)


def parse_completion(body: Any) -> CompletionRequest:
    """A /v1/completions body -> CompletionRequest, or ProtocolError naming the field."""
    request = CompletionRequest(**_common(body, COMPLETION_FIELDS))
    prompt = body.get("prompt")
    if prompt is None:
        raise ProtocolError("'prompt' is required", "prompt")
    if isinstance(prompt, str):
        request.prompts = [Prompt(text=prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        request.prompts = [Prompt(text=p) for p in prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        request.prompts = [Prompt(ids=list(prompt))]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) and p and all(
            isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt):
        request.prompts = [Prompt(ids=list(p)) for p in prompt]
    else:
        raise ProtocolError("'prompt' must be a string, a non-empty list of strings, a non-empty list of token ids "
                            "or a list of non-empty token-id lists", "prompt")
    request.echo = _bool(body, "echo", False)
    logprobs = body.get("logprobs")
    request.logprobs = None if logprobs is None or logprobs is False else _int(body, "logprobs", None, 0)
    if request.logprobs is not None and request.logprobs > MAX_LOGPROBS:
        raise ProtocolError(f"'logprobs' must be <= {MAX_LOGPROBS}, got {request.logprobs}", "logprobs")
    if request.sampling.max_tokens == 0 and not request.echo:
        raise ProtocolError("'max_tokens' must be >= 1 (0 only with 'echo': true, to score the prompt)",
                            "max_tokens")
    if request.n * len(request.prompts) > MAX_N * 8:
        raise ProtocolError(f"'n' x prompts = {request.n * len(request.prompts)} choices; at most {MAX_N * 8}", "n")
    if request.n > MAX_N:
        raise ProtocolError(f"'n' must be <= {MAX_N}, got {request.n}", "n")
    request.unsupported()
    return request


def parse_chat(body: Any) -> CompletionRequest:
    """A /v1/chat/completions body -> CompletionRequest, or ProtocolError naming the field."""
    request = CompletionRequest(**_common(body, CHAT_FIELDS))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("'messages' must be a non-empty list of {role, content} objects", "messages")
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ProtocolError(f"'{where}' must be an object, got {_type_name(message)}", where)
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant", "developer"):
            raise ProtocolError(f"'{where}.role' must be system, user or assistant, got {role!r}", f"{where}.role")
        if isinstance(content, list):  # OpenAI's content parts: text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ProtocolError(f"'{where}.content' parts must be text parts", f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ProtocolError(f"'{where}.content' must be a string, got {_type_name(content)}", f"{where}.content")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise ProtocolError(f"'{where}.{sorted(extra)[0]}' is not supported", f"{where}.{sorted(extra)[0]}")
        parsed.append({"role": "system" if role == "developer" else role, "content": content})
    request.messages = parsed
    if request.sampling.max_tokens == 0:
        name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        raise ProtocolError(f"'{name}' must be >= 1, got 0", name)
    logprobs = body.get("logprobs")
    request.logprobs = None if logprobs in (None, False) else 0
    if request.n > MAX_N:
        raise ProtocolError(f"'n' must be <= {MAX_N}, got {request.n}", "n")
    request.unsupported()
    return request


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(f"the request body is not valid JSON: {err}") from None


# ---- chat templates ------------------------------------------------------------------------------------------------
def render_chat(template: str, messages: Sequence[dict], special_tokens: dict) -> str:
    """Render `messages` through a Jinja chat template as HF's `apply_chat_template` does: a sandboxed environment
    with trim_blocks / lstrip_blocks, `add_generation_prompt=True`, the tokenizer's special tokens as variables and
    `raise_exception` for templates that refuse a conversation."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ProtocolError(f"the chat template refused the conversation: {message}", "messages")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=True,
                                                **special_tokens)
    except TemplateError as err:
        raise ProtocolError(f"the model's chat template failed: {err}", "messages") from None


class ChatTemplate:
    """A tokenizer's chat template: messages -> prompt ids that fit a token budget, and its end-of-turn token."""

    def __init__(self, tokenizer, template: str):
        self.tokenizer, self.template = tokenizer, template
        self.special = {k: v for k, v in _special_tokens(tokenizer).items() if v is not None}
        self.end_of_turn = self._end_of_turn()

    def ids(self, messages: Sequence[dict]) -> list[int]:
        return list(self.tokenizer.encode(render_chat(self.template, messages, self.special)))

    def _end_of_turn(self) -> Optional[int]:
        """The special token the template writes right after a message's text ([SEP], <|im_end|>, ...), found by
        rendering a probe conversation; None when the text is followed by no special token."""
        probe = "\x00probe\x00"
        text = render_chat(self.template, [{"role": "user", "content": probe}], self.special)
        after = text.split(probe, 1)[1] if probe in text else ""
        specials = {tok: self.tokenizer.encode(tok) for tok in self.special.values() if isinstance(tok, str)}
        for tok, ids in sorted(specials.items(), key=lambda item: -len(item[0])):
            if after.lstrip().startswith(tok) and len(ids) == 1:
                return ids[0]
        return None

    def fit(self, messages: Sequence[dict], budget: int, max_history: int = 0) -> list[int]:
        """The ids of the conversation's most recent messages that fit in `budget` tokens (system messages kept);
        the oldest turns are dropped first. ProtocolError when even the last message does not fit."""
        system = [m for m in messages if m["role"] == "system"]
        turns = [m for m in messages if m["role"] != "system"]
        if max_history > 0:
            turns = turns[-max_history:]
        for start in range(len(turns)):
            ids = self.ids(system + turns[start:]) if turns[start:] else []
            if len(ids) <= budget:
                return ids
        raise ProtocolError(f"'messages': the last message alone is {len(self.ids(system + turns[-1:]))} tokens; "
                            f"the context leaves {budget} for the prompt (context length minus max_tokens)",
                            "messages")


def _special_tokens(tokenizer) -> dict:
    names = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
    return {name: getattr(tokenizer, name, None) for name in names}


# ---- incremental detokenization ------------------------------------------------------------------------------------
class TextStream:
    """The text of one choice, produced token by token: decodes the ids so far (stop ids left out), cuts at the
    first stop string, and releases only text that can no longer change (no half UTF-8 character, no possible
    start of a stop string), so the streamed pieces join into exactly the final text."""

    def __init__(self, tokenizer, stop_ids: Sequence[int], stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.stop_strings = tuple(stop_strings)
        self.ids: list[int] = []  # every generated id (a stop id included): the usage count
        self.sent = 0  # characters of `text` already released
        self.text = ""
        self.stopped = False  # a stop string appeared (the caller cancels the request)

    def add(self, new_ids: Sequence[int]) -> str:
        """Take new ids; returns the newly releasable text (maybe empty)."""
        if self.stopped:
            return ""
        self.ids.extend(int(i) for i in new_ids)
        text = self.tokenizer.decode([i for i in self.ids if i not in self.stop_ids], skip_special_tokens=True)
        cut = min((text.find(s) for s in self.stop_strings if s in text), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._release(len(self.text))
        self.text = text
        hold = len(text)
        while hold > self.sent and text[hold - 1] == "\ufffd":  # an unfinished multi-byte character
            hold -= 1
        for s in self.stop_strings:  # the longest tail that could begin a stop string
            for k in range(min(len(s) - 1, hold - self.sent), 0, -1):
                if text[:hold].endswith(s[:k]):
                    hold -= k
                    break
        return self._release(hold)

    def finish(self) -> str:
        """All text not yet released (the request ended)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece = self.text[self.sent:upto]
        self.sent = upto
        return piece


# ---- bodies --------------------------------------------------------------------------------------------------------
def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs_body(tokens: list, token_logprobs: list, top_logprobs: list, text_offset: list) -> dict:
    """OpenAI's legacy completions logprobs object: per token its text, log-probability (None for the first prompt
    token), {text: logprob} of the top k (None for the first prompt token) and character offset into the text."""
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": text_offset}


def response_body(chat: bool, request_id: str, model: str, created: int, choices: list, usage_: dict) -> dict:
    """choices: [(index, text, finish_reason)] or [(index, text, finish_reason, logprobs object or None)] -> the
    non-streamed response."""
    choices = [tuple(c) + (None,) * (4 - len(c)) for c in choices]
    if chat:
        items = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                  "finish_reason": reason} for i, text, reason, lp in choices]
    else:
        items = [{"index": i, "text": text, "logprobs": lp, "finish_reason": reason}
                 for i, text, reason, lp in choices]
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model, "choices": items, "usage": usage_}


def chunk_body(chat: bool, request_id: str, model: str, created: int, index: int, text: Optional[str],
               finish_reason: Optional[str], include_usage: bool, first: bool = False,
               logprobs: Optional[dict] = None) -> dict:
    """One streamed chunk of one choice. Chat chunks carry a `delta` (the role in each choice's first chunk)."""
    if chat:
        delta: dict = {"role": "assistant", "content": text or ""} if first else (
            {"content": text} if text else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
    body = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [choice]}
    if include_usage:
        body["usage"] = None
    return body


def usage_chunk(chat: bool, request_id: str, model: str, created: int, usage_: dict) -> dict:
    return {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage_}


def sse(data: Any) -> str:
    """One Server-Sent Event as OpenAI frames it: `data: <json>` and a blank line; `[DONE]` ends a stream."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def models_body(name: str, context_length: int, created: Optional[int] = None) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created or int(time.time()),
                                        "owned_by": "ms_gpt", "max_model_len": context_length}]}
