"""Zero-shot evaluation of a causal LM: sliding-window perplexity, likelihood-ranked choices, last-word accuracy.

Every task reduces to one computation: for rows of token ids, the log-probability of chosen target tokens, each
predicted from the tokens before it in its row, and whether the greedy (argmax) prediction equals it. `TokenScorer`
runs that as one graph-mode Cell over fixed-shape batches [batch_size, length]: rows are right-padded (the causal
mask keeps padding invisible to real positions), the last batch is topped up with empty rows, and a mask selects
the scored targets, so a run compiles once. The host reads two small [B, length - 1] arrays per batch.

- perplexity: the sliding window of HF's "perplexity of fixed-length models" guide, defined exactly in
  `sliding_windows`; perplexity = exp(mean NLL over the scored tokens).
- multiple_choice: each choice's log-likelihood given the context (summed, and divided by its token count); the
  highest wins; both accuracies.
- last_word: LAMBADA-style; a passage counts as solved when greedy decoding reproduces its final word, i.e. every
  token of the word is the argmax given the passage and the word's earlier tokens.
Pretraining and dialogue training report held-out perplexity through `perplexity_of_ids` / `sequence_perplexity`.

Must not import: ms_gpt.engine, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .device import compiled
from .paths import atomic_write

TASKS = ("perplexity", "multiple_choice", "last_word")
SPLITS = ("auto", "all", "train", "validation")
DEFAULT_TEMPLATE = "{context} {choice}"


# ---- options -------------------------------------------------------------------------------------------------------
@dataclass
class EvaluateArguments:
    """Options of `python -m ms_gpt.evaluate`."""

    model: Optional[str] = field(default=None, metadata={"help": "model directory (HF layout or an ms_gpt run) or "
                                                                 "a hub name such as gpt2"})
    task: str = field(default="perplexity", metadata={"help": "perplexity | multiple_choice | last_word"})
    tokenizer: Optional[str] = field(default=None, metadata={
        "help": "tokenizer directory or bundled name; default: the one saved with the model"})
    text_file: Optional[str] = field(default=None, metadata={"help": "perplexity: a UTF-8 text file"})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "perplexity: a hub dataset read through mindnlp (online), e.g. wikitext"})
    dataset_config_name: Optional[str] = field(default=None, metadata={
        "help": "the hub dataset's configuration, e.g. wikitext-2-raw-v1"})
    dataset_split: str = field(default="test", metadata={"help": "the hub dataset's split"})
    dataset_text_column: str = field(default="text", metadata={
        "help": "the hub dataset's text column (rows joined with blank lines)"})
    split: str = field(default="auto", metadata={
        "help": "perplexity: all | train | validation part of the token stream, cut as pretraining does; auto = "
                "validation when the model's checkpoints record pretraining on this file, else all"})
    train_fraction: Optional[float] = field(default=None, metadata={
        "help": "with split: the training share of the stream (default: the pretraining run's, else 0.9)"})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "perplexity: window length N in tokens (default: the model's n_positions)"})
    stride: Optional[int] = field(default=None, metadata={
        "help": "perplexity: window step S in tokens (default: max_length // 2)"})
    data_file: Optional[str] = field(default=None, metadata={
        "help": "multiple_choice / last_word: csv, tsv, json (also BIG-bench target_scores), jsonl or txt"})
    text_columns: Optional[list[str]] = field(default=None, metadata={
        "help": "columns read: multiple_choice context,choices (default); last_word text (default)"})
    label_column: str = field(default="label", metadata={"help": "multiple_choice: column of the answer index"})
    template: Optional[str] = field(default=None, metadata={
        "help": "multiple_choice: input with {context} and {choice}, e.g. 'Question: {context}\\nAnswer: {choice}' "
                "(default '{context} {choice}')"})
    max_samples: Optional[int] = field(default=None, metadata={"help": "evaluate only the first N examples"})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "rows per compiled forward pass"})
    output_dir: Optional[str] = field(default=None, metadata={
        "help": "write eval_results.json here (default: print only)"})
    device_target: str = field(default="auto", metadata={"help": "auto | CPU | GPU | Ascend"})
    jit: bool = field(default=True, metadata={"help": "compile the scoring step (false = PyNative, debugging)"})
    jit_level: str = field(default="auto", metadata={"help": "MindSpore graph optimisation level O0 | O1 | O2"})
    dtype: Optional[str] = field(default=None, metadata={"help": "matmul and KV-cache dtype: float32 | float16 | bfloat16 (None = the checkpoint's config.json compute_dtype)"})
    emulate_ascend: bool = field(default=False, metadata={"help": "make the graph choices an Ascend job makes (static decode windows, jit level O0, fused LayerNorm) on CPU/GPU"})
    disable_tqdm: bool = field(default=False, metadata={"help": "no progress bar"})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}; expected one of {', '.join(TASKS)}")
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r}; expected one of {', '.join(SPLITS)}")
        if self.per_device_eval_batch_size < 1:
            raise ValueError(f"per_device_eval_batch_size must be positive, got {self.per_device_eval_batch_size}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be positive, got {self.max_samples}")


# ---- the compiled step -----------------------------------------------------------------------------------------------
class _ScoreStep(nn.Cell):
    """input_ids [B, T], target_mask [B, T - 1] (1 where token t + 1 is scored) -> (log p(token t + 1 | tokens
    <= t) masked [B, T - 1] float32, argmax == token t + 1 [B, T - 1] int32)."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # the model's parameter names stay its own (HF keys)
        self.model = model

    def construct(self, input_ids, target_mask):
        hidden = self.model.transformer(input_ids)
        logits = self.model.logits(hidden[:, :-1, :]).astype(ms.float32)
        targets = input_ids[:, 1:].astype(ms.int32)
        picked = ops.gather_elements(logits, 2, targets.expand_dims(-1)).squeeze(-1)
        logprob = (picked - ops.logsumexp(logits, -1)) * target_mask
        correct = (ops.argmax(logits, -1).astype(ms.int32) == targets).astype(ms.int32)
        return logprob, correct


