"""Tokenizers: ids equal to Hugging Face's (fixture from tests/fixtures/make_tokenizer_reference.py),
decoding, added/special tokens, save/load, the char tokenizer and error messages."""

import json
import os
import warnings

import numpy as np
import pytest

from ms_gpt import tokenizers as tk
from ms_gpt.tokenizers import (
    BertTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    OpenAIGPTTokenizer,
    load_tokenizer,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
GPT1_DIR = os.path.join(FIXTURE_DIR, "gpt1-tiny")
SHAKESPEARE = os.path.join(ROOT, "data", "tinyshakespeare", "input.txt")

with open(os.path.join(FIXTURE_DIR, "expected.json"), encoding="utf-8") as _f:
    EXPECTED = json.load(_f)
TEXTS = EXPECTED["texts"]

LOADERS = {
    "gpt2": lambda: GPT2Tokenizer.from_pretrained("gpt2"),
    "bert": lambda: BertTokenizer.from_pretrained("bert-base-chinese"),
    "gpt1": lambda: OpenAIGPTTokenizer.from_pretrained(GPT1_DIR),
}
_CACHE = {}


def shared(kind):
    """A tokenizer for read-only tests; tests that add tokens build their own with LOADERS."""
    if kind not in _CACHE:
        _CACHE[kind] = LOADERS[kind]()
    return _CACHE[kind]


# ----------------------------------------------------------------------------- ids equal to HF's
@pytest.mark.parametrize("kind", ["gpt2", "bert", "gpt1"])
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_ids_match_hf_reference(kind, name):
    assert shared(kind).encode(TEXTS[name]) == EXPECTED[kind]["ids"][name]


def test_gpt2_known_ids():
    # values from the GPT-2 tokenizer documentation, independent of the fixture
    tok = shared("gpt2")
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok(" Hello world")["input_ids"] == [18435, 995]
    assert tok.vocab_size == len(tok) == 50257
    assert tok.bos_token == tok.eos_token == tok.unk_token == "<|endoftext|>"
    assert tok.eos_token_id == 50256 and tok.pad_token_id is None
    assert tok.encode("<|endoftext|>") == [50256]


def test_bert_special_tokens_only_on_request():
    tok = shared("bert")
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0, 100, 101, 102, 103,
    )
    for name, ids in EXPECTED["bert"]["ids_with_special_tokens"].items():
        assert tok.encode(TEXTS[name], add_special_tokens=True) == ids
        assert tok.encode(TEXTS[name]) == ids[1:-1]
        assert tok(TEXTS[name])["input_ids"] == ids[1:-1]
        assert tok(TEXTS[name], add_special_tokens=True)["input_ids"] == ids


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_gpt2_decode_is_lossless(name):
    tok = shared("gpt2")
    ids = tok.encode(TEXTS[name])
    assert tok.decode(ids) == TEXTS[name] == EXPECTED["gpt2"]["decoded"][name]


def test_gpt1_decode_matches_hf():
    tok = shared("gpt1")
    for name in TEXTS:
        assert tok.decode(EXPECTED["gpt1"]["ids"][name]) == EXPECTED["gpt1"]["decoded"][name], name
    assert tok.decode(tok.encode("Before we proceed any further, hear me speak.")) == (
        "before we proceed any further , hear me speak ."
    )


def test_bert_decode_gives_natural_chinese():
    tok = shared("bert")
    turns = [t for name in TEXTS if name.startswith("zh_chitchat") for t in TEXTS[name].split("\n")]
    assert len(turns) >= 20
    for turn in turns:
        ids = tok.encode(turn)
        if tok.unk_token_id not in ids and turn == turn.lower() and " " not in turn:
            assert tok.decode(ids) == turn
    assert tok.decode(tok.encode("我爱NLP和GPT模型，2019年发布。")) == "我爱nlp和gpt模型，2019年发布。"
    # "##" continuation pieces are joined back into words
    ids = tok.encode("访问www.smallstonesoft.com")
    assert any(t.startswith("##") for t in tok.convert_ids_to_tokens(ids))
    assert "smallstonesoft" in tok.decode(ids)
    with_specials = tok.encode("你好", add_special_tokens=True)
    assert tok.decode(with_specials, skip_special_tokens=True) == "你好"
    assert tok.decode(with_specials) == "[CLS]你好[SEP]"


