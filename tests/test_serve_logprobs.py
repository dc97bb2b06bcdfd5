"""`echo` + `logprobs` and token-id prompts on /v1/completions of `python -m ms_gpt.serve` (what lm-evaluation-harness's
`local-completions` model sends), against Hugging Face: for the tiny GPT-2 and GPT-1 checkpoints of
tests/fixtures/hf (their `expected.npz` holds the logits transformers computed for `input_ids`), the echoed
`token_logprobs` equal HF's log-softmax of the same ids within 1e-4 and `top_logprobs` hold HF's top-k; generated
tokens' logprobs equal the echoed scoring of the same ids; streaming sends the logprobs per chunk.

Each server serves a copy of the HF folder with the bundled GPT-2 BPE tokenizer (ids < 1000 decode to token texts).
"""
import os
import shutil

import numpy as np
import pytest

from serve_process import ROOT, ServerProcess, http_post

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "hf")


def hf_logprobs(name: str) -> tuple:
    """(input_ids [2, 16], float64 log-softmax of HF's logits [2, 16, V])."""
    ref = np.load(os.path.join(FIXTURES, name, "expected.npz"))
    logits = ref["logits"].astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return ref["input_ids"], shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.fixture(scope="module", params=["gpt2", "openai-gpt"])
def served(request, tmp_path_factory):
    from ms_gpt.tokenizers import load_tokenizer

    directory = str(tmp_path_factory.mktemp(f"logprobs_{request.param}"))
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(os.path.join(FIXTURES, request.param, name), directory)
    tokenizer = load_tokenizer("gpt2")
    tokenizer.save_pretrained(directory)
    with ServerProcess(directory, "--max_batch_size", "4",
                       log_dir=str(tmp_path_factory.mktemp("logprobs_logs"))) as proc:
        yield request.param, proc, tokenizer


def complete(proc, **body) -> dict:
    status, answer = http_post(proc.url + "/v1/completions", body)
    assert status == 200, answer
    return answer


def expected_top(tokenizer, logp_row: np.ndarray, k: int) -> dict:
    top = {}
    for t in np.argsort(-logp_row, kind="stable")[:k]:
        top.setdefault(tokenizer.decode([int(t)]), float(logp_row[t]))
    return top


def test_echoed_prompt_logprobs_equal_hf(served):
    name, proc, tokenizer = served
    ids, logp = hf_logprobs(name)
    k = 5
    # lm-eval's request: several token-id prompts, echo, max_tokens 0 (prompt only) and 1
    for max_tokens in (0, 1):
        answer = complete(proc, prompt=ids.tolist(), echo=True, logprobs=k, max_tokens=max_tokens, temperature=0)
        assert [c["index"] for c in answer["choices"]] == [0, 1]
        for row, choice in zip(range(len(ids)), answer["choices"]):
            lp = choice["logprobs"]
            n = ids.shape[1]
            assert len(lp["tokens"]) == n + max_tokens
            assert lp["tokens"][:n] == [tokenizer.decode([int(t)]) for t in ids[row]]
            assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
            want = logp[row, np.arange(n - 1), ids[row, 1:]]
            np.testing.assert_allclose(lp["token_logprobs"][1:n], want, atol=1e-4, rtol=0)
            for t in range(1, n):
                top = lp["top_logprobs"][t]
                expected = expected_top(tokenizer, logp[row, t - 1], k)
                assert set(top) == set(expected), (t, top, expected)
                np.testing.assert_allclose([top[s] for s in expected], list(expected.values()), atol=1e-4)
            # text_offset: each token's start in the echoed text
            text = choice["text"]
            assert text.startswith(tokenizer.decode(ids[row].tolist()))
            assert lp["text_offset"] == list(np.cumsum([0] + [len(s) for s in lp["tokens"][:-1]]))
            if max_tokens == 1:  # the generated token: greedy = HF's argmax after the whole prompt
                assert lp["tokens"][n] == next(iter(lp["top_logprobs"][n]))
        assert answer["usage"]["prompt_tokens"] == ids.size