@dataclass
class Row:
    """Token ids and the positions [lo, hi) whose tokens are scored (lo >= 1: position 0 has no context)."""

    ids: np.ndarray
    lo: int
    hi: int


class TokenScorer:
    """Scores rows in fixed-shape batches with one compiled graph (see the module docstring)."""

    def __init__(self, model, batch_size: int = 8, jit: bool = True, jit_level: str = "auto",
                 disable_tqdm: bool = True):
        self.model = model
        self.batch_size = batch_size
        self.cell = _ScoreStep(model)
        self.step = compiled(self.cell, jit, jit_level)
        self.disable_tqdm = disable_tqdm

    @property
    def compilations(self) -> int:
        return len(self.cell.compile_cache)

    def score(self, rows: Sequence[Row], length: Optional[int] = None, desc: str = "eval"
              ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(log-probabilities, greedy hits) of each row's scored tokens, in row order."""
        if not rows:
            raise ValueError("nothing to evaluate: no rows")
        n_positions = self.model.config.n_positions
        length = length or max(len(r.ids) for r in rows)
        if length > n_positions:
            raise ValueError(f"rows of {length} tokens exceed the model's n_positions={n_positions}")
        if length < 2:
            raise ValueError("rows need at least 2 tokens (one to predict from, one to score)")
        vocab = self.model.config.vocab_size
        for r in rows:
            if len(r.ids) and (int(r.ids.max()) >= vocab or int(r.ids.min()) < 0):
                bad = int(r.ids.max()) if int(r.ids.max()) >= vocab else int(r.ids.min())
                raise ValueError(f"token id {bad} is outside the model's vocabulary [0, {vocab}): the tokenizer "
                                 "does not belong to this model (pass --tokenizer)")
        bs = self.batch_size
        was_training = self.model.training
        self.model.set_train(False)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        bar = None
        if not self.disable_tqdm:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(rows), desc=desc, unit="row", dynamic_ncols=True)
        try:
            for start in range(0, len(rows), bs):
                chunk = rows[start:start + bs]
                ids = np.zeros((bs, length), np.int32)
                mask = np.zeros((bs, length - 1), np.float32)
                for i, r in enumerate(chunk):
                    if not 1 <= r.lo <= r.hi <= len(r.ids) <= length:
                        raise ValueError(f"bad row: {len(r.ids)} tokens, scored [{r.lo}, {r.hi}), length {length}")
                    ids[i, :len(r.ids)] = r.ids
                    mask[i, r.lo - 1:r.hi - 1] = 1.0
                logprob, correct = self.step(Tensor(ids), Tensor(mask))
                logprob, correct = logprob.asnumpy(), correct.asnumpy()
                for i, r in enumerate(chunk):
                    out.append((logprob[i, r.lo - 1:r.hi - 1].astype(np.float64),
                                correct[i, r.lo - 1:r.hi - 1].astype(bool)))
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
            self.model.set_train(was_training)
        return out


