"""Linear probe: how much fresh-vs-rotten signal do a pretrained GPT's frozen features carry? Prints one JSON line.

Features of each review (mean of the final hidden states over its tokens) from (a) the pretrained checkpoint, (b) a
model of the same shape with random weights, and (c) a bag of the same BPE tokens; a logistic regression is fitted
on the training reviews of the paradigm split (L2 strength chosen on the validation split) and scored on the test
split. If (a) is no better than (b), pretraining taught the model nothing about the labels that fine-tuning could
start from.

    python benchmarks/probe_features.py --model runs/paradigm/pretrain [--max_train_samples 2560]   # minutes on 2 cores
"""
import argparse
import json
import os
import sys

os.environ.setdefault("GLOG_v", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from mindspore import Tensor  # noqa: E402

from ms_gpt.config import GPTConfig, parse_config  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.model import GPTLMHeadModel  # noqa: E402
from ms_gpt.paths import resolve_path  # noqa: E402
from ms_gpt.recipes.finetune import FinetuneArguments, load_task_data  # noqa: E402
from ms_gpt.tokenizers import load_tokenizer  # noqa: E402

L2_GRID = (1e-3, 1e-2, 1e-1)


def mean_hidden(model, sequences: list, batch: int = 128) -> np.ndarray:
    """[N, n_embd]: each sequence's final hidden states averaged over its tokens."""
    out = []
    for i in range(0, len(sequences), batch):
        chunk = sequences[i:i + batch]
        width = max(len(s) for s in chunk)
        ids = np.zeros((len(chunk), width), np.int32)
        mask = np.zeros_like(ids)
        for j, s in enumerate(chunk):
            ids[j, :len(s)], mask[j, :len(s)] = s, 1
        hidden = model.transformer(Tensor(ids), Tensor(mask)).asnumpy()
        out.append((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))
    return np.concatenate(out)


def bag_of_tokens(sequences: list, vocab_size: int) -> np.ndarray:
    x = np.zeros((len(sequences), vocab_size), np.float32)
    for i, s in enumerate(sequences):
        x[i, s] = 1.0
    return x


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 500, lr: float = 0.5):
    """Full-batch gradient descent on standardised features; returns a scoring function."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        g = 1.0 / (1.0 + np.exp(-(z @ w + b))) - y
        w -= lr * (z.T @ g / len(y) + l2 * w)
        b -= lr * float(g.mean())
    return lambda xs: ((((xs - mu) / sd) @ w + b) > 0).astype(int)


def probe(features: dict, labels: dict) -> float:
    """Test accuracy of the logistic regression whose L2 strength scores best on validation."""
    best = max((fit_logistic(features["train"], labels["train"], l2) for l2 in L2_GRID),
               key=lambda f: float((f(features["validation"]) == labels["validation"]).mean()))
    return float((best(features["test"]) == labels["test"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/paradigm/pretrain", help="a pretrained LM directory")
    parser.add_argument("--config", default="configs/paradigm_scratch.yaml", help="the fine-tuning data split")
    parser.add_argument("--max_train_samples", type=int, default=2560, help="training rows probed (default: 2560)")
    parser.add_argument("--max_seq_length", type=int, default=64, help="tokens per row (default: 64)")
    opts = parser.parse_args()
    setup_device("CPU", 0)
    args = parse_config(FinetuneArguments, ["--config", resolve_path(opts.config), "--output_dir=runs/probe",
                                            f"--max_train_samples={opts.max_train_samples}"])
    splits = load_task_data(args)
    tokenizer = load_tokenizer(opts.model)
    ids = {k: [tokenizer.encode(e.texts[0])[:opts.max_seq_length] or [0] for e in d.examples]
           for k, d in splits.items()}
    labels = {k: np.array([e.label for e in d.examples]) for k, d in splits.items()}
    pretrained = GPTLMHeadModel.from_pretrained(opts.model)
    random_init = GPTLMHeadModel(GPTConfig.from_json_file(os.path.join(opts.model, "config.json")))
    result = {"benchmark": "probe_features", "model": opts.model,
              "train_samples": len(ids["train"]), "test_samples": len(ids["test"])}
    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        model.set_train(False)
        result[f"{name}_accuracy"] = probe({k: mean_hidden(model, v) for k, v in ids.items()}, labels)
    vocab = tokenizer.vocab_size
    result["bag_of_tokens_accuracy"] = probe({k: bag_of_tokens(v, vocab) for k, v in ids.items()}, labels)
    result["majority"] = float(max(labels["test"].mean(), 1 - labels["test"].mean()))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