def test_generated_logprobs_equal_their_echoed_scoring_and_k_is_respected(served):
    name, proc, tokenizer = served
    ids, _ = hf_logprobs(name)
    prompt = ids[0, :6].tolist()
    answer = complete(proc, prompt=prompt, logprobs=2, max_tokens=8, temperature=0, ignore_eos=True)
    lp = answer["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 8 and all(len(top) <= 2 for top in lp["top_logprobs"])
    assert all(len(top) >= 1 for top in lp["top_logprobs"])
    texts = {}
    for i in range(1000):  # token text -> id over the model's vocabulary (texts shared by several ids left out)
        texts.setdefault(tokenizer.decode([i]), []).append(i)
    generated = [texts[t][0] for t in lp["tokens"]]
    assert all(len(texts[t]) == 1 for t in lp["tokens"]), lp["tokens"]
    # greedy: each token is its step's most likely one
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert token == next(iter(top)) and logprob == pytest.approx(max(top.values()), abs=1e-6)
    assert lp["text_offset"][0] == 0
    # the same ids scored by echo (the prompt path) give the same logprobs
    scored = complete(proc, prompt=prompt + generated, echo=True, logprobs=0, max_tokens=0)["choices"][0]
    np.testing.assert_allclose(scored["logprobs"]["token_logprobs"][6:], lp["token_logprobs"], atol=1e-4)
    assert all(top == {} for top in scored["logprobs"]["top_logprobs"][1:])  # logprobs: 0 -> no alternatives
    # a string prompt and a list of strings work too, one choice per prompt
    many = complete(proc, prompt=["a b", "c"], max_tokens=2, temperature=0, echo=True)
    assert [c["index"] for c in many["choices"]] == [0, 1] and many["choices"][0]["logprobs"] is None
    assert many["choices"][0]["text"].startswith("a b") and many["choices"][1]["text"].startswith("c")
    single = complete(proc, prompt=tokenizer.encode("a b"), max_tokens=2, temperature=0)["choices"]
    assert len(single) == 1 and "a b" + single[0]["text"] == many["choices"][0]["text"]


def test_streaming_sends_logprobs_per_chunk(served):
    import json
    import urllib.request

    name, proc, tokenizer = served
    ids, _ = hf_logprobs(name)
    body = dict(prompt=ids[1, :10].tolist(), echo=True, logprobs=3, max_tokens=5, temperature=0, ignore_eos=True)
    whole = complete(proc, **body)["choices"][0]
    request = urllib.request.Request(proc.url + "/v1/completions", data=json.dumps(dict(body, stream=True)).encode(),
                                     headers={"Content-Type": "application/json"})
    chunks = []
    with urllib.request.urlopen(request, timeout=60) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:])["choices"][0])
    with_logprobs = [c["logprobs"] for c in chunks if c["logprobs"]]
    assert len(with_logprobs) >= 5  # the echoed prompt, then one per generated token
    joined = {key: sum((lp[key] for lp in with_logprobs), []) for key in whole["logprobs"]}
    assert joined == whole["logprobs"]
    assert "".join(c["text"] for c in chunks) == whole["text"]


def test_bad_logprobs_requests_name_the_field(served):
    _, proc, _ = served
    url = proc.url + "/v1/completions"
    for body, param in [({"prompt": [1, 2], "logprobs": 6}, "logprobs"),
                        ({"prompt": [1, 2], "max_tokens": 0}, "max_tokens"),
                        ({"prompt": [1, 5000]}, "prompt"),
                        ({"prompt": [1, 2], "logprobs": -1}, "logprobs")]:
        status, answer = http_post(url, body)
        assert status == 400 and answer["error"]["param"] == param, (body, answer)
    status, answer = http_post(proc.url + "/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "hi"}], "logprobs": True})
    assert status == 400
