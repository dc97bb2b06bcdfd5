"""`python -m ms_gpt.serve` through the official `openai` client, against one real server process on 127.0.0.1
(shared by the module): greedy text equals `generate()` alone and among 8 concurrent requests of different lengths,
streamed text joined equals the non-streamed text, usage counts, seeds, `n`, `stop` strings, chat through the
model's chat template (oldest turns dropped to fit), OpenAI error bodies, /health, /v1/models and /metrics.

The model is a tiny random GPT-2 over the bert-base-chinese vocabulary with the dialogue chat template, saved as a
fine-tuned chit-chat model would be; completions see `[CLS]` first and stop at `[SEP]`, as `generate_text` does.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve_process import ROOT, ServerProcess, http_get, http_post, make_model_dir

openai = pytest.importorskip("openai")

CONTEXT = 128
PROMPTS = ["你好", "今天天气怎么样", "我们去公园散步吧，好不好", "一", "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
           "hello world", "请问图书馆几点开门？", "周末有什么安排"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("serve_model")), n_positions=CONTEXT)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    with ServerProcess(model_dir, "--max_batch_size", "8", "--served_model_name", "tiny-chat",
                       log_dir=str(tmp_path_factory.mktemp("serve_logs"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(model_dir):
    """The in-process model and tokenizer: what `generate()` says the server must answer."""
    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer

    return GPTLMHeadModel.from_pretrained(model_dir), load_tokenizer(model_dir)


def expected_completion(reference, prompt: str, max_tokens: int) -> str:
    from ms_gpt.generation import generate_text

    model, tokenizer = reference
    return generate_text(model, tokenizer, prompt, max_new_tokens=max_tokens)[0][len(prompt):]


def expected_chat(reference, turns: list, max_tokens: int) -> tuple:
    """(reply text, prompt ids) of `generate()` on the dialogue encoding of `turns` (newest turns that fit)."""
    from ms_gpt.dialogue import encode_dialogue
    from ms_gpt.generation import generate

    model, tokenizer = reference
    ids = encode_dialogue(tokenizer, turns, max_length=CONTEXT - max_tokens)
    sep = tokenizer.sep_token_id
    out = generate(model, np.asarray([ids]), max_new_tokens=max_tokens, eos_token_id=[sep])[0, len(ids):]
    return tokenizer.decode([int(t) for t in out if t != sep], skip_special_tokens=True), ids


def test_help_lists_every_option():
    result = subprocess.run([sys.executable, "-m", "ms_gpt.serve", "--help"], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--host", "--port", "--max_batch_size", "--max_queue", "--served_model_name",
                   "--dtype", "--device_target", "--max_history"):
        assert option in result.stdout
    assert "127.0.0.1" in result.stdout and "8000" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "ms_gpt.serve", "--port", "0", "--model", "x"], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert bad.returncode == 2 and "--port" in bad.stderr


def test_health_models_and_page(server):
    assert http_get(server.url + "/health")[0] == 200
    status, body = http_get(server.url + "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["tiny-chat"]
    status, page = http_get(server.url + "/")
    assert status == 200 and "/v1/chat/completions" in page


def test_greedy_completion_equals_generate_alone_and_among_8_concurrent(client, reference):
    max_tokens = 12
    expected = [expected_completion(reference, p, max_tokens) for p in PROMPTS]
    alone = client.completions.create(model="tiny-chat", prompt=PROMPTS[2], max_tokens=max_tokens, temperature=0)
    assert alone.choices[0].text == expected[2]

    def ask(prompt):
        return client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=max_tokens, temperature=0)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, PROMPTS))
    assert [a.choices[0].text for a in answers] == expected
    _, tokenizer = reference
    for prompt, answer in zip(PROMPTS, answers):
        assert answer.usage.prompt_tokens == 1 + len(tokenizer.encode(prompt))  # [CLS] + the prompt
        assert answer.choices[0].finish_reason in ("stop", "length")
        n = answer.usage.completion_tokens
        assert 1 <= n <= max_tokens and answer.usage.total_tokens == answer.usage.prompt_tokens + n
        assert (n == max_tokens) == (answer.choices[0].finish_reason == "length")
    # a list of prompts is one request with a choice per prompt
    batch = client.completions.create(model="tiny-chat", prompt=PROMPTS[:3], max_tokens=max_tokens, temperature=0)
    assert [c.text for c in sorted(batch.choices, key=lambda c: c.index)] == expected[:3]


def test_stream_joins_to_the_non_streamed_text_with_usage(client):
    for prompt in PROMPTS[:3]:
        full = client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=16, temperature=0)
        chunks = list(client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=16, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
        text_chunks, usage_chunk = chunks[:-1], chunks[-1]
        assert "".join(c.choices[0].text for c in text_chunks) == full.choices[0].text
        reasons = [c.choices[0].finish_reason for c in text_chunks]
        assert reasons[-1] == full.choices[0].finish_reason and all(r is None for r in reasons[:-1])
        assert usage_chunk.choices == [] and usage_chunk.usage.model_dump() == full.usage.model_dump()
    # without include_usage: no usage chunk
    chunks = list(client.completions.create(model="tiny-chat", prompt=PROMPTS[0], max_tokens=4, temperature=0,
                                            stream=True))
    assert all(c.choices and c.usage is None for c in chunks)


def test_seed_repeats_sampling_and_n_gives_choices(client):
    def sample(seed, n=1):
        return client.completions.create(model="tiny-chat", prompt=PROMPTS[1], max_tokens=10, temperature=1.0,
                                         seed=seed, n=n, extra_body={"top_k": 50})
    first, again = sample(7), sample(7)
    assert first.choices[0].text == again.choices[0].text
    texts = {sample(s).choices[0].text for s in range(4)}
    assert len(texts) > 1  # sampling does sample
    several = sample(7, n=3)
    assert sorted(c.index for c in several.choices) == [0, 1, 2]
    assert several.choices[0].text == first.choices[0].text  # choice j samples with seed + j
    assert several.usage.prompt_tokens == first.usage.prompt_tokens
    assert several.usage.completion_tokens == sum(sample(7 + j).usage.completion_tokens for j in range(3))


def test_stop_string_cuts_the_text(client, reference):
    full = expected_completion(reference, PROMPTS[4], 16)
    stop = full[4:6]
    assert len(full) > 8 and stop
    cut = full[:full.find(stop)]
    answer = client.completions.create(model="tiny-chat", prompt=PROMPTS[4], max_tokens=16, temperature=0, stop=stop)
    assert answer.choices[0].text == cut and answer.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(model="tiny-chat", prompt=PROMPTS[4], max_tokens=16, temperature=0,
                                              stop=[stop, "never-appears"], stream=True))
    assert "".join(c.choices[0].text for c in streamed) == cut
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_chat_through_the_template_equals_generate(client, reference):
    turns = ["你好", "你好呀", "今天天气怎么样"]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    reply, ids = expected_chat(reference, turns, 12)
    answer = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=12, temperature=0)
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == reply
    assert answer.usage.prompt_tokens == len(ids)
    chunks = list(client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == reply
    assert chunks[-2].choices[0].finish_reason == answer.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_chat_drops_the_oldest_turns_to_fit(client, reference):
    long_turn = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"  # 24 tokens + [SEP]
    turns = [long_turn, "好诗", long_turn, "再来一首", long_turn, "谢谢"]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    reply, ids = expected_chat(reference, turns, 48)
    assert len(ids) < len(reference[1].encode("".join(turns)))  # turns were dropped
    answer = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=48, temperature=0)
    assert answer.usage.prompt_tokens == len(ids) <= CONTEXT - 48
    assert answer.choices[0].message.content == reply


def test_errors_are_openai_bodies_naming_the_field(server, client):
    url = server.url + "/v1/completions"
    cases = [
        (b"{not json", 400, None),
        ([1, 2], 400, None),
        ({"prompt": 5}, 400, "prompt"),
        ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
        ({"prompt": "hi", "max_tokens": CONTEXT}, 400, "max_tokens"),
        ({"prompt": "你" * (CONTEXT + 5), "max_tokens": 1}, 400, "prompt"),
        ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
        ({"prompt": "hi", "logprobs": 6}, 400, "logprobs"),
        ({"prompt": [1, 2, 3], "echo": "yes"}, 400, "echo"),
        ({"prompt": [1, 10 ** 7]}, 400, "prompt"),
        ({"prompt": [[1, 2], []]}, 400, "prompt"),
        ({"prompt": "hi", "frequency_penalty": 0.5}, 400, "frequency_penalty"),
        ({"prompt": "hi", "best_of": 3}, 400, "best_of"),
        ({"prompt": "hi", "stop": 3}, 400, "stop"),
        ({"prompt": "hi", "stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"prompt": "hi", "model": "gpt-4"}, 404, "model"),
    ]
    for body, status, param in cases:
        got, answer = http_post(url, body)
        assert got == status, (body, answer)
        assert set(answer["error"]) == {"message", "type", "param", "code"}, answer
        assert answer["error"]["param"] == param and answer["error"]["message"], (body, answer)
    got, answer = http_post(server.url + "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]})
    assert got == 400 and answer["error"]["param"] == "messages[0].role"
    # neutral values of unimplemented fields are accepted; the server still serves after all of the above
    got, answer = http_post(url, {"prompt": "hi", "max_tokens": 2, "frequency_penalty": 0, "logprobs": None,
                                  "echo": False})
    assert got == 200 and answer["usage"]["completion_tokens"] >= 1
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="hi", max_tokens=2)
    assert http_get(server.url + "/nowhere")[0] == 404


def test_metrics_count_requests_and_latencies(server, client):
    before = server.metrics()
    answer = client.completions.create(model="tiny-chat", prompt=PROMPTS[0], max_tokens=5, temperature=0,
                                       stream=True)
    assert list(answer)
    after = server.metrics()
    assert after["ms_gpt_requests_running"] == 0 and after["ms_gpt_requests_waiting"] == 0
    assert after["ms_gpt_requests_finished_total"] == before["ms_gpt_requests_finished_total"] + 1
    assert after["ms_gpt_prompt_tokens_total"] == before["ms_gpt_prompt_tokens_total"] + 3  # [CLS] 你 好
    gained = after["ms_gpt_generation_tokens_total"] - before["ms_gpt_generation_tokens_total"]
    assert 1 <= gained <= 5
    assert after["ms_gpt_time_to_first_token_seconds_count"] == before["ms_gpt_time_to_first_token_seconds_count"] + 1
    assert after["ms_gpt_time_per_output_token_seconds_count"] >= before["ms_gpt_time_per_output_token_seconds_count"]
