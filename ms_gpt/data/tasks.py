"""GPT-1 task formats (Radford et al. 2018, figure 1), the readers that feed them, and `Encoded` (token ids of a
split, what `data.padding` batches).

Must not import: ms_gpt.engine, ms_gpt.recipes; ms_gpt.compat only inside `open_hub_dataset` (mindnlp enters
through `ms_gpt.compat.mindnlp`, and only for hub datasets).

Every task becomes token sequences framed by three special tokens added to the tokenizer:

- classification   `_start_ text _classify_`
- entailment       `_start_ premise _delimiter_ hypothesis _classify_`
- similarity       both orders of the pair -> 2 sequences per example; the model sums their pooled states
- multiple choice  `_start_ context _delimiter_ answer_k _classify_` for each of the K choices

The classifier reads the hidden state of the final `_classify_` token ("extract" in the paper), so truncation
shortens the texts and always keeps the framing tokens.

Readers take local csv/tsv/json/jsonl/txt files (optionally .bz2/.gz), BIG-bench task files
({"examples": [{"input", "target_scores"}]}), the IMDB archive layout (aclImdb/{train,test}/{pos,neg}/*.txt, local or
downloaded by URL) and hub datasets through mindnlp's `load_dataset` (online only). Bad input raises one error that
names the file, the row and the column.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np

TASKS = ("classification", "entailment", "similarity", "multiple_choice")
START, DELIMITER, CLASSIFY = "_start_", "_delimiter_", "_classify_"
TASK_TOKENS = (START, DELIMITER, CLASSIFY)
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# BIG-bench entailment inputs read "Premise: ... Hypothesis: ..."
_PREMISE_HYPOTHESIS = re.compile(r"^\s*Premise:\s*(?P<premise>.*?)\s*Hypothesis:\s*(?P<hypothesis>.*?)\s*$", re.S)


@dataclass
class Example:
    """One labelled example. `texts`: (text,) | (premise, hypothesis) | (text_a, text_b) | (context,);
    `choices` only for multiple choice; `label` is an index into the label names (or into `choices`)."""

    texts: tuple[str, ...]
    label: int
    choices: tuple[str, ...] = ()


@dataclass
class TaskData:
    examples: list[Example]
    label_names: list[str]  # for multiple choice: "choice 0", "choice 1", ...
    source: str


@dataclass
class Encoded:
    """Token ids of a split: sequences[i] holds the K (1 for classification) id lists of example i; `labels` is the
    class index per example (None for language-model rows, see `data.padding.lm_rows`)."""

    sequences: list[list[list[int]]]
    labels: Optional[np.ndarray]
    n_choices: int
    lengths: np.ndarray = field(init=False)  # longest sequence of each example

    def __post_init__(self) -> None:
        self.lengths = np.asarray([max(len(s) for s in seqs) for seqs in self.sequences], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sequences)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task={task!r}; expected one of {', '.join(TASKS)} (or dialogue)")
    return task


# ---- the tokenizer side -----------------------------------------------------------------------------------------
def add_task_tokens(tokenizer) -> int:
    """Add `_start_`, `_delimiter_`, `_classify_` as special tokens; returns how many ids are new (0 if present).
    The model's token table must then be resized to `tokenizer.vocab_size`."""
    return tokenizer.add_special_tokens({"additional_special_tokens": list(TASK_TOKENS)})


