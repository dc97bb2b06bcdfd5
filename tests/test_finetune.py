"""Fine-tuning end to end: every GPT-1 task format on its bundled data, compile counts per padding policy, the CLI
(all_results.json + HF-layout best model), mindnlp's Trainer, and bad-input errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ms_gpt.data.padding import bucket_lengths
from ms_gpt.recipes.finetune import FinetuneArguments, finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RT = os.path.join(ROOT, "data", "sentiment-rt", "rotten_tomatoes_corpus_full.csv.bz2")
EPISTEMIC = os.path.join(ROOT, "data", "gpt1-tasks", "epistemic_reasoning.json")
WIKIHOW = os.path.join(ROOT, "data", "gpt1-tasks", "goal_step_wikihow_step_inference.json")
RT_OPTIONS = dict(train_file=RT, text_column="text", label_column="category", label_list=["fresh", "rotten"],
                  drop_labels=["plot"])


def small(tmp_path, **overrides) -> FinetuneArguments:
    """A tiny GPT from scratch with the GPT-2 BPE; evaluation and checkpoints every `eval_steps`."""
    options = dict(tokenizer="gpt2", n_layer=1, n_head=2, n_embd=32, dropout=0.0, max_seq_length=64,
                   padding="max_length", per_device_train_batch_size=32, per_device_eval_batch_size=100,
                   learning_rate=2e-3, warmup_ratio=0.05, evaluation_strategy="steps", save_strategy="steps",
                   eval_steps=40, save_steps=40, logging_steps=10, disable_tqdm=True, seed=0,
                   output_dir=str(tmp_path / "run"), validation_split=0.1, max_eval_samples=200)
    options.update(overrides)
    return FinetuneArguments(**options)


def losses(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_classification_rotten_tomatoes_max_length_compiles_once(tmp_path):
    args = small(tmp_path, max_steps=120, max_train_samples=3840, **RT_OPTIONS)
    results = finetune(args)
    curve = losses(args.output_dir)
    assert np.mean(curve[-3:]) < curve[0] - 0.03
    majority = 0.58  # fresh share of the labelled rows (7,403 / 12,808)
    assert results["eval_accuracy"] > majority + 0.04, results
    assert 0.0 < results["eval_f1"] <= 1.0
    assert results["train_compilations"] == 1  # one padded shape -> one compiled train step
    with open(os.path.join(args.output_dir, "all_results.json"), encoding="utf-8") as f:
        assert json.load(f)["eval_accuracy"] == results["eval_accuracy"]


def test_entailment_epistemic_reasoning_bucket_compiles_at_most_once_per_bucket(tmp_path):
    # the label is decided by the head of each text ("A knows/thinks that B ... that S"): 40 tokens keep it.
    # No dropout: MindSpore's CPU dropout masks are not reproducible from run to run, and with them this small run's
    # best accuracy ranged 0.61-0.80; without, the run is deterministic. The initialisation still matters at this
    # size: seeds 0/1/2/3 reach 0.605 (stalls at the majority class)/0.875/0.785/0.785 (ms_gpt's numpy-drawn init).
    args = small(tmp_path, task="entailment", train_file=EPISTEMIC, padding="bucket", max_seq_length=40,
                 n_layer=2, n_head=4, n_embd=64, dropout=0.0, max_steps=500, learning_rate=1e-3, eval_steps=100,
                 save_steps=100, seed=1)
    results = finetune(args)
    curve = losses(args.output_dir)
    assert np.mean(curve[-3:]) < curve[0] - 0.1
    majority = 0.63  # non-entailment share of the 2,000 pairs
    assert results["eval_accuracy"] > majority + 0.05, results
    assert 1 <= results["train_compilations"] <= len(bucket_lengths(40))


def test_similarity_format_on_premise_hypothesis_pairs(tmp_path):
    # no paraphrase corpus is bundled: the epistemic pairs exercise the symmetric two-order format
    args = small(tmp_path, task="similarity", train_file=EPISTEMIC, text_columns=["premise", "hypothesis"],
                 max_seq_length=128, max_steps=60, learning_rate=2e-3)
    results = finetune(args)
    curve = losses(args.output_dir)
    assert np.mean(curve[-2:]) < np.log(2) - 0.02  # below the loss of a uniform guess
    assert results["eval_accuracy"] > 0.55, results
    assert results["train_compilations"] == 1


def test_multiple_choice_wikihow_double_heads(tmp_path):
    args = small(tmp_path, task="multiple_choice", train_file=WIKIHOW, max_seq_length=32,
                 per_device_train_batch_size=16, per_device_eval_batch_size=75, max_steps=100, max_eval_samples=225,
                 learning_rate=2e-3)
    results = finetune(args)
    curve = losses(args.output_dir)
    assert np.mean(curve[-2:]) < np.log(4) - 0.05  # below the loss of a uniform guess over four choices
    assert results["eval_accuracy"] > 0.25 + 0.05, results


def test_lm_coef_adds_the_auxiliary_lm_loss_to_the_multiple_choice_loss(tmp_path):
    """lm_coef reaches the model and the batches carry LM labels: loss = mc_loss + lm_coef * lm_loss."""
    from ms_gpt.data.padding import eval_batches
    from ms_gpt.data.tasks import TaskFormatter
    from ms_gpt.recipes.finetune import build_model, load_task_data

    args = small(tmp_path, task="multiple_choice", train_file=WIKIHOW, tokenizer="char", lm_coef=0.5,
                 max_seq_length=96, max_eval_samples=8)
    splits = load_task_data(args)
    model, tokenizer = build_model(args, 1, [t for ex in splits["train"].examples for t in ex.texts + ex.choices])
    assert model.config.lm_coef == 0.5 and model.config.vocab_size == tokenizer.vocab_size
    model.set_train(False)
    data = TaskFormatter(tokenizer, "multiple_choice", 96).encode(splits["validation"])
    batch = next(eval_batches(data, 8, "dynamic", 96, 0, multiple_choice=True, lm_labels=True))
    from mindspore import Tensor

    loss, mc_loss, lm_loss, mc_logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                                              labels=Tensor(batch["labels"]),
                                              mc_token_ids=Tensor(batch["mc_token_ids"]),
                                              mc_labels=Tensor(batch["mc_labels"]))
    assert mc_logits.shape == (8, 4) and float(lm_loss.asnumpy()) > 1.0
    assert float(loss.asnumpy()) == pytest.approx(float(mc_loss.asnumpy()) + 0.5 * float(lm_loss.asnumpy()),
                                                  rel=1e-5)


def _cli(args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "ms_gpt.finetune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "GLOG_v": "3", "PYTHONPATH": ROOT})


def test_cli_end_to_end_writes_results_and_the_best_model_in_hf_layout(tmp_path):
    from ms_gpt.data.padding import eval_batches
    from ms_gpt.data.tasks import TaskFormatter
    from ms_gpt.model import GPTForSequenceClassification
    from ms_gpt.recipes.finetune import load_task_data
    from ms_gpt.tokenizers import load_tokenizer

    out = tmp_path / "cli"
    options = [f"--output_dir={out}", "--max_train_samples=640", "--max_eval_samples=100", "--n_layer=1",
               "--n_embd=32", "--per_device_train_batch_size=32", "--num_train_epochs=2", "--test_split=0.05",
               "--validation_split=0.05", "--padding=max_length", "--lm_coef=0", "--learning_rate=2e-3"]
    result = _cli(["--config", os.path.join(ROOT, "configs", "sentiment_rt.yaml"), *options], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final: eval_accuracy" in result.stdout
    with open(out / "all_results.json", encoding="utf-8") as f:
        results = json.load(f)
    for key in ("eval_accuracy", "eval_f1", "eval_loss", "test_accuracy", "test_f1", "train_steps_per_second"):
        assert key in results
    assert results["train_steps"] == 2 * 20 and results["epochs"] == 2.0
    assert os.path.isdir(out / "checkpoint-20") and os.path.isdir(out / "checkpoint-40")  # save_strategy epoch
    # HF layout: config + safetensors + tokenizer with the task tokens; the saved model is the best checkpoint
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "vocab.json", "merges.txt"):
        assert os.path.isfile(out / name), name
    with open(out / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert config["id2label"] == {"0": "fresh", "1": "rotten"} and config["vocab_size"] == 50257 + 3
    model = GPTForSequenceClassification.from_pretrained(str(out))
    tokenizer = load_tokenizer(str(out))
    args = FinetuneArguments(output_dir=str(tmp_path / "reload"), validation_split=0.05, test_split=0.05,
                             max_train_samples=640, max_eval_samples=100, seed=42, **RT_OPTIONS)
    validation = TaskFormatter(tokenizer, "classification", 64).encode(load_task_data(args)["validation"])
    correct = 0
    for batch in eval_batches(validation, 100, "dynamic", 64, 0):
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).asnumpy()
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    assert correct / len(validation) == pytest.approx(results["eval_accuracy"])


def test_cli_bad_input_is_one_clear_error(tmp_path):
    bad = tmp_path / "train.csv"
    bad.write_text("text,label\ngreat,pos\nawful,neg\n,neg\n", encoding="utf-8")
    result = _cli([f"--train_file={bad}", f"--output_dir={tmp_path / 'out'}"], cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}: row 3, column 'text': empty text"
    result = _cli([f"--train_file={bad}", "--padding=longest"], cwd=str(tmp_path))
    assert result.returncode == 2 and "padding='longest'; expected one of max_length, dynamic" in result.stderr


@pytest.mark.parametrize("overrides, message", [
    (dict(task="regression"), "task='regression'"),
    (dict(evaluation_strategy="epoch", save_strategy="no"), "load_best_model_at_end needs save_strategy"),
    (dict(train_file=None), "give train_file"),
    (dict(validation_split=0.6, test_split=0.5), "leave no training examples"),
    (dict(label_column="rating"), "row 1: no column 'rating'"),
    (dict(label_list=["fresh", "stale"]), "label 'rotten' is not in the label set"),
    (dict(train_file="data/missing.csv"), "data file not found"),
])
def test_bad_options_and_data_are_refused(tmp_path, overrides, message):
    options = dict(RT_OPTIONS, output_dir=str(tmp_path))
    options.update(overrides)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        finetune(FinetuneArguments(**options))


def test_task_dialogue_dispatches_to_the_dialogue_recipe(monkeypatch):
    import ms_gpt.finetune as entry
    import ms_gpt.recipes.dialogue as dialogue

    seen = []
    monkeypatch.setattr(dialogue, "train_dialogue", lambda argv: seen.append(argv) or {"dialogue": True})
    argv = ["--config", os.path.join(ROOT, "configs", "entailment.yaml"), "--task", "dialogue", "--max_steps=3"]
    assert entry.main(argv) == {"dialogue": True}
    assert seen == [argv]


def test_mindnlp_trainer_trains_the_same_recipe(tmp_path):
    args = small(tmp_path, trainer="mindnlp", max_train_samples=512, num_train_epochs=2, max_steps=-1,
                 per_device_train_batch_size=16, logging_steps=8, evaluation_strategy="epoch",
                 save_strategy="no", load_best_model_at_end=False, learning_rate=2e-3, **RT_OPTIONS)
    results = finetune(args)
    assert results["trainer"] == "mindnlp" and results["train_steps"] == 64
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and "eval_f1" in results
    assert results["eval_loss"] < np.log(2)  # learned at least the class prior
    assert os.path.isfile(os.path.join(args.output_dir, "model.safetensors"))


# ---- padding policies: equal losses, bounded compiles --------------------------------------------------------------
def _distinct_lengths(args, policy):
    from ms_gpt.data.padding import EpochBatches
    from ms_gpt.data.tasks import TaskFormatter, add_task_tokens
    from ms_gpt.recipes.finetune import load_task_data
    from ms_gpt.tokenizers import load_tokenizer

    splits = load_task_data(args)
    tokenizer = load_tokenizer(args.tokenizer)
    add_task_tokens(tokenizer)
    data = TaskFormatter(tokenizer, args.task, args.max_seq_length).encode(splits["train"])
    source = EpochBatches(data, args.per_device_train_batch_size, policy, args.max_seq_length, 0, args.seed)
    return {source.next_batch()["input_ids"].shape[-1] for _ in range(args.max_steps)}


def test_padding_policies_give_equal_losses_and_bounded_compiles(tmp_path):
    """Padding is masked (attention) and ignored (labels): every policy trains the same model to the same losses;
    max_length compiles once, dynamic once (one dynamic-shape graph), bucket once per bucket (at most 4)."""
    base = dict(n_layer=2, n_embd=64, max_seq_length=128, max_steps=16, logging_steps=1, eval_steps=8, save_steps=8,
                max_train_samples=32 * 16, max_eval_samples=150, per_device_eval_batch_size=64, **RT_OPTIONS)
    assert len(_distinct_lengths(small(tmp_path / "probe", **base), "dynamic")) > 4  # more lengths than buckets
    runs = {}
    for policy in ("max_length", "bucket", "dynamic"):
        args = small(tmp_path / policy, padding=policy, **base)
        runs[policy] = (finetune(args), losses(args.output_dir))
    reference = runs["max_length"][1]
    assert len(reference) == 16
    for policy, (results, curve) in runs.items():
        np.testing.assert_allclose(curve, reference, rtol=2e-5, err_msg=policy)
        assert results["eval_loss"] == pytest.approx(runs["max_length"][0]["eval_loss"], rel=2e-5), policy
        assert results["eval_accuracy"] == runs["max_length"][0]["eval_accuracy"], policy
    assert runs["max_length"][0]["train_compilations"] == 1 and runs["max_length"][0]["eval_compilations"] == 1
    assert runs["dynamic"][0]["train_compilations"] == 1 and runs["dynamic"][0]["eval_compilations"] == 1
    assert 1 <= runs["bucket"][0]["train_compilations"] <= len(bucket_lengths(128)) == 4
    assert 1 <= runs["bucket"][0]["eval_compilations"] <= 4


@pytest.mark.parametrize("task", ["classification", "multiple_choice"])
def test_padding_auto_compiles_at_most_four_graphs_per_step(tmp_path, task):
    """The bound of `padding: auto` off Ascend, whatever the lengths: <= 4 train and <= 4 evaluation graphs."""
    from ms_gpt.data.padding import AUTO_POLICY

    data = RT_OPTIONS if task == "classification" else dict(train_file=WIKIHOW, per_device_train_batch_size=16)
    args = small(tmp_path, task=task, padding="auto", max_seq_length=128, max_steps=24, eval_steps=12,
                 save_steps=12, max_train_samples=32 * 24, max_eval_samples=100, **data)
    assert len(_distinct_lengths(args, "dynamic")) > 4
    results = finetune(args)
    bound = 1 if AUTO_POLICY == "dynamic" else 4
    assert results["padding"] == AUTO_POLICY
    assert 1 <= results["train_compilations"] <= bound and 1 <= results["eval_compilations"] <= bound, results
