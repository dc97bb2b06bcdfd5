"""Run an exported model (`python -m ms_gpt.export`) from its MindIR files alone: `mindspore.load` + `nn.GraphCell`.

`MindIRGenerator(OUT)` decodes as generate() does — the prompt into the KV cache chunk by chunk (prefill graph),
then one token per step (the decode graph of the smallest window gear that holds the call) — with the cache held
here as one set of tensors per batch size, handed to every graph as inputs that the graphs update in place (see
`ms_gpt.exporter` for why). Greedy ids come from the graph's argmax; any other token choice is generate()'s host
code (`generation.TokenChooser`, same seed, same draws), and the options resolve as generate()'s do (explicit,
then the exported generation_config.json, then the defaults). No model code and no source weights are read.
`MindIRClassifier(OUT)` runs an exported sequence-classification graph.

A prompt that does not fit the exported max_length (with its new tokens), or a batch size that was not exported,
is one ValueError naming what was exported.

Must not import: ms_gpt.model, ms_gpt.checkpoint, ms_gpt.lora, ms_gpt.engine, ms_gpt.data, ms_gpt.recipes,
ms_gpt.compat.
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Callable, Optional, Sequence, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from .generation import (TokenChooser, _as_numpy_ids, _prepare_prompt, position_ids_from_mask,
                         resolve_generation_options)

EXPORT_CONFIG = "export_config.json"  # the same name ms_gpt.exporter writes
_DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def is_exported_dir(path) -> bool:
    """Whether `path` is a directory written by `python -m ms_gpt.export`."""
    return os.path.isfile(os.path.join(os.fspath(path), EXPORT_CONFIG))


def read_export_config(directory: str) -> dict:
    path = os.path.join(directory, EXPORT_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not a directory written by python -m ms_gpt.export")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    missing = [k for k in ("task", "graphs", "batch_sizes", "max_length", "vocab_size") if k not in config]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    for graph in config["graphs"]:
        if not os.path.isfile(os.path.join(directory, graph["file"])):
            raise FileNotFoundError(f"{path} lists {graph['file']}, which is not in {directory}")
    return config


def _i32(array) -> Tensor:
    return Tensor(np.ascontiguousarray(array, dtype=np.int32))


def _load_graph(directory: str, file: str) -> nn.GraphCell:
    return nn.GraphCell(ms.load(os.path.join(directory, file)))


class _Exported:
    """What an exported directory holds: its config, and its graphs loaded on first use (per batch size)."""

    task = ""

    def __init__(self, directory: str):
        self.directory = os.fspath(directory)
        self.export_config = read_export_config(self.directory)
        if self.export_config["task"] != self.task:
            raise ValueError(f"{self.directory} holds a {self.export_config['task']} export, not {self.task}")
        self.batch_sizes = list(self.export_config["batch_sizes"])
        self.max_length = int(self.export_config["max_length"])
        ec = self.export_config
        # what generate()'s option resolution reads of a model (`generation.resolve_generation_options`)
        self.config = SimpleNamespace(vocab_size=ec["vocab_size"], n_positions=self.max_length,
                                      bos_token_id=ec.get("bos_token_id"), eos_token_id=ec.get("eos_token_id"),
                                      pad_token_id=ec.get("pad_token_id"))
        self.generation_config = ec.get("generation_config")
        self._by_batch: dict = {}

    def _check_batch(self, batch: int) -> None:
        if batch not in self.batch_sizes:
            raise ValueError(f"batch size {batch} was not exported to {self.directory} (batch sizes: "
                             f"{self.batch_sizes}); export it with --batch_sizes "
                             f"{','.join(str(b) for b in sorted(set(self.batch_sizes) | {batch}))}")


class MindIRGenerator(_Exported):
    """generate() over the MindIR graphs of an exported directory; `generate_ids` takes generate()'s arguments."""

    task = "causal-lm"

    def __init__(self, directory: str):
        super().__init__(directory)
        ec = self.export_config
        self.chunk = int(ec["prefill_chunk"])
        self.slots = int(ec["cache"]["slots"])
        self.windows = sorted(int(w) for w in ec["windows"])

    def graphs(self, batch: int):
        """(prefill GraphCell, {window: decode GraphCell}, cache tensors) of one batch size, loaded on first use."""
        self._check_batch(batch)
        if batch not in self._by_batch:
            prefill, decode, cache = None, {}, None
            for graph in self.export_config["graphs"]:
                if graph["batch_size"] != batch:
                    continue
                if graph["kind"] == "prefill":
                    prefill = _load_graph(self.directory, graph["file"])
                    cache = [Parameter(Tensor(np.zeros(spec["shape"], np.float32)).astype(_DTYPES[spec["dtype"]]),
                                       name=spec["name"], requires_grad=False)
                             for spec in graph["inputs"] if spec.get("state")]
                elif graph["kind"] == "decode":
                    decode[int(graph["window"])] = _load_graph(self.directory, graph["file"])
            if prefill is None or sorted(decode) != self.windows:
                raise ValueError(f"{self.directory}/{EXPORT_CONFIG}: batch size {batch} lacks its prefill graph or "
                                 f"a decode window of {self.windows}")
            self._by_batch[batch] = (prefill, decode, cache)
        return self._by_batch[batch]

    def generate_ids(self, input_ids, attention_mask=None, max_new_tokens: Optional[int] = None,
                     do_sample: Optional[bool] = None, temperature: Optional[float] = None,
                     top_k: Optional[int] = None, top_p: Optional[float] = None,
                     repetition_penalty: Optional[float] = None, eos_token_id: Union[int, Sequence[int], None] = None,
                     pad_token_id: Optional[int] = None, seed: Optional[int] = None, use_cache: bool = True,
                     min_new_tokens: Optional[int] = None, num_return_sequences: Optional[int] = None,
                     on_token: Optional[Callable[[np.ndarray], None]] = None,
                     max_length: Optional[int] = None) -> np.ndarray:
        """generate(model, ...)'s contract (`ms_gpt.generation.generate`) over the exported graphs: int64 [B * n, T +
        new]. use_cache=False is refused (the graphs are the cached ones); a prompt + max_new_tokens longer than the
        exported max_length, or a batch size not exported, raises ValueError."""
        if not use_cache:
            raise ValueError("the exported graphs decode with the KV cache; use_cache=False needs the source model")
        original = _as_numpy_ids(input_ids)
        options = resolve_generation_options(
            self, original.shape[1], max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
            min_new_tokens=min_new_tokens, num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id)
        max_new_tokens, copies = options["max_new_tokens"], options["num_return_sequences"]
        eos, pad_token_id, min_new_tokens = options["eos_token_id"], options["pad_token_id"], options["min_new_tokens"]
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        if not isinstance(copies, (int, np.integer)) or copies < 1:
            raise ValueError(f"num_return_sequences must be a positive integer, got {copies!r}")
        self._check_fits(original, attention_mask, int(max_new_tokens))
        self._check_batch(original.shape[0] * copies)
        ids, mask, max_new_tokens = _prepare_prompt(self, original, attention_mask, int(max_new_tokens))
        if copies > 1:
            original, ids, mask = (np.repeat(a, copies, axis=0) for a in (original, ids, mask))
        chooser = TokenChooser(self.config.vocab_size, options["do_sample"], options["temperature"],
                               options["top_k"], options["top_p"], options["repetition_penalty"], seed)
        chooser.observe(ids, mask)
        batch = ids.shape[0]
        if max_new_tokens == 0:
            return original
        new_tokens = np.full((batch, max_new_tokens), pad_token_id, dtype=np.int64)
        decoder = _GraphDecoder(self, ids, mask, max_new_tokens)
        finished = np.zeros(batch, dtype=bool)
        greedy_ids, logits = decoder.start()
        produced = 0
        for step in range(max_new_tokens):
            banned = eos if step < min_new_tokens else ()
            if chooser.plain_greedy and not banned:
                tokens = greedy_ids.asnumpy().astype(np.int64)
            else:
                tokens = chooser(logits.asnumpy(), banned=banned)
            tokens = np.where(finished, pad_token_id, tokens)
            new_tokens[:, step] = tokens
            produced = step + 1
            if on_token is not None:
                on_token(tokens)
            if eos:
                finished |= np.isin(tokens, eos)
            if finished.all() or produced == max_new_tokens:
                break
            fed = np.where(finished, 0, tokens)
            chooser.observe(fed[:, None])
            greedy_ids, logits = decoder.advance(fed)
        return np.concatenate([original, new_tokens[:, :produced]], axis=1)

    def _check_fits(self, ids: np.ndarray, attention_mask, max_new_tokens: int) -> None:
        """One clear error where generate() would trim: the prompt's real tokens + new tokens > max_length."""
        if attention_mask is None:
            longest = ids.shape[1]
        else:
            mask = np.asarray(attention_mask.asnumpy() if isinstance(attention_mask, Tensor) else attention_mask)
            longest = int(mask.reshape(-1, mask.shape[-1]).astype(bool).sum(axis=-1).max()) if mask.size else 0
        if longest + max_new_tokens > self.max_length:
            raise ValueError(f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the exported "
                             f"max_length={self.max_length} of {self.directory}; shorten the prompt or "
                             f"max_new_tokens, or export with a larger --max_length (at most n_positions="
                             f"{self.export_config.get('n_positions')})")


