"""Chinese chit-chat fine-tuning recipe (ms_gpt.recipes.dialogue): data encoding, batching, and one tiny end-to-end
run on the bundled dialogues (short pretraining on Chinese reviews first) whose output directory is then loaded and
chatted with through `python -m ms_gpt.chat`."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ms_gpt.config import parse_config
from ms_gpt.model import GPTLMHeadModel
from ms_gpt.data.dialogue import encode_conversation, heldout_split, read_conversations
from ms_gpt.data.padding import EpochBatches, collate, eval_batches, lm_rows
from ms_gpt.recipes.dialogue import ALIASES, DialogueArguments, train_dialogue, trim_vocabulary
from ms_gpt.tokenizers import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer("bert-base-chinese")


# ---- data --------------------------------------------------------------------------------------------------------
def test_encoding_layout_and_padding_labels(bert):
    ids, cut = encode_conversation(bert, ["你好", "在吗"], 16, "truncate")
    ni, hao, zai, ma = bert.encode("你好在吗")
    assert ids == [101, ni, hao, 102, zai, ma, 102] and not cut
    batch = collate(lm_rows([np.asarray(ids), np.asarray(ids[:4])]), np.arange(2), 8, bert.pad_token_id,
                    multiple_choice=False, lm_labels=True)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0], [1] * 4 + [0] * 4]
    assert batch["labels"][0].tolist() == ids + [-100]
    assert batch["labels"][1].tolist() == ids[:4] + [-100] * 4


def test_long_dialogues_drop_or_truncate_at_turn_boundaries(bert):
    turns = ["你好", "在吗", "我在这里呢"]  # 1 + 3 + 3 + 6 = 13 tokens
    assert encode_conversation(bert, turns, 13, "drop") == (encode_conversation(bert, turns, 100, "drop")[0], False)
    assert encode_conversation(bert, turns, 12, "drop") == (None, False)
    ids, cut = encode_conversation(bert, turns, 12, "truncate")
    assert cut and ids == encode_conversation(bert, turns[:2], 100, "drop")[0] and len(ids) == 7
    assert encode_conversation(bert, turns, 6, "truncate") == (None, False)  # not even turn + reply fits


def test_read_conversations_skips_invalid_and_rejects_bad_files(tmp_path):
    good = tmp_path / "a.yml"
    good.write_text("conversations:\n- - 你好\n  - 42\n- - 只有一句\n- - 空的\n  -\n- - 嗨\n  - 你好\n", encoding="utf-8")
    convs, skipped = read_conversations([str(tmp_path)])
    assert convs == [["你好", "42"], ["嗨", "你好"]] and skipped == 2
    bad = tmp_path / "b.yml"
    bad.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ValueError, match="b.yml"):
        read_conversations([str(bad)])
    with pytest.raises(FileNotFoundError, match="nope"):
        read_conversations([str(tmp_path / "nope")])


def test_heldout_split_is_seeded_and_keeps_prompts_on_one_side():
    convs, _ = read_conversations(["data/chinese-chitchat"])
    train, held = heldout_split(convs, 0.1, seed=0)
    assert (train, held) == heldout_split(convs, 0.1, seed=0)
    assert heldout_split(convs, 0.1, seed=1)[1] != held
    assert sorted(train + held) == list(range(len(convs)))
    assert abs(len(held) - 0.1 * len(convs)) <= 3
    assert not {convs[i][0] for i in train} & {convs[i][0] for i in held}


def test_batches_shuffle_resume_and_pad_shapes():
    rows = [np.arange(1, n + 1, dtype=np.int32) for n in (3, 5, 9, 17, 4, 6, 7)]
    source = EpochBatches(lm_rows(rows), 3, "dynamic", 32, 0, seed=5, lm_labels=True, multiple=8)
    first = [source.next_batch() for _ in range(3)]  # two full batches per epoch: the third starts the second
    assert all(b["input_ids"].shape[0] == 3 and b["input_ids"].shape[1] % 8 == 0 for b in first)
    seen = [int(r[r > 0][-1]) for b in first[:2] for r in b["input_ids"]]
    assert len(set(seen)) == 6 and set(seen) < {3, 4, 5, 6, 7, 9, 17}  # one epoch: distinct rows, the 7th dropped
    assert source.epoch == 1
    state = source.state_dict()
    expected = [source.next_batch() for _ in range(2)]
    resumed = EpochBatches(lm_rows(rows), 3, "dynamic", 32, 0, seed=5, lm_labels=True, multiple=8)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for a, b in zip(expected, [resumed.next_batch() for _ in range(2)]):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    static = EpochBatches(lm_rows(rows), 3, "max_length", 32, 0, seed=5, lm_labels=True, multiple=8)
    assert static.next_batch()["input_ids"].shape == (3, 32)
    held = list(eval_batches(lm_rows(rows), 4, "max_length", 32, 0, lm_labels=True, multiple=8))
    assert [b["input_ids"].shape for b in held] == [(4, 32), (4, 32)]
    assert (held[1]["labels"][3] == -100).all()  # the filler row adds nothing to the loss


def test_trimmed_vocabulary_tokenizes_identically(bert):
    texts = ["你好，机器人", "python 很好玩"]
    full = [bert.encode(t) for t in texts]
    small, mapping = trim_vocabulary(bert, np.unique(np.concatenate(full)))
    assert len(small) < 20 and small.cls_token_id is not None and small.pad_token_id == 0
    assert [small.encode(t) for t in texts] == [mapping[np.asarray(f)].tolist() for f in full]


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="task"):
        parse_config(DialogueArguments, ["--task", "classification"], ALIASES)
    with pytest.raises(ValueError, match="long_dialogues"):
        parse_config(DialogueArguments, ["--task", "dialogue", "--long_dialogues", "cut"], ALIASES)
    args = parse_config(DialogueArguments, ["--task=dialogue", "--data_url", "a.yml,b.yml"], ALIASES)
    assert args.train_files == ["a.yml", "b.yml"]


# ---- end to end --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("chitchat"))
    results = train_dialogue([
        "--task", "dialogue", "--output_dir", out, "--trim_vocab", "--padding", "max_length",
        "--max_seq_length", "48", "--n_layer", "2", "--n_head", "4", "--n_embd", "64", "--dropout", "0.0",
        "--pretrain_files", "data/chinese-text/pos.txt,data/chinese-text/neg.txt", "--pretrain_max_lines", "600",
        "--pretrain_steps", "10", "--pretrain_eval_iters", "2",
        "--max_steps", "40", "--learning_rate", "3e-3", "--warmup_steps", "5", "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "48", "--logging_steps", "20", "--disable_tqdm",
        "--chat_samples", "2", "--chat_max_new_tokens", "8"])
    return out, results


def test_finetuning_lowers_heldout_loss_and_writes_results(trained):
    out, results = trained
    with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["heldout_loss_before"] == pytest.approx(results["heldout_loss_before"])
    assert saved["heldout_loss_after"] < saved["heldout_loss_before"] - 1.0
    # held-out perplexity (ms_gpt.evaluation, per token): with every held-out dialogue in one eval batch of 48, the
    # trainer's mean loss is the same per-token mean
    assert saved["data"]["heldout"] <= 48
    assert math.log(saved["heldout_perplexity_after"]) == pytest.approx(saved["heldout_loss_after"], rel=1e-4)
    assert saved["pretrain_val_loss_after"] < saved["pretrain_val_loss_before"]
    assert saved["data"]["heldout"] > 30 and saved["data"]["train"] > 350
    assert len(saved["chat_samples"]) == 2 and all(isinstance(s["reply"], str) for s in saved["chat_samples"])
    assert set(saved["reply_metrics"]) == {"distinct_1", "distinct_2", "mean_reply_len"}


def test_output_dir_loads_and_chats_on_the_command_line(trained):
    out, results = trained
    model = GPTLMHeadModel.from_pretrained(out)
    tokenizer = load_tokenizer(out)
    assert len(tokenizer) == results["vocab_size"] == model.config.vocab_size
    assert tokenizer.decode(tokenizer.encode("你好")) == "你好"
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "ms_gpt.chat", "--model", out, "--max_new_tokens", "8"],
                          input="你好\n你是谁\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    replies = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2  # one reply per turn (a reply may itself span lines)


def test_padding_auto_bounds_compiles_and_policies_give_equal_losses(tmp_path):
    """Dialogue lengths vary widely: with padding auto the train and evaluation steps compile at most 4 graphs each
    (1 with dynamic shapes), and the padding policy changes no loss (padding is masked and labelled -100)."""
    from ms_gpt.data.padding import AUTO_POLICY

    def run(padding):
        out = str(tmp_path / padding)
        results = train_dialogue([
            "--task", "dialogue", "--output_dir", out, "--trim_vocab", "--padding", padding, "--max_seq_length", "96",
            "--pad_to_multiple_of", "1", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--dropout", "0.0",
            "--pretrain_files=", "--max_steps", "12", "--eval_steps", "6", "--logging_steps", "1",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--disable_tqdm",
            "--chat_samples", "0"])
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        return results, [r["loss"] for r in records if "loss" in r], [r["heldout_loss"] for r in records
                                                                       if "heldout_loss" in r]

    auto, auto_train, auto_heldout = run("auto")
    assert auto["padding"] == AUTO_POLICY
    bound = 1 if AUTO_POLICY == "dynamic" else 4
    assert 1 <= auto["train_compilations"] <= bound and 1 <= auto["eval_compilations"] <= bound, auto
    static, static_train, static_heldout = run("max_length")
    assert static["train_compilations"] == 1 and static["eval_compilations"] == 1
    other = "dynamic" if AUTO_POLICY == "bucket" else "bucket"
    _, other_train, other_heldout = run(other)
    assert len(static_train) == 12 and len(static_heldout) == 2
    for train, heldout in ((auto_train, auto_heldout), (other_train, other_heldout)):
        np.testing.assert_allclose(train, static_train, rtol=2e-5)
        np.testing.assert_allclose(heldout, static_heldout, rtol=2e-5)
