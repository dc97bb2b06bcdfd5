"""Load and faults against a real `python -m ms_gpt.serve` process on 127.0.0.1 (bounded in count and time):
three rounds of 64 requests at concurrency 16, of which 10 clients disconnect mid-stream and 5 send malformed
requests. Every other request completes with generate()'s greedy text, the disconnected requests free their slots
(they stop generating), /metrics ends each round at 0 running and 0 waiting, and the server's memory does not grow
across the rounds. A full queue answers 429 at once instead of hanging."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve_process import ServerProcess, http_post, make_model_dir

openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")

CONTEXT = 128
MAX_TOKENS = 12
LONG = 100  # max_tokens of the clients that disconnect: they would run long if their slot were not freed
PROMPTS = ["你好", "今天天气怎么样", "我们去公园散步吧", "一", "春眠不觉晓", "hello", "请问几点开门", "周末"]
MALFORMED = [b"{not json", b'{"prompt": 3}', b'{"prompt": "hi", "max_tokens": -1}', b'{"prompt": "hi", "n": "x"}',
             b'{"prompt": "hi", "logprobs": 6}']


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("load_model")), n_positions=CONTEXT)


@pytest.fixture(scope="module")
def expected(model_dir):
    from ms_gpt.generation import generate_text
    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.tokenizers import load_tokenizer

    model, tokenizer = GPTLMHeadModel.from_pretrained(model_dir), load_tokenizer(model_dir)
    return {p: generate_text(model, tokenizer, p, max_new_tokens=MAX_TOKENS)[0][len(p):] for p in PROMPTS}


def wait_idle(server, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        metrics = server.metrics()
        if metrics["ms_gpt_requests_running"] == 0 and metrics["ms_gpt_requests_waiting"] == 0:
            return metrics
        assert time.monotonic() < deadline, f"not idle after {timeout} s: {metrics}"
        time.sleep(0.1)


def test_load_with_disconnects_and_malformed_requests(model_dir, expected, tmp_path):
    with ServerProcess(model_dir, "--max_batch_size", "8", "--max_queue", "64", log_dir=str(tmp_path)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        jobs = ["disconnect"] * 10 + ["malformed"] * 5 + ["complete"] * 49

        def run(k: int):
            kind, prompt = jobs[k], PROMPTS[k % len(PROMPTS)]
            if kind == "malformed":
                status, body = http_post(server.url + "/v1/completions", MALFORMED[k % len(MALFORMED)])
                return kind, prompt, status, body["error"]["param"] if isinstance(body, dict) else body
            if kind == "disconnect":
                with client.completions.create(model=model, prompt=prompt, max_tokens=LONG, temperature=0,
                                               stream=True, extra_body={"ignore_eos": True}) as stream:
                    for i, _ in enumerate(stream):
                        if i == 1:
                            break  # leaving the block closes the connection mid-stream
                return kind, prompt, None, None
            if k % 2:
                chunks = client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                                   stream=True)
                return kind, prompt, 200, "".join(c.choices[0].text for c in chunks)
            answer = client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
            return kind, prompt, 200, answer.choices[0].text

        rss = []
        process = psutil.Process(server.process.pid)
        for round_ in range(3):
            before = server.metrics()
            start = time.monotonic()
            order = list(range(len(jobs)))
            order = order[round_::3] + [k for k in order if k % 3 != round_]  # disconnects spread over the round
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(run, order))
            assert time.monotonic() - start < 120
            for kind, prompt, status, value in results:
                if kind == "complete":
                    assert value == expected[prompt], prompt
                elif kind == "malformed":
                    assert status == 400, value
            after = wait_idle(server)
            requests = after["ms_gpt_requests_finished_total"] - before["ms_gpt_requests_finished_total"]
            assert requests == 59  # every engine request ended (the malformed never reached it)
            generated = after["ms_gpt_generation_tokens_total"] - before["ms_gpt_generation_tokens_total"]
            # the disconnected requests stopped early: far from 10 x LONG tokens
            assert generated <= 49 * MAX_TOKENS + 10 * LONG // 2, generated
            rss.append(process.memory_info().rss)
        check = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0)
        assert check.choices[0].text == expected[PROMPTS[0]]
        growth_mb = (rss[2] - rss[0]) / 2 ** 20
        assert growth_mb < 40, f"server memory grew {growth_mb:.1f} MB from round 1 to round 3 ({rss})"


def test_full_queue_answers_429_without_hanging(model_dir, tmp_path):
    with ServerProcess(model_dir, "--max_batch_size", "1", "--max_queue", "2", log_dir=str(tmp_path)) as server:
        body = {"prompt": "你好", "max_tokens": 60, "temperature": 0, "ignore_eos": True}

        def post(_):
            start = time.monotonic()
            status, answer = http_post(server.url + "/v1/completions", body, timeout=120)
            return status, answer, time.monotonic() - start

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(post, range(10)))
        statuses = sorted(s for s, _, _ in results)
        assert statuses.count(200) >= 3 and statuses.count(429) >= 1, statuses
        assert set(statuses) <= {200, 429}
        for status, answer, seconds in results:
            if status == 429:
                assert answer["error"]["code"] == "queue_full" and seconds < 10
            else:
                assert answer["usage"]["completion_tokens"] == 60
        wait_idle(server)
        assert http_post(server.url + "/v1/completions", {"prompt": "hi", "max_tokens": 2})[0] == 200