class _GraphDecoder:
    """generation._CachedDecoder over GraphCells: slot i of the cache holds prompt column i (left padding masked),
    then the new tokens; the prompt goes in chunk by chunk, right-padded with id 0 in its last chunk."""

    def __init__(self, runner: MindIRGenerator, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int):
        batch, width = ids.shape
        self.prefill, decode, self.cache = runner.graphs(batch)
        chunk, slots = runner.chunk, runner.slots
        needed = width + max_new_tokens - 1
        window = min(w for w in runner.windows if w >= needed)
        self.decode = decode[window]
        self.chunk = chunk
        chunks = -(-width // chunk) * chunk
        self.ids = np.pad(ids, ((0, 0), (0, chunks - width)))
        self.positions = np.pad(position_ids_from_mask(mask), ((0, 0), (0, chunks - width)))
        cache_mask = np.ones((batch, slots), dtype=np.int32)
        cache_mask[:, :width] = mask
        self.cache_mask = _i32(cache_mask)
        self.window_mask = _i32(cache_mask[:, :window])
        self.window_slots = _i32(np.arange(window))
        self.width = width
        self.next_position = mask.sum(axis=1)
        self.slot = width

    def start(self):
        out = None
        for begin in range(0, self.ids.shape[1], self.chunk):
            end = begin + self.chunk
            last = min(self.width - 1 - begin, self.chunk - 1)
            out = self.prefill(_i32(self.ids[:, begin:end]), _i32(self.positions[:, begin:end]), self.cache_mask,
                               _i32([begin]), _i32([last]), *self.cache)
        return out

    def advance(self, tokens: np.ndarray):
        out = self.decode(_i32(tokens[:, None]), _i32(self.next_position[:, None]), self.window_mask,
                          _i32([self.slot]), _i32([0]), self.window_slots, *self.cache)
        self.slot += 1
        self.next_position = self.next_position + 1
        return out


class MindIRClassifier(_Exported):
    """Logits of an exported sequence-classification model: rows are right-padded to the exported length."""

    task = "sequence-classification"

    def __call__(self, input_ids, attention_mask=None) -> np.ndarray:
        ids = _as_numpy_ids(input_ids)
        mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask, np.int64)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
        batch, width = ids.shape
        self._check_batch(batch)
        if width > self.max_length:
            raise ValueError(f"input of {width} tokens exceeds the exported max_length={self.max_length} of "
                             f"{self.directory}")
        if batch not in self._by_batch:
            graph = next(g for g in self.export_config["graphs"] if g["batch_size"] == batch)
            self._by_batch[batch] = _load_graph(self.directory, graph["file"])
        pad = self.max_length - width
        ids = np.pad(np.where(mask == 1, ids, 0), ((0, 0), (0, pad)))
        mask = np.pad(mask, ((0, 0), (0, pad)))
        return self._by_batch[batch](_i32(ids), _i32(mask)).asnumpy()


def load_exported(directory: str):
    """(MindIRGenerator, tokenizer) of an exported directory: what `python -m ms_gpt.generate --model OUT` runs."""
    from .tokenizers import load_tokenizer

    runner = MindIRGenerator(directory)
    if not runner.export_config.get("tokenizer_files"):
        raise FileNotFoundError(f"{directory} has no tokenizer files (the model exported had none); "
                                "generate_ids takes token ids")
    return runner, load_tokenizer(directory)
