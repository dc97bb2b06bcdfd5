"""GPT-1 task formats, readers (local files, BIG-bench, IMDB archive over http), padding policies, batch sources."""
import bz2
import functools
import http.server
import io
import json
import os
import tarfile
import threading

import numpy as np
import pytest

from ms_gpt.data.padding import (AUTO_POLICY, EpochBatches, bucket_lengths, collate, eval_batches, lm_rows,
                                 padded_length, real_rows, resolve_policy)
from ms_gpt.data.tasks import (CLASSIFY, DELIMITER, START, Example, TaskFormatter, add_task_tokens,
                               fit_segments, load_records, read_records, records_to_examples)
from ms_gpt.tokenizers import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")


@pytest.fixture(scope="module")
def tokenizer():
    tok = load_tokenizer("gpt2")
    before = tok.vocab_size
    assert add_task_tokens(tok) == 3
    assert add_task_tokens(tok) == 0  # idempotent: a fine-tuned checkpoint already has them
    assert tok.vocab_size == before + 3
    return tok


def _ids(tok):
    return tok.convert_tokens_to_ids([START, DELIMITER, CLASSIFY])


def test_classification_and_entailment_formats(tokenizer):
    start, delim, extract = _ids(tokenizer)
    fmt = TaskFormatter(tokenizer, "classification", 32)
    (seq,) = fmt.encode_example(Example(("a fine film",), 1))
    assert seq == [start] + tokenizer.encode("a fine film") + [extract]
    fmt = TaskFormatter(tokenizer, "entailment", 32)
    (seq,) = fmt.encode_example(Example(("It rains.", "It is wet."), 0))
    assert seq == [start] + tokenizer.encode("It rains.") + [delim] + tokenizer.encode("It is wet.") + [extract]


def test_similarity_gives_both_orders_and_multiple_choice_one_sequence_per_choice(tokenizer):
    start, delim, extract = _ids(tokenizer)
    a, b = tokenizer.encode("one"), tokenizer.encode("two words")
    seqs = TaskFormatter(tokenizer, "similarity", 16).encode_example(Example(("one", "two words"), 1))
    assert seqs == [[start] + a + [delim] + b + [extract], [start] + b + [delim] + a + [extract]]
    ex = Example(("Goal:",), 2, ("x", "y y", "z"))
    seqs = TaskFormatter(tokenizer, "multiple_choice", 16).encode_example(ex)
    assert len(seqs) == 3 and all(s[0] == start and s[-1] == extract for s in seqs)
    assert seqs[1] == [start] + tokenizer.encode("Goal:") + [delim] + tokenizer.encode("y y") + [extract]


def test_truncation_keeps_the_extract_token_and_the_shorter_segment(tokenizer):
    _, delim, extract = _ids(tokenizer)
    long_text = "word " * 200
    fmt = TaskFormatter(tokenizer, "entailment", 24)
    (seq,) = fmt.encode_example(Example((long_text, "short one"), 0))
    assert len(seq) == 24 and seq[-1] == extract
    assert seq[seq.index(delim) + 1:-1] == tokenizer.encode("short one")
    assert fit_segments([[1] * 10, [2] * 10], 12) == [[1] * 6, [2] * 6]
    assert fit_segments([[1] * 3, [2] * 20], 10) == [[1] * 3, [2] * 7]
    with pytest.raises(ValueError, match="max_seq_length=3 is too short"):
        TaskFormatter(tokenizer, "entailment", 3)


def test_formatter_requires_the_task_tokens():
    with pytest.raises(ValueError, match="add_task_tokens"):
        TaskFormatter(load_tokenizer("gpt2"), "classification", 16)
    with pytest.raises(ValueError, match="task='regression'"):
        TaskFormatter(load_tokenizer("gpt2"), "regression", 16)


# ---- readers ----------------------------------------------------------------------------------------------------
def test_bigbench_entailment_and_multiple_choice_are_parsed():
    path = os.path.join(DATA, "gpt1-tasks", "epistemic_reasoning.json")
    data = records_to_examples(read_records(path), "entailment", path, ["premise", "hypothesis"], "label")
    assert data.label_names == ["entailment", "non-entailment"] and len(data.examples) == 2000
    first = data.examples[1]
    assert first.texts == ("Amelia assumes that Joseph knows that a dog runs.", "Joseph knows that a dog runs.")
    assert first.label == 1
    assert sum(ex.label == 0 for ex in data.examples) == 741
    path = os.path.join(DATA, "gpt1-tasks", "goal_step_wikihow_step_inference.json")
    data = records_to_examples(read_records(path), "multiple_choice", path, ["context"], "label")
    ex = data.examples[0]
    assert len(ex.choices) == 4 and ex.choices[ex.label] == "Know the order of operations"