def test_decode_accepts_arrays_and_rejects_bad_ids():
    tok = shared("gpt2")
    assert tok.decode(np.array([15496, 995])) == "Hello world"
    assert tok.batch_decode([[15496], [995]]) == ["Hello", " world"]
    with pytest.raises(ValueError, match="50257"):
        tok.decode([15496, 50257])
    with pytest.raises(TypeError, match="ints"):
        tok.decode([1.5])


# ----------------------------------------------------------------------------- added tokens
@pytest.mark.parametrize("kind", ["gpt2", "gpt1", "bert"])
def test_added_special_tokens_match_hf_and_keep_existing_ids(kind):
    tok = LOADERS[kind]()
    ref = EXPECTED[kind]["added"]
    before_vocab = tok.get_vocab()
    before_size = tok.vocab_size
    request = {"additional_special_tokens": ref["additional_special_tokens"]}
    if "pad_token" in ref:
        request["pad_token"] = ref["pad_token"]
    assert tok.add_special_tokens(request) == ref["vocab_size"] - before_size
    assert tok.vocab_size == ref["vocab_size"]
    assert tok.encode(ref["text"]) == ref["ids"]
    after_vocab = tok.get_vocab()
    assert {t: after_vocab[t] for t in before_vocab} == before_vocab
    new_ids = sorted(set(after_vocab.values()) - set(before_vocab.values()))
    assert new_ids == list(range(before_size, ref["vocab_size"]))
    for t in ref["additional_special_tokens"]:
        assert tok.convert_tokens_to_ids(t) in tok.all_special_ids
    # ordinary text encodes as before
    assert tok.encode(TEXTS["en_punct_numbers"]) == EXPECTED[kind]["ids"]["en_punct_numbers"]


def test_gpt1_task_tokens_and_decode_skip():
    tok = LOADERS["gpt1"]()
    assert tok.unk_token == "<unk>" and tok.unk_token_id == 0
    assert tok.add_special_tokens({"additional_special_tokens": list(OpenAIGPTTokenizer.TASK_TOKENS)}) == 3
    start, delim, clf = tok.convert_tokens_to_ids(list(OpenAIGPTTokenizer.TASK_TOKENS))
    assert (start, delim, clf) == (600, 601, 602)
    ids = tok.encode("_start_the king_delimiter_is dead_classify_")
    assert ids[0] == start and ids[-1] == clf and delim in ids
    assert tok.decode(ids, skip_special_tokens=True) == "the king is dead"
    assert tok.additional_special_tokens == list(OpenAIGPTTokenizer.TASK_TOKENS)


def test_add_tokens_counts_only_new_ids():
    tok = LOADERS["gpt2"]()
    assert tok.add_special_tokens({"pad_token": "<pad>"}) == 1
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 50257
    assert tok.add_special_tokens({"pad_token": "<pad>"}) == 0
    assert tok.add_special_tokens({"sep_token": "<|endoftext|>"}) == 0  # already in the vocabulary
    assert tok.sep_token_id == 50256
    assert tok.add_tokens(["hello", "<new>", "<new>"]) == 1  # "hello" exists, "<new>" once
    assert tok.convert_tokens_to_ids("<new>") == 50258
    assert tok.encode("a<new>b") == [64, 50258, 65]
    assert tok.vocab_size == 50259
    assert tok.convert_tokens_to_ids("definitely-not-a-token") == tok.unk_token_id == 50256
    with pytest.raises(ValueError, match="pading_token"):
        tok.add_special_tokens({"pading_token": "<p>"})
    with pytest.raises(ValueError, match="pad_token"):
        tok.add_special_tokens({"pad_token": ""})
    assert tok.vocab_size == 50259  # a rejected request changes nothing


def test_call_truncation_and_padding():
    tok = LOADERS["bert"]()
    out = tok(["你好", "今天天气很好"], add_special_tokens=True, truncation=True, max_length=5, padding=True)
    assert out["input_ids"] == [[101, 872, 1962, 102, 0], [101, 791, 1921, 1921, 102]]
    assert out["attention_mask"] == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    out = tok("你好", padding="max_length", max_length=4)
    assert out == {"input_ids": [872, 1962, 0, 0], "attention_mask": [1, 1, 0, 0]}
    with pytest.raises(ValueError, match="max_length"):
        tok("你好", truncation=True)
    with pytest.raises(ValueError, match="pad token"):
        shared("gpt2")(["a", "bb"], padding=True)


