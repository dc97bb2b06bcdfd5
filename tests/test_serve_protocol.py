"""The wire format of `ms_gpt.serve` without a server: request validation (one 400 naming the field), streamed text
(incremental detokenization, stop strings), SSE framing, and chat templates as HF keeps them (the dialogue template
gives HF's `apply_chat_template` ids: tests/fixtures/chat_template/, made by make_chat_template_reference.py)."""
import json
import os

import pytest

from ms_gpt.dialogue import DIALOGUE_CHAT_TEMPLATE, encode_dialogue
from ms_gpt.serving import protocol
from ms_gpt.serving.protocol import ProtocolError
from ms_gpt.tokenizers import load_tokenizer

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "chat_template", "expected.json")


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer("bert-base-chinese")


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def refused(parse, body) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(body)
    return info.value


def test_completion_requests_parse_and_refuse_by_field():
    r = protocol.parse_completion({"model": "m", "prompt": ["a", "b"], "max_tokens": 5, "temperature": 0,
                                   "stop": "x", "n": 2, "stream": True, "stream_options": {"include_usage": True},
                                   "seed": 3, "top_k": 4, "ignore_eos": True})
    assert [p.text for p in r.prompts] == ["a", "b"] and r.stop == ("x",) and r.n == 2
    assert r.sampling.max_tokens == 5 and r.sampling.temperature == 0.0 and r.sampling.top_k == 4
    assert r.stream and r.include_usage and r.ignore_eos and not r.chat
    default = protocol.parse_completion({"prompt": "hi"})
    assert default.sampling.max_tokens == 16 and default.sampling.temperature is None and default.n == 1
    for body, param in [({"prompt": "hi", "max_tokens": 0}, "max_tokens"), ({"prompt": "hi", "n": 0}, "n"),
                        ({"prompt": "hi", "max_tokens": 1.5}, "max_tokens"), ({"prompt": None}, "prompt"),
                        ({"prompt": "hi", "top_p": 0}, "top_p"), ({"prompt": "hi", "seed": "1"}, "seed"),
                        ({"prompt": "hi", "stream": "yes"}, "stream"), ({"prompt": "hi", "stop": ["a"] * 5}, "stop"),
                        ({"prompt": "hi", "logprobs": 6}, "logprobs"), ({"prompt": "hi", "echo": 1}, "echo"),
                        ({"prompt": [[1, 2], []]}, "prompt"), ({"prompt": [1, True]}, "prompt"),
                        ({"prompt": "hi", "logprobs": -1}, "logprobs"), ({"prompt": "hi", "suffix": "x"}, "suffix"),
                        ({"prompt": "hi", "presence_penalty": 1}, "presence_penalty"),
                        ({"prompt": "hi", "functions": []}, "functions"),
                        ({"prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options"),
                        ({"prompt": "hi", "stream": True, "stream_options": {"x": 1}}, "stream_options")]:
        err = refused(protocol.parse_completion, body)
        assert (err.status, err.param) == (400, param), (body, err.message)
        assert f"'{param}" in err.message
    assert refused(protocol.parse_completion, "text").param is None
    with pytest.raises(ProtocolError, match="not valid JSON"):
        protocol.parse_json(b"{")
    body = refused(protocol.parse_completion, {"prompt": "hi", "logprobs": 6}).body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    # OpenAI's four prompt forms, echo and logprobs (what lm-eval's local-completions sends)
    assert [p.ids for p in protocol.parse_completion({"prompt": [1, 2, 3]}).prompts] == [[1, 2, 3]]
    r = protocol.parse_completion({"prompt": [[1, 2], [3]], "echo": True, "logprobs": 1, "max_tokens": 0})
    assert [p.ids for p in r.prompts] == [[1, 2], [3]] and r.echo and r.logprobs == 1 and r.sampling.max_tokens == 0
    assert protocol.parse_completion({"prompt": "hi", "logprobs": 0}).logprobs == 0
    assert protocol.parse_completion({"prompt": "hi", "logprobs": False}).logprobs is None


def test_chat_requests_parse_messages():
    r = protocol.parse_chat({"messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                                       {"type": "text", "text": "there"}]}],
                             "max_completion_tokens": 7})
    assert r.chat and r.sampling.max_tokens == 7
    assert r.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    for body, param in [({"messages": []}, "messages"), ({"messages": "hi"}, "messages"),
                        ({"messages": [{"role": "user"}]}, "messages[0].content"),
                        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
                        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
                         "messages[0].tool_calls"),
                        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
                        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools")]:
        assert refused(protocol.parse_chat, body).param == param, body


@pytest.mark.parametrize("vocabulary", ["gpt2", "bert"])
def test_text_stream_joins_to_the_final_text(vocabulary, bert, gpt2):
    tokenizer = {"gpt2": gpt2, "bert": bert}[vocabulary]
    text = "Hello wörld, 你好 — ünïcode 🎉 and more words here."
    ids = tokenizer.encode(text)
    final = tokenizer.decode(ids, skip_special_tokens=True)
    stream = protocol.TextStream(tokenizer, [], [])
    pieces = [stream.add([i]) for i in ids] + [stream.finish()]
    assert "".join(pieces) == final
    assert all("\ufffd" not in p for p in pieces)  # no half character is ever released
    assert stream.ids == ids


def test_text_stream_stop_strings_and_stop_ids(gpt2):
    ids = gpt2.encode("one two three four five")
    stream = protocol.TextStream(gpt2, [], ["three", "zzz"])
    pieces = []
    for i in ids:
        pieces.append(stream.add([i]))
        if stream.stopped:
            break
    assert stream.stopped and "".join(pieces) + stream.finish() == "one two "
    assert all("thr" not in p for p in pieces)  # a possible stop string start is held back
    assert len(stream.ids) == 3  # the tokens up to the one completing the stop string count
    eos = gpt2.eos_token_id
    stream = protocol.TextStream(gpt2, [eos], [])
    assert stream.add(ids[:2]) + stream.add([eos]) + stream.finish() == "one two"
    assert len(stream.ids) == 3  # the stop id is counted, not shown


def test_sse_and_bodies():
    assert protocol.sse("[DONE]") == "data: [DONE]\n\n"
    assert protocol.sse({"a": "你"}) == 'data: {"a": "你"}\n\n'
    chunk = protocol.chunk_body(True, "id", "m", 1, 0, "", None, True, first=True)
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""} and chunk["usage"] is None
    last = protocol.chunk_body(False, "id", "m", 1, 2, "x", "stop", False)
    assert last["choices"] == [{"index": 2, "text": "x", "logprobs": None, "finish_reason": "stop"}]
    assert "usage" not in last
    body = protocol.response_body(True, "id", "m", 1, [(0, "hi", "length")], protocol.usage(3, 2))
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert protocol.usage_chunk(True, "id", "m", 1, body["usage"])["choices"] == []