def _scorer(model, scorer: Optional[TokenScorer], batch_size: int) -> TokenScorer:
    """`scorer`, else the model's own (kept on the model per batch size, so repeated calls with the same shapes
    compile nothing; rebuilt when a Parameter object was replaced, as generation does)."""
    if scorer is not None:
        return scorer
    cache = model.__dict__.setdefault("_eval_scorers", {})
    params = tuple(id(p) for p in model.get_parameters())
    found = cache.get(batch_size)
    if found is None or found[0] != params:
        found = cache[batch_size] = (params, TokenScorer(model, batch_size))
    return found[1]


# ---- perplexity --------------------------------------------------------------------------------------------------
def sliding_windows(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(b, e, lo) per window: window k covers [b, e) with b = k * stride, e = min(b + max_length, length), stopping
    after the window that reaches the end (or when b passes it); its scored targets are positions lo .. e - 1 with
    lo = max(e_prev, b + 1), e_prev = the previous window's end (0 for the first): HF's recipe with
    `labels[:, :-trg_len] = -100` and the label shift."""
    if max_length < 2 or stride < 1:
        raise ValueError(f"need max_length >= 2 and stride >= 1, got max_length={max_length}, stride={stride}")
    windows = []
    prev_end = 0
    for begin in range(0, length, stride):
        end = min(begin + max_length, length)
        windows.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == length:
            break
    return windows


# The scorer holds a few float32 copies of a batch's logits (log-softmax, argmax): cap one copy at this many bytes.
LOGITS_BUDGET_BYTES = 256 * 2**20


def bounded_batch_size(model, length: int, requested: int, budget: int = LOGITS_BUDGET_BYTES) -> int:
    """`requested` rows per scoring batch, fewer where [rows, length, vocab] float32 logits would exceed `budget`
    (a 124M GPT-2 at 256 tokens: 5 rows; 64 rows would need 3.3 GB per copy)."""
    per_row = max(1, length) * model.config.vocab_size * 4
    return max(1, min(requested, budget // per_row))


def perplexity_of_ids(model, ids: np.ndarray, max_length: Optional[int] = None, stride: Optional[int] = None,
                      batch_size: int = 8, scorer: Optional[TokenScorer] = None, source: str = "text"
                      ) -> dict[str, Any]:
    """Sliding-window perplexity of one token stream (see `sliding_windows`); windows run in batches."""
    ids = np.asarray(ids, dtype=np.int32)
    n_positions = model.config.n_positions
    max_length = max_length or n_positions
    if max_length > n_positions:
        raise ValueError(f"max_length={max_length} exceeds the model's n_positions={n_positions}")
    stride = stride or max(1, max_length // 2)
    if len(ids) < 2:
        raise ValueError(f"{source}: {len(ids)} token(s); perplexity needs at least 2")
    windows = sliding_windows(len(ids), max_length, stride)
    rows = [Row(ids[b:e], lo - b, e - b) for b, e, lo in windows]
    scored = _scorer(model, scorer, batch_size).score(rows, max_length, desc="perplexity")
    total = sum(float(-lp.sum()) for lp, _ in scored)
    count = sum(len(lp) for lp, _ in scored)
    if count == 0:
        raise ValueError(f"{source}: no token is scored with max_length={max_length}, stride={stride}")
    nll = total / count
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count, "windows": len(windows),
            "max_length": max_length, "stride": stride}


def sequence_perplexity(model, sequences: Sequence[np.ndarray], batch_size: int = 8,
                        length: Optional[int] = None, scorer: Optional[TokenScorer] = None) -> dict[str, Any]:
    """Perplexity over independent sequences (e.g. held-out dialogues): every token after the first of each is
    scored, predicted from the sequence's tokens before it."""
    rows = [Row(np.asarray(s, np.int32), 1, len(s)) for s in sequences if len(s) >= 2]
    scored = _scorer(model, scorer, batch_size).score(rows, length, desc="perplexity")
    count = sum(len(lp) for lp, _ in scored)
    nll = sum(float(-lp.sum()) for lp, _ in scored) / count
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count}


