"""The decode step's window, in one process: one graph with a dynamic window axis (what generate() compiles on CPU /
GPU: attend to the first W = prompt + new tokens slots, rounded up to 32) against a pair of static graphs (the first
256 slots / all slots: what it compiled before, and what it still compiles on Ascend). Two GPT-2 124M models with the
same random weights, one per design; the cases alternate between them for `--rounds` rounds so both see the same
machine load. Prints one JSON line: first-call seconds (prefill + decode compiles) and the median ms/token of each
case (batch 1 and a left-padded batch of 8 with a 32-token prompt, and batch 1 with a 300-token prompt).

    python benchmarks/bench_decode_window.py [--rounds 4] [--new_tokens 64]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from bench_scale import timed_generate  # noqa: E402
from ms_gpt import generation  # noqa: E402
from ms_gpt.config import preset  # noqa: E402
from ms_gpt.device import setup_device  # noqa: E402
from ms_gpt.model import GPTLMHeadModel  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of all cases on both designs (default: 4)")
    parser.add_argument("--new_tokens", type=int, default=64,
                        help="new tokens per 32-token-prompt call (the 300-token prompt gets half) (default: 64)")
    parser.add_argument("--model", default="gpt2", help="ms_gpt.config.preset name (default: gpt2, GPT-2 124M)")
    opts = parser.parse_args(argv)
    if opts.rounds < 1 or opts.new_tokens < 4:
        parser.error(f"--rounds must be >= 1 and --new_tokens >= 4 (ms/token is a gap between two new tokens); "
                     f"got --rounds={opts.rounds} --new_tokens={opts.new_tokens}")
    try:
        config = preset(opts.model)
    except ValueError as err:
        parser.error(f"--model: {err}")
    if config.n_positions < 300 + opts.new_tokens // 2:
        parser.error(f"--model {opts.model}: n_positions {config.n_positions} is too short for the 300-token prompt "
                     f"+ {opts.new_tokens // 2} new tokens")

    setup_device("CPU", seed=0)
    models = {"dynamic": GPTLMHeadModel(config)}
    setup_device("CPU", seed=0)
    models["static_pair"] = GPTLMHeadModel(preset(opts.model))
    rng = np.random.default_rng(0)
    vocab = config.vocab_size
    rows = [rng.integers(0, vocab, 32 - 2 * i).tolist() for i in range(8)]
    cases = {"batch1": (rows[:1], opts.new_tokens), "batch8": (rows, opts.new_tokens),
             "prompt300_batch1": ([rng.integers(0, vocab, 300).tolist()], opts.new_tokens // 2)}
    record = {"bench": "decode_window", "model": opts.model, "rounds": opts.rounds}
    device_static = generation._static_shapes
    for design, model in models.items():
        # the design is fixed when a batch size's graphs are built (its first call), so switch only around that
        generation._static_shapes = (lambda: True) if design == "static_pair" else device_static
        for case in ("batch1", "batch8"):
            start = time.perf_counter()
            timed_generate(model, *cases[case])
            record[f"{design}_first_call_s_{case}"] = time.perf_counter() - start
        record[f"{design}_compiles"] = generation.compile_counts(model)
    generation._static_shapes = device_static
    times = {}
    for _ in range(opts.rounds):
        for case, (batch, new) in cases.items():
            for design, model in models.items():
                times.setdefault((design, case), []).append(timed_generate(model, batch, new)["ms_per_token"])
    for (design, case), values in times.items():
        record[f"{design}_ms_per_token_{case}"] = float(np.median(values))
    for case in cases:
        record[f"dynamic_speedup_{case}"] = (record[f"static_pair_ms_per_token_{case}"]
                                             / record[f"dynamic_ms_per_token_{case}"])
    record["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
