"""The Chinese GPT-2 chit-chat recipe: its options, an optional short pretraining on Chinese text, vocabulary
trimming, dialogue fine-tuning, evaluation and a scripted chat.

Reading, splitting and encoding the conversations is `data.dialogue`; batching is `data.padding`. Every conversation
becomes `[CLS] t1 [SEP] t2 [SEP] ...` (`ms_gpt.dialogue.encode_dialogue`, the format the chat REPL uses) and is
trained as a language-model sequence: labels = input_ids, padding = -100 (HF's contract, shifted inside the loss).
The held-out split groups conversations by their first turn, so a prompt seen in training never appears among the
held-out prompts.

Must not import: the entry points ms_gpt.pretrain, ms_gpt.finetune, ms_gpt.generate, ms_gpt.chat, ms_gpt.evaluate,
ms_gpt.demo, ms_gpt.cli (entry points import recipes, never the reverse); ms_gpt.compat.

`python -m ms_gpt.finetune --task dialogue --config configs/gpt2_chitchat_zh.yaml` runs `train_dialogue`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from ..config import GPTConfig, LoraArguments, TrainingArguments, parse_config
from ..data.dialogue import LONG_DIALOGUES, load_dialogue_data, text_stream
from ..data.padding import POLICIES, EpochBatches, eval_batches, lm_rows, resolve_policy
from ..paths import atomic_write, resolve_path


@dataclass
class DialogueArguments(TrainingArguments, LoraArguments):
    """Dialogue fine-tuning options on top of the engine's TrainingArguments."""

    task: str = field(default="dialogue", metadata={"help": "task format of the data"})
    train_files: list[str] = field(
        default_factory=lambda: ["data/chinese-chitchat"],
        metadata={"help": "chit-chat *.yml files or directories holding them"})
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "HF / ms_gpt model dir; None = a new small GPT-2 (BERT vocab)"})
    tokenizer: str = field(
        default="bert-base-chinese",
        metadata={"help": "tokenizer of a model trained from scratch (bundled name or directory)"})
    trim_vocab: bool = field(
        default=False,
        metadata={"help": "from scratch: keep only the BERT tokens the data uses (a much cheaper output layer)"})
    max_seq_length: int = field(default=64, metadata={"help": "tokens per example after truncation"})
    long_dialogues: str = field(
        default="truncate",
        metadata={"help": "over-long dialogues: drop | truncate (keep the leading whole turns that fit)"})
    padding: str = field(
        default="auto",
        metadata={"help": "auto (max_length on Ascend or with accumulation, else data.padding.AUTO_POLICY) | "
                          + " | ".join(p for p in POLICIES if p != "auto")})
    pad_to_multiple_of: int = field(
        default=16, metadata={"help": "dynamic padding rounds the batch length up to this (one dynamic-shape graph)"})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "fraction of the conversations held out for evaluation"})
    split_seed: int = field(
        default=0, metadata={"help": "seed of the held-out split only (runs with other seeds stay comparable)"})
    # model shape when training from scratch
    n_positions: int = field(
        default=64,
        metadata={"help": "from scratch: positions (raised to max_seq_length / pretrain_block_size when smaller)"})
    n_layer: int = field(default=4, metadata={"help": "from scratch: transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "from scratch: attention heads"})
    n_embd: int = field(default=128, metadata={"help": "from scratch: hidden size"})
    dropout: float = field(default=0.1, metadata={"help": "dropout of residual, embedding and attention"})
    # optional pretraining on plain Chinese text (one document per line) before the dialogues
    pretrain_files: list[str] = field(
        default_factory=list,
        metadata={"help": "plain-text files (one document per line) to pretrain on before the dialogues"})
    pretrain_max_lines: int = field(default=0, metadata={"help": "pretraining lines read (0 = every line)"})
    pretrain_steps: int = field(default=300, metadata={"help": "steps of that pretraining"})
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "learning rate of that pretraining"})
    pretrain_block_size: int = field(default=0, metadata={"help": "pretraining window length (0 = max_seq_length)"})
    pretrain_eval_iters: int = field(default=10, metadata={"help": "batches per evaluation during that pretraining"})
    # scripted chat evaluation on held-out first turns
    chat_samples: int = field(
        default=8, metadata={"help": "held-out first turns answered in the scripted chat evaluation"})
    chat_max_new_tokens: int = field(default=24, metadata={"help": "max new tokens per reply in the chat evaluation"})
    chat_repetition_penalty: float = field(default=1.2, metadata={"help": "repetition penalty in the chat evaluation"})
    # fine-tuning defaults: a few epochs rather than a fixed step count
    max_steps: int = -1
    num_train_epochs: float = 5.0
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 32
    eval_steps: int = 0
    logging_steps: int = 10
    output_dir: str = "runs/gpt2_chitchat_zh"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task != "dialogue":
            raise ValueError(f"task={self.task!r}; this recipe trains task 'dialogue'")
        if self.long_dialogues not in LONG_DIALOGUES:
            raise ValueError(f"long_dialogues={self.long_dialogues!r}; expected one of {LONG_DIALOGUES}")
        if self.padding not in POLICIES:
            raise ValueError(f"padding={self.padding!r}; expected one of {POLICIES}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for name in ("max_seq_length", "pad_to_multiple_of", "per_device_train_batch_size",
                     "per_device_eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_seq_length < 3:
            raise ValueError(f"max_seq_length={self.max_seq_length} leaves no room for [CLS] turn [SEP]")
        if not self.train_files:
            raise ValueError("train_files is empty: give the chit-chat *.yml files or their directory")


ALIASES = {"data_url": "train_files", "train_url": "output_dir", "batch_size": "per_device_train_batch_size",
           "lr": "learning_rate", "train_file": "train_files", "pretrain_file": "pretrain_files",
           "model": "model_name_or_path", "init_from": "model_name_or_path"}


# ---- pretraining on plain text -----------------------------------------------------------------------------------
def pretrain_text(lm, tokenizer, ids: np.ndarray, args: DialogueArguments, device, log=print) -> dict:
    """Next-token pretraining of `lm` on the id stream `ids` (see `text_stream`); saves it to output_dir/pretrain.
    On a resumed run a finished pretraining is loaded instead of repeated."""
    from ..data.lm import RandomWindows, eval_batches as window_batches, split_ids
    from ..engine.trainer import Trainer
    from ..model import NextTokenLoss

    out_dir = os.path.join(args.output_dir, "pretrain")
    done = os.path.join(out_dir, "pretrain_results.json")
    if args.resume_from_checkpoint and os.path.isfile(done):
        from ..model import GPTLMHeadModel

        from ..checkpoint import assign_weights

        trained = GPTLMHeadModel.from_pretrained(out_dir)
        assign_weights({p.name: p for p in lm.get_parameters()}, {q.name: q for q in trained.get_parameters()})
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    block = args.pretrain_block_size or args.max_seq_length
    if block > lm.config.n_positions:
        raise ValueError(f"pretrain_block_size={block} exceeds the model's n_positions={lm.config.n_positions}")
    train_ids, val_ids = split_ids(ids, 0.95)
    if len(val_ids) <= block + 1:
        raise ValueError(f"pretrain_files give {len(ids)} tokens: too few for a held-out part with block {block}")
    pargs = dataclasses.replace(args, output_dir=out_dir, max_steps=args.pretrain_steps, eval_steps=0,
                                learning_rate=args.pretrain_learning_rate,
                                resume_from_checkpoint="auto" if args.resume_from_checkpoint else None)
    source = RandomWindows(train_ids, block, args.per_device_train_batch_size, args.seed, device.rank,
                           device.world_size)

    def val_batches():
        return window_batches(val_ids, block, args.per_device_train_batch_size, args.pretrain_eval_iters,
                              args.seed + 1, args.per_device_train_batch_size)

    trainer = Trainer(NextTokenLoss(lm), pargs, source, {"val": val_batches}, tokenizer=tokenizer,
                      run_config=asdict(pargs), device=device, export_model=lm)
    before = trainer.evaluate()["val_loss"]
    t1 = time.perf_counter()
    summary = trainer.train()
    result = {"pretrain_tokens": int(len(ids)), "pretrain_val_loss_before": before,
              "pretrain_val_loss_after": [r["val_loss"] for r in trainer.history if "val_loss" in r][-1],
              "pretrain_steps": summary["step"],
              "pretrain_seconds": time.perf_counter() - t1,
              "pretrain_tokens_per_second": summary["tokens_per_second"]}
    if device.is_main:
        log(f"pretraining: {len(ids):,} tokens, val loss {before:.3f} -> {result['pretrain_val_loss_after']:.3f} "
            f"in {summary['step']} steps")
        lm.set_train(False)
        lm.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        with atomic_write(done) as f:
            json.dump(result, f, indent=1)
    return result


# ---- model -------------------------------------------------------------------------------------------------------
def trim_vocabulary(tokenizer, used_ids: np.ndarray):
    """(a BertTokenizer over the special tokens + `used_ids` in their original order, old id -> new id array).

    WordPiece picks the longest vocabulary match, so a vocabulary holding every piece of a text's tokenization
    tokenizes that text exactly as before; a small model then spends far less time on the output layer.
    """
    from ..tokenizers import BertTokenizer

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    keep = set(int(i) for i in used_ids) | set(tokenizer.all_special_ids)
    kept = [i for i in range(len(tokens)) if i in keep]
    mapping = np.full(len(tokens), -1, dtype=np.int32)
    mapping[kept] = np.arange(len(kept), dtype=np.int32)
    return BertTokenizer([tokens[i] for i in kept], do_lower_case=tokenizer.do_lower_case), mapping


def new_model(args: DialogueArguments, tokenizer):
    from ..model import GPTLMHeadModel

    n_positions = max(args.n_positions, args.max_seq_length, args.pretrain_block_size)
    config = GPTConfig(model_type="gpt2", vocab_size=len(tokenizer), n_positions=n_positions, n_embd=args.n_embd,
                       n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout, embd_pdrop=args.dropout,
                       attn_pdrop=args.dropout, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.sep_token_id,
                       compute_dtype=args.compute_dtype)
    return GPTLMHeadModel(config)


def check_model(lm, tokenizer, args: DialogueArguments) -> None:
    if len(tokenizer) > lm.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{lm.config.vocab_size}")
    if args.max_seq_length > lm.config.n_positions:
        raise ValueError(f"max_seq_length={args.max_seq_length} exceeds the model's n_positions="
                         f"{lm.config.n_positions}")


def chat_evaluation(lm, tokenizer, heldout_turns: list[list[str]], args: DialogueArguments) -> dict:
    """Greedy replies to the first turn of the first `chat_samples` held-out conversations, with reply metrics of
    the model and of the reference replies."""
    from ..dialogue import ChatSession, reply_metrics

    session = ChatSession(lm, tokenizer, max_history=1, max_new_tokens=args.chat_max_new_tokens,
                          repetition_penalty=args.chat_repetition_penalty)
    samples = []
    for turns in heldout_turns[:args.chat_samples]:
        session.reset()
        samples.append({"user": turns[0], "reference": turns[1], "reply": session.reply(turns[0])})
    return {"chat_samples": samples,
            "reply_metrics": reply_metrics([s["reply"] for s in samples]),
            "reference_reply_metrics": reply_metrics([s["reference"] for s in samples])}


# ---- the recipe --------------------------------------------------------------------------------------------------
def run_dialogue(args: DialogueArguments, log=print) -> dict:
    """Pretrain (optional), fine-tune, evaluate, chat; writes the model, tokenizer and all_results.json to
    output_dir and returns the results."""
    from ..device import setup_device, startup_lines
    from ..engine.trainer import Trainer
    from ..model import GPTLMHeadModel
    from ..tokenizers import load_tokenizer

    t_start = time.perf_counter()
    device = setup_device(args.device_target, args.seed, args.emulate_ascend, args.ascend_precision_mode)
    for line in startup_lines(args.compute_dtype, device.policy):
        if device.is_main:
            log(line)
    # gradient accumulation stacks micro-batches, which therefore need one shape
    policy = resolve_policy(args.padding, device.static_shapes or args.gradient_accumulation_steps > 1)
    if policy != "max_length" and args.gradient_accumulation_steps > 1:
        raise ValueError(f"padding={policy} cannot be combined with gradient_accumulation_steps > 1 (micro-batches "
                         "must share a shape); use padding=max_length or auto")
    source_dir = resolve_path(args.model_name_or_path) if args.model_name_or_path else None
    if source_dir and args.trim_vocab:
        raise ValueError("trim_vocab applies to a model trained from scratch; a pretrained model keeps its vocabulary")
    tokenizer = load_tokenizer(source_dir or resolve_path(args.tokenizer))
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(f"the dialogue format needs [CLS], [SEP] and [PAD]; the {type(tokenizer).__name__} of "
                         f"{source_dir or args.tokenizer} lacks one (use a BERT vocabulary)")
    data = load_dialogue_data(tokenizer, args.train_files, args.validation_fraction, args.split_seed,
                              args.max_seq_length, args.long_dialogues)
    stream = None
    if args.pretrain_files:
        stream = text_stream(tokenizer, args.pretrain_files, args.pretrain_max_lines, args.split_seed)
    if args.trim_vocab:
        used = np.unique(np.concatenate(data.train + data.heldout + ([stream] if stream is not None else [])))
        tokenizer, mapping = trim_vocabulary(tokenizer, used)
        data.train = [mapping[x] for x in data.train]
        data.heldout = [mapping[x] for x in data.heldout]
        stream = mapping[stream] if stream is not None else None
    from ..dialogue import DIALOGUE_CHAT_TEMPLATE

    tokenizer.chat_template = DIALOGUE_CHAT_TEMPLATE  # saved with the tokenizer: `ms_gpt.serve` chats through it
    lm = GPTLMHeadModel.from_pretrained(source_dir, compute_dtype=args.compute_dtype) if source_dir \
        else new_model(args, tokenizer)
    check_model(lm, tokenizer, args)
    from ..lora import apply_lora_from_args

    apply_lora_from_args(lm, args, args.model_name_or_path)  # lora_r > 0: adapters on the given model
    n_params = sum(int(np.prod(p.shape)) for p in lm.trainable_params())
    if device.is_main:
        s = data.stats
        log(f"dialogues: {s['conversations']} read ({s['skipped_invalid']} skipped as invalid), "
            f"{s['dropped_too_long']} too long dropped, {s['truncated']} truncated; train {s['train']} / held-out "
            f"{s['heldout']}; padding {policy}; vocabulary {len(tokenizer)}; "
            f"model {n_params / 1e6:.2f} M parameters on {device.target}")
    results: dict[str, Any] = {"data": data.stats, "vocab_size": len(tokenizer), "n_parameters": n_params,
                               "device": device.target, "padding": policy}
    if stream is not None:
        results.update(pretrain_text(lm, tokenizer, stream, args, device, log))

    global_batch = args.per_device_train_batch_size * device.world_size * args.gradient_accumulation_steps
    steps_per_epoch = max(1, len(data.train) // global_batch)
    total_steps = args.max_steps if args.max_steps > 0 else int(math.ceil(args.num_train_epochs * steps_per_epoch))
    source = EpochBatches(lm_rows(data.train), args.per_device_train_batch_size, policy, args.max_seq_length,
                          tokenizer.pad_token_id, args.seed, lm_labels=True, rank=device.rank,
                          world_size=device.world_size, multiple=args.pad_to_multiple_of)
    heldout = list(eval_batches(lm_rows(data.heldout), args.per_device_eval_batch_size, policy, args.max_seq_length,
                                tokenizer.pad_token_id, lm_labels=True, multiple=args.pad_to_multiple_of,
                                top_up_single=False))
    trainer = Trainer(lm, args, source, {"heldout": lambda: heldout}, tokenizer=tokenizer, run_config=asdict(args),
                      total_steps=total_steps, metric_for_best_model="heldout_loss", device=device,
                      dynamic_shapes=policy == "dynamic")
    before = trainer.evaluate()["heldout_loss"]
    t_train = time.perf_counter()
    summary = trainer.train()
    train_seconds = time.perf_counter() - t_train
    after = [r["heldout_loss"] for r in trainer.history if "heldout_loss" in r][-1]  # the trainer's final eval
    from ..evaluation import bounded_batch_size, sequence_perplexity  # the code of `python -m ms_gpt.evaluate`

    longest = max(len(d) for d in data.heldout)
    held = sequence_perplexity(lm, data.heldout,
                               batch_size=bounded_batch_size(lm, longest, args.per_device_eval_batch_size))
    results.update(heldout_loss_before=before, heldout_loss_after=after, heldout_perplexity_after=held["perplexity"],
                   heldout_tokens_scored=held["tokens"],
                   train_steps=summary["step"], train_epochs=summary["step"] * global_batch / len(data.train),
                   train_seconds=train_seconds, compile_seconds=summary["compile_seconds"],
                   tokens_per_second=summary["tokens_per_second"], train_compilations=trainer.train_compilations,
                   eval_compilations=trainer.eval_compilations, output_dir=args.output_dir,
                   **{k: summary[k] for k in ("compute_dtype", "loss_scale", "loss_scale_good_steps",
                                              "execution_policy") if k in summary})
    if device.is_main:
        log(f"held-out dialogue loss {before:.3f} -> {after:.3f} after {summary['step']} steps "
            f"({train_seconds:.1f} s)")
        lm.set_train(False)
        from ..lora import save_model

        save_model(lm, args)
        tokenizer.save_pretrained(args.output_dir)
        if args.chat_samples > 0:
            t_chat = time.perf_counter()
            results.update(chat_evaluation(lm, tokenizer, data.heldout_turns, args))
            results["chat_seconds"] = time.perf_counter() - t_chat
        results["total_seconds"] = time.perf_counter() - t_start
        path = os.path.join(args.output_dir, "all_results.json")
        with atomic_write(path) as f:
            json.dump(results, f, indent=1, ensure_ascii=False)
    return results


def train_dialogue(argv: list[str]) -> dict:
    """Entry point of `python -m ms_gpt.finetune --task dialogue ...`: argv is the whole option list."""
    args = parse_config(DialogueArguments, argv, ALIASES)
    return run_dialogue(args)