class TaskFormatter:
    """Turns Examples into framed token sequences of at most `max_seq_length` ids."""

    def __init__(self, tokenizer, task: str, max_seq_length: int):
        self.task = check_task(task)
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        if any(t not in vocab for t in TASK_TOKENS):  # convert_tokens_to_ids would map them to unk
            raise ValueError("the tokenizer lacks the task tokens; call add_task_tokens(tokenizer) first")
        self.start, self.delimiter, self.classify = (vocab[t] for t in TASK_TOKENS)
        n_special = 3 if task in ("entailment", "similarity", "multiple_choice") else 2
        if max_seq_length < n_special + 2:
            raise ValueError(f"max_seq_length={max_seq_length} is too short for the {task} format "
                             f"({n_special} framing tokens)")
        self.budget = max_seq_length - n_special
        self.max_seq_length = max_seq_length

    def _frame(self, segments: Sequence[list[int]]) -> list[int]:
        segments = fit_segments(segments, self.budget)
        out = [self.start] + segments[0]
        for seg in segments[1:]:
            out += [self.delimiter] + seg
        return out + [self.classify]

    def encode_example(self, example: Example) -> list[list[int]]:
        enc = self.tokenizer.encode
        if self.task == "classification":
            return [self._frame([enc(example.texts[0])])]
        if self.task == "entailment":
            return [self._frame([enc(example.texts[0]), enc(example.texts[1])])]
        if self.task == "similarity":
            a, b = enc(example.texts[0]), enc(example.texts[1])
            return [self._frame([a, b]), self._frame([b, a])]
        context = enc(example.texts[0])
        return [self._frame([context, enc(choice)]) for choice in example.choices]

    def encode(self, data: TaskData) -> Encoded:
        sequences = [self.encode_example(ex) for ex in data.examples]
        counts = {len(s) for s in sequences}
        if len(counts) > 1:
            raise ValueError(f"{data.source}: examples have different numbers of choices {sorted(counts)}; "
                             "multiple choice needs the same K for every example")
        labels = np.asarray([ex.label for ex in data.examples], dtype=np.int32)
        return Encoded(sequences, labels, counts.pop() if counts else 1)


def fit_segments(segments: Sequence[list[int]], budget: int) -> list[list[int]]:
    """Cut the ends of the longest segments until the total fits `budget` (the shorter texts stay whole)."""
    segs = [list(s) for s in segments]
    excess = sum(len(s) for s in segs) - budget
    while excess > 0:
        longest = max(range(len(segs)), key=lambda j: len(segs[j]))
        runner_up = max((len(s) for j, s in enumerate(segs) if j != longest), default=0)
        cut = min(excess, max(1, len(segs[longest]) - runner_up))
        segs[longest] = segs[longest][:len(segs[longest]) - cut]
        excess -= cut
    return segs


# ---- reading records --------------------------------------------------------------------------------------------
def _open_text(path: str) -> io.TextIOBase:
    try:
        if path.endswith(".bz2"):
            return bz2.open(path, "rt", encoding="utf-8", newline="")
        if path.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read the file ({err})") from None


def _format_of(path: str) -> str:
    name = path.lower()
    for suffix in (".bz2", ".gz"):
        if name.endswith(suffix) and not name.endswith(".tar.gz"):
            name = name[:-len(suffix)]
    for ext in ("csv", "tsv", "jsonl", "json", "txt"):
        if name.endswith("." + ext):
            return ext
    raise ValueError(f"{path}: unknown data format; expected .csv, .tsv, .json, .jsonl or .txt "
                     "(optionally .bz2/.gz), or an aclImdb .tar.gz archive")


def read_records(path: str) -> list[tuple[str, dict]]:
    """Rows of a local file as (where, record): `where` reads "row N" and names the row in errors.

    csv/tsv: header row + rows; jsonl: one object per line; json: a list of objects, {"data": [...]}, or a
    BIG-bench task ({"examples": [...]}); txt: one text per non-empty line, as {"text": line, "label": <file stem>}.
    """
    fmt = _format_of(path)
    try:
        with _open_text(path) as f:
            if fmt in ("csv", "tsv"):
                reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
                rows = [(f"row {n}", dict(r)) for n, r in enumerate(reader, start=1)]
                if reader.fieldnames is None:
                    raise ValueError(f"{path}: the file is empty")
                return rows
            if fmt == "jsonl":
                out = []
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            out.append((f"row {n}", json.loads(line)))
                        except json.JSONDecodeError as err:
                            raise ValueError(f"{path}: row {n}: not valid JSON ({err.msg})") from None
                return out
            if fmt == "json":
                try:
                    data = json.load(f)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: not valid JSON ({err})") from None
                if isinstance(data, dict):
                    data = data.get("examples", data.get("data"))
                if not isinstance(data, list):
                    raise ValueError(f"{path}: expected a list of records (or an object with 'examples' / 'data')")
                return [(f"row {n}", r) for n, r in enumerate(data, start=1)]
            stem = os.path.basename(path).split(".")[0]
            return [(f"row {n}", {"text": line.rstrip("\r\n"), "label": stem})
                    for n, line in enumerate(f, start=1) if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except FileNotFoundError:
        raise
    except (EOFError, OSError) as err:
        raise ValueError(f"{path}: cannot read the file ({err})") from None


def _text(record: dict, column: str, path: str, where: str) -> str:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: {where}: expected an object, got {type(record).__name__}")
    if column not in record:
        raise ValueError(f"{path}: {where}: no column '{column}' (columns: {', '.join(map(str, record))})")
    value = record[column]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: {where}, column '{column}': empty text" if isinstance(value, str) or value is None
                         else f"{path}: {where}, column '{column}': expected text, got {value!r}")
    return value


