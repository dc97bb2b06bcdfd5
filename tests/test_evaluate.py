"""ms_gpt.evaluation / `python -m ms_gpt.evaluate` against numbers PyTorch + transformers computed on the tiny HF
checkpoint (tests/fixtures/eval_reference.json, made by tests/fixtures/make_eval_reference.py): sliding-window
perplexity for several (max_length, stride), choice log-likelihoods and accuracies, last-word hits; file formats,
compile counts and bad input."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ms_gpt.data.lm import split_ids
from ms_gpt.evaluate import main
from ms_gpt.evaluation import (ChoiceItem, TokenScorer, last_word_accuracy, perplexity_of_ids, score_choices,
                               sequence_perplexity, sliding_windows)
from ms_gpt.model import GPTLMHeadModel
from ms_gpt.tokenizers import CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
REF = json.load(open(os.path.join(FIXTURES, "eval_reference.json"), encoding="utf-8"))
RTOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return GPTLMHeadModel.from_pretrained(os.path.join(FIXTURES, "hf", "gpt2"))


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer(REF["chars"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """The HF checkpoint plus the fixture's character tokenizer, as `--model` takes it."""
    path = tmp_path_factory.mktemp("model")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(FIXTURES, "hf", "gpt2", name), path / name)
    tokenizer.save_pretrained(str(path))
    return str(path)


def rel(a, b):
    return abs(a - b) / abs(b)


# ---- the window definition --------------------------------------------------------------------------------------
def test_sliding_windows_by_hand():
    # N=4, S=2 over 9 tokens: [0,4) scores 1..3, [2,6) 4..5, [4,8) 6..7, [6,9) 8
    assert sliding_windows(9, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 9, 8)]
    # S >= N: each window's first token has no context and is not scored; S > N skips tokens
    assert sliding_windows(9, 4, 4) == [(0, 4, 1), (4, 8, 5), (8, 9, 9)]
    assert sliding_windows(10, 3, 4) == [(0, 3, 1), (4, 7, 5), (8, 10, 9)]
    assert sliding_windows(5, 8, 2) == [(0, 5, 1)]  # one window reaches the end


# ---- numbers equal to HF ----------------------------------------------------------------------------------------
def test_tokenizer_gives_the_fixture_ids(tokenizer):
    assert tokenizer.encode(REF["perplexity_text"]) == REF["perplexity_ids"]


@pytest.mark.parametrize("case", REF["perplexity"], ids=lambda c: f"N{c['max_length']}-S{c['stride']}")
def test_perplexity_equals_hf(model, case):
    got = perplexity_of_ids(model, np.asarray(REF["perplexity_ids"]), case["max_length"], case["stride"],
                            batch_size=8)
    assert got["tokens"] == case["tokens"] and got["windows"] == case["windows"]
    assert rel(got["nll"], case["nll"]) < RTOL
    assert rel(got["perplexity"], case["perplexity"]) < RTOL


def test_one_compile_for_a_padded_last_batch(model):
    scorer = TokenScorer(model, batch_size=4)
    case = REF["perplexity"][0]  # N=64, S=32: 11 windows = 3 batches of 4, the last topped up with empty rows
    got = perplexity_of_ids(model, np.asarray(REF["perplexity_ids"]), 64, 32, scorer=scorer)
    assert case["windows"] % 4 and got["windows"] == case["windows"]
    assert rel(got["nll"], case["nll"]) < RTOL
    assert scorer.compilations == 1


@pytest.mark.parametrize("k", [0, 1], ids=["default-template", "question-template"])
def test_choice_loglikelihoods_equal_hf(model, tokenizer, k):
    ref = REF["multiple_choice"][k]
    items = [ChoiceItem(f"item {i}", it["context"], it["choices"], it["label"])
             for i, it in enumerate(REF["choice_items"])]
    got = score_choices(model, tokenizer, items, ref["template"], batch_size=4)
    assert got["token_counts"] == ref["token_counts"]
    for mine, theirs in zip(got["loglikelihoods"], ref["loglikelihoods"]):
        for a, b in zip(mine, theirs):
            assert rel(a, b) < RTOL
    assert got["accuracy"] == ref["accuracy"] and got["accuracy_norm"] == ref["accuracy_norm"]