def test_rotten_tomatoes_bz2_csv_with_dropped_labels():
    path = os.path.join(DATA, "sentiment-rt", "rotten_tomatoes_corpus_full.csv.bz2")
    data = records_to_examples(read_records(path), "classification", path, ["text"], "category",
                               drop_labels=["plot"])
    assert data.label_names == ["fresh", "rotten"]
    counts = np.bincount([ex.label for ex in data.examples])
    assert counts.tolist() == [7403, 5405]


def test_csv_jsonl_json_and_txt_files(tmp_path):
    (tmp_path / "a.csv").write_text("sentence,label\nhello there,pos\nawful,neg\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"sentence": "hello", "label": 1}\n\n{"sentence": "bad", "label": 0}\n')
    (tmp_path / "a.json").write_text(json.dumps({"data": [{"sentence": "x", "label": "b"}, {"sentence": "y",
                                                                                          "label": "a"}]}))
    with bz2.open(tmp_path / "pos.txt.bz2", "wt", encoding="utf-8") as f:
        f.write("good one\n\nnice\n")
    (tmp_path / "neg.txt").write_text("bad\n", encoding="utf-8")
    for name, labels in (("a.csv", ["neg", "pos"]), ("a.jsonl", ["0", "1"]), ("a.json", ["a", "b"])):
        path = str(tmp_path / name)
        data = records_to_examples(read_records(path), "classification", path, ["sentence"], "label")
        assert data.label_names == labels and len(data.examples) == 2
    source, records = load_records(f"{tmp_path / 'pos.txt.bz2'},{tmp_path / 'neg.txt'}", "train", str(tmp_path))
    data = records_to_examples(records, "classification", source, ["text"], "label")
    assert data.label_names == ["neg", "pos"] and [e.label for e in data.examples] == [1, 1, 0]


def test_bad_input_errors_name_file_row_and_column(tmp_path):
    path = str(tmp_path / "train.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\ngood,pos\n,neg\n")
    with pytest.raises(ValueError, match=r"train.csv: row 2, column 'text': empty text"):
        records_to_examples(read_records(path), "classification", path, ["text"], "label")
    with pytest.raises(ValueError, match=r"train.csv: row 1: no column 'sentence' \(columns: text, label\)"):
        records_to_examples(read_records(path), "classification", path, ["sentence"], "label")
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\ngood,pos\nbad,meh\n")
    with pytest.raises(ValueError, match=r"row 2, column 'label': label 'meh' is not in the label set"):
        records_to_examples(read_records(path), "classification", path, ["text"], "label", ["neg", "pos"])
    with pytest.raises(FileNotFoundError, match="data file not found: .*missing.csv"):
        read_records(str(tmp_path / "missing.csv"))
    (tmp_path / "broken.csv.bz2").write_bytes(b"not bzip2 at all")
    with pytest.raises(ValueError, match="broken.csv.bz2: cannot read the file"):
        read_records(str(tmp_path / "broken.csv.bz2"))
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv: not UTF-8"):
        read_records(str(tmp_path / "latin.csv"))
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown data format"):
        read_records(str(tmp_path / "x.parquet"))
    (tmp_path / "mc.jsonl").write_text('{"context": "c", "choices": ["a", "b"], "label": 5}\n')
    with pytest.raises(ValueError, match=r"mc.jsonl: row 1, column 'label': label 5 is not a choice index 0..1"):
        records_to_examples(read_records(str(tmp_path / "mc.jsonl")), "multiple_choice", "mc.jsonl",
                            ["context", "choices"], "label")


def _imdb_archive(path):
    reviews = {"train/pos/0_9.txt": "A wonderful film.<br />Loved it.", "train/neg/1_2.txt": "Dull and long.",
               "test/pos/2_8.txt": "Great acting.", "test/neg/3_1.txt": "Terrible plot.",
               "train/unsup/4_0.txt": "unlabelled"}
    with tarfile.open(path, "w:gz") as archive:
        for name, text in reviews.items():
            blob = text.encode("utf-8")
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))