# ----------------------------------------------------------------------------- save / load
def _assert_same(a, b, texts):
    assert type(a) is type(b)
    assert a.get_vocab() == b.get_vocab()
    assert a.vocab_size == b.vocab_size
    for attr in tk.SPECIAL_TOKEN_ATTRS:
        assert getattr(a, attr) == getattr(b, attr), attr
        assert getattr(a, attr + "_id") == getattr(b, attr + "_id"), attr
    assert a.additional_special_tokens == b.additional_special_tokens
    assert a.all_special_ids == b.all_special_ids
    for text in texts:
        assert a.encode(text) == b.encode(text)


@pytest.mark.parametrize("kind", ["gpt2", "gpt1", "bert", "char"])
def test_save_load_round_trip(kind, tmp_path):
    if kind == "char":
        tok = CharTokenizer.from_text(TEXTS["shakespeare_head"])
    else:
        tok = LOADERS[kind]()
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<x>", "<y>"]})
    tok.add_tokens(["zq"])
    files = tok.save_pretrained(tmp_path / "saved")
    assert all(os.path.isfile(f) for f in files)
    assert sorted(os.listdir(tmp_path / "saved")) == sorted(os.path.basename(f) for f in files)
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == type(tok).__name__
    assert config["pad_token"] == "<pad>"

    loaded = load_tokenizer(tmp_path / "saved")
    texts = ["<pad>a<x>zq<y>", TEXTS["shakespeare_head"][:300], TEXTS["zh_mixed"]]
    if kind == "char":
        texts = texts[:2]
    _assert_same(tok, loaded, texts)
    assert loaded.convert_tokens_to_ids("<y>") == tok.vocab_size - 2
    # saving the loaded copy gives the same files
    loaded.save_pretrained(tmp_path / "again")
    for f in files:
        name = os.path.basename(f)
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "saved" / name).read_bytes(), name


