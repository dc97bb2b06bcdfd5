"""Steps per second of fine-tuning with ms_gpt's engine (compiled step) and with mindnlp's Trainer (PyNative) on
the same small recipe: fresh vs rotten, a 2-layer GPT from scratch, batch 16 x 64 tokens. Prints one JSON line."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GLOG_v", "3")

from ms_gpt.recipes.finetune import FinetuneArguments, finetune  # noqa: E402

STEPS = int(os.environ.get("BENCH_STEPS", "40"))


def recipe(trainer: str, output_dir: str) -> FinetuneArguments:
    return FinetuneArguments(
        task="classification", train_file="data/sentiment-rt/rotten_tomatoes_corpus_full.csv.bz2",
        text_column="text", label_column="category", label_list=["fresh", "rotten"], drop_labels=["plot"],
        max_train_samples=16 * STEPS, tokenizer="gpt2", n_layer=2, n_head=2, n_embd=64, max_seq_length=64,
        padding="max_length", per_device_train_batch_size=16, max_steps=STEPS, learning_rate=1e-3,
        evaluation_strategy="no", save_strategy="no", load_best_model_at_end=False, logging_steps=STEPS,
        trainer=trainer, output_dir=output_dir, disable_tqdm=True, seed=0)


def main() -> dict:
    result = {"steps": STEPS, "batch": 16, "seq": 64}
    with tempfile.TemporaryDirectory() as tmp:
        ours = finetune(recipe("ms_gpt", os.path.join(tmp, "ms_gpt")), log=lambda *a: None)
        # the first step includes compilation: throughput over the remaining steps
        result["ms_gpt_steps_per_second"] = (ours["train_steps"] - 1) / (ours["train_runtime"]
                                                                        - ours["train_compile_seconds"])
        result["ms_gpt_compile_seconds"] = ours["train_compile_seconds"]
        theirs = finetune(recipe("mindnlp", os.path.join(tmp, "mindnlp")), log=lambda *a: None)
        result["mindnlp_steps_per_second"] = theirs["train_steps_per_second"]
    result["speedup"] = result["ms_gpt_steps_per_second"] / result["mindnlp_steps_per_second"]
    result["load_average"] = os.getloadavg()[0]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    return result


if __name__ == "__main__":
    main()