def test_last_word_equals_hf(model, tokenizer):
    ref = REF["last_word"]
    got = last_word_accuracy(model, tokenizer, [(f"row {i}", r["text"]) for i, r in enumerate(ref)], batch_size=2)
    assert got["accuracy"] == pytest.approx(np.mean([r["greedy_hit"] for r in ref]))  # 1 of 3 solved
    assert got["tokens"] == sum(r["tokens"] for r in ref)
    assert rel(got["nll"], -sum(r["loglik"] for r in ref) / got["tokens"]) < RTOL


def test_sequence_perplexity_is_the_window_perplexity_of_each_sequence(model):
    ids = np.asarray(REF["perplexity_ids"])
    seqs = [ids[:40], ids[40:64], ids[100:160]]
    got = sequence_perplexity(model, seqs, batch_size=2)
    parts = [perplexity_of_ids(model, s, 64, 64) for s in seqs]  # one window each: every token after the first
    nll = sum(p["nll"] * p["tokens"] for p in parts) / sum(p["tokens"] for p in parts)
    assert got["tokens"] == sum(len(s) - 1 for s in seqs) and rel(got["nll"], nll) < 1e-6


# ---- the command ----------------------------------------------------------------------------------------------------
def run_cli(model_dir, *args):
    return main(["--model", model_dir, "--disable_tqdm", "true", *args])


def test_cli_perplexity_writes_results(model_dir, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(REF["perplexity_text"], encoding="utf-8")
    out = tmp_path / "out"
    case = REF["perplexity"][2]
    result = run_cli(model_dir, "--task", "perplexity", "--text_file", str(text), "--max_length", "40",
                     "--stride", "16", "--output_dir", str(out))
    saved = json.load(open(out / "eval_results.json", encoding="utf-8"))
    assert saved["tokens"] == case["tokens"] and rel(saved["perplexity"], case["perplexity"]) < RTOL
    assert rel(saved["nll"], case["nll"]) < RTOL and saved["compilations"] == 1
    assert saved["split"] == "all"  # auto: no pretraining record for this file
    assert result["perplexity"] == saved["perplexity"]
    assert not [p for p in os.listdir(out) if ".tmp" in p]


def test_cli_validation_split_is_the_pretraining_split(model, model_dir, tmp_path, tokenizer):
    text = tmp_path / "text.txt"
    text.write_text(REF["perplexity_text"], encoding="utf-8")
    result = run_cli(model_dir, "--text_file", str(text), "--split", "validation", "--train_fraction", "0.8",
                     "--max_length", "24", "--stride", "24")
    _, val = split_ids(np.asarray(tokenizer.encode(REF["perplexity_text"]), np.int32), 0.8)
    assert result["tokens"] == len(val) - len(sliding_windows(len(val), 24, 24))
    assert result["nll"] == pytest.approx(perplexity_of_ids(model, val, 24, 24)["nll"], rel=1e-6)


def write_choice_files(tmp_path):
    items = REF["choice_items"]
    jsonl = tmp_path / "mc.jsonl"
    jsonl.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    csv_path = tmp_path / "mc.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["context", "choices", "label"])
        for it in items:
            w.writerow([it["context"], json.dumps(it["choices"]), it["label"]])
    bigbench = tmp_path / "task.json"
    bigbench.write_text(json.dumps({"examples": [
        {"input": it["context"], "target_scores": {c: int(k == it["label"]) for k, c in enumerate(it["choices"])}}
        for it in items]}), encoding="utf-8")
    return jsonl, csv_path, bigbench


def test_cli_multiple_choice_formats_agree_with_hf(model_dir, tmp_path):
    ref = REF["multiple_choice"][1]
    for path in write_choice_files(tmp_path):
        result = run_cli(model_dir, "--task", "multiple_choice", "--data_file", str(path), "--template",
                         ref["template"], "--output_dir", str(tmp_path / path.stem))
        assert (result["accuracy"], result["accuracy_norm"]) == (ref["accuracy"], ref["accuracy_norm"]), path
        assert result["examples"] == len(REF["choice_items"]) and result["compilations"] == 1


def test_cli_last_word(model_dir, tmp_path):
    path = tmp_path / "lambada.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in REF["last_word"]), encoding="utf-8")
    result = run_cli(model_dir, "--task", "last_word", "--data_file", str(path))
    assert result["accuracy"] == pytest.approx(1 / 3) and result["examples"] == 3


def test_module_prints_one_final_line(model_dir, tmp_path):
    path = tmp_path / "lambada.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in REF["last_word"]), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, "-m", "ms_gpt.evaluate", "--model", model_dir, "--task", "last_word",
                           "--data_file", str(path), "--output_dir", str(tmp_path / "o")], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("last_word: last-word accuracy 0.3333 over 3 passages") and "eval_results.json" in last


