"""The continuous-batching engine (ms_gpt.serving.engine): each request's ids equal generate()'s on the same prompt,
alone and among concurrent requests of different lengths, max_tokens and arrival times; seeded sampling draws what
generate(do_sample=True, seed=...) draws at batch 1; stop ids, cancel, a full queue and bad input; no compile after
warm-up over 100 mixed requests (dynamic shapes, and the static shapes of Ascend).

The models are the tiny HF reference checkpoints (tests/fixtures/hf: n_positions 64, vocab 1000); an engine's
warm-up (compiling its prefill and decode graphs) takes a few seconds, so the tests share engines where they can.
"""
import os
import threading
import time

import numpy as np
import pytest

from ms_gpt.generation import generate
from ms_gpt.model import GPTLMHeadModel
from ms_gpt.serving.engine import QueueFull, SamplingParams, ServingEngine

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf")
TIMEOUT = 120  # seconds any one wait may take before a test fails instead of hanging


class Collector:
    """An on_event callback that records every call and checks the contract: one finish, in the last call."""

    def __init__(self, on_first=None):
        self.ids, self.calls, self.finish = [], 0, None
        self.done = threading.Event()
        self.errors = []
        self.on_first = on_first
        self.prompt_logprobs, self.token_logprobs = None, []  # requests with logprobs / prompt_logprobs

    def __call__(self, ids, finish, logprobs=None):
        if logprobs is not None:
            if logprobs.prompt is not None:
                self.prompt_logprobs = logprobs.prompt
            if ids and finish != "abort":
                self.token_logprobs.extend(logprobs.tokens[0])
        if self.finish is not None:
            self.errors.append(f"event after finish {self.finish!r}: {ids} {finish}")
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            self.errors.append(f"ids not a list of int: {ids!r}")
        self.calls += 1
        self.ids.extend(ids)
        if self.calls == 1 and self.on_first is not None:
            self.on_first()
        if finish is not None:
            self.finish = finish
            self.done.set()

    def wait(self):
        assert self.done.wait(TIMEOUT), "request did not finish"
        assert self.errors == []
        return self.ids, self.finish


def load(name):
    return GPTLMHeadModel.from_pretrained(os.path.join(HF, name))


def reference(model, prompt, max_tokens, **kwargs):
    out = generate(model, np.asarray([prompt]), max_new_tokens=max_tokens, eos_token_id=[], **kwargs)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def gpt2():
    return load("gpt2")


@pytest.fixture(scope="module")
def gpt2_engine(gpt2):
    engine = ServingEngine(gpt2, max_batch_size=4, max_queue=64)
    engine.start()
    assert engine.wait_ready(TIMEOUT) and engine.ready
    yield engine
    engine.shutdown()
    assert not engine.ready


def run_all(engine, requests, gap: float = 0.0):
    """Submit (prompt, params) pairs (`gap` seconds apart) and wait for all; returns [(ids, finish)]."""
    collectors = []
    for prompt, params in requests:
        collectors.append(Collector())
        engine.submit(prompt, params, collectors[-1])
        if gap:
            time.sleep(gap)
    return [c.wait() for c in collectors]


# ---- greedy equals generate() --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "openai-gpt"])
def test_greedy_alone_equals_generate(name):
    model = load(name)
    prompt = np.random.default_rng(1).integers(0, 1000, 37).tolist()  # two prefill chunks
    expected = reference(model, prompt, 20)
    assert len(set(expected)) > 5  # a varied continuation
    engine = ServingEngine(model, max_batch_size=2)
    engine.start()
    try:
        handle_ids = Collector()
        handle = engine.submit(prompt, SamplingParams(max_tokens=20, temperature=0.0), handle_ids)
        assert handle.prompt_tokens == 37 and handle.request_id
        assert handle_ids.wait() == (expected, "length")
        assert handle_ids.calls == 20  # streamed one id per event
        assert engine.stats() == {"running": 0, "waiting": 0, "finished": 1, "prompt_tokens": 37,
                                  "generation_tokens": 20}
    finally:
        engine.shutdown()


