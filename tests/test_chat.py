"""Dialogue format, reply metrics, ChatSession, and the `ms_gpt.chat` / `ms_gpt.generate` command lines.

The chat model is a tiny random GPT-2 over the bundled bert-base-chinese vocabulary, saved with save_pretrained the
way a fine-tuned Chinese chit-chat model would be.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from mindspore import Tensor

from ms_gpt.config import GPTConfig
from ms_gpt.dialogue import ChatSession, encode_dialogue, reply_metrics
from ms_gpt.generation import generate, generate_text
from ms_gpt.model import GPTLMHeadModel
from ms_gpt.tokenizers import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_NEW = 8


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer("bert-base-chinese")


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, bert):
    """A saved model + tokenizer directory. Weights are scaled up from the default init so that greedy replies vary
    with the context instead of repeating one token."""
    model = GPTLMHeadModel(GPTConfig(vocab_size=len(bert), n_positions=64, n_embd=32, n_layer=2, n_head=4))
    rng = np.random.default_rng(0)
    for param in model.get_parameters():
        if ".ln_" not in param.name:
            std = 1.0 if "wpe" in param.name else 0.1
            param.set_data(Tensor(rng.normal(0.0, std, param.shape).astype(np.float32)))
    directory = str(tmp_path_factory.mktemp("chat_model"))
    model.save_pretrained(directory)
    bert.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def chat_model(chat_dir):
    return GPTLMHeadModel.from_pretrained(chat_dir)


def run_cli(module: str, args: list, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


# ---- dialogue format --------------------------------------------------------------------------------------------
def test_encode_dialogue_format_and_history_limit(bert):
    ni, hao, zai, ma = bert.encode("你好在吗")
    cls, sep = bert.cls_token_id, bert.sep_token_id
    assert (cls, sep) == (101, 102)
    assert encode_dialogue(bert, ["你好", "在吗"]) == [cls, ni, hao, sep, zai, ma, sep]
    # 7 ids needed; with 6 only the most recent whole turn is kept
    assert encode_dialogue(bert, ["你好", "在吗"], max_length=7) == [cls, ni, hao, sep, zai, ma, sep]
    assert encode_dialogue(bert, ["你好", "在吗"], max_length=6) == [cls, zai, ma, sep]
    # a last turn longer than max_length keeps its end
    assert encode_dialogue(bert, ["你好在吗"], max_length=4) == [cls, zai, ma, sep]
    with pytest.raises(ValueError, match="no turns"):
        encode_dialogue(bert, [])
    with pytest.raises(ValueError, match="cls_token"):
        encode_dialogue(load_tokenizer("gpt2"), ["hi"])


def test_reply_metrics_closed_form():
    # spaces force the segmentation: words 我 爱 你 / 我 爱 她
    metrics = reply_metrics(["我 爱 你", "我 爱 她"])
    assert metrics == {"distinct_1": 4 / 6, "distinct_2": 3 / 4, "mean_reply_len": 3.0}
    # jieba segments 今天天气很好 as 今天天气 / 很 / 好; n-grams do not cross replies
    metrics = reply_metrics(["今天天气很好", "好"])
    assert metrics == {"distinct_1": 3 / 4, "distinct_2": 1.0, "mean_reply_len": 2.0}
    assert reply_metrics([]) == {"distinct_1": 0.0, "distinct_2": 0.0, "mean_reply_len": 0.0}


# ---- chat session and command lines -----------------------------------------------------------------------------
def test_chat_session_context_history_and_reset(chat_model, bert):
    session = ChatSession(chat_model, bert, max_history=3, max_new_tokens=MAX_NEW)
    first = session.reply("你好")
    assert first and session.history == ["你好", first]
    second = session.reply("今天天气怎么样")
    context = encode_dialogue(bert, ["你好", first, "今天天气怎么样"], max_length=64 - MAX_NEW)
    out = generate(chat_model, context, max_new_tokens=MAX_NEW, eos_token_id=bert.sep_token_id, min_new_tokens=1)
    new = [t for t in out[0, len(context):].tolist() if t != bert.sep_token_id]
    assert second == bert.decode(new, skip_special_tokens=True).strip()
    session.reset()
    assert session.history == [] and session.reply("你好") == first
    with pytest.raises(ValueError, match="max_history"):
        ChatSession(chat_model, bert, max_history=0)


def test_chat_cli_answers_turns_from_stdin(chat_dir, chat_model, bert):
    result = run_cli("ms_gpt.chat", ["--model", chat_dir, "--max_new_tokens", str(MAX_NEW)],
                     stdin="你好\n/reset\n\n你好\n吃了吗？😀 ok\n/exit\n这一行不会被读到\n")
    assert result.returncode == 0, result.stderr
    replies = result.stdout.split("\n")[:-1]
    assert len(replies) == 3  # the empty line is skipped, /exit stops before the last line
    expected_first = ChatSession(chat_model, bert, max_new_tokens=MAX_NEW).reply("你好")
    assert replies[0] == replies[1] == expected_first


def test_generate_cli_text_in_text_out(chat_dir, chat_model, bert):
    prompt = "今天☃天气"  # ☃ is not in the BERT vocabulary: it becomes [UNK]
    args = ["--model", chat_dir, "--prompt", prompt, "--max_new_tokens", "6", "--do_sample", "--seed", "5",
            "--top_k", "20", "--num_return_sequences", "2"]
    result = run_cli("ms_gpt.generate", args)
    assert result.returncode == 0, result.stderr
    expected = generate_text(chat_model, bert, prompt, max_new_tokens=6, do_sample=True, seed=5, top_k=20,
                             num_return_sequences=2)
    assert result.stdout == "".join(f"=== sequence {i + 1} ===\n{text}\n" for i, text in enumerate(expected))
    assert all(text.startswith(prompt) and len(text) > len(prompt) for text in expected)

    missing = run_cli("ms_gpt.generate", ["--model", os.path.join(chat_dir, "nope"), "--prompt", "x"])
    assert missing.returncode == 2 and "error:" in missing.stderr and "nope" in missing.stderr