def test_dialogue_template_gives_hf_apply_chat_template_ids(bert, tmp_path):
    """The template the dialogue recipe saves, through ms_gpt's save/load, renders to the ids HF's
    apply_chat_template gives (fixture) and to encode_dialogue's ids."""
    with open(FIXTURE, encoding="utf-8") as f:
        expected = json.load(f)
    assert expected["template"] == DIALOGUE_CHAT_TEMPLATE
    bert.chat_template = DIALOGUE_CHAT_TEMPLATE
    try:
        bert.save_pretrained(tmp_path)
    finally:
        bert.chat_template = None
    with open(tmp_path / "tokenizer_config.json", encoding="utf-8") as f:
        assert json.load(f)["chat_template"] == DIALOGUE_CHAT_TEMPLATE
    loaded = load_tokenizer(tmp_path)
    template = protocol.ChatTemplate(loaded, loaded.chat_template)
    assert template.end_of_turn == loaded.sep_token_id
    for case in expected["cases"]:
        messages = case["messages"]
        assert protocol.render_chat(loaded.chat_template, messages, template.special) == case["text"]
        assert template.ids(messages) == case["ids"]
        assert encode_dialogue(loaded, [m["content"] for m in messages]) == case["ids"]
    # transformers 5 writes the template to chat_template.jinja beside the config: read as well
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}x", encoding="utf-8")
    assert load_tokenizer(tmp_path).chat_template == "{{ bos_token }}x"
    assert load_tokenizer("bert-base-chinese").chat_template is None


def test_chat_template_drops_the_oldest_turns_to_fit(bert):
    template = protocol.ChatTemplate(bert, DIALOGUE_CHAT_TEMPLATE)
    turns = ["你好", "你好呀", "今天天气怎么样", "挺好"]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    for budget in (4, 9, 12, 100):
        assert template.fit(messages, budget) == encode_dialogue(bert, turns, max_length=budget), budget
    assert template.fit(messages, 100, max_history=1) == encode_dialogue(bert, turns[-1:])
    with pytest.raises(ProtocolError) as info:
        template.fit(messages, 3)  # [CLS] 挺 好 [SEP] is 4 tokens
    assert info.value.param == "messages"
    # a template that refuses a conversation says so as a 400
    strict = protocol.ChatTemplate(bert, "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}"
                                         "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ProtocolError, match="user first"):
        strict.ids([{"role": "assistant", "content": "x"}])
    assert strict.end_of_turn is None


class _IdleEngine:
    """What the app reads of an engine when no request reaches it."""
    ready = True
    error = None

    def stats(self):
        return {"running": 0, "waiting": 0, "finished": 0, "prompt_tokens": 0, "generation_tokens": 0}


def test_chat_without_a_template_is_a_400_that_says_so(gpt2):
    from fastapi.testclient import TestClient

    from ms_gpt.serving.app import ServerState, create_app

    state = ServerState(_IdleEngine(), gpt2, "plain-gpt2", 64, vocab_size=len(gpt2))
    assert state.chat_template is None and state.completion_stops == [gpt2.eos_token_id]
    client = TestClient(create_app(state))
    answer = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "messages" and "no chat template" in answer.json()["error"]["message"]
    answer = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 64})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "max_tokens"
    assert client.get("/health").status_code == 200
    _IdleEngine.error = RuntimeError("compile failed")
    try:
        assert client.get("/health").status_code == 500
    finally:
        _IdleEngine.error = None


def test_load_model_takes_a_peft_adapter_directory(tmp_path, monkeypatch, gpt2):
    """`ms_gpt.serve --model ADAPTER_DIR`: the base named by the adapter plus the adapter, and the tokenizer saved
    beside it (as the recipes save it); --dtype reaches the model's config."""
    import shutil

    import numpy as np

    from ms_gpt.model import GPTLMHeadModel
    from ms_gpt.serving.app import load_model

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)  # the fixture adapter names its base relative to the repository root
    adapter = tmp_path / "adapter"
    shutil.copytree(os.path.join(root, "tests", "fixtures", "peft", "gpt2-lora"), adapter)
    gpt2.save_pretrained(adapter)
    model, tokenizer = load_model(str(adapter))
    reference = GPTLMHeadModel.from_pretrained(os.path.join(root, "tests", "fixtures", "peft", "gpt2-lora"))
    ids = np.array([[1, 2, 3, 4]])
    assert np.array_equal(np.asarray(model(ids).asnumpy()), np.asarray(reference(ids).asnumpy()))
    assert any("lora" in p.name for p in model.get_parameters()) and len(tokenizer) == len(gpt2)
    assert load_model(str(adapter), "float16")[0].config.compute_dtype == "float16"