def test_eight_concurrent_requests_each_equal_generate_alone(gpt2, gpt2_engine):
    """8 requests of different prompt lengths and max_tokens, submitted at different times into 4 slots (so some wait
    and join a running batch): each one's greedy ids are generate()'s on its prompt alone."""
    rng = np.random.default_rng(2)
    lengths, max_tokens = [1, 5, 31, 32, 33, 50, 9, 17], [12, 3, 20, 7, 14, 10, 1, 25]
    prompts = [rng.integers(0, 1000, n).tolist() for n in lengths]
    expected = [reference(gpt2, p, n) for p, n in zip(prompts, max_tokens)]
    before = gpt2_engine.stats()
    results = run_all(gpt2_engine, [(p, SamplingParams(max_tokens=n, temperature=0)) for p, n in
                                    zip(prompts, max_tokens)], gap=0.01)
    for (ids, finish), want in zip(results, expected):
        assert finish == "length"
        assert ids == want
    after = gpt2_engine.stats()
    assert (after["running"], after["waiting"]) == (0, 0)
    assert after["finished"] - before["finished"] == 8
    assert after["prompt_tokens"] - before["prompt_tokens"] == sum(lengths)
    assert after["generation_tokens"] - before["generation_tokens"] == sum(max_tokens)


def test_stop_token_ends_a_request_and_is_delivered(gpt2, gpt2_engine):
    prompt = np.random.default_rng(3).integers(0, 1000, 12).tolist()
    expected = reference(gpt2, prompt, 15)
    stop = expected[4]
    first = expected.index(stop)
    (ids, finish), (full, full_finish) = run_all(gpt2_engine, [
        (prompt, SamplingParams(max_tokens=15, temperature=0, stop_token_ids=(stop,))),
        (prompt, SamplingParams(max_tokens=15, temperature=0))])  # same prompt, no stop id: runs to the length
    assert (ids, finish) == (expected[:first + 1], "stop")
    assert (full, full_finish) == (expected, "length")
    # generate() with that id as eos stops at the same place
    eos_out = generate(gpt2, np.asarray([prompt]), max_new_tokens=15, eos_token_id=[stop])[0, len(prompt):]
    assert eos_out[:first + 1].tolist() == ids


# ---- sampling ------------------------------------------------------------------------------------------------------
def test_seeded_sampling_equals_generate_at_batch_1_among_other_requests(gpt2, gpt2_engine):
    """A seeded request draws from its own Generator: the same ids as generate(do_sample=True, seed=...) at batch 1,
    whatever runs next to it; a host-side greedy request (repetition penalty) equals generate() too."""
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, 1000, n).tolist() for n in (7, 40, 20, 3)]
    sample = dict(temperature=1.3, top_k=40, top_p=0.9)
    expected_a = reference(gpt2, prompts[0], 16, do_sample=True, seed=11, **sample)
    expected_b = reference(gpt2, prompts[1], 10, do_sample=True, seed=12, **sample)
    expected_pen = reference(gpt2, prompts[2], 12, repetition_penalty=1.5)
    requests = [(prompts[0], SamplingParams(max_tokens=16, seed=11, **sample)),
                (prompts[1], SamplingParams(max_tokens=10, seed=12, **sample)),
                (prompts[2], SamplingParams(max_tokens=12, temperature=0, repetition_penalty=1.5)),
                (prompts[3], SamplingParams(max_tokens=20, temperature=0))]
    first = run_all(gpt2_engine, requests)
    assert first[0] == (expected_a, "length")
    assert first[1] == (expected_b, "length")
    assert first[2] == (expected_pen, "length")
    assert expected_a != reference(gpt2, prompts[0], 16, do_sample=True, seed=13, **sample)  # the seed matters
    again = run_all(gpt2_engine, requests[:2][::-1], gap=0.02)  # another order, other neighbours: same draws
    assert again == [(expected_b, "length"), (expected_a, "length")]