# ---- multiple choice and last word ---------------------------------------------------------------------------------
def split_template(template: str, context: str) -> tuple[str, str]:
    """(prefix, continuation pattern): the text before `{choice}` with the context filled in, and the rest starting
    at `{choice}`. Whitespace right before `{choice}` belongs to the continuation (" Paris" is one GPT-2 token)."""
    for key in ("{context}", "{choice}"):
        if key not in template:
            raise ValueError(f"template {template!r} has no {key}")
    cut = template.index("{choice}")
    while cut > 0 and template[cut - 1] in " \t":
        cut -= 1
    return template[:cut].replace("{context}", context), template[cut:]


def _pair_row(prefix_ids: list[int], cont_ids: list[int], n_positions: int, where: str) -> Row:
    if not cont_ids:
        raise ValueError(f"{where}: the answer text has no tokens")
    if not prefix_ids:
        raise ValueError(f"{where}: empty context (nothing to condition the answer on)")
    if len(cont_ids) >= n_positions:
        raise ValueError(f"{where}: the answer has {len(cont_ids)} tokens; the model's window is {n_positions}")
    ids = (prefix_ids + cont_ids)[-n_positions:]  # a long context loses its beginning
    return Row(np.asarray(ids, np.int32), len(ids) - len(cont_ids), len(ids))


@dataclass
class ChoiceItem:
    where: str  # "FILE: row N" for errors
    context: str
    choices: list[str]
    label: int


def score_choices(model, tokenizer, items: Sequence[ChoiceItem], template: Optional[str] = None,
                  batch_size: int = 8, scorer: Optional[TokenScorer] = None) -> dict[str, Any]:
    """Zero-shot ranking: each choice's log-likelihood given its context, summed (`accuracy`) and per token
    (`accuracy_norm`). Returns the accuracies and the per-item log-likelihoods."""
    template = template or DEFAULT_TEMPLATE
    split_template(template, "")  # validate once, before any work
    n_positions = model.config.n_positions
    rows, owners = [], []
    for n, item in enumerate(items):
        prefix, pattern = split_template(template, item.context)
        prefix_ids = tokenizer.encode(prefix)
        for k, choice in enumerate(item.choices):
            cont = pattern.replace("{choice}", choice).replace("{context}", item.context)
            rows.append(_pair_row(prefix_ids, tokenizer.encode(cont), n_positions, f"{item.where}, choice {k}"))
            owners.append(n)
    length = _round_up(max(len(r.ids) for r in rows), 8, n_positions)
    scored = _scorer(model, scorer, batch_size).score(rows, length, desc="choices")
    sums: list[list[float]] = [[] for _ in items]
    counts: list[list[int]] = [[] for _ in items]
    for owner, (lp, _) in zip(owners, scored):
        sums[owner].append(float(lp.sum()))
        counts[owner].append(len(lp))
    hits = [int(np.argmax(s)) == it.label for s, it in zip(sums, items)]
    hits_norm = [int(np.argmax(np.asarray(s) / np.asarray(c))) == it.label
                 for s, c, it in zip(sums, counts, items)]
    return {"accuracy": float(np.mean(hits)), "accuracy_norm": float(np.mean(hits_norm)), "examples": len(items),
            "loglikelihoods": sums, "token_counts": counts}