def _bigbench_answer(record: dict, path: str, where: str) -> tuple[list[str], int]:
    scores = record["target_scores"]
    if not isinstance(scores, dict) or not scores:
        raise ValueError(f"{path}: {where}, column 'target_scores': expected a non-empty object")
    names = list(scores)
    best = max(range(len(names)), key=lambda i: scores[names[i]])
    return names, best


def records_to_examples(records: Iterable[tuple[str, dict]], task: str, path: str,
                        text_columns: Sequence[str], label_column: str,
                        label_names: Optional[list[str]] = None, drop_labels: Sequence[str] = ()) -> TaskData:
    """Build Examples. Labels become indices into `label_names`; when None (the training file) the names are the
    sorted distinct labels found. BIG-bench records (`input` + `target_scores`) are recognised by their columns:
    entailment (and similarity) parse "Premise: ... Hypothesis: ..." out of `input`; multiple choice takes the scored choices."""
    check_task(task)
    drop = {str(d) for d in drop_labels}
    rows: list[tuple[str, tuple[str, ...], tuple[str, ...], Any]] = []
    for where, rec in records:
        if isinstance(rec, dict) and "target_scores" in rec and label_column not in rec:
            names, best = _bigbench_answer(rec, path, where)
            source = _text(rec, "input", path, where)
            if task == "multiple_choice":
                rows.append((where, (source,), tuple(names), best))
                continue
            if task in ("entailment", "similarity"):  # a sentence pair
                match = _PREMISE_HYPOTHESIS.match(source)
                if not match or not match["premise"] or not match["hypothesis"]:
                    raise ValueError(f"{path}: {where}, column 'input': expected 'Premise: ... Hypothesis: ...'")
                rows.append((where, (match["premise"], match["hypothesis"]), (), names[best]))
                continue
            rows.append((where, (source,), (), names[best]))
            continue
        if not isinstance(rec, dict) or label_column not in rec:
            _text(rec, label_column, path, where)  # raises the missing-column error
        label = rec[label_column]
        if task == "multiple_choice":
            context = _text(rec, text_columns[0], path, where)
            if len(text_columns) == 2 and isinstance(rec.get(text_columns[1]), list):  # one column of choices
                column = text_columns[1]
                choices = [_text({column: c}, column, path, where) for c in rec[column]]
            else:  # one column per choice
                choices = [_text(rec, c, path, where) for c in text_columns[1:]]
            rows.append((where, (context,), tuple(choices), label))
            continue
        label_text = str(label).strip() if label is not None else ""
        if label_text in drop:
            continue
        need = 1 if task == "classification" else 2
        if len(text_columns) < need:
            raise ValueError(f"{path}: task {task} needs {need} text columns, got text_columns={list(text_columns)}")
        rows.append((where, tuple(_text(rec, c, path, where) for c in text_columns[:need]), (), label_text))
    if not rows:
        raise ValueError(f"{path}: no examples")
    if task == "multiple_choice":
        examples = []
        for where, texts, choices, label in rows:
            try:
                index = int(label)
            except (TypeError, ValueError):
                index = -1
            if not 0 <= index < len(choices):
                raise ValueError(f"{path}: {where}, column '{label_column}': label {label!r} is not a choice index "
                                 f"0..{len(choices) - 1}")
            examples.append(Example(texts, index, choices))
        return TaskData(examples, [f"choice {i}" for i in range(len(rows[0][2]))], path)
    if label_names is None:
        label_names = sorted({r[3] for r in rows}, key=_label_sort_key)
        if len(label_names) < 2:
            raise ValueError(f"{path}: column '{label_column}' has a single label {label_names}; "
                             "classification needs at least two")
    index_of = {name: i for i, name in enumerate(label_names)}
    examples = []
    for where, texts, _, label in rows:
        if label not in index_of:
            raise ValueError(f"{path}: {where}, column '{label_column}': label {label!r} is not in the label set "
                             f"{label_names}")
        examples.append(Example(texts, index_of[label]))
    return TaskData(examples, list(label_names), path)