# ---- cancel, queue, bad input, shutdown ---------------------------------------------------------------------------
def test_cancel_frees_the_slot_within_a_step():
    """One slot: a long request cancelled after its first token ends with "abort" and the waiting one runs next."""
    model = load("openai-gpt")
    engine = ServingEngine(model, max_batch_size=1, max_queue=4)
    engine.start()
    try:
        handles = []
        long = Collector(on_first=lambda: handles[0].cancel())
        handles.append(engine.submit([1, 2, 3], SamplingParams(max_tokens=60, temperature=0), long))
        short = Collector()
        engine.submit([4, 5], SamplingParams(max_tokens=3, temperature=0), short)
        ids, finish = long.wait()
        assert finish == "abort"
        assert len(ids) <= 2  # cancelled from the first event: at most one more step ran
        assert short.wait() == (reference(model, [4, 5], 3), "length")
        waiting = Collector()
        blocker = Collector()
        blocked = engine.submit([6], SamplingParams(max_tokens=60, temperature=0), blocker)
        queued = engine.submit([7], SamplingParams(max_tokens=2, temperature=0), waiting)
        queued.cancel()  # cancelled while waiting: never takes a slot
        blocked.cancel()
        assert waiting.wait() == ([], "abort")
        assert blocker.wait()[1] == "abort"
        # a consumer whose callback fails (a client gone) is cancelled; the engine keeps serving
        finishes, failed = [], threading.Event()

        def broken(ids, finish):
            finishes.append(finish)
            if finish is None:
                raise RuntimeError("client gone")
            failed.set()
        engine.submit([8, 9], SamplingParams(max_tokens=30, temperature=0), broken)
        assert failed.wait(TIMEOUT) and finishes == [None, "abort"]
        after = Collector()
        engine.submit([4, 5], SamplingParams(max_tokens=3, temperature=0), after)
        assert after.wait() == short.wait()
        stats = engine.stats()
        assert (stats["running"], stats["waiting"], stats["finished"]) == (0, 0, 6)
    finally:
        engine.shutdown()


def test_queue_full_bad_input_and_shutdown_aborts_pending(gpt2):
    engine = ServingEngine(gpt2, max_batch_size=2, max_queue=2)  # not started: requests stay queued
    params = SamplingParams(max_tokens=4, temperature=0)
    pending = [Collector(), Collector()]
    for c in pending:
        engine.submit([1, 2], params, c)
    with pytest.raises(QueueFull):
        engine.submit([1, 2], params, Collector())
    assert engine.stats()["waiting"] == 2
    context = engine.context_length
    assert context == gpt2.config.n_positions
    bad = [([], params, "prompt"), (list(range(context)), params, "prompt"), ([1000], params, "prompt"),
           ([1, 2], SamplingParams(max_tokens=0), "max_tokens"),
           ([1] * 10, SamplingParams(max_tokens=context - 9), "max_tokens"),
           ([1, 2], SamplingParams(max_tokens=2.5), "max_tokens"),
           ([1, 2], SamplingParams(max_tokens=4, temperature=-1), "temperature"),
           ([1, 2], SamplingParams(max_tokens=4, top_p=0), "top_p"),
           ([1, 2], SamplingParams(max_tokens=4, top_k=-2), "top_k"),
           ([1, 2], SamplingParams(max_tokens=4, repetition_penalty=0), "repetition_penalty"),
           ([1, 2], SamplingParams(max_tokens=4, seed=-1), "seed"),
           ([1, 2], SamplingParams(max_tokens=4, stop_token_ids=(5000,)), "stop_token_ids")]
    for prompt, p, field in bad:
        with pytest.raises(ValueError, match=field):
            engine.submit(prompt, p, Collector())
    engine.shutdown()
    assert [c.wait() for c in pending] == [([], "abort"), ([], "abort")]
    with pytest.raises(RuntimeError, match="shut down"):
        engine.submit([1, 2], params, Collector())
    assert engine.stats()["waiting"] == 0


# ---- compile counts ------------------------------------------------------------------------------------------------
def mixed_requests(rng, count: int, context: int):
    out = []
    for i in range(count):
        width = int(rng.integers(1, context - 1))
        max_tokens = int(rng.integers(1, context - width + 1))
        kind = i % 3
        params = SamplingParams(max_tokens=max_tokens, temperature=0) if kind == 0 else \
            SamplingParams(max_tokens=max_tokens, temperature=0.8, top_k=int(rng.integers(0, 50)), seed=i) \
            if kind == 1 else SamplingParams(max_tokens=max_tokens, temperature=0, stop_token_ids=(1, 2, 3),
                                             logprobs=2, prompt_logprobs=True)  # the scoring prefill graph
        out.append((rng.integers(0, 1000, width).tolist(), params))
    return out


