"""MindIR export of a model's generation graphs for deployment (MindSpore Lite / MindIE on Ascend).

`export_model(DIR, OUT)` writes, for every batch-size gear B:

- `prefill_b{B}.mindir`: one PREFILL_CHUNK-token chunk of the prompt into the KV cache, the same computation as
  generate()'s prefill step (`generation.cached_step`, the graph `_CachedStep` compiles);
- `decode_b{B}_w{W}.mindir` for every window gear W: one new token per row attending to the first W cache slots
  (generate()'s decode step with a static window, as it runs on Ascend);

plus `export_config.json` (every graph's inputs, outputs, shapes and dtypes; the gears; the tokenizer and
generation settings) and the tokenizer files. A sequence-classification model writes `classify_b{B}.mindir`
(input_ids and attention_mask [B, max_length] -> logits [B, num_labels]) instead. A LoRA adapter directory is
exported with the adapter merged into the weights.

Why the KV cache is a graph INPUT updated in place (not a graph output, not a Parameter inside each file):
the cache of a batch size is one set of tensors (`kv_cache.b{B}.{layer}.key/value`, [B * H * slots, D] float32)
that the prefill graph and every decode window gear of that batch size must read and write. MindSpore passes a
Parameter given as a graph input by reference: the graph's ScatterUpdate writes the new rows into the caller's
tensor, as generate()'s compiled steps write their cache Parameters, so only the new slots move (checked on
MindSpore 2.7 CPU: a loaded `nn.GraphCell` writes into the Parameter it is handed, and a second GraphCell handed the
same Parameter reads those rows; tests/test_export.py decodes through exactly that). As graph outputs the whole cache
would be copied out every token (GPT-2 124M, batch 1: 24 tensors of 3.2 MB, 78 MB per step); as Parameters inside
each file every file would carry its own zero cache (0.6 GB per file at batch 8) and
two `nn.GraphCell`s loaded from two files do not share Parameters (`params_init` copies the values: checked here),
so prefill and decode could not hand the cache to each other. The weights are constants of each file; MindSpore
Lite's `ModelGroup(ModelGroupFlag.SHARE_WEIGHT)` (cloud-side Ascend inference, GE provider) shares "weights
(including constants and variables)" between the models of a group, so the gears of one model hold one copy of the
weights on the device, and the cache tensors are bound as inputs (see README, "Deploying on Ascend"; not run here).

Must not import: ms_gpt.engine, ms_gpt.data, ms_gpt.recipes, ms_gpt.compat.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from .device import graph_mode
from .generation import PREFILL_CHUNK, STATIC_WINDOWS, _KVCache, _ModelStep, cached_step, generation_config
from .paths import atomic_directory

EXPORT_CONFIG = "export_config.json"
FORMAT_VERSION = 1
_DTYPE_NAMES = {ms.float32: "float32", ms.float16: "float16", ms.bfloat16: "bfloat16"}


class PrefillGraph(_ModelStep):
    """generate()'s prefill step with the cache as inputs: (input_ids [B, C], position_ids [B, C], cache_mask
    [B, slots], cache_position [1], last_index [1], key_0, value_0, key_1, ...) -> (greedy ids [B], logits [B, V])."""

    def __init__(self, model):
        super().__init__(model)
        self.n_layer = model.config.n_layer

    def construct(self, input_ids, position_ids, cache_mask, cache_position, last_index, *cache):
        past = tuple((cache[2 * i], cache[2 * i + 1]) for i in range(self.n_layer))
        return cached_step(self.model, past, input_ids, position_ids, cache_mask, cache_position, last_index)


class DecodeGraph(_ModelStep):
    """generate()'s one-token decode step over a static window of W slots: (input_ids [B, 1], position_ids [B, 1],
    cache_mask [B, W], cache_position [1], last_index [1], window_slots [W], key_0, value_0, ...) -> (greedy ids [B],
    logits [B, V])."""

    def __init__(self, model):
        super().__init__(model)
        self.n_layer = model.config.n_layer

    def construct(self, input_ids, position_ids, cache_mask, cache_position, last_index, window_slots, *cache):
        past = tuple((cache[2 * i], cache[2 * i + 1]) for i in range(self.n_layer))
        return cached_step(self.model, past, input_ids, position_ids, cache_mask, cache_position, last_index,
                           window_slots)


class ClassifyGraph(_ModelStep):
    """A sequence-classification model: (input_ids [B, T], attention_mask [B, T]) -> logits [B, num_labels]."""

    def construct(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask)


def _spec(name: str, shape, dtype: str, **extra) -> dict:
    return {"name": name, "shape": [int(s) for s in shape], "dtype": dtype, **extra}


def _i32(shape) -> Tensor:
    return Tensor(np.zeros(shape, np.int32))


def cache_names(batch: int, n_layer: int) -> list[str]:
    """The graph-input names of one batch size's cache, in input order (key, value per layer)."""
    return [f"kv_cache.b{batch}.{i}.{kind}" for i in range(n_layer) for kind in ("key", "value")]