def _label_sort_key(name: str):
    # numeric labels sort as numbers ("2" before "10"); text labels alphabetically
    try:
        return (0, float(name), "")
    except ValueError:
        return (1, 0.0, name)


# ---- IMDB archive ----------------------------------------------------------------------------------------------
def fetch(url: str, cache_dir: str) -> str:
    """Download `url` into cache_dir once (the `download` package); return the local path."""
    from .lm import fetch_corpus

    return fetch_corpus(url, cache_dir, progressbar=False)


def read_imdb_archive(path: str, split: str) -> list[tuple[str, dict]]:
    """Records {"text", "label": pos|neg} of aclImdb/<split>/{pos,neg}/*.txt inside a .tar.gz archive."""
    if split not in ("train", "test"):
        raise ValueError(f"IMDB split must be train or test, got {split!r}")
    pattern = re.compile(rf"(?:^|/)aclImdb/{split}/(pos|neg)/[^/]+\.txt$")
    records = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                match = pattern.search(member.name)
                if member.isfile() and match:
                    text = archive.extractfile(member).read().decode("utf-8")
                    records.append((member.name, {"text": text.replace("<br />", " "), "label": match[1]}))
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .tar.gz archive ({err})") from None
    if not records:
        raise ValueError(f"{path}: no aclImdb/{split}/pos|neg/*.txt files in the archive")
    records.sort(key=lambda r: r[0])  # archive order is not guaranteed; keep runs reproducible
    return records


# ---- hub datasets (mindnlp, online) -----------------------------------------------------------------------------
def open_hub_dataset(name: str, split: str, config_name: Optional[str] = None, cache_dir: Optional[str] = None,
                     error: type = RuntimeError, hint: str = "pass train_file instead"):
    """A hub dataset split through mindnlp's load_dataset (needs the network); a failure to fetch it becomes one
    `error` naming the dataset, the split and what to do offline (`hint`)."""
    from ..compat.mindnlp import load_dataset

    options = {"split": split, "cache_dir": cache_dir, **({"name": config_name} if config_name else {})}
    try:
        return load_dataset(name, **{k: v for k, v in options.items() if v is not None})
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:  # datasets raises ConnectionError, DatasetNotFoundError, ...
        where = f"{name!r}" + (f" ({config_name})" if config_name else "")
        raise error(f"dataset {where} split {split!r} could not be loaded through mindnlp "
                    f"({type(err).__name__}: {err}); offline? {hint}") from None


def read_hub_dataset(name: str, split: str, cache_dir: Optional[str] = None) -> list[tuple[str, dict]]:
    """Records of a hub dataset split through mindnlp's load_dataset (needs the network)."""
    dataset = open_hub_dataset(name, split, cache_dir=cache_dir)
    records = []
    for n, row in enumerate(dataset.create_dict_iterator(output_numpy=True, num_epochs=1), start=1):
        records.append((f"row {n}", {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else
                                         v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}))
    return records


def load_records(spec: str, split: str, cache_dir: str) -> tuple[str, list[tuple[str, dict]]]:
    """Resolve a data spec to (name for errors, records).

    `spec`: a local file; several .txt files joined by commas (one class per file, the stem is the label); an
    aclImdb .tar.gz archive, local or http(s) URL (`split` picks train or test); or `hub:<name>` for mindnlp.
    """
    from ..paths import resolve_path

    if spec.startswith("hub:"):
        return spec, read_hub_dataset(spec[4:], split, cache_dir)
    if spec.startswith(("http://", "https://")):
        spec = fetch(spec, cache_dir)
    if spec.endswith((".tar.gz", ".tgz")):
        path = resolve_path(spec)
        return path, read_imdb_archive(path, "train" if split == "train" else "test")
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    records: list[tuple[str, dict]] = []
    for part in parts:
        path = resolve_path(part)
        rows = read_records(path)
        records += [(f"{os.path.basename(path)} {where}" if len(parts) > 1 else where, rec) for where, rec in rows]
    return resolve_path(parts[0]) if len(parts) == 1 else spec, records
