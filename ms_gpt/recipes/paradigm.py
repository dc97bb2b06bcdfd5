"""The GPT-1 paradigm at CPU scale (`make demo`, `python -m ms_gpt.demo`): pretrain a small GPT on review text, fine-tune
it on fresh vs rotten, and fine-tune the same shape from scratch; both held-out accuracies.

1. Unsupervised pretraining of a small GPT (GPT-2 BPE cut to 8k merges) on review text (rotten-tomatoes critic
   snippets and plot summaries; the fine-tuning validation and test texts are left out) — configs/paradigm_pretrain.yaml.
2. Supervised fine-tuning of that model on fresh vs rotten — configs/paradigm_finetune.yaml.
3. The same fine-tune from a random initialisation — configs/paradigm_scratch.yaml.

Must not import: the entry points ms_gpt.pretrain, ms_gpt.finetune, ms_gpt.generate, ms_gpt.chat, ms_gpt.evaluate,
ms_gpt.demo, ms_gpt.cli (entry points import recipes, never the reverse).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

from ..config import parse_config
from ..paths import atomic_write, resolve_path
from .finetune import FinetuneArguments, finetune, load_task_data
from .pretrain import PretrainArguments, pretrain

CONFIGS = {name: os.path.join("configs", f"paradigm_{name}.yaml") for name in ("pretrain", "finetune", "scratch")}


@dataclass
class DemoArguments:
    """Options of `python -m ms_gpt.demo`."""

    output_dir: str = field(default="runs/paradigm", metadata={"help": "directory under which every run is written"})
    write_corpus_only: bool = field(
        default=False, metadata={"help": "only write the pretraining corpus (output_dir/corpus.txt), then stop"})
    smoke: bool = field(default=False, metadata={"help": "shrink every step to seconds (the test suite's size)"})



def held_out_texts(finetune_args: FinetuneArguments) -> set:
    """Every validation and test text of the fine-tuning split (max_eval_samples does not shrink this set)."""
    splits = load_task_data(replace(finetune_args, max_eval_samples=None))
    return {ex.texts[0] for name in ("validation", "test") if name in splits for ex in splits[name].examples}


def write_review_corpus(finetune_args: FinetuneArguments, path: str) -> dict:
    """All review texts (plot rows too) except the fine-tuning validation/test examples, one per line."""
    from ..data.tasks import read_records

    held_out = held_out_texts(finetune_args)
    source = resolve_path(finetune_args.train_file)
    texts = [rec[finetune_args.text_column] for _, rec in read_records(source)]
    kept = [" ".join(t.split()) for t in texts if t.strip() and t not in held_out]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        f.write("\n".join(kept) + "\n")
    return {"texts": len(kept), "held_out": len(held_out), "characters": sum(len(t) + 1 for t in kept)}


def run_paradigm(args: DemoArguments) -> dict:
    """The three runs under args.output_dir; returns both held-out accuracies and the timings (prints a summary)."""
    root = args.output_dir
    corpus = os.path.join(root, "corpus.txt")
    pretrain_dir = os.path.join(root, "pretrain")
    common = ["--disable_tqdm=true"]
    pre_sizes = ["--max_steps=20", "--eval_steps=0", "--sample_tokens=5"] if args.smoke else []
    tune_sizes = ["--max_train_samples=64", "--max_eval_samples=64", "--num_train_epochs=1"] if args.smoke else []

    def finetune_args(name: str, extra: list) -> FinetuneArguments:
        return parse_config(FinetuneArguments, ["--config", resolve_path(CONFIGS[name]),
                                                f"--output_dir={os.path.join(root, name)}", *common, *tune_sizes,
                                                *extra])

    t0 = time.perf_counter()
    stats = write_review_corpus(finetune_args("finetune", [f"--model_name_or_path={pretrain_dir}"]), corpus)
    print(f"[1/3] pretraining corpus {corpus}: {stats['texts']} texts, {stats['characters']:,} characters "
          f"({stats['held_out']} fine-tuning validation/test texts left out)")
    if args.write_corpus_only:
        return stats
    pre_args = parse_config(PretrainArguments, ["--config", resolve_path(CONFIGS["pretrain"]),
                                                f"--train_file={corpus}", f"--output_dir={pretrain_dir}", *common,
                                                *pre_sizes])
    pre = pretrain(pre_args)
    t1 = time.perf_counter()
    first, last = pre.get("first_eval") or {}, pre.get("last_eval") or {}
    print(f"      pretrained {pre['step']} steps in {t1 - t0:.0f} s: val loss {first.get('val_loss', float('nan')):.3f}"
          f" -> {last.get('val_loss', float('nan')):.3f}")
    print("[2/3] fine-tuning the pretrained model on fresh vs rotten")
    tuned = finetune(finetune_args("finetune", [f"--model_name_or_path={pretrain_dir}"]))
    t2 = time.perf_counter()
    print("[3/3] the same fine-tune from scratch")
    # the baseline gets the pretrained model's exact shape and vocabulary, only not its weights
    shape = [f"--{k}={getattr(pre_args, k)}" for k in ("model_type", "n_layer", "n_head", "n_embd")]
    scratch = finetune(finetune_args("scratch", [f"--tokenizer={pretrain_dir}", *shape]))
    t3 = time.perf_counter()
    summary = {"pretrained_test_accuracy": tuned["test_accuracy"], "scratch_test_accuracy": scratch["test_accuracy"],
               "pretrained_eval_accuracy": tuned["eval_accuracy"], "scratch_eval_accuracy": scratch["eval_accuracy"],
               "pretrain_seconds": t1 - t0, "finetune_seconds": t2 - t1, "scratch_seconds": t3 - t2,
               "total_seconds": t3 - t0}
    print(f"\nheld-out accuracy on fresh vs rotten ({scratch['train_samples']} training reviews):\n"
          f"  pretrained + fine-tuned : {tuned['test_accuracy']:.4f}\n"
          f"  fine-tuned from scratch : {scratch['test_accuracy']:.4f}\n"
          f"total {t3 - t0:.0f} s (pretrain {t1 - t0:.0f} s, fine-tune {t2 - t1:.0f} s, scratch {t3 - t2:.0f} s)")
    return summary