def _round_up(value: int, multiple: int, cap: int) -> int:
    return min(cap, -(-value // multiple) * multiple)


def split_last_word(text: str, where: str) -> tuple[str, str]:
    """(context, " word"): the passage without its final whitespace-separated word, and that word with the
    whitespace before it."""
    text = text.rstrip()
    cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    if cut <= 0 or not text[:cut].strip():
        raise ValueError(f"{where}: a passage needs at least two words, got {text[:60]!r}")
    return text[:cut], text[cut:]


def last_word_accuracy(model, tokenizer, items: Sequence[tuple[str, str]], batch_size: int = 8,
                       scorer: Optional[TokenScorer] = None) -> dict[str, Any]:
    """items: (where, passage). Accuracy of greedy final-word prediction, and the perplexity of the final words."""
    n_positions = model.config.n_positions
    rows = []
    for where, text in items:
        context, word = split_last_word(text, where)
        rows.append(_pair_row(tokenizer.encode(context), tokenizer.encode(word), n_positions, where))
    length = _round_up(max(len(r.ids) for r in rows), 8, n_positions)
    scored = _scorer(model, scorer, batch_size).score(rows, length, desc="last word")
    hits = [bool(c.all()) for _, c in scored]
    count = sum(len(lp) for lp, _ in scored)
    nll = sum(float(-lp.sum()) for lp, _ in scored) / count
    return {"accuracy": float(np.mean(hits)), "perplexity": math.exp(nll), "nll": nll, "tokens": count,
            "examples": len(items)}


# ---- data --------------------------------------------------------------------------------------------------------
def read_choice_items(path: str, text_columns: Optional[Sequence[str]] = None, label_column: str = "label",
                      max_samples: Optional[int] = None) -> list[ChoiceItem]:
    """Rows of a csv/tsv/json/jsonl file (context, list of choices, label index) or a BIG-bench task file."""
    from .data.tasks import read_records, records_to_examples

    columns = list(text_columns or ["context", "choices"])
    records = read_records(path)
    if max_samples:
        records = records[:max_samples]
    for where, rec in records:
        if isinstance(rec, dict) and "target_scores" in rec and label_column not in rec:
            if not isinstance(rec.get("target_scores"), dict) or len(rec["target_scores"]) < 2:
                raise ValueError(f"{path}: {where}, column 'target_scores': expected at least 2 scored choices")
            continue
        if isinstance(rec, dict) and len(columns) == 2:
            choices = rec.get(columns[1])
            if choices is None:
                raise ValueError(f"{path}: {where}: no column '{columns[1]}' with the choices (columns: "
                                 f"{', '.join(map(str, rec))})")
            if isinstance(choices, str):  # csv cells: a JSON list
                try:
                    rec[columns[1]] = choices = json.loads(choices)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: {where}, column '{columns[1]}': expected a JSON list of choices, "
                                     f"got {choices[:60]!r}") from None
            if not isinstance(choices, list) or len(choices) < 2:
                raise ValueError(f"{path}: {where}, column '{columns[1]}': expected a list of at least 2 choices, "
                                 f"got {choices!r}")
    data = records_to_examples(records, "multiple_choice", path, columns, label_column)
    wheres = [w for w, _ in records]
    return [ChoiceItem(f"{path}: {w}", ex.texts[0], list(ex.choices), ex.label)
            for w, ex in zip(wheres, data.examples)]


def read_passages(path: str, text_column: str = "text", max_samples: Optional[int] = None
                  ) -> list[tuple[str, str]]:
    """(where, passage) from a txt (one passage per line), jsonl/json/csv (column `text_column`) file."""
    from .data.tasks import _text, read_records

    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no passages")
    if max_samples:
        records = records[:max_samples]
    return [(f"{path}: {where}", _text(rec, text_column, path, where)) for where, rec in records]


def load_hub_text(name: str, config_name: Optional[str], split: str, column: str = "text",
                  timeout: float = 5.0) -> str:
    """A hub dataset's text column joined with blank lines (HF's perplexity guide), through mindnlp. Fails fast
    with one message when the hub cannot be reached."""
    import socket
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"dataset_name={name!r} needs the network, but {host} is unreachable ({err}); offline? "
                           "pass --text_file instead") from None
    from .data.tasks import open_hub_dataset

    dataset = open_hub_dataset(name, split, config_name, error=ValueError, hint="pass --text_file instead")
    texts = []
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        if column not in row:
            raise ValueError(f"dataset {name!r}: no column {column!r} (columns: {', '.join(row)})")
        texts.append(str(row[column].item() if row[column].ndim == 0 else row[column]))
    return "\n\n".join(texts)


