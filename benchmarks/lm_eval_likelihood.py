"""Times lm-evaluation-harness's `loglikelihood` requests through one lm-eval model; run by bench_serve.py
`--likelihood N` with the reference venv's python (lm-eval + torch live there, never in ms_gpt's venv).

Builds N (context, continuation) requests from fixed sentences (LAMBADA-style: the last word after its context),
creates the model (`--lm hf --model_args pretrained=DIR,...` or `--lm local-completions --model_args
model=NAME,base_url=...,tokenizer=DIR`), runs `lm.loglikelihood` once on a few requests (warm-up, not timed) and
then on all N, and prints one JSON line: items, seconds, items_per_s and the log-likelihoods (to compare models).

    .venv-ref/bin/python benchmarks/lm_eval_likelihood.py --lm hf --model_args pretrained=DIR --items 64
"""
from __future__ import annotations

import argparse
import json
import time

SENTENCES = [
    "The history of the city begins in the early middle ages, when a small market grew around the old bridge",
    "In a shocking finding, scientists discovered a herd of unicorns living in a remote valley",
    "The best way to learn a new programming language is to write small programs every day",
    "Here is a recipe for a simple tomato soup that takes less than thirty minutes to cook",
    "The stock market fell sharply on Monday after the central bank raised interest rates",
    "When the train finally arrived at the station, the passengers rushed to the doors",
    "The main difference between a violin and a viola is the size of the instrument",
    "Breaking news: the council voted tonight to close the library on weekends",
]


def requests(count: int) -> list[tuple[str, str]]:
    out = []
    for i in range(count):
        words = SENTENCES[i % len(SENTENCES)].split()
        cut = len(words) - 1 - (i // len(SENTENCES)) % 4  # different context lengths for repeats
        out.append((" ".join(words[:cut]), " " + words[cut]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", required=True, help="lm-eval model type: hf | local-completions")
    parser.add_argument("--model_args", required=True, help="lm-eval --model_args string")
    parser.add_argument("--items", type=int, default=64, help="loglikelihood requests timed (default: 64)")
    parser.add_argument("--batch_size", type=int, default=8, help="lm-eval batch size (default: 8)")
    opts = parser.parse_args()
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    extra = {"batch_size": opts.batch_size, **({"device": "cpu"} if opts.lm == "hf" else {})}
    lm = get_model(opts.lm).create_from_arg_string(opts.model_args, extra)

    def make(pairs):
        return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]

    lm.loglikelihood(make(requests(min(4, opts.items))))  # warm-up
    items = make(requests(opts.items))
    started = time.perf_counter()
    results = lm.loglikelihood(items)
    seconds = time.perf_counter() - started
    print(json.dumps({"lm": opts.lm, "items": len(items), "seconds": seconds, "items_per_s": len(items) / seconds,
                      "loglikelihoods": [float(r[0]) for r in results]}), flush=True)


if __name__ == "__main__":
    main()