def _parse_ints(values, name: str) -> list[int]:
    if isinstance(values, (int, np.integer)):
        values = [values]
    out = []
    for v in values:
        try:
            number = int(str(v).strip())
        except ValueError:
            raise ValueError(f"--{name}: {v!r} is not an integer") from None
        if number < 1:
            raise ValueError(f"--{name}: {number} must be >= 1")
        out.append(number)
    if not out:
        raise ValueError(f"--{name} must name at least one value")
    return sorted(set(out))


def _load(model_dir: str, dtype: Optional[str]):
    """(model in eval mode, adapter merged, task) of a model or PEFT adapter directory; task "causal-lm" or
    "sequence-classification" from config.json's architectures / the adapter's task_type."""
    from .checkpoint.hub import is_hub_name
    from .lora import is_adapter_dir, is_lora_model, merge_lora, read_adapter_config
    from .model import GPTForSequenceClassification, GPTLMHeadModel

    if not os.path.isdir(model_dir) and not is_hub_name(model_dir):
        raise FileNotFoundError(f"--model {model_dir}: no such directory")
    if is_adapter_dir(model_dir):
        classify = read_adapter_config(model_dir).get("task_type") == "SEQ_CLS"
    else:
        config_path = os.path.join(model_dir, "config.json")
        architectures = []
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                architectures = json.load(f).get("architectures") or []
        classify = any(a.endswith("ForSequenceClassification") for a in architectures)
    cls = GPTForSequenceClassification if classify else GPTLMHeadModel
    overrides = {"compute_dtype": dtype} if dtype else {}
    model = cls.from_pretrained(model_dir, **overrides)
    generation = getattr(model, "generation_config", None)
    if is_lora_model(model):
        model = merge_lora(model)
        model.__dict__["generation_config"] = generation
    model.set_train(False)
    return model, "sequence-classification" if classify else "causal-lm"


def _export(cell: nn.Cell, inputs: Sequence, path: str) -> None:
    """Write `cell` traced at `inputs` to `path` (*.mindir)."""
    with graph_mode():
        ms.export(cell, *inputs, file_name=path[:-len(".mindir")], file_format="MINDIR")
    if not os.path.isfile(path):
        raise RuntimeError(f"mindspore.export wrote no {path}")