# ---- the command ---------------------------------------------------------------------------------------------------
def evaluate(args: EvaluateArguments, log: Callable = print) -> dict[str, Any]:
    """Load the model and tokenizer, run the task, write output_dir/eval_results.json (atomically)."""
    from .data.lm import read_text, split_ids
    from .device import setup_device
    from .model import GPTLMHeadModel
    from .paths import resolve_path
    from .tokenizers import load_tokenizer

    if not args.model:
        raise ValueError("give --model (a model directory or hub name)")
    device = setup_device(args.device_target, emulate_ascend=args.emulate_ascend)
    model_path = resolve_path(args.model)
    tokenizer = load_tokenizer(resolve_path(args.tokenizer) if args.tokenizer else model_path)
    from .generation import dtype_override

    model = GPTLMHeadModel.from_pretrained(model_path, **dtype_override(args.dtype))
    model.set_train(False)
    scorer = TokenScorer(model, args.per_device_eval_batch_size, args.jit, args.jit_level, args.disable_tqdm)
    result: dict[str, Any] = {"task": args.task, "model": args.model}
    if args.task == "perplexity":
        if bool(args.text_file) == bool(args.dataset_name):
            raise ValueError("task perplexity: give exactly one of --text_file or --dataset_name")
        if args.text_file:
            source = resolve_path(args.text_file)
            text = read_text(source)
        else:
            source = f"{args.dataset_name}/{args.dataset_config_name or ''}:{args.dataset_split}"
            text = load_hub_text(args.dataset_name, args.dataset_config_name, args.dataset_split,
                                 args.dataset_text_column)
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
        split, fraction = args.split, args.train_fraction
        recorded = pretraining_fraction(model_path, source) if args.text_file else None
        if split == "auto":
            split = "validation" if recorded is not None else "all"
        if split != "all":
            fraction = fraction or recorded or 0.9
            train_ids, val_ids = split_ids(ids, fraction)
            ids = train_ids if split == "train" else val_ids
        result.update(source=source, split=split, train_fraction=fraction if split != "all" else None)
        result.update(perplexity_of_ids(model, ids, args.max_length, args.stride, scorer=scorer, source=source))
        line = (f"perplexity {result['perplexity']:.4f} (nll {result['nll']:.4f}) over {result['tokens']:,} tokens "
                f"({split}{f' split, train_fraction {fraction}' if split != 'all' else ' text'}), "
                f"{result['windows']} windows of {result['max_length']} with stride {result['stride']}")
    else:
        if not args.data_file:
            raise ValueError(f"task {args.task}: give --data_file")
        source = resolve_path(args.data_file)
        result["source"] = source
        if args.task == "multiple_choice":
            items = read_choice_items(source, args.text_columns, args.label_column, args.max_samples)
            scores = score_choices(model, tokenizer, items, args.template, scorer=scorer)
            result.update({k: v for k, v in scores.items() if k not in ("loglikelihoods", "token_counts")},
                          template=args.template or DEFAULT_TEMPLATE)
            line = (f"accuracy {result['accuracy']:.4f} (summed log-likelihood), accuracy_norm "
                    f"{result['accuracy_norm']:.4f} (per token) over {result['examples']} examples")
        else:
            column = (args.text_columns or ["text"])[0]
            items = read_passages(source, column, args.max_samples)
            result.update(last_word_accuracy(model, tokenizer, items, scorer=scorer))
            line = (f"last-word accuracy {result['accuracy']:.4f} over {result['examples']} passages; final-word "
                    f"perplexity {result['perplexity']:.4f}")
    result["compilations"] = scorer.compilations
    if args.output_dir and device.is_main:
        write_results(result, args.output_dir)
    result["summary"] = line
    return result


def pretraining_fraction(model_path: str, text_path: str) -> Optional[float]:
    """The train_fraction of the pretraining run saved in `model_path` if it trained on `text_path` (read from its
    checkpoints' trainer_state.json), else None."""
    import glob

    for state_path in sorted(glob.glob(os.path.join(model_path, "checkpoint-*", "trainer_state.json"))):
        try:
            with open(state_path, encoding="utf-8") as f:
                run = json.load(f).get("run_config", {})
            trained_on = run.get("train_file")
            if trained_on and "train_fraction" in run and os.path.samefile(_resolve(trained_on), text_path):
                return float(run["train_fraction"])
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return None


def _resolve(path: str) -> str:
    from .paths import resolve_path

    return resolve_path(path)


def write_results(result: dict, output_dir: str, name: str = "eval_results.json") -> str:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with atomic_write(path) as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    return path
