"""`make demo` / `python -m ms_gpt.demo`: the GPT-1 paradigm at CPU scale, in about ten minutes on two cores.

1. Unsupervised pretraining of a small GPT (GPT-2 BPE cut to 8k merges) on review text (rotten-tomatoes critic
   snippets and plot summaries; the fine-tuning validation and test texts are left out) — configs/paradigm_pretrain.yaml.
2. Supervised fine-tuning of that model on fresh vs rotten — configs/paradigm_finetune.yaml.
3. The same fine-tune from a random initialisation — configs/paradigm_scratch.yaml.
Prints both held-out (test split) accuracies (at this scale pretraining does not beat scratch: see the README).
`--output_dir DIR` moves every run under DIR (default runs/paradigm); `--write-corpus-only` just writes the
pretraining corpus; `--smoke` shrinks every step to seconds (the tests).

Must not import: ms_gpt.model, ms_gpt.engine, ms_gpt.data, ms_gpt.checkpoint, ms_gpt.compat, ms_gpt.tokenizers,
ms_gpt.lora (an entry point only parses its options and calls a recipe or library function). `write_review_corpus`
reads records through ms_gpt.data.tasks: a listed violation (KNOWN_VIOLATIONS in tests/test_layers.py).
"""
import os
import sys
import time

if __package__ in (None, ""):  # run as a file (msrun takes a script path): see ms_gpt/_launch.py
    import _launch  # noqa: F401

from ms_gpt.cli import run  # noqa: E402
from ms_gpt.paths import atomic_write, resolve_path  # noqa: E402

CONFIGS = {name: os.path.join("configs", f"paradigm_{name}.yaml") for name in ("pretrain", "finetune", "scratch")}


def held_out_texts(finetune_args) -> set:
    """Every validation and test text of the fine-tuning split (max_eval_samples does not shrink this set)."""
    from dataclasses import replace

    from ms_gpt.recipes.finetune import load_task_data

    splits = load_task_data(replace(finetune_args, max_eval_samples=None))
    return {ex.texts[0] for name in ("validation", "test") if name in splits for ex in splits[name].examples}


def write_review_corpus(finetune_args, path: str) -> dict:
    """All review texts (plot rows too) except the fine-tuning validation/test examples, one per line."""
    from ms_gpt.data.tasks import read_records

    held_out = held_out_texts(finetune_args)
    source = resolve_path(finetune_args.train_file)
    texts = [rec[finetune_args.text_column] for _, rec in read_records(source)]
    kept = [" ".join(t.split()) for t in texts if t.strip() and t not in held_out]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        f.write("\n".join(kept) + "\n")
    return {"texts": len(kept), "held_out": len(held_out), "characters": sum(len(t) + 1 for t in kept)}


def main(argv=None) -> dict:
    from ms_gpt.config import parse_config
    from ms_gpt.recipes.finetune import FinetuneArguments, finetune
    from ms_gpt.recipes.pretrain import PretrainArguments, pretrain

    argv = list(sys.argv[1:] if argv is None else argv)
    corpus_only = "--write-corpus-only" in argv
    smoke = "--smoke" in argv  # seconds-long sizes, for the test suite
    argv = [a for a in argv if a not in ("--write-corpus-only", "--smoke")]
    root = "runs/paradigm"
    if argv and argv[0].startswith("--output_dir="):
        root = argv.pop(0).partition("=")[2]
    elif argv[:1] == ["--output_dir"] and len(argv) > 1:
        root = argv[1]
        argv = argv[2:]
    if argv:
        raise ValueError(f"unknown arguments {argv}; usage: python -m ms_gpt.demo [--output_dir DIR] "
                         "[--write-corpus-only] [--smoke]")
    corpus = os.path.join(root, "corpus.txt")
    pretrain_dir = os.path.join(root, "pretrain")
    common = ["--disable_tqdm=true"]
    pre_sizes = ["--max_steps=20", "--eval_steps=0", "--sample_tokens=5"] if smoke else []
    tune_sizes = ["--max_train_samples=64", "--max_eval_samples=64", "--num_train_epochs=1"] if smoke else []

    def finetune_args(name: str, extra: list) -> FinetuneArguments:
        return parse_config(FinetuneArguments, ["--config", resolve_path(CONFIGS[name]),
                                                f"--output_dir={os.path.join(root, name)}", *common, *tune_sizes,
                                                *extra])

    t0 = time.perf_counter()
    stats = write_review_corpus(finetune_args("finetune", [f"--model_name_or_path={pretrain_dir}"]), corpus)
    print(f"[1/3] pretraining corpus {corpus}: {stats['texts']} texts, {stats['characters']:,} characters "
          f"({stats['held_out']} fine-tuning validation/test texts left out)")
    if corpus_only:
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


if __name__ == "__main__":
    sys.exit(run(main))
