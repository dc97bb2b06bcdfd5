"""One training step compiled as a static graph vs as a dynamic-shape graph (padding `bucket` vs `dynamic`), at the same
lengths, in one process: blocks of 10 steps alternate between the two so both see the same machine load.

Shapes: `cls` = the sentiment recipe's step (2-layer, 64-wide GPT-2 with a 50k-token table, batch 32);
`lm` = the dialogue recipe's step (4-layer, 128-wide LM over 3k tokens, batch 16). Prints one JSON line per shape
and length: best and median ms/step of each graph over the rounds, and their ratio.

    python benchmarks/bench_padding_step.py
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402
from mindspore import Tensor  # noqa: E402

from ms_gpt.config import GPTConfig, TrainingArguments  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.engine.trainer import Trainer  # noqa: E402
from ms_gpt.model import GPTForSequenceClassification, GPTLMHeadModel  # noqa: E402


class _NoData:
    """The steps are fed directly; the trainer never draws a batch."""

    def next_batch(self):
        raise RuntimeError("not used")

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _trainer(kind: str, dynamic: bool, output_dir: str) -> Trainer:
    if kind == "cls":
        model = GPTForSequenceClassification(GPTConfig(model_type="gpt2", vocab_size=50260, n_positions=64, n_embd=64,
                                                       n_layer=2, n_head=2, num_labels=2))
    else:
        model = GPTLMHeadModel(GPTConfig(model_type="gpt2", vocab_size=3000, n_positions=64, n_embd=128, n_layer=4,
                                         n_head=4))
    args = TrainingArguments(output_dir=output_dir, max_steps=10_000, disable_tqdm=True)
    return Trainer(model, args, _NoData(), dynamic_shapes=dynamic)


def measure(kind: str, lengths=(32, 64), rounds: int = 5, block: int = 10) -> list[dict]:
    rng = np.random.default_rng(0)
    batch = 32 if kind == "cls" else 16
    with tempfile.TemporaryDirectory() as tmp:
        static, dynamic = _trainer(kind, False, tmp), _trainer(kind, True, tmp)
        out = []
        for length in lengths:
            ids = rng.integers(0, 2900, (1, batch, length)).astype(np.int32)
            labels = rng.integers(0, 2, (1, batch)).astype(np.int32) if kind == "cls" else ids
            inputs = [Tensor(ids), Tensor(np.ones_like(ids)), None, None, Tensor(labels), None, None]
            dynamic._declare_dynamic(dynamic.train_cell, inputs)
            times = {"static": [], "dynamic": []}
            for name, trainer in (("static", static), ("dynamic", dynamic)):
                trainer._train_step(*inputs).asnumpy()  # compile (the dynamic graph only at the first length)
            for _ in range(rounds):
                for name, trainer in (("static", static), ("dynamic", dynamic)):
                    t0 = time.perf_counter()
                    for _ in range(block):
                        loss = trainer._train_step(*inputs)
                    loss.asnumpy()
                    times[name].append(1000 * (time.perf_counter() - t0) / block)
            line = {"shape": kind, "length": length}
            for name, values in times.items():
                line[f"{name}_ms_best"], line[f"{name}_ms_median"] = min(values), float(np.median(values))
            line["dynamic_over_static_best"] = line["dynamic_ms_best"] / line["static_ms_best"]
            line["graphs"] = {"static": static.train_compilations, "dynamic": dynamic.train_compilations}
            line["load_average"] = os.getloadavg()[0]
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in line.items()}), flush=True)
            out.append(line)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="cls,lm", help="comma-separated: cls, lm")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks of 10 steps per graph")
    args = parser.parse_args(argv)
    setup_device("auto", 0)
    for kind in args.shapes.split(","):
        if kind not in ("cls", "lm"):
            parser.error(f"unknown shape {kind!r}; expected cls or lm")
        measure(kind, rounds=args.rounds)


if __name__ == "__main__":
    main()
