"""Supervised fine-tuning with the GPT-1 task formats: data -> task format -> padding policy -> trainer -> best model.

`finetune(args)` runs one recipe and returns its results (also written to output_dir/all_results.json as
eval_accuracy / test_accuracy / ..., HF style). The default trainer is ms_gpt's engine (compiled step);
`trainer: mindnlp` drives the same model with mindnlp's Trainer in PyNative mode through ms_gpt.compat.mindnlp.

Must not import: the entry points ms_gpt.pretrain, ms_gpt.finetune, ms_gpt.generate, ms_gpt.chat, ms_gpt.evaluate,
ms_gpt.demo, ms_gpt.cli.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..config import GPTConfig, LoraArguments, TrainingArguments
from ..data.padding import EpochBatches, collate, eval_batches, padded_length, real_rows, resolve_policy
from ..data.tasks import (TASKS, Encoded, TaskData, TaskFormatter, add_task_tokens, check_task, load_records,
                          records_to_examples)
from ..device import setup_device, startup_lines
from ..paths import atomic_write, resolve_path

STRATEGIES = ("no", "steps", "epoch")
TRAINERS = ("ms_gpt", "mindnlp")
# text columns read when neither text_column nor text_columns is given
DEFAULT_TEXT_COLUMNS = {"classification": ["text"], "entailment": ["premise", "hypothesis"],
                        "similarity": ["sentence1", "sentence2"], "multiple_choice": ["context", "choices"]}


@dataclass
class FinetuneArguments(TrainingArguments, LoraArguments):
    """run_glue-style options on top of the engine's TrainingArguments (defaults: the GPT-1 paper's recipe).
    `--task dialogue` trains the dialogue recipe instead; `--task dialogue --help` lists its options."""

    task: str = field(
        default="classification",
        metadata={"help": "task format: classification | entailment | similarity | multiple_choice | dialogue"})
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "HF dir / hub name / ms_gpt checkpoint; None = from scratch"})
    tokenizer: str = field(
        default="gpt2",
        metadata={"help": "from scratch (or a checkpoint without one): char | gpt2 | a tokenizer directory"})
    model_type: str = field(default="gpt2", metadata={"help": "from scratch: gpt2 | openai-gpt"})
    n_layer: int = field(default=2, metadata={"help": "from scratch: transformer blocks"})
    n_head: int = field(default=2, metadata={"help": "from scratch: attention heads"})
    n_embd: int = field(default=64, metadata={"help": "from scratch: hidden size"})
    dropout: Optional[float] = field(
        default=None, metadata={"help": "dropout (None = the checkpoint's, 0.1 from scratch)"})
    train_file: Optional[str] = field(
        default=None, metadata={"help": "csv/tsv/json/jsonl/txt(.bz2/.gz), \"a.txt,b.txt\", aclImdb .tar.gz or URL"})
    validation_file: Optional[str] = field(
        default=None, metadata={"help": "validation data (same formats as train_file)"})
    test_file: Optional[str] = field(default=None, metadata={"help": "test data (same formats as train_file)"})
    dataset_name: Optional[str] = field(
        default=None, metadata={"help": "a hub dataset read through mindnlp's load_dataset (online)"})
    dataset_validation_split: str = field(
        default="validation", metadata={"help": "split of dataset_name used for validation"})
    dataset_test_split: Optional[str] = field(
        default=None, metadata={"help": "split of dataset_name used for testing (None = no test)"})
    text_column: Optional[str] = field(default=None, metadata={"help": "column holding the text (one-text tasks)"})
    text_columns: Optional[list[str]] = field(
        default=None, metadata={"help": "columns holding the texts, comma-separated (two-text tasks, multiple choice)"})
    label_column: str = field(default="label", metadata={"help": "column holding the label"})
    label_list: Optional[list[str]] = field(
        default=None, metadata={"help": "the label set in index order; None = sorted labels of train_file"})
    drop_labels: Optional[list[str]] = field(
        default=None, metadata={"help": "rows with these labels are skipped (e.g. \"plot\" in rotten tomatoes)"})
    max_seq_length: int = field(default=128, metadata={"help": "tokens per example after truncation"})
    padding: str = field(
        default="auto", metadata={"help": "batch padding policy: max_length | dynamic | bucket | auto"})
    lm_coef: float = field(default=0.0, metadata={"help": "auxiliary LM loss weight (GPT-1: 0.5)"})
    train_subset_fraction: float = field(
        default=1.0, metadata={"help": "seeded random subset of the training examples"})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "use at most this many training examples"})
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "use at most this many evaluation examples"})
    validation_split: float = field(
        default=0.0,
        metadata={"help": "fraction of train_file held out for validation when no validation_file is given"})
    test_split: float = field(
        default=0.0, metadata={"help": "fraction of train_file held out for testing when no test_file is given"})
    evaluation_strategy: str = field(
        default="epoch", metadata={"help": "when to evaluate: no | steps (every eval_steps) | epoch"})
    save_strategy: str = field(
        default="epoch", metadata={"help": "when to checkpoint: no | steps (every save_steps) | epoch"})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "reload the best checkpoint (metric_for_best_model) when training ends"})
    metric_for_best_model: str = field(
        default="accuracy", metadata={"help": "metric that picks the best checkpoint: accuracy | f1 | loss"})
    trainer: str = field(
        default="ms_gpt",
        metadata={"help": "training loop: ms_gpt (compiled engine) | mindnlp (mindnlp's Trainer, PyNative)"})
    # engine defaults changed for fine-tuning (GPT-1 paper: lr 6.25e-5, batch 32, 3 epochs, linear decay)
    max_steps: int = -1
    num_train_epochs: float = 3.0
    per_device_train_batch_size: int = 32
    learning_rate: float = 6.25e-5
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.002
    weight_decay: float = 0.01
    logging_steps: int = 10


ALIASES = {"data_url": "train_file", "train_url": "output_dir", "batch_size": "per_device_train_batch_size",
           "lr": "learning_rate", "eval_strategy": "evaluation_strategy", "epochs": "num_train_epochs"}


def check_arguments(args: FinetuneArguments) -> None:
    check_task(args.task)
    resolve_policy(args.padding, False)
    for name in ("evaluation_strategy", "save_strategy"):
        if getattr(args, name) not in STRATEGIES:
            raise ValueError(f"{name}={getattr(args, name)!r}; expected one of {', '.join(STRATEGIES)}")
    if args.trainer not in TRAINERS:
        raise ValueError(f"trainer={args.trainer!r}; expected one of {', '.join(TRAINERS)}")
    if args.lora_r and args.trainer != "ms_gpt":
        raise ValueError(f"lora_r={args.lora_r} trains a LoRA adapter with ms_gpt's engine; use trainer: ms_gpt")
    if args.metric_for_best_model.removeprefix("eval_") not in ("accuracy", "f1", "loss"):
        raise ValueError(f"metric_for_best_model={args.metric_for_best_model!r}; expected accuracy, f1 or loss")
    if not args.train_file and not args.dataset_name:
        raise ValueError("give train_file (a local file or URL) or dataset_name (a hub dataset)")
    for name in ("train_subset_fraction",):
        if not 0.0 < getattr(args, name) <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {getattr(args, name)}")
    for name in ("validation_split", "test_split"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(args, name)}")
    if args.validation_split + args.test_split >= 1.0:
        raise ValueError("validation_split + test_split leave no training examples")
    if args.lm_coef < 0:
        raise ValueError(f"lm_coef must be >= 0, got {args.lm_coef}")
    if args.load_best_model_at_end and args.evaluation_strategy != "no" and args.trainer == "ms_gpt":
        if args.save_strategy != args.evaluation_strategy:
            raise ValueError(f"load_best_model_at_end needs save_strategy == evaluation_strategy, got "
                             f"{args.save_strategy!r} and {args.evaluation_strategy!r}")
        if args.save_strategy == "steps" and (not args.eval_steps or args.save_steps % args.eval_steps):
            raise ValueError(f"load_best_model_at_end needs save_steps ({args.save_steps}) to be a multiple of "
                             f"eval_steps ({args.eval_steps})")


# ---- data -------------------------------------------------------------------------------------------------------
def load_task_data(args: FinetuneArguments) -> dict[str, TaskData]:
    """train / validation / test TaskData (validation and test may be absent), subset and split by seed."""
    cache_dir = os.path.join(args.output_dir, "data")
    columns = args.text_columns or ([args.text_column] if args.text_column else DEFAULT_TEXT_COLUMNS[args.task])

    def read(spec: str, split: str, label_names: Optional[list[str]]) -> TaskData:
        source, records = load_records(spec, split, cache_dir)
        return records_to_examples(records, args.task, source, columns, args.label_column, label_names,
                                   args.drop_labels or ())

    train_spec = args.train_file or f"hub:{args.dataset_name}"
    train = read(train_spec, "train", list(args.label_list) if args.label_list else None)
    labels = train.label_names if args.task != "multiple_choice" else None
    splits: dict[str, TaskData] = {}
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train.examples))
    held = {}
    cut = 0
    for name, fraction in (("test", args.test_split), ("validation", args.validation_split)):
        count = int(round(fraction * len(order)))
        if count:
            held[name] = TaskData([train.examples[i] for i in order[cut:cut + count]], train.label_names,
                                  f"{train.source} ({name}_split)")
            cut += count
    rest = order[cut:]
    if args.train_subset_fraction < 1.0:
        rest = rest[:max(1, int(round(args.train_subset_fraction * len(rest))))]
    if args.max_train_samples:
        rest = rest[:args.max_train_samples]
    splits["train"] = TaskData([train.examples[i] for i in np.sort(rest)], train.label_names, train.source)
    for name, file_spec, hub_split in (("validation", args.validation_file, args.dataset_validation_split),
                                       ("test", args.test_file, args.dataset_test_split)):
        if file_spec:
            splits[name] = read(file_spec, name, labels)
        elif name in held:
            splits[name] = held[name]
        elif args.dataset_name and not args.train_file and hub_split:
            splits[name] = read(f"hub:{args.dataset_name}", hub_split, labels)
        if name in splits and args.max_eval_samples:
            splits[name].examples = splits[name].examples[:args.max_eval_samples]
    return splits


# ---- model and tokenizer ----------------------------------------------------------------------------------------
def _model_class(task: str):
    from ..model import GPTDoubleHeadsModel, GPTForSequenceClassification

    return GPTDoubleHeadsModel if task == "multiple_choice" else GPTForSequenceClassification


def _checkpoint_directory(path: str) -> Optional[str]:
    if os.path.isdir(path):
        return path
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path))
    from ..checkpoint import resolve_hub  # hub names: the checkpoint module owns download and cache

    return resolve_hub(path)


def build_model(args: FinetuneArguments, num_labels: int, texts: list[str]):
    """(model, tokenizer): loaded from model_name_or_path or built from scratch, with the task tokens added."""
    from ..tokenizers import CharTokenizer, load_tokenizer

    overrides = dict(num_labels=num_labels, lm_coef=args.lm_coef)
    if args.dropout is not None:
        overrides.update(resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout,
                         summary_first_dropout=args.dropout)
    cls = _model_class(args.task)
    if args.model_name_or_path:
        path = resolve_path(args.model_name_or_path)
        model = cls.from_pretrained(path, compute_dtype=args.compute_dtype, **overrides)
        try:
            tokenizer = load_tokenizer(_checkpoint_directory(path))
        except (FileNotFoundError, ValueError):  # a bare checkpoint: fall back to the named tokenizer
            tokenizer = load_tokenizer(resolve_path(args.tokenizer))
            if tokenizer.vocab_size > model.config.vocab_size:
                raise ValueError(f"{args.model_name_or_path} has no tokenizer files and tokenizer={args.tokenizer!r} "
                                 f"has {tokenizer.vocab_size} ids for a model of vocab_size "
                                 f"{model.config.vocab_size}; set tokenizer to the model's tokenizer directory")
        if model.config.n_positions < args.max_seq_length:
            raise ValueError(f"max_seq_length={args.max_seq_length} exceeds the model's "
                             f"n_positions={model.config.n_positions}")
    else:
        tokenizer = CharTokenizer.from_text("".join(texts)) if args.tokenizer == "char" \
            else load_tokenizer(resolve_path(args.tokenizer))
        dropout = 0.1 if args.dropout is None else args.dropout
        config = GPTConfig(model_type=args.model_type, vocab_size=tokenizer.vocab_size,
                           n_positions=args.max_seq_length, n_embd=args.n_embd, n_layer=args.n_layer,
                           n_head=args.n_head, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                           summary_first_dropout=dropout, num_labels=num_labels, lm_coef=args.lm_coef,
                           compute_dtype=args.compute_dtype)
        model = cls(config)
    add_task_tokens(tokenizer)
    grown = tokenizer.vocab_size != model.config.vocab_size
    model.resize_token_embeddings(tokenizer.vocab_size)
    if args.lora_r:
        from ..lora import HEADS, apply_lora_from_args

        # the task head trains (PEFT's modules_to_save); so does the token table when task tokens were added
        saved = HEADS[cls.__name__] + (["wte" if model.config.is_gpt2 else "tokens_embed"] if grown else [])
        apply_lora_from_args(model, args, args.model_name_or_path, saved)
    return model, tokenizer


# ---- metrics ----------------------------------------------------------------------------------------------------
def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """accuracy, plus F1 of class 1 when there are two classes."""
    predictions = logits.argmax(-1)
    out = {"accuracy": float((predictions == labels).mean())}
    if num_labels == 2:
        tp = int(((predictions == 1) & (labels == 1)).sum())
        fp = int(((predictions == 1) & (labels == 0)).sum())
        fn = int(((predictions == 0) & (labels == 1)).sum())
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


def _all_texts(splits: dict[str, TaskData]) -> list[str]:
    return [t for data in splits.values() for ex in data.examples for t in ex.texts + ex.choices]


# ---- the recipe -------------------------------------------------------------------------------------------------
def finetune(args: FinetuneArguments, log=print) -> dict:
    """Run the recipe; returns the results written to output_dir/all_results.json."""
    check_arguments(args)
    device = setup_device(args.device_target, args.seed, args.emulate_ascend, args.ascend_precision_mode)
    for line in startup_lines(args.compute_dtype, device.policy):
        if device.is_main:
            log(line)
    splits = load_task_data(args)
    train_data = splits["train"]
    mc = args.task == "multiple_choice"
    num_labels = 1 if mc else len(train_data.label_names)
    model, tokenizer = build_model(args, num_labels, _all_texts(splits) if args.tokenizer == "char" else [])
    if not mc:
        model.config.extra["id2label"] = {str(i): n for i, n in enumerate(train_data.label_names)}
        model.config.extra["label2id"] = {n: i for i, n in enumerate(train_data.label_names)}
    formatter = TaskFormatter(tokenizer, args.task, args.max_seq_length)
    encoded = {name: formatter.encode(data) for name, data in splits.items()}
    policy = resolve_policy(args.padding, device.static_shapes)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if device.is_main:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in encoded.items())
        n_params = sum(int(np.prod(p.shape)) for p in model.trainable_params())
        log(f"{args.task}: {sizes} examples; labels {train_data.label_names}; padding {policy}; model "
            f"{n_params / 1e6:.2f} M parameters ({model.config.model_type}) on {device.target}")
    layout = dict(policy=policy, max_length=args.max_seq_length, pad_id=pad_id, multiple_choice=mc,
                  lm_labels=mc and args.lm_coef > 0)
    if args.trainer == "mindnlp":
        results = _train_with_mindnlp(args, model, encoded, layout, num_labels)
    else:
        results = _train_with_engine(args, model, tokenizer, encoded, layout, num_labels, device)
    if device.is_main:
        model.set_train(False)
        from ..lora import save_model

        save_model(model, args)
        tokenizer.save_pretrained(args.output_dir)
        results.setdefault("compute_dtype", model.config.compute_dtype)  # the mindnlp trainer's runs too
        results.update(task=args.task, trainer=args.trainer, padding=policy,
                       train_samples=len(encoded["train"]), label_names=train_data.label_names)
        with atomic_write(os.path.join(args.output_dir, "all_results.json")) as f:
            json.dump(results, f, indent=2)
        log("results: " + ", ".join(f"{k}={v:.4f}" for k, v in results.items() if isinstance(v, float)))
    return results


def _train_with_engine(args, model, tokenizer, encoded: dict[str, Encoded], layout: dict, num_labels: int,
                       device) -> dict:
    from ..engine.trainer import Trainer

    source = EpochBatches(encoded["train"], args.per_device_train_batch_size, layout["policy"],
                          layout["max_length"], layout["pad_id"], args.seed, layout["multiple_choice"],
                          layout["lm_labels"], device.rank, device.world_size)
    steps_per_epoch = max(1, source.steps_per_epoch // args.gradient_accumulation_steps)
    total = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    interval = {"no": 0, "epoch": steps_per_epoch}
    engine_args = dataclasses.replace(
        args, max_steps=total,
        eval_steps=interval.get(args.evaluation_strategy, args.eval_steps),
        save_steps=interval.get(args.save_strategy, args.save_steps))

    def make_eval(data: Encoded):
        return lambda: eval_batches(data, args.per_device_eval_batch_size, **layout)

    eval_sets = {"validation": make_eval(encoded["validation"])} if "validation" in encoded else {}
    labels_key = "mc_labels" if layout["multiple_choice"] else "labels"

    def compute_metrics(name, host, batches):
        logits = np.concatenate([h[-1] for h in host])
        labels = np.concatenate([b[labels_key] for b in batches])
        real = real_rows(labels)  # without the rows that top up the last batch
        logits, labels = logits[real], labels[real]
        return {f"{name}_{k}": v for k, v in classification_metrics(logits, labels, num_labels).items()}

    metric = args.metric_for_best_model.removeprefix("eval_")
    trainer = Trainer(model, engine_args, source, eval_sets, tokenizer=tokenizer, run_config=asdict(args),
                      total_steps=total, compute_metrics=compute_metrics, device=device,
                      metric_for_best_model=f"validation_{metric}", greater_is_better=metric != "loss",
                      dynamic_shapes=layout["policy"] == "dynamic")
    start = time.perf_counter()
    summary = trainer.train()
    runtime = time.perf_counter() - start
    results = {"train_runtime": runtime, "train_steps": summary["step"],
               "train_steps_per_second": summary["step"] / runtime,
               "train_compile_seconds": summary["compile_seconds"],
               "train_compilations": trainer.train_compilations,
               **{k: summary[k] for k in ("compute_dtype", "loss_scale", "loss_scale_good_steps", "execution_policy")
                  if k in summary},
               "epochs": summary["step"] / steps_per_epoch}
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    if losses:
        results.update(train_loss_first=losses[0], train_loss=losses[-1])
    best = trainer.best_checkpoint() if args.load_best_model_at_end else None
    if best:
        trainer.load_weights_from(best)
        results["best_step"] = trainer.best_step
    for name in ("validation", "test"):
        if name in encoded:
            trainer.eval_sets[name] = make_eval(encoded[name])
    if trainer.eval_sets:
        final = trainer.evaluate()
        for key, value in final.items():
            split, _, metric_name = key.partition("_")
            results[f"{'eval' if split == 'validation' else split}_{metric_name}"] = value
    results["eval_compilations"] = trainer.eval_compilations  # validation and test batches share the graphs
    return results


def _train_with_mindnlp(args, model, encoded: dict[str, Encoded], layout: dict, num_labels: int) -> dict:
    """mindnlp's Trainer (PyNative) on the same model via the compat adapter; metrics computed locally."""
    import mindspore as ms

    from ..compat.mindnlp import as_mindnlp_model, get_trainer_classes

    Trainer, MindnlpArguments = get_trainer_classes()
    # mindnlp batches rows itself, so every split is padded once to one length the policy allows
    longest = max(int(e.lengths.max()) for e in encoded.values())
    length = padded_length(layout["policy"], longest, layout["max_length"])
    labels_key = "mc_labels" if layout["multiple_choice"] else "labels"

    def dataset(data: Encoded):
        columns = collate(data, np.arange(len(data)), length, layout["pad_id"], layout["multiple_choice"],
                          layout["lm_labels"])
        return ms.dataset.NumpySlicesDataset(columns, shuffle=False)

    def compute_metrics(prediction):
        logits = prediction.predictions
        logits = np.asarray(logits[-1] if isinstance(logits, tuple) else logits)
        return classification_metrics(logits, np.asarray(prediction.label_ids).reshape(-1), num_labels)

    evaluate = args.evaluation_strategy if "validation" in encoded else "no"
    margs = MindnlpArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size, num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon,
        max_grad_norm=args.max_grad_norm, lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps,
        warmup_ratio=args.warmup_ratio, logging_steps=args.logging_steps, evaluation_strategy=evaluate,
        eval_steps=args.eval_steps if evaluate == "steps" else None, save_strategy="no", seed=args.seed,
        disable_tqdm=args.disable_tqdm, label_names=[labels_key])
    trainer = Trainer(model=as_mindnlp_model(model), args=margs, train_dataset=dataset(encoded["train"]),
                      eval_dataset=dataset(encoded["validation"]) if "validation" in encoded else None,
                      compute_metrics=compute_metrics)
    start = time.perf_counter()
    output = trainer.train()
    runtime = time.perf_counter() - start
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    results = {"train_runtime": runtime, "train_steps": int(output.global_step),
               "train_steps_per_second": output.global_step / runtime}
    if losses:
        results.update(train_loss_first=float(losses[0]), train_loss=float(losses[-1]))
    for name, prefix in (("validation", "eval"), ("test", "test")):
        if name in encoded:
            metrics = trainer.evaluate(eval_dataset=dataset(encoded[name]), metric_key_prefix=prefix)
            results.update({k: float(v) for k, v in metrics.items()
                            if k.partition("_")[2] in ("loss", "accuracy", "f1")})
    return results


__all__ = ["FinetuneArguments", "ALIASES", "finetune", "load_task_data", "build_model", "classification_metrics",
           "TASKS"]