def test_saved_vocab_files_equal_the_originals(tmp_path):
    gpt2_assets = tk.ASSETS_DIR / "gpt2-bpe"
    shared("gpt2").save_pretrained(tmp_path / "g")
    saved_vocab = json.loads((tmp_path / "g" / "vocab.json").read_text(encoding="utf-8"))
    assert saved_vocab == json.loads((gpt2_assets / "vocab.json").read_text(encoding="utf-8"))
    saved_merges = (tmp_path / "g" / "merges.txt").read_text(encoding="utf-8").split("\n")
    original_merges = (gpt2_assets / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert [m for m in saved_merges[1:] if m] == [m for m in original_merges[1:] if m]
    shared("bert").save_pretrained(tmp_path / "b")
    original_vocab_txt = (tk.ASSETS_DIR / "bert-base-chinese" / "vocab.txt").read_bytes()
    assert (tmp_path / "b" / "vocab.txt").read_bytes() == original_vocab_txt


def test_failed_save_leaves_no_config(tmp_path, monkeypatch):
    tok = CharTokenizer.from_text("abc")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("tokenizer_config.json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(tk.os, "replace", failing_replace)
    (tmp_path / "out").mkdir()  # an existing directory (a new one appears whole, in one rename)
    with pytest.raises(OSError, match="disk full"):
        tok.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer_config.json").exists()
    assert os.listdir(tmp_path) == ["out"]  # the temporary directory is gone
    assert [p for p in os.listdir(tmp_path / "out") if ".tmp" in p] == []


def test_load_detects_class_from_files(tmp_path):
    assert type(load_tokenizer("gpt2")) is GPT2Tokenizer
    assert type(load_tokenizer("bert-base-chinese")) is BertTokenizer
    assert type(load_tokenizer(GPT1_DIR)) is OpenAIGPTTokenizer  # </w> vocabulary, no config
    assert type(load_tokenizer(os.path.join(GPT1_DIR, "vocab.json"))) is OpenAIGPTTokenizer
    char = CharTokenizer.from_text("hello")
    char.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is CharTokenizer and loaded.get_vocab() == char.get_vocab()
    # an HF-style config without tokenizer_class still works
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 1024}', encoding="utf-8")
    assert type(load_tokenizer(tmp_path)) is CharTokenizer


def test_gpt1_vocab_without_unk_gets_next_id(tmp_path):
    vocab = json.load(open(os.path.join(GPT1_DIR, "vocab.json"), encoding="utf-8"))
    del vocab["<unk>"]
    vocab = {t: i for i, t in enumerate(sorted(vocab, key=vocab.get))}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(open(os.path.join(GPT1_DIR, "merges.txt"), encoding="utf-8").read())
    tok = load_tokenizer(tmp_path)
    assert tok.unk_token_id == len(vocab) == tok.vocab_size - 1
    assert tok.encode("the 你")[-1] == tok.unk_token_id


# ----------------------------------------------------------------------------- char tokenizer
def test_char_tokenizer_on_tiny_shakespeare():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        text = f.read()
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65
    vocab = tok.get_vocab()
    chars = sorted(set(text))
    assert [vocab[c] for c in chars] == list(range(65))
    assert (vocab["\n"], vocab[" "], vocab["A"], vocab["a"], vocab["z"]) == (0, 1, 13, 39, 64)
    ids = tok.encode(text)
    assert len(ids) == len(text) == 1115394
    assert tok.decode(ids[:2000]) == text[:2000]
    assert tok.decode(ids) == text
    assert tok.unk_token is None and tok.all_special_ids == []


def test_char_unknown_characters():
    tok = CharTokenizer.from_text("cab")
    assert tok.get_vocab() == {"a": 0, "b": 1, "c": 2}
    with pytest.warns(UserWarning, match="dropped 4 character") as record:
        assert tok.encode("abzc ¡z") == [0, 1, 2]
    assert len(record) == 1 and "' z¡'" in str(record[0].message)  # each unknown character named once
    assert tok.add_special_tokens({"unk_token": "<unk>"}) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tok.encode("abz") == [0, 1, 3]
        assert tok.encode("a<unk>") == [0, 3]
    assert tok.decode([0, 3, 1], skip_special_tokens=True) == "ab"
    assert tok.convert_ids_to_tokens(3) == "<unk>"
    assert tok.convert_tokens_to_ids(["a", "?"]) == [0, 3]


def test_char_longest_added_token_wins():
    tok = CharTokenizer.from_text("<>ab")
    tok.add_tokens(["<a", "<ab>"])
    assert tok.encode("<ab><a>") == [tok.convert_tokens_to_ids("<ab>"), tok.convert_tokens_to_ids("<a"), 1]


# ----------------------------------------------------------------------------- errors
def test_missing_files_errors_name_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_tokenizer(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg
    for name in ("tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt", "char_vocab.json"):
        assert name in msg
    with pytest.raises(FileNotFoundError, match="not-a-tokenizer"):
        load_tokenizer(tmp_path / "not-a-tokenizer")
    (tmp_path / "vocab.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        GPT2Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(tmp_path)


def test_bad_files_raise_value_errors(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}', encoding="utf-8")
    with pytest.raises(ValueError, match="T5Tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 2}', encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="0..1"):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1, "ab": 2}', encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt:2"):
        load_tokenizer(tmp_path)

    saved = tmp_path / "char"
    CharTokenizer.from_text("ab").save_pretrained(saved)
    with pytest.raises(ValueError, match="holds a CharTokenizer, not a BertTokenizer"):
        BertTokenizer.from_pretrained(saved)
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {"5": {"content": "<pad>", "special": True}}
    (saved / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match="next free id is 2"):
        load_tokenizer(saved)


def test_gpt2_bpe_truncated_to_its_first_merges(tmp_path):
    from ms_gpt.tokenizers import load_tokenizer

    full, cut = load_tokenizer("gpt2"), load_tokenizer("gpt2:1000")
    assert len(cut) == 256 + 1000 + 1 and cut.eos_token_id == 1256 and cut.eos_token == "<|endoftext|>"
    text = "A breathtaking, heartfelt film; the dullest sequel of 2024."
    ids = cut.encode(text)
    assert cut.decode(ids) == text and max(ids) < 1256
    # tokens that survive keep GPT-2's ids; the others are spelled with shorter pieces of the same bytes
    kept = [i for i in full.encode(text) if i < 1256]
    assert kept and all(i in ids for i in kept) and len(ids) > len(full.encode(text))
    cut.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert len(again) == len(cut) and again.encode(text) == ids
    with pytest.raises(ValueError, match="num_merges"):
        full.truncated(0)
    with pytest.raises(ValueError, match="gpt2:<number of merges>"):
        load_tokenizer("gpt2:many")