def test_imdb_archive_downloaded_from_a_local_http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    _imdb_archive(served / "aclImdb_v1.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/aclImdb_v1.tar.gz"
        cache = str(tmp_path / "cache")
        source, train = load_records(url, "train", cache)
        _, test = load_records(url, "validation", cache)  # served once, then read from the cache
    finally:
        server.shutdown()
    assert os.path.isfile(os.path.join(cache, "aclImdb_v1.tar.gz"))
    data = records_to_examples(train, "classification", source, ["text"], "label")
    assert data.label_names == ["neg", "pos"]
    assert sorted((ex.texts[0], ex.label) for ex in data.examples) == [("A wonderful film. Loved it.", 1),
                                                                      ("Dull and long.", 0)]
    assert sorted(rec["text"] for _, rec in test) == ["Great acting.", "Terrible plot."]


# ---- padding ----------------------------------------------------------------------------------------------------
def _encoded(n=10, k=1, seed=0):
    from ms_gpt.data.tasks import Encoded

    rng = np.random.default_rng(seed)
    seqs = [[list(rng.integers(1, 50, size=rng.integers(3, 30))) for _ in range(k)] for _ in range(n)]
    return Encoded(seqs, np.arange(n, dtype=np.int32) % 2, k)


def test_policies_and_lengths():
    assert resolve_policy("auto", static_shapes=True) == "max_length"
    assert resolve_policy("auto", static_shapes=False) == AUTO_POLICY in ("bucket", "dynamic")
    with pytest.raises(ValueError, match="padding='longest'"):
        resolve_policy("longest", False)
    assert bucket_lengths(100) == [32, 64, 96, 100]
    assert bucket_lengths(128) == [32, 64, 96, 128]
    assert bucket_lengths(64) == [32, 64] and bucket_lengths(40) == [32, 40] and bucket_lengths(20) == [20]
    assert bucket_lengths(512) == [128, 256, 384, 512] and bucket_lengths(1024) == [256, 512, 768, 1024]
    for n in range(1, 2100):  # the bound the compile counts rest on: at most four lengths, ending at max_length
        lengths = bucket_lengths(n)
        assert len(lengths) <= 4 and lengths[-1] == n and lengths == sorted(set(lengths))
    assert [padded_length("bucket", n, 100) for n in (3, 32, 33, 65, 97)] == [32, 32, 64, 96, 100]
    assert padded_length("dynamic", 17, 100) == 17 and padded_length("max_length", 17, 100) == 100
    with pytest.raises(ValueError, match="exceeds max_seq_length=10"):
        padded_length("dynamic", 11, 10)


def test_collate_classification_similarity_and_multiple_choice():
    data = _encoded(4, k=1)
    batch = collate(data, np.array([0, 2]), 32, 0, multiple_choice=False, lm_labels=False)
    assert batch["input_ids"].shape == (2, 32) and batch["labels"].tolist() == [0, 0]
    assert batch["attention_mask"][0].sum() == len(data.sequences[0][0])
    pairs = _encoded(4, k=2)
    assert collate(pairs, np.array([1]), 32, 0, False, False)["input_ids"].shape == (1, 2, 32)
    mc = _encoded(4, k=4)
    batch = collate(mc, np.array([0, 1, 3]), 30, 7, multiple_choice=True, lm_labels=True)
    assert batch["input_ids"].shape == (3, 4, 30) and batch["mc_labels"].tolist() == [0, 1, 1]
    seq = mc.sequences[3][2]
    assert batch["mc_token_ids"][2, 2] == len(seq) - 1 and batch["input_ids"][2, 2, len(seq) - 1] == seq[-1]
    assert (batch["labels"][2, 2, len(seq):] == -100).all() and batch["input_ids"][2, 2, -1] == 7


def test_epoch_batches_shuffle_per_epoch_drop_the_remainder_and_resume():
    data = _encoded(10)
    source = EpochBatches(data, 3, "dynamic", 32, 0, seed=1)
    assert source.steps_per_epoch == 3
    seen = [source.next_batch() for _ in range(3)]
    rows = [tuple(r) for b in seen for r in b["input_ids"]]
    assert len(set(rows)) == 9  # one epoch: distinct examples, the 10th dropped
    for b in seen:  # dynamic: each batch as long as its longest sequence
        assert b["input_ids"].shape[1] == b["attention_mask"].sum(1).max()
    state = json.loads(json.dumps(source.state_dict()))  # JSON-able, as the engine stores it
    after = [source.next_batch()["input_ids"] for _ in range(5)]
    resumed = EpochBatches(data, 3, "dynamic", 32, 0, seed=1)
    resumed.load_state_dict(state)
    assert all(np.array_equal(a, resumed.next_batch()["input_ids"]) for a in after)
    assert source.epoch == 2
    other_epoch = EpochBatches(data, 3, "dynamic", 32, 0, seed=1)
    first = [tuple(r) for _ in range(3) for r in other_epoch.next_batch()["input_ids"][:, :3]]
    second = [tuple(r) for _ in range(3) for r in other_epoch.next_batch()["input_ids"][:, :3]]
    assert first != second  # a fresh permutation each epoch
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        EpochBatches(data, 16, "dynamic", 32, 0, seed=1)


@pytest.mark.parametrize("kind", ["task examples", "lm rows"])
def test_epoch_batches_resume_mid_epoch_for_task_examples_and_lm_rows(kind):
    """One class, one state layout for both kinds of rows: a JSON round trip of the state taken mid-epoch resumes
    the exact batches (across the next epoch boundary); LM rows carry their ids as labels, -100 on padding."""
    task = kind == "task examples"
    data = _encoded(11) if task else lm_rows([s[0] for s in _encoded(11).sequences])
    options = dict(lm_labels=not task, multiple=4)
    source = EpochBatches(data, 2, "dynamic", 32, 0, seed=9, **options)  # 5 steps per epoch
    for _ in range(3):
        source.next_batch()
    state = json.loads(json.dumps(source.state_dict()))
    assert (state["epoch"], state["position"]) == (0, 3) and set(state) == {"epoch", "position", "rng"}
    after = [source.next_batch() for _ in range(6)]  # the rest of epoch 0 and into epoch 1
    assert source.epoch == 1
    resumed = EpochBatches(data, 2, "dynamic", 32, 0, seed=9, **options)
    resumed.load_state_dict(state)
    for a in after:
        b = resumed.next_batch()
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        assert a["input_ids"].shape[1] % 4 == 0  # dynamic rounds up to `multiple`
        if task:
            assert a["labels"].shape == (2,)
        else:
            assert np.array_equal(a["labels"], np.where(a["attention_mask"] == 1, a["input_ids"], -100))
    # a checkpoint of the former dialogue batches ({epoch, offset}) still loads: same epoch, the batch at the offset
    legacy = EpochBatches(data, 2, "dynamic", 32, 0, seed=9, **options)
    legacy.load_state_dict({"epoch": 1, "offset": 5})
    assert (legacy.epoch, legacy.position) == (1, 2)
    assert np.array_equal(legacy._order, resumed._order)  # epoch 1's permutation, replayed from the seed


def test_eval_batches_keep_a_single_short_batch_when_asked():
    rows = lm_rows([[1, 2, 3], [4, 5]])
    (kept,) = eval_batches(rows, 4, "max_length", 8, 0, lm_labels=True, top_up_single=False)
    assert kept["input_ids"].shape == (2, 8)
    (filled,) = eval_batches(rows, 4, "max_length", 8, 0, lm_labels=True)
    assert filled["input_ids"].shape == (4, 8) and (filled["labels"][2:] == -100).all()
    assert np.array_equal(filled["labels"][:2], kept["labels"])


def test_data_parallel_ranks_split_the_global_batch():
    data = _encoded(12)
    single = EpochBatches(data, 4, "max_length", 32, 0, seed=3).next_batch()["input_ids"]
    ranks = [EpochBatches(data, 2, "max_length", 32, 0, seed=3, rank=r, world_size=2).next_batch()["input_ids"]
             for r in range(2)]
    assert np.array_equal(np.concatenate(ranks), single)


def test_eval_batches_cover_every_example_in_order():
    data = _encoded(10)
    batches = list(eval_batches(data, 4, "bucket", 40, 0))
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 4]  # the last batch topped up: one batch size
    assert all(b["input_ids"].shape[1] in (32, 40) for b in batches)
    labels = np.concatenate([b["labels"] for b in batches])
    assert labels[real_rows(labels)].tolist() == data.labels.tolist() and (labels[10:] == -100).all()
    assert np.array_equal(batches[2]["input_ids"][3], batches[2]["input_ids"][0])  # filler = a copy of a real row
    short = list(eval_batches(data, 4, "dynamic", 32, 0, limit=5))
    assert sum(int(real_rows(b["labels"]).sum()) for b in short) == 5
    mc = list(eval_batches(_encoded(3, k=4), 2, "max_length", 32, 0, multiple_choice=True, lm_labels=True))
    assert mc[1]["mc_labels"].tolist() == [0, -100] and (mc[1]["labels"][1] == -100).all()
