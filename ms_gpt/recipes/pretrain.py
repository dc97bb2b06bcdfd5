"""The causal-LM pretraining recipe: a text corpus -> tokenizer -> random windows (`data.lm`) -> the engine around
`model.NextTokenLoss` -> checkpoint, held-out perplexity and a sample.

Must not import: the entry points ms_gpt.pretrain, ms_gpt.finetune, ms_gpt.generate, ms_gpt.chat, ms_gpt.evaluate,
ms_gpt.demo, ms_gpt.cli (entry points import recipes, never the reverse); ms_gpt.compat.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..config import GPTConfig, LoraArguments, TrainingArguments
from ..data.lm import RandomWindows, eval_batches, fetch_corpus, read_text, split_ids
from ..device import setup_device, startup_lines
from ..engine.trainer import Trainer
from ..model import GPTLMHeadModel, NextTokenLoss
from ..paths import resolve_path


@dataclass
class PretrainArguments(TrainingArguments, LoraArguments):
    """Pretraining options: data, tokenizer and model shape on top of the engine's TrainingArguments."""

    train_file: str = field(
        default="data/tinyshakespeare/input.txt", metadata={"help": "a local UTF-8 text file, or an http(s) URL"})
    tokenizer: str = field(
        default="char", metadata={"help": "char | gpt2 | gpt2:N (first N merges) | a tokenizer directory"})
    train_fraction: float = field(
        default=0.9, metadata={"help": "fraction of the corpus used for training (the rest is validation)"})
    block_size: int = field(default=32, metadata={"help": "tokens per training window"})
    model_type: str = field(
        default="gpt2", metadata={"help": "gpt2 | openai-gpt (network of a model built from scratch)"})
    n_layer: int = field(default=4, metadata={"help": "from scratch: transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "from scratch: attention heads"})
    n_embd: int = field(default=64, metadata={"help": "from scratch: hidden size"})
    dropout: float = field(default=0.0, metadata={"help": "dropout of residual, embedding and attention"})
    init_from: Optional[str] = field(
        default=None, metadata={"help": "an HF / ms_gpt model directory to continue from (None = from scratch)"})
    eval_perplexity: bool = field(default=True, metadata={
        "help": "at the end, score the whole validation split in non-overlapping block_size windows and report its "
                "perplexity (the code of python -m ms_gpt.evaluate; ~35 s for GPT-2 124M on 2 CPU cores)"})
    sample_tokens: int = field(
        default=300, metadata={"help": "characters / tokens sampled from the model at the end (0 = none)"})
    sample_prompt: str = field(default="\n", metadata={"help": "prompt of that sample"})
    sample_temperature: float = field(default=1.0, metadata={"help": "temperature of that sample"})
    sample_top_k: int = field(default=0, metadata={"help": "top-k of that sample (0 = off)"})


ALIASES = {"data_url": "train_file", "train_url": "output_dir", "max_iters": "max_steps",
           "batch_size": "per_device_train_batch_size", "eval_interval": "eval_steps", "lr": "learning_rate"}


def build_tokenizer(spec: str, text: str):
    from ..tokenizers import CharTokenizer, load_tokenizer

    if spec == "char":
        return CharTokenizer.from_text(text)
    return load_tokenizer(spec)


def pretrain(args: PretrainArguments, log=print) -> dict:
    """Run the recipe; returns a summary (losses, timings, paths, sample)."""
    device = setup_device(args.device_target, args.seed, args.emulate_ascend, args.ascend_precision_mode)
    for line in startup_lines(args.compute_dtype, device.policy):
        if device.is_main:
            log(line)
    phases = {}  # seconds per phase of the run, logged at the end
    mark = time.perf_counter()

    def phase(name):
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    path = args.train_file
    if path.startswith(("http://", "https://")):
        path = fetch_corpus(path, os.path.join(args.output_dir, "data"))
    text = read_text(resolve_path(path))
    if args.init_from:
        from ..tokenizers import load_tokenizer

        tokenizer = load_tokenizer(resolve_path(args.init_from))
        lm = GPTLMHeadModel.from_pretrained(resolve_path(args.init_from), compute_dtype=args.compute_dtype)
        phase("model_load")
    else:
        tokenizer = build_tokenizer(args.tokenizer, text)
        phase("tokenizer")
        config = GPTConfig(model_type=args.model_type, vocab_size=tokenizer.vocab_size, n_positions=args.block_size,
                           n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout,
                           embd_pdrop=args.dropout, attn_pdrop=args.dropout,
                           compute_dtype=args.compute_dtype)
        lm = GPTLMHeadModel(config)
        phase("model_init")
    from ..lora import apply_lora_from_args, save_model

    apply_lora_from_args(lm, args, args.init_from)  # lora_r > 0: adapters on init_from's model, the rest frozen
    if lm.config.n_positions < args.block_size:
        raise ValueError(f"block_size={args.block_size} exceeds the model's n_positions={lm.config.n_positions}")
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    phase("encode")
    train_ids, val_ids = split_ids(ids, args.train_fraction)
    n_params = sum(int(np.prod(p.shape)) for p in lm.trainable_params())
    if device.is_main:
        log(f"corpus {path}: {len(ids):,} tokens (vocab {tokenizer.vocab_size}); train {len(train_ids):,} / "
            f"val {len(val_ids):,}; model {n_params / 1e6:.3f} M parameters on {device.target}")
    source = RandomWindows(train_ids, args.block_size, args.per_device_train_batch_size, args.seed, device.rank,
                           device.world_size)
    eval_bs = args.per_device_eval_batch_size

    def make_eval(split_ids_, offset):
        # a fresh sampler per evaluation, seeded by the step, so evaluations are comparable and resumable
        def batches():
            return eval_batches(split_ids_, args.block_size, args.per_device_train_batch_size, args.eval_iters,
                                args.seed + offset + trainer.step, eval_bs)
        return batches

    loss_cell = NextTokenLoss(lm)
    trainer = Trainer(loss_cell, args, source, {"train": make_eval(train_ids, 1), "val": make_eval(val_ids, 2)},
                      tokenizer=tokenizer, run_config=asdict(args), device=device, export_model=lm,
                      metric_for_best_model="val_loss")
    phase("trainer_init")
    summary = trainer.train()
    phase("train")
    phases["first_step_with_compile"] = round(summary["compile_seconds"] or 0.0, 3)
    phases["evaluations"] = round(summary["eval_seconds"], 3)
    phases["checkpoints"] = round(summary["save_seconds"], 3)
    evals = [r for r in trainer.history if "val_loss" in r]
    summary.update(first_eval=evals[0] if evals else None, last_eval=evals[-1] if evals else None,
                   output_dir=args.output_dir)
    if device.is_main:
        lm.set_train(False)
        save_model(lm, args)  # a LoRA run writes the PEFT adapter (or, with merge_lora, the merged model)
        tokenizer.save_pretrained(args.output_dir)
        summary["loss_curve"] = os.path.join(args.output_dir, "loss.png")
        phase("save_pretrained")
        if args.eval_perplexity:
            # held-out perplexity of the whole validation split (non-overlapping windows of block_size), through the
            # evaluation code of `python -m ms_gpt.evaluate --split validation`; after the save, so nothing is lost
            from ..evaluation import bounded_batch_size, perplexity_of_ids

            held = perplexity_of_ids(lm, val_ids, args.block_size, args.block_size,
                                     batch_size=bounded_batch_size(lm, args.block_size, eval_bs),
                                     source="validation split")
            summary.update(val_perplexity=held["perplexity"], val_nll=held["nll"], val_tokens_scored=held["tokens"])
            log(f"validation split: perplexity {held['perplexity']:.4f} (nll {held['nll']:.4f}) over "
                f"{held['tokens']:,} tokens, windows of {args.block_size}")
            phase("val_perplexity")
        if args.sample_tokens > 0:
            summary["sample"] = sample_text(lm, tokenizer, args)
            phase("sample")
        summary["phase_seconds"] = phases
        log("phase seconds: " + json.dumps(phases))
    return summary


def sample_text(lm: GPTLMHeadModel, tokenizer, args: PretrainArguments) -> str:
    """Sample `sample_tokens` tokens; beyond the context window the model continues from the last half window
    (the char-GPT way), each chunk with the KV cache and the same shapes, so it compiles once."""
    from ..generation import generate

    ids = tokenizer.encode(args.sample_prompt) or [0]
    target = len(ids) + args.sample_tokens
    window = lm.config.n_positions
    context = max(1, window // 2)
    chunk = 0
    while len(ids) < target:
        prompt = ids[-context:]
        steps = min(window - len(prompt), target - len(ids))
        out = generate(lm, np.asarray([prompt], dtype=np.int32), max_new_tokens=steps, do_sample=True,
                       temperature=args.sample_temperature, top_k=args.sample_top_k, seed=args.seed + chunk,
                       eos_token_id=[])
        ids.extend(int(t) for t in out[0, len(prompt):])
        chunk += 1
    return tokenizer.decode(ids)