def export_model(model_dir: str, output_dir: str, batch_sizes: Sequence[int] = (1,), max_length: Optional[int] = None,
                 windows: Sequence[int] = STATIC_WINDOWS, dtype: Optional[str] = None) -> dict:
    """Export `model_dir` (an HF / ms_gpt model directory, a hub name or a PEFT adapter directory) to `output_dir`.

    `batch_sizes`: the batch gears; `max_length`: the longest prompt + new tokens served (default n_positions; the
    cache has max_length + PREFILL_CHUNK slots, as generate()'s has n_positions + PREFILL_CHUNK); `windows`: the
    decode window gears (those below max_length; max_length itself is always one more gear); `dtype`: the compute
    dtype (float32 | float16 | bfloat16; None = config.json's). Returns the export_config written."""
    batch_sizes = _parse_ints(batch_sizes, "batch_sizes")
    windows = _parse_ints(windows, "windows")
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise ValueError(f"--dtype {dtype!r}: expected float32, float16 or bfloat16")
    started = time.perf_counter()
    model, task = _load(model_dir, dtype)
    config = model.config
    max_length = config.n_positions if max_length is None else int(max_length)
    if not 1 < max_length <= config.n_positions:
        raise ValueError(f"--max_length {max_length}: must be in [2, n_positions={config.n_positions}]")
    slots = max_length + PREFILL_CHUNK
    # a call attends to at most max_length - 1 slots (its last new token is never fed back), so the largest gear is
    # max_length, not the whole cache (generate()'s Ascend set ends at the whole cache: the same result, more reads)
    gears = sorted({w for w in windows if w < max_length} | {max_length})
    heads, head_dim, n_layer = config.n_head, config.head_dim, config.n_layer
    graphs = []
    with atomic_directory(output_dir, merge=True, last=(EXPORT_CONFIG,)) as tmp:
        for batch in batch_sizes:
            if task == "sequence-classification":
                name = f"classify_b{batch}.mindir"
                inputs = [_i32((batch, max_length)), _i32((batch, max_length))]
                _export(ClassifyGraph(model), inputs, os.path.join(tmp, name))
                graphs.append({"file": name, "kind": "classify", "batch_size": batch,
                               "inputs": [_spec("input_ids", (batch, max_length), "int32"),
                                          _spec("attention_mask", (batch, max_length), "int32")],
                               "outputs": [_spec("logits", (batch, config.num_labels), "float32")]})
                continue
            # generate()'s own cache (layout, names, dtype) for max_length positions: max_length + PREFILL_CHUNK slots
            kv = _KVCache(config.replace(n_positions=max_length), batch)
            cache = [t for pair in zip(kv.keys, kv.values) for t in pair]
            cache_specs = [_spec(t.name, t.shape, _DTYPE_NAMES[t.dtype], state=True) for t in cache]
            if [t.name for t in cache] != cache_names(batch, n_layer) or kv.slots != slots:
                raise RuntimeError("generation._KVCache no longer has the layout export_config.json describes")
            outputs = [_spec("greedy_ids", (batch,), "int64"), _spec("logits", (batch, config.vocab_size), "float32")]
            name = f"prefill_b{batch}.mindir"
            inputs = [_i32((batch, PREFILL_CHUNK)), _i32((batch, PREFILL_CHUNK)), _i32((batch, slots)), _i32((1,)),
                      _i32((1,))]
            _export(PrefillGraph(model), inputs + cache, os.path.join(tmp, name))
            graphs.append({"file": name, "kind": "prefill", "batch_size": batch,
                           "inputs": [_spec("input_ids", (batch, PREFILL_CHUNK), "int32"),
                                      _spec("position_ids", (batch, PREFILL_CHUNK), "int32"),
                                      _spec("cache_mask", (batch, slots), "int32"),
                                      _spec("cache_position", (1,), "int32"),
                                      _spec("last_index", (1,), "int32")] + cache_specs,
                           "outputs": outputs})
            for window in gears:
                name = f"decode_b{batch}_w{window}.mindir"
                inputs = [_i32((batch, 1)), _i32((batch, 1)), _i32((batch, window)), _i32((1,)), _i32((1,)),
                          Tensor(np.arange(window, dtype=np.int32))]
                _export(DecodeGraph(model), inputs + cache, os.path.join(tmp, name))
                graphs.append({"file": name, "kind": "decode", "batch_size": batch, "window": window,
                               "inputs": [_spec("input_ids", (batch, 1), "int32"),
                                          _spec("position_ids", (batch, 1), "int32"),
                                          _spec("cache_mask", (batch, window), "int32"),
                                          _spec("cache_position", (1,), "int32"),
                                          _spec("last_index", (1,), "int32"),
                                          _spec("window_slots", (window,), "int32")] + cache_specs,
                               "outputs": outputs})
        tokenizer_files = _save_tokenizer(model_dir, model, tmp)
        export_config = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "source": os.path.abspath(model_dir) if os.path.exists(model_dir) else model_dir,
            "model_type": config.model_type,
            "compute_dtype": config.compute_dtype,
            "vocab_size": config.vocab_size,
            "n_positions": config.n_positions,
            "n_layer": n_layer, "n_head": heads, "head_dim": head_dim,
            "num_labels": config.num_labels if task == "sequence-classification" else None,
            "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id,
            "generation_config": getattr(model, "generation_config", None),
            "generation_defaults": generation_config(model) if task == "causal-lm" else None,
            "batch_sizes": batch_sizes,
            "max_length": max_length,
            "prefill_chunk": PREFILL_CHUNK,
            "cache": None if task != "causal-lm" else {
                "slots": slots, "dtype": cache_specs[0]["dtype"], "shape_per_tensor": ["batch * n_head * slots", head_dim],
                "row": "(b * n_head + h) * slots + slot", "tensors": "key, value per layer: kv_cache.b{B}.{layer}.{kind}",
                "updated_in_place": True},
            "windows": gears if task == "causal-lm" else None,
            "tokenizer_files": tokenizer_files,
            "graphs": graphs,
            "export_seconds": None,
        }
        export_config["export_seconds"] = round(time.perf_counter() - started, 2)
        with open(os.path.join(tmp, EXPORT_CONFIG), "w", encoding="utf-8") as f:
            json.dump(export_config, f, indent=2)
            f.write("\n")
        stale = _previous_graphs(output_dir) - {g["file"] for g in graphs}
    for name in sorted(stale):  # an earlier export's gears that this one no longer has
        os.remove(os.path.join(output_dir, name))
    return export_config


def _previous_graphs(output_dir: str) -> set:
    """The graph files an earlier export_config.json in `output_dir` lists (present ones), else an empty set."""
    try:
        with open(os.path.join(output_dir, EXPORT_CONFIG), encoding="utf-8") as f:
            graphs = json.load(f).get("graphs") or []
    except (OSError, ValueError, AttributeError):
        return set()
    names = {g.get("file") for g in graphs if isinstance(g, dict)}
    return {n for n in names if isinstance(n, str) and os.path.basename(n) == n and n.endswith(".mindir")
            and os.path.isfile(os.path.join(output_dir, n))}


def _save_tokenizer(model_dir: str, model, directory: str) -> list[str]:
    """Copy the model's tokenizer files (the adapter's, else its base's) into `directory`; [] when it has none."""
    from .lora import is_adapter_dir, read_adapter_config
    from .tokenizers import load_tokenizer

    candidates = [model_dir, getattr(model, "name_or_path", None)]
    if is_adapter_dir(model_dir):
        candidates.append(read_adapter_config(model_dir).get("base_model_name_or_path"))
    for source in candidates:
        if not source:
            continue
        try:
            tokenizer = load_tokenizer(source)
        except (FileNotFoundError, ValueError, OSError):
            continue
        return sorted(os.path.basename(p) for p in tokenizer.save_pretrained(directory))
    return []