@pytest.mark.parametrize("shapes", ["buckets", "dynamic", "ascend"])
def test_no_compile_after_warm_up_over_100_mixed_requests(gpt2, monkeypatch, shapes):
    """Prompt lengths 1..n_positions, any max_tokens, greedy / sampled / stop ids, bursts and trickles: the graphs
    compiled during warm-up serve all 100 requests, under each shape policy: static (rows, window) buckets (CPU /
    GPU default), one dynamic graph (`dynamic_shapes=True`), and Ascend's static policy (all rows, generate()'s
    windows); greedy spot checks equal generate()."""
    from ms_gpt.serving import engine as engine_module

    monkeypatch.setattr(engine_module, "_static_shapes", lambda: shapes == "ascend")
    engine = ServingEngine(gpt2, max_batch_size=5, max_queue=100, dynamic_shapes=shapes == "dynamic")
    engine.start()
    try:
        assert engine.wait_ready(TIMEOUT)
        warm = engine.compile_counts()
        # n_positions 64: 96 cache slots, one window; buckets: 1, 4 and 5 rows
        assert warm == {"prefill": 1, "score": 1, "decode": {"buckets": 3, "dynamic": 1, "ascend": 1}[shapes]}
        rng = np.random.default_rng(5)
        requests = mixed_requests(rng, 100, engine.context_length)
        collectors = []
        for i, (prompt, params) in enumerate(requests):
            collectors.append(Collector())
            engine.submit(prompt, params, collectors[-1])
            if i % 10 == 9:
                time.sleep(0.05)  # some arrive into an idle engine, some into a full one
        results = [c.wait() for c in collectors]
        assert engine.compile_counts() == warm
        for (prompt, params), (ids, finish), c in zip(requests, results, collectors):
            if params.prompt_logprobs:  # every prompt token after the first, every generated token scored
                assert c.prompt_logprobs[0].shape == (len(prompt) - 1,) and c.prompt_logprobs[1].shape[1] == 5
                assert len(c.token_logprobs) == len(ids) and all(lp <= 0 for lp in c.token_logprobs)
            assert finish in ("length", "stop")
            assert len(ids) == params.max_tokens if finish == "length" else ids[-1] in params.stop_token_ids
        for i in (0, 3, 6, 9):  # greedy spot checks against generate()
            prompt, params = requests[i]
            assert results[i][0] == reference(gpt2, prompt, params.max_tokens)
        stats = engine.stats()
        assert (stats["running"], stats["waiting"], stats["finished"]) == (0, 0, 100)
        assert stats["generation_tokens"] == sum(len(ids) for ids, _ in results)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("ascend", [False, True], ids=["buckets", "ascend"])
def test_static_windows_are_compiled_at_warm_up_and_reused(monkeypatch, ascend):
    """n_positions 296: Ascend's policy compiles one decode graph per window of generate()'s (256, all slots) for all
    rows; the CPU buckets are (1, 2 rows) x (128, all slots). Requests on either side of a window reuse them and
    equal generate()."""
    from ms_gpt.config import GPTConfig
    from ms_gpt.generation import STATIC_WINDOWS
    from ms_gpt.serving import engine as engine_module

    monkeypatch.setattr(engine_module, "_static_shapes", lambda: ascend)
    window = STATIC_WINDOWS[0]
    config = GPTConfig(vocab_size=97, n_positions=window + 40, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0,
                       embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPTLMHeadModel(config)
    engine = ServingEngine(model, max_batch_size=2)
    engine.start()
    try:
        assert engine.wait_ready(TIMEOUT)
        expected = {"prefill": 1, "score": 1, "decode": 2 if ascend else 4}
        assert engine.compile_counts() == expected
        rng = np.random.default_rng(6)
        short, long = rng.integers(0, 97, 20).tolist(), rng.integers(0, 97, window - 10).tolist()
        results = run_all(engine, [(short, SamplingParams(max_tokens=8, temperature=0)),
                                   (long, SamplingParams(max_tokens=30, temperature=0))])
        assert engine.compile_counts() == expected
        assert results == [(reference(model, short, 8), "length"), (reference(model, long, 30), "length")]
    finally:
        engine.shutdown()


def test_a_failed_warm_up_is_reported_and_aborts_pending_requests(gpt2, monkeypatch):
    """If the engine thread fails (here: warm-up), ready stays False, wait_ready raises with the cause, queued
    requests finish with "abort" and new ones are refused."""
    engine = ServingEngine(gpt2, max_batch_size=2)
    pending = Collector()
    engine.submit([1, 2, 3], SamplingParams(max_tokens=3, temperature=0), pending)

    def broken_warm_up():
        raise MemoryError("no room for the cache")
    monkeypatch.setattr(engine, "_warm_up", broken_warm_up)
    engine.start()
    with pytest.raises(RuntimeError, match="no room for the cache"):
        engine.wait_ready(TIMEOUT)
    assert not engine.ready
    assert pending.wait() == ([], "abort")
    with pytest.raises(RuntimeError, match="failed"):
        engine.submit([1], SamplingParams(max_tokens=1), Collector())
    engine.shutdown()