def test_user_errors_are_one_line(model_dir, tmp_path, capsys):
    from ms_gpt.cli import run

    code = run(lambda: run_cli(model_dir, "--task", "last_word", "--data_file", str(tmp_path / "missing.jsonl")))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: data file not found:") and "missing.jsonl" in err
    assert len(err.strip().splitlines()) == 1


# ---- bad input -------------------------------------------------------------------------------------------------------
def test_bad_text(model_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt: the file is empty"):
        run_cli(model_dir, "--text_file", str(empty))
    short = tmp_path / "short.txt"
    short.write_text("A", encoding="utf-8")
    with pytest.raises(ValueError, match="short.txt: 1 token"):
        run_cli(model_dir, "--text_file", str(short))
    with pytest.raises(ValueError, match="max_length=65 exceeds the model's n_positions=64"):
        run_cli(model_dir, "--text_file", str(short), "--max_length", "65")


@pytest.mark.parametrize("row, message", [
    ({"context": "Two plus two", "label": 0}, r"mc.jsonl: row 2: no column 'choices'"),
    ({"context": "Two plus two", "choices": [], "label": 0}, r"mc.jsonl: row 2, column 'choices': expected a list"),
    ({"context": "Two plus two", "choices": ["four", "five"], "label": 2},
     r"mc.jsonl: row 2, column 'label': label 2 is not a choice index 0..1"),
    ({"context": "", "choices": ["four", "five"], "label": 0}, r"mc.jsonl: row 2, column 'context': empty text"),
])
def test_bad_choice_rows(model_dir, tmp_path, row, message):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps(REF["choice_items"][0]) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        run_cli(model_dir, "--task", "multiple_choice", "--data_file", str(path))


def test_bad_template_and_passage(model_dir, tmp_path):
    jsonl, _, _ = write_choice_files(tmp_path)
    for template, missing in (("Q: {context} A:", "{choice}"), ("Answer: {choice}", "{context}")):
        with pytest.raises(ValueError, match=f"template .* has no {missing}"):
            run_cli(model_dir, "--task", "multiple_choice", "--data_file", str(jsonl), "--template", template)
    path = tmp_path / "lambada.txt"
    path.write_text("two words\nlonely\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lambada.txt: row 2: a passage needs at least two words"):
        run_cli(model_dir, "--task", "last_word", "--data_file", str(path))
    with pytest.raises(ValueError, match="task last_word: give --data_file"):
        run_cli(model_dir, "--task", "last_word")
    with pytest.raises(ValueError, match="task=.*expected one of perplexity, multiple_choice, last_word"):
        run_cli(model_dir, "--task", "translate")


def test_hub_dataset_fails_fast_offline(monkeypatch):
    from ms_gpt.evaluation import load_hub_text

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    with pytest.raises(ValueError, match="dataset_name='wikitext' needs the network, but hub.invalid is unreachable"):
        load_hub_text("wikitext", "wikitext-2-raw-v1", "test", timeout=2.0)


def test_bigbench_task_file_reads_as_choices():
    from ms_gpt.evaluation import read_choice_items

    path = os.path.join(ROOT, "data", "gpt1-tasks", "goal_step_wikihow_step_inference.json")
    items = read_choice_items(path, max_samples=5)
    assert len(items) == 5 and all(len(it.choices) == 4 for it in items)
    first = items[0]  # target_scores: the choice scored 1 is the label
    assert first.choices[first.label] == "Know the order of operations" and first.where.endswith("row 1")


def test_tokenizer_of_another_model_is_refused(model):
    with pytest.raises(ValueError, match="token id 5000 is outside the model's vocabulary"):
        perplexity_of_ids(model, np.asarray([1, 2, 5000, 3]), 64, 32)


def test_bounded_batch_size_caps_the_logits_of_one_batch():
    from types import SimpleNamespace

    from ms_gpt.evaluation import bounded_batch_size

    gpt2_124m = SimpleNamespace(config=SimpleNamespace(vocab_size=50257))
    assert bounded_batch_size(gpt2_124m, 256, 64) == (256 * 2**20) // (256 * 50257 * 4) == 5
    assert bounded_batch_size(gpt2_124m, 4096, 64) == 1  # never below one row
    assert bounded_batch_size(SimpleNamespace(config=SimpleNamespace(vocab_size=65)), 256, 64) == 64
